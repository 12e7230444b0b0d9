//! Hotplug against a real QEMU 7.2. Tests with a guest boot the project's test guest
//! (`scripts/build-guest`), which answers ACPI unplug requests and prints a serial line per
//! device it sees come or go; with `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails them.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use hostdev::tap::Tap;
use qemu_launcher::{Qemu, guest_or_skip, qemu_or_skip};
use qmp_client::Client;
use qmp_hotplug::{
    DiskFormat, DiskSource, DiskSpec, Error, Hotplug, NbdExport, NicSpec, Plan, PlanFds, Vhost,
};
use serde_json::{Value, json};

const UNPLUG: Duration = Duration::from_secs(20);
const GUEST_SEES: Duration = Duration::from_secs(20);
const NO_VHOST: &[OwnedFd] = &[];

async fn connect(qemu: &Qemu) -> Hotplug {
    Hotplug::new(Client::connect(qemu.qmp_path()).await.expect("connect to QEMU"))
}

/// Everything hotplug could leave behind, as QEMU reports it.
async fn leftovers(client: &Client) -> Value {
    let pci = client.execute("query-pci", ()).await.unwrap();
    let ids: Vec<Value> = pci[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["qdev_id"] != "")
        .map(|d| d["qdev_id"].clone())
        .collect();
    let peripherals: Vec<Value> = client
        .execute("qom-list", json!({"path": "/machine/peripheral"}))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"].as_str().unwrap().starts_with("child<"))
        .map(|p| p["name"].clone())
        .collect();
    let nodes = client.execute("query-named-block-nodes", json!({"flat": true})).await.unwrap();
    let nodes: Vec<Value> =
        nodes.as_array().unwrap().iter().map(|n| n["node-name"].clone()).collect();
    let fdsets = client.execute("query-fdsets", ()).await.unwrap();
    json!({"pci": ids, "peripherals": peripherals, "nodes": nodes, "fdsets": fdsets})
}

/// A property of one of our devices (`qom-get /machine/peripheral/ID PROPERTY`).
async fn qom_get(client: &Client, id: &str, property: &str) -> Value {
    let path = format!("/machine/peripheral/{id}");
    client.execute("qom-get", json!({"path": path, "property": property})).await.unwrap()
}

async fn assert_clean(client: &Client) {
    let left = leftovers(client).await;
    let empty = json!({"pci": [], "peripherals": [], "nodes": [], "fdsets": []});
    assert_eq!(left, empty, "QEMU still holds something of ours");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nics_single_and_multiqueue_come_and_go_in_the_guest() {
    let qemu = guest_or_skip!();
    let hotplug = connect(&qemu).await;
    hotplug.check_nic_support(&NicSpec::new("x")).unwrap();

    let single = Tap::open("qhtest%d", 1).unwrap();
    let start = qemu.serial_len();
    let mut spec = NicSpec::new("single");
    spec.mac = Some("52:54:00:00:00:01".into());
    let first = hotplug.add_nic(&spec, single.queues(), NO_VHOST).await.unwrap();
    let seen = guest_line(&qemu, start, "+eth0");
    assert!(seen.contains(&pci_addr(first.slot())), "{seen}");
    assert!(hotplug.has_device(&first).await.unwrap());
    let mac = qom_get(hotplug.client(), &first.to_string(), "mac").await;
    assert_eq!(mac, "52:54:00:00:00:01");

    let multi = Tap::open("qhtest%d", 2).unwrap();
    let spec = NicSpec { queues: 2, ..NicSpec::new("multi") };
    let second = hotplug.add_nic(&spec, multi.queues(), NO_VHOST).await.unwrap();
    assert_eq!(second.slot(), first.slot() + 1);
    let seen = guest_line(&qemu, start, "+eth1");
    assert!(seen.contains(&pci_addr(second.slot())), "{seen}");
    let mq = qom_get(hotplug.client(), &second.to_string(), "mq").await;
    assert_eq!(mq, true);

    let (single_name, multi_name) = (single.name().to_owned(), multi.name().to_owned());
    drop((single, multi)); // QEMU holds its own copies now.
    assert!(interface_exists(&single_name) && interface_exists(&multi_name));

    let before_del = qemu.serial_len();
    hotplug.del_nic(&first.to_string(), UNPLUG).await.unwrap();
    guest_line(&qemu, before_del, "-eth0");
    hotplug.del_nic(&second.to_string(), UNPLUG).await.unwrap();
    guest_line(&qemu, before_del, "-eth1");
    assert_clean(hotplug.client()).await;
    assert!(
        !interface_exists(&single_name) && !interface_exists(&multi_name),
        "QEMU closed the taps"
    );

    // The freed slot is handed out again.
    let again = Tap::open("qhtest%d", 1).unwrap();
    let third = hotplug.add_nic(&NicSpec::new("again"), again.queues(), NO_VHOST).await.unwrap();
    assert_eq!(third.slot(), first.slot());
    hotplug.del_nic(&third.to_string(), UNPLUG).await.unwrap();
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
    let qemu = guest_or_skip!(qemu_launcher::QemuBuilder::new().args([
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
        hotplug.check_disk_support(spec).unwrap();
    }

    let start = qemu.serial_len();
    let mut ids = Vec::new();
    for (spec, disk) in [(&raw_spec, "vda"), (&qcow2_spec, "vdb"), (&nbd_spec, "vdc")] {
        let id = hotplug.add_disk(spec, None).await.unwrap();
        let seen = guest_line(&qemu, start, &format!("+{disk}"));
        assert!(seen.contains(&pci_addr(id.slot())), "{seen}");
        ids.push(id);
    }
    let fdsets = hotplug.client().query_fdsets().await.unwrap();
    assert!(fdsets.iter().all(|set| set.fds.is_empty()), "our copies were released: {fdsets:?}");

    // A disk that came from -drive: device_add on it, then remove it the HMP way.
    let legacy_slot = hotplug.free_slot().await.unwrap();
    hotplug
        .client()
        .execute("device_add", json!({"driver": "virtio-blk-pci", "drive": "legacy0", "id": "legacy-dev", "addr": format!("0x{legacy_slot:x}")}))
        .await
        .unwrap();
    guest_line(&qemu, start, "+vdd");

    // HMP reports errors as text; here, a node still attached to a device.
    let error = hotplug.del_drive("no-such-device", &ids[0].node_name(), UNPLUG).await.unwrap_err();
    assert!(matches!(&error, Error::Hmp { message, .. } if message.contains("in use")), "{error}");

    let before_del = qemu.serial_len();
    for (id, disk) in ids.iter().zip(["vda", "vdb", "vdc"]) {
        hotplug.del_disk(&id.to_string(), UNPLUG).await.unwrap();
        guest_line(&qemu, before_del, &format!("-{disk}"));
    }
    hotplug.del_drive("legacy-dev", "legacy0", UNPLUG).await.unwrap();
    guest_line(&qemu, before_del, "-vdd");
    assert_clean(hotplug.client()).await;
    let block = hotplug.client().execute("query-block", ()).await.unwrap();
    assert_eq!(block, json!([]), "the legacy drive is gone");
    // Removing it again finds nothing left to do.
    hotplug.del_drive("legacy-dev", "legacy0", UNPLUG).await.unwrap();
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
        ids.push(
            hotplug.add_nic(&NicSpec::new(format!("f{n}")), tap.queues(), NO_VHOST).await.unwrap(),
        );
        taps.push(tap);
    }
    let before = leftovers(hotplug.client()).await;
    let extra = Tap::open("qhfill%d", 1).unwrap();
    let error =
        hotplug.add_nic(&NicSpec::new("extra"), extra.queues(), NO_VHOST).await.unwrap_err();
    assert!(matches!(error, Error::BusFull), "{error}");
    assert_eq!(leftovers(hotplug.client()).await, before, "a full bus changes nothing");

    let freed = &ids[7];
    hotplug.del_nic(&freed.to_string(), UNPLUG).await.unwrap();
    let reused = hotplug.add_nic(&NicSpec::new("extra"), extra.queues(), NO_VHOST).await.unwrap();
    assert_eq!(reused.slot(), freed.slot());
    let seen = qemu.wait_for_serial(&pci_addr(reused.slot()), GUEST_SEES).unwrap();
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

    // device_add: a MAC QEMU rejects, after getfd and netdev_add succeeded.
    let tap = Tap::open("qhfail%d", 1).unwrap();
    let spec = NicSpec { mac: Some("not-a-mac".into()), ..NicSpec::new("mac") };
    let error = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("device_add nic-mac-pci-2"), "{error}");
    assert_clean(&client).await;

    // device_add: a slot taken behind the planner's back (a race with another manager).
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
    let left = leftovers(&client).await;
    assert_eq!(left["peripherals"], json!(["racer"]), "{left}");
    drop(tap);

    // blockdev-add: a raw file declared qcow2.
    let raw = dir.path().join("raw.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let spec = DiskSpec {
        format: DiskFormat::Qcow2,
        ..DiskSpec::new("fmt", DiskSource::Path(raw.clone()))
    };
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("blockdev-add disk-fmt-pci-3"), "{error}");
    assert!(error.to_string().contains("qcow2"), "{error}");
    assert_eq!(leftovers(&client).await["fdsets"], json!([]));
    assert_eq!(leftovers(&client).await["nodes"], json!([]));

    // device_add: an unknown device model, after add-fd, blockdev-add and remove-fd.
    let spec =
        DiskSpec { model: "no-such-model".into(), ..DiskSpec::new("model", DiskSource::Path(raw)) };
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("device_add disk-model-pci-3"), "{error}");
    assert_eq!(leftovers(&client).await["nodes"], json!([]));
    assert_eq!(leftovers(&client).await["fdsets"], json!([]));

    // A missing image: refused before QEMU hears of it.
    let spec = DiskSpec::new("gone", DiskSource::Path(dir.path().join("missing.img")));
    assert!(matches!(hotplug.add_disk(&spec, None).await, Err(Error::Open { .. })));
    assert_eq!(leftovers(&client).await["nodes"], json!([]));
}

/// A retry after a try that died half-way (here: the first two steps run by hand, as if
/// the reply to `blockdev-add` had been lost) completes the add instead of failing on
/// "Duplicate node".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_completes_a_half_done_disk_add() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let spec = DiskSpec::new("retry", DiskSource::Path(image.clone()));

    let (id, plan) = hotplug.planner().disk_add(&spec, &hotplug.snapshot().await.unwrap()).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&image).unwrap();
    let half = Plan::new(plan.steps()[..2].to_vec());
    hotplug
        .run(&half, &PlanFds { image: Some(file.as_fd()), ..PlanFds::default() }, UNPLUG)
        .await
        .unwrap();
    assert_eq!(
        leftovers(hotplug.client()).await["nodes"],
        json!([id.node_name(), id.file_node_name()])
    );

    let again = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!(again, id);
    let left = leftovers(hotplug.client()).await;
    assert_eq!(left["peripherals"], json!([id.to_string()]));
    let fdsets = hotplug.client().query_fdsets().await.unwrap();
    assert_eq!(fdsets.len(), 1, "one fdset, not one per try: {fdsets:?}");
    assert!(fdsets[0].fds.is_empty(), "released to the node: {fdsets:?}");
    let names: BTreeSet<String> = hotplug.snapshot().await.unwrap().block_nodes;
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A machine with no guest OS never acknowledges an unplug: the removal times out with a
/// typed error instead of hanging, and the NIC keeps its netdev.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_unplug_times_out_and_keeps_the_netdev() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let tap = Tap::open("qhtime%d", 1).unwrap();
    let id = hotplug.add_nic(&NicSpec::new("stuck"), tap.queues(), NO_VHOST).await.unwrap();
    let error = hotplug.del_nic(&id.to_string(), Duration::from_millis(500)).await.unwrap_err();
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
        let id = result.unwrap();
        assert!(hotplug.has_device(&id).await.unwrap());
    } else {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Unsupported(_)), "{error}");
        assert!(error.to_string().contains("vhost"), "{error}");
    }
    let status = hotplug.client().execute("query-status", ()).await.unwrap();
    assert_eq!(status["status"], "running", "QEMU is alive");
}

/// A NIC add that died after `netdev_add` left a netdev without its device; a retry
/// replaces that netdev (its descriptors may be stale) and completes, leaving one tap netdev.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_completes_a_half_done_nic_add() {
    let qemu = qemu_or_skip!();
    let hotplug = connect(&qemu).await;
    let tap = Tap::open("qhretry%d", 1).unwrap();
    let spec = NicSpec::new("retry");
    let (id, plan) = hotplug.planner().nic_add(&spec, &hotplug.snapshot().await.unwrap()).unwrap();
    let half = Plan::new(plan.steps()[..2].to_vec());
    let fds = PlanFds { taps: vec![tap.queues()[0].as_fd()], ..PlanFds::default() };
    hotplug.run(&half, &fds, UNPLUG).await.unwrap();

    let again = hotplug.add_nic(&spec, tap.queues(), NO_VHOST).await.unwrap();
    assert_eq!(again, id);
    let netdev = qom_get(hotplug.client(), &id.to_string(), "netdev").await;
    assert_eq!(netdev, json!(id.netdev_id()));
    let network = hotplug.client().human_monitor_command("info network").await.unwrap();
    assert_eq!(network.matches("type=tap").count(), 1, "one tap netdev: {network}");
}
