//! The bench's own mock server is checked before its figures are trusted: the greeting,
//! negotiation, `query-status`, `exec-oob`, errors, and `x-bench-events` emitting exactly
//! N events in order before its reply, both in-process (the library) and as the
//! `mock-qmp` binary that `bench/run` starts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use qmp_client::{Client, EventFilter, EventItem};
use serde_json::{Value, json};

/// A blocking line-by-line peer, parsing every line.
struct Peer {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Peer {
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        assert!(self.reader.read_line(&mut line).unwrap() > 0, "EOF");
        assert!(line.ends_with("\r\n"), "{line:?}");
        serde_json::from_str(&line).unwrap()
    }
}

fn exercise_protocol(path: &Path) {
    let mut peer = Peer::connect(path);
    let greeting = peer.recv();
    assert_eq!(greeting["QMP"]["capabilities"], json!(["oob"]), "{greeting}");
    assert_eq!(greeting["QMP"]["version"]["qemu"]["major"], 7);

    // Like QEMU: nothing but qmp_capabilities before negotiation.
    peer.send(b"{\"execute\":\"query-status\",\"id\":0}\r\n");
    assert_eq!(peer.recv()["error"]["class"], "CommandNotFound");

    // No line terminator at all, as Python's qemu.qmp sends commands; split across writes.
    peer.send(b"{\"execute\":\"qmp_capabilities\",\"argu");
    std::thread::sleep(Duration::from_millis(20));
    peer.send(b"ments\":{\"enable\":[\"oob\"]},\"id\":\"neg\"}");
    assert_eq!(peer.recv(), json!({"return": {}, "id": "neg"}));

    peer.send(b"{\"execute\":\"query-status\",\"id\":\"s1\"}\r\n");
    assert_eq!(
        peer.recv(),
        json!({"return": {"status": "running", "singlestep": false, "running": true}, "id": "s1"})
    );
    peer.send(b"{\"exec-oob\":\"migrate-pause\",\"id\":7}{\"execute\":\"nope\",\"id\":8}");
    assert_eq!(peer.recv(), json!({"return": {}, "id": 7}));
    assert_eq!(peer.recv()["error"]["class"], "CommandNotFound");
    peer.send(b"not json\r\n");
    assert_eq!(peer.recv()["error"]["class"], "GenericError");

    let n = 2500;
    peer.send(
        format!("{{\"execute\":\"x-bench-events\",\"arguments\":{{\"count\":{n}}},\"id\":9}}\n")
            .as_bytes(),
    );
    for i in 0..n {
        let event = peer.recv();
        assert_eq!(event["event"], "BENCH", "{event}");
        assert_eq!(event["data"]["n"], i, "{event}");
        assert!(event["timestamp"]["seconds"].as_i64().unwrap() > 0, "{event}");
    }
    assert_eq!(peer.recv(), json!({"return": {}, "id": 9}));
}

fn start_in_process(
    dir: &Path,
) -> (tokio::runtime::Runtime, qmp_client::mock::MockServer, std::path::PathBuf) {
    let path = dir.join("mock.sock");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = {
        let _enter = runtime.enter();
        qmp_bench::mock_server().start_at(&path).unwrap()
    };
    (runtime, server, path)
}

#[test]
fn mock_answers_like_qemu_and_emits_n_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, _server, path) = start_in_process(dir.path());
    exercise_protocol(&path);
}

#[test]
fn qmp_client_negotiates_oob_and_receives_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, _server, path) = start_in_process(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Client::connect(&path).await.unwrap();
        assert!(client.oob_enabled());
        assert!(client.supports("x-bench-events"));
        let status = client.execute("query-status", ()).await.unwrap();
        assert_eq!(status["status"], "running");
        let n = 10_000;
        let mut events = client.subscribe_with_capacity(EventFilter::names(["BENCH"]), n);
        client.execute("x-bench-events", json!({"count": n})).await.unwrap();
        for i in 0..n {
            match events.recv().await {
                Some(EventItem::Event(event)) => assert_eq!(event.data.unwrap()["n"], i),
                other => panic!("event {i}: {other:?}"),
            }
        }
        assert!(events.try_recv().is_none());
        client.close().await;
    });
}

#[test]
fn the_mock_qmp_binary_serves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bin.sock");
    let mut child =
        std::process::Command::new(env!("CARGO_BIN_EXE_mock-qmp")).arg(&path).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&path).is_err() {
        assert!(Instant::now() < deadline, "mock-qmp did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    exercise_protocol(&path);
    child.kill().unwrap();
    child.wait().unwrap();
}
