//! A tiny Linux guest for hotplug tests, and reading what it prints on its serial console.
//!
//! The guest is Debian's cloud kernel with a busybox initramfs, built (and cached) by
//! `scripts/build-guest`. Its `/init` loads the virtio (net, blk, SCSI), SCSI disk and
//! CD-ROM drivers (no IDE: use `scsi-cd` for a CD-ROM), prints [`GUEST_READY`] on ttyS0, then reports every NIC and block device (`vd*`,
//! `sd*`, `sr*`, `hd*`) that comes or goes, one line per change, and each block device's size
//! (512-byte sectors) and medium when it appears and whenever they change:
//!
//! ```text
//! GUEST-READY 2.21s
//! GUEST: +eth0 pci=0000:00:05.0
//! GUEST: +vda pci=0000:00:06.0
//! BLOCK vda sectors=8192 media=1
//! GUEST: -eth0 pci=0000:00:05.0
//! ```
//!
//! The `pci=` address is the nearest PCI function above the device (a SCSI disk names its
//! controller; `?` when it cannot be told); a removal repeats the address seen when the
//! device was added. `media=0` is an empty removable drive. Devices present at boot
//! are reported before [`GUEST_READY`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::SerialWaitEnd;
use crate::{Qemu, QemuBuilder, StartError};

/// Environment variable naming a directory that holds `vmlinuz` and `initramfs.gz`; when set,
/// [`GuestImage::locate`] uses it instead of running `scripts/build-guest`.
pub const GUEST_DIR_ENV: &str = "QMP_GUEST_DIR";
/// The marker the test guest prints on its serial console once it watches for hotplug.
pub const GUEST_READY: &str = "GUEST-READY";
/// How long [`Qemu::start_guest`] waits for [`GUEST_READY`]: about 3 s is usual under TCG,
/// the rest is room for a loaded CI machine.
pub const GUEST_READY_TIMEOUT: Duration = Duration::from_secs(60);

const KERNEL_FILE: &str = "vmlinuz";
const INITRD_FILE: &str = "initramfs.gz";
/// The kernel command line of [`GuestImage::new`]: a console on the serial port.
const DEFAULT_APPEND: &str = "console=ttyS0";
/// The test guest's: quiet, a panic ends QEMU (with `-no-reboot`) instead of hanging, and
/// no timer check: under TCG on a loaded machine the kernel's check of the IO-APIC timer
/// misses its ticks and panics ("IO-APIC + timer doesn't work!"), seen in a test run here.
const TEST_GUEST_APPEND: &str = "console=ttyS0 quiet panic=1 no_timer_check";
const SERIAL_POLL: Duration = Duration::from_millis(20);
/// How much of the serial log an error message repeats.
pub(crate) const LOG_TAIL_BYTES: usize = 3000;

/// A Linux kernel to boot directly (`-kernel`, `-initrd`, `-append`, `-no-reboot`), such as
/// the test guest of [`GuestImage::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuestImage {
    /// The kernel, passed as `-kernel`.
    pub kernel: PathBuf,
    /// The initramfs, passed as `-initrd`.
    pub initrd: Option<PathBuf>,
    /// The kernel command line, passed as `-append`.
    pub append: String,
}

impl GuestImage {
    /// Boots `kernel` without an initramfs, its console on the serial port
    /// (`console=ttyS0`).
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self { kernel: kernel.into(), initrd: None, append: DEFAULT_APPEND.to_owned() }
    }

    /// Adds an initramfs.
    #[must_use]
    pub fn with_initrd(mut self, initrd: impl Into<PathBuf>) -> Self {
        self.initrd = Some(initrd.into());
        self
    }

    /// Replaces the kernel command line.
    #[must_use]
    pub fn with_append(mut self, append: impl Into<String>) -> Self {
        self.append = append.into();
        self
    }

    /// The test guest in `dir`: `vmlinuz` and `initramfs.gz`, with
    /// `console=ttyS0 quiet panic=1 no_timer_check`.
    ///
    /// # Errors
    /// [`StartError::Guest`] when either file is missing.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, StartError> {
        test_guest_in(dir.as_ref()).map_err(StartError::Guest)
    }

    /// Finds the test guest (a Debian kernel and a busybox initramfs that report hotplug on
    /// the serial console): the directory in `$QMP_GUEST_DIR` if set, otherwise the one
    /// printed (last line of stdout) by `scripts/build-guest`, which builds it into
    /// `~/.cache/qmp-rs/guest` on first use and then answers from that cache in under a
    /// second.
    ///
    /// The script runs at most once per process; later calls return the same answer,
    /// including the same failure.
    ///
    /// # Errors
    /// [`StartError::Guest`]: a bad `$QMP_GUEST_DIR`, or the script's failure with its
    /// stderr (for instance that `busybox-static` is not installed).
    pub fn locate() -> Result<Self, StartError> {
        static BUILT: OnceLock<Result<GuestImage, String>> = OnceLock::new();
        if let Some(dir) = std::env::var_os(GUEST_DIR_ENV) {
            return test_guest_in(Path::new(&dir))
                .map_err(|e| StartError::Guest(format!("${GUEST_DIR_ENV}: {e}")));
        }
        BUILT.get_or_init(run_build_script).clone().map_err(StartError::Guest)
    }

    /// The QEMU arguments that boot this image.
    pub(crate) fn arguments(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-no-reboot".into(), "-kernel".into()];
        args.push(self.kernel.clone().into());
        if let Some(initrd) = &self.initrd {
            args.push("-initrd".into());
            args.push(initrd.clone().into());
        }
        args.push("-append".into());
        args.push(self.append.clone().into());
        args
    }
}

/// The test guest's files in `dir`, or which one is missing.
fn test_guest_in(dir: &Path) -> Result<GuestImage, String> {
    let (kernel, initrd) = (dir.join(KERNEL_FILE), dir.join(INITRD_FILE));
    for file in [&kernel, &initrd] {
        if !file.is_file() {
            return Err(format!("guest file {} is missing", file.display()));
        }
    }
    Ok(GuestImage::new(kernel).with_initrd(initrd).with_append(TEST_GUEST_APPEND))
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
    test_guest_in(Path::new(dir))
        .map_err(|e| format!("{} printed {dir}, but {e}", script.display()))
}

impl QemuBuilder {
    /// Boots `image` instead of an empty machine: `-kernel`, `-initrd`, `-append`,
    /// `-no-reboot`, 256 MiB unless [`QemuBuilder::memory_mib`] says otherwise, and the
    /// serial console in `serial.log` of the private directory (read it with
    /// [`Qemu::serial_log`] and [`Qemu::wait_for_serial`]).
    ///
    /// The CPUs run unless [`QemuBuilder::paused`] is also set. [`QemuBuilder::start`] does
    /// not wait for the guest; [`Qemu::wait_guest_ready`] does.
    #[must_use]
    pub fn guest(mut self, image: &GuestImage) -> Self {
        self.guest = Some(image.clone());
        self
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
        let builder = builder.with_resolved_binary()?;
        let image = GuestImage::locate()?;
        let paused = builder.is_paused();
        let qemu = builder.guest(&image).start()?;
        if !paused {
            qemu.wait_guest_ready(GUEST_READY_TIMEOUT)?;
        }
        Ok(qemu)
    }

    /// The serial console log, when the machine boots a guest or keeps a
    /// [serial log](QemuBuilder::serial_log).
    pub fn serial_path(&self) -> Option<&Path> {
        self.serial_path.as_deref()
    }

    /// Everything the guest has printed on its serial console so far (invalid UTF-8
    /// replaced); empty when the machine keeps no serial log.
    pub fn serial_log(&self) -> String {
        String::from_utf8_lossy(&self.serial_bytes()).into_owned()
    }

    /// Waits until the guest has printed [`GUEST_READY`] (at once if it already has).
    ///
    /// # Errors
    /// [`StartError::GuestNotReady`], with the serial log and QEMU's stderr.
    pub fn wait_guest_ready(&self, timeout: Duration) -> Result<SerialLine, StartError> {
        let start = Instant::now();
        self.poll_serial(0, GUEST_READY, timeout).map_err(|_| StartError::GuestNotReady {
            waited: start.elapsed(),
            log: self.serial_log(),
            stderr: self.stderr(),
        })
    }

    /// Waits for the first complete serial line containing `needle` and returns it without
    /// its line ending. The log is polled every 20 ms.
    ///
    /// # Errors
    /// [`StartError::NoSerialLine`] on timeout, when QEMU exits first, or when this machine
    /// keeps no serial log; it carries the end of the log and QEMU's stderr.
    pub fn wait_for_serial(&self, needle: &str, timeout: Duration) -> Result<String, StartError> {
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
    ) -> Result<SerialLine, StartError> {
        self.poll_serial(offset, needle, timeout)
            .map_err(|end| self.no_serial_line(offset, needle, end))
    }

    /// Looks once, without waiting, for a complete serial line at or after byte `offset`
    /// that contains `needle`: `Ok(None)` when there is none yet. For callers that wait in
    /// their own way, such as an async runtime's timer, and ask again until an answer
    /// comes; [`Qemu::wait_for_serial_after`] is the blocking wait.
    ///
    /// # Errors
    /// [`StartError::NoSerialLine`] when the line can no longer come: QEMU has exited (the
    /// log was read once more after it did), or the machine keeps no serial log.
    pub fn find_serial_after(
        &self,
        offset: usize,
        needle: &str,
    ) -> Result<Option<SerialLine>, StartError> {
        match self.scan_serial(offset, needle) {
            Ok(Scan::Found(line)) => Ok(Some(line)),
            Ok(Scan::NotYet { .. }) => Ok(None),
            Err(end) => Err(self.no_serial_line(offset, needle, end)),
        }
    }

    /// The error for a wait from `offset` for `needle` that ended with `end`.
    fn no_serial_line(&self, offset: usize, needle: &str, end: SerialWaitEnd) -> StartError {
        let log = self.serial_bytes();
        let tail = log.get(offset.max(log.len().saturating_sub(LOG_TAIL_BYTES))..);
        StartError::NoSerialLine {
            needle: needle.to_owned(),
            end,
            offset,
            log_tail: String::from_utf8_lossy(tail.unwrap_or_default()).into_owned(),
            stderr: self.stderr(),
        }
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
    ) -> Result<SerialLine, SerialWaitEnd> {
        // A timeout too large for the clock waits without end.
        let deadline = Instant::now().checked_add(timeout);
        let mut pos = offset; // start of the first line not yet looked at
        loop {
            match self.scan_serial(pos, needle)? {
                Scan::Found(line) => return Ok(line),
                Scan::NotYet { next } => pos = next,
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(SerialWaitEnd::Timeout(timeout));
            }
            std::thread::sleep(SERIAL_POLL);
        }
    }

    /// One look at the complete lines from byte `from` on for one containing `needle`.
    fn scan_serial(&self, from: usize, needle: &str) -> Result<Scan, SerialWaitEnd> {
        if self.serial_path.is_none() {
            return Err(SerialWaitEnd::NoSerial);
        }
        // Checked before reading, so a line printed just before QEMU exited still counts.
        let exited = self.has_exited();
        let log = self.serial_bytes();
        let mut pos = from;
        while let Some(newline) =
            log.get(pos..).and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let end = pos + newline + 1;
            let line = String::from_utf8_lossy(&log[pos..pos + newline]);
            let line = line.trim_end_matches('\r');
            pos = end;
            if line.contains(needle) {
                return Ok(Scan::Found(SerialLine { line: line.to_owned(), end }));
            }
        }
        if exited { Err(SerialWaitEnd::Exited) } else { Ok(Scan::NotYet { next: pos }) }
    }
}

/// What one look at the serial log found.
enum Scan {
    Found(SerialLine),
    /// Not yet; the complete lines before byte `next` need no second look.
    NotYet {
        next: usize,
    },
}
