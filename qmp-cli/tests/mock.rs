//! The `qmp` binary against `qmp_client::mock::MockServer`, for what a real QEMU cannot
//! be made to do: garbage, hang-ups mid-reply, silence, floods.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    COMMAND_FAILED, CONNECTION, OK, USAGE, assert_status, one_error_line, qmp, qmp_at, run,
    run_async, run_with_input_async, stderr, stdout,
};
use qmp_client::mock::{MockGreeting, MockServer};
use serde_json::{Value, json};

/// Waits until the CLI has finished negotiating on `server` (it asked for the commands).
async fn negotiated(server: &MockServer) {
    let start = Instant::now();
    while !server.received_names().iter().any(|n| n == "query-commands") {
        assert!(start.elapsed() < Duration::from_secs(20), "the CLI never negotiated");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_server_closing_mid_reply_exits_3() {
    let server = MockServer::builder()
        .handler(|conn, _request| {
            conn.send_raw(&b"{\"return\": {\"status\": \"runn"[..]);
            conn.disconnect();
        })
        .start();
    let output = run_async(qmp_at(server.path(), ["exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("connection lost") && line.contains("middle"), "{line}");
    assert!(stdout(&output).is_empty());
}

#[tokio::test]
async fn a_garbage_greeting_exits_3() {
    let server = MockServer::builder()
        .greeting(MockGreeting::Raw(Bytes::from_static(b"SSH-2.0-OpenSSH_9.2\r\n")))
        .start();
    let output = run_async(qmp_at(server.path(), ["exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("not a usable QMP monitor"), "{line}");

    // A JSON object that is not a greeting, and an endless line of garbage, end the same way.
    let server = MockServer::builder()
        .greeting(MockGreeting::Raw(Bytes::from_static(b"{\"return\": {}}\r\n")))
        .start();
    let output = run_async(qmp_at(server.path(), ["exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    one_error_line(&output, "qmp: ");
}

#[tokio::test]
async fn a_silent_socket_times_out_the_handshake() {
    let server = MockServer::builder().greeting(MockGreeting::Silent).start();
    let start = Instant::now();
    let output =
        run_async(qmp_at(server.path(), ["--timeout", "0.5", "exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: timed out");
    assert!(line.contains("500ms"), "{line}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[tokio::test]
async fn a_command_without_reply_times_out_with_exit_3() {
    let server = MockServer::builder().handler(|_conn, _request| {}).start();
    let start = Instant::now();
    let output =
        run_async(qmp_at(server.path(), ["--timeout", "0.5", "exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: timed out: ");
    assert!(line.contains("query-status") && line.contains("outcome is unknown"), "{line}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[tokio::test]
async fn a_flood_of_events_prints_exactly_count_lines() {
    let server = MockServer::builder().start();
    let mut command = qmp_at(server.path(), ["events", "--count", "5"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = tokio::task::spawn_blocking(move || run(command));
    let conn = server.accepted().await;
    negotiated(&server).await;
    let start = Instant::now();
    // Flood until the CLI has had enough (it subscribes right after negotiating).
    while !child.is_finished() && conn.is_open() {
        assert!(start.elapsed() < Duration::from_secs(30), "qmp events did not end");
        for n in 0..200 {
            conn.event("FLOOD", Some(json!({"n": n})));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let output = child.await.unwrap();
    assert_status(&output, OK);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["event"], "FLOOD");
        assert!(event["data"]["n"].is_u64(), "{event}");
        assert!(event["timestamp"]["seconds"].as_i64().unwrap() > 0, "{event}");
    }
}

#[tokio::test]
async fn events_with_a_timeout_end_with_0_or_3() {
    let server = MockServer::builder().start();
    // No --count: listening for --timeout is the whole job.
    let output = run_async(qmp_at(server.path(), ["--timeout", "0.5", "events"])).await;
    assert_status(&output, OK);
    assert!(stdout(&output).is_empty() && stderr(&output).is_empty());

    // --count not reached in time.
    let output =
        run_async(qmp_at(server.path(), ["--timeout", "0.5", "events", "--count", "2"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: timed out");
    assert!(line.contains("0 of 2 events"), "{line}");
}

#[tokio::test]
async fn events_with_an_absurd_timeout_listen_instead_of_panicking() {
    let server = MockServer::builder().start();
    // 1e19 s does not fit the clock: it saturates to a year (once: a panic, status 101).
    let mut command = qmp_at(server.path(), ["--timeout", "1e19", "events", "--count", "1"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = tokio::task::spawn_blocking(move || run(command));
    let conn = tokio::select! {
        conn = server.accepted() => conn,
        output = &mut child => panic!("qmp ended before it connected: {:?}", output.unwrap()),
    };
    negotiated(&server).await;
    let start = Instant::now();
    while !child.is_finished() && conn.is_open() {
        assert!(start.elapsed() < Duration::from_secs(30), "qmp events did not end");
        conn.event("RESUME", None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.await.unwrap();
    assert_status(&output, OK);
    assert!(stdout(&output).contains("RESUME"), "{}", stdout(&output));
}

#[tokio::test]
async fn events_end_with_3_when_the_server_hangs_up() {
    let server = MockServer::builder().start();
    let child = tokio::task::spawn_blocking({
        let command = qmp_at(server.path(), ["events"]);
        move || run(command)
    });
    let conn = server.accepted().await;
    negotiated(&server).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.event("SHUTDOWN", Some(json!({"guest": false, "reason": "host-qmp-quit"})));
    conn.disconnect();
    let output = child.await.unwrap();
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("closed the connection"), "{line}");
    let text = stdout(&output);
    assert!(text.lines().all(|l| l.contains("SHUTDOWN")), "{text}");
}

#[tokio::test]
async fn events_end_with_0_on_ctrl_c() {
    let server = MockServer::builder().start();
    let mut command = qmp_at(server.path(), ["events"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let conn = server.accepted().await;
    negotiated(&server).await;
    conn.event("RESUME", None);
    // Give the CLI time to subscribe and install its Ctrl-C handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert_status(&output, OK);
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

#[tokio::test]
async fn events_end_quietly_when_stdout_is_closed() {
    let server = MockServer::builder().start();
    let mut command = qmp_at(server.path(), ["events"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Like `qmp events | head -n 0`: the reader is gone before the first event.
    drop(child.stdout.take());
    let conn = server.accepted().await;
    negotiated(&server).await;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "qmp events did not end");
        conn.event("RESUME", None);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert_status(&output, OK);
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

#[tokio::test]
async fn no_such_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_async(qmp_at(&dir.path().join("nope.sock"), ["exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: cannot connect to ");
    assert!(line.contains("nope.sock") && line.contains("no such socket"), "{line}");

    // A regular file is not a monitor either.
    let file = dir.path().join("regular");
    std::fs::write(&file, b"{\"QMP\": {}}\n").unwrap();
    let output = run_async(qmp_at(&file, ["exec", "query-status"])).await;
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: cannot connect to ");
    assert!(line.contains("not a socket"), "{line}");
}

#[tokio::test]
async fn server_errors_and_unsupported_commands_exit_1() {
    let server = MockServer::builder()
        .handler(|conn, request| {
            conn.error(&request.command, "DeviceNotFound", "Device 'x' not found");
        })
        .start();
    let output = run_async(qmp_at(server.path(), ["exec", "device_del", r#"{"id": "x"}"#])).await;
    assert_status(&output, COMMAND_FAILED);
    assert_eq!(one_error_line(&output, "error: "), "error: DeviceNotFound: Device 'x' not found");

    // Not in query-commands: refused before anything is sent.
    let output = run_async(qmp_at(server.path(), ["exec", "query-cpus-fast"])).await;
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: command 'query-cpus-fast' is not supported");
    assert!(line.contains("CommandNotFound"), "{line}");
    assert!(!server.received_names().iter().any(|n| n == "query-cpus-fast"));
}

#[tokio::test]
async fn exec_honours_qmp_socket_from_the_environment() {
    let server = MockServer::builder()
        .handler(|conn, request| conn.reply(&request.command, json!({"status": "running"})))
        .start();
    let mut command = qmp(["exec", "query-status"]);
    command.env("QMP_SOCKET", server.path());
    let output = run_async(command).await;
    assert_status(&output, OK);
    assert_eq!(stdout(&output), "{\"status\":\"running\"}\n");
}

#[tokio::test]
async fn the_shell_ends_with_3_when_the_connection_is_lost() {
    let server = MockServer::builder()
        .handler(|conn, request| {
            if request.command.name == "stop" {
                conn.disconnect();
            } else {
                conn.reply(&request.command, json!({"status": "running"}));
            }
        })
        .start();
    let output = run_with_input_async(
        qmp_at(server.path(), ["shell"]),
        "query-status\nstop\nquery-status\n",
    )
    .await;
    assert_status(&output, CONNECTION);
    assert_eq!(stdout(&output).lines().count(), 1, "{}", stdout(&output));
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("connection lost"), "{line}");
}

#[tokio::test]
async fn the_shell_shows_events_that_came_before_the_last_reply() {
    let server = MockServer::builder()
        .handler(|conn, request| {
            conn.event("STOP", None);
            conn.reply(&request.command, json!({}));
        })
        .start();
    // Repeated: before, the end of input raced the queued event and could win.
    for _ in 0..5 {
        let output = run_with_input_async(qmp_at(server.path(), ["shell"]), "stop\n").await;
        assert_status(&output, OK);
        assert_eq!(stderr(&output), "[event] STOP\n");
    }
}

#[test]
fn usage_errors_exit_2_and_help_documents_the_statuses() {
    let output = run(qmp(["exec", "query-status"]));
    assert_status(&output, USAGE);
    one_error_line(&output, "qmp: no QMP socket given");

    for args in [&[][..], &["frobnicate"], &["exec"], &["--timeout", "soon", "exec", "x"]] {
        let output = run(qmp(args));
        assert_status(&output, USAGE);
    }

    let output = run(qmp(["--help"]));
    assert_status(&output, OK);
    let help = stdout(&output);
    for needle in ["exec", "hmp", "events", "shell", "Exit status", "--socket", "--timeout"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    for sub in ["exec", "hmp", "events", "shell"] {
        let output = run(qmp([sub, "--help"]));
        assert_status(&output, OK);
    }
}

/// Whether `bytes` hold anything a terminal acts on instead of showing, other than line
/// ends and tabs: C0 controls, DEL, C1 controls (CSI U+009B among them) and the
/// bidirectional controls.
fn has_terminal_control(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).chars().any(|c| {
        (c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
            || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Text of several lines with everything a terminal could act on: ESC sequences, a C1 CSI,
/// DEL, a lone carriage return that would overwrite its line, bidi overrides.
const HOSTILE_TEXT: &str =
    "line 1\u{1b}]0;owned\u{7}\r\nfake\rline\u{9b}2J\u{7f}\tcol\u{202e}txt\u{2066}\r\n";

/// A server that puts escape sequences in every string the CLI shows: device ids and
/// descriptions in `query-pci`, an error's class and description, an event's name and data,
/// HMP's text, a command's return value.
fn hostile_server() -> MockServer {
    MockServer::builder()
        .handler(|conn, request| match request.command.name.as_str() {
            "query-pci" => conn.reply(
                &request.command,
                json!([{"bus": 0, "devices": [
                    {"bus": 0, "slot": 0, "function": 0, "qdev_id": "",
                     "class_info": {"class": 1536, "desc": "Host bridge"},
                     "id": {"vendor": 32902, "device": 4663}, "regions": []},
                    {"bus": 0, "slot": 3, "function": 0, "qdev_id": "nic\u{1b}]0;owned\u{7}",
                     "class_info": {"class": 512, "desc": "Ether\u{9b}2Jnet\nslot 4 free"},
                     "id": {"vendor": 6900, "device": 4096}, "regions": []}]}]),
            ),
            // The machine type; no peripherals, so the tree shows query-pci's description.
            "qom-get" => conn.reply(&request.command, json!("pc-i440fx-7.2-machine")),
            "qom-list" => conn.reply(&request.command, json!([])),
            "device_del" => conn.error(&request.command, "Evil\u{1b}[31m", "gone\u{9b}2J"),
            "stop" => {
                conn.event("STOP\u{1b}[2J", Some(json!({"why": "\u{9b}31m\u{202e}"})));
                conn.reply(&request.command, json!({}));
            }
            "human-monitor-command" => conn.reply(&request.command, json!(HOSTILE_TEXT)),
            "query-version" => conn.reply(
                &request.command,
                json!({"package": HOSTILE_TEXT, HOSTILE_TEXT: [HOSTILE_TEXT]}),
            ),
            _ => conn.reply(&request.command, json!({})),
        })
        .commands(qmp_client::mock::DEFAULT_COMMANDS.iter().copied().chain(["qom-list", "qom-get"]))
        .start()
}

#[tokio::test]
async fn server_strings_are_escaped_on_the_terminal_and_exact_in_json() {
    let server = hostile_server();

    // The table: escaped, and the fake row stays inside its own line.
    let output = run_async(qmp_at(server.path(), ["pci"])).await;
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stdout), "{:?}", stdout(&output));
    let table = stdout(&output);
    let row = table.lines().find(|l| l.starts_with("  03.0")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("nic\\u{1b}]0;owned\\u{7}"), "{row}");
    assert!(row.contains("Ether\\u{9b}2Jnet\\nslot 4 free"), "{row}");
    assert!(!table.lines().any(|l| l.starts_with("slot 4")), "{table}");

    // --json: valid JSON carrying the strings exactly, control characters JSON-escaped
    // (C1 ones too: the JSON encoder alone would leave U+009B raw).
    let output = run_async(qmp_at(server.path(), ["pci", "--json"])).await;
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stdout), "{:?}", stdout(&output));
    let tree: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let function = &tree["buses"][0]["functions"][1];
    assert_eq!(function["id"], "nic\u{1b}]0;owned\u{7}");
    assert_eq!(function["what"], "Ether\u{9b}2Jnet\nslot 4 free");

    // exec's error line: class and description escaped.
    let output = run_async(qmp_at(server.path(), ["exec", "device_del", r#"{"id": "x"}"#])).await;
    assert_status(&output, COMMAND_FAILED);
    assert!(!has_terminal_control(&output.stderr), "{:?}", stderr(&output));
    assert_eq!(one_error_line(&output, "error: "), "error: Evil\\u{1b}[31m: gone\\u{9b}2J");

    // The shell's event lines (on stderr when scripted).
    let output = run_with_input_async(qmp_at(server.path(), ["shell"]), "stop\n").await;
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stderr), "{:?}", stderr(&output));
    let events = stderr(&output);
    assert!(events.contains(r#"[event] STOP\u{1b}[2J {"why":"\u{9b}31m\u{202e}"}"#), "{events}");
}

#[tokio::test]
async fn hmp_text_keeps_its_lines_and_nothing_else_raw() {
    let server = hostile_server();
    let output = run_async(qmp_at(server.path(), ["hmp", "info", "version"])).await;
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stdout), "{:?}", stdout(&output));
    // CRLF line ends and tabs as QEMU sent them; the lone CR escaped.
    assert_eq!(
        stdout(&output),
        "line 1\\u{1b}]0;owned\\u{7}\r\nfake\\rline\\u{9b}2J\\u{7f}\tcol\\u{202e}txt\\u{2066}\r\n"
    );
    let raw_cr = output.stdout.windows(2).filter(|w| w[0] == b'\r' && w[1] != b'\n').count();
    assert_eq!(raw_cr, 0, "{:?}", stdout(&output));
}

#[tokio::test]
async fn json_results_are_exact_and_carry_no_terminal_control() {
    let server = hostile_server();
    for args in [&["exec", "query-version"][..], &["exec", "query-version", "--json"]] {
        let output = run_async(qmp_at(server.path(), args)).await;
        assert_status(&output, OK);
        assert!(!has_terminal_control(&output.stdout), "{args:?}: {:?}", stdout(&output));
        let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(value, json!({"package": HOSTILE_TEXT, HOSTILE_TEXT: [HOSTILE_TEXT]}));
    }
    // The shell prints results the same way.
    let output = run_with_input_async(qmp_at(server.path(), ["shell"]), "query-version\n").await;
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stdout), "{:?}", stdout(&output));
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value["package"], HOSTILE_TEXT);
}

#[tokio::test]
async fn the_shell_help_escapes_the_servers_command_names() {
    let server = MockServer::builder()
        .commands(["qmp_capabilities", "query-commands", "query-status", "evil\u{1b}[2J\u{9b}"])
        .start();
    let output = run_with_input_async(qmp_at(server.path(), ["shell"]), "help\n").await;
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stdout), "{:?}", stdout(&output));
    assert!(stdout(&output).contains("evil\\u{1b}[2J\\u{9b}"), "{}", stdout(&output));
}

#[tokio::test]
async fn events_from_a_hostile_server_stay_exact_json() {
    let server = hostile_server();
    let mut command = qmp_at(server.path(), ["events", "--count", "1"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = tokio::task::spawn_blocking(move || run(command));
    let conn = server.accepted().await;
    negotiated(&server).await;
    let start = Instant::now();
    while !child.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(30), "qmp events did not end");
        conn.event("STOP\u{1b}[2J\u{9b}", Some(json!({"why": HOSTILE_TEXT})));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.await.unwrap();
    assert_status(&output, OK);
    assert!(!has_terminal_control(&output.stdout), "{:?}", stdout(&output));
    let event: Value = serde_json::from_str(stdout(&output).trim_end()).unwrap();
    assert_eq!(event["event"], "STOP\u{1b}[2J\u{9b}");
    assert_eq!(event["data"]["why"], HOSTILE_TEXT);
}
