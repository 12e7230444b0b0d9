//! Pipelined throughput: `N` = 512 `query-status` commands per iteration with 1, 8 and 64
//! in flight (`buffer_unordered(k)` over one `Client`), in commands/s.
//!
//! * `pipelined_mock`: against `mock::MockServer` answering `{}` at once; the server
//!   runs on its own one-worker runtime (its own thread), so it does not share the client's.
//! * `pipelined_qemu`: against one real, paused QEMU (TCG, `-S`), with `oob` negotiated
//!   (the default; QEMU then reads ahead and queues up to 8 in-band commands) and with
//!   `enable_oob(false)` (QEMU reads the next command only after answering the previous).
//!
//! Each `client_*` figure has a `raw_socket_*` baseline in the same group and run: a
//! blocking loop on a raw unix socket that writes `k` commands at once, then writes one
//! more for every reply it reads, so `k` stay in flight.
//!
//! The client runs on a current-thread runtime: with 2 cores, the server (QEMU's monitor
//! thread, or the mock's runtime) needs the other one, and a second client worker would
//! only add cross-thread wake-ups and contention on the client's state lock. The raw
//! baseline is single-threaded too.
//!
//! `cargo bench -p qmp-client --bench pipelined`, then `scripts/qmp-bench-ratios pipelined`.
//! Without QEMU `pipelined_qemu` is skipped with a printed reason; `QMP_REQUIRE_QEMU=1`
//! makes that a failure.

mod common;

use std::path::Path;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use futures::StreamExt;
use qmp_client::mock::MockServer;
use qmp_client::{Client, ClientBuilder};
use serde_json::json;
use tokio::runtime::Runtime;

use common::RawQmp;

/// Commands per iteration.
const N: u64 = 512;
/// Commands in flight.
const IN_FLIGHT: [usize; 3] = [1, 8, 64];

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    // An iteration takes 5-150 ms: few, flat samples keep a run under a few minutes.
    group
        .throughput(Throughput::Elements(N))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
}

fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Runs `N` commands, `k` at a time.
async fn client_pipelined(client: &Client, k: usize) {
    futures::stream::iter(0..N)
        .map(|_| client.execute("query-status", ()))
        .buffer_unordered(k)
        .for_each(|reply| {
            reply.expect("query-status");
            futures::future::ready(())
        })
        .await;
}

/// Runs `N` commands on a raw socket: `k` written at once, then one more per reply read.
fn raw_pipelined(raw: &mut RawQmp, k: usize) {
    let mut sent = 0;
    while sent < N.min(k as u64) {
        raw.queue_query_status();
        sent += 1;
    }
    raw.flush();
    for _ in 0..N {
        raw.read_reply();
        if sent < N {
            raw.queue_query_status();
            raw.flush();
            sent += 1;
        }
    }
}

/// Benchmarks the raw baseline at `k` in flight on its own connection, closed on return.
fn bench_raw(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    k: usize,
    path: &Path,
    oob: bool,
) {
    let mut raw: Option<RawQmp> = None;
    group.bench_function(BenchmarkId::new(name, k), |b| {
        let raw = raw.get_or_insert_with(|| RawQmp::connect(path, oob));
        b.iter(|| raw_pipelined(raw, k));
    });
}

/// Benchmarks the client at `k` in flight on its own connection, closed on return.
fn bench_client(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    k: usize,
    path: &Path,
    oob: bool,
) -> Option<Client> {
    let mut client: Option<Client> = None;
    group.bench_function(BenchmarkId::new(name, k), |b| {
        let client: &Client = client.get_or_insert_with(|| {
            let connect = ClientBuilder::new().enable_oob(oob).connect(path);
            let client = rt.block_on(connect).expect("connect the client");
            assert_eq!(client.oob_enabled(), oob, "oob negotiation");
            client
        });
        b.to_async(rt).iter(|| client_pipelined(client, k));
    });
    client
}

fn pipelined_mock(c: &mut Criterion) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime for the mock server");
    let server = {
        let _enter = server_rt.enter();
        MockServer::builder()
            .handler(|conn, request| conn.reply(&request.command, json!({})))
            .start()
    };
    let rt = client_runtime();
    let mut group = c.benchmark_group("pipelined_mock");
    configure(&mut group);
    for k in IN_FLIGHT {
        bench_raw(&mut group, "raw_socket", k, server.path(), true);
        let client = bench_client(&mut group, &rt, "client", k, server.path(), true);
        close(&rt, client);
    }
    group.finish();
    drop(server);
    drop(server_rt);
}

fn pipelined_qemu(c: &mut Criterion) {
    let Some(qemu) = common::paused_qemu_or_skip("pipelined_qemu") else { return };
    let rt = client_runtime();
    let mut group = c.benchmark_group("pipelined_qemu");
    configure(&mut group);
    for (oob, suffix) in [(true, "oob"), (false, "no_oob")] {
        for k in IN_FLIGHT {
            // QEMU serves one client at a time: each connection is closed before the next.
            bench_raw(&mut group, &format!("raw_socket_{suffix}"), k, qemu.qmp_path(), oob);
            let name = format!("client_{suffix}");
            let client = bench_client(&mut group, &rt, &name, k, qemu.qmp_path(), oob);
            close(&rt, client);
        }
    }
    group.finish();
    drop(qemu);
}

fn close(rt: &Runtime, client: Option<Client>) {
    if let Some(client) = client {
        // Waits for the client's tasks, which hold the socket, so the server sees it closed.
        rt.block_on(client.close());
    }
}

criterion_group!(benches, pipelined_mock, pipelined_qemu);
criterion_main!(benches);
