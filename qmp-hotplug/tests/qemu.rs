//! Hotplug against a real QEMU 7.2. Tests with a guest boot the project's test guest
//! (`scripts/build-guest`), which answers ACPI unplug requests and prints a serial line per
//! device it sees come or go; with `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails them.
//!
//! The `repro_*` tests are the reproductions of issue 10, each failing on the code before
//! it (the report of that change lists the evidence).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hostdev::FileKind;
use hostdev::tap::Tap;
use qemu_launcher::{Qemu, QemuBuilder, guest_or_skip, qemu_or_skip};
use qmp_client::Client;
use qmp_hotplug::{
    DeviceKind, DiskFormat, DiskSource, DiskSpec, Error, Hotplug, LeftoverPart, NbdExport, NicSpec,
    Outcome, Plan, PlanFds, RemoveOptions, Vhost,
};
use serde_json::{Value, json};

/// Deadlines for the guest (TCG, on a loaded 2-core CI machine with other guests booting),
/// not speed: passing runs take 0.1-3 s.
const UNPLUG: Duration = Duration::from_secs(60);
const GUEST_SEES: Duration = Duration::from_secs(60);
const NO_VHOST: &[OwnedFd] = &[];

fn remove() -> RemoveOptions {
    RemoveOptions::new(UNPLUG)
}

/// A `Hotplug` over a new connection whose schema is loaded (also used by the support
/// checks' probes, and by every command when `QMP_CHECK_ARGUMENTS=1`), so that the tests'
/// tight operation deadlines are not spent on fetching and parsing it.
async fn connect(qemu: &Qemu) -> Hotplug {
    let client = Client::connect(qemu.qmp_path()).await.expect("connect to QEMU");
    assert!(client.schema().await.expect("QEMU's schema").is_some());
    Hotplug::new(client)
}

/// Everything hotplug could leave behind, as QEMU reports it.
async fn qemu_state(client: &Client) -> Value {
    let pci = client.execute("query-pci", ()).await.unwrap();
    let ids: Vec<Value> = pci[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["qdev_id"] != "")
        .map(|d| d["qdev_id"].clone())
        .collect();
    let children = |list: Value| -> Vec<Value> {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"].as_str().unwrap().starts_with("child<"))
            .map(|p| p["name"].clone())
            .collect()
    };
    let peripherals =
        children(client.execute("qom-list", json!({"path": "/machine/peripheral"})).await.unwrap());
    let objects: Vec<Value> =
        children(client.execute("qom-list", json!({"path": "/objects"})).await.unwrap())
            .into_iter()
            .filter(|name| name.as_str().unwrap().starts_with("qmp-rs"))
            .collect();
    let nodes = client.execute("query-named-block-nodes", json!({"flat": true})).await.unwrap();
    let nodes: Vec<Value> =
        nodes.as_array().unwrap().iter().map(|n| n["node-name"].clone()).collect();
    let fdsets = client.execute("query-fdsets", ()).await.unwrap();
    json!({"pci": ids, "peripherals": peripherals, "nodes": nodes, "fdsets": fdsets,
           "objects": objects})
}

/// A property of one of our devices (`qom-get /machine/peripheral/ID PROPERTY`).
async fn qom_get(client: &Client, id: &str, property: &str) -> Value {
    let path = format!("/machine/peripheral/{id}");
    client.execute("qom-get", json!({"path": path, "property": property})).await.unwrap()
}

async fn assert_clean(client: &Client) {
    let left = qemu_state(client).await;
    let empty = json!({"pci": [], "peripherals": [], "nodes": [], "fdsets": [], "objects": []});
    assert_eq!(left, empty, "QEMU still holds something of ours");
}

/// Writes 512 bytes of `byte` at offset 0 through device `id` (HMP `qemu-io`, whose
/// own output goes to QEMU's stdout, not to the monitor), so the image file that changes
/// shows which image the device really has.
async fn write_through_device(client: &Client, id: &str, byte: u8) {
    let line = format!("qemu-io -d {id}/virtio-backend \"write -P {byte} 0 512\"");
    let output = client.human_monitor_command(&line).await.unwrap();
    assert_eq!(output, "", "{line}");
}

fn first_byte(path: &Path) -> u8 {
    std::fs::read(path).unwrap()[0]
}

/// The guest's serial line for `change` (`+eth0`, `-vda`, ...), after byte `offset`.
fn guest_line(qemu: &Qemu, offset: usize, change: &str) -> String {
    let line = qemu
        .wait_for_serial_after(offset, &format!("GUEST: {change} "), GUEST_SEES)
        .unwrap_or_else(|error| panic!("the guest never printed {change}: {error}"));
    line.line
}

fn pci_addr(slot: u8) -> String {
    format!("pci=0000:00:{slot:02x}.0")
}

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Waits (briefly) until the interface is gone: its last descriptor was closed.
fn wait_interface_gone(name: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if !interface_exists(name) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn filled(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![byte; 1 << 20]).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nics_single_and_multiqueue_come_and_go_in_the_guest() {
    let qemu = guest_or_skip!();
    let hotplug = connect(&qemu).await;
    hotplug.check_nic_support(&NicSpec::new("x")).await.unwrap();

    let single = Tap::open("qhtest%d", 1).unwrap();
    let start = qemu.serial_len();
    let mut spec = NicSpec::new("single");
    spec.mac = Some("52:54:00:00:00:01".into());
    let first = hotplug.add_nic(&spec, single.queues(), NO_VHOST).await.unwrap();
    let seen = guest_line(&qemu, start, "+eth0");
    assert!(seen.contains(&pci_addr(first.id.slot())), "{seen}");
    assert!(hotplug.has_device(&first.id).await.unwrap());
    assert_eq!(first.mac.as_deref(), Some("52:54:00:00:00:01"));
    assert_eq!(first.queues.len(), 1);
    assert_eq!(first.queues[0].tap.as_deref(), Some(single.name()), "read back from QEMU");

    let multi = Tap::open("qhtest%d", 2).unwrap();
    let spec = NicSpec { queues: 2, ..NicSpec::new("multi") };
    let second = hotplug.add_nic(&spec, multi.queues(), NO_VHOST).await.unwrap();
    assert_eq!(second.id.slot(), first.id.slot() + 1);
    let seen = guest_line(&qemu, start, "+eth1");
    assert!(seen.contains(&pci_addr(second.id.slot())), "{seen}");
    let mq = qom_get(hotplug.client(), &second.id.to_string(), "mq").await;
    assert_eq!(mq, true);
    let taps: Vec<Option<&str>> = second.queues.iter().map(|q| q.tap.as_deref()).collect();
    assert_eq!(taps, [Some(multi.name()), Some(multi.name())]);

    let (single_name, multi_name) = (single.name().to_owned(), multi.name().to_owned());
    drop((single, multi)); // QEMU holds its own copies now.
    assert!(interface_exists(&single_name) && interface_exists(&multi_name));

    let before_del = qemu.serial_len();
    let removed = hotplug.del_nic(&first.id.to_string(), &remove()).await.unwrap();
    assert_eq!(removed, Outcome::Removed);
    guest_line(&qemu, before_del, "-eth0");
    hotplug.del_nic(&second.id.to_string(), &remove()).await.unwrap();
    guest_line(&qemu, before_del, "-eth1");
    assert_clean(hotplug.client()).await;
    assert!(
        wait_interface_gone(&single_name) && wait_interface_gone(&multi_name),
        "QEMU closed the taps"
    );

    // The freed slot is handed out again.
    let again = Tap::open("qhtest%d", 1).unwrap();
    let third = hotplug.add_nic(&NicSpec::new("again"), again.queues(), NO_VHOST).await.unwrap();
    assert_eq!(third.id.slot(), first.id.slot());
    hotplug.del_nic(&third.id.to_string(), &remove()).await.unwrap();
    assert_clean(hotplug.client()).await;
}

struct NbdServer(Child);

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_img(args: &[&str]) {
    let status =
        Command::new("qemu-img").args(args).status().expect("qemu-img (Debian qemu-utils)");
    assert!(status.success(), "qemu-img {args:?}");
}

fn start_nbd(image: &Path, socket: &Path) -> NbdServer {
    let child = Command::new("qemu-nbd")
        .args(["-k", socket.to_str().unwrap(), "-f", "qcow2", "-x", "exp0", "--persistent"])
        .arg(image)
        .spawn()
        .expect("qemu-nbd (Debian qemu-utils)");
    let server = NbdServer(child);
    for _ in 0..500 {
        if socket.exists() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("qemu-nbd did not create {}", socket.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_qcow2_and_nbd_disks_come_and_go_in_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let drive_image = dir.path().join("legacy.raw");
    std::fs::write(&drive_image, vec![0u8; 1 << 20]).unwrap();
    let qemu = guest_or_skip!(QemuBuilder::new().args([
        "-drive".to_owned(),
        format!("if=none,id=legacy0,format=raw,file={}", drive_image.display()),
    ]));
    let hotplug = connect(&qemu).await;

    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0u8; 4 << 20]).unwrap();
    let qcow2 = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", qcow2.to_str().unwrap(), "8M"]);
    let exported = dir.path().join("nbd.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", exported.to_str().unwrap(), "8M"]);
    let socket = dir.path().join("nbd.sock");
    let _nbd = start_nbd(&exported, &socket);

    let raw_spec = DiskSpec::new("raw", DiskSource::Path(raw));
    let qcow2_spec =
        DiskSpec { format: DiskFormat::Qcow2, ..DiskSpec::new("qcow", DiskSource::Path(qcow2)) };
    let uri = format!("nbd+unix:///exp0?socket={}", socket.display());
    let nbd_spec = DiskSpec::new("nbd", DiskSource::Nbd(NbdExport::parse_uri(&uri).unwrap()));
    for spec in [&raw_spec, &qcow2_spec, &nbd_spec] {
        hotplug.check_disk_support(spec).await.unwrap();
    }

    let start = qemu.serial_len();
    let mut ids = Vec::new();
    for (spec, disk) in [(&raw_spec, "vda"), (&qcow2_spec, "vdb"), (&nbd_spec, "vdc")] {
        let report = hotplug.add_disk(spec, None).await.unwrap();
        let seen = guest_line(&qemu, start, &format!("+{disk}"));
        assert!(seen.contains(&pci_addr(report.id.slot())), "{seen}");
        ids.push(report.id);
    }
    // Each image stays in its own fdset, fingerprinted; NBD passes none.
    let fdsets = hotplug.client().query_fdsets().await.unwrap();
    let opaques: Vec<&str> =
        fdsets.iter().flat_map(|set| &set.fds).filter_map(|fd| fd.opaque.as_deref()).collect();
    assert_eq!(opaques.len(), 2, "{fdsets:?}");
    assert!(opaques.iter().all(|o| o.starts_with("qmp-rs:disk-") && o.contains(":file=")));
    // The same specs again: already present, nothing sent.
    for spec in [&raw_spec, &qcow2_spec, &nbd_spec] {
        let again = hotplug.add_disk(spec, None).await.unwrap();
        assert_eq!(again.outcome, Outcome::AlreadyPresent, "{}", again.id);
    }

    // A disk that came from -drive: device_add on it, then remove it the HMP way.
    let legacy_slot = hotplug.free_place(DeviceKind::Disk, "legacy").await.unwrap().slot;
    hotplug
        .client()
        .execute("device_add", json!({"driver": "virtio-blk-pci", "drive": "legacy0", "id": "legacy-dev", "addr": format!("0x{legacy_slot:x}")}))
        .await
        .unwrap();
    guest_line(&qemu, start, "+vdd");

    let before_del = qemu.serial_len();
    for (id, disk) in ids.iter().zip(["vda", "vdb", "vdc"]) {
        hotplug.del_disk(&id.to_string(), &remove()).await.unwrap();
        guest_line(&qemu, before_del, &format!("-{disk}"));
    }
    let removed = hotplug.del_drive("legacy-dev", "legacy0", &remove()).await.unwrap();
    assert_eq!(removed, Outcome::Removed);
    guest_line(&qemu, before_del, "-vdd");
    assert_clean(hotplug.client()).await;
    let block = hotplug.client().execute("query-block", ()).await.unwrap();
    assert_eq!(block, json!([]), "the legacy drive is gone");
    // Removing it again finds nothing: an error, or Absent when that is fine.
    let again = hotplug.del_drive("legacy-dev", "legacy0", &remove()).await.unwrap_err();
    assert!(matches!(again, Error::NotFound { .. }), "{again}");
    let absent = hotplug.del_drive("legacy-dev", "legacy0", &remove().missing_ok(true)).await;
    assert_eq!(absent.unwrap(), Outcome::Absent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_fills_then_the_next_add_fails_cleanly_and_a_freed_slot_is_reused() {
    let qemu = guest_or_skip!();
    let hotplug = connect(&qemu).await;
    let free: Vec<u8> = hotplug.pci_slots().await.unwrap().free_slots().collect();
    assert_eq!(free, (2..32).collect::<Vec<_>>(), "an empty pc machine uses slots 0 and 1");
    let mut taps = Vec::new();
    let mut ids = Vec::new();
    for n in 0..free.len() {
        let tap = Tap::open("qhfill%d", 1).unwrap();
        let report =
            hotplug.add_nic(&NicSpec::new(format!("f{n}")), tap.queues(), NO_VHOST).await.unwrap();
        ids.push(report.id);
        taps.push(tap);
    }
    let before = qemu_state(hotplug.client()).await;
    let extra = Tap::open("qhfill%d", 1).unwrap();
    let error =
        hotplug.add_nic(&NicSpec::new("extra"), extra.queues(), NO_VHOST).await.unwrap_err();
    assert!(matches!(error, Error::NoFreePlace(_)), "{error}");
    assert!(error.to_string().contains("pci.0: no free slot"), "{error}");
    assert_eq!(qemu_state(hotplug.client()).await, before, "a full bus changes nothing");

    let freed = &ids[7];
    hotplug.del_nic(&freed.to_string(), &remove()).await.unwrap();
    let reused = hotplug.add_nic(&NicSpec::new("extra"), extra.queues(), NO_VHOST).await.unwrap();
    assert_eq!(reused.id.slot(), freed.slot());
    let seen = qemu.wait_for_serial(&pci_addr(reused.id.slot()), GUEST_SEES).unwrap();
    assert!(seen.contains("GUEST: +eth"), "{seen}");
}

/// Failures QEMU itself produces, one per step: the error names the step and QEMU's
/// reason, and nothing of ours is left. No guest is needed: nothing is unplugged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_step_leaves_qemu_clean() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let client = hotplug.client().clone();
    let dir = tempfile::tempdir().unwrap();

    // netdev_add: a socket is not a tap device.
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let error = hotplug.add_nic(&NicSpec::new("pipe"), &[socket], NO_VHOST).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("netdev_add nic-pipe-pci-2"), "{error}");
    assert!(error.qmp_error().is_some(), "{error}");
    assert_clean(&client).await;
    // The consumed getfd name is gone too: closefd finds nothing.
    let closefd = client.close_fd("nic-pipe-pci-2-tap0").await.unwrap_err();
    assert!(closefd.to_string().contains("not found"), "{closefd}");

    // device_add: a property QEMU rejects, after getfd and netdev_add succeeded.
    let tap = Tap::open("qhfail%d", 1).unwrap();
    let mut spec = NicSpec::new("mac");
    spec.features.insert("no_such_property".into(), json!(true));
    let error = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("device_add nic-mac-pci-2"), "{error}");
    assert_clean(&client).await;
    // A MAC QEMU would reject is refused before QEMU hears of it.
    let before = qemu_state(&client).await;
    for mac in ["not-a-mac", "53:54:00:12:34:56"] {
        let spec = NicSpec { mac: Some(mac.into()), ..NicSpec::new("mac") };
        let error = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap_err();
        assert!(matches!(error, Error::InvalidSpec(_)), "{mac}: {error}");
    }
    assert_eq!(qemu_state(&client).await, before);

    // device_add: a slot taken behind the planner's back, in a plan run by hand.
    client.execute("netdev_add", json!({"type": "user", "id": "racer"})).await.unwrap();
    let raced = hotplug.snapshot().await.unwrap();
    client
        .execute(
            "device_add",
            json!({"driver": "virtio-net-pci", "netdev": "racer", "id": "racer", "addr": "0x2"}),
        )
        .await
        .unwrap();
    let (_, plan) = hotplug.planner().nic_add(&NicSpec::new("late"), &raced).unwrap();
    let fds = PlanFds { taps: vec![tap.queues()[0].as_fd()], ..PlanFds::default() };
    let error = hotplug.run(&plan, &fds, UNPLUG).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("device_add nic-late-pci-2"), "{error}");
    assert!(error.qmp_error().unwrap().1.contains("not available"), "{error}");
    // Only the racer's own device and netdev remain.
    let left = qemu_state(&client).await;
    assert_eq!(left["peripherals"], json!(["racer"]), "{left}");
    assert_eq!(left["objects"], json!([]), "{left}");
    drop(tap);

    // blockdev-add: a raw file declared qcow2, the mismatch allowed, so QEMU sees it.
    let raw = dir.path().join("raw.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let spec = DiskSpec {
        format: DiskFormat::Qcow2,
        allow_format_mismatch: true,
        ..DiskSpec::new("fmt", DiskSource::Path(raw.clone()))
    };
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("blockdev-add disk-fmt-pci-3"), "{error}");
    assert!(error.to_string().contains("qcow2"), "{error}");
    assert_eq!(qemu_state(&client).await["fdsets"], json!([]));
    assert_eq!(qemu_state(&client).await["nodes"], json!([]));

    // device_add: an unknown device model, after add-fd and blockdev-add.
    let spec =
        DiskSpec { model: "no-such-model".into(), ..DiskSpec::new("model", DiskSource::Path(raw)) };
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("device_add disk-model-pci-3"), "{error}");
    assert_eq!(qemu_state(&client).await["nodes"], json!([]));
    assert_eq!(qemu_state(&client).await["fdsets"], json!([]));

    // A missing image: refused before QEMU hears of it.
    let spec = DiskSpec::new("gone", DiskSource::Path(dir.path().join("missing.img")));
    assert!(matches!(hotplug.add_disk(&spec, None).await, Err(Error::Open { .. })));
    assert_eq!(qemu_state(&client).await["nodes"], json!([]));
}

/// A try that died half-way (the first two steps run by hand, as if the manager died after
/// `blockdev-add`) left an fdset and a node: the next add removes them and adds afresh,
/// with its own fdset (QEMU, running, closed the earlier one, so it may hand out its id
/// again; on a paused VM it cannot, see `repro_1_...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replaces_a_half_done_disk_add() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let dir = tempfile::tempdir().unwrap();
    let image = filled(dir.path(), "disk.img", 0);
    let spec = DiskSpec::new("retry", DiskSource::Path(image.clone()));
    let identity = hostdev::image::open_image(&image, hostdev::image::Access::ReadOnly)
        .unwrap()
        .identity()
        .unwrap();
    let snapshot = hotplug.snapshot().await.unwrap();
    let (id, plan) = hotplug.planner().disk_add(&spec, Some(&identity), &snapshot).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&image).unwrap();
    let half = Plan::new(plan.steps()[..2].to_vec());
    hotplug
        .run(&half, &PlanFds { image: Some(file.as_fd()), ..PlanFds::default() }, UNPLUG)
        .await
        .unwrap();
    let earlier = hotplug.client().query_fdsets().await.unwrap();
    assert_eq!(earlier.len(), 1);
    let leftovers = hotplug.leftovers().await.unwrap();
    let parts: Vec<&LeftoverPart> = leftovers.items.iter().map(|item| &item.part).collect();
    assert!(
        matches!(parts[..], [LeftoverPart::BlockNode { .. }, LeftoverPart::Fdset { .. }]),
        "the node without a device, and the fdset only it reads: {leftovers:?}"
    );

    let report = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!((report.id.clone(), report.outcome), (id.clone(), Outcome::Added));
    let fdsets = hotplug.client().query_fdsets().await.unwrap();
    assert_eq!(fdsets.len(), 1, "one fdset, not one per try: {fdsets:?}");
    assert_eq!(fdsets[0].fds.len(), 1, "{fdsets:?}");
    assert_eq!(report.fdset_id, Some(fdsets[0].fdset_id));
    let left = qemu_state(hotplug.client()).await;
    assert_eq!(left["peripherals"], json!([id.to_string()]));
    assert!(hotplug.leftovers().await.unwrap().is_empty());
}

/// A machine with no guest OS never acknowledges an unplug: the removal times out with a
/// typed error instead of hanging, and the NIC keeps its netdev.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_unplug_times_out_and_keeps_the_netdev() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let tap = Tap::open("qhtime%d", 1).unwrap();
    let id = hotplug.add_nic(&NicSpec::new("stuck"), tap.queues(), NO_VHOST).await.unwrap().id;
    let options = RemoveOptions::new(Duration::from_millis(500));
    let error = hotplug.del_nic(&id.to_string(), &options).await.unwrap_err();
    assert_eq!(error.failed_step(), Some(format!("device_del {id}").as_str()), "{error}");
    assert!(error.to_string().contains("did not acknowledge"), "{error}");
    let netdev = qom_get(hotplug.client(), &id.to_string(), "netdev").await;
    assert_eq!(netdev, json!(id.netdev_id()), "the NIC still has its backend");
}

/// QEMU 7.2 aborts on a tap netdev with vhost it cannot start; the crate refuses first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_is_refused_unless_usable_and_qemu_keeps_running() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let tap = Tap::open("qhvhost%d", 1).unwrap();
    let spec = NicSpec { vhost: Vhost::Open, ..NicSpec::new("vh") };
    let result = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await;
    if hostdev::vhost::vhost_net_usable().is_ok() {
        let report = result.unwrap();
        assert!(hotplug.has_device(&report.id).await.unwrap());
    } else {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Unsupported(_)), "{error}");
        assert!(error.to_string().contains("vhost"), "{error}");
    }
    let status = hotplug.client().execute("query-status", ()).await.unwrap();
    assert_eq!(status["status"], "running", "QEMU is alive");
}

/// A NIC add that died after `netdev_add` left its marker and a netdev without its
/// device; a retry removes both and adds afresh, leaving one tap netdev and no marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replaces_a_half_done_nic_add() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let tap = Tap::open("qhretry%d", 1).unwrap();
    let spec = NicSpec::new("retry");
    let (id, plan) = hotplug.planner().nic_add(&spec, &hotplug.snapshot().await.unwrap()).unwrap();
    let half = Plan::new(plan.steps()[..3].to_vec());
    let fds = PlanFds { taps: vec![tap.queues()[0].as_fd()], ..PlanFds::default() };
    hotplug.run(&half, &fds, UNPLUG).await.unwrap();

    let again = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap();
    assert_eq!((again.id.clone(), again.outcome), (id.clone(), Outcome::Added));
    let netdev = qom_get(hotplug.client(), &id.to_string(), "netdev").await;
    assert_eq!(netdev, json!(id.netdev_id()));
    let network = hotplug.client().human_monitor_command("info network").await.unwrap();
    assert_eq!(network.matches("type=tap").count(), 1, "one tap netdev: {network}");
    assert_eq!(qemu_state(hotplug.client()).await["objects"], json!([]));
}

/// Issue 10, reproduction 1: on a paused VM a failed disk add's fdset stays listed (and
/// usable) after `remove-fd`. The next add of the same name for another image used to
/// take that set and attach the first image. Now the device reads the second image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_1_a_paused_vm_never_attaches_an_earlier_tries_image() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let dir = tempfile::tempdir().unwrap();
    let a = filled(dir.path(), "A.raw", b'A');
    let a_path = a.clone();
    let b = filled(dir.path(), "B.raw", b'B');
    hotplug.client().execute("stop", ()).await.unwrap();
    let first = DiskSpec {
        format: DiskFormat::Qcow2,
        allow_format_mismatch: true, // so that QEMU, not the header check, refuses it
        ..DiskSpec::new("d1", DiskSource::Path(a_path))
    };
    let error = hotplug.add_disk(&first, None).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("blockdev-add disk-d1-pci-2"), "{error}");
    let listed = hotplug.client().query_fdsets().await.unwrap();
    assert_eq!(listed.len(), 1, "QEMU keeps the removed descriptor listed while paused");

    let report =
        hotplug.add_disk(&DiskSpec::new("d1", DiskSource::Path(b.clone())), None).await.unwrap();
    write_through_device(hotplug.client(), &report.id.to_string(), b'Z').await;
    assert_eq!(first_byte(&b), b'Z', "the device writes the image asked for");
    assert_eq!(first_byte(&a), b'A', "not the earlier try's");
    assert_ne!(report.fdset_id, Some(listed[0].fdset_id));
}

/// Issue 10, reproductions 2, 3 and 4, on one guest: a typo'd device id with a live
/// `--drive`, a NIC's id given to a disk removal, ids that never existed, and same-name
/// adds with another MAC, queue count or model. Each is refused before anything is sent
/// (the devices keep working, as the guest's removal at the end shows), and the same spec
/// again is `AlreadyPresent`, reporting the tap that carries the NIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_2_3_4_removal_checks_and_same_name_adds() {
    let dir = tempfile::tempdir().unwrap();
    let drive_image = filled(dir.path(), "drv0.raw", 0);
    let qemu = guest_or_skip!(QemuBuilder::new().args([
        "-drive".to_owned(),
        format!("if=none,id=drv0,format=raw,file={}", drive_image.display()),
        "-device".to_owned(),
        "virtio-blk-pci,drive=drv0,id=legacy-dev,addr=0x1f".to_owned(),
    ]));
    let hotplug = connect(&qemu).await;
    let client = hotplug.client().clone();
    let tap = Tap::open("qhrep%d", 1).unwrap();
    let spec = NicSpec { mac: Some("52:54:00:00:10:01".into()), ..NicSpec::new("n1") };
    let start = qemu.serial_len();
    let nic = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap();
    guest_line(&qemu, start, "+eth0");
    let before = qemu_state(&client).await;

    // 2: a typo, with a drive that belongs to a running disk.
    let error = hotplug.del_drive("disk-tpyo-pci-9", "drv0", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error}");
    let error = hotplug.del_drive(&nic.id.to_string(), "drv0", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::WrongKind { .. }), "a NIC has no drive: {error}");
    let block = client.execute("query-block", ()).await.unwrap();
    assert_eq!(block[0]["device"], "drv0");
    assert!(block[0]["inserted"].is_object(), "drv0 still has its backend: {block}");

    // 3: a NIC's id to a disk removal; ids that never existed.
    let error = hotplug.del_disk(&nic.id.to_string(), &remove()).await.unwrap_err();
    assert!(matches!(error, Error::WrongKind { .. }), "{error}");
    for missing in ["nic-never-pci-9", "disk-never-pci-9"] {
        let error = if missing.starts_with("nic") {
            hotplug.del_nic(missing, &remove()).await
        } else {
            hotplug.del_disk(missing, &remove()).await
        }
        .unwrap_err();
        assert!(matches!(error, Error::NotFound { .. }), "{missing}: {error}");
    }

    // 4: same name, another MAC, queue count or model: a conflict naming the difference;
    // the caller's taps are not used.
    let other = Tap::open("qhrep%d", 2).unwrap();
    for (different, field) in [
        (NicSpec { mac: Some("52:54:00:00:10:02".into()), ..spec.clone() }, "mac"),
        (NicSpec { model: "e1000".into(), ..spec.clone() }, "model"),
    ] {
        let taps = &other.queues()[..1];
        match hotplug.add_nic(&different, taps, NO_VHOST).await {
            Err(Error::Conflict { differences, .. }) => assert_eq!(differences[0].field, field),
            result => panic!("{field}: {result:?}"),
        }
    }
    let two_queues = NicSpec { queues: 2, ..spec.clone() };
    match hotplug.add_nic(&two_queues, other.queues(), NO_VHOST).await {
        Err(Error::Conflict { differences, .. }) => assert_eq!(differences[0].field, "queues"),
        result => panic!("queues: {result:?}"),
    }
    assert_eq!(qemu_state(&client).await, before, "nothing changed");
    // The same spec again, with another tap: already present, carried by the first tap.
    let fresh = Tap::open("qhrep%d", 1).unwrap();
    let again = hotplug.add_nic(&spec, fresh.queues(), NO_VHOST).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPresent);
    assert_eq!(again.queues[0].tap.as_deref(), Some(tap.name()), "not {}", fresh.name());

    // Everything still works: the guest lets go of both on request.
    let before_del = qemu.serial_len();
    hotplug.del_nic(&nic.id.to_string(), &remove()).await.unwrap();
    guest_line(&qemu, before_del, "-eth0");
    hotplug.del_drive("legacy-dev", "drv0", &remove()).await.unwrap();
    guest_line(&qemu, before_del, "-vda");
    assert_clean(&client).await;
}

/// Issue 10, reproduction 5 (the FIFO part): a FIFO image, by path or as a caller's
/// descriptor, is refused at once, before QEMU hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_5_a_fifo_image_is_refused_before_qemu_is_touched() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("image.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
        .unwrap();
    let start = Instant::now();
    let spec = DiskSpec { read_only: true, ..DiskSpec::new("f", DiskSource::Path(fifo.clone())) };
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSource { kind: FileKind::Fifo, .. }), "{error}");
    let (read_end, _write_end) = nix::unistd::pipe().unwrap();
    let spec = DiskSpec::new("f", DiskSource::Fd);
    let error = hotplug.add_disk(&spec, Some(read_end.as_fd())).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSource { kind: FileKind::Fifo, .. }), "{error}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_clean(hotplug.client()).await;
}

/// Issue 10, reproduction 6: an unplug in prelaunch (`-S`, before the first `cont`)
/// wedges the device in QEMU 7.2. Nothing is sent then; after `cont` the same removal
/// works. On a paused VM the request is sent and `UnplugPending` returned at once; the
/// guest completes it after `cont`, and running the removal again deletes the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_6_no_unplug_in_prelaunch_and_a_paused_unplug_is_pending() {
    let qemu = guest_or_skip!(QemuBuilder::new().paused(true));
    let hotplug = connect(&qemu).await;
    let tap = Tap::open("qhpre%d", 1).unwrap();
    let nic = hotplug.add_nic(&NicSpec::new("early"), tap.queues(), NO_VHOST).await.unwrap();
    let id = nic.id.to_string();
    let error = hotplug.del_nic(&id, &remove()).await.unwrap_err();
    assert!(matches!(error, Error::NotRunning { .. }), "{error}");
    assert!(error.to_string().contains("prelaunch"), "{error}");

    hotplug.client().execute("cont", ()).await.unwrap();
    qemu.wait_guest_ready(Duration::from_secs(60)).unwrap();
    let before_del = qemu.serial_len();
    assert_eq!(hotplug.del_nic(&id, &remove()).await.unwrap(), Outcome::Removed);
    guest_line(&qemu, before_del, "-eth0");

    let before_add = qemu.serial_len();
    let second = hotplug.add_nic(&NicSpec::new("later"), tap.queues(), NO_VHOST).await.unwrap();
    guest_line(&qemu, before_add, "+eth0");
    let before = qemu.serial_len();
    hotplug.client().execute("stop", ()).await.unwrap();
    let started = Instant::now();
    let error = hotplug.del_nic(&second.id.to_string(), &remove()).await.unwrap_err();
    assert!(matches!(error, Error::UnplugPending { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not after the timeout");
    hotplug.client().execute("cont", ()).await.unwrap();
    guest_line(&qemu, before, "-eth0");
    assert_eq!(hotplug.del_nic(&second.id.to_string(), &remove()).await.unwrap(), Outcome::Removed);
    assert_clean(hotplug.client()).await;
}

/// Issue 10, reproduction 7: two managers on QEMU's two monitors add NICs at the same
/// time. Both plan the first free slot; the loser's `device_add` fails, it rolls back,
/// reads QEMU again and takes the next slot. Three rounds, six NICs, all added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_7_two_managers_adding_at_once_both_succeed() {
    let sockets = tempfile::tempdir().unwrap();
    let second_socket = sockets.path().join("second.sock");
    let qemu =
        qemu_or_skip!(QemuBuilder::new().args([
            "-qmp".to_owned(),
            format!("unix:{},server=on,wait=off", second_socket.display()),
        ]));
    let one = connect(&qemu).await;
    let two = Hotplug::new(Client::connect(&second_socket).await.expect("the second monitor"));
    let mut slots = Vec::new();
    let mut taps = Vec::new();
    for round in 0..3 {
        let (a, b) = (Tap::open("qhrace%d", 1).unwrap(), Tap::open("qhrace%d", 1).unwrap());
        let (spec_a, spec_b) =
            (NicSpec::new(format!("a{round}")), NicSpec::new(format!("b{round}")));
        let (first, second) = tokio::join!(
            one.add_nic(&spec_a, a.queues(), NO_VHOST),
            two.add_nic(&spec_b, b.queues(), NO_VHOST),
        );
        slots.push(first.unwrap_or_else(|e| panic!("round {round}, first: {e}")).id.slot());
        slots.push(second.unwrap_or_else(|e| panic!("round {round}, second: {e}")).id.slot());
        taps.extend([a, b]);
    }
    slots.sort_unstable();
    assert_eq!(slots, [2, 3, 4, 5, 6, 7]);
    assert_eq!(qemu_state(one.client()).await["objects"], json!([]));
}

/// A loop device over a file, detached (`losetup -d`) when dropped.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(backing: &Path) -> Self {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .expect("run losetup (util-linux); loop devices need root");
        assert!(output.status.success(), "losetup: {}", String::from_utf8_lossy(&output.stderr));
        Self(PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Issue 10, reproduction 10: a block device takes QEMU's `host_device` driver (the
/// `file` driver refuses it), and a qcow2 image added as the default raw is refused
/// before QEMU is touched, instead of handing the guest the qcow2 metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_10_block_devices_work_and_a_contradicting_header_is_refused() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let dir = tempfile::tempdir().unwrap();
    let backing = filled(dir.path(), "backing.raw", b'L');
    let device = LoopDevice::attach(&backing);
    let report = hotplug
        .add_disk(&DiskSpec::new("blk", DiskSource::Path(device.0.clone())), None)
        .await
        .unwrap();
    assert_eq!((report.protocol.as_str(), report.format.as_str()), ("host_device", "raw"));
    write_through_device(hotplug.client(), &report.id.to_string(), b'Z').await;
    let on_device = std::fs::read(&device.0).unwrap()[0];
    assert_eq!(on_device, b'Z', "QEMU writes the block device");

    let qcow2 = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", qcow2.to_str().unwrap(), "8M"]);
    let before = qemu_state(hotplug.client()).await;
    let error =
        hotplug.add_disk(&DiskSpec::new("q", DiskSource::Path(qcow2)), None).await.unwrap_err();
    assert!(matches!(error, Error::FormatMismatch { declared: DiskFormat::Raw, .. }), "{error}");
    assert!(error.to_string().contains("--allow-format-mismatch"), "{error}");
    assert_eq!(qemu_state(hotplug.client()).await, before, "nothing reached QEMU");
}

/// Issue 10, reproduction 12: a manager dies in the middle of a NIC add, after QEMU took
/// its tap by name. QEMU has no way to list named descriptors, but the intent marker names
/// it: a new manager's `leftovers()` lists it, and `clean_leftovers()` closes it, so the
/// tap interface goes away. Then the same with QEMU frozen (SIGSTOP) during the add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repro_12_a_manager_that_dies_mid_add_leaves_nothing_unfindable() {
    let mut qemu = qemu_or_skip!();
    let tap = Tap::open("qhcrash%d", 1).unwrap();
    let tap_name = tap.name().to_owned();
    {
        let dying = connect(&qemu).await;
        let spec = NicSpec::new("crash");
        let (_, plan) = dying.planner().nic_add(&spec, &dying.snapshot().await.unwrap()).unwrap();
        let fds = PlanFds { taps: vec![tap.queues()[0].as_fd()], ..PlanFds::default() };
        // object-add (the marker), getfd: then the manager is gone.
        dying.run(&Plan::new(plan.steps()[..2].to_vec()), &fds, UNPLUG).await.unwrap();
        dying.client().close().await;
    }
    drop(tap);
    assert!(interface_exists(&tap_name), "QEMU holds the tap by name");
    let next = connect(&qemu).await;
    let leftovers = next.leftovers().await.unwrap();
    let names: Vec<String> = leftovers
        .items
        .iter()
        .filter_map(|item| match &item.part {
            LeftoverPart::NicIntent { fd_names, .. } => Some(fd_names.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(names, ["nic-crash-pci-2-tap0"], "{leftovers:?}");
    let cleaned = next.clean_leftovers(&leftovers).await.unwrap();
    assert!(cleaned.is_complete() && cleaned.removed.len() == 1, "{cleaned:?}");
    assert!(wait_interface_gone(&tap_name), "QEMU closed the tap");
    assert_clean(next.client()).await;
    next.client().close().await;

    // QEMU frozen during the add: the add gives up within its time and its rollback's.
    let tap = Tap::open("qhcrash%d", 1).unwrap();
    let tap_name = tap.name().to_owned();
    let frozen = connect(&qemu)
        .await
        .with_operation_timeout(Duration::from_secs(1))
        .with_rollback_budget(Duration::from_secs(1));
    let snapshot = frozen.snapshot().await.unwrap();
    assert!(snapshot.peripherals.is_empty());
    qemu.freeze().unwrap();
    let started = Instant::now();
    let error = frozen.add_nic(&NicSpec::new("frozen"), tap.queues(), NO_VHOST).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    assert!(error.to_string().contains("outcome is unknown"), "{error}");
    frozen.client().close().await;
    drop(tap);
    qemu.resume().unwrap();
    assert!(qemu.is_running());
    let next = connect(&qemu).await;
    let cleaned = next.clean_leftovers(&next.leftovers().await.unwrap()).await.unwrap();
    assert!(cleaned.is_complete(), "{cleaned:?}");
    assert_clean(next.client()).await;
    assert!(wait_interface_gone(&tap_name), "no tap left in QEMU");
}

/// The guest's `+eth`/`+vd` line after `offset`, for a device behind a bridge or root port:
/// on a secondary bus, not bus 0.
fn guest_line_behind_bridge(qemu: &Qemu, offset: usize, change: &str) -> String {
    let line = guest_line(qemu, offset, change);
    assert!(!line.contains("pci=0000:00:"), "{line} is on bus 0");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_nic_and_disk_go_into_empty_root_ports_and_a_full_pool_refuses_cleanly() {
    let qemu = guest_or_skip!(QemuBuilder::new().machine("q35").root_ports(2));
    let hotplug = connect(&qemu).await;
    let tree = hotplug.pci_tree().await.unwrap();
    assert_eq!(tree.machine().to_string(), "q35");
    let dir = tempfile::tempdir().unwrap();

    let tap = Tap::open("qhq35n%d", 1).unwrap();
    let start = qemu.serial_len();
    let nic = hotplug.add_nic(&NicSpec::new("n1"), tap.queues(), NO_VHOST).await.unwrap();
    assert_eq!((nic.outcome, nic.id.to_string().as_str()), (Outcome::Added, "nic-n1-rp1-0"));
    let seen = guest_line_behind_bridge(&qemu, start, "+eth0");
    assert!(hotplug.has_device(&nic.id).await.unwrap(), "{seen}");
    assert_eq!(
        qom_get(hotplug.client(), "nic-n1-rp1-0", "parent_bus").await,
        "/machine/peripheral/rp1/rp1"
    );

    let image = filled(dir.path(), "q35.img", 7);
    let disk = hotplug.add_disk(&DiskSpec::new("d1", DiskSource::Path(image)), None).await.unwrap();
    assert_eq!(disk.id.to_string(), "disk-d1-rp2-0");
    guest_line_behind_bridge(&qemu, start, "+vda");
    // The same specs again are adopted where they are.
    let again = hotplug.add_nic(&NicSpec::new("n1"), tap.queues(), NO_VHOST).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPresent);

    // Both root ports hold a device: the next add is refused before anything is sent.
    let before = qemu_state(hotplug.client()).await;
    let other = Tap::open("qhq35x%d", 1).unwrap();
    let error = hotplug.add_nic(&NicSpec::new("n2"), other.queues(), NO_VHOST).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::NoFreePlace(_)), "{text}");
    for expected in [
        "rp1: a root port holding nic-n1-rp1-0 at 00.0",
        "rp2: a root port holding disk-d1-rp2-0 at 00.0",
        "pcie.0: q35's root complex takes no hotplug",
        "Start the VM with more empty root ports",
    ] {
        assert!(text.contains(expected), "{text}\nlacks: {expected}");
    }
    assert_eq!(qemu_state(hotplug.client()).await, before, "a refusal changes nothing");

    let before_del = qemu.serial_len();
    assert_eq!(hotplug.del_nic(&nic.id.to_string(), &remove()).await.unwrap(), Outcome::Removed);
    guest_line(&qemu, before_del, "-eth0");
    assert_eq!(hotplug.del_disk(&disk.id.to_string(), &remove()).await.unwrap(), Outcome::Removed);
    guest_line(&qemu, before_del, "-vda");
    let left = qemu_state(hotplug.client()).await;
    assert_eq!(left["peripherals"].as_array().unwrap().len(), 2, "only rp1 and rp2: {left}");
    assert_eq!(left["nodes"], json!([]), "{left}");
    // The freed port takes a device again.
    let reused = hotplug.add_nic(&NicSpec::new("n2"), other.queues(), NO_VHOST).await.unwrap();
    assert_eq!(reused.id.to_string(), "nic-n2-rp1-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pc_bridge_slots_take_nics_slot_0_included() {
    let qemu = guest_or_skip!(
        QemuBuilder::new().args(["-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=0x5"])
    );
    let hotplug = connect(&qemu).await;
    let taps: Vec<Tap> = (0..2).map(|_| Tap::open("qhbr%d", 1).unwrap()).collect();
    let start = qemu.serial_len();
    let spec = NicSpec { bus: Some("br1".into()), ..NicSpec::new("b0") };
    let first = hotplug.add_nic(&spec, taps[0].queues(), NO_VHOST).await.unwrap();
    assert_eq!(first.id.to_string(), "nic-b0-br1-0");
    guest_line_behind_bridge(&qemu, start, "+eth0");
    let spec = NicSpec { bus: Some("br1".into()), slot: Some(3), ..NicSpec::new("b3") };
    let second = hotplug.add_nic(&spec, taps[1].queues(), NO_VHOST).await.unwrap();
    assert_eq!(second.id.to_string(), "nic-b3-br1-3");
    let view = hotplug.pci_tree().await.unwrap().view(&qmp_hotplug::Preferences::default());
    let text = view.to_string();
    assert!(text.contains("nic-b0-br1-0") && text.contains("nic-b3-br1-3"), "{text}");
    let before_del = qemu.serial_len();
    for nic in [&first, &second] {
        assert_eq!(
            hotplug.del_nic(&nic.id.to_string(), &remove()).await.unwrap(),
            Outcome::Removed
        );
    }
    guest_line(&qemu, before_del, "-eth0");
    let left = qemu_state(hotplug.client()).await;
    assert_eq!(left["peripherals"], json!(["br1"]), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nic_models_and_settings_reach_qemu() {
    let qemu = guest_or_skip!();
    let hotplug = connect(&qemu).await;
    let client = hotplug.client();
    let tap = Tap::open("qhset%d", 1).unwrap();
    let start = qemu.serial_len();
    let mut spec = NicSpec {
        mac: Some("52:54:00:00:20:01".into()),
        host_mtu: Some(9000),
        rx_queue_size: Some(1024),
        tx_queue_size: Some(256),
        bootindex: Some(3),
        romfile: Some(String::new()),
        link_up: false,
        ..NicSpec::new("set")
    };
    spec.features.insert("csum".into(), json!(false));
    let nic = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap();
    let id = nic.id.to_string();
    guest_line(&qemu, start, "+eth0");
    for (property, value) in [
        ("host_mtu", json!(9000)),
        ("rx_queue_size", json!(1024)),
        ("tx_queue_size", json!(256)),
        ("bootindex", json!(3)),
        ("romfile", json!("")),
        ("csum", json!(false)),
    ] {
        assert_eq!(qom_get(client, &id, property).await, value, "{property}");
    }
    let again = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPresent, "the settings QEMU shows are the spec's");
    let other = NicSpec { host_mtu: Some(1500), ..spec.clone() };
    let error = hotplug.add_nic(&other, tap.queues(), NO_VHOST).await.unwrap_err();
    assert!(error.to_string().contains("host_mtu: asked 1500, QEMU has 9000"), "{error}");
    // QEMU 7.2 shows a link's state nowhere (not in `info network`): set_link ran as a
    // step of the plan, which would have failed otherwise.
    let before_del = qemu.serial_len();
    assert_eq!(hotplug.del_nic(&id, &remove()).await.unwrap(), Outcome::Removed);
    guest_line(&qemu, before_del, "-eth0");

    // Ganeti's other models: QEMU has them where planned, and unplug completes.
    for model in [qmp_hotplug::E1000, qmp_hotplug::RTL8139] {
        let spec = NicSpec { model: model.into(), ..NicSpec::new("other") };
        let nic = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap();
        assert_eq!(nic.model, model);
        assert!(hotplug.has_device(&nic.id).await.unwrap(), "{}", nic.id);
        assert_eq!(
            hotplug.del_nic(&nic.id.to_string(), &remove()).await.unwrap(),
            Outcome::Removed
        );
    }
    assert_clean(client).await;
}
