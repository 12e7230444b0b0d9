//! `qmp hotplug ...`: the qmp-hotplug crate's operations.

use std::os::fd::OwnedFd;

use hostdev::tap::Tap;
use qmp_hotplug::{
    DiskBus, DiskSource, DiskSpec, Error, Hotplug, Leftover, LeftoverPart, NbdExport, NbdTls,
    NicSpec, Outcome, RemoveOptions, Vhost,
};
use serde_json::{Value, json};

use crate::cli::{
    CdromCommand, DiskAddArgs, DiskBusArg, DiskCommand, GlobalArgs, HotplugCommand, NicAddArgs,
    NicCommand,
};
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
        HotplugCommand::Check(args) => check(&connect(global).await?, args.vhost, style).await,
        HotplugCommand::Nic(NicCommand::Del(args)) => {
            let hotplug = connect(global).await?;
            let id = &args.id;
            let options = RemoveOptions::new(args.wait).missing_ok(args.if_exists);
            let outcome = with_progress(&format!("waiting for the guest to release {id}"), async {
                hotplug.del_nic(id, &options).await
            })
            .await?;
            output::print_line(&style.render(&json!({"id": id, "outcome": outcome.as_str()})))
        }
        HotplugCommand::Disk(DiskCommand::Add(args)) => {
            let spec = disk_spec(args)?;
            add_disk(&connect(global).await?, &spec, style).await
        }
        HotplugCommand::Disk(DiskCommand::Del(args)) => {
            let hotplug = connect(global).await?;
            let id = &args.del.id;
            let options = RemoveOptions::new(args.del.wait).missing_ok(args.del.if_exists);
            let outcome = with_progress(&format!("waiting for the guest to release {id}"), async {
                match &args.drive {
                    Some(drive) => hotplug.del_drive(id, drive, &options).await,
                    None => hotplug.del_disk(id, &options).await,
                }
            })
            .await?;
            output::print_line(&style.render(&json!({"id": id, "outcome": outcome.as_str()})))
        }
        HotplugCommand::Disk(DiskCommand::Resize(args)) => {
            let hotplug = connect(global).await?;
            let resized = hotplug.resize_disk(&args.id, args.size, args.allow_shrink).await?;
            output::print_line(&style.render(&json!({
                "id": args.id,
                "old_size": resized.old_size,
                "new_size": resized.new_size,
                "outcome": if resized.changed() { "resized" } else { "unchanged" },
            })))
        }
        HotplugCommand::Cdrom(CdromCommand::Change(args)) => {
            let hotplug = connect(global).await?;
            let format = args.format.into();
            hotplug.change_medium(&args.id, &args.image, format, !args.read_write).await?;
            let image = args.image.display().to_string();
            output::print_line(&style.render(&json!({"id": args.id, "medium": image})))
        }
        HotplugCommand::Cdrom(CdromCommand::Eject(args)) => {
            let hotplug = connect(global).await?;
            hotplug.eject(&args.id, args.force).await?;
            output::print_line(&style.render(&json!({"id": args.id, "medium": null})))
        }
        HotplugCommand::Gc(args) => gc(&connect(global).await?, args.dry_run, style).await,
    }
}

/// A leftover as JSON: its device, what it is, and how QEMU names it.
fn leftover_json(item: &Leftover) -> Value {
    let (part, name, fd_names) = match &item.part {
        LeftoverPart::BlockNode { node_name } => ("block-node", node_name.clone(), None),
        LeftoverPart::Fdset { fdset_id } => ("fdset", fdset_id.to_string(), None),
        LeftoverPart::Netdev { id } => ("netdev", id.clone(), None),
        LeftoverPart::TlsCreds { object } => ("tls-creds", object.clone(), None),
        LeftoverPart::NicIntent { marker, fd_names } => {
            ("nic-intent", marker.clone(), Some(fd_names.clone()))
        }
        other => ("other", format!("{other:?}"), None),
    };
    json!({
        "device": item.device.to_string(),
        "part": part,
        "name": name,
        "fd_names": fd_names,
        "closes_when_running": item.closes_when_running,
        "description": item.to_string(),
    })
}

/// `hotplug gc`: lists what interrupted operations left, and removes it unless `dry_run`.
async fn gc(hotplug: &Hotplug, dry_run: bool, style: Style) -> Result<(), Failure> {
    let leftovers = hotplug.leftovers().await?;
    let listed: Vec<Value> = leftovers.items.iter().map(leftover_json).collect();
    if dry_run {
        let report = json!({"run_state": leftovers.run_state.as_str(), "leftovers": listed});
        return output::print_line(&style.render(&report));
    }
    let cleaned = hotplug.clean_leftovers(&leftovers).await?;
    let list = |items: &[Leftover]| items.iter().map(leftover_json).collect::<Vec<_>>();
    let failed: Vec<Value> = cleaned
        .failed
        .iter()
        .map(|(item, error)| json!({"leftover": leftover_json(item), "error": error}))
        .collect();
    let report = json!({
        "run_state": leftovers.run_state.as_str(),
        "removed": list(&cleaned.removed),
        "pending_until_running": list(&cleaned.pending_until_running),
        "skipped": list(&cleaned.skipped),
        "failed": failed,
    });
    output::print_line(&style.render(&report))?;
    if cleaned.is_complete() { Ok(()) } else { Err(Failure::quiet(Status::CommandFailed)) }
}

/// Connects, and with checking on fetches QEMU's schema within `--timeout`, so that an
/// operation's own deadline (`--wait`) is not spent on it.
async fn connect(global: &GlobalArgs) -> Result<Hotplug, Failure> {
    let client = crate::connect::connect(global).await?;
    if !global.no_check {
        client.schema().await?;
    }
    Ok(Hotplug::new(client))
}

async fn check(hotplug: &Hotplug, vhost: bool, style: Style) -> Result<(), Failure> {
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
        "nic": verdict(hotplug.check_nic_support(&nic).await),
        "disk_fdset": verdict(hotplug.check_disk_support(&disk_fd).await),
        "disk_nbd": verdict(hotplug.check_disk_support(&disk_nbd).await),
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
        host_mtu: args.host_mtu,
        rx_queue_size: args.rx_queue_size.as_deref().and_then(|size| size.parse().ok()),
        tx_queue_size: args.tx_queue_size.as_deref().and_then(|size| size.parse().ok()),
        bootindex: args.bootindex,
        romfile: args.romfile.clone(),
        link_up: !args.link_down,
        features: args.features.iter().cloned().collect(),
        slot: args.slot,
        bus: args.bus.clone(),
        ..NicSpec::new(args.name.clone())
    };
    Ok(PreparedNic { spec, taps, vhost_fds, tap_name })
}

async fn add_nic(hotplug: &Hotplug, prepared: PreparedNic, style: Style) -> Result<(), Failure> {
    let nic = hotplug.add_nic(&prepared.spec, &prepared.taps, &prepared.vhost_fds).await?;
    // What QEMU has: for an already present NIC the tap opened here was not used.
    let carried = nic.queues.first().and_then(|queue| queue.tap.clone());
    let tap = carried.or(prepared.tap_name.filter(|_| nic.outcome == Outcome::Added));
    let queues: Vec<Value> =
        nic.queues.iter().map(|queue| json!({"fd": queue.fd, "tap": queue.tap})).collect();
    let report = json!({
        "id": nic.id.to_string(),
        "bus": nic.id.bus(),
        "slot": nic.id.slot(),
        "outcome": nic.outcome.as_str(),
        "model": nic.model,
        "netdev": nic.netdev,
        "mac": nic.mac,
        "tap": tap.as_deref().unwrap_or("unknown"),
        "queues": queues,
        "left_behind": nic.left_behind.iter().map(leftover_json).collect::<Vec<_>>(),
    });
    output::print_line(&style.render(&report))
}

/// The disk `args` ask for; settings QEMU would refuse are a usage error, before connecting.
fn disk_spec(args: &DiskAddArgs) -> Result<DiskSpec, Failure> {
    let source = match (&args.image, &args.uri) {
        (Some(path), None) => DiskSource::Path(path.clone()),
        (None, Some(export)) => {
            let mut export = export.clone();
            if let Some(dir) = &args.tls_dir {
                let tls = NbdTls { hostname: args.tls_hostname.clone(), ..NbdTls::new(dir) };
                tls.check().map_err(|error| Failure::usage(error.to_string()))?;
                export = export.with_tls(tls);
            }
            DiskSource::Nbd(export)
        }
        // clap requires one and refuses both.
        _ => return Err(Failure::usage("give exactly one of --image PATH and --uri URI")),
    };
    let settings = args.settings();
    settings
        .check(matches!(source, DiskSource::Nbd(_)))
        .map_err(|error| Failure::usage(error.to_string()))?;
    let bus = match (args.bus, &args.scsi_controller) {
        (DiskBusArg::Scsi, controller) => DiskBus::Scsi { controller: controller.clone() },
        (DiskBusArg::Virtio, None) => DiskBus::Virtio,
        (DiskBusArg::Virtio, Some(_)) => {
            return Err(Failure::usage("--scsi-controller needs --bus scsi"));
        }
    };
    let spec = DiskSpec::new(args.name.clone(), source).with_bus(bus);
    Ok(DiskSpec {
        format: args.format.into(),
        allow_format_mismatch: args.allow_format_mismatch,
        read_only: args.read_only,
        model: args.model.clone().unwrap_or(spec.model.clone()),
        slot: args.slot,
        pci_bus: args.pci_bus.clone(),
        settings,
        ..spec
    })
}

async fn add_disk(hotplug: &Hotplug, spec: &DiskSpec, style: Style) -> Result<(), Failure> {
    let disk = hotplug.add_disk(spec, None).await?;
    let report = json!({
        "id": disk.id.to_string(),
        "bus": disk.id.bus(),
        "slot": disk.id.slot(),
        "scsi": disk.id.scsi_unit().map(|unit| json!({"scsi_id": unit.scsi_id, "lun": unit.lun})),
        "outcome": disk.outcome.as_str(),
        "model": disk.model,
        "node": disk.node,
        "format": disk.format,
        "protocol": disk.protocol,
        "read_only": disk.read_only,
        "file": disk.file,
        "fdset": disk.fdset_id,
    });
    output::print_line(&style.render(&report))
}
