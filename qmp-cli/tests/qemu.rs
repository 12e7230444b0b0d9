//! The `qmp` binary against a real `qemu-system-x86_64`. With `QMP_REQUIRE_QEMU=1` a missing
//! QEMU fails these tests instead of skipping them.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    COMMAND_FAILED, CONNECTION, OK, USAGE, assert_status, one_error_line, qmp_at, run,
    run_with_input, stderr, stdout,
};
use qemu_launcher::{QemuBuilder, qemu_or_skip};
use serde_json::Value;

#[test]
fn exec_prints_the_return_value_as_one_line_of_json() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["exec", "query-status", "--json"]));
    assert_status(&output, OK);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["status"], "prelaunch");
    assert_eq!(status["running"], false);
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));

    // Piped stdout is compact without --json too; the timeout option goes before the name.
    let output = run(qmp_at(qemu.qmp_path(), ["--timeout", "5", "exec", "query-status"]));
    assert_status(&output, OK);
    assert_eq!(stdout(&output).lines().count(), 1);
}

#[test]
fn exec_passes_json_arguments() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["exec", "qom-list", r#"{"path": "/machine"}"#]));
    assert_status(&output, OK);
    let properties: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let names: Vec<&str> =
        properties.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"type") && names.contains(&"peripheral"), "{names:?}");

    // `-` reads the arguments from stdin.
    let output = run_with_input(
        qmp_at(qemu.qmp_path(), ["exec", "qom-get", "-"]),
        r#"{"path": "/machine", "property": "type"}"#,
    );
    assert_status(&output, OK);
    assert!(stdout(&output).starts_with('"'), "{}", stdout(&output));
}

#[test]
fn server_errors_exit_1_with_class_and_description() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["exec", "no-such-command"]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("CommandNotFound") && line.contains("no-such-command"), "{line}");
    assert!(stdout(&output).is_empty());

    // QEMU's own refusal: sent unchecked (checked, the schema refuses it first:
    // tests/schema.rs).
    let output =
        run(qmp_at(qemu.qmp_path(), ["--no-check", "exec", "query-pci", r#"{"bogus": 1}"#]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "error: ");
    assert_eq!(line, "error: GenericError: Parameter 'bogus' is unexpected");

    let output = run(qmp_at(qemu.qmp_path(), ["exec", "device_del", r#"{"id": "nope"}"#]));
    assert_status(&output, COMMAND_FAILED);
    assert_eq!(
        one_error_line(&output, "error: "),
        "error: DeviceNotFound: Device 'nope' not found"
    );
}

#[test]
fn malformed_arguments_are_usage_errors() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    for bad in [r#"{"path": "/machine""#, "[1, 2]", "42", "\"text\"", "not json"] {
        let output = run(qmp_at(qemu.qmp_path(), ["exec", "qom-list", bad]));
        assert_status(&output, USAGE);
        let line = one_error_line(&output, "qmp: ARGS_JSON");
        assert!(line.contains("JSON"), "{line}");
    }
}

#[test]
fn hmp_prints_the_text_as_is() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["hmp", "info pci"]));
    assert_status(&output, OK);
    let text = stdout(&output);
    assert!(text.contains("Bus  0, device   0, function 0:"), "{text}");
    assert!(text.contains("Host bridge"), "{text}");

    // Separate words are one command line.
    let output = run(qmp_at(qemu.qmp_path(), ["hmp", "info", "version"]));
    assert_status(&output, OK);
    assert!(stdout(&output).starts_with("7."), "{}", stdout(&output));

    // Other HMP errors are ordinary output.
    let output = run(qmp_at(qemu.qmp_path(), ["hmp", "device_del nope"]));
    assert_status(&output, OK);
    assert!(stdout(&output).contains("Device 'nope' not found"), "{}", stdout(&output));
}

#[test]
fn hmp_unknown_commands_exit_1() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["hmp", "no-such-hmp-command"]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: HMP: unknown command:");
    assert!(line.contains("no-such-hmp-command"), "{line}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn events_print_the_stop_another_connection_causes() {
    // QEMU serves one client per QMP socket: the test talks through a second monitor.
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let mut qmp_arg = std::ffi::OsString::from("unix:");
    qmp_arg.push(&control);
    qmp_arg.push(",server=on,wait=off");
    let qemu = qemu_or_skip!(QemuBuilder::new().arg("-qmp").arg(qmp_arg));

    let mut events = qmp_at(qemu.qmp_path(), ["events", "--filter", "STOP", "--count", "1"]);
    events.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = events.spawn().unwrap();

    let mut client = qmp_client::blocking::Client::connect(&control).unwrap();
    // The CLI subscribes once connected; stop and resume until it has seen a STOP.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "no STOP event printed");
        client.execute("stop", ()).unwrap();
        client.execute("cont", ()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    assert_status(&output, OK);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let event: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["event"], "STOP");
    assert!(event["timestamp"]["seconds"].as_i64().unwrap() > 0, "{event}");
    assert!(event["timestamp"]["microseconds"].is_i64(), "{event}");
}

#[test]
fn shell_runs_piped_lines_and_goes_on_after_errors() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let script = "\
# a comment, then a blank line

query-status
qom-list path=/machine
nonsense-cmd
qom-list {\"path\": \"/machine/peripheral\"}
";
    let output = run_with_input(qmp_at(qemu.qmp_path(), ["shell"]), script);
    // The first failed line decides the status; the lines after it still ran.
    assert_status(&output, COMMAND_FAILED);
    let text = stdout(&output);
    let results: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), 3, "{text}");
    assert_eq!(results[0]["status"], "prelaunch");
    assert!(results[1].as_array().unwrap().iter().any(|p| p["name"] == "peripheral"));
    assert!(results[2].is_array());
    let errors = stderr(&output);
    assert!(errors.contains("nonsense-cmd") && errors.contains("CommandNotFound"), "{errors}");
    assert_eq!(errors.lines().count(), 1, "{errors}");
}

#[test]
fn shell_reports_server_errors_and_usage_errors_per_line() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let script = "query-pci bogus=1\nqom-list path\nquery-status\nquit\nquery-status\n";
    // Unchecked, so that QEMU's own error comes back (tests/schema.rs has the checked one).
    let output = run_with_input(qmp_at(qemu.qmp_path(), ["--no-check", "shell"]), script);
    assert_status(&output, COMMAND_FAILED);
    assert_eq!(stdout(&output).lines().count(), 1, "quit ends the shell: {}", stdout(&output));
    let errors = stderr(&output);
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines[0], "error: GenericError: Parameter 'bogus' is unexpected", "{errors}");
    assert!(lines[1].starts_with("qmp: expected key=value"), "{errors}");
}

#[test]
fn a_missing_socket_next_to_a_running_qemu_exits_3() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(&qemu.dir().join("elsewhere.sock"), ["exec", "query-status"]));
    assert_status(&output, CONNECTION);
    one_error_line(&output, "qmp: cannot connect to ");
}

#[test]
fn absurd_timeouts_saturate_instead_of_overflowing_the_clock() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    // 1e19 s is past the end of the monotonic clock: once a panic (status 101) in the
    // client's handshake deadline; now taken as a year.
    let output = run(qmp_at(qemu.qmp_path(), ["--timeout", "1e19", "exec", "query-status"]));
    assert_status(&output, OK);
    assert!(stdout(&output).contains("prelaunch"), "{}", stdout(&output));
    let output =
        run_with_input(qmp_at(qemu.qmp_path(), ["--timeout", "1e19", "shell"]), "query-status\n");
    assert_status(&output, OK);
    assert!(stdout(&output).contains("prelaunch"), "{}", stdout(&output));
}

/// Connects to `path` and waits for QEMU's greeting: this connection holds the monitor.
fn hold_monitor(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    use std::io::BufRead;
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    let mut greeting = String::new();
    std::io::BufReader::new(&stream).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("{\"QMP\""), "{greeting}");
    stream
}

#[test]
fn a_busy_monitor_is_retried_until_the_timeout_and_named_as_busy() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let path = qemu.qmp_path();
    let connect = || std::os::unix::net::UnixStream::connect(path).unwrap();

    // One client holds the monitor and two connections wait (QEMU's listen backlog is 1,
    // so Linux queues two): connect(2) fails with EAGAIN, which is retried until the
    // timeout, then named. (A connection stays queued, closed or not, until QEMU accepts
    // it, which it does only once the holder leaves.)
    let holder = hold_monitor(path);
    let queued = [connect(), connect()];
    let start = Instant::now();
    let output = run(qmp_at(path, ["--timeout", "1", "exec", "query-status"]));
    let took = start.elapsed();
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: the monitor at ");
    assert!(line.contains("is busy: another client holds it"), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(took >= Duration::from_millis(900), "it did not retry: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Released while `qmp` retries: it gets through.
    let mut child = qmp_at(path, ["--timeout", "20", "exec", "query-status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "qmp gave up on a busy monitor at once");
    drop((queued, holder));
    let output = child.wait_with_output().unwrap();
    assert_status(&output, OK);
    assert!(stdout(&output).contains("prelaunch"), "{}", stdout(&output));

    // Held, with room in the backlog: `qmp`'s connection is queued and gets no greeting.
    let _holder = hold_monitor(path);
    let start = Instant::now();
    let output = run(qmp_at(path, ["--timeout", "1", "exec", "query-status"]));
    assert_status(&output, CONNECTION);
    let line = one_error_line(&output, "qmp: timed out: the monitor at ");
    assert!(line.contains("sent no greeting within 1s"), "{line}");
    assert!(line.contains("probably held by another client"), "{line}");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
}
