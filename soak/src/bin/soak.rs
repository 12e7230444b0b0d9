//! `soak [--minutes N] [--seed S] [--max-devices D] [--machine pc|q35]`: random NIC and disk
//! hot-adds and hot-removes (disks from files, a tmpfs, a loop block device, NBD over unix and
//! TCP, and descriptors the caller opened) against a real QEMU running the test guest, on
//! `pc` (bus 0) or `q35` (a pool of empty root ports), with faults injected at random
//! moments (QEMU stopped and continued, the client killed mid-operation, the connection
//! dropped, the VM paused, the filesystem holding an image filled). After every step the
//! soak recovers the way a VM manager would (reconnect, `cont`, run unfinished removals
//! again, `leftovers()` and `clean_leftovers()`), then checks QEMU's whole state and the
//! guest's view with [`soak::invariants`]. A violation stops the soak, status 1, printing
//! the seed. Run as root (taps, loop devices, a tmpfs mount).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hostdev::tap::Tap;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qemu_launcher::{Qemu, QemuBuilder};
use qmp_client::Client;
use qmp_hotplug::{
    DeviceKind, DiskSource, DiskSpec, Error, Hotplug, NbdExport, NbdServer, NicSpec, RemoveOptions,
};
use soak::Rng;
use soak::invariants::{self, Baseline, State};

/// This soak's taps are `sk<pid>t<n>`: two soaks on one host never count each other's.
const TAP_PREFIX_ENV: &str = "QMP_SOAK_TAP_PREFIX";
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
const UNPLUG_WAIT: Duration = Duration::from_secs(15);
const GUEST_SETTLES: Duration = Duration::from_secs(20);
const IMAGE_SIZE: u64 = 16 << 20;
const NO_VHOST: &[OwnedFd] = &[];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    None,
    FreezeQemu,
    KillClient,
    DropConnection,
    PauseVm,
    FillFilesystem,
}

const FAULTS: [Fault; 6] = [
    Fault::None,
    Fault::FreezeQemu,
    Fault::KillClient,
    Fault::DropConnection,
    Fault::PauseVm,
    Fault::FillFilesystem,
];

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::FreezeQemu => "sigstop-qemu",
            Self::KillClient => "kill-client",
            Self::DropConnection => "drop-connection",
            Self::PauseVm => "pause-vm",
            Self::FillFilesystem => "fill-filesystem",
        })
    }
}

/// Where a disk's image comes from; each is used by one disk at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    File(PathBuf),
    OnTmpfs(PathBuf),
    Loop(PathBuf),
    Nbd(PathBuf),
    NbdTcp(u16),
    /// An image this process opens and hands over (`DiskSource::Fd`).
    CallerFd(PathBuf),
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::OnTmpfs(_) => "tmpfs-file",
            Self::Loop(_) => "loop-blockdev",
            Self::Nbd(_) => "nbd-unix",
            Self::NbdTcp(_) => "nbd-tcp",
            Self::CallerFd(_) => "caller-fd",
        }
    }

    fn disk_source(&self) -> DiskSource {
        match self {
            Self::File(path) | Self::OnTmpfs(path) | Self::Loop(path) => {
                DiskSource::Path(path.clone())
            }
            Self::Nbd(socket) => {
                DiskSource::Nbd(NbdExport::new(NbdServer::Unix(socket.clone())).with_export("exp0"))
            }
            Self::NbdTcp(port) => DiskSource::Nbd(
                NbdExport::new(NbdServer::Tcp { host: "127.0.0.1".into(), port: *port })
                    .with_export("exp0"),
            ),
            Self::CallerFd(_) => DiskSource::Fd,
        }
    }

    /// The descriptor the caller hands over with the spec, for `CallerFd`.
    fn open(&self) -> Result<Option<OwnedFd>, Error> {
        match self {
            Self::CallerFd(path) => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(|file| Some(file.into()))
                .map_err(|error| {
                    Error::InvalidSpec(format!("cannot open {}: {error}", path.display()))
                }),
            _ => Ok(None),
        }
    }

    /// How the child process is told (`child add-disk NAME SOURCE`).
    fn arg(&self) -> String {
        match self {
            Self::File(path) | Self::OnTmpfs(path) | Self::Loop(path) => {
                format!("path:{}", path.display())
            }
            Self::Nbd(socket) => format!("nbd:{}", socket.display()),
            Self::NbdTcp(port) => format!("nbd-tcp:{port}"),
            Self::CallerFd(path) => format!("fd:{}", path.display()),
        }
    }

    fn from_arg(arg: &str) -> Option<Self> {
        let (kind, value) = arg.split_once(':')?;
        match kind {
            "path" => Some(Self::File(value.into())),
            "nbd" => Some(Self::Nbd(value.into())),
            "nbd-tcp" => value.parse().ok().map(Self::NbdTcp),
            "fd" => Some(Self::CallerFd(value.into())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    AddNic { name: String, queues: usize },
    AddDisk { name: String, source: usize },
    Del { id: String },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Self::AddNic { .. } => "add-nic",
            Self::AddDisk { .. } => "add-disk",
            Self::Del { id } if id.starts_with("nic") => "del-nic",
            Self::Del { .. } => "del-disk",
        }
    }
}

/// The host side the soak owns: a work directory, images, a tmpfs, a loop device, an NBD
/// server. Dropping it undoes each.
struct Host {
    dir: tempfile::TempDir,
    sources: Vec<Source>,
    tmpfs: Option<PathBuf>,
    loop_device: Option<PathBuf>,
    nbd_servers: Vec<std::process::Child>,
}

impl Host {
    fn new() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("qmp-soak").tempdir()?;
        let mut host = Self {
            dir,
            sources: Vec::new(),
            tmpfs: None,
            loop_device: None,
            nbd_servers: Vec::new(),
        };
        for index in 0..3 {
            let path = host.image(&format!("file{index}.img"))?;
            host.sources.push(Source::File(path));
        }
        let mount_point = host.dir.path().join("tmpfs");
        std::fs::create_dir(&mount_point)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "qmp-soak"])
            .arg(&mount_point)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            host.tmpfs = Some(mount_point.clone());
            let image = mount_point.join("image.img");
            std::fs::File::create(&image)?.set_len(IMAGE_SIZE)?;
            host.sources.push(Source::OnTmpfs(image));
        } else {
            eprintln!("soak: no tmpfs (mount failed): the fill-filesystem fault is skipped");
        }
        let backing = host.image("loop.img")?;
        match Command::new("losetup").arg("--find").arg("--show").arg(&backing).output() {
            Ok(out) if out.status.success() => {
                let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                host.loop_device = Some(device.clone());
                host.sources.push(Source::Loop(device));
            }
            _ => eprintln!("soak: no loop device: block-device disks are skipped"),
        }
        let exported = host.image("nbd.img")?;
        let socket = host.dir.path().join("nbd.sock");
        let unix =
            host.start_nbd(&["-k".as_ref(), socket.as_os_str()], &exported, || socket.exists());
        if unix {
            host.sources.push(Source::Nbd(socket));
        }
        let exported = host.image("nbd-tcp.img")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let port_arg = port.to_string();
        let reachable = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let tcp = host.start_nbd(
            &["-b".as_ref(), "127.0.0.1".as_ref(), "-p".as_ref(), port_arg.as_ref()],
            &exported,
            reachable,
        );
        if tcp {
            host.sources.push(Source::NbdTcp(port));
        }
        let handed_over = host.image("fd.img")?;
        host.sources.push(Source::CallerFd(handed_over));
        Ok(host)
    }

    /// Starts a `qemu-nbd` serving `image` as `exp0` where `listen` says, and waits (up to
    /// 10 s) until `ready`; `false` (with a note) when it cannot.
    fn start_nbd(
        &mut self,
        listen: &[&std::ffi::OsStr],
        image: &Path,
        ready: impl Fn() -> bool,
    ) -> bool {
        let nbd = Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "exp0", "--persistent", "--shared=4"])
            .args(listen)
            .arg(image)
            .stdout(Stdio::null())
            .spawn();
        match nbd {
            Ok(child) => {
                self.nbd_servers.push(child);
                let start = Instant::now();
                while !ready() {
                    if start.elapsed() > Duration::from_secs(10) {
                        eprintln!(
                            "soak: qemu-nbd {listen:?} did not come up: its disks are skipped"
                        );
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                true
            }
            Err(error) => {
                eprintln!("soak: no qemu-nbd ({error}): NBD disks are skipped");
                false
            }
        }
    }

    fn image(&self, name: &str) -> std::io::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::File::create(&path)?.set_len(IMAGE_SIZE)?;
        Ok(path)
    }

    /// Fills the tmpfs with a file until it is full; returns it (remove it to undo).
    fn fill_tmpfs(&self) -> Option<PathBuf> {
        use std::io::Write;
        let filler = self.tmpfs.as_ref()?.join("filler");
        let mut file = std::fs::File::create(&filler).ok()?;
        let chunk = vec![0x5a_u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        Some(filler)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for mut nbd in self.nbd_servers.drain(..) {
            let _ = nbd.kill();
            let _ = nbd.wait();
        }
        if let Some(device) = &self.loop_device {
            let _ = Command::new("losetup").arg("-d").arg(device).status();
        }
        if let Some(mount_point) = &self.tmpfs {
            let _ = Command::new("umount").arg(mount_point).status();
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    steps: u64,
    ops: BTreeMap<(&'static str, String), u64>,
    faults: BTreeMap<Fault, u64>,
    sources: BTreeMap<&'static str, u64>,
    recovered: BTreeMap<&'static str, u64>,
}

struct Soak {
    rng: Rng,
    seed: u64,
    qemu: Qemu,
    host: Host,
    hotplug: Option<Hotplug>,
    baseline: Baseline,
    /// Which source each disk name uses; freed once QEMU no longer has the disk.
    disk_sources: BTreeMap<String, usize>,
    next_name: u64,
    max_devices: usize,
    tally: Tally,
}

/// The outcome's kind, for the tally: `added`, `removed`, `UnplugPending`, `Client::Timeout`...
fn outcome_of(result: &Result<String, Error>) -> String {
    match result {
        Ok(outcome) if outcome.starts_with("child finished") => {
            outcome.replace("exit status: ", "exit ").replace("child finished first", "child done")
        }
        Ok(outcome) if outcome.starts_with("child killed") => "child killed".into(),
        Ok(outcome) => outcome.split(' ').take(1).collect(),
        Err(error) => {
            let text = format!("{error:?}");
            let variant = text.split(['(', ' ', '{']).next().unwrap_or("?").to_owned();
            match error {
                Error::Client(inner) => {
                    let inner = format!("{inner:?}");
                    format!("Client::{}", inner.split(['(', ' ', '{']).next().unwrap_or("?"))
                }
                _ => variant,
            }
        }
    }
}

async fn connect(path: &Path) -> Result<Hotplug, String> {
    let start = Instant::now();
    loop {
        match Client::connect(path).await {
            Ok(client) => {
                return Ok(Hotplug::new(client)
                    .with_operation_timeout(OPERATION_TIMEOUT)
                    .with_rollback_budget(OPERATION_TIMEOUT));
            }
            Err(error) if start.elapsed() > Duration::from_secs(30) => {
                return Err(format!("cannot reconnect: {error}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The prefix of this soak's tap names: `sk<pid>t`, from the soak process (a child it
/// starts is told through the environment).
fn tap_prefix() -> String {
    std::env::var(TAP_PREFIX_ENV).unwrap_or_else(|_| format!("sk{}t", std::process::id()))
}

async fn run_op(hotplug: &Hotplug, op: &Op, sources: &[Source]) -> Result<String, Error> {
    match op {
        Op::AddNic { name, queues } => {
            let tap = Tap::open(&format!("{}%d", tap_prefix()), *queues).map_err(Error::Open)?;
            let spec = NicSpec { queues: *queues, ..NicSpec::new(name.clone()) };
            let report = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await?;
            Ok(format!("{} {}", report.outcome, report.id))
        }
        Op::AddDisk { name, source } => {
            let source = &sources[*source];
            let spec = DiskSpec::new(name.clone(), source.disk_source());
            let fd = source.open()?;
            let report = hotplug.add_disk(&spec, fd.as_ref().map(AsFd::as_fd)).await?;
            Ok(format!("{} {}", report.outcome, report.id))
        }
        Op::Del { id } => {
            let options = RemoveOptions::new(UNPLUG_WAIT).missing_ok(true);
            let outcome = if id.starts_with("nic") {
                hotplug.del_nic(id, &options).await?
            } else {
                hotplug.del_disk(id, &options).await?
            };
            Ok(format!("{outcome} {id}"))
        }
    }
}

impl Soak {
    fn hotplug(&self) -> &Hotplug {
        self.hotplug.as_ref().expect("connected between steps")
    }

    fn qemu_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.qemu.pid().expect("QEMU runs")).expect("a pid"))
    }

    fn pick_op(&mut self, state: &State) -> Op {
        let devices = state.our_devices();
        let free: Vec<usize> = (0..self.host.sources.len())
            .filter(|index| !self.disk_sources.values().any(|used| used == index))
            .collect();
        let add = devices.is_empty() || (devices.len() < self.max_devices && self.rng.chance(55));
        if !add {
            let id = self.rng.pick(&devices).to_string();
            return Op::Del { id };
        }
        self.next_name += 1;
        if free.is_empty() || self.rng.chance(45) {
            let queues = if self.rng.chance(30) { 2 } else { 1 };
            return Op::AddNic { name: format!("n{}", self.next_name), queues };
        }
        let source = *self.rng.pick(&free);
        let name = format!("d{}", self.next_name);
        self.disk_sources.insert(name.clone(), source);
        Op::AddDisk { name, source }
    }

    fn pick_fault(&mut self, op: &Op) -> Fault {
        // A full filesystem matters to the disk whose image it holds: mostly that one's ops.
        let on_tmpfs = |source: &usize| matches!(self.host.sources[*source], Source::OnTmpfs(_));
        let tmpfs_disk = match op {
            Op::AddDisk { source, .. } => on_tmpfs(source),
            Op::Del { id } => id
                .parse::<qmp_hotplug::DeviceId>()
                .ok()
                .and_then(|id| self.disk_sources.get(id.name()))
                .is_some_and(on_tmpfs),
            Op::AddNic { .. } => false,
        };
        if tmpfs_disk && self.host.tmpfs.is_some() && self.rng.chance(50) {
            return Fault::FillFilesystem;
        }
        match *self.rng.pick(&FAULTS) {
            Fault::FillFilesystem if self.host.tmpfs.is_none() => Fault::None,
            other => other,
        }
    }

    /// A moment inside the operation: adds take 20-80 ms, removals 250-700 ms (the guest's
    /// unplug); a killed child also spends some of it starting and connecting.
    fn mid_op_delay(&mut self, op: &Op) -> Duration {
        let span = if matches!(op, Op::Del { .. }) { 700 } else { 120 };
        Duration::from_millis(self.rng.below(span))
    }

    /// One operation under one fault; returns its outcome.
    async fn step(&mut self, op: &Op, fault: Fault) -> Result<String, Error> {
        let path = self.qemu.qmp_path().to_owned();
        match fault {
            Fault::None => run_op(self.hotplug(), op, &self.host.sources).await,
            Fault::FreezeQemu => {
                let pid = self.qemu_pid();
                let after = Duration::from_millis(self.rng.below(800));
                // Mostly shorter than the operation's deadline, sometimes past it.
                let longest = if self.rng.chance(20) { 20_000 } else { 3_000 };
                let hold = Duration::from_millis(100 + self.rng.below(longest));
                let freezer = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = kill(pid, Signal::SIGSTOP);
                    tokio::time::sleep(hold).await;
                    let _ = kill(pid, Signal::SIGCONT);
                });
                let result = run_op(self.hotplug(), op, &self.host.sources).await;
                freezer.await.expect("the freezer task");
                result
            }
            Fault::KillClient => {
                // QEMU serves one client: ours leaves so the child can connect.
                self.hotplug = None;
                let result = self.kill_child_mid_op(op).await;
                self.hotplug = Some(connect(&path).await.map_err(Error::InvalidSpec)?);
                result
            }
            Fault::DropConnection => {
                let after = self.mid_op_delay(op);
                let result =
                    tokio::time::timeout(after, run_op(self.hotplug(), op, &self.host.sources))
                        .await;
                // The operation's future is gone mid-way; so is the connection.
                if let Some(hotplug) = self.hotplug.take() {
                    hotplug.client().close().await;
                }
                self.hotplug = Some(connect(&path).await.map_err(Error::InvalidSpec)?);
                result.unwrap_or_else(|_| Ok(format!("dropped ({after:?} in)")))
            }
            Fault::PauseVm => {
                self.hotplug().client().execute("stop", ()).await?;
                let result = run_op(self.hotplug(), op, &self.host.sources).await;
                if !self.rng.chance(50) {
                    self.hotplug().client().execute("cont", ()).await?;
                }
                result
            }
            Fault::FillFilesystem => {
                let filler = self.host.fill_tmpfs();
                let result = run_op(self.hotplug(), op, &self.host.sources).await;
                if let Some(filler) = filler {
                    let _ = std::fs::remove_file(filler);
                }
                result
            }
        }
    }

    async fn kill_child_mid_op(&mut self, op: &Op) -> Result<String, Error> {
        let exe = std::env::current_exe().expect("the soak's own path");
        let mut command = tokio::process::Command::new(exe);
        command.arg("child").arg(self.qemu.qmp_path()).env(TAP_PREFIX_ENV, tap_prefix());
        match op {
            Op::AddNic { name, queues } => command.args(["add-nic", name, &queues.to_string()]),
            Op::AddDisk { name, source } => {
                command.args(["add-disk", name, &self.host.sources[*source].arg()])
            }
            Op::Del { id } => command.args(["del", id]),
        };
        let mut child =
            command.stdout(Stdio::piped()).kill_on_drop(true).spawn().map_err(|error| {
                Error::InvalidSpec(format!("cannot start the child client: {error}"))
            })?;
        let after = self.mid_op_delay(op);
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Error::InvalidSpec(e.to_string()))?;
                Ok(format!("child finished first ({status})"))
            }
            () = tokio::time::sleep(after) => {
                let _ = child.kill().await;
                Ok(format!("child killed ({after:?} in)"))
            }
        }
    }

    /// What a VM manager does after a fault: run the VM, finish removals, clean leftovers.
    async fn recover(&mut self, op: &Op) -> Result<(), String> {
        let client = self.hotplug().client().clone();
        let status = client.execute("query-status", ()).await.map_err(|e| e.to_string())?;
        if status["status"] != "running" {
            client.execute("cont", ()).await.map_err(|e| format!("cont: {e}"))?;
            *self.tally.recovered.entry("cont").or_default() += 1;
        }
        if let Op::Del { id } = op {
            let options = RemoveOptions::new(UNPLUG_WAIT).missing_ok(true);
            let again = if id.starts_with("nic") {
                self.hotplug().del_nic(id, &options).await
            } else {
                self.hotplug().del_disk(id, &options).await
            };
            again.map_err(|error| format!("removing {id} again: {error}"))?;
        }
        let leftovers = self.hotplug().leftovers().await.map_err(|e| e.to_string())?;
        if !leftovers.is_empty() {
            *self.tally.recovered.entry("leftovers-cleaned").or_default() +=
                leftovers.items.len() as u64;
            let report = self
                .hotplug()
                .clean_leftovers(&leftovers)
                .await
                .map_err(|e| format!("clean_leftovers: {e}"))?;
            if !report.is_complete() {
                return Err(format!("clean_leftovers failed: {:?}", report.failed));
            }
        }
        Ok(())
    }

    /// Reads everything and checks the invariants; the guest gets time to catch up.
    async fn check(&mut self) -> Result<State, Vec<String>> {
        let client = self.hotplug().client().clone();
        let pid = self.qemu.pid().expect("QEMU runs");
        let started = Instant::now();
        loop {
            let state = State::read(&client).await.map_err(|e| vec![format!("reading: {e}")])?;
            let mut found = invariants::violations(
                &state,
                &self.baseline,
                &invariants::taps_held_by(pid),
                &invariants::host_taps(&tap_prefix()),
            );
            let guest = invariants::guest_view(&self.qemu.serial_log());
            let expected = invariants::expected_guest_view(&state);
            if guest != expected {
                found.push(format!("the guest sees {guest:?}, QEMU has {expected:?}"));
            }
            if found.is_empty() {
                // Sources of disks QEMU no longer has are free again.
                let disks: BTreeSet<String> = state
                    .our_devices()
                    .iter()
                    .filter(|id| id.kind() == DeviceKind::Disk)
                    .map(|id| id.name().to_owned())
                    .collect();
                self.disk_sources.retain(|name, _| disks.contains(name));
                return Ok(state);
            }
            // The guest, a closing tap and an unplug in flight settle on their own.
            if started.elapsed() > GUEST_SETTLES {
                return Err(found);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: soak [--minutes N] [--seed S] [--max-devices D] [--machine pc|q35]");
    std::process::exit(2);
}

struct Args {
    minutes: f64,
    seed: u64,
    max_devices: usize,
    machine: Machine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Machine {
    Pc,
    Q35,
}

/// q35 hot-plugs only into root ports, which cannot be hot-added: the soak starts with this
/// many empty ones more than it ever holds devices, so a full pool is never the outcome.
const SPARE_ROOT_PORTS: usize = 2;

fn parse_args(args: &[String]) -> Args {
    let mut parsed = Args {
        minutes: 1.0,
        // The second and the pid: soaks started side by side (as scripts/test starts pc's
        // and q35's) make different choices.
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
            ^ (u64::from(std::process::id()) << 32),
        max_devices: 6,
        machine: Machine::Pc,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--minutes" => parsed.minutes = value.parse().unwrap_or_else(|_| usage()),
            "--seed" => parsed.seed = value.parse().unwrap_or_else(|_| usage()),
            "--max-devices" => parsed.max_devices = value.parse().unwrap_or_else(|_| usage()),
            "--machine" => {
                parsed.machine = match value.as_str() {
                    "pc" => Machine::Pc,
                    "q35" => Machine::Q35,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    let minutes_ok = parsed.minutes > 0.0 && parsed.minutes < 10_000.0;
    if !minutes_ok || !(1..=24).contains(&parsed.max_devices) {
        usage();
    }
    parsed
}

/// The killable child: one operation on its own connection, then exit.
async fn child(args: &[String]) -> i32 {
    let [socket, op, rest @ ..] = args else { return 2 };
    let Ok(hotplug) = connect(Path::new(socket)).await else { return 3 };
    let sources;
    let op = match (op.as_str(), rest) {
        ("add-nic", [name, queues]) => {
            sources = Vec::new();
            Op::AddNic { name: name.clone(), queues: queues.parse().unwrap_or(1) }
        }
        ("add-disk", [name, source]) => {
            sources = vec![Source::from_arg(source).expect("a source argument")];
            Op::AddDisk { name: name.clone(), source: 0 }
        }
        ("del", [id]) => {
            sources = Vec::new();
            Op::Del { id: id.clone() }
        }
        _ => return 2,
    };
    match run_op(&hotplug, &op, &sources).await {
        Ok(outcome) => {
            println!("{outcome}");
            0
        }
        Err(error) => {
            println!("{error}");
            1
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        std::process::exit(child(&args[1..]).await);
    }
    let args = parse_args(&args);
    std::process::exit(soak(&args).await);
}

async fn soak(args: &Args) -> i32 {
    println!("soak: seed {} for {} minutes on {:?}", args.seed, args.minutes, args.machine);
    let host = Host::new().expect("the soak's work directory and images");
    let mut builder = QemuBuilder::new().memory_mib(256);
    if args.machine == Machine::Q35 {
        // --max-devices is at most 24, so the ports fit (MAX_ROOT_PORTS is 29).
        let ports = u8::try_from(args.max_devices + SPARE_ROOT_PORTS).unwrap_or(u8::MAX);
        builder = builder.machine("q35").root_ports(ports);
    }
    let qemu = match Qemu::start_guest_with(builder) {
        Ok(qemu) => qemu,
        Err(error) => {
            eprintln!("soak: cannot start QEMU with the test guest: {error}");
            return 3;
        }
    };
    let hotplug = connect(qemu.qmp_path()).await.expect("connect to QEMU");
    let initial = State::read(hotplug.client()).await.expect("QEMU's state");
    let mut soak = Soak {
        rng: Rng::new(args.seed),
        seed: args.seed,
        qemu,
        host,
        hotplug: Some(hotplug),
        baseline: initial.baseline(),
        disk_sources: BTreeMap::new(),
        next_name: 0,
        max_devices: args.max_devices,
        tally: Tally::default(),
    };
    let kinds: Vec<&str> = soak.host.sources.iter().map(Source::kind).collect();
    println!("soak: disk sources {kinds:?}; QEMU pid {:?}", soak.qemu.pid());
    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let stop = stop_on_signal();
    let mut state = initial;
    let mut failure = None;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        soak.tally.steps += 1;
        let op = soak.pick_op(&state);
        let fault = soak.pick_fault(&op);
        let started = Instant::now();
        let result = soak.step(&op, fault).await;
        let outcome = outcome_of(&result);
        if let Op::AddDisk { source, .. } = &op {
            *soak.tally.sources.entry(soak.host.sources[*source].kind()).or_default() += 1;
        }
        *soak.tally.faults.entry(fault).or_default() += 1;
        *soak.tally.ops.entry((op.kind(), outcome.clone())).or_default() += 1;
        println!(
            "step {:>5} {:<9} {:<16} {:<40} {:>6} ms  {}",
            soak.tally.steps,
            op.kind(),
            fault,
            outcome,
            started.elapsed().as_millis(),
            result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
        );
        if fault == Fault::None
            && let Err(error) = &result
        {
            failure = Some(vec![format!("{} failed without a fault: {error}", op.kind())]);
            break;
        }
        if let Err(error) = soak.recover(&op).await {
            failure = Some(vec![format!("recovery after {} under {fault}: {error}", op.kind())]);
            break;
        }
        match soak.check().await {
            Ok(now) => state = now,
            Err(found) => {
                failure = Some(found);
                break;
            }
        }
    }
    print_tally(&soak.tally);
    if let Some(found) = failure {
        println!("VIOLATION at step {} (seed {}):", soak.tally.steps, soak.seed);
        for line in found {
            println!("  {line}");
        }
        println!("QEMU stderr: {}", soak.qemu.stderr());
        let machine = if args.machine == Machine::Q35 { " --machine q35" } else { "" };
        println!(
            "reproduce: scripts/soak --seed {} --minutes {} --max-devices {}{machine}",
            soak.seed, args.minutes, args.max_devices
        );
        return 1;
    }
    println!("soak: {} steps, 0 violations (seed {})", soak.tally.steps, soak.seed);
    0
}

/// Set by SIGINT or SIGTERM: the soak ends after the current step, undoing what it set up
/// on the host (loop device, tmpfs mount, NBD server) as it would at the end.
fn stop_on_signal() -> Arc<AtomicBool> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("soak: signal received, stopping after this step");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

fn print_tally(tally: &Tally) {
    println!("\noperations (kind, outcome): count");
    for ((kind, outcome), count) in &tally.ops {
        println!("  {kind:<9} {outcome:<40} {count}");
    }
    println!("faults injected:");
    for (fault, count) in &tally.faults {
        println!("  {fault:<16} {count}");
    }
    println!("disk adds by source: {:?}", tally.sources);
    println!("recovery actions: {:?}", tally.recovered);
}
