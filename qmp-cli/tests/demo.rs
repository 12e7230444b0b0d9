//! `qmp demo` ended by SIGINT or SIGTERM at several moments undoes everything it made: its
//! temporary directory is gone, its QEMU killed and reaped, its tap removed; it ends with
//! status 130 or 143. Needs QEMU, the test guest and root (for the tap).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{one_error_line, qmp};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the demo may take to reach a moment (it boots a guest under TCG).
const REACH: Duration = Duration::from_secs(120);
/// How long it may take to clean up and end after the signal.
const CLEAN_UP: Duration = Duration::from_secs(15);

/// What the demo said about itself before the signal.
#[derive(Debug, Default)]
struct Seen {
    qemu_pid: Option<i32>,
    dir: Option<PathBuf>,
    tap: Option<String>,
    lines: Vec<String>,
}

impl Seen {
    fn note(&mut self, line: &str) {
        // "[   50.3 ms] started QEMU (pid 9570), QMP at /tmp/qmp-rs-qemu.hoF4mO/qmp.sock"
        if let Some(rest) = line.split("started QEMU (pid ").nth(1) {
            self.qemu_pid = rest.split(')').next().and_then(|pid| pid.parse().ok());
            let socket = rest.split("QMP at ").nth(1).map(|path| Path::new(path.trim()));
            self.dir = socket.and_then(Path::parent).map(Path::to_owned);
        }
        // "... hot-added NIC nic-demo-pci-3 in slot 3 on tap qmpdemo0: getfd, ..."
        if let Some(rest) = line.split(" on tap ").nth(1) {
            self.tap = rest.split(':').next().map(str::to_owned);
        }
        self.lines.push(line.to_owned());
    }
}

/// Runs `qmp demo` until it prints a line containing `moment`, sends `signal`, and checks
/// that it ends with `status` having left nothing behind.
fn interrupt_demo_at(moment: &str, signal: Signal, status: i32) {
    let mut child: Child =
        qmp(["demo"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Seen::default();
    let deadline = Instant::now() + REACH;
    while !seen.lines.iter().any(|line| line.contains(moment)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            panic!("the demo never printed {moment:?}; it printed {:#?}", seen.lines);
        };
        seen.note(&line);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, signal).unwrap();
    let signalled = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if signalled.elapsed() > CLEAN_UP {
            let _ = child.kill();
            panic!("the demo did not end within {CLEAN_UP:?} of {signal}: {:#?}", seen.lines);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    assert_eq!(exit.code(), Some(status), "{exit:?} after {signal} at {moment:?}: {seen:#?}");
    let line = one_error_line(&output, &format!("qmp: interrupted by {signal}"));
    assert!(line.contains("QEMU was killed"), "{line}");

    let dir = seen.dir.expect("the demo names its QEMU's directory");
    assert!(!dir.exists(), "{} left behind after {signal} at {moment:?}", dir.display());
    let qemu = seen.qemu_pid.expect("the demo names its QEMU's pid");
    assert!(!is_qemu(qemu), "QEMU (pid {qemu}) still there after {signal} at {moment:?}");
    let users = processes_mentioning(&dir);
    assert!(users.is_empty(), "processes still use {}: {users:?}", dir.display());
    if let Some(tap) = &seen.tap {
        // The kernel removes a tap with the last descriptor of it, which went with QEMU.
        let gone = Instant::now();
        while Path::new("/sys/class/net").join(tap).exists() {
            assert!(gone.elapsed() < Duration::from_secs(5), "tap {tap} left behind");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` is a QEMU process (running or a zombie nobody reaped).
fn is_qemu(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.contains("(qemu-system"))
}

/// Processes whose command line names something in `dir` (QEMU's does: its socket).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

#[test]
fn an_interrupted_demo_leaves_nothing_behind() {
    let missing = qemu_launcher::find_qemu().err().or(qemu_launcher::GuestImage::locate().err());
    if let Some(reason) = missing {
        assert!(!qemu_launcher::qemu_required(), "QMP_REQUIRE_QEMU=1 but: {reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    // While the guest boots (QEMU runs, nothing hot-added yet).
    interrupt_demo_at("started QEMU", Signal::SIGINT, 130);
    // After the disk add: a disk image in the directory, an fdset in QEMU.
    interrupt_demo_at("hot-added disk", Signal::SIGTERM, 143);
    // After the NIC add: a tap carries the NIC.
    interrupt_demo_at("hot-added NIC", Signal::SIGINT, 130);
}
