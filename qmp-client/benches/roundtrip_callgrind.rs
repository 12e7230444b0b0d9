//! Fixed work for instruction counting: `ROUNDS` `query-status` round trips against a
//! paused QEMU it starts, with the raw socket loop (`raw`), the async client (`async`) or
//! the blocking client (`blocking`), each client also with argument checking on
//! (`async-checked`, `blocking-checked`: the schema is fetched once, every command checked). `scripts/bench-client-callgrind` runs it under
//! callgrind twice per mode (two round counts) and reports the instructions *this* process
//! spends per round trip, the difference removing start-up and handshake. QEMU is a child
//! process that callgrind does not trace, so its share is not counted: this is the client's
//! own CPU cost, stable on a noisy machine where wall-clock latency is not.
//!
//! Arguments: `MODE ROUNDS`. With no arguments (as under `cargo test --benches`) it runs
//! every mode for a few rounds.

mod common;

use qmp_client::ClientBuilder;

fn run(mode: &str, rounds: usize, path: &std::path::Path) {
    match mode {
        "raw" => {
            let mut raw = common::RawQmp::connect(path, true);
            for _ in 0..rounds {
                raw.queue_query_status();
                raw.flush();
                raw.read_reply();
            }
        }
        "async" | "async-checked" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let checked = mode == "async-checked";
            rt.block_on(async {
                let client = ClientBuilder::new()
                    .check_arguments(checked)
                    .connect(path)
                    .await
                    .expect("connect");
                for _ in 0..rounds {
                    client.execute("query-status", ()).await.expect("query-status");
                }
                client.close().await;
            });
        }
        "blocking" | "blocking-checked" => {
            let mut client = ClientBuilder::new()
                .check_arguments(mode == "blocking-checked")
                .connect_blocking(path)
                .expect("connect");
            for _ in 0..rounds {
                client.execute("query-status", ()).expect("query-status");
            }
            client.close();
        }
        other => panic!(
            "unknown mode {other:?}: expected raw, async, blocking, async-checked or \
             blocking-checked"
        ),
    }
}

fn main() {
    // cargo passes `--bench` (or test-harness flags); the rest are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let Some(qemu) = common::paused_qemu_or_skip("roundtrip_callgrind") else { return };
    match args.as_slice() {
        [mode, rounds] => run(mode, rounds.parse().expect("ROUNDS is a number"), qemu.qmp_path()),
        _ => {
            for mode in ["raw", "async", "blocking", "async-checked", "blocking-checked"] {
                run(mode, 10, qemu.qmp_path());
            }
        }
    }
}
