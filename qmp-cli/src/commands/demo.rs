//! `qmp demo`: the README's main job. Starts a QEMU of its own (with the project's test
//! guest when it can be built, so hot-unplug completes), hot-adds a disk through an fdset
//! and a NIC on a tap, shows the PCI table, hot-removes both, and shuts QEMU down.
//!
//! SIGINT and SIGTERM end it at any moment with everything it made undone: QEMU killed and
//! reaped, its temporary directory (socket, logs, the disk image) removed, the tap gone
//! with the last descriptor of it. That works because every wait is async (the serial log
//! is polled with tokio's timer, never a blocking sleep), so the single-threaded runtime is
//! always free to see the signal, and because everything the demo made is owned by the
//! future the signal cancels: dropping it is the cleanup. QEMU is started on the runtime's
//! own thread, not a blocking-pool one: `setpriv --pdeathsig` ties QEMU's life to the
//! thread that spawned it.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use hostdev::tap::Tap;
use qemu_launcher::{GUEST_READY, GUEST_READY_TIMEOUT, GuestImage, Qemu, QemuBuilder, SerialLine};
use qmp_client::Client;
use qmp_hotplug::{DeviceId, DiskSource, DiskSpec, Hotplug, NicSpec, Preferences, RemoveOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::DemoArgs;
use crate::exit::{Failure, Status};
use crate::output::{escape_for_terminal, with_progress};

/// Empty root ports `qmp demo --machine q35` starts with: the demo plugs two devices, and
/// two stay free so that a repeated or extra add has room.
const Q35_ROOT_PORTS: u8 = 4;

/// How long the guest gets to let go of a device.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the guest gets to show a device it was given.
const GUEST_SEES_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the serial log is read while waiting for a line.
const SERIAL_POLL: Duration = Duration::from_millis(20);
const NO_VHOST: &[std::os::fd::OwnedFd] = &[];

/// Runs the demo, printing each step with its time; on SIGINT or SIGTERM, undoes it all and
/// ends with status 130 or 143.
///
/// # Errors
/// Status 3 when QEMU cannot be started or talked to, 1 when a hotplug step fails or
/// something is left behind, 130 / 143 when interrupted.
pub(crate) async fn run(args: &DemoArgs) -> Result<(), Failure> {
    let mut signals = Signals::install()?;
    let outcome = tokio::select! {
        biased;
        caught = signals.recv() => Err(caught),
        result = demo(args) => Ok(result),
    };
    // The demo's future is gone by now, and with it QEMU, its directory and the tap.
    match outcome {
        Err(caught) => Err(caught.failure()),
        Ok(Ok(())) => Ok(()),
        // A Ctrl-C on the terminal reaches QEMU too, which may quit before this process
        // has seen the signal: the signal is the news then.
        Ok(Err(failure)) => Err(signals.pending().map_or(failure, Caught::failure)),
    }
}

/// The signals that end the demo early.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

/// Which of them came.
#[derive(Debug, Clone, Copy)]
enum Caught {
    Interrupt,
    Terminate,
}

impl Caught {
    /// How the demo ends after it: status 130 or 143, as a shell reports a process killed by
    /// SIGINT or SIGTERM.
    fn failure(self) -> Failure {
        let (status, name) = match self {
            Self::Interrupt => (Status::Interrupted, "SIGINT"),
            Self::Terminate => (Status::Terminated, "SIGTERM"),
        };
        Failure::new(
            status,
            format!("interrupted by {name}: QEMU was killed, its directory and the tap removed"),
        )
    }
}

impl Signals {
    /// Takes SIGINT and SIGTERM over from their default action (ending the process on the
    /// spot, with nothing undone), for as long as the process runs.
    fn install() -> Result<Self, Failure> {
        let install = |kind| {
            signal(kind).map_err(|e| {
                Failure::connection(format!("cannot install the signal handlers: {e}"))
            })
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    /// The next signal.
    async fn recv(&mut self) -> Caught {
        tokio::select! {
            _ = self.interrupt.recv() => Caught::Interrupt,
            _ = self.terminate.recv() => Caught::Terminate,
        }
    }

    /// A signal that has come already, if any, without waiting.
    fn pending(&mut self) -> Option<Caught> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        if self.interrupt.poll_recv(&mut context).is_ready() {
            return Some(Caught::Interrupt);
        }
        self.terminate.poll_recv(&mut context).is_ready().then_some(Caught::Terminate)
    }
}

/// The demo itself: everything it makes is owned here, so dropping this future undoes it.
async fn demo(args: &DemoArgs) -> Result<(), Failure> {
    let total = Instant::now();
    let demo = Demo::start(args).await?;
    let (disk, nic, tap_name) = demo.add_devices().await?;
    print_table(&demo.hotplug).await?;
    if demo.has_guest {
        demo.remove_devices(&[(disk.to_string(), "disk"), (nic.to_string(), "NIC")]).await?;
        print_table(&demo.hotplug).await?;
    } else {
        note("skipped hot-remove: without a guest OS nothing acknowledges device_del");
    }
    let clean = demo.shut_down(&tap_name).await?;
    println!("done in {:.1} s", total.elapsed().as_secs_f64());
    if clean {
        Ok(())
    } else {
        Err(Failure::new(Status::CommandFailed, "the demo left something behind"))
    }
}

/// A QEMU of the demo's own, connected.
struct Demo {
    qemu: Qemu,
    has_guest: bool,
    client: Client,
    hotplug: Hotplug,
}

impl Demo {
    /// Finds the guest, starts QEMU, waits for the guest and connects.
    async fn start(args: &DemoArgs) -> Result<Self, Failure> {
        let guest = if args.no_guest { None } else { find_guest() };
        let mut builder = QemuBuilder::new().machine(args.machine.as_str());
        if args.machine == "q35" {
            // q35 hot-plugs only into root ports, which cannot be hot-added: a pool of
            // empty ones at start, as libvirt and Kata do.
            builder = builder.root_ports(Q35_ROOT_PORTS);
        }
        if let Some(image) = &guest {
            builder = builder.guest(image);
        }
        let (qemu, took) = timed_sync(|| builder.start());
        let qemu = qemu.map_err(|e| Failure::connection(format!("cannot start QEMU: {e}")))?;
        let pid = qemu.pid().unwrap_or(0);
        step(took, &format!("started QEMU (pid {pid}), QMP at {}", qemu.qmp_path().display()));
        if guest.is_some() {
            let (ready, took) =
                timed(serial_line(&qemu, 0, GUEST_READY, GUEST_READY_TIMEOUT)).await;
            ready.map_err(|why| {
                let stderr = qemu.stderr();
                Failure::connection(format!(
                    "the guest did not boot: {why}; QEMU's stderr: {stderr}"
                ))
            })?;
            step(took, "guest booted and ready (it answers ACPI hotplug)");
        }

        // Checked like every command qmp sends.
        let connecting = Client::builder().check_arguments(true).connect(qemu.qmp_path());
        let (client, took) = timed(connecting).await;
        let client = client?;
        let greeting = client.greeting();
        let capabilities: Vec<String> =
            greeting.capabilities.iter().map(ToString::to_string).collect();
        step(
            took,
            &format!(
                "connected: QEMU {} ({}), capabilities {capabilities:?}, {} commands, oob {}",
                greeting.version.qemu,
                greeting.version.package.trim(),
                client.commands().len(),
                if client.oob_enabled() { "on" } else { "off" }
            ),
        );
        let hotplug = Hotplug::new(client.clone());
        Ok(Self { qemu, has_guest: guest.is_some(), client, hotplug })
    }

    /// Hot-adds a raw disk through an fdset and a NIC on a new tap.
    async fn add_devices(&self) -> Result<(DeviceId, DeviceId, String), Failure> {
        let image = self.qemu.dir().join("demo-disk.raw");
        std::fs::File::create(&image).and_then(|file| file.set_len(64 << 20)).map_err(|e| {
            Failure::new(Status::CommandFailed, format!("cannot create {}: {e}", image.display()))
        })?;
        let serial_start = self.qemu.serial_len();
        let spec = DiskSpec::new("demo", DiskSource::Path(image));
        let (disk, took) = timed(self.hotplug.add_disk(&spec, None)).await;
        let disk = disk?.id;
        step(
            took,
            &format!(
                "hot-added disk {disk} at {}: add-fd (fdset), blockdev-add, device_add",
                disk.place()
            ),
        );
        self.guest_saw(serial_start, "+vd").await;

        let tap = Tap::open("qmpdemo%d", 1).map_err(|e| {
            Failure::new(
                Status::CommandFailed,
                format!("cannot open a tap device (needs root): {e}"),
            )
        })?;
        let tap_name = tap.name().to_owned();
        let (nic, took) =
            timed(self.hotplug.add_nic(&NicSpec::new("demo"), tap.queues(), NO_VHOST)).await;
        let nic = nic?.id;
        drop(tap); // QEMU holds its own copy now.
        step(
            took,
            &format!(
                "hot-added NIC {nic} at {} on tap {tap_name}: object-add (intent marker), getfd, netdev_add, device_add, object-del",
                nic.place()
            ),
        );
        self.guest_saw(serial_start, "+eth").await;
        Ok((disk, nic, tap_name))
    }

    /// Hot-removes each `(id, what)`, waiting for the guest.
    async fn remove_devices(&self, devices: &[(String, &str)]) -> Result<(), Failure> {
        let before = self.qemu.serial_len();
        for (id, what) in devices {
            let removal = async {
                if *what == "disk" {
                    self.hotplug.del_disk(id, &RemoveOptions::new(UNPLUG_TIMEOUT)).await
                } else {
                    self.hotplug.del_nic(id, &RemoveOptions::new(UNPLUG_TIMEOUT)).await
                }
            };
            let label = format!("waiting for the guest to release {id}");
            let (removed, took) = timed(with_progress(&label, removal)).await;
            removed?;
            step(
                took,
                &format!(
                    "hot-removed {what} {id}: device_del, DEVICE_DELETED from the guest, then its backend"
                ),
            );
        }
        self.guest_saw(before, "-vd").await;
        self.guest_saw(before, "-eth").await;
        Ok(())
    }

    /// Sends `quit` and checks that QEMU, its directory and the tap are gone.
    async fn shut_down(self, tap_name: &str) -> Result<bool, Failure> {
        let (quit, took) = timed(self.client.execute("quit", ())).await;
        quit?;
        self.client.close().await;
        let dir = self.qemu.dir().to_owned();
        let exited = wait_exit(self.qemu).await;
        let tap_gone = !Path::new("/sys/class/net").join(tap_name).exists();
        step(
            took,
            &format!(
                "QEMU {}; tap {tap_name} {}; {} {}",
                if exited { "quit" } else { "did not quit and was killed" },
                if tap_gone { "is gone" } else { "is STILL THERE" },
                dir.display(),
                if dir.exists() { "is STILL THERE" } else { "removed" }
            ),
        );
        Ok(exited && tap_gone && !dir.exists())
    }

    /// Prints the guest's own serial line about a device, if a guest runs.
    async fn guest_saw(&self, offset: usize, change: &str) {
        if !self.has_guest {
            return;
        }
        let needle = format!("GUEST: {change}");
        let (line, took) =
            timed(serial_line(&self.qemu, offset, &needle, GUEST_SEES_TIMEOUT)).await;
        match line {
            Ok(line) => step(took, &format!("the guest says: {}", line.line.trim())),
            Err(why) => note(&format!("the guest did not report {change}: {why}")),
        }
    }
}

/// Waits up to `timeout` for a serial line at or after `offset` containing `needle`,
/// reading the log every [`SERIAL_POLL`] between tokio sleeps: the runtime's thread stays
/// free (for the signal handlers) the whole time.
///
/// # Errors
/// Why not: a timeout, or QEMU exited, with no more than the first line of the launcher's
/// account (the rest is the serial log and QEMU's stderr).
async fn serial_line(
    qemu: &Qemu,
    offset: usize,
    needle: &str,
    timeout: Duration,
) -> Result<SerialLine, String> {
    let looking = async {
        loop {
            match qemu.find_serial_after(offset, needle) {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => tokio::time::sleep(SERIAL_POLL).await,
                Err(e) => return Err(e.to_string().lines().next().unwrap_or_default().to_owned()),
            }
        }
    };
    tokio::time::timeout(timeout, looking)
        .await
        .unwrap_or_else(|_| Err(format!("no serial line containing {needle:?} within {timeout:?}")))
}

/// The test guest, built if need be; `None` (with a note) when it cannot be had.
fn find_guest() -> Option<GuestImage> {
    let (image, took) = timed_sync(GuestImage::locate);
    match image {
        Ok(image) => {
            let dir = image.kernel.parent().unwrap_or(Path::new("")).display().to_string();
            step(took, &format!("test guest at {dir}"));
            Some(image)
        }
        Err(reason) => {
            note(&format!(
                "no test guest ({reason}); running without one, so hot-remove cannot complete"
            ));
            None
        }
    }
}

async fn print_table(hotplug: &Hotplug) -> Result<(), Failure> {
    let view = hotplug.pci_tree().await?.view(&Preferences::default());
    println!();
    for line in super::pci::tree_text(&view).lines() {
        println!("    {line}");
    }
    println!();
    Ok(())
}

/// Gives QEMU 5 s to exit after `quit`, then kills it; `true` if it exited by itself.
async fn wait_exit(mut qemu: Qemu) -> bool {
    for _ in 0..250 {
        if !qemu.is_running() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = qemu.kill();
    false
}

/// Prints a step and its time. `what` carries text from QEMU (its version) and from the
/// guest (serial lines): escaped.
fn step(took: Duration, what: &str) {
    println!("[{:>7.1} ms] {}", took.as_secs_f64() * 1e3, escape_for_terminal(what));
}

fn note(what: &str) {
    println!("[   note   ] {}", escape_for_terminal(what));
}

fn timed_sync<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let result = work();
    (result, start.elapsed())
}

async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let result = work.await;
    (result, start.elapsed())
}
