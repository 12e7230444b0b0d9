//! Test support shared by every qmp-rs crate: a real `qemu-system-x86_64` with a QMP
//! socket in a private temporary directory.
//!
//! [`Qemu`] starts QEMU, waits until its QMP socket accepts connections, and on drop kills
//! and reaps the process and removes the directory, so a test leaves no orphan and no stray
//! socket behind.
//!
//! Tests that need QEMU call [`Qemu::start_or_skip`] (or the [`qemu_or_skip!`] macro). When
//! the binary is missing the test is skipped with a printed reason, unless the environment
//! sets `QMP_REQUIRE_QEMU=1`: then the test fails, so CI cannot count a skip as a pass.
//!
//! Hotplug tests need a guest that answers ACPI hotplug: [`Qemu::start_guest_or_skip`] (or
//! [`guest_or_skip!`]) boots a tiny Linux built by `scripts/build-guest` and waits until it
//! is ready; the guest reports NICs and disks coming and going on its serial console, which
//! [`Qemu::wait_for_serial`] reads (see the [`GuestImage`] docs for the line format).
//!
//! ```no_run
//! use std::io::{BufRead, BufReader};
//! use std::os::unix::net::UnixStream;
//!
//! let Some(qemu) = qemu_launcher::Qemu::start_or_skip() else { return };
//! let stream = UnixStream::connect(qemu.qmp_path()).unwrap();
//! let mut greeting = String::new();
//! BufReader::new(stream).read_line(&mut greeting).unwrap();
//! assert!(greeting.starts_with("{\"QMP\""));
//! ```
#![forbid(unsafe_code)]

mod guest;

pub use guest::{GUEST_DIR_ENV, GUEST_READY, GUEST_READY_TIMEOUT, GuestImage, SerialLine};

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the QEMU binary; defaults to `qemu-system-x86_64` on `PATH`.
pub const QEMU_BINARY_ENV: &str = "QMP_QEMU";
/// Environment variable that turns a missing QEMU from a skip into a failure when set to `1`.
pub const REQUIRE_QEMU_ENV: &str = "QMP_REQUIRE_QEMU";

const DEFAULT_BINARY: &str = "qemu-system-x86_64";
const SOCKET_WAIT: Duration = Duration::from_secs(20);

/// Whether `QMP_REQUIRE_QEMU=1` is set, i.e. a missing QEMU must fail the test.
pub fn qemu_required() -> bool {
    std::env::var_os(REQUIRE_QEMU_ENV).is_some_and(|v| v == "1")
}

/// Finds the QEMU binary: `$QMP_QEMU` if set, otherwise `qemu-system-x86_64` on `PATH`.
///
/// # Errors
/// A human-readable reason when no executable is found.
pub fn find_qemu() -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os(QEMU_BINARY_ENV) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("${QEMU_BINARY_ENV} names {}, which is not a file", path.display()))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(DEFAULT_BINARY))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{DEFAULT_BINARY} not found on PATH (install the Debian package qemu-system-x86, \
                 or set ${QEMU_BINARY_ENV})"
            )
        })
}

/// How to start QEMU. The defaults are the smallest machine that still has a PCI bus:
/// `-machine pc -accel tcg -nodefaults -nographic -display none`, no serial port and 64 MiB;
/// [`QemuBuilder::guest`] boots the test guest on it instead.
#[derive(Debug, Clone)]
pub struct QemuBuilder {
    binary: Option<PathBuf>,
    paused: bool,
    qmp_path: Option<PathBuf>,
    guest: Option<GuestImage>,
    accel: &'static str,
    extra_args: Vec<OsString>,
}

impl Default for QemuBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl QemuBuilder {
    /// A builder with the default machine.
    pub fn new() -> Self {
        Self {
            binary: None,
            paused: false,
            qmp_path: None,
            guest: None,
            accel: "tcg",
            extra_args: Vec::new(),
        }
    }

    /// Use this binary instead of looking one up.
    #[must_use]
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Use KVM instead of TCG. Only when asked: on these machines `/dev/kvm` exists but a
    /// nested KVM guest hangs in the firmware, so the default stays TCG.
    #[must_use]
    pub fn kvm(mut self, kvm: bool) -> Self {
        self.accel = if kvm { "kvm" } else { "tcg" };
        self
    }

    /// Start with the CPUs stopped (`-S`), which keeps an idle test machine off the CPU.
    #[must_use]
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Put the QMP socket at `path` instead of in QEMU's own temporary directory, e.g. to
    /// start a second QEMU where a killed one listened. The caller owns that path; a socket
    /// left there is replaced.
    #[must_use]
    pub fn qmp_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.qmp_path = Some(path.into());
        self
    }

    /// Append one command-line argument.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.extra_args.push(arg.as_ref().to_owned());
        self
    }

    /// Append several command-line arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.extra_args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Starts QEMU and waits until its QMP socket accepts a connection.
    ///
    /// The probe connection is closed at once; QEMU's monitor then accepts the next client
    /// (the test's) and sends it a fresh greeting.
    ///
    /// # Errors
    /// [`StartError`] when the binary is missing, the process cannot be spawned, exits early,
    /// or the socket does not appear in time.
    pub fn start(self) -> Result<Qemu, StartError> {
        let binary = match self.binary {
            Some(binary) => binary,
            None => find_qemu().map_err(StartError::NotInstalled)?,
        };
        let dir =
            tempfile::Builder::new().prefix("qmp-rs-qemu.").tempdir().map_err(StartError::Io)?;
        let qmp_path = self.qmp_path.unwrap_or_else(|| dir.path().join("qmp.sock"));
        // QEMU refuses to bind over a stale socket file.
        let _ = std::fs::remove_file(&qmp_path);
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr = File::create(&stderr_path).map_err(StartError::Io)?;

        let mut qmp_arg = OsString::from("unix:");
        qmp_arg.push(&qmp_path);
        qmp_arg.push(",server=on,wait=off");

        let mut command = parent_death_guard(&binary);
        command
            .args([
                "-machine",
                "pc",
                "-accel",
                self.accel,
                "-nodefaults",
                "-nographic",
                "-display",
                "none",
            ])
            .args(["-monitor", "none"])
            .arg("-qmp")
            .arg(&qmp_arg);
        let serial_path = self.guest.as_ref().map(|image| {
            let serial = dir.path().join("serial.log");
            command.args(Self::guest_args(image, &serial));
            serial
        });
        if serial_path.is_none() {
            command.args(["-serial", "none", "-m", "64"]);
        }
        if self.paused {
            command.arg("-S");
        }
        command.args(&self.extra_args);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);

        let child =
            command.spawn().map_err(|e| StartError::Spawn { binary: binary.clone(), source: e })?;
        let mut qemu =
            Qemu { child: Some(child), qmp_path, stderr_path, serial_path, dir: Some(dir) };
        qemu.wait_for_socket()?;
        Ok(qemu)
    }
}

/// Runs `binary` under `setpriv --pdeathsig KILL` when util-linux provides it, so QEMU dies
/// with the test process even if that process is killed before any destructor runs.
///
/// The kernel sends the signal when the *thread* that spawned the child exits; [`Qemu`] is
/// meant to live on the thread that started it (a test body), which is always the case in
/// the test suites here.
fn parent_death_guard(binary: &Path) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).is_file() {
        let mut command = Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

/// Why QEMU could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The binary is not installed; the message says where it was looked for.
    NotInstalled(String),
    /// `spawn` failed.
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// QEMU exited before its QMP socket came up.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The QMP socket did not accept a connection in time.
    SocketTimeout {
        /// How long was waited.
        waited: Duration,
        /// What QEMU wrote to stderr so far.
        stderr: String,
    },
    /// Creating the temporary directory or stderr file failed.
    Io(io::Error),
    /// The test guest image could not be found or built (see [`GuestImage::locate`]).
    Guest(String),
    /// QEMU runs, but the guest did not print [`GUEST_READY`] in time (or QEMU exited).
    GuestNotReady {
        /// How long was waited.
        waited: Duration,
        /// The guest's serial console log.
        log: String,
        /// What QEMU wrote to stderr.
        stderr: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalled(why) => write!(f, "QEMU is not installed: {why}"),
            Self::Spawn { binary, source } => {
                write!(f, "cannot run {}: {source}", binary.display())
            }
            Self::Exited { status, stderr } => write!(f, "QEMU exited early ({status}): {stderr}"),
            Self::SocketTimeout { waited, stderr } => {
                write!(f, "QMP socket not ready after {waited:?}; QEMU stderr: {stderr}")
            }
            Self::Io(e) => write!(f, "test setup I/O error: {e}"),
            Self::Guest(why) => write!(f, "test guest unavailable: {why}"),
            Self::GuestNotReady { waited, log, stderr } => write!(
                f,
                "the guest did not print {GUEST_READY} within {waited:?}\n\
                 --- serial log ---\n{log}\n--- QEMU stderr ---\n{stderr}"
            ),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::Io(source) => Some(source),
            _ => None,
        }
    }
}

/// A running QEMU, killed and reaped on drop together with its temporary directory.
#[derive(Debug)]
pub struct Qemu {
    child: Option<Child>,
    qmp_path: PathBuf,
    stderr_path: PathBuf,
    serial_path: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
}

impl Qemu {
    /// A builder for a custom command line.
    pub fn builder() -> QemuBuilder {
        QemuBuilder::new()
    }

    /// Starts the default machine.
    ///
    /// # Errors
    /// See [`QemuBuilder::start`].
    pub fn start() -> Result<Self, StartError> {
        QemuBuilder::new().start()
    }

    /// Starts the default machine for a test: `None` (with a printed reason) when QEMU is
    /// not installed and `QMP_REQUIRE_QEMU` is not `1`.
    ///
    /// # Panics
    /// When QEMU is missing and `QMP_REQUIRE_QEMU=1`, or when QEMU is installed but fails
    /// to start: a broken QEMU is a test failure, never a skip.
    pub fn start_or_skip() -> Option<Self> {
        Self::start_or_skip_with(QemuBuilder::new())
    }

    /// [`Qemu::start_or_skip`] with a custom builder.
    ///
    /// # Panics
    /// As [`Qemu::start_or_skip`].
    pub fn start_or_skip_with(builder: QemuBuilder) -> Option<Self> {
        match builder.start() {
            Ok(qemu) => Some(qemu),
            Err(StartError::NotInstalled(why)) if !qemu_required() => {
                eprintln!("SKIPPED: {why}; set {REQUIRE_QEMU_ENV}=1 to make this a failure");
                None
            }
            Err(e) => panic!("cannot start QEMU ({REQUIRE_QEMU_ENV}={}): {e}", qemu_required()),
        }
    }

    /// The QMP unix socket.
    pub fn qmp_path(&self) -> &Path {
        &self.qmp_path
    }

    /// The private temporary directory (socket, stderr log, serial log of a guest; tests
    /// may put files here).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or_else(|| Path::new(""), tempfile::TempDir::path)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What QEMU has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills QEMU now (SIGKILL) and reaps it; for tests of a monitor that vanishes.
    ///
    /// # Errors
    /// The error from `kill` or `wait`.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("QEMU was already killed"));
        };
        // An already-exited child makes kill fail with InvalidInput; wait still reaps it.
        let _ = child.kill();
        child.wait()
    }

    /// Freezes QEMU (`SIGSTOP`): it stops reading and answering its monitor, so commands
    /// sent meanwhile stay in flight. [`Qemu::resume`] undoes it; kill and drop work either way.
    ///
    /// # Errors
    /// If QEMU was already killed, or the signal cannot be sent.
    pub fn freeze(&self) -> io::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Resumes a frozen QEMU (`SIGCONT`).
    ///
    /// # Errors
    /// As [`Qemu::freeze`].
    pub fn resume(&self) -> io::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        let pid = self.pid().ok_or_else(|| io::Error::other("QEMU was already killed"))?;
        let pid = i32::try_from(pid).map_err(io::Error::other)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(io::Error::from)
    }

    /// Checks whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn wait_for_socket(&mut self) -> Result<(), StartError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(StartError::Exited { status, stderr: self.stderr() });
            }
            if UnixStream::connect(&self.qmp_path).is_ok() {
                return Ok(());
            }
            if start.elapsed() > SOCKET_WAIT {
                return Err(StartError::SocketTimeout {
                    waited: start.elapsed(),
                    stderr: self.stderr(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Starts the default QEMU or returns from the calling test (see [`Qemu::start_or_skip`]).
///
/// `qemu_or_skip!()` uses the default machine; `qemu_or_skip!(builder)` a custom one.
#[macro_export]
macro_rules! qemu_or_skip {
    () => {
        $crate::qemu_or_skip!($crate::QemuBuilder::new())
    };
    ($builder:expr) => {
        match $crate::Qemu::start_or_skip_with($builder) {
            Some(qemu) => qemu,
            None => return,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[test]
    fn starts_greets_and_cleans_up() {
        let mut qemu = qemu_or_skip!();
        let dir = qemu.dir().to_owned();
        let pid = qemu.pid().unwrap();
        assert!(qemu.is_running());

        let stream = UnixStream::connect(qemu.qmp_path()).unwrap();
        let mut greeting = String::new();
        BufReader::new(stream).read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with(r#"{"QMP": {"version": {"qemu""#), "{greeting}");
        assert!(greeting.ends_with("\r\n"));

        drop(qemu);
        assert!(!dir.exists(), "temporary directory left behind");
        // Reaped: the pid is gone from /proc (or reused by something that is not our child).
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!status.contains("(qemu-system-x86"), "QEMU still running or zombie: {status}");
    }

    #[test]
    fn kill_reaps_and_reports() {
        let mut qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
        let status = qemu.kill().unwrap();
        assert!(!status.success());
        assert!(!qemu.is_running());
        assert!(qemu.kill().is_err(), "second kill must say it was already killed");
    }

    #[test]
    fn a_second_qemu_can_listen_where_a_killed_one_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.qmp");
        let mut first = qemu_or_skip!(QemuBuilder::new().paused(true).qmp_path(&path));
        assert_eq!(first.qmp_path(), path);
        first.kill().unwrap();
        let second =
            Qemu::start_or_skip_with(QemuBuilder::new().paused(true).qmp_path(&path)).unwrap();
        assert!(UnixStream::connect(second.qmp_path()).is_ok());
    }

    #[test]
    fn a_frozen_qemu_does_not_answer_until_resumed() {
        use std::io::Write;
        let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
        let mut stream = UnixStream::connect(qemu.qmp_path()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        qemu.freeze().unwrap();
        stream.write_all(b"{\"execute\": \"qmp_capabilities\"}\r\n").unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        line.clear();
        let frozen = reader.read_line(&mut line);
        assert!(frozen.is_err(), "a frozen QEMU answered: {line}");
        qemu.resume().unwrap();
        stream.set_read_timeout(None).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("{\"return\""), "{line}");
    }

    #[test]
    fn a_machine_without_guest_has_no_serial_log() {
        let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
        assert_eq!(qemu.serial_path(), None);
        assert_eq!(qemu.serial_log(), "");
        assert_eq!(qemu.serial_len(), 0);
        let why = qemu.wait_for_serial(GUEST_READY, Duration::from_secs(10)).unwrap_err();
        assert!(why.contains("boots no guest"), "{why}");
        let err = qemu.wait_guest_ready(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, StartError::GuestNotReady { .. }), "{err}");
    }

    #[test]
    fn guest_image_from_dir_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = GuestImage::from_dir(dir.path()).unwrap_err();
        assert!(err.contains("vmlinuz"), "{err}");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        let err = GuestImage::from_dir(dir.path()).unwrap_err();
        assert!(err.contains("initramfs.gz"), "{err}");
        std::fs::write(dir.path().join("initramfs.gz"), b"i").unwrap();
        let image = GuestImage::from_dir(dir.path()).unwrap();
        assert_eq!(image.kernel, dir.path().join("vmlinuz"));
        assert_eq!(image.initrd, dir.path().join("initramfs.gz"));
    }

    #[test]
    fn bad_argument_is_reported_with_stderr() {
        if find_qemu().is_err() && !qemu_required() {
            eprintln!("SKIPPED: QEMU not installed");
            return;
        }
        let err = QemuBuilder::new().arg("-no-such-option").start().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StartError::Exited { .. }), "{text}");
        assert!(text.contains("no-such-option"), "{text}");
    }
}
