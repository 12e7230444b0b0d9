//! `qmp shell` on a pseudo-terminal, as a person uses it: line editing, tab completion of
//! command names, results printed, `quit`. Input arrives several bytes per read, which
//! stalled rustyline 15 when an external printer (for events) was active.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::qmp_at;
use nix::pty::openpty;
use qemu_launcher::{QemuBuilder, qemu_or_skip};

/// Collects what the shell writes to the terminal, from a reader thread.
struct Screen {
    bytes: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bytes.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(error) => panic!(
                    "the shell never showed {needle:?} ({error}); the screen so far:\n{}",
                    self.seen
                ),
            }
        }
    }
}

#[test]
fn the_interactive_shell_completes_runs_and_quits() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let pty = openpty(None, None).unwrap();
    let terminal = File::from(pty.slave);
    let mut child = qmp_at(qemu.qmp_path(), ["shell"])
        .env("TERM", "xterm")
        .env("XDG_STATE_HOME", tempfile::tempdir().unwrap().path())
        .stdin(Stdio::from(terminal.try_clone().unwrap()))
        .stdout(Stdio::from(terminal.try_clone().unwrap()))
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    let mut keyboard = File::from(pty.master);
    let mut reader = keyboard.try_clone().unwrap();
    let (sender, bytes) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if sender.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Screen { bytes, seen: String::new() };

    // The whole line in one write; the tab completes the unique command name.
    keyboard.write_all(b"query-statu\t\r").unwrap();
    screen.wait_for("prelaunch");
    keyboard.write_all(b"qom-list path=/machine\r").unwrap();
    screen.wait_for("peripheral");
    keyboard.write_all(b"no-such-command\r").unwrap();
    screen.wait_for("CommandNotFound");
    keyboard.write_all(b"quit\r").unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the shell did not quit:\n{}", screen.seen);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}:\n{}", screen.seen);
}
