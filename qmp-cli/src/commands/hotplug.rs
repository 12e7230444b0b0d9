//! `qmp hotplug ...`: the qmp-hotplug crate's operations.

use std::os::fd::OwnedFd;

use hostdev::tap::Tap;
use qmp_hotplug::{DiskSource, DiskSpec, Error, Hotplug, NbdExport, NicSpec, RemoveOptions, Vhost};
use serde_json::json;

use crate::cli::{DiskAddArgs, DiskCommand, GlobalArgs, HotplugCommand, NicAddArgs, NicCommand};
use crate::exit::{Failure, Status};
use crate::inherited::Inherited;
use crate::output::{self, Style, with_progress};

/// Runs one hotplug subcommand.
///
/// # Errors
/// As [`Failure::from_hotplug`].
pub(crate) async fn run(
    global: &GlobalArgs,
    command: &HotplugCommand,
    inherited: Inherited,
) -> Result<(), Failure> {
    let hotplug = Hotplug::new(crate::connect::connect(global).await?);
    let style = Style::for_stdout(global.json);
    match command {
        HotplugCommand::Check(args) => check(&hotplug, args.vhost, style),
        HotplugCommand::Nic(NicCommand::Add(args)) => {
            add_nic(&hotplug, args, inherited.taps, inherited.vhost, style).await
        }
        HotplugCommand::Nic(NicCommand::Del(args)) => {
            let id = args.id.clone();
            with_progress(&format!("waiting for the guest to release {id}"), async {
                hotplug.del_nic(&id, &RemoveOptions::new(args.wait)).await.map(drop)
            })
            .await
            .map_err(Failure::from)
        }
        HotplugCommand::Disk(DiskCommand::Add(args)) => add_disk(&hotplug, args, style).await,
        HotplugCommand::Disk(DiskCommand::Del(args)) => {
            let id = args.del.id.clone();
            with_progress(&format!("waiting for the guest to release {id}"), async {
                match &args.drive {
                    Some(drive) => {
                        hotplug.del_drive(&id, drive, &RemoveOptions::new(args.del.wait)).await
                    }
                    None => hotplug.del_disk(&id, &RemoveOptions::new(args.del.wait)).await,
                }
            })
            .await
            .map(drop)
            .map_err(Failure::from)
        }
    }
}

fn check(hotplug: &Hotplug, vhost: bool, style: Style) -> Result<(), Failure> {
    let nic =
        NicSpec { vhost: if vhost { Vhost::Open } else { Vhost::Off }, ..NicSpec::new("check") };
    let disk_fd = DiskSpec::new("check", DiskSource::Fd);
    let nbd = NbdExport::parse_uri("nbd://localhost/x")?;
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
    let id = hotplug.add_nic(&spec, &taps, &vhost_fds).await?.id;
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
    let id = hotplug.add_disk(&spec, None).await?.id;
    let report = json!({"id": id.to_string(), "slot": id.slot(), "node": id.node_name()});
    output::print_line(&style.render(&report))
}
