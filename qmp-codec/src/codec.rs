//! Line framing and the tokio-util `Decoder`/`Encoder` implementations.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::message::parse;
use crate::{Command, Error, ServerMessage};

/// Default limit on one message: 10 MiB, the limit libvirt and Python `qemu.qmp` use.
///
/// QEMU 7.2's largest reply measured here is `query-qmp-schema` at about 207 KB; HMP output
/// such as `info mem` grows with the guest, which is why a 64 KiB cap is a known bug elsewhere.
pub const DEFAULT_MAX_FRAME_LEN: usize = 10 * 1024 * 1024;

/// Splits a byte stream into `\n`-terminated lines (a `\r` before the `\n` is dropped), with
/// a length limit and without ever rescanning bytes already searched.
#[derive(Debug, Clone)]
struct LineFramer {
    /// Where the next search for `\n` starts: everything before it is known newline-free.
    next_index: usize,
    /// Longest accepted line, not counting its `\r\n` / `\n` terminator.
    max_frame_len: usize,
    /// Dropping the rest of an oversized line until its `\n`.
    is_discarding: bool,
}

/// What the framer found in the buffer.
enum Frame {
    /// A complete line, terminator removed.
    Line(BytesMut),
    /// A line over the limit; it is being (or has been) discarded. Reported once per line.
    TooLong,
}

impl LineFramer {
    fn new(max_frame_len: usize) -> Self {
        Self { next_index: 0, max_frame_len, is_discarding: false }
    }

    fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            // Room for the longest line plus `\r\n`: never search (or keep) more than that.
            // While discarding, everything buffered is garbage up to the newline anyway.
            let read_to = if self.is_discarding {
                buf.len()
            } else {
                buf.len().min(self.max_frame_len.saturating_add(2))
            };
            let newline = memchr::memchr(b'\n', &buf[self.next_index..read_to]);
            match (self.is_discarding, newline) {
                (true, Some(offset)) => {
                    // End of the oversized line: drop it with its newline, then resume.
                    buf.advance(self.next_index + offset + 1);
                    self.is_discarding = false;
                    self.next_index = 0;
                }
                (true, None) => {
                    // Still inside the oversized line: drop what we have and wait for more.
                    buf.advance(read_to);
                    self.next_index = 0;
                    if buf.is_empty() {
                        return None;
                    }
                }
                (false, Some(offset)) => {
                    let newline_index = self.next_index + offset;
                    self.next_index = 0;
                    let mut line = buf.split_to(newline_index + 1);
                    line.truncate(newline_index);
                    if line.last() == Some(&b'\r') {
                        line.truncate(newline_index - 1);
                    }
                    // The window admits one byte more than a CRLF line needs, so a line
                    // ending in a bare `\n` can reach here one byte too long.
                    return Some(if line.len() > self.max_frame_len {
                        Frame::TooLong
                    } else {
                        Frame::Line(line)
                    });
                }
                (false, None) if buf.len() > self.max_frame_len.saturating_add(1) => {
                    // No newline within the limit: this line is too long whatever follows.
                    // Drop what was searched now rather than hold it until the next call.
                    buf.advance(read_to);
                    self.next_index = 0;
                    self.is_discarding = true;
                    return Some(Frame::TooLong);
                }
                (false, None) => {
                    // Incomplete line: remember how far we looked.
                    self.next_index = read_to;
                    return None;
                }
            }
        }
    }

    /// Decodes the next non-blank line into `T`; see [`QmpCodec`] for the contract.
    fn decode<T: DeserializeOwned>(&mut self, buf: &mut BytesMut) -> Option<Result<T, Error>> {
        loop {
            return match self.next_frame(buf)? {
                Frame::TooLong => {
                    Some(Err(Error::FrameTooLong { max_frame_len: self.max_frame_len }))
                }
                // Blank lines carry nothing (JSON allows whitespace between values).
                Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Frame::Line(line) => Some(parse(&line)),
            };
        }
    }

    fn decode_eof<T: DeserializeOwned>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Result<T, Error>>, Error> {
        if let Some(frame) = self.decode(buf) {
            return Ok(Some(frame));
        }
        let leftover = std::mem::take(buf);
        let was_discarding = std::mem::replace(&mut self.is_discarding, false);
        self.next_index = 0;
        // An oversized last line was already reported; whitespace is not a message.
        if was_discarding || leftover.iter().all(u8::is_ascii_whitespace) {
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
/// The codec never holds more than `max_frame_len + 2` bytes of one line: a longer line is
/// reported once as [`Error::FrameTooLong`] and then dropped as it arrives, up to its
/// newline, even if the peer never sends one. The default limit is
/// [`DEFAULT_MAX_FRAME_LEN`]; QMP peers are semi-trusted, so there is no unbounded mode.
#[derive(Debug, Clone)]
pub struct QmpCodec {
    framer: LineFramer,
}

impl QmpCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that accepts messages of at most `max_frame_len` bytes (terminator excluded).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self { framer: LineFramer::new(max_frame_len) }
    }

    /// The limit in force.
    pub fn max_frame_len(&self) -> usize {
        self.framer.max_frame_len
    }
}

impl Default for QmpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for QmpCodec {
    type Item = Result<ServerMessage, Error>;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self.framer.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        self.framer.decode_eof(buf)
    }
}

impl Encoder<&Command> for QmpCodec {
    type Error = Error;

    fn encode(&mut self, command: &Command, dst: &mut BytesMut) -> Result<(), Error> {
        encode_line(command, dst)
    }
}

impl Encoder<Command> for QmpCodec {
    type Error = Error;

    fn encode(&mut self, command: Command, dst: &mut BytesMut) -> Result<(), Error> {
        encode_line(&command, dst)
    }
}

/// Server-side QMP codec, for mock servers, proxies and fuzzing: decodes [`Command`]s and
/// encodes [`ServerMessage`]s. Same framing, limits and error contract as [`QmpCodec`].
#[derive(Debug, Clone)]
pub struct ServerCodec {
    framer: LineFramer,
    _commands: PhantomData<Command>,
}

impl ServerCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that accepts commands of at most `max_frame_len` bytes (terminator excluded).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self { framer: LineFramer::new(max_frame_len), _commands: PhantomData }
    }
}

impl Default for ServerCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for ServerCodec {
    type Item = Result<Command, Error>;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self.framer.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        self.framer.decode_eof(buf)
    }
}

impl Encoder<&ServerMessage> for ServerCodec {
    type Error = Error;

    fn encode(&mut self, message: &ServerMessage, dst: &mut BytesMut) -> Result<(), Error> {
        encode_line(message, dst)
    }
}

impl Encoder<ServerMessage> for ServerCodec {
    type Error = Error;

    fn encode(&mut self, message: ServerMessage, dst: &mut BytesMut) -> Result<(), Error> {
        encode_line(&message, dst)
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
            assert!(matches!(got[0], Err(Error::FrameTooLong { max_frame_len: 23 })), "{got:?}");
            assert!(got[1].is_ok(), "{got:?}");
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn oversized_line_across_reads_is_reported_once_then_resyncs() {
        let mut codec = QmpCodec::with_max_frame_len(16);
        let mut buf = BytesMut::from(&b"{\"return\": \"aaaa"[..]); // 16 bytes: maybe fine yet
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"aaaaaaaa"); // now over the limit with no newline
        assert!(matches!(codec.decode(&mut buf).unwrap(), Some(Err(Error::FrameTooLong { .. }))));
        // The searched window (limit + 2) is dropped at once; the rest may hold a newline.
        assert_eq!(buf.len(), 24 - 18);
        for _ in 0..100 {
            buf.extend_from_slice(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
            assert!(codec.decode(&mut buf).unwrap().is_none(), "reported only once");
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"aa\"}\r\n{\"return\": 1}\r\n");
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].as_ref().unwrap(),
            &ServerMessage::Return(Return { value: json!(1), id: None })
        );
    }

    #[test]
    fn memory_stays_bounded_when_the_peer_never_sends_a_newline() {
        let max = 1024;
        let mut codec = QmpCodec::with_max_frame_len(max);
        let mut buf = BytesMut::new();
        let chunk = vec![b'x'; 8192];
        let mut too_long = 0;
        for _ in 0..10_000 {
            // 80 MB in all
            buf.extend_from_slice(&chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                assert!(matches!(item, Err(Error::FrameTooLong { .. })));
                too_long += 1;
            }
            assert!(buf.len() <= max + 2, "buffer holds {} bytes", buf.len());
        }
        assert_eq!(too_long, 1);
        assert!(buf.capacity() <= 2 * chunk.len() + max, "capacity {}", buf.capacity());
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
