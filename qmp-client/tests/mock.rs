//! Faults a real QEMU cannot be made to produce, against the scriptable mock server (`qmp_client::mock`).

use std::fmt::Write as _;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qmp_client::mock::{MockGreeting, MockServer};
use qmp_client::{
    Client, DisconnectReason, Error, ErrorClass, EventFilter, EventItem, ReconnectingClient,
    Request,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds; fails the test after `PATIENCE`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn replies_out_of_order_reach_the_right_callers() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let server = MockServer::builder()
        .handler({
            let held = Arc::clone(&held);
            move |conn, request| {
                let mut held = held.lock().unwrap();
                held.push(request.command);
                if held.len() == 3 {
                    // Answer the last first, each with its own arguments echoed.
                    for command in held.drain(..).rev() {
                        conn.reply(&command, json!(command.arguments));
                    }
                }
            }
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let (a, b, c) = tokio::join!(
        client.execute("query-status", json!({"n": 1})),
        client.execute("query-status", json!({"n": 2})),
        client.execute("query-status", json!({"n": 3})),
    );
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (json!({"n": 1}), json!({"n": 2}), json!({"n": 3}))
    );
    assert_eq!(client.stats().unmatched_replies, 0);
}

#[tokio::test]
async fn many_tasks_share_one_connection() {
    let server = MockServer::builder()
        .handler(|conn, request| conn.reply(&request.command, json!(request.command.arguments)))
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    let args = json!({"task": task, "n": n});
                    assert_eq!(client.execute("query-status", &args).await.unwrap(), args);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn unknown_ids_and_garbage_between_replies_are_counted_not_fatal() {
    let server = MockServer::builder()
        .handler(|conn, request| {
            conn.send_raw("this is not JSON\r\n");
            conn.send_raw("{\"return\": {}, \"id\": 999999}\r\n");
            conn.send_raw("{\"return\": {}}\r\n");
            conn.send_raw("[\"an\", \"array\"]\r\n");
            conn.reply(&request.command, json!("the real reply"));
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    assert_eq!(client.execute("query-status", ()).await.unwrap(), "the real reply");
    assert_eq!(client.execute("query-status", ()).await.unwrap(), "the real reply");
    let stats = client.stats();
    assert_eq!((stats.unmatched_replies, stats.bad_frames), (4, 4));
    assert!(!client.is_closed());
}

/// `count` `TICK` events numbered from 0, as one chunk of wire bytes.
fn tick_burst(count: u64) -> String {
    let mut burst = String::new();
    for n in 0..count {
        let _ = write!(
            burst,
            "{{\"event\": \"TICK\", \"data\": {{\"n\": {n}}}, \"timestamp\": {{\"seconds\": 1, \"microseconds\": 0}}}}\r\n"
        );
    }
    burst
}

#[tokio::test]
async fn an_event_flood_and_a_slow_subscriber_stay_bounded() {
    const FLOOD: usize = 50_000;
    let server = MockServer::builder()
        .handler(|conn, request| {
            if request.command.name == "cont" {
                conn.send_raw(tick_burst(FLOOD as u64));
            }
            conn.reply(&request.command, json!({}));
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let mut slow = client.subscribe_with_capacity(EventFilter::names(["TICK"]), 16);
    let mut filtered_out = client.subscribe_with_capacity(EventFilter::names(["OTHER"]), 16);

    client.execute("cont", ()).await.unwrap();
    // The connection is not held up by the subscriber that reads nothing.
    assert_eq!(client.execute("query-status", ()).await.unwrap(), json!({}));
    assert_eq!(client.stats().events, FLOOD as u64);

    let Some(EventItem::Lagged(missed)) = slow.recv().await else {
        panic!("expected a lag marker")
    };
    assert_eq!(missed, (FLOOD - 16) as u64);
    let mut kept = Vec::new();
    while let Some(item) = slow.try_recv() {
        let EventItem::Event(event) = item else { panic!("{item:?}") };
        kept.push(event.data.unwrap()["n"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (FLOOD as u64 - 16..FLOOD as u64).collect();
    assert_eq!(kept, expected, "the newest events are kept, in order");
    assert!(filtered_out.try_recv().is_none(), "a filter is applied before queueing");
}

/// On a one-thread runtime the reader lets a consumer run once its queue is half full, so
/// a prompt consumer with the default queue sees a whole burst, in order, with no loss.
#[tokio::test]
async fn a_prompt_consumer_keeps_up_with_a_burst_on_one_thread() {
    const BURST: u64 = 20_000;
    let server = MockServer::builder()
        .handler(|conn, request| {
            if request.command.name == "cont" {
                conn.send_raw(tick_burst(BURST));
            }
            conn.reply(&request.command, json!({}));
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let mut ticks = client.subscribe(EventFilter::names(["TICK"]));
    let consumer = tokio::spawn(async move {
        let mut next = 0;
        while next < BURST {
            match ticks.recv().await {
                Some(EventItem::Event(event)) => {
                    assert_eq!(event.data.unwrap()["n"], next, "in order");
                    next += 1;
                }
                other => panic!("after {next} events: {other:?}"),
            }
        }
    });
    client.execute("cont", ()).await.unwrap();
    consumer.await.unwrap();
}

/// A command too big for the socket buffer is partly written by its caller and finished by
/// the writer task; commands sent meanwhile queue behind it and nothing interleaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_larger_than_the_socket_buffer_arrives_whole() {
    let server = MockServer::builder()
        .handler(|conn, request| {
            let blob = request.command.arguments.as_ref().and_then(|a| a.get("blob"));
            let len = blob.and_then(Value::as_str).map_or(0, str::len);
            conn.reply(&request.command, json!(len));
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let blob = "x".repeat(3 << 20);
    let big = client.execute("query-status", json!({"blob": blob}));
    let small = async {
        tokio::task::yield_now().await;
        client.execute("query-status", json!({"blob": "y"})).await
    };
    let (big, small) = tokio::join!(big, small);
    assert_eq!(big.unwrap(), json!(3 << 20));
    assert_eq!(small.unwrap(), json!(1));
    assert_eq!(client.execute("query-status", json!({"blob": "zz"})).await.unwrap(), json!(2));
    assert_eq!(client.stats().bad_frames, 0);
}

/// The same when the consumer is the runtime's main future (`block_on`), which tokio
/// polls only after the tasks that are ready: the reader must yield behind it.
#[tokio::test]
async fn a_prompt_consumer_in_the_main_future_keeps_up_too() {
    const BURST: u64 = 20_000;
    let server = MockServer::builder()
        .handler(|conn, request| {
            if request.command.name == "cont" {
                conn.event_burst("TICK", BURST);
            }
            conn.reply(&request.command, json!({}));
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let mut ticks = client.subscribe(EventFilter::names(["TICK"]));
    let consume = async {
        for next in 0..BURST {
            match ticks.recv().await {
                Some(EventItem::Event(event)) => assert_eq!(event.data.unwrap()["n"], next),
                other => panic!("after {next} events: {other:?}"),
            }
        }
    };
    let (reply, ()) = tokio::join!(client.execute("cont", ()), consume);
    reply.unwrap();
}

#[tokio::test]
async fn a_missing_or_wrong_greeting_is_a_typed_error() {
    let silent = MockServer::builder().greeting(MockGreeting::Silent).start();
    let error = Client::builder()
        .handshake_timeout(Duration::from_millis(200))
        .connect(silent.path())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::GreetingTimeout(d) if d == Duration::from_millis(200)),
        "{error}"
    );

    for (greeting, expected) in [
        (&b"{\"return\": {}}\r\n"[..], "expected the QMP greeting"),
        (b"garbage\r\n", "unreadable greeting"),
        (b"{\"QMP\": {\"version\": 7}}\r\n", "unreadable greeting"),
    ] {
        let server = MockServer::builder().greeting(MockGreeting::Raw(greeting.into())).start();
        let error = Client::connect(server.path()).await.unwrap_err();
        assert!(matches!(&error, Error::Protocol(why) if why.contains(expected)), "{error}");
    }

    let nothing =
        MockServer::builder().greeting(MockGreeting::Raw("{\"QMP\": {\"vers".into())).start();
    let accepted = async {
        let conn = nothing.accepted().await;
        conn.disconnect();
    };
    let (result, ()) = tokio::join!(Client::connect(nothing.path()), accepted);
    assert!(
        matches!(result, Err(Error::Disconnected(DisconnectReason::Truncated { .. }))),
        "{result:?}"
    );
}

/// Answers `query-status` after `delay` and everything else at once.
fn late_query_status_server(delay: Duration) -> MockServer {
    MockServer::builder()
        .handler(move |conn, request| match request.command.name.as_str() {
            "query-status" => conn.reply_after(delay, &request.command, json!("late")),
            _ => conn.reply(&request.command, json!("prompt")),
        })
        .start()
}

#[tokio::test]
async fn a_silent_server_times_the_command_out_and_the_connection_stays_in_sync() {
    let server = late_query_status_server(Duration::from_millis(300));
    let client = Client::connect(server.path()).await.unwrap();
    let request = Request::new("query-status").timeout(Duration::from_millis(50));
    let error = client.call(request).await.unwrap_err();
    assert!(
        matches!(&error, Error::Timeout { command, .. } if command == "query-status"),
        "{error}"
    );
    assert!(error.outcome_unknown());
    assert_eq!(client.execute("stop", ()).await.unwrap(), "prompt");
    eventually("the late reply", || client.stats().late_replies == 1).await;
    assert_eq!(client.stats().unmatched_replies, 0);
    assert_eq!(client.execute("cont", ()).await.unwrap(), "prompt");
}

#[tokio::test]
async fn a_default_timeout_applies_to_every_command() {
    let server = MockServer::builder().handler(|_, _| {}).start();
    let client = Client::builder()
        .default_command_timeout(Some(Duration::from_millis(50)))
        .connect(server.path())
        .await
        .unwrap();
    assert!(matches!(client.execute("stop", ()).await, Err(Error::Timeout { .. })));
}

#[tokio::test]
async fn a_dropped_call_is_abandoned_and_the_connection_stays_in_sync() {
    let server = late_query_status_server(Duration::from_millis(200));
    let client = Client::connect(server.path()).await.unwrap();
    tokio::select! {
        _ = client.execute("query-status", ()) => panic!("should still be waiting"),
        () = tokio::time::sleep(Duration::from_millis(20)) => {}
    }
    assert_eq!(client.execute("stop", ()).await.unwrap(), "prompt");
    eventually("the abandoned command's reply", || client.stats().late_replies == 1).await;
}

#[tokio::test]
async fn a_disconnect_mid_reply_fails_the_call_and_every_later_one() {
    const PARTIAL: &str = "{\"return\": {\"status\": \"runn";
    let server = MockServer::builder()
        .handler(|conn, _| {
            conn.send_raw(PARTIAL);
            conn.disconnect();
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let error = client.execute("query-status", ()).await.unwrap_err();
    assert!(
        matches!(error, Error::Disconnected(DisconnectReason::Truncated { len }) if len == PARTIAL.len()),
        "{error}"
    );
    assert!(client.is_closed());
    let error = client.execute("query-status", ()).await.unwrap_err();
    assert!(matches!(error, Error::Disconnected(DisconnectReason::Truncated { .. })), "{error}");
}

#[tokio::test]
async fn commands_in_flight_fail_at_once_when_the_server_goes() {
    let server = MockServer::builder().handler(|_, _| {}).start();
    let client = Client::connect(server.path()).await.unwrap();
    let conn = server.accepted().await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.execute("query-status", ()).await })
        })
        .collect();
    eventually("10 commands on the wire", || {
        server.received_names().iter().filter(|n| *n == "query-status").count() == 10
    })
    .await;
    conn.disconnect();
    for call in calls {
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::Disconnected(DisconnectReason::Eof)), "{error}");
    }
    client.closed().await;
}

#[tokio::test]
async fn unsupported_commands_fail_before_anything_is_sent() {
    let server = MockServer::builder()
        .commands(["qmp_capabilities", "query-commands", "query-status"])
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    assert!(client.supports("query-status"));
    assert!(!client.supports("device_add"));
    let error = client.execute("device_add", json!({"driver": "e1000"})).await.unwrap_err();
    assert!(
        matches!(&error, Error::CommandNotSupported { command } if command == "device_add"),
        "{error}"
    );
    assert_eq!(server.received_names(), ["qmp_capabilities", "query-commands"]);
}

#[tokio::test]
async fn an_oversized_reply_fails_only_its_own_command() {
    let server = MockServer::builder()
        .handler(|conn, request| match request.command.name.as_str() {
            "query-pci" => conn.reply(&request.command, json!("x".repeat(4096))),
            _ => conn.reply(&request.command, json!("small")),
        })
        .start();
    let client = Client::builder().max_frame_len(1024).connect(server.path()).await.unwrap();
    let error = client.execute("query-pci", ()).await.unwrap_err();
    assert!(
        matches!(&error, Error::BadReply { command, reason } if command == "query-pci" && reason.contains("1024")),
        "{error}"
    );
    assert_eq!(client.execute("query-status", ()).await.unwrap(), "small");
}

#[tokio::test]
async fn bad_arguments_and_types_are_caller_errors() {
    #[derive(Debug, serde::Deserialize)]
    struct Wrong {
        #[allow(dead_code)]
        running: bool,
    }
    let server = MockServer::builder()
        .handler(|conn, request| conn.reply(&request.command, json!({"status": "running"})))
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let error = client.execute("query-status", json!([1, 2])).await.unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "{error}");
    let error = client.execute_as::<Wrong>("query-status", ()).await.unwrap_err();
    assert!(
        matches!(&error, Error::Decode { command, .. } if command == "query-status"),
        "{error}"
    );
}

#[tokio::test]
async fn error_replies_are_typed() {
    let server = MockServer::builder()
        .handler(|conn, request| {
            conn.error(&request.command, ErrorClass::DeviceNotFound, "Device 'nope' not found");
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let error = client.execute("device_del", json!({"id": "nope"})).await.unwrap_err();
    assert_eq!(error.qmp_error(), Some((&ErrorClass::DeviceNotFound, "Device 'nope' not found")));
    assert_eq!(
        error.to_string(),
        "QMP command 'device_del' failed: DeviceNotFound: Device 'nope' not found"
    );
}

#[tokio::test]
async fn exec_oob_is_sent_only_when_negotiated() {
    let server = MockServer::builder().start();
    let client = Client::connect(server.path()).await.unwrap();
    assert!(client.oob_enabled());
    client.execute_oob("migrate-pause", ()).await.unwrap();
    let sent = server.received();
    assert_eq!(sent[0].arguments, json!({"enable": ["oob"]}).as_object().cloned());
    assert!(sent.last().unwrap().oob);

    let client = Client::builder().enable_oob(false).connect(server.path()).await.unwrap();
    assert!(!client.oob_enabled());
    assert!(matches!(client.execute_oob("migrate-pause", ()).await, Err(Error::InvalidRequest(_))));
}

#[tokio::test]
async fn descriptors_travel_with_their_command() {
    let server = MockServer::builder()
        .handler(|conn, request| match request.command.name.as_str() {
            "getfd" => {
                assert_eq!(request.fds.len(), 1, "getfd without its descriptor");
                let mut pipe = std::fs::File::from(request.fds.into_iter().next().unwrap());
                std::io::Write::write_all(&mut pipe, b"through the passed fd").unwrap();
                conn.reply(&request.command, json!({}));
            }
            "add-fd" => {
                assert_eq!(request.fds.len(), 1);
                conn.reply(&request.command, json!({"fdset-id": 3, "fd": 11}));
            }
            _ => {
                assert!(request.fds.is_empty(), "{} carried a descriptor", request.command.name);
                conn.reply(&request.command, json!({}));
            }
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
    client.get_fd("fd0", &pipe_write).await.unwrap();
    drop(pipe_write);
    let mut text = String::new();
    std::fs::File::from(pipe_read).read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the passed fd");

    let (_r, w) = nix::unistd::pipe().unwrap();
    let info = client.add_fd(&w, None, Some("disk0")).await.unwrap();
    assert_eq!((info.fdset_id, info.fd), (3, 11));
    client.close_fd("fd0").await.unwrap();
    let add = server.received().into_iter().find(|c| c.name == "add-fd").unwrap();
    assert_eq!(add.arguments, json!({"opaque": "disk0"}).as_object().cloned());
}

#[tokio::test]
async fn descriptors_need_a_unix_socket_connection() {
    let server = MockServer::builder().start();
    let stream = tokio::net::UnixStream::connect(server.path()).await.unwrap();
    let client = Client::builder().connect_stream(stream).await.unwrap();
    let (_r, w) = nix::unistd::pipe().unwrap();
    assert!(matches!(client.get_fd("fd0", &w).await, Err(Error::FdPassingUnsupported)));
    assert!(!server.received_names().contains(&"getfd".to_owned()), "nothing was sent");
    client.execute("stop", ()).await.unwrap();
}

#[tokio::test]
async fn qmp_runs_over_an_in_memory_stream() {
    let (client_end, mut server_end) = tokio::io::duplex(4096);
    let server = async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        server_end.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 9}, \"package\": \"\"}, \"capabilities\": []}}\r\n").await.unwrap();
        let mut lines = BufReader::new(server_end).lines();
        let mut replies = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let command: Value = serde_json::from_str(&line).unwrap();
            let value = match command["execute"].as_str().unwrap() {
                "query-commands" => json!([{"name": "query-status"}]),
                "query-status" => json!({"status": "in-memory"}),
                _ => json!({}),
            };
            replies.push(command["execute"].clone());
            let reply = json!({"return": value, "id": command["id"]});
            lines.get_mut().get_mut().write_all(format!("{reply}\r\n").as_bytes()).await.unwrap();
        }
        replies
    };
    let client_side = async move {
        let client = Client::builder().connect_stream(client_end).await.unwrap();
        let status = client.execute("query-status", ()).await.unwrap();
        client.close().await;
        status
    };
    let (replies, status) = tokio::join!(server, client_side);
    assert_eq!(status["status"], "in-memory");
    assert_eq!(replies, ["qmp_capabilities", "query-commands", "query-status"]);
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    let server = MockServer::builder().start();
    let client = Client::connect(server.path()).await.unwrap();
    let conn = server.accepted().await;
    let clone = client.clone();
    drop(client);
    clone.execute("stop", ()).await.unwrap();
    assert!(conn.is_open(), "a clone keeps the connection");
    drop(clone);
    eventually("the server to see the socket close", || !conn.is_open()).await;
}

#[tokio::test]
async fn close_fails_pending_commands_and_ends_subscriptions() {
    let server = MockServer::builder().handler(|_, _| {}).start();
    let client = Client::connect(server.path()).await.unwrap();
    let mut events = client.subscribe(EventFilter::all());
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.execute("query-status", ()).await }
    });
    eventually("the command on the wire", || server.received_names().len() == 3).await;
    client.close().await;
    assert!(matches!(pending.await.unwrap(), Err(Error::Disconnected(DisconnectReason::Closed))));
    assert!(events.recv().await.is_none());
    assert!(matches!(
        client.execute("stop", ()).await,
        Err(Error::Disconnected(DisconnectReason::Closed))
    )); // Subscribing after the end does not wait forever.
    let mut late = client.subscribe(EventFilter::all());
    let end = tokio::time::timeout(PATIENCE, late.recv()).await;
    assert!(end.expect("a late subscription ends at once").is_none());
    let error = client.wait_for_event(EventFilter::all(), PATIENCE).await.unwrap_err();
    assert!(matches!(error, Error::Disconnected(DisconnectReason::Closed)), "{error}");
}

#[tokio::test]
async fn waiting_for_an_event_caused_by_a_command_cannot_miss_it() {
    // The event is written before the reply: a waiter that subscribed after the reply
    // would miss it.
    let server = MockServer::builder()
        .handler(|conn, request| {
            conn.event(
                "DEVICE_DELETED",
                Some(json!({"path": "/machine/peripheral/nic0/virtio-backend"})),
            );
            conn.event(
                "DEVICE_DELETED",
                Some(json!({"device": "nic0", "path": "/machine/peripheral/nic0"})),
            );
            conn.reply(&request.command, json!({}));
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    let mut deleted = client.subscribe(
        EventFilter::names(["DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR"])
            .matching(|e| e.data.as_ref().is_some_and(|d| d["device"] == "nic0")),
    );
    client.execute("device_del", json!({"id": "nic0"})).await.unwrap();
    let event = deleted.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.data.unwrap()["path"], "/machine/peripheral/nic0");

    let error = client
        .wait_for_event(EventFilter::names(["NEVER"]), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::EventTimeout(_)), "{error}");
}

#[tokio::test]
async fn the_reconnecting_client_reconnects_and_reports_the_gap() {
    let server = MockServer::builder().start();
    let vm = ReconnectingClient::new(server.path(), Client::builder());
    assert_eq!(vm.connections(), 0, "lazy: nothing connected yet");
    let mut events = vm.subscribe(EventFilter::all());

    vm.execute("stop", ()).await.unwrap();
    let first = server.accepted().await;
    first.event("STOP", None);
    first.disconnect();
    assert!(matches!(events.recv().await, Some(EventItem::Event(e)) if e.event == "STOP"));
    assert!(matches!(events.recv().await, Some(EventItem::Gap(DisconnectReason::Eof))));

    vm.execute("cont", ()).await.unwrap();
    assert_eq!(vm.connections(), 2);
    let second = server.accepted().await;
    second.event("RESUME", None);
    assert!(matches!(events.recv().await, Some(EventItem::Event(e)) if e.event == "RESUME"));
    let negotiations = server.received_names().iter().filter(|n| *n == "qmp_capabilities").count();
    assert_eq!(negotiations, 2, "a new greeting and negotiation on the new connection");
    assert_eq!(vm.client().await.unwrap().greeting().version.qemu.major, 7);
}

#[test]
fn the_blocking_client_end_to_end_against_the_mock() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(async {
        MockServer::builder()
            .handler(|conn, request| match request.command.name.as_str() {
                "cont" => {
                    conn.event("RESUME", None);
                    conn.reply(&request.command, json!({}));
                }
                "getfd" => {
                    let mut pipe = std::fs::File::from(request.fds.into_iter().next().unwrap());
                    std::io::Write::write_all(&mut pipe, b"blocking").unwrap();
                    conn.reply(&request.command, json!({}));
                }
                "query-pci" => conn.disconnect(),
                _ => conn.reply(&request.command, json!({"status": "running"})),
            })
            .start()
    });
    let mut qmp = qmp_client::blocking::Client::connect(server.path()).unwrap();
    assert_eq!(qmp.greeting().version.qemu.to_string(), "7.2.22");
    assert!(qmp.oob_enabled());
    assert_eq!(qmp.execute("query-status", ()).unwrap()["status"], "running");
    qmp.execute("cont", ()).unwrap();
    let event =
        qmp.wait_for_event(&EventFilter::names(["RESUME"]), Duration::from_secs(5)).unwrap();
    assert_eq!(event.event, "RESUME");
    assert!(matches!(qmp.next_event(Duration::from_millis(20)), Err(Error::EventTimeout(_))));

    let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
    qmp.get_fd("fd0", &pipe_write).unwrap();
    drop(pipe_write);
    let mut text = String::new();
    std::fs::File::from(pipe_read).read_to_string(&mut text).unwrap();
    assert_eq!(text, "blocking");

    let error = qmp.execute("query-pci", ()).unwrap_err();
    assert!(matches!(error, Error::Disconnected(DisconnectReason::Eof)), "{error}");
    assert!(matches!(qmp.execute("stop", ()), Err(Error::Disconnected(_))));
    drop(server);
}

#[test]
fn the_blocking_client_times_out_a_silent_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let silent =
        runtime.block_on(async { MockServer::builder().greeting(MockGreeting::Silent).start() });
    let error = Client::builder()
        .handshake_timeout(Duration::from_millis(100))
        .connect_blocking(silent.path())
        .unwrap_err();
    assert!(matches!(error, Error::GreetingTimeout(_)), "{error}");

    let mute = runtime.block_on(async { MockServer::builder().handler(|_, _| {}).start() });
    let mut qmp = qmp_client::blocking::Client::connect(mute.path()).unwrap();
    let error = qmp.call(Request::new("stop").timeout(Duration::from_millis(50))).unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
}

/// A mock server on a runtime (and thread) of its own: its handler may block without
/// stalling the client, and the client's runtime does only the client's work.
struct DetachedServer {
    server: MockServer,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DetachedServer {
    fn start(builder: qmp_client::mock::MockServerBuilder) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = {
            let _enter = runtime.enter();
            builder.start()
        };
        Self { server, runtime: Some(runtime) }
    }
}

impl Drop for DetachedServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Holds a handler (and so the server's reading) until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The `tag` argument of a command, if it has one.
fn tag(command: &qmp_client::qmp_codec::Command) -> Option<String> {
    command.arguments.as_ref()?.get("tag")?.as_str().map(str::to_owned)
}

/// A server whose `stop` holds its connection (it reads nothing more) until `gate` opens;
/// every other command is answered with its `tag`.
fn server_held_by_stop(gate: &Arc<Gate>) -> DetachedServer {
    let gate = Arc::clone(gate);
    DetachedServer::start(MockServer::builder().handler(move |conn, request| {
        if request.command.name == "stop" {
            gate.wait();
        }
        conn.reply(&request.command, json!(tag(&request.command)));
    }))
}

/// A command big enough that a few fill the socket's buffer.
fn big(tag: &str) -> Value {
    json!({"tag": tag, "blob": "x".repeat(256 * 1024)})
}

/// Fills the socket of a server held by `stop`, so that commands queue in the client; the
/// `stop` and the big commands are answered once the gate opens.
async fn fill_the_socket(
    client: &Client,
    server: &MockServer,
    queued: usize,
) -> Vec<tokio::task::JoinHandle<Result<Value, Error>>> {
    let mut calls = vec![tokio::spawn({
        let client = client.clone();
        async move { client.execute("stop", ()).await }
    })];
    eventually("the server to hold", || server.received_names().contains(&"stop".to_owned())).await;
    for n in 0..queued + 8 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client.execute("query-status", big(&format!("filler-{n}"))).await
        }));
    }
    eventually("commands to wait in the client's queue", || client.queued() >= queued).await;
    calls
}

#[tokio::test]
async fn commands_given_up_before_they_were_written_are_never_sent() {
    let gate = Arc::new(Gate::default());
    let detached = server_held_by_stop(&gate);
    let server = &detached.server;
    let client = Client::connect(server.path()).await.unwrap();
    let held = fill_the_socket(&client, server, 2).await;

    // One times out in the queue, one is dropped by its caller; neither was written.
    let request = Request::new("query-status")
        .arguments(json!({"tag": "timed out"}))
        .unwrap()
        .timeout(Duration::from_millis(100));
    let error = client.call(request).await.unwrap_err();
    assert!(
        matches!(&error, Error::NotSent { command, .. } if command == "query-status"),
        "{error}"
    );
    assert!(!error.outcome_unknown());
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        client.execute("query-status", json!({"tag": "dropped"})),
    );
    assert!(dropped.await.is_err(), "still waiting when dropped");
    assert_eq!(client.stats().withdrawn, 2);

    gate.open();
    for call in held {
        call.await.unwrap().unwrap();
    }
    assert_eq!(client.execute("query-status", json!({"tag": "after"})).await.unwrap(), "after");
    let tags: Vec<String> = server.received().iter().filter_map(tag).collect();
    assert!(tags.contains(&"after".to_owned()) && tags.contains(&"filler-0".to_owned()));
    assert!(
        !tags.iter().any(|t| t == "timed out" || t == "dropped"),
        "a withdrawn command reached the server: {tags:?}"
    );
    assert_eq!(client.stats().unmatched_replies, 0);
}

#[tokio::test]
async fn a_full_queue_makes_callers_wait_for_room_up_to_their_timeout() {
    const LIMIT: usize = 3;
    let gate = Arc::new(Gate::default());
    let detached = server_held_by_stop(&gate);
    let server = &detached.server;
    let client = Client::builder().max_queued_commands(LIMIT).connect(server.path()).await.unwrap();
    let held = fill_the_socket(&client, server, LIMIT).await;
    // The fillers beyond the limit wait for room: queued, never more than the limit.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.queued(), LIMIT);

    // A caller with a timeout gives up waiting for room: nothing was sent.
    let request = Request::new("query-status")
        .arguments(json!({"tag": "no room"}))
        .unwrap()
        .timeout(Duration::from_millis(100));
    let error = client.call(request).await.unwrap_err();
    assert!(matches!(error, Error::NotSent { .. }), "{error}");
    assert_eq!(client.queued(), LIMIT);

    // Without a timeout a caller waits, and gets its reply once the server reads again.
    let patient = tokio::spawn({
        let client = client.clone();
        async move { client.execute("query-status", json!({"tag": "patient"})).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!patient.is_finished());
    gate.open();
    assert_eq!(patient.await.unwrap().unwrap(), "patient");
    for call in held {
        call.await.unwrap().unwrap();
    }
    let tags: Vec<String> = server.received().iter().filter_map(tag).collect();
    assert!(!tags.contains(&"no room".to_owned()), "{tags:?}");
}

/// Many tasks pass descriptors while others send commands bigger than the socket buffer:
/// every descriptor arrives with its own `getfd` (the server writes the `getfd`'s name
/// into the descriptor it got, so a mix-up would show in the wrong pipe), and every big
/// command arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_and_big_commands_from_many_tasks_never_interleave() {
    let detached = DetachedServer::start(MockServer::builder().handler(|conn, request| {
        let command = &request.command;
        let arguments = command.arguments.clone().unwrap_or_default();
        if command.name == "getfd" {
            assert_eq!(request.fds.len(), 1, "getfd {arguments:?} without exactly one fd");
            let name = arguments["fdname"].as_str().unwrap();
            let mut pipe = std::fs::File::from(request.fds.into_iter().next().unwrap());
            std::io::Write::write_all(&mut pipe, format!("{name};").as_bytes()).unwrap();
            conn.reply(command, json!({}));
        } else {
            assert!(request.fds.is_empty(), "{} carried a descriptor", command.name);
            let blob = arguments.get("blob").and_then(Value::as_str).unwrap_or_default();
            assert!(blob.bytes().all(|b| b == b'x'), "a big command arrived mangled");
            conn.reply(command, json!(blob.len()));
        }
    }));
    let client = Client::connect(detached.server.path()).await.unwrap();
    let mut pipes = Vec::new();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        pipes.push((task, read_end));
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                client.get_fd(&format!("t{task}-{n}"), &write_end).await.unwrap();
            }
        }));
    }
    for task in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                let len = 100_000 + task * 50_000 + n;
                let reply = client.execute("query-status", json!({"blob": "x".repeat(len)}));
                assert_eq!(reply.await.unwrap(), json!(len));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for (task, read_end) in pipes {
        let mut text = String::new();
        std::fs::File::from(read_end).read_to_string(&mut text).unwrap();
        let expected = (0..10).fold(String::new(), |mut all, n| {
            let _ = write!(all, "t{task}-{n};");
            all
        });
        assert_eq!(text, expected, "pipe of task {task}");
    }
}

#[tokio::test]
async fn refresh_commands_asks_the_server_again_and_replaces_the_cache() {
    let server = MockServer::builder().commands(["qmp_capabilities", "query-commands"]).start();
    let client = Client::connect(server.path()).await.unwrap();
    assert!(!client.supports("query-status"));
    server.set_commands(["qmp_capabilities", "query-commands", "query-status"]);
    assert!(!client.supports("query-status"), "the cache is only what was fetched");
    client.refresh_commands().await.unwrap();
    assert!(client.supports("query-status"));
    assert_eq!(client.commands(), ["qmp_capabilities", "query-commands", "query-status"]);
    assert_eq!(
        server.received_names(),
        ["qmp_capabilities", "query-commands", "query-commands"],
        "one query-commands more, sent by the session"
    );
    client.execute("query-status", ()).await.unwrap();
}

/// The server reads each command at once and answers 2 ms later. A socket registered for
/// writability too would wake the client's runtime in between, when the server's read
/// makes room in it; registered for reading only, the runtime parks once per round trip.
#[test]
fn the_server_draining_a_command_does_not_wake_the_client() {
    const ROUNDS: usize = 50;
    let detached = DetachedServer::start(MockServer::builder().handler(|conn, request| {
        conn.reply_after(Duration::from_millis(2), &request.command, json!({}));
    }));
    let parks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park({
            let parks = Arc::clone(&parks);
            move || {
                parks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::connect(detached.server.path()).await.unwrap();
        client.execute("stop", ()).await.unwrap();
        let before = parks.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..ROUNDS {
            client.execute("stop", ()).await.unwrap();
        }
        let parked = parks.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(
            parked <= ROUNDS + ROUNDS / 10,
            "{parked} parks for {ROUNDS} round trips: woken while waiting for replies"
        );
    });
}
