//! SCSI disks against a real QEMU 7.2 with the test guest, whose `/init` prints
//! `GUEST: +sda pci=...` and `BLOCK sda sectors=N media=1` for a disk it sees: a LUN on a
//! controller this library hot-adds (pc bus 0 and a q35 root port), on a controller the
//! caller names, refusals of controllers that cannot take one, adoption, removal, and a
//! failure at each step of the add leaving QEMU as it was.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostdev::image::Access;
use qemu_launcher::{Qemu, QemuBuilder, guest_or_skip};
use qmp_client::Client;
use qmp_hotplug::{
    DiskBus, DiskSource, DiskSpec, Error, Host, Hotplug, LocalHost, Outcome, Plan, PlanFds,
    PlannedStep, RemoveOptions, Step,
};
use serde_json::{Value, json};

const GUEST_SEES: Duration = Duration::from_secs(20);

fn remove() -> RemoveOptions {
    RemoveOptions::new(Duration::from_secs(20))
}

async fn connect(qemu: &Qemu) -> Hotplug {
    let client = Client::connect(qemu.qmp_path()).await.expect("connect to QEMU");
    assert!(client.schema().await.expect("QEMU's schema").is_some());
    Hotplug::new(client)
}

/// A 4 MiB image (8192 sectors) of `byte`.
fn image(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![byte; 4 << 20]).unwrap();
    path
}

fn scsi_disk(name: &str, path: PathBuf, controller: Option<&str>) -> DiskSpec {
    DiskSpec::new(name, DiskSource::Path(path))
        .with_bus(DiskBus::Scsi { controller: controller.map(str::to_owned) })
}

/// The guest's serial line for `change` (`+sda`, `-sda`) after byte `offset`.
fn guest_line(qemu: &Qemu, offset: usize, change: &str) -> String {
    qemu.wait_for_serial_after(offset, &format!("GUEST: {change} "), GUEST_SEES)
        .unwrap_or_else(|error| panic!("the guest never printed {change}: {error}"))
        .line
}

/// The user-created devices, block nodes and fdsets QEMU has.
async fn qemu_state(client: &Client) -> Value {
    let peripherals = client.execute("qom-list", json!({"path": "/machine/peripheral"})).await;
    let mut peripherals: Vec<String> = peripherals
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"].as_str().unwrap().starts_with("child<"))
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    peripherals.sort();
    let nodes = client.execute("query-named-block-nodes", json!({"flat": true})).await.unwrap();
    let mut nodes: Vec<String> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node-name"].as_str().unwrap().to_owned())
        .filter(|n| !n.starts_with('#'))
        .collect();
    nodes.sort();
    let fdsets = client.execute("query-fdsets", ()).await.unwrap();
    json!({"peripherals": peripherals, "nodes": nodes, "fdsets": fdsets})
}

async fn qom(client: &Client, path: &str, property: &str) -> Value {
    client.execute("qom-get", json!({"path": path, "property": property})).await.unwrap()
}

/// Adds two LUNs on a controller the first add hot-adds, adopts a retry, refuses a
/// different bus, removes the LUNs (the controller stays until asked), then the
/// controller; returns the controller's id.
async fn lun_cycle(qemu: &Qemu, hotplug: &Hotplug, controller_id: &str, lun_prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let start = qemu.serial_len();
    let first = scsi_disk("s1", image(dir.path(), "s1.img", 1), None);
    hotplug.check_disk_support(&first).await.unwrap();
    let report = hotplug.add_disk(&first, None).await.unwrap();
    assert_eq!((report.outcome, report.model.as_str()), (Outcome::Added, "scsi-hd"));
    assert_eq!(report.id.to_string(), format!("disk-s1-{lun_prefix}-0.0"));
    let seen = guest_line(qemu, start, "+sda");
    qemu.wait_for_serial_after(start, "BLOCK sda sectors=8192 media=1", GUEST_SEES).unwrap();
    let peripheral = format!("/machine/peripheral/{}", report.id);
    assert_eq!(
        qom(hotplug.client(), &peripheral, "parent_bus").await,
        format!("/machine/peripheral/{controller_id}/virtio-backend/{controller_id}.0"),
        "{seen}"
    );

    // The second LUN goes on the same controller, at the next target.
    let second = scsi_disk("s2", image(dir.path(), "s2.img", 2), None);
    let report2 = hotplug.add_disk(&second, None).await.unwrap();
    assert_eq!(report2.id.to_string(), format!("disk-s2-{lun_prefix}-1.0"));
    guest_line(qemu, start, "+sdb");

    // The LUNs' nodes and fdsets are theirs, not leftovers.
    let leftovers = hotplug.leftovers().await.unwrap();
    assert!(leftovers.items.is_empty(), "{leftovers:?}");
    // A retry of the same spec is adopted; on another bus it is a conflict.
    let again = hotplug.add_disk(&first, None).await.unwrap();
    assert_eq!((again.outcome, again.id), (Outcome::AlreadyPresent, report.id.clone()));
    let before = qemu_state(hotplug.client()).await;
    let virtio = DiskSpec { bus: DiskBus::Virtio, model: "virtio-blk-pci".into(), ..first.clone() };
    let Err(Error::Conflict { differences, .. }) = hotplug.add_disk(&virtio, None).await else {
        panic!("a virtio retry of a SCSI disk was not a conflict")
    };
    let fields: Vec<&str> = differences.iter().map(|d| d.field).collect();
    assert_eq!(fields, ["model", "bus"], "{differences:?}");
    let elsewhere = scsi_disk("s1", image(dir.path(), "s1.img", 1), Some("elsewhere"));
    let Err(Error::Conflict { differences, .. }) = hotplug.add_disk(&elsewhere, None).await else {
        panic!("a retry naming another controller was not a conflict")
    };
    assert_eq!(
        differences[0].to_string(),
        format!("controller: asked elsewhere, QEMU has {controller_id}")
    );
    assert_eq!(qemu_state(hotplug.client()).await, before, "a conflict changes nothing");

    // The controller is not removed while a LUN is on it.
    let error = hotplug.del_scsi_controller(controller_id, &remove()).await.unwrap_err();
    assert!(matches!(error, Error::ScsiController { .. }), "{error}");
    assert!(error.to_string().contains("2 device(s) are still on its bus"), "{error}");
    assert_eq!(qemu_state(hotplug.client()).await, before, "the refusal changes nothing");

    let removal = qemu.serial_len();
    for (report, disk) in [(&report, "sda"), (&report2, "sdb")] {
        let outcome = hotplug.del_disk(&report.id.to_string(), &remove()).await.unwrap();
        assert_eq!(outcome, Outcome::Removed);
        guest_line(qemu, removal, &format!("-{disk}"));
    }
    let left = qemu_state(hotplug.client()).await;
    assert_eq!(left["nodes"], json!([]), "{left}");
    assert_eq!(left["fdsets"], json!([]), "{left}");
    assert!(left["peripherals"].as_array().unwrap().contains(&json!(controller_id)), "{left}");
    assert!(
        hotplug.leftovers().await.unwrap().items.is_empty(),
        "an empty controller of ours is not a leftover"
    );

    let outcome = hotplug.del_scsi_controller(controller_id, &remove()).await.unwrap();
    assert_eq!(outcome, Outcome::Removed);
    let left = qemu_state(hotplug.client()).await;
    assert!(!left["peripherals"].as_array().unwrap().contains(&json!(controller_id)), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scsi_luns_on_a_hot_added_controller_come_and_go_on_pc() {
    let qemu = guest_or_skip!();
    let hotplug = connect(&qemu).await;
    // pc's bus 0 has slots 0 and 1 taken: the controller goes into slot 2.
    lun_cycle(&qemu, &hotplug, "scsi-hba-pci-2", "pci-2").await;
    assert_eq!(qemu_state(hotplug.client()).await["peripherals"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scsi_luns_on_a_controller_in_a_q35_root_port_come_and_go() {
    let qemu = guest_or_skip!(QemuBuilder::new().machine("q35").root_ports(1));
    let hotplug = connect(&qemu).await;
    lun_cycle(&qemu, &hotplug, "scsi-hba-rp1-0", "rp1-0").await;
    assert_eq!(qemu_state(hotplug.client()).await["peripherals"], json!(["rp1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_controller_takes_the_first_free_unit_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let boot = image(dir.path(), "boot.img", 0);
    let qemu = guest_or_skip!(QemuBuilder::new().args([
        "-device".to_owned(),
        "virtio-scsi-pci,id=scsi0,addr=0x4".to_owned(),
        "-drive".to_owned(),
        format!("if=none,id=boot0,format=raw,file={}", boot.display()),
        "-device".to_owned(),
        "scsi-hd,drive=boot0,bus=scsi0.0,scsi-id=0,lun=0,id=boot".to_owned(),
        "-device".to_owned(),
        "virtio-net-pci,id=net0,addr=0x5".to_owned(),
    ]));
    let hotplug = connect(&qemu).await;
    let before = qemu_state(hotplug.client()).await;
    for (controller, reason) in [
        ("net0", "it is a virtio-net-pci device, not a virtio-scsi-pci controller"),
        ("boot", "it is a scsi-hd device, not a virtio-scsi-pci controller"),
        ("nope", "QEMU has no device with this id"),
    ] {
        let spec = scsi_disk("g1", image(dir.path(), "g1.img", 3), Some(controller));
        let error = hotplug.add_disk(&spec, None).await.unwrap_err();
        assert!(matches!(error, Error::ScsiController { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!("SCSI controller '{controller}': {reason}; nothing was changed")
        );
        assert_eq!(qemu_state(hotplug.client()).await, before, "{controller}: nothing changes");
    }
    // A removal of the caller's controller is refused: it is not ours.
    let error = hotplug.del_scsi_controller("scsi0", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidName { .. }), "{error}");

    let start = qemu.serial_len();
    let spec = scsi_disk("g1", image(dir.path(), "g1.img", 3), Some("scsi0"));
    let report = hotplug.add_disk(&spec, None).await.unwrap();
    // Target 0 is the boot disk's: the next free one is 1.
    assert_eq!(report.id.to_string(), "disk-g1-pci-4-1.0");
    guest_line(&qemu, start, "+sdb");
    assert_eq!(hotplug.add_disk(&spec, None).await.unwrap().outcome, Outcome::AlreadyPresent);
    let removal = qemu.serial_len();
    assert_eq!(
        hotplug.del_disk(&report.id.to_string(), &remove()).await.unwrap(),
        Outcome::Removed
    );
    guest_line(&qemu, removal, "-sdb");
    assert_eq!(qemu_state(hotplug.client()).await, before, "only the LUN and its parts went");

    // A -drive LUN: query-block names its user by the bare id `boot` (no QOM path), which
    // del_drive must read as the owner of boot0.
    let removal = qemu.serial_len();
    assert_eq!(hotplug.del_drive("boot", "boot0", &remove()).await.unwrap(), Outcome::Removed);
    guest_line(&qemu, removal, "-sda");
}

/// A failure at each step of a SCSI add that hot-adds its controller (the step's
/// arguments made invalid, so QEMU itself refuses it) leaves QEMU as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_step_of_a_scsi_add_leaves_qemu_as_it_was() {
    let qemu = guest_or_skip!();
    let hotplug = connect(&qemu).await;
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), "r.img", 5);
    let host = LocalHost;
    let opened = host.open_image(&path, Access::ReadWrite).unwrap();
    let facts = host.inspect_image(&opened).unwrap();
    let spec = scsi_disk("r1", path, None);
    let snapshot = hotplug.snapshot().await.unwrap();
    let (id, plan) = hotplug.planner().disk_add(&spec, Some(&facts.identity), &snapshot).unwrap();
    assert_eq!(id.to_string(), "disk-r1-pci-2-0.0");
    let commands: Vec<&str> = plan.steps().iter().map(|s| s.step.command()).collect();
    assert_eq!(commands, ["device_add", "add-fd", "blockdev-add", "device_add"]);
    assert_eq!(plan.steps()[0].step.to_string(), "device_add scsi-hba-pci-2");
    assert_eq!(plan.steps()[3].step.to_string(), "device_add disk-r1-pci-2-0.0");
    let before = qemu_state(hotplug.client()).await;
    let fds = PlanFds { image: Some(opened.as_fd()), ..PlanFds::default() };
    for failing in 0..plan.steps().len() {
        let steps = plan
            .steps()
            .iter()
            .enumerate()
            .map(
                |(index, planned)| if index == failing { broken(planned) } else { planned.clone() },
            )
            .collect();
        let error =
            hotplug.run(&Plan::new(steps), &fds, Duration::from_secs(30)).await.unwrap_err();
        let Error::Step { rollback, .. } = &error else { panic!("step {failing}: {error}") };
        assert!(rollback.is_empty(), "step {failing}: {error}");
        assert_eq!(qemu_state(hotplug.client()).await, before, "after a failure at step {failing}");
    }
    // And unbroken, the plan works.
    hotplug.run(&plan, &fds, Duration::from_secs(30)).await.unwrap();
    qemu.wait_for_serial("BLOCK sda sectors=8192 media=1", GUEST_SEES).unwrap();
}

/// The step with an argument QEMU refuses (an fd step: a descriptor the plan lacks).
fn broken(planned: &PlannedStep) -> PlannedStep {
    let step = match &planned.step {
        Step::DeviceAdd { id, arguments } => {
            let mut arguments = arguments.clone();
            arguments.insert("no-such-property".into(), true.into());
            Step::DeviceAdd { id: id.clone(), arguments }
        }
        Step::BlockdevAdd { node_name, arguments, fdset } => {
            let mut arguments = arguments.clone();
            arguments.insert("driver".into(), "no-such-driver".into());
            Step::BlockdevAdd { node_name: node_name.clone(), arguments, fdset: *fdset }
        }
        Step::AddFd { opaque, .. } => {
            Step::AddFd { opaque: opaque.clone(), fd: qmp_hotplug::FdRef::Tap(7) }
        }
        other => panic!("no way to break {other}"),
    };
    PlannedStep::new(step, planned.undo.clone())
}
