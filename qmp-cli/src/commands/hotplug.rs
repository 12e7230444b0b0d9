//! `qmp hotplug ...`: the qmp-hotplug crate's operations.

use std::future::Future;
use std::io::IsTerminal;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use hostdev::tap::Tap;
use qmp_hotplug::{DiskSource, DiskSpec, Error, Hotplug, NbdExport, NicSpec, Vhost};
use serde_json::json;

use crate::cli::{
    Command, DiskAddArgs, DiskCommand, GlobalArgs, HotplugCommand, NicAddArgs, NicCommand,
};
use crate::exit::{Failure, Status};
use crate::output::{self, Style};

/// Runs one hotplug subcommand.
///
/// # Errors
/// As [`failure`].
pub(crate) async fn run(
    global: &GlobalArgs,
    command: &HotplugCommand,
    inherited: Inherited,
) -> Result<(), Failure> {
    let hotplug = Hotplug::new(super::connect(global).await?);
    let style = Style::for_stdout(global.json);
    match command {
        HotplugCommand::Check(args) => check(&hotplug, args.vhost, style),
        HotplugCommand::Nic(NicCommand::Add(args)) => {
            add_nic(&hotplug, args, inherited.taps, inherited.vhost, style).await
        }
        HotplugCommand::Nic(NicCommand::Del(args)) => {
            let id = args.id.clone();
            with_progress(&format!("waiting for the guest to release {id}"), async {
                hotplug.del_nic(&id, args.wait).await
            })
            .await
            .map_err(|e| failure(&e))
        }
        HotplugCommand::Disk(DiskCommand::Add(args)) => add_disk(&hotplug, args, style).await,
        HotplugCommand::Disk(DiskCommand::Del(args)) => {
            let id = args.del.id.clone();
            with_progress(&format!("waiting for the guest to release {id}"), async {
                match &args.drive {
                    Some(drive) => hotplug.del_drive(&id, drive, args.del.wait).await,
                    None => hotplug.del_disk(&id, args.del.wait).await,
                }
            })
            .await
            .map_err(|e| failure(&e))
        }
    }
}

/// Tap and vhost descriptors from `--tap-fd` / `--vhost-fd` (empty for other commands).
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    taps: Vec<OwnedFd>,
    vhost: Vec<OwnedFd>,
}

/// Takes ownership of the descriptors `--tap-fd` and `--vhost-fd` name.
///
/// Must run before the process opens any descriptor of its own (the tokio runtime's epoll
/// and eventfd among them): a number given on the command line must then be one inherited
/// from the parent, or not open at all.
///
/// # Errors
/// A usage failure for a number given twice, or one that is not an open descriptor.
#[allow(unsafe_code)]
pub(crate) fn adopt_inherited(command: &Command) -> Result<Inherited, Failure> {
    let Command::Hotplug(HotplugCommand::Nic(NicCommand::Add(args))) = command else {
        return Ok(Inherited::default());
    };
    let mut claimed = std::collections::BTreeSet::new();
    let mut take = |numbers: &[i32]| -> Result<Vec<OwnedFd>, Failure> {
        numbers
            .iter()
            .map(|&fd| {
                if !claimed.insert(fd) {
                    return Err(Failure::usage(format!("descriptor {fd} is given twice")));
                }
                // SAFETY: `main` calls this before it builds the runtime or opens anything,
                // so every open descriptor above stderr was inherited from the parent and
                // nothing in this process owns it; each number is taken once (checked above).
                unsafe { fdpass::adopt_inherited_fd(fd) }.map_err(|e| Failure::usage(e.to_string()))
            })
            .collect()
    };
    Ok(Inherited { taps: take(&args.tap_fd)?, vhost: take(&args.vhost_fd)? })
}

fn check(hotplug: &Hotplug, vhost: bool, style: Style) -> Result<(), Failure> {
    let nic =
        NicSpec { vhost: if vhost { Vhost::Open } else { Vhost::Off }, ..NicSpec::new("check") };
    let disk_fd = DiskSpec::new("check", DiskSource::Fd);
    let nbd = NbdExport::parse_uri("nbd://localhost/x").map_err(|e| failure(&e))?;
    let disk_nbd = DiskSpec::new("check", DiskSource::Nbd(nbd));
    let verdict = |result: Result<(), Error>| match result {
        Ok(()) => json!({"supported": true}),
        Err(error) => json!({"supported": false, "reason": error.to_string()}),
    };
    let report = json!({
        "nic": verdict(hotplug.check_nic_support(&nic)),
        "disk_fdset": verdict(hotplug.check_disk_support(&disk_fd)),
        "disk_nbd": verdict(hotplug.check_disk_support(&disk_nbd)),
    });
    output::print_line(&style.render(&report))?;
    let all = ["nic", "disk_fdset", "disk_nbd"].iter().all(|k| report[k]["supported"] == true);
    if all { Ok(()) } else { Err(Failure::quiet(Status::CommandFailed)) }
}

async fn add_nic(
    hotplug: &Hotplug,
    args: &NicAddArgs,
    inherited_taps: Vec<OwnedFd>,
    vhost_fds: Vec<OwnedFd>,
    style: Style,
) -> Result<(), Failure> {
    let vhost = match (args.vhost, vhost_fds.is_empty()) {
        (_, false) => Vhost::Fds,
        (true, true) => Vhost::Open,
        (false, true) => Vhost::Off,
    };
    let (taps, tap_name) = if inherited_taps.is_empty() {
        let tap =
            Tap::open(args.tap.as_deref().unwrap_or("qmptap%d"), args.queues).map_err(|e| {
                Failure::new(Status::CommandFailed, format!("cannot open the tap: {e}"))
            })?;
        let name = tap.name().to_owned();
        (tap.into_fds(), Some(name))
    } else {
        (inherited_taps, None)
    };
    let spec = NicSpec {
        queues: taps.len(),
        vhost,
        mac: args.mac.clone(),
        model: args.model.clone(),
        slot: args.slot,
        ..NicSpec::new(args.name.clone())
    };
    let id = hotplug.add_nic(&spec, &taps, &vhost_fds).await.map_err(|e| failure(&e))?;
    let report =
        json!({"id": id.to_string(), "slot": id.slot(), "netdev": id.netdev_id(), "tap": tap_name});
    output::print_line(&style.render(&report))
}

async fn add_disk(hotplug: &Hotplug, args: &DiskAddArgs, style: Style) -> Result<(), Failure> {
    let source = match (&args.image, &args.uri) {
        (Some(path), None) => DiskSource::Path(path.clone()),
        (None, Some(uri)) => {
            DiskSource::Nbd(NbdExport::parse_uri(uri).map_err(|e| Failure::usage(e.to_string()))?)
        }
        _ => return Err(Failure::usage("give exactly one of --image PATH and --uri URI")),
    };
    let spec = DiskSpec {
        format: args.format.into(),
        read_only: args.read_only,
        model: args.model.clone(),
        slot: args.slot,
        ..DiskSpec::new(args.name.clone(), source)
    };
    let id = hotplug.add_disk(&spec, None).await.map_err(|e| failure(&e))?;
    let report = json!({"id": id.to_string(), "slot": id.slot(), "node": id.node_name()});
    output::print_line(&style.render(&report))
}

/// Runs `work`; on a terminal, shows `label` and the time spent on stderr while it waits.
pub(crate) async fn with_progress<T>(label: &str, work: impl Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => {
                eprint!("\r\x1b[2K");
                return result;
            }
            _ = ticks.tick() => eprint!("\r\x1b[2K{label}... {:.1}s", start.elapsed().as_secs_f64()),
        }
    }
}

/// A hotplug error's status and line: QEMU's refusals are 1, transport trouble and a guest
/// that does not answer in time are 3, a request that cannot work is 2.
pub(crate) fn failure(error: &Error) -> Failure {
    let status = match error {
        Error::Step { source, .. } => {
            return Failure {
                message: Some(format!("qmp: {}", crate::exit::one_line(&error.to_string()))),
                ..failure(source)
            };
        }
        Error::Client(client) => return Failure::from_client(client),
        Error::InvalidName { .. } | Error::InvalidSpec(_) => Status::Usage,
        Error::UnplugTimeout { .. } | Error::PciData(_) => Status::Connection,
        _ => Status::CommandFailed,
    };
    Failure::new(status, error.to_string())
}
