//! `qmp hotplug ...`: the qmp-hotplug crate's operations.

use std::os::fd::OwnedFd;

use hostdev::tap::Tap;
use qmp_hotplug::{DiskSource, DiskSpec, Error, Hotplug, NbdExport, NicSpec, Vhost};
use serde_json::json;

use crate::cli::{DiskAddArgs, DiskCommand, GlobalArgs, HotplugCommand, NicAddArgs, NicCommand};
use crate::exit::{Failure, Status};
use crate::inherited::Inherited;
use crate::output::{self, Style, with_progress};

/// Runs one hotplug subcommand.
///
/// What the command line alone decides is settled before connecting: the option values
/// (by clap), the descriptor counts, and for `nic add` the tap, whose name is checked
/// before any system call. So a bad value is status 2 with nothing touched.
///
/// # Errors
/// As [`Failure::from_hotplug`].
pub(crate) async fn run(
    global: &GlobalArgs,
    command: &HotplugCommand,
    inherited: Inherited,
) -> Result<(), Failure> {
    let style = Style::for_stdout(global.json);
    match command {
        HotplugCommand::Nic(NicCommand::Add(args)) => {
            let nic = prepare_nic(args, inherited)?;
            add_nic(&connect(global).await?, nic, style).await
        }
        HotplugCommand::Check(args) => check(&connect(global).await?, args.vhost, style),
        HotplugCommand::Nic(NicCommand::Del(args)) => {
            let hotplug = connect(global).await?;
            let id = &args.id;
            with_progress(&format!("waiting for the guest to release {id}"), async {
                hotplug.del_nic(id, args.wait).await
            })
            .await
            .map_err(Failure::from)
        }
        HotplugCommand::Disk(DiskCommand::Add(args)) => {
            add_disk(&connect(global).await?, args, style).await
        }
        HotplugCommand::Disk(DiskCommand::Del(args)) => {
            let hotplug = connect(global).await?;
            let id = &args.del.id;
            with_progress(&format!("waiting for the guest to release {id}"), async {
                match &args.drive {
                    Some(drive) => hotplug.del_drive(id, drive, args.del.wait).await,
                    None => hotplug.del_disk(id, args.del.wait).await,
                }
            })
            .await
            .map_err(Failure::from)
        }
    }
}

async fn connect(global: &GlobalArgs) -> Result<Hotplug, Failure> {
    Ok(Hotplug::new(crate::connect::connect(global).await?))
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

/// A NIC ready to add: its spec, the tap descriptors (inherited or opened here) and the
/// vhost ones.
struct PreparedNic {
    spec: NicSpec,
    taps: Vec<OwnedFd>,
    vhost_fds: Vec<OwnedFd>,
    /// The tap opened here, if one was.
    tap_name: Option<String>,
}

/// Checks what the command line says about the NIC and opens its tap, all before
/// connecting.
///
/// # Errors
/// Status 2 for descriptor counts that do not match or a tap name the kernel would refuse;
/// 1 when the tap cannot be opened.
fn prepare_nic(args: &NicAddArgs, inherited: Inherited) -> Result<PreparedNic, Failure> {
    let Inherited { taps: inherited_taps, vhost: vhost_fds } = inherited;
    let tap_count = if inherited_taps.is_empty() { args.queues } else { inherited_taps.len() };
    if !vhost_fds.is_empty() && vhost_fds.len() != tap_count {
        return Err(Failure::usage(format!(
            "--vhost-fd gives {} descriptors for {tap_count} tap queues: give one per queue",
            vhost_fds.len()
        )));
    }
    let vhost = match (args.vhost, vhost_fds.is_empty()) {
        (_, false) => Vhost::Fds,
        (true, true) => Vhost::Open,
        (false, true) => Vhost::Off,
    };
    let (taps, tap_name) = if inherited_taps.is_empty() {
        let tap = Tap::open(args.tap.as_deref().unwrap_or("qmptap%d"), args.queues).map_err(
            |e| match e {
                // Checked before any system call: the value is wrong, nothing was opened.
                hostdev::Error::TapName { .. } | hostdev::Error::TapQueues { .. } => {
                    Failure::usage(format!("--tap: {e}"))
                }
                e => Failure::new(Status::CommandFailed, format!("cannot open the tap: {e}")),
            },
        )?;
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
    Ok(PreparedNic { spec, taps, vhost_fds, tap_name })
}

async fn add_nic(hotplug: &Hotplug, nic: PreparedNic, style: Style) -> Result<(), Failure> {
    let id = hotplug.add_nic(&nic.spec, &nic.taps, &nic.vhost_fds).await?;
    let report = json!({"id": id.to_string(), "slot": id.slot(), "netdev": id.netdev_id(),
                        "tap": nic.tap_name});
    output::print_line(&style.render(&report))
}

async fn add_disk(hotplug: &Hotplug, args: &DiskAddArgs, style: Style) -> Result<(), Failure> {
    let source = match (&args.image, &args.uri) {
        (Some(path), None) => DiskSource::Path(path.clone()),
        (None, Some(export)) => DiskSource::Nbd(export.clone()),
        // clap requires one and refuses both.
        _ => return Err(Failure::usage("give exactly one of --image PATH and --uri URI")),
    };
    let spec = DiskSpec {
        format: args.format.into(),
        read_only: args.read_only,
        model: args.model.clone(),
        slot: args.slot,
        ..DiskSpec::new(args.name.clone(), source)
    };
    let id = hotplug.add_disk(&spec, None).await?;
    let report = json!({"id": id.to_string(), "slot": id.slot(), "node": id.node_name()});
    output::print_line(&style.render(&report))
}
