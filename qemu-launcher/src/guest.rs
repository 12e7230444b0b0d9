//! A tiny Linux guest for hotplug tests, and reading what it prints on its serial console.
//!
//! The guest is Debian's cloud kernel with a busybox initramfs, built (and cached) by
//! `scripts/build-guest`. Its `/init` loads the virtio drivers, prints [`GUEST_READY`] on
//! ttyS0, then reports every NIC and virtio disk that comes or goes, one line per change:
//!
//! ```text
//! GUEST-READY 2.21s
//! GUEST: +eth0 pci=0000:00:05.0
//! GUEST: +vda pci=0000:00:06.0
//! GUEST: -eth0 pci=0000:00:05.0
//! ```
//!
//! The `pci=` address is the PCI function behind the device (`?` when it cannot be told);
//! a removal repeats the address seen when the device was added. Devices present at boot
//! are reported before [`GUEST_READY`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Qemu, QemuBuilder, REQUIRE_QEMU_ENV, StartError, qemu_required};

/// Environment variable naming a directory that holds `vmlinuz` and `initramfs.gz`; when set,
/// [`GuestImage::locate`] uses it instead of running `scripts/build-guest`.
pub const GUEST_DIR_ENV: &str = "QMP_GUEST_DIR";
/// The marker the guest prints on its serial console once it watches for hotplug.
pub const GUEST_READY: &str = "GUEST-READY";
/// How long [`Qemu::start_guest`] waits for [`GUEST_READY`]: about 3 s is usual under TCG,
/// the rest is room for a loaded CI machine.
pub const GUEST_READY_TIMEOUT: Duration = Duration::from_secs(60);

const KERNEL_FILE: &str = "vmlinuz";
const INITRD_FILE: &str = "initramfs.gz";
const KERNEL_CMDLINE: &str = "console=ttyS0 quiet panic=1";
const SERIAL_POLL: Duration = Duration::from_millis(20);
/// How much of the serial log an error message repeats.
const LOG_TAIL_BYTES: usize = 3000;

/// The kernel and initramfs of the test guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`vmlinuz`), passed as `-kernel`.
    pub kernel: PathBuf,
    /// The initramfs (`initramfs.gz`), passed as `-initrd`.
    pub initrd: PathBuf,
}

impl GuestImage {
    /// Uses `vmlinuz` and `initramfs.gz` in `dir`.
    ///
    /// # Errors
    /// When either file is missing.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, String> {
        let dir = dir.as_ref();
        let image = Self { kernel: dir.join(KERNEL_FILE), initrd: dir.join(INITRD_FILE) };
        for file in [&image.kernel, &image.initrd] {
            if !file.is_file() {
                return Err(format!("guest file {} is missing", file.display()));
            }
        }
        Ok(image)
    }

    /// Finds the test guest: the directory in `$QMP_GUEST_DIR` if set, otherwise the one
    /// printed (last line of stdout) by `scripts/build-guest`, which builds it on first use
    /// and then answers from its cache in under a second.
    ///
    /// The script runs at most once per process; later calls return the same answer,
    /// including the same error.
    ///
    /// # Errors
    /// A human-readable reason: a bad `$QMP_GUEST_DIR`, or the script's failure with its
    /// stderr (for instance that `busybox-static` is not installed).
    pub fn locate() -> Result<Self, String> {
        static BUILT: OnceLock<Result<GuestImage, String>> = OnceLock::new();
        if let Some(dir) = std::env::var_os(GUEST_DIR_ENV) {
            return Self::from_dir(&dir).map_err(|e| format!("${GUEST_DIR_ENV}: {e}"));
        }
        BUILT.get_or_init(run_build_script).clone()
    }
}

/// `scripts/build-guest` of this repository.
fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join("build-guest")
}

fn run_build_script() -> Result<GuestImage, String> {
    let script = build_script();
    let output = Command::new(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            stderr.trim_end()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    if dir.is_empty() {
        return Err(format!("{} printed no directory; stderr: {}", script.display(), stderr));
    }
    GuestImage::from_dir(dir).map_err(|e| format!("{} printed {dir}, but {e}", script.display()))
}

impl QemuBuilder {
    /// Boots `image` instead of an empty machine: `-kernel`, `-initrd`,
    /// `-append "console=ttyS0 quiet panic=1"`, `-m 256`, `-no-reboot`, and the serial
    /// console in `serial.log` of QEMU's temporary directory (read it with
    /// [`Qemu::serial_log`] and [`Qemu::wait_for_serial`]) instead of `-serial none -m 64`.
    ///
    /// The CPUs run unless [`QemuBuilder::paused`] is also set. [`QemuBuilder::start`] does
    /// not wait for the guest; [`Qemu::wait_guest_ready`] does.
    #[must_use]
    pub fn guest(mut self, image: &GuestImage) -> Self {
        self.guest = Some(image.clone());
        self
    }

    /// The QEMU arguments that boot the guest, given the serial log path.
    pub(crate) fn guest_args(image: &GuestImage, serial: &Path) -> Vec<std::ffi::OsString> {
        let mut serial_arg = std::ffi::OsString::from("file:");
        serial_arg.push(serial);
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        args.extend(["-m", "256", "-no-reboot", "-serial"].map(Into::into));
        args.push(serial_arg);
        args.push("-kernel".into());
        args.push(image.kernel.clone().into());
        args.push("-initrd".into());
        args.push(image.initrd.clone().into());
        args.push("-append".into());
        args.push(KERNEL_CMDLINE.into());
        args
    }
}

/// A complete line found on the guest's serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    /// The line, without its line ending (`\r\n` on a serial console).
    pub line: String,
    /// The byte offset in the serial log just past this line: pass it to
    /// [`Qemu::wait_for_serial_after`] to wait for something printed later.
    pub end: usize,
}

impl Qemu {
    /// Starts the test guest ([`GuestImage::locate`]) and waits up to
    /// [`GUEST_READY_TIMEOUT`] until it prints [`GUEST_READY`].
    ///
    /// # Errors
    /// [`StartError::NotInstalled`] without QEMU, [`StartError::Guest`] when the guest image
    /// cannot be found or built, [`StartError::GuestNotReady`] when it does not come up, and
    /// the errors of [`QemuBuilder::start`].
    pub fn start_guest() -> Result<Self, StartError> {
        Self::start_guest_with(QemuBuilder::new())
    }

    /// [`Qemu::start_guest`] with a custom builder (extra devices, a fixed socket path...).
    /// When the builder is [paused](QemuBuilder::paused) this does not wait for the guest:
    /// send `cont`, then call [`Qemu::wait_guest_ready`].
    ///
    /// # Errors
    /// As [`Qemu::start_guest`].
    pub fn start_guest_with(builder: QemuBuilder) -> Result<Self, StartError> {
        // A missing QEMU is reported as such before any time goes into the guest image.
        let builder = match builder.binary {
            Some(_) => builder,
            None => builder.binary(crate::find_qemu().map_err(StartError::NotInstalled)?),
        };
        let image = GuestImage::locate().map_err(StartError::Guest)?;
        let paused = builder.paused;
        let qemu = builder.guest(&image).start()?;
        if !paused {
            qemu.wait_guest_ready(GUEST_READY_TIMEOUT)?;
        }
        Ok(qemu)
    }

    /// Starts the test guest for a test: `None` (with a printed reason) when QEMU is not
    /// installed or the guest image cannot be had, and `QMP_REQUIRE_QEMU` is not `1`.
    ///
    /// # Panics
    /// When QEMU or the guest image is missing and `QMP_REQUIRE_QEMU=1`, and whenever QEMU
    /// or the guest fails to start: a broken guest is a test failure, never a skip.
    pub fn start_guest_or_skip() -> Option<Self> {
        Self::start_guest_or_skip_with(QemuBuilder::new())
    }

    /// [`Qemu::start_guest_or_skip`] with a custom builder.
    ///
    /// # Panics
    /// As [`Qemu::start_guest_or_skip`].
    pub fn start_guest_or_skip_with(builder: QemuBuilder) -> Option<Self> {
        match Self::start_guest_with(builder) {
            Ok(qemu) => Some(qemu),
            Err(StartError::NotInstalled(why) | StartError::Guest(why)) if !qemu_required() => {
                eprintln!("SKIPPED: {why}; set {REQUIRE_QEMU_ENV}=1 to make this a failure");
                None
            }
            Err(e) => {
                panic!("cannot start the test guest ({REQUIRE_QEMU_ENV}={}): {e}", qemu_required())
            }
        }
    }

    /// The serial console log, when the machine boots a guest.
    pub fn serial_path(&self) -> Option<&Path> {
        self.serial_path.as_deref()
    }

    /// Everything the guest has printed on its serial console so far (invalid UTF-8
    /// replaced); empty when the machine boots no guest.
    pub fn serial_log(&self) -> String {
        String::from_utf8_lossy(&self.serial_bytes()).into_owned()
    }

    /// Waits until the guest has printed [`GUEST_READY`] (at once if it already has).
    ///
    /// # Errors
    /// [`StartError::GuestNotReady`], with the serial log and QEMU's stderr.
    pub fn wait_guest_ready(&self, timeout: Duration) -> Result<SerialLine, StartError> {
        let start = Instant::now();
        self.poll_serial(0, GUEST_READY, timeout).map_err(|()| StartError::GuestNotReady {
            waited: start.elapsed(),
            log: self.serial_log(),
            stderr: self.stderr(),
        })
    }

    /// Waits for the first complete serial line containing `needle` and returns it without
    /// its line ending. The log is polled every 20 ms.
    ///
    /// # Errors
    /// On timeout, or when QEMU exits first: a message with the end of the serial log and
    /// QEMU's stderr.
    pub fn wait_for_serial(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_serial_after(0, needle, timeout).map(|found| found.line)
    }

    /// Like [`Qemu::wait_for_serial`], but only for lines that start at byte `offset` of the
    /// serial log or later, so a test can wait for the *next* `GUEST: -eth0`: pass the
    /// [`SerialLine::end`] of an earlier match, or [`Qemu::serial_len`] for "from now on".
    ///
    /// # Errors
    /// As [`Qemu::wait_for_serial`].
    pub fn wait_for_serial_after(
        &self,
        offset: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<SerialLine, String> {
        self.poll_serial(offset, needle, timeout).map_err(|()| {
            let log = self.serial_bytes();
            let tail = log.get(offset.max(log.len().saturating_sub(LOG_TAIL_BYTES))..);
            let tail = String::from_utf8_lossy(tail.unwrap_or_default());
            let mut message = if self.serial_path.is_none() {
                format!("no serial line containing {needle:?}: this QEMU boots no guest")
            } else if self.has_exited() {
                format!("QEMU exited before the guest printed a line containing {needle:?}")
            } else {
                format!("no serial line containing {needle:?} within {timeout:?}")
            };
            let _ = write!(
                message,
                "\n--- serial log from byte {offset} (last {LOG_TAIL_BYTES} bytes at most) ---\n\
                 {tail}\n--- QEMU stderr ---\n{}",
                self.stderr()
            );
            message
        })
    }

    /// The current length of the serial log in bytes: a starting point for
    /// [`Qemu::wait_for_serial_after`].
    pub fn serial_len(&self) -> usize {
        self.serial_path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX))
    }

    fn serial_bytes(&self) -> Vec<u8> {
        self.serial_path.as_ref().and_then(|p| std::fs::read(p).ok()).unwrap_or_default()
    }

    /// Polls for a complete line at or after `offset` that contains `needle`.
    fn poll_serial(
        &self,
        offset: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<SerialLine, ()> {
        if self.serial_path.is_none() {
            return Err(());
        }
        let deadline = Instant::now() + timeout;
        let mut pos = offset; // start of the first line not yet looked at
        loop {
            // Checked before reading, so a line printed just before QEMU exited still counts.
            let exited = self.has_exited();
            let log = self.serial_bytes();
            while let Some(newline) =
                log.get(pos..).and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            {
                let end = pos + newline + 1;
                let line = String::from_utf8_lossy(&log[pos..pos + newline]);
                let line = line.trim_end_matches('\r');
                pos = end;
                if line.contains(needle) {
                    return Ok(SerialLine { line: line.to_owned(), end });
                }
            }
            if exited || Instant::now() >= deadline {
                return Err(());
            }
            std::thread::sleep(SERIAL_POLL);
        }
    }

    /// Whether the QEMU process is gone or a zombie, without needing `&mut self`.
    fn has_exited(&self) -> bool {
        let Some(pid) = self.pid() else { return true };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }
}

/// Starts the test guest or returns from the calling test (see
/// [`Qemu::start_guest_or_skip`]).
///
/// `guest_or_skip!()` boots the default guest machine; `guest_or_skip!(builder)` adds the
/// guest to a custom builder.
#[macro_export]
macro_rules! guest_or_skip {
    () => {
        $crate::guest_or_skip!($crate::QemuBuilder::new())
    };
    ($builder:expr) => {
        match $crate::Qemu::start_guest_or_skip_with($builder) {
            Some(qemu) => qemu,
            None => return,
        }
    };
}
