//! Fixed work for instruction counting: decodes the real transcript `ROUNDS` times, either
//! with `QmpCodec` (`codec`) or as plain `serde_json::from_slice::<Value>` of the pre-split
//! lines (`serde_json`). Run under callgrind by `scripts/bench-codec-callgrind`, which
//! reports the instruction ratio; seconds are for `benches/decode.rs`.

use std::hint::black_box;

use bytes::BytesMut;
use qmp_codec::QmpCodec;
use serde_json::Value;
use tokio_util::codec::Decoder;

const TRANSCRIPT: &[u8] = include_bytes!("../tests/data/qemu-7.2-transcript.qmp");
const ROUNDS: usize = 10;

fn main() {
    // cargo passes `--bench` (and test harness flags under `cargo test`); the mode is the
    // first argument that is not a flag, default both.
    let mode = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let lines: Vec<&[u8]> = TRANSCRIPT.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    // Reused from one round to the next, as `FramedRead` reuses its read buffer.
    let mut buf = BytesMut::with_capacity(TRANSCRIPT.len());
    for _ in 0..ROUNDS {
        if mode.as_deref() != Some("codec") {
            for line in &lines {
                black_box(serde_json::from_slice::<Value>(black_box(line)).unwrap());
            }
        }
        if mode.as_deref() != Some("serde_json") {
            buf.extend_from_slice(TRANSCRIPT);
            let mut codec = QmpCodec::new();
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                black_box(item.unwrap());
            }
        }
    }
}
