//! Schema checking and `qmp schema` against a real `qemu-system-x86_64`: checking is on by
//! default, `--no-check` bypasses it, `exec --check-only` sends nothing, refusals name each
//! problem's path, and `qmp schema` describes commands, events and probe paths. With
//! `QMP_REQUIRE_QEMU=1` a missing QEMU fails these tests instead of skipping them.

mod common;

use common::{
    COMMAND_FAILED, OK, assert_status, one_error_line, qmp_at, run, run_with_input, stdout,
};
use qemu_launcher::{QemuBuilder, qemu_or_skip};
use serde_json::Value;

/// `blockdev-add` with `filename` misspelt in its nested `file` node.
const MISSPELT: &str =
    r#"{"driver": "raw", "node-name": "d0", "file": {"driver": "file", "filenme": "/dev/null"}}"#;

#[test]
fn a_refused_command_names_each_problem_and_is_not_sent() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let path = qemu.qmp_path();
    let output = run(qmp_at(path, ["exec", "blockdev-add", MISSPELT]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: blockdev-add: the server's schema refuses");
    assert!(line.contains("nothing was sent"), "{line}");
    assert!(
        line.contains(r#"arguments.file.filenme: unexpected member (did you mean "filename"?)"#),
        "{line}"
    );
    assert!(
        line.contains(
            r#"arguments.file.filename: missing (required for driver "file"), expected str"#
        ),
        "{line}"
    );
    assert!(line.ends_with("(--no-check sends them anyway)"), "{line}");

    // --no-check sends it: QEMU's own refusal comes back instead.
    let output = run(qmp_at(path, ["--no-check", "exec", "blockdev-add", MISSPELT]));
    assert_status(&output, COMMAND_FAILED);
    one_error_line(&output, "error: GenericError: ");

    // What the server sends back in a problem (an enum value typed) is escaped.
    let evil =
        r#"{"driver": "file", "node-name": "d1", "filename": "/dev/null", "aio": "nat\u001bive"}"#;
    let output = run(qmp_at(path, ["exec", "blockdev-add", evil]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: blockdev-add: ");
    assert!(
        line.contains(r#"arguments.aio: expected one of "threads", "native", "io_uring", found string "nat\u{1b}ive" (did you mean "native"?)"#),
        "{line}"
    );

    // Nothing of either refused command reached QEMU.
    let output = run(qmp_at(path, ["exec", "query-named-block-nodes"]));
    assert_status(&output, OK);
    assert_eq!(stdout(&output).trim(), "[]");
}

#[test]
fn check_only_validates_without_sending() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let path = qemu.qmp_path();
    // Valid: `cont` would start the VM, and does not.
    let output = run(qmp_at(path, ["exec", "--check-only", "cont"]));
    assert_status(&output, OK);
    assert_eq!(stdout(&output), "valid\n");
    let good =
        r#"{"driver": "file", "node-name": "d0", "filename": "/dev/null", "aio": "threads"}"#;
    let output = run(qmp_at(path, ["exec", "--check-only", "blockdev-add", good]));
    assert_status(&output, OK);
    assert_eq!(stdout(&output), "valid\n");
    let output = run(qmp_at(path, ["exec", "query-status"]));
    assert!(stdout(&output).contains("prelaunch"), "cont was sent: {}", stdout(&output));
    let output = run(qmp_at(path, ["exec", "query-named-block-nodes"]));
    assert_eq!(stdout(&output).trim(), "[]", "blockdev-add was sent");

    // Refused: status 1 with the problems, nothing on stdout.
    let output = run(qmp_at(path, ["exec", "--check-only", "blockdev-add", MISSPELT]));
    assert_status(&output, COMMAND_FAILED);
    one_error_line(&output, "qmp: blockdev-add: the server's schema refuses");
    assert!(stdout(&output).is_empty());

    // What the schema cannot judge is said, not guessed.
    let device = r#"{"driver": "e1000", "id": "n1", "no-such-property": 1}"#;
    let output = run(qmp_at(path, ["exec", "--check-only", "device_add", device]));
    assert_status(&output, OK);
    assert!(stdout(&output).starts_with("arguments: not checked: device_add takes free-form"));

    // A command the server does not have: status 1, as when running it.
    let output = run(qmp_at(path, ["exec", "--check-only", "no-such-command"]));
    assert_status(&output, COMMAND_FAILED);
    one_error_line(&output, "qmp: command 'no-such-command' is not supported");
}

#[test]
fn the_shell_reports_a_refused_line_and_goes_on() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let script = "qom-list pth=/machine\nquery-status\n";
    let output = run_with_input(qmp_at(qemu.qmp_path(), ["shell"]), script);
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: qom-list: the server's schema refuses");
    assert!(line.contains(r#"arguments.pth: unexpected member (did you mean "path"?)"#), "{line}");
    assert!(stdout(&output).contains("prelaunch"), "the next line ran: {}", stdout(&output));
}

#[test]
fn schema_describes_commands_variants_events_and_paths() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let path = qemu.qmp_path();
    let output = run(qmp_at(path, ["schema", "blockdev-add"]));
    assert_status(&output, OK);
    let text = stdout(&output);
    assert!(text.starts_with("command blockdev-add\narguments: object, by driver\n"), "{text}");
    for expected in [
        "  node-name (optional): str\n",
        "  when driver is \"file\", \"host_cdrom\", \"host_device\":\n",
        "    filename: str\n",
        "    aio (optional): one of \"threads\", \"native\", \"io_uring\"\n",
        "    x-check-cache-dropped (optional): bool [unstable]\n",
        "returns: none\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // QEMU's masked type numbers never show: no word of the text is a bare number.
    assert!(
        !text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())),
        "{text}"
    );

    let output = run(qmp_at(path, ["schema", "blockdev-add/arg-type/+file/aio"]));
    assert_status(&output, OK);
    assert_eq!(
        stdout(&output),
        "blockdev-add/arg-type/+file/aio: one of \"threads\", \"native\", \"io_uring\"\n"
    );
    let output = run(qmp_at(path, ["schema", "blockdev-add/arg-type/+file/aio/^native"]));
    assert_eq!(stdout(&output), "blockdev-add/arg-type/+file/aio/^native: yes\n");

    let output = run(qmp_at(path, ["schema", "DEVICE_DELETED"]));
    assert_status(&output, OK);
    assert_eq!(
        stdout(&output),
        "event DEVICE_DELETED\ndata: object\n  device (optional): str\n  path: str\n"
    );

    let output = run(qmp_at(path, ["schema", "--json", "query-status"]));
    assert_status(&output, OK);
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["kind"], "command");
    assert_eq!(json["returns"]["members"][0]["name"], "running");

    let output = run(qmp_at(path, ["schema", "blockdev-ad"]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: \"blockdev-ad\" is not a command");
    assert!(line.ends_with("(did you mean \"blockdev-add\"?)"), "{line}");
    let output = run(qmp_at(path, ["schema", "blockdev-add/arg-type/+file/no-such-member"]));
    assert_status(&output, COMMAND_FAILED);
}
