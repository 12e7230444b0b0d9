//! Line framing and the tokio-util `Decoder`/`Encoder` implementations.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Command, Error, FromLine, ServerMessage};

/// Default limit on one message: 10 MiB, the limit libvirt and Python `qemu.qmp` use.
///
/// QEMU 7.2's largest reply measured here is `query-qmp-schema` at about 207 KB; HMP output
/// such as `info mem` grows with the guest, which is why a 64 KiB cap is a known bug elsewhere.
pub const DEFAULT_MAX_FRAME_LEN: usize = 10 * 1024 * 1024;

/// How many bytes of each end of an oversized line are kept for the error report, enough
/// to hold a QMP reply's `"id"` member (QEMU puts it last in replies, first in errors).
pub const OVERSIZE_EXCERPT_LEN: usize = 64;

/// Splits a byte stream into `\n`-terminated lines (a `\r` before the `\n` is dropped), with
/// a length limit and without ever rescanning bytes already searched.
#[derive(Debug, Clone)]
struct LineFramer {
    /// Where the next search for `\n` starts: everything before it is known newline-free.
    next_index: usize,
    /// Longest accepted line, not counting its `\r\n` / `\n` terminator.
    max_frame_len: usize,
    /// Set while dropping an oversized line up to its `\n`.
    discarding: Option<Oversized>,
}

/// What is remembered of an oversized line while it is dropped.
#[derive(Debug, Clone, Default)]
struct Oversized {
    len: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Oversized {
    fn drop_bytes(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        let room = OVERSIZE_EXCERPT_LEN - self.head.len();
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        // One byte extra: a trailing `\r` is only known to be the terminator's at the end.
        let keep = bytes.len().min(OVERSIZE_EXCERPT_LEN + 1);
        self.tail.extend_from_slice(&bytes[bytes.len() - keep..]);
        let excess = self.tail.len().saturating_sub(OVERSIZE_EXCERPT_LEN + 1);
        self.tail.drain(..excess);
    }

    fn into_error(mut self, max_frame_len: usize) -> Error {
        if self.tail.last() == Some(&b'\r') {
            self.tail.pop();
            self.len -= 1;
        }
        let excess = self.tail.len().saturating_sub(OVERSIZE_EXCERPT_LEN);
        self.tail.drain(..excess);
        Error::FrameTooLong {
            max_frame_len,
            len: self.len,
            head: self.head.into(),
            tail: self.tail.into(),
        }
    }
}

/// What the framer found in the buffer.
enum Frame {
    /// A complete line, terminator removed.
    Line(BytesMut),
    /// A complete line over the limit, already dropped.
    TooLong(Error),
}

impl LineFramer {
    fn new(max_frame_len: usize) -> Self {
        Self { next_index: 0, max_frame_len, discarding: None }
    }

    fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        // Room for the longest line plus `\r\n`: never search (or keep) more than that.
        // While discarding, everything buffered up to the newline is garbage anyway.
        let read_to = if self.discarding.is_some() {
            buf.len()
        } else {
            buf.len().min(self.max_frame_len.saturating_add(2))
        };
        let newline = memchr::memchr(b'\n', &buf[self.next_index..read_to]);
        let searched_to = newline.map_or(read_to, |offset| self.next_index + offset);
        match (self.discarding.as_mut(), newline) {
            (Some(oversized), Some(_)) => {
                // End of the oversized line: drop it with its newline and report it.
                oversized.drop_bytes(&buf[..searched_to]);
                buf.advance(searched_to + 1);
                self.next_index = 0;
                let oversized = self.discarding.take().unwrap_or_default();
                Some(Frame::TooLong(oversized.into_error(self.max_frame_len)))
            }
            (Some(oversized), None) => {
                // Still inside the oversized line: drop what we have and wait for more.
                oversized.drop_bytes(&buf[..read_to]);
                buf.advance(read_to);
                self.next_index = 0;
                None
            }
            (None, Some(_)) => {
                self.next_index = 0;
                let mut line = buf.split_to(searched_to + 1);
                line.truncate(searched_to);
                if line.last() == Some(&b'\r') {
                    line.truncate(searched_to - 1);
                }
                if line.len() <= self.max_frame_len {
                    return Some(Frame::Line(line));
                }
                // The window admits one byte more than a CRLF line needs, so a line ending
                // in a bare `\n` can reach here one byte too long.
                let mut oversized = Oversized::default();
                oversized.drop_bytes(&line);
                Some(Frame::TooLong(oversized.into_error(self.max_frame_len)))
            }
            (None, None) if buf.len() > self.max_frame_len.saturating_add(1) => {
                // No newline within the limit: this line is too long whatever follows.
                // Drop what was searched now rather than hold it, and go on dropping.
                let mut oversized = Oversized::default();
                oversized.drop_bytes(&buf[..read_to]);
                buf.advance(read_to);
                self.next_index = 0;
                self.discarding = Some(oversized);
                self.next_frame(buf)
            }
            (None, None) => {
                // Incomplete line: remember how far we looked.
                self.next_index = read_to;
                None
            }
        }
    }

    /// Decodes the next non-blank line into `T`; see [`QmpCodec`] for the contract.
    fn decode<T: FromLine>(&mut self, buf: &mut BytesMut) -> Option<Result<T, Error>> {
        loop {
            return match self.next_frame(buf)? {
                Frame::TooLong(error) => Some(Err(error)),
                // Blank lines carry nothing (JSON allows whitespace between values).
                Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Frame::Line(line) => Some(T::from_line(&line)),
            };
        }
    }

    fn decode_eof<T: FromLine>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Result<T, Error>>, Error> {
        if let Some(frame) = self.decode(buf) {
            return Ok(Some(frame));
        }
        self.next_index = 0;
        // An oversized last line cut short is reported as what it is, too long; the stream
        // ends after it anyway.
        if let Some(oversized) = self.discarding.take() {
            return Ok(Some(Err(oversized.into_error(self.max_frame_len))));
        }
        let leftover = std::mem::take(buf);
        if leftover.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            Err(Error::Truncated { len: leftover.len() })
        }
    }
}

/// Serialises `item` as one line: compact JSON, then `\r\n` (what QEMU itself sends).
fn encode_line<T: Serialize>(item: &T, dst: &mut BytesMut) -> Result<(), Error> {
    serde_json::to_writer(dst.writer(), item).map_err(std::io::Error::from)?;
    dst.put_slice(b"\r\n");
    Ok(())
}

/// Client-side QMP codec: decodes [`ServerMessage`]s, encodes [`Command`]s.
///
/// # Framing
/// A message ends at `\n`; a `\r` before it is dropped (QEMU sends `\r\n`). Bytes already
/// searched for a newline are never searched again, so a message arriving one byte at a
/// time costs linear, not quadratic, time. Blank lines are skipped.
///
/// # Errors without losing the stream
/// `Decoder::Item` is `Result<ServerMessage, Error>`: a line that is too long, not UTF-8,
/// not JSON, not an object, or not a QMP message is consumed and yielded as
/// `Ok(Some(Err(..)))` holding what was received, and the next line decodes normally even
/// through a [`FramedRead`](tokio_util::codec::FramedRead), which stops at the first `Err`.
/// Only I/O errors and [`Error::Truncated`] (EOF in the middle of a message) are stream
/// errors.
///
/// # Memory
/// The codec never holds more than `max_frame_len + 2` bytes of one line. A longer line is
/// dropped as it arrives, even if the peer never ends it, and reported once, when its
/// newline comes (or at end of stream), as [`Error::FrameTooLong`] with its length and its
/// first and last [`OVERSIZE_EXCERPT_LEN`] bytes, so a client can still tell which command
/// the lost reply answered. The default limit is [`DEFAULT_MAX_FRAME_LEN`]; QMP peers are
/// semi-trusted, so there is no unbounded mode.
pub type QmpCodec = JsonLinesCodec<ServerMessage, Command>;

/// Server-side QMP codec, for mock servers, proxies and fuzzing: decodes [`Command`]s and
/// encodes [`ServerMessage`]s. Same framing, limits and error contract as [`QmpCodec`].
pub type ServerCodec = JsonLinesCodec<Command, ServerMessage>;

/// The codec behind [`QmpCodec`] and [`ServerCodec`]: `\n`-framed JSON lines, decoding `D`
/// and encoding `E`; see [`QmpCodec`] for the contract.
#[derive(Debug, Clone)]
pub struct JsonLinesCodec<D, E> {
    framer: LineFramer,
    _types: PhantomData<fn(E) -> D>,
}

impl<D, E> JsonLinesCodec<D, E> {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that accepts messages of at most `max_frame_len` bytes (terminator excluded).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self { framer: LineFramer::new(max_frame_len), _types: PhantomData }
    }

    /// The limit in force.
    pub fn max_frame_len(&self) -> usize {
        self.framer.max_frame_len
    }
}

impl<D, E> Default for JsonLinesCodec<D, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: FromLine, E> Decoder for JsonLinesCodec<D, E> {
    type Item = Result<D, Error>;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self.framer.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        self.framer.decode_eof(buf)
    }
}

impl<D, E: Serialize> Encoder<&E> for JsonLinesCodec<D, E> {
    type Error = Error;

    fn encode(&mut self, item: &E, dst: &mut BytesMut) -> Result<(), Error> {
        encode_line(item, dst)
    }
}

impl<D, E: Serialize> Encoder<E> for JsonLinesCodec<D, E> {
    type Error = Error;

    fn encode(&mut self, item: E, dst: &mut BytesMut) -> Result<(), Error> {
        encode_line(&item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Return;
    use serde_json::json;

    fn decode_all(codec: &mut QmpCodec, buf: &mut BytesMut) -> Vec<Result<ServerMessage, Error>> {
        std::iter::from_fn(|| codec.decode(buf).unwrap()).collect()
    }

    fn ret(value: serde_json::Value, id: u64) -> ServerMessage {
        ServerMessage::Return(Return { value, id: Some(json!(id)) })
    }

    #[test]
    fn crlf_and_lf_lines_and_the_rest_of_the_buffer_is_kept() {
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::from(
            &b"{\"return\": 1, \"id\": 1}\r\n{\"return\": 2, \"id\": 2}\n{\"ret"[..],
        );
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &ret(json!(1), 1));
        assert_eq!(got[1].as_ref().unwrap(), &ret(json!(2), 2));
        assert_eq!(&buf[..], b"{\"ret");
    }

    #[test]
    fn split_reads_and_next_index() {
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::from(&b"{\"return\""[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.framer.next_index, 9, "searched bytes are remembered");
        buf.extend_from_slice(b": {}}\r");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.framer.next_index, 15);
        buf.extend_from_slice(b"\n");
        let msg = codec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(msg, ServerMessage::Return(Return { value: json!({}), id: None }));
        assert_eq!(codec.framer.next_index, 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn one_byte_at_a_time() {
        let wire = b"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n{\"return\": {}, \"id\": 9}\r\n";
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in wire {
            buf.put_u8(byte);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item.unwrap());
            }
        }
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], ServerMessage::Event(e) if e.event == "STOP"));
        assert_eq!(got[1], ret(json!({}), 9));
    }

    #[test]
    fn blank_lines_are_skipped() {
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::from(&b"\r\n\n  \t\r\n{\"return\": 1, \"id\": 1}\r\n\r\n"[..]);
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got.len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_lines_are_reported_and_decoding_goes_on() {
        let mut codec = QmpCodec::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"not json\r\n");
        buf.extend_from_slice(b"[1]\r\n");
        buf.extend_from_slice(b"{\"hello\": 1}\r\n");
        buf.extend_from_slice(b"{\"return\": \"\xff\"}\r\n");
        buf.extend_from_slice(b"{\"return\": 5, \"id\": 5}\r\n");
        let got = decode_all(&mut codec, &mut buf);
        assert!(matches!(got[0], Err(Error::InvalidJson { .. })), "{:?}", got[0]);
        assert!(matches!(got[1], Err(Error::NotAnObject { .. })), "{:?}", got[1]);
        assert!(matches!(got[2], Err(Error::UnknownShape { .. })), "{:?}", got[2]);
        assert!(matches!(got[3], Err(Error::InvalidUtf8 { .. })), "{:?}", got[3]);
        assert_eq!(got[4].as_ref().unwrap(), &ret(json!(5), 5));
        assert!(got[..4].iter().all(|r| r.as_ref().unwrap_err().is_frame_error()));
    }

    #[test]
    fn exact_limit_is_accepted_one_more_is_not() {
        let line = br#"{"return": "xxxxxxxxxx"}"#; // 24 bytes
        for terminator in [&b"\r\n"[..], b"\n"] {
            let mut codec = QmpCodec::with_max_frame_len(line.len());
            let mut buf = BytesMut::from(&line[..]);
            buf.extend_from_slice(terminator);
            assert!(codec.decode(&mut buf).unwrap().unwrap().is_ok());

            let mut codec = QmpCodec::with_max_frame_len(line.len() - 1);
            let mut buf = BytesMut::from(&line[..]);
            buf.extend_from_slice(terminator);
            buf.extend_from_slice(b"{\"return\": 1}\n");
            let got = decode_all(&mut codec, &mut buf);
            assert!(
                matches!(got[0], Err(Error::FrameTooLong { max_frame_len: 23, len: 24, .. })),
                "{got:?}"
            );
            assert!(got[1].is_ok(), "{got:?}");
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn oversized_line_across_reads_is_reported_once_at_its_end_then_resyncs() {
        let mut codec = QmpCodec::with_max_frame_len(16);
        let mut buf = BytesMut::from(&b"{\"return\": \"aaaa"[..]); // 16 bytes: maybe fine yet
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 16, "a line within the limit is kept");
        buf.extend_from_slice(b"aaaaaaaa"); // now over the limit with no newline
        assert!(codec.decode(&mut buf).unwrap().is_none(), "reported when the line ends");
        assert!(buf.is_empty(), "an oversized line is dropped as it arrives");
        for _ in 0..100 {
            buf.extend_from_slice(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"aa\", \"id\": 42}\r\n{\"return\": 1}\r\n");
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got.len(), 2, "{got:?}");
        let Err(Error::FrameTooLong { max_frame_len, len, head, tail }) = &got[0] else {
            panic!("{:?}", got[0])
        };
        assert_eq!((*max_frame_len, *len), (16, 16 + 8 + 2800 + 14));
        assert!(head.starts_with(b"{\"return\": \"aaaa") && head.len() == OVERSIZE_EXCERPT_LEN);
        assert!(tail.ends_with(b"aa\", \"id\": 42}") && tail.len() == OVERSIZE_EXCERPT_LEN);
        assert_eq!(
            got[1].as_ref().unwrap(),
            &ServerMessage::Return(Return { value: json!(1), id: None })
        );
    }

    #[test]
    fn memory_stays_bounded_when_the_peer_never_sends_a_newline() {
        let max = 1024;
        let mut codec = QmpCodec::with_max_frame_len(max);
        let mut buf = BytesMut::new();
        let chunk = vec![b'x'; 8192];
        for _ in 0..10_000 {
            // 80 MB in all
            buf.extend_from_slice(&chunk);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(buf.is_empty(), "buffer holds {} bytes", buf.len());
        }
        assert!(buf.capacity() <= 2 * chunk.len() + max, "capacity {}", buf.capacity());
        let Some(Err(Error::FrameTooLong { len, .. })) = codec.decode_eof(&mut buf).unwrap() else {
            panic!("the cut-off line is reported at EOF")
        };
        assert_eq!(len, 10_000 * 8192);
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn eof_cases() {
        let mut codec = QmpCodec::new();
        // A complete last message without a newline is still a truncation: QEMU always
        // ends messages with CRLF, so the peer died mid-write.
        let mut buf = BytesMut::from(&b"{\"return\": 1}\r\n{\"return\": 2}"[..]);
        assert!(codec.decode_eof(&mut buf).unwrap().unwrap().is_ok());
        assert!(matches!(codec.decode_eof(&mut buf), Err(Error::Truncated { len: 13 })));
        assert!(codec.decode_eof(&mut buf).unwrap().is_none(), "leftover is consumed");

        let mut buf = BytesMut::from(&b"  \r"[..]);
        assert!(codec.decode_eof(&mut buf).unwrap().is_none(), "whitespace is not a message");

        let mut codec = QmpCodec::with_max_frame_len(4);
        let mut buf = BytesMut::from(&b"{\"return\": 1"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(Err(Error::FrameTooLong { .. }))
        ));
        assert!(codec.decode_eof(&mut buf).unwrap().is_none(), "oversized tail reported once");
    }

    #[test]
    fn encoder_writes_one_crlf_line() {
        let mut codec = QmpCodec::new();
        let mut dst = BytesMut::new();
        codec.encode(&Command::new("query-status").id(3), &mut dst).unwrap();
        codec.encode(Command::new("stop"), &mut dst).unwrap();
        assert_eq!(
            &dst[..],
            b"{\"execute\":\"query-status\",\"id\":3}\r\n{\"execute\":\"stop\"}\r\n"
        );
    }

    #[test]
    fn server_codec_round_trip() {
        let mut server = ServerCodec::new();
        let mut client = QmpCodec::new();
        let mut wire = BytesMut::new();
        client.encode(Command::new("cont").id("c1"), &mut wire).unwrap();
        wire.extend_from_slice(b"{\"no-execute\": 1}\r\n");
        assert_eq!(
            server.decode(&mut wire).unwrap().unwrap().unwrap(),
            Command::new("cont").id("c1")
        );
        assert!(matches!(server.decode(&mut wire).unwrap(), Some(Err(Error::UnknownShape { .. }))));

        server.encode(ret(json!({"running": true}), 4), &mut wire).unwrap();
        assert_eq!(
            client.decode(&mut wire).unwrap().unwrap().unwrap(),
            ret(json!({"running": true}), 4)
        );
    }
}
