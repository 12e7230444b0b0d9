//! Running the built `qmp` binary and reading what it did.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The status classes `qmp` documents.
pub const OK: i32 = 0;
pub const COMMAND_FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const CONNECTION: i32 = 3;

/// `qmp` with a clean environment (no `QMP_SOCKET` from outside) and the given arguments.
pub fn qmp<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_qmp"));
    command.env_remove("QMP_SOCKET").args(args).stdin(Stdio::null());
    command
}

/// `qmp --socket SOCKET ARGS...`.
pub fn qmp_at<I, S>(socket: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = qmp(["--socket".as_ref(), socket.as_os_str()]);
    command.args(args);
    command
}

/// Runs `command` to the end with `stdin` as its input.
pub fn run_with_input(mut command: Command, stdin: &str) -> Output {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run qmp");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().expect("wait for qmp")
}

/// Runs `command` to the end.
pub fn run(mut command: Command) -> Output {
    command.output().expect("run qmp")
}

/// Runs `command` on tokio's blocking pool, so a mock server on the test's runtime keeps
/// serving meanwhile.
pub async fn run_async(command: Command) -> Output {
    tokio::task::spawn_blocking(move || run(command)).await.expect("the qmp runner")
}

/// [`run_with_input`] on tokio's blocking pool, so a mock server on the test's runtime keeps
/// serving meanwhile.
pub async fn run_with_input_async(command: Command, stdin: &'static str) -> Output {
    tokio::task::spawn_blocking(move || run_with_input(command, stdin))
        .await
        .expect("the qmp runner")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit status, showing everything `qmp` printed when it is wrong.
#[track_caller]
pub fn assert_status(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Asserts that stderr is exactly one line starting with `prefix`, and returns it.
#[track_caller]
pub fn one_error_line(output: &Output, prefix: &str) -> String {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {text:?}");
    assert!(lines[0].starts_with(prefix), "stderr does not start with {prefix:?}: {text:?}");
    assert!(!text.contains("panicked"), "{text}");
    lines[0].to_owned()
}
