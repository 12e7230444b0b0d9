use bytes::Bytes;
use serde_json::{Map, Value};

/// Everything that can go wrong while framing or parsing QMP messages.
///
/// Two kinds share this enum:
///
/// * **Frame errors** ([`Error::is_frame_error`] is `true`) concern one line. The decoder
///   has already consumed that line and yields the error *inside* `Ok(Some(Err(..)))`, so a
///   [`FramedRead`](tokio_util::codec::FramedRead) keeps going and the next message is
///   decoded normally. Whatever was received stays reachable in the variant.
/// * **Stream errors** ([`Error::Io`], [`Error::Truncated`]) end the stream; the decoder
///   returns them as its `Err`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line was longer than the codec's `max_frame_len`. It was dropped as it arrived,
    /// holding no more than the limit in memory, and is reported once, when it ends.
    #[error("QMP message of {len} bytes exceeds the {max_frame_len}-byte limit and was discarded")]
    FrameTooLong {
        /// The limit in force.
        max_frame_len: usize,
        /// The line's length, terminator excluded (so far, if the stream ended inside it).
        len: usize,
        /// Its first [`OVERSIZE_EXCERPT_LEN`](crate::OVERSIZE_EXCERPT_LEN) bytes.
        head: Bytes,
        /// Its last [`OVERSIZE_EXCERPT_LEN`](crate::OVERSIZE_EXCERPT_LEN) bytes, where QEMU
        /// puts the `"id"` of a reply.
        tail: Bytes,
    },
    /// The line is not valid UTF-8 (JSON text must be).
    #[error("QMP message is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
        /// The line as received, without its line terminator.
        line: Bytes,
    },
    /// The line is not well-formed JSON.
    #[error("QMP message is not valid JSON: {source}")]
    InvalidJson {
        /// The parser's diagnosis (with line and column).
        source: serde_json::Error,
        /// The line as received, without its line terminator.
        line: Bytes,
    },
    /// The line is valid JSON but not an object; every QMP message is an object.
    #[error("QMP message is JSON but not an object: {value}")]
    NotAnObject {
        /// The value received.
        value: Value,
    },
    /// The line is a JSON object but not a message of the expected kind.
    #[error("QMP message has an unknown shape ({reason})")]
    UnknownShape {
        /// Why it was not recognised.
        reason: String,
        /// The object received, complete.
        object: Map<String, Value>,
    },
    /// The stream ended in the middle of a message: the peer died while writing it.
    #[error("connection closed in the middle of a QMP message ({len} bytes without a newline)")]
    Truncated {
        /// How many bytes of the unfinished message were buffered.
        len: usize,
    },
    /// Reading or writing the underlying transport failed.
    #[error("QMP transport I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// `true` for errors that concern a single message and leave the stream usable.
    pub fn is_frame_error(&self) -> bool {
        !matches!(self, Self::Io(_) | Self::Truncated { .. })
    }
}
