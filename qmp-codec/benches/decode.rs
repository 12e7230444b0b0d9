//! Decode throughput of a real QEMU 7.2 transcript (`tests/data`), against plain
//! `serde_json::from_slice::<Value>` of the same, already split, messages in the same run.
//!
//! `cargo bench -p qmp-codec --bench decode`; see BENCHMARKS.md for recorded ratios.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qmp_codec::QmpCodec;
use serde_json::Value;
use tokio_util::codec::Decoder;

const TRANSCRIPT: &[u8] = include_bytes!("../tests/data/qemu-7.2-transcript.qmp");

fn lines() -> Vec<&'static [u8]> {
    TRANSCRIPT.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect()
}

fn decode(c: &mut Criterion) {
    let lines = lines();
    let mut group = c.benchmark_group("decode_transcript");
    group.throughput(Throughput::Bytes(TRANSCRIPT.len() as u64));

    // Baseline: parsing only, lines handed over pre-split, into a generic Value tree.
    group.bench_function("serde_json_from_slice", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_slice::<Value>(black_box(line)).unwrap());
            }
        });
    });

    // The codec does the framing as well: find each newline, split, strip CR, parse, type.
    // Its read buffer is reused from one run to the next, as `FramedRead` reuses its own.
    let mut buf = BytesMut::with_capacity(TRANSCRIPT.len());
    group.bench_function("qmp_codec", |b| {
        b.iter(|| {
            buf.extend_from_slice(TRANSCRIPT);
            let mut codec = QmpCodec::new();
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                black_box(item.unwrap());
            }
        });
    });

    // The same stream arriving in 4 KiB reads, as from a socket.
    group.bench_function("qmp_codec_4k_reads", |b| {
        b.iter(|| {
            let mut codec = QmpCodec::new();
            for chunk in TRANSCRIPT.chunks(4096) {
                buf.extend_from_slice(chunk);
                while let Some(item) = codec.decode(&mut buf).unwrap() {
                    black_box(item.unwrap());
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
