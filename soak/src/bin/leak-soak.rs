//! `leak-soak [--cycles N] [--commands M] [--reconnects K] [--every S] [--rss-tolerance-kib T]
//! [--machine pc|q35]`: the client process's descriptors, RSS and threads over N NIC+disk
//! hotplug cycles against the test guest (on `pc` bus 0, or behind two empty q35 root ports,
//! where the guest's unplug is 3-5x quicker), M commands on one connection, and K reconnects of a `ReconnectingClient`
//! to a QEMU killed and started again at the same socket. Sampled every S iterations and
//! printed as a table; the first quarter of the samples is warm-up and its highest reading is
//! the baseline (`soak::sample::growth`). The run fails (status 1) when descriptors grow past
//! it at all, threads by more than the runtime's blocking pool, or RSS by more than T KiB.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use hostdev::tap::Tap;
use qemu_launcher::{Qemu, QemuBuilder};
use qmp_client::{Client, ReconnectingClient};
use qmp_hotplug::{DiskSource, DiskSpec, Hotplug, NicSpec, RemoveOptions};
use soak::sample::{Sample, growth};

const NO_VHOST: &[OwnedFd] = &[];
/// The runtime's blocking pool (image and `/proc` I/O of hotplug) may hold this many threads.
const BLOCKING_THREADS: usize = 2;

struct Args {
    q35: bool,
    cycles: u64,
    commands: u64,
    reconnects: u64,
    every: u64,
    rss_tolerance_kib: u64,
}

impl Args {
    /// The sampling interval of a phase of `iterations`: `--every`, but at least ten samples
    /// so a short run still has a warm-up and a series after it.
    fn every_for(&self, iterations: u64) -> u64 {
        self.every.min(iterations.div_ceil(10)).max(1)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: leak-soak [--cycles N] [--commands M] [--reconnects K] [--every S] [--rss-tolerance-kib T] [--machine pc|q35]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        q35: false,
        cycles: 2_000,
        commands: 100_000,
        reconnects: 1_000,
        every: 1_000,
        rss_tolerance_kib: 4_096,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        if flag == "--machine" {
            args.q35 = match given.next().as_deref() {
                Some("pc") => false,
                Some("q35") => true,
                _ => usage(),
            };
            continue;
        }
        let value: u64 = given.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
        match flag.as_str() {
            "--cycles" => args.cycles = value,
            "--commands" => args.commands = value,
            "--reconnects" => args.reconnects = value,
            "--every" if value > 0 => args.every = value,
            "--rss-tolerance-kib" => args.rss_tolerance_kib = value,
            _ => usage(),
        }
    }
    args
}

/// Samples this process every `every` iterations of a phase and checks the series.
struct Phase {
    name: &'static str,
    every: u64,
    samples: Vec<(u64, Sample)>,
    started: Instant,
}

impl Phase {
    fn new(name: &'static str, every: u64) -> Self {
        println!(
            "\n{name}: every {every}\n{:>10} {:>5} {:>9} {:>7} {:>8}",
            "iteration", "fds", "RSS KiB", "threads", "seconds"
        );
        Self { name, every, samples: Vec::new(), started: Instant::now() }
    }

    fn after(&mut self, iteration: u64) {
        if iteration % self.every == 0 {
            let sample = Sample::of_self().expect("/proc/self");
            println!("{iteration:>10} {sample} {:>8.1}", self.started.elapsed().as_secs_f64());
            self.samples.push((iteration, sample));
        }
    }

    /// What grew, if anything.
    fn check(&self, rss_tolerance_kib: u64) -> Vec<String> {
        let series: Vec<Sample> = self.samples.iter().map(|(_, sample)| *sample).collect();
        let tolerance = u64::try_from(BLOCKING_THREADS).expect("small");
        growth(&series, rss_tolerance_kib, tolerance)
            .into_iter()
            .map(|grew| format!("{}: {grew}", self.name))
            .collect()
    }
}

async fn hotplug_cycles(args: &Args) -> Vec<String> {
    let mut builder = QemuBuilder::new();
    if args.q35 {
        // One root port for the NIC, one for the disk.
        builder = builder.machine("q35").root_ports(2);
    }
    let qemu = Qemu::start_guest_with(builder).expect("QEMU with the test guest");
    let hotplug = Hotplug::new(Client::connect(qemu.qmp_path()).await.expect("connect"));
    let image = tempfile::NamedTempFile::new().expect("an image");
    image.as_file().set_len(16 << 20).expect("its size");
    let options = RemoveOptions::new(Duration::from_secs(30));
    let mut phase =
        Phase::new("hotplug cycles (NIC add+del, disk add+del)", args.every_for(args.cycles));
    for cycle in 1..=args.cycles {
        let tap = Tap::open("leak%d", 1).expect("a tap");
        let nic = hotplug.add_nic(&NicSpec::new("leak"), tap.queues(), NO_VHOST).await;
        drop(tap);
        let nic = nic.expect("NIC add");
        hotplug.del_nic(&nic.id.to_string(), &options).await.expect("NIC del");
        let spec = DiskSpec::new("leak", DiskSource::Path(image.path().to_owned()));
        let disk = hotplug.add_disk(&spec, None).await.expect("disk add");
        hotplug.del_disk(&disk.id.to_string(), &options).await.expect("disk del");
        phase.after(cycle);
    }
    phase.check(args.rss_tolerance_kib)
}

async fn commands_on_one_connection(args: &Args) -> Vec<String> {
    let qemu = start_qemu(QemuBuilder::new().paused(true));
    let client = Client::connect(qemu.qmp_path()).await.expect("connect");
    let mut phase =
        Phase::new("commands on one connection (query-status)", args.every_for(args.commands));
    for command in 1..=args.commands {
        client.execute("query-status", ()).await.expect("query-status");
        phase.after(command);
    }
    phase.check(args.rss_tolerance_kib)
}

async fn reconnects(args: &Args) -> Vec<String> {
    let dir = tempfile::tempdir().expect("a directory for the socket");
    let socket = dir.path().join("qmp.sock");
    let start = |socket: &Path| start_qemu(QemuBuilder::new().paused(true).qmp_path(socket));
    let mut qemu = start(&socket);
    let client = ReconnectingClient::new(&socket, Client::builder());
    let mut phase = Phase::new(
        "reconnects of a ReconnectingClient (QEMU killed, started again)",
        args.every_for(args.reconnects),
    );
    for round in 1..=args.reconnects {
        // The connection made here is one more than before the restart.
        let before = client.connections();
        loop {
            match client.execute("query-status", ()).await {
                Ok(_) if client.connections() > before || round == 1 => break,
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        qemu.kill().expect("kill QEMU");
        drop(qemu);
        qemu = start(&socket);
        phase.after(round);
    }
    phase.check(args.rss_tolerance_kib)
}

fn start_qemu(builder: QemuBuilder) -> Qemu {
    builder.start().expect("QEMU starts")
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut grew = Vec::new();
    runtime.block_on(async {
        if args.cycles > 0 {
            grew.extend(hotplug_cycles(&args).await);
        }
        if args.commands > 0 {
            grew.extend(commands_on_one_connection(&args).await);
        }
        if args.reconnects > 0 {
            grew.extend(reconnects(&args).await);
        }
    });
    if grew.is_empty() {
        println!(
            "\nleak-soak: flat (descriptors equal, threads within {BLOCKING_THREADS}, RSS within {} KiB)",
            args.rss_tolerance_kib
        );
    } else {
        println!("\nleak-soak: GREW");
        for line in grew {
            println!("  {line}");
        }
        std::process::exit(1);
    }
}
