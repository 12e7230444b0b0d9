//! [`QemuBuilder`]: which binary, which machine, and how to start it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::guest::GuestImage;
use crate::{Qemu, StartError};

/// Environment variable naming the QEMU binary [`find_qemu`] returns (and a builder without
/// [`QemuBuilder::binary`] runs); defaults to `qemu-system-x86_64` on `PATH`.
pub const QEMU_BINARY_ENV: &str = "QMP_QEMU";

const DEFAULT_BINARY: &str = "qemu-system-x86_64";
/// How long [`QemuBuilder::start`] waits for the QMP socket unless told otherwise: QEMU 7.2
/// greets in 20-40 ms here, the rest is room for a loaded machine.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Guest RAM without and with a guest kernel, in MiB.
const BARE_MEMORY_MIB: u32 = 64;
const GUEST_MEMORY_MIB: u32 = 256;
/// How many [root ports](QemuBuilder::root_ports) fit on q35's `pcie.0`: slots 02 to 1e
/// (00 is the host bridge, 01 is kept for a display, 1f holds the ICH9 functions).
pub const MAX_ROOT_PORTS: u8 = 29;

/// Finds the default QEMU binary: `$QMP_QEMU` if set, otherwise `qemu-system-x86_64` on
/// `PATH`.
///
/// # Errors
/// [`StartError::NotInstalled`], saying where it looked.
pub fn find_qemu() -> Result<PathBuf, StartError> {
    if let Some(explicit) = std::env::var_os(QEMU_BINARY_ENV) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(StartError::NotInstalled(format!(
                "${QEMU_BINARY_ENV} names {}, which is not a file",
                path.display()
            )))
        };
    }
    resolve_binary(Path::new(DEFAULT_BINARY))
}

/// `binary` itself when it is a path, else the first file of that name in a `PATH` directory.
fn resolve_binary(binary: &Path) -> Result<PathBuf, StartError> {
    let is_bare_name = binary.components().count() == 1 && !binary.has_root();
    if !is_bare_name {
        return if binary.is_file() {
            Ok(binary.to_owned())
        } else {
            Err(StartError::NotInstalled(format!("{} is not a file", binary.display())))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            let hint = if binary == Path::new(DEFAULT_BINARY) {
                format!(" (install the Debian package qemu-system-x86, or set ${QEMU_BINARY_ENV})")
            } else {
                String::new()
            };
            StartError::NotInstalled(format!("{} not found on PATH{hint}", binary.display()))
        })
}

/// How to start QEMU, like Python's `qemu.machine.QEMUMachine`.
///
/// The defaults are the smallest x86 machine that still has a PCI bus:
/// `-machine pc -accel tcg -nodefaults -nographic -display none -monitor none -serial none
/// -m 64`, plus the QMP socket. [`QemuBuilder::guest`] boots a kernel on it instead.
///
/// ```
/// use qemu_launcher::{GuestImage, QemuBuilder};
///
/// let builder = QemuBuilder::new()
///     .binary("qemu-system-x86_64") // a bare name is looked up on PATH
///     .machine("q35")
///     .memory_mib(512)
///     .paused(true)
///     .serial_log(true)
///     .guest(&GuestImage::new("/boot/vmlinuz").with_append("console=ttyS0 quiet"))
///     .args(["-smp", "2"]);
/// # drop(builder);
/// ```
#[derive(Debug, Clone)]
pub struct QemuBuilder {
    binary: Option<PathBuf>,
    machine: String,
    accel: String,
    memory_mib: Option<u32>,
    paused: bool,
    serial_log: bool,
    qmp_path: Option<PathBuf>,
    dir_in: Option<PathBuf>,
    start_timeout: Duration,
    pub(crate) guest: Option<GuestImage>,
    root_ports: u8,
    empty_cdrom: bool,
    extra_args: Vec<OsString>,
}

impl Default for QemuBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl QemuBuilder {
    /// A builder for the default machine.
    pub fn new() -> Self {
        Self {
            binary: None,
            machine: "pc".to_owned(),
            accel: "tcg".to_owned(),
            memory_mib: None,
            paused: false,
            serial_log: false,
            qmp_path: None,
            dir_in: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            guest: None,
            root_ports: 0,
            empty_cdrom: false,
            extra_args: Vec::new(),
        }
    }

    /// Runs this binary instead of [`find_qemu`]'s: a path, or a bare name looked up on
    /// `PATH` (`qemu-system-aarch64`). Another architecture needs its own
    /// [machine](QemuBuilder::machine) too: `pc` is x86's.
    #[must_use]
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// The machine type (`-machine`): `pc` by default, `q35` for PCI Express, or any type
    /// the binary lists under `-machine help`.
    #[must_use]
    pub fn machine(mut self, machine: impl Into<String>) -> Self {
        self.machine = machine.into();
        self
    }

    /// The accelerator (`-accel`): `tcg` by default. `kvm` only when asked: on these
    /// machines `/dev/kvm` exists but a nested KVM guest hangs in the firmware.
    #[must_use]
    pub fn accel(mut self, accel: impl Into<String>) -> Self {
        self.accel = accel.into();
        self
    }

    /// Guest RAM in MiB (`-m`): 64 by default, 256 when a [guest](QemuBuilder::guest) boots.
    #[must_use]
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    /// Start with the CPUs stopped (`-S`, QEMU's "prelaunch" state), which keeps an idle
    /// machine off the CPU.
    #[must_use]
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Keep the serial console in `serial.log` of the private directory, to read with
    /// [`Qemu::serial_log`] and [`Qemu::wait_for_serial`]. Always on when a
    /// [guest](QemuBuilder::guest) boots.
    #[must_use]
    pub fn serial_log(mut self, keep: bool) -> Self {
        self.serial_log = keep;
        self
    }

    /// Put the QMP socket at `path` instead of in the private directory, e.g. to start a
    /// second QEMU where a killed one listened. A socket left at `path` is replaced; the
    /// one this QEMU creates is removed when the [`Qemu`] is dropped, unless another socket
    /// has taken its place by then.
    #[must_use]
    pub fn qmp_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.qmp_path = Some(path.into());
        self
    }

    /// Create the private directory inside `parent` instead of the system's temporary
    /// directory (`$TMPDIR`, else `/tmp`).
    #[must_use]
    pub fn dir_in(mut self, parent: impl Into<PathBuf>) -> Self {
        self.dir_in = Some(parent.into());
        self
    }

    /// How long [`QemuBuilder::start`] waits for the QMP socket to accept a connection:
    /// 20 s by default.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Start with `count` empty `pcie-root-port`s on a q35 machine's `pcie.0`, `rp1` to
    /// `rp<count>` at slots 02.0 onwards (chassis 1, slot = the port's number). q35 hot-plugs
    /// a device only into a root port, and a root port cannot be hot-added: libvirt and Kata
    /// start a pool of empty ones the same way. At most [`MAX_ROOT_PORTS`]; more is
    /// [`StartError::TooManyRootPorts`] from [`QemuBuilder::start`]. The ports come before
    /// the [extra arguments](QemuBuilder::arg).
    #[must_use]
    pub fn root_ports(mut self, count: u8) -> Self {
        self.root_ports = count;
        self
    }

    /// Start with an empty CD-ROM: a `virtio-scsi-pci` controller `scsi0` on the root bus
    /// and a `scsi-cd` `cd0` on it (SCSI id 0, LUN 1) whose drive, also `cd0`, has no
    /// medium, for tests that insert, change and eject one. The controller is at slot 04.0,
    /// or in the first slot after the [root ports](QemuBuilder::root_ports) when they reach
    /// 04.0.
    #[must_use]
    pub fn empty_scsi_cdrom(mut self) -> Self {
        self.empty_cdrom = true;
        self
    }

    /// Append one command-line argument (after everything the builder sets).
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

    /// Whether the CPUs start stopped.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Resolves the binary now, so that a missing QEMU is reported before anything else.
    pub(crate) fn with_resolved_binary(mut self) -> Result<Self, StartError> {
        self.binary = Some(self.resolve()?);
        Ok(self)
    }

    fn resolve(&self) -> Result<PathBuf, StartError> {
        match &self.binary {
            Some(binary) => resolve_binary(binary),
            None => find_qemu(),
        }
    }

    /// Starts QEMU and waits until its QMP socket accepts a connection.
    ///
    /// The probe connection is closed at once; QEMU's monitor then accepts the next client
    /// and sends it a fresh greeting. A start that fails half-way kills and reaps the
    /// process and removes the private directory.
    ///
    /// # Errors
    /// [`StartError`] when the binary is missing, the process cannot be spawned, exits early,
    /// or the socket does not appear within the [start timeout](QemuBuilder::start_timeout);
    /// [`StartError::TooManyRootPorts`] before any of that.
    pub fn start(self) -> Result<Qemu, StartError> {
        if self.root_ports > MAX_ROOT_PORTS {
            return Err(StartError::TooManyRootPorts { asked: self.root_ports });
        }
        let binary = self.resolve()?;
        let mut dir = tempfile::Builder::new();
        // Private: the socket, logs and whatever a caller puts there are nobody else's.
        let private = std::fs::Permissions::from_mode(0o700);
        dir.prefix("qmp-rs-qemu.").permissions(private);
        let dir = match &self.dir_in {
            Some(parent) => dir.tempdir_in(parent),
            None => dir.tempdir(),
        }
        .map_err(StartError::Io)?;
        let qmp_path = self.qmp_path.clone().unwrap_or_else(|| dir.path().join("qmp.sock"));
        // QEMU refuses to bind over a stale socket file.
        let _ = std::fs::remove_file(&qmp_path);
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr = File::create(&stderr_path).map_err(StartError::Io)?;
        let serial_path =
            (self.serial_log || self.guest.is_some()).then(|| dir.path().join("serial.log"));

        let mut command = parent_death_guard(&binary);
        command.args(self.arguments(&qmp_path, serial_path.as_deref()));
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let child =
            command.spawn().map_err(|e| StartError::Spawn { binary: binary.clone(), source: e })?;
        // From here on, dropping `qemu` (on any error below) kills, reaps and cleans up.
        let mut qemu = Qemu::new(child, qmp_path, stderr_path, serial_path, dir);
        qemu.wait_for_socket(self.start_timeout)?;
        Ok(qemu)
    }

    /// QEMU's arguments, the binary excluded.
    fn arguments(&self, qmp_path: &Path, serial_path: Option<&Path>) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |arg: &dyn AsRef<OsStr>| args.push(arg.as_ref().to_owned());
        for arg in ["-machine", &self.machine, "-accel", &self.accel] {
            push(&arg);
        }
        for arg in ["-nodefaults", "-nographic", "-display", "none", "-monitor", "none"] {
            push(&arg);
        }
        let mut qmp = OsString::from("unix:");
        qmp.push(qmp_path);
        qmp.push(",server=on,wait=off");
        push(&"-qmp");
        push(&qmp);
        push(&"-serial");
        match serial_path {
            Some(path) => {
                let mut serial = OsString::from("file:");
                serial.push(path);
                push(&serial);
            }
            None => push(&"none"),
        }
        let default_memory = if self.guest.is_some() { GUEST_MEMORY_MIB } else { BARE_MEMORY_MIB };
        push(&"-m");
        push(&self.memory_mib.unwrap_or(default_memory).to_string());
        if let Some(image) = &self.guest {
            args.extend(image.arguments());
        }
        if self.paused {
            args.push("-S".into());
        }
        for port in 1..=self.root_ports {
            args.push("-device".into());
            let slot = port + 1;
            args.push(
                format!(
                    "pcie-root-port,id=rp{port},bus=pcie.0,chassis=1,slot={port},addr={slot:#x}"
                )
                .into(),
            );
        }
        if self.empty_cdrom {
            // Root port N sits in slot N + 1.
            let slot = self.root_ports.saturating_add(2).max(4);
            args.push("-device".into());
            args.push(format!("virtio-scsi-pci,id=scsi0,addr={slot:#x}").into());
            for arg in [
                "-drive",
                "if=none,id=cd0",
                "-device",
                "scsi-cd,drive=cd0,bus=scsi0.0,scsi-id=0,lun=1,id=cd0",
            ] {
                args.push(arg.into());
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Runs `binary` under `setpriv --pdeathsig KILL` when util-linux provides it, so QEMU dies
/// with this process even if it is killed before any destructor runs. `setpriv` execs QEMU,
/// so the child's pid is QEMU's.
///
/// The kernel sends the signal when the *thread* that spawned the child exits: keep a
/// [`Qemu`] on the thread that started it (a test body, `main`).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(builder: &QemuBuilder) -> Vec<String> {
        let serial = builder.serial_log.then_some(Path::new("/d/serial.log"));
        let args = builder.arguments(Path::new("/d/qmp.sock"), serial);
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn has_pair(args: &[String], option: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == option && w[1] == value)
    }

    #[test]
    fn the_default_machine_is_a_bare_pc_under_tcg() {
        let args = arguments(&QemuBuilder::new());
        assert!(has_pair(&args, "-machine", "pc"), "{args:?}");
        assert!(has_pair(&args, "-accel", "tcg"), "{args:?}");
        assert!(has_pair(&args, "-qmp", "unix:/d/qmp.sock,server=on,wait=off"), "{args:?}");
        assert!(has_pair(&args, "-serial", "none") && has_pair(&args, "-m", "64"), "{args:?}");
        assert!(!args.contains(&"-S".to_owned()) && !args.contains(&"-kernel".to_owned()));
    }

    #[test]
    fn options_land_on_the_command_line_and_extra_arguments_come_last() {
        let builder = QemuBuilder::new()
            .machine("q35")
            .accel("kvm")
            .memory_mib(512)
            .paused(true)
            .serial_log(true)
            .args(["-smp", "2"]);
        let args = arguments(&builder);
        assert!(has_pair(&args, "-machine", "q35") && has_pair(&args, "-accel", "kvm"));
        assert!(has_pair(&args, "-m", "512") && has_pair(&args, "-serial", "file:/d/serial.log"));
        assert!(args.contains(&"-S".to_owned()));
        assert_eq!(args[args.len() - 2..], ["-smp", "2"]);
    }

    #[test]
    fn root_ports_take_pcie0_slots_from_2_and_come_before_extra_arguments() {
        let args = arguments(&QemuBuilder::new().machine("q35").root_ports(3).arg("-smp"));
        let ports: Vec<&String> =
            args.iter().filter(|arg| arg.starts_with("pcie-root-port")).collect();
        assert_eq!(
            ports,
            [
                "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2",
                "pcie-root-port,id=rp2,bus=pcie.0,chassis=1,slot=2,addr=0x3",
                "pcie-root-port,id=rp3,bus=pcie.0,chassis=1,slot=3,addr=0x4",
            ]
        );
        assert_eq!(args.last().map(String::as_str), Some("-smp"));
        assert!(!arguments(&QemuBuilder::new()).iter().any(|arg| arg.contains("root-port")));
        let last = arguments(&QemuBuilder::new().root_ports(MAX_ROOT_PORTS));
        assert!(
            last.iter().any(|arg| arg.ends_with("id=rp29,bus=pcie.0,chassis=1,slot=29,addr=0x1e"))
        );
    }

    #[test]
    fn the_empty_cdrom_controller_takes_slot_4_or_the_first_after_the_root_ports() {
        let controller = |builder: QemuBuilder| {
            arguments(&builder.empty_scsi_cdrom())
                .into_iter()
                .find(|arg| arg.starts_with("virtio-scsi-pci"))
                .unwrap()
        };
        assert_eq!(controller(QemuBuilder::new()), "virtio-scsi-pci,id=scsi0,addr=0x4");
        assert_eq!(
            controller(QemuBuilder::new().root_ports(2)),
            "virtio-scsi-pci,id=scsi0,addr=0x4"
        );
        assert_eq!(
            controller(QemuBuilder::new().root_ports(3)),
            "virtio-scsi-pci,id=scsi0,addr=0x5"
        );
    }

    #[test]
    fn more_root_ports_than_pcie0_holds_are_refused_before_qemu_runs() {
        // A binary that does not exist: the refusal comes before the binary is looked for.
        let builder = QemuBuilder::new().binary("/nonexistent/qemu").root_ports(MAX_ROOT_PORTS + 1);
        let err = builder.start().unwrap_err();
        assert!(matches!(err, StartError::TooManyRootPorts { asked: 30 }), "{err}");
        assert_eq!(err.to_string(), "30 root ports asked, but q35's pcie.0 has room for 29");
    }

    #[test]
    fn a_guest_boots_its_kernel_with_more_memory() {
        let image = GuestImage::new("/k/vmlinuz").with_initrd("/k/initrd").with_append("quiet");
        let args = arguments(&QemuBuilder::new().serial_log(true).guest(&image));
        assert!(
            has_pair(&args, "-kernel", "/k/vmlinuz") && has_pair(&args, "-initrd", "/k/initrd")
        );
        assert!(has_pair(&args, "-append", "quiet") && has_pair(&args, "-m", "256"), "{args:?}");
        let args = arguments(&QemuBuilder::new().guest(&GuestImage::new("/k/vmlinuz")));
        assert!(!args.contains(&"-initrd".to_owned()), "{args:?}");
    }

    #[test]
    fn binaries_are_paths_or_names_on_path() {
        let err = resolve_binary(Path::new("/nonexistent/qemu-system-x86_64")).unwrap_err();
        assert!(matches!(err, StartError::NotInstalled(_)), "{err}");
        let err = resolve_binary(Path::new("qemu-system-no-such-arch")).unwrap_err();
        assert!(err.to_string().contains("qemu-system-no-such-arch not found on PATH"), "{err}");
        // `sh` is on every PATH this runs on.
        assert!(resolve_binary(Path::new("sh")).unwrap().is_absolute());
    }
}
