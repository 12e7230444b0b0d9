//! [`Qemu`]: a running QEMU, killed, reaped and cleaned up on drop.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::{QemuBuilder, StartError};

/// How often a wait polls the process or the socket.
const POLL: Duration = Duration::from_millis(5);

/// A running QEMU with a QMP socket in a private temporary directory.
///
/// Dropping it kills QEMU (`SIGKILL`), reaps it, and removes the directory with everything
/// in it (socket, stderr log, serial log, files a caller put there), also when QEMU already
/// exited on its own. A socket at a caller-chosen [`QemuBuilder::qmp_path`] is removed too,
/// unless another socket has replaced it meanwhile.
#[derive(Debug)]
pub struct Qemu {
    child: Option<Child>,
    qmp_path: PathBuf,
    /// The socket QEMU created outside the private directory, so that drop removes that
    /// socket and no other.
    outside_socket: Option<FileIdentity>,
    stderr_path: PathBuf,
    pub(crate) serial_path: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Qemu {
    pub(crate) fn new(
        child: Child,
        qmp_path: PathBuf,
        stderr_path: PathBuf,
        serial_path: Option<PathBuf>,
        dir: tempfile::TempDir,
    ) -> Self {
        Self { child: Some(child), qmp_path, outside_socket: None, stderr_path, serial_path, dir }
    }

    /// A builder for a custom command line.
    pub fn builder() -> QemuBuilder {
        QemuBuilder::new()
    }

    /// Starts the default machine (see [`QemuBuilder`]).
    ///
    /// # Errors
    /// See [`QemuBuilder::start`].
    pub fn start() -> Result<Self, StartError> {
        QemuBuilder::new().start()
    }

    /// The QMP unix socket.
    pub fn qmp_path(&self) -> &Path {
        &self.qmp_path
    }

    /// The private temporary directory (socket, stderr log, serial log; callers may put
    /// files here, such as disk images: they go with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// QEMU's process id; `None` once [`Qemu::kill`] has reaped it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What QEMU has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills QEMU now (`SIGKILL`) and reaps it, e.g. to test a monitor that vanishes. The
    /// directory stays until drop.
    ///
    /// # Errors
    /// When QEMU was already killed, or `wait` fails.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("QEMU was already killed"));
        };
        // An already-exited child makes kill fail with InvalidInput; wait still reaps it.
        let _ = child.kill();
        child.wait()
    }

    /// Waits up to `timeout` for QEMU to exit by itself (after `quit`, or a guest's
    /// shutdown with `-no-reboot`) and reaps it: `Some(status)` if it did, `None` if it
    /// still runs.
    ///
    /// # Errors
    /// When QEMU was already killed, or `waitpid` fails.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let child =
            self.child.as_mut().ok_or_else(|| io::Error::other("QEMU was already killed"))?;
        // A timeout too large for the clock waits without end.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
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

    /// Whether QEMU is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether the QEMU process is gone or a zombie, without needing `&mut self` (and
    /// without reaping it).
    pub(crate) fn has_exited(&self) -> bool {
        let Some(pid) = self.pid() else { return true };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    /// Polls until the QMP socket accepts a connection.
    pub(crate) fn wait_for_socket(&mut self, timeout: Duration) -> Result<(), StartError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(StartError::Exited { status, stderr: self.stderr() });
            }
            if UnixStream::connect(&self.qmp_path).is_ok() {
                if !self.qmp_path.starts_with(self.dir.path()) {
                    self.outside_socket = FileIdentity::of(&self.qmp_path);
                }
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(StartError::SocketTimeout {
                    waited: start.elapsed(),
                    stderr: self.stderr(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The private directory goes with `self.dir`; a socket outside it only if it is
        // still the one this QEMU created.
        if self.outside_socket.is_some() && self.outside_socket == FileIdentity::of(&self.qmp_path)
        {
            let _ = std::fs::remove_file(&self.qmp_path);
        }
    }
}

/// Which socket file a path names: an inode number freed by one socket can be reused at
/// once by the next, so the change time goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl FileIdentity {
    /// The socket at `path`, if there is one.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.file_type().is_socket().then(|| Self {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}
