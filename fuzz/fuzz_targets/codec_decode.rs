//! Arbitrary server bytes through `QmpCodec`, cut into arbitrary reads.
//!
//! Invariants: no panic; the buffer never holds more than `max_frame_len + 2` bytes after a
//! decode call; and the sequence of messages and frame errors does not depend on how the
//! bytes were cut into reads.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qmp_codec::{QmpCodec, ServerMessage};
use tokio_util::codec::Decoder;

/// A comparable summary of one decoder output.
fn summary(item: Result<Option<Result<ServerMessage, qmp_codec::Error>>, qmp_codec::Error>) -> Option<String> {
    match item {
        Ok(None) => None,
        Ok(Some(Ok(message))) => Some(message.to_value().to_string()),
        Ok(Some(Err(frame_error))) => {
            assert!(frame_error.is_frame_error());
            Some(format!("frame error: {frame_error}"))
        }
        Err(stream_error) => {
            assert!(!stream_error.is_frame_error());
            Some(format!("stream error: {stream_error}"))
        }
    }
}

fn decode(data: &[u8], max_frame_len: usize, chunk: usize) -> Vec<String> {
    let mut codec = QmpCodec::with_max_frame_len(max_frame_len);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(s) = summary(codec.decode(&mut buf)) {
            out.push(s);
        }
        assert!(buf.len() <= max_frame_len + 2, "{} buffered with limit {max_frame_len}", buf.len());
    }
    while let Some(s) = summary(codec.decode_eof(&mut buf)) {
        let stop = s.starts_with("stream error");
        out.push(s);
        if stop {
            break;
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let [limit, chunk, data @ ..] = input else { return };
    let max_frame_len = usize::from(*limit) * 4 + 1;
    let whole = decode(data, max_frame_len, data.len());
    let cut = decode(data, max_frame_len, usize::from(*chunk));
    assert_eq!(whole, cut);
});
