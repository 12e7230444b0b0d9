//! Starts a real `qemu-system-*` with a QMP socket in a private temporary directory, like
//! Python's `qemu.machine`, and cleans up after it.
//!
//! [`QemuBuilder`] says how: the binary (`qemu-system-x86_64` on `PATH` by default, or any
//! architecture's, by name or path), the machine type (`pc` by default, or `q35`), the
//! accelerator (TCG by default), memory, whether the CPUs start paused (`-S`), a serial log,
//! a [`GuestImage`] to boot (kernel, initrd, command line) and extra arguments.
//! [`QemuBuilder::start`] spawns QEMU and returns once its QMP socket accepts connections.
//!
//! [`Qemu`] is the running machine. Dropping it kills QEMU, reaps the process and removes
//! the directory (socket, logs, anything put there), also when QEMU exited on its own; a
//! start that fails half-way cleans up the same way. QEMU runs under
//! `setpriv --pdeathsig KILL` when util-linux has it, so it dies with the process that
//! started it even when no destructor runs.
//!
//! The test guest ([`GuestImage::locate`]: a Debian kernel and a busybox initramfs built by
//! `scripts/build-guest` into `~/.cache/qmp-rs/guest`) answers ACPI hotplug and reports NICs
//! and disks coming and going on its serial console, which [`Qemu::wait_for_serial`] reads.
//! `qmp demo` boots it, and so do the hotplug tests.
//!
//! This crate does not speak QMP itself: it sits below `qmp-client` in the dependency
//! graph, so that the client's own tests can use it.
//!
//! ```no_run
//! use std::io::{BufRead, BufReader};
//! use std::os::unix::net::UnixStream;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let qemu = qemu_launcher::Qemu::builder().machine("q35").paused(true).start()?;
//! let mut greeting = String::new();
//! BufReader::new(UnixStream::connect(qemu.qmp_path())?).read_line(&mut greeting)?;
//! assert!(greeting.starts_with("{\"QMP\""));
//! drop(qemu); // killed, reaped, its directory gone
//! # Ok(())
//! # }
//! ```
//!
//! A program that can do without QEMU tells a missing one apart from a broken one:
//!
//! ```
//! use qemu_launcher::{Qemu, StartError};
//!
//! # fn main() -> Result<(), StartError> {
//! let mut qemu = match Qemu::builder().paused(true).start() {
//!     Ok(qemu) => qemu,
//!     Err(StartError::NotInstalled(why)) => {
//! #       assert!(std::env::var_os("QMP_REQUIRE_QEMU").is_none_or(|v| v != "1"), "{why}");
//!         eprintln!("no QEMU here, carrying on without: {why}");
//!         return Ok(());
//!     }
//!     Err(broken) => return Err(broken),
//! };
//! assert!(qemu.is_running() && qemu.qmp_path().starts_with(qemu.dir()));
//! # Ok(())
//! # }
//! ```
//!
//! With the feature `test-support` (for dev-dependencies only), `qemu_or_skip!`,
//! `guest_or_skip!` and the `Qemu::*_or_skip` constructors give tests their policy: skip with a
//! printed reason when QEMU or the guest is missing, fail instead when `QMP_REQUIRE_QEMU=1`.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod builder;
mod error;
mod guest;
mod qemu;
#[cfg(feature = "test-support")]
mod skip;

pub use builder::{MAX_ROOT_PORTS, QEMU_BINARY_ENV, QemuBuilder, find_qemu};
pub use error::{SerialWaitEnd, StartError};
pub use guest::{GUEST_DIR_ENV, GUEST_READY, GUEST_READY_TIMEOUT, GuestImage, SerialLine};
pub use qemu::Qemu;
#[cfg(feature = "test-support")]
pub use skip::{REQUIRE_QEMU_ENV, qemu_available_or_skip, qemu_required};

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// Whether `pid` is gone for good: no process, or one that is not QEMU (pid reused).
    /// A killed but unreaped child would still be listed, as a zombie.
    fn reaped(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat.contains("(qemu-system-") && !stat.contains("(sh)") && !stat.contains("(sleep)")
    }

    /// Whether `dir` holds nothing.
    fn is_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn starts_greets_and_cleans_up() {
        let mut qemu = qemu_or_skip!();
        let dir = qemu.dir().to_owned();
        let pid = qemu.pid().unwrap();
        assert!(qemu.is_running());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the directory is not private: {mode:o}");

        let stream = UnixStream::connect(qemu.qmp_path()).unwrap();
        let mut greeting = String::new();
        BufReader::new(stream).read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with(r#"{"QMP": {"version": {"qemu""#), "{greeting}");
        assert!(greeting.ends_with("\r\n"));

        drop(qemu);
        assert!(!dir.exists(), "temporary directory left behind");
        assert!(reaped(pid), "QEMU still running or a zombie");
    }

    #[test]
    fn a_qemu_that_exits_by_itself_is_reaped_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let qemu = qemu_or_skip!(QemuBuilder::new().paused(true).dir_in(root.path()));
        let pid = qemu.pid().unwrap();
        let mut stream = UnixStream::connect(qemu.qmp_path()).unwrap();
        stream
            .write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"quit\"}\n")
            .unwrap();
        let start = Instant::now();
        while !qemu.has_exited() {
            assert!(start.elapsed() < Duration::from_secs(20), "QEMU did not quit");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Exited but not reaped yet: a zombie, which only a wait removes.
        assert!(!reaped(pid), "reaped before drop: this test tests nothing");
        drop(qemu);
        assert!(reaped(pid), "drop left a zombie");
        assert!(is_empty(root.path()), "drop left files behind");
    }

    #[test]
    fn a_start_that_fails_half_way_leaves_nothing() {
        if !qemu_available_or_skip("a_start_that_fails_half_way_leaves_nothing") {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let builder = || QemuBuilder::new().dir_in(root.path());

        // No such binary: nothing was created.
        let err = builder().binary(root.path().join("no-qemu")).start().unwrap_err();
        assert!(matches!(err, StartError::NotInstalled(_)), "{err}");
        assert!(is_empty(root.path()));

        // QEMU refuses its command line and exits.
        let err = builder().arg("-no-such-option").start().unwrap_err();
        assert!(matches!(err, StartError::Exited { .. }), "{err}");
        assert!(err.to_string().contains("no-such-option"), "{err}");
        assert!(is_empty(root.path()));

        // A process that runs but never opens the socket: killed and reaped at the timeout.
        let scratch = tempfile::tempdir().unwrap();
        let pid_file = scratch.path().join("pid");
        let fake = scratch.path().join("fake-qemu");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho $$ > {}\nexec sleep 60\n", pid_file.display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let start = Instant::now();
        let err = builder().binary(&fake).start_timeout(Duration::from_millis(300)).start();
        let err = err.unwrap_err();
        assert!(matches!(err, StartError::SocketTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(reaped(pid), "the process of a failed start was left running or a zombie");
        assert!(is_empty(root.path()), "a failed start left its directory");
    }

    #[test]
    fn kill_reaps_and_reports() {
        let mut qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
        let pid = qemu.pid().unwrap();
        let status = qemu.kill().unwrap();
        assert!(!status.success());
        assert!(reaped(pid));
        assert!(!qemu.is_running());
        assert!(qemu.kill().is_err(), "second kill must say it was already killed");
        assert!(qemu.wait_exit(Duration::ZERO).is_err());
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
        // Dropping the killed one leaves the socket that replaced its own alone.
        drop(first);
        assert!(UnixStream::connect(&path).is_ok(), "the second QEMU's socket was removed");
        drop(second);
        assert!(!path.exists(), "the socket outside the private directory was left behind");
    }

    #[test]
    fn wait_exit_reaps_a_qemu_that_quits() {
        let mut qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
        assert_eq!(qemu.wait_exit(Duration::from_millis(50)).unwrap(), None);
        let mut stream = UnixStream::connect(qemu.qmp_path()).unwrap();
        stream
            .write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"quit\"}\n")
            .unwrap();
        let status = qemu.wait_exit(Duration::MAX).unwrap().expect("QEMU exited");
        assert!(status.success(), "{status}");
        assert!(!qemu.is_running());
    }

    #[test]
    fn a_frozen_qemu_does_not_answer_until_resumed() {
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
        assert!(
            matches!(why, StartError::NoSerialLine { end: SerialWaitEnd::NoSerial, .. }),
            "{why}"
        );
        assert!(why.to_string().contains("boots no guest"), "{why}");
        let err = qemu.wait_guest_ready(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, StartError::GuestNotReady { .. }), "{err}");
        let err = qemu.find_serial_after(0, GUEST_READY).unwrap_err();
        assert!(
            matches!(err, StartError::NoSerialLine { end: SerialWaitEnd::NoSerial, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_serial_log_without_guest_is_kept_and_polled() {
        let qemu = qemu_or_skip!(QemuBuilder::new().paused(true).serial_log(true));
        // QEMU opens the file a moment after its QMP socket listens: not asserted here.
        let path = qemu.serial_path().expect("a serial log");
        assert!(path.starts_with(qemu.dir()), "{}", path.display());
        let why = qemu.wait_for_serial("NEVER-PRINTED", Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(why, StartError::NoSerialLine { end: SerialWaitEnd::Timeout(_), .. }),
            "{why}"
        );
    }

    #[test]
    fn guest_image_from_dir_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = GuestImage::from_dir(dir.path()).unwrap_err();
        assert!(matches!(&err, StartError::Guest(why) if why.contains("vmlinuz")), "{err}");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        let err = GuestImage::from_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("initramfs.gz"), "{err}");
        std::fs::write(dir.path().join("initramfs.gz"), b"i").unwrap();
        let image = GuestImage::from_dir(dir.path()).unwrap();
        assert_eq!(image.kernel, dir.path().join("vmlinuz"));
        assert_eq!(image.initrd, Some(dir.path().join("initramfs.gz")));
        assert_eq!(image.append, "console=ttyS0 quiet panic=1 no_timer_check");
    }
}
