//! Round trip of one `query-status` against one real, paused QEMU (TCG, `-S`), one command
//! at a time: the async client (current-thread runtime) and the blocking client, against a
//! minimal blocking loop on a raw unix socket to the same QEMU in the same run.
//!
//! QEMU's monitor serves one client at a time, so each variant connects on its first
//! sample and is closed before the next variant connects (which then gets a fresh greeting).
//!
//! `cargo bench -p qmp-client --bench roundtrip`, then `scripts/qmp-bench-ratios roundtrip`.
//! Without QEMU the group is skipped with a printed reason; `QMP_REQUIRE_QEMU=1` makes that
//! a failure.

mod common;

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use qmp_client::{Client, ClientBuilder};

use common::RawQmp;

const GROUP: &str = "query_status_roundtrip";

fn roundtrip(c: &mut Criterion) {
    let Some(qemu) = common::paused_qemu_or_skip(GROUP) else { return };
    let path = qemu.qmp_path();
    let mut group = c.benchmark_group(GROUP);
    group.measurement_time(Duration::from_secs(10));

    // Baseline: write one line, read one line; `qmp_capabilities` without arguments.
    raw_loop(&mut group, "raw_socket_loop", path, false);
    // The same with `oob` negotiated, as both clients do by default (QEMU 7.2 offers it).
    raw_loop(&mut group, "raw_socket_loop_oob", path, true);

    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut client: Option<Client> = None;
    group.bench_function("async_client", |b| {
        let client: &Client = client.get_or_insert_with(|| {
            rt.block_on(ClientBuilder::new().connect(path)).expect("connect the async client")
        });
        b.to_async(&rt).iter(|| async move {
            client.execute("query-status", ()).await.expect("query-status")
        });
    });
    if let Some(client) = client.take() {
        // Waits for the client's tasks, which hold the socket, so QEMU sees it closed.
        rt.block_on(client.close());
    }

    let mut blocking: Option<qmp_client::blocking::Client> = None;
    group.bench_function("blocking_client", |b| {
        let client = blocking.get_or_insert_with(|| {
            ClientBuilder::new().connect_blocking(path).expect("connect the blocking client")
        });
        b.iter(|| client.execute("query-status", ()).expect("query-status"));
    });
    if let Some(client) = blocking.take() {
        client.close();
    }

    group.finish();
    drop(qemu);
}

fn raw_loop(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    path: &Path,
    oob: bool,
) {
    let mut raw: Option<RawQmp> = None;
    group.bench_function(name, |b| {
        let raw = raw.get_or_insert_with(|| RawQmp::connect(path, oob));
        b.iter(|| {
            raw.queue_query_status();
            raw.flush();
            raw.read_reply();
        });
    });
    // Dropped (closed) here, before the next variant connects.
    drop(raw);
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
