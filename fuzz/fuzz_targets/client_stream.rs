//! Arbitrary server bytes fed to a `qmp_client::Client` over an in-memory stream: the
//! client must neither panic nor hang, whatever the "server" says, then hangs up.
//!
//! The first byte picks what the client does once connected; the rest is the server's
//! side of the conversation. A seed corpus starting with a valid handshake lets the fuzzer
//! get past negotiation (ids 0 and 1 answer `qmp_capabilities` and `query-commands`).
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use qmp_client::{Client, EventFilter, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
});

const SHORT: Duration = Duration::from_millis(50);

fuzz_target!(|input: &[u8]| {
    let [mode, server_bytes @ ..] = input else { return };
    RUNTIME.block_on(async {
        let (client_end, server_end) = tokio::io::duplex(16 * 1024);
        let (mut from_client, mut to_client) = tokio::io::split(server_end);
        let server = async move {
            let feed = async {
                let _ = to_client.write_all(server_bytes).await;
                let _ = to_client.shutdown().await;
            };
            let drain = async {
                let mut sink = Vec::new();
                let _ = from_client.read_to_end(&mut sink).await;
            };
            futures::join!(feed, drain);
        };
        let client = async {
            let builder = Client::builder()
                .handshake_timeout(SHORT)
                .default_command_timeout(Some(SHORT))
                .max_frame_len(4096);
            let Ok(client) = builder.connect_stream(client_end).await else { return };
            let mut events = client.subscribe_with_capacity(EventFilter::all(), 4);
            match mode % 4 {
                0 => drop(client.execute("query-status", ()).await),
                1 => {
                    let calls = (0..4).map(|_| client.call(Request::new("query-status")));
                    drop(futures::future::join_all(calls).await);
                }
                2 => drop(client.execute_oob("migrate-pause", ()).await),
                _ => drop(events.wait(SHORT).await),
            }
            while events.try_recv().is_some() {}
            let _ = client.stats();
            client.close().await;
        };
        tokio::time::timeout(Duration::from_secs(10), async { futures::join!(server, client) })
            .await
            .expect("the client hung");
    });
});
