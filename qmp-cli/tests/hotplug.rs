//! `qmp pci`, `qmp hotplug ...` and `qmp demo` against a real QEMU 7.2; removals run with
//! the project's test guest, which answers ACPI unplug. With `QMP_REQUIRE_QEMU=1` a missing
//! QEMU or guest fails these tests instead of skipping them.

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{
    COMMAND_FAILED, CONNECTION, OK, USAGE, assert_status, one_error_line, qmp, qmp_at, run, stdout,
};
use qemu_launcher::{QemuBuilder, guest_or_skip, qemu_or_skip};
use serde_json::Value;

/// A deadline for the guest on a loaded CI machine, not a speed check.
const GUEST_SEES: Duration = Duration::from_secs(60);
/// `hotplug ... del` that cannot complete now (prelaunch, paused).
const NOT_NOW: i32 = 4;

fn json_out(output: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

#[test]
fn pci_prints_the_slot_table_and_json() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["pci"]));
    assert_status(&output, OK);
    let table = stdout(&output);
    assert!(table.starts_with("pc machine (pc-i440fx-"), "{table}");
    assert!(table.contains("pci.0  bus 0, pc root bus: free 02-1f\n"), "{table}");
    assert!(table.contains("  01.0  -           ISA bridge"), "{table}");

    let output = run(qmp_at(qemu.qmp_path(), ["pci", "--json"]));
    assert_status(&output, OK);
    let tree = json_out(&output);
    assert_eq!(tree["machine"], "pc");
    let bus = &tree["buses"][0];
    assert_eq!(bus["name"], "pci.0");
    assert_eq!(bus["free"].as_array().unwrap().len(), 30, "{bus}");
    assert_eq!(bus["functions"].as_array().unwrap().len(), 4, "the host bridge and PIIX's three");
}

#[test]
fn check_reports_support_and_refuses_vhost_it_cannot_use() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let output = run(qmp_at(qemu.qmp_path(), ["hotplug", "check", "--json"]));
    assert_status(&output, OK);
    let report = json_out(&output);
    assert_eq!(report["nic"]["supported"], true, "{report}");
    assert_eq!(report["disk_fdset"]["supported"], true, "{report}");

    let output = run(qmp_at(qemu.qmp_path(), ["hotplug", "check", "--vhost", "--json"]));
    let vhost_usable = hostdev::vhost::vhost_net_usable().is_ok();
    assert_status(&output, if vhost_usable { OK } else { COMMAND_FAILED });
    let report = json_out(&output);
    assert_eq!(report["nic"]["supported"], vhost_usable, "{report}");
    if !vhost_usable {
        assert!(report["nic"]["reason"].as_str().unwrap().contains("vhost"), "{report}");
    }
}

#[test]
fn nic_and_disk_come_and_go_through_the_cli() {
    let qemu = guest_or_skip!();
    let socket = qemu.qmp_path();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();

    let output = run(qmp_at(
        socket,
        ["hotplug", "nic", "add", "--name", "cli1", "--mac", "52:54:00:aa:bb:01"],
    ));
    assert_status(&output, OK);
    let nic = json_out(&output);
    assert_eq!(nic["id"], "nic-cli1-pci-2", "{nic}");
    let tap = nic["tap"].as_str().unwrap().to_owned();
    qemu.wait_for_serial("GUEST: +eth0 pci=0000:00:02.0", GUEST_SEES).unwrap();
    assert!(std::path::Path::new("/sys/class/net").join(&tap).exists(), "QEMU keeps {tap} open");

    let output = run(qmp_at(
        socket,
        ["hotplug", "disk", "add", "--name", "cli1", "--image", image.to_str().unwrap()],
    ));
    assert_status(&output, OK);
    assert_eq!(json_out(&output)["id"], "disk-cli1-pci-3");
    qemu.wait_for_serial("GUEST: +vda pci=0000:00:03.0", GUEST_SEES).unwrap();

    // Resized through the CLI, seen by the guest; shrinking needs --allow-shrink.
    let output = run(qmp_at(socket, ["hotplug", "disk", "resize", "disk-cli1-pci-3", "2M"]));
    assert_status(&output, OK);
    let resized = json_out(&output);
    assert_eq!(
        (resized["old_size"].as_u64(), resized["new_size"].as_u64()),
        (Some(1 << 20), Some(2 << 20))
    );
    qemu.wait_for_serial("BLOCK vda sectors=4096 media=1", GUEST_SEES).unwrap();
    let output = run(qmp_at(socket, ["hotplug", "disk", "resize", "disk-cli1-pci-3", "1M"]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("would shrink"), "{line}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 2 << 20);

    let output = run(qmp_at(socket, ["pci"]));
    assert!(
        stdout(&output).contains("nic-cli1-pci-2") && stdout(&output).contains("disk-cli1-pci-3")
    );

    let output = run(qmp_at(socket, ["hotplug", "nic", "del", "nic-cli1-pci-2", "--wait", "20"]));
    assert_status(&output, OK);
    qemu.wait_for_serial("GUEST: -eth0", GUEST_SEES).unwrap();
    assert!(
        !std::path::Path::new("/sys/class/net").join(&tap).exists(),
        "{tap} went with the netdev"
    );
    let output = run(qmp_at(socket, ["hotplug", "disk", "del", "disk-cli1-pci-3"]));
    assert_status(&output, OK);
    qemu.wait_for_serial("GUEST: -vda", GUEST_SEES).unwrap();
    let output = run(qmp_at(socket, ["pci", "--json"]));
    let tree = json_out(&output);
    let ids: Vec<&Value> = tree["buses"][0]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str().map(|_| &f["id"]))
        .collect();
    assert!(ids.is_empty(), "only the machine's own devices: {ids:?}");
}

#[test]
fn scsi_disks_come_and_go_through_the_cli() {
    let qemu = guest_or_skip!(QemuBuilder::new().arg("-device").arg("virtio-net-pci,id=net0"));
    let socket = qemu.qmp_path();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("scsi.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec!["hotplug", "disk", "add", "--name", "s1", "--image"];
        args.push(image.to_str().unwrap());
        args.extend(extra);
        run(qmp_at(socket, args))
    };

    // A controller that is no SCSI controller is refused with the failure status.
    let output = add(&["--bus", "scsi", "--scsi-controller", "net0"]);
    assert_status(&output, COMMAND_FAILED);
    assert!(
        one_error_line(&output, "qmp: ").contains("SCSI controller 'net0': it is a virtio-net-pci"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = add(&["--bus", "scsi"]);
    assert_status(&output, OK);
    let disk = json_out(&output);
    assert_eq!(disk["id"], "disk-s1-pci-3-0.0", "{disk}");
    assert_eq!(disk["model"], "scsi-hd", "{disk}");
    assert_eq!(disk["scsi"], serde_json::json!({"scsi_id": 0, "lun": 0}), "{disk}");
    qemu.wait_for_serial("GUEST: +sda pci=0000:00:03.0", GUEST_SEES).unwrap();
    assert!(stdout(&run(qmp_at(socket, ["pci"]))).contains("scsi-hba-pci-3"));

    let output = run(qmp_at(socket, ["hotplug", "disk", "del", "disk-s1-pci-3-0.0"]));
    assert_status(&output, OK);
    qemu.wait_for_serial("GUEST: -sda", GUEST_SEES).unwrap();
}

#[test]
fn an_inherited_tap_descriptor_is_used_and_a_bad_one_is_a_usage_error() {
    let qemu = qemu_or_skip!();
    let tap = hostdev::tap::Tap::open("qmpclifd%d", 1).unwrap();
    let fd = &tap.queues()[0];
    // Let the child inherit it (the test's other children may too, briefly; harmless).
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let number = fd.as_raw_fd().to_string();
    let output = run(qmp_at(
        qemu.qmp_path(),
        ["hotplug", "nic", "add", "--name", "fd", "--tap-fd", &number],
    ));
    assert_status(&output, OK);
    let nic = json_out(&output);
    // The tap is named from QEMU's side, though this process never knew its name.
    assert_eq!((nic["id"].as_str(), nic["tap"].as_str()), (Some("nic-fd-pci-2"), Some(tap.name())));

    // The child inherits only stdio and the tap, so the lowest other number is the first
    // one the child would open itself (its runtime's epoll): it must be refused as not
    // inherited, never taken over.
    let own = if fd.as_raw_fd() == 3 { "4" } else { "3" };
    for number in ["999", own] {
        let args = ["hotplug", "nic", "add", "--name", "fd2", "--tap-fd", number];
        let output = run(qmp_at(qemu.qmp_path(), args));
        assert_status(&output, USAGE);
        let line = one_error_line(&output, "qmp: ");
        assert!(line.contains(number) && line.contains("not open"), "{line}");
    }
}

#[test]
fn failures_map_to_the_documented_statuses() {
    let qemu = qemu_or_skip!();
    let socket = qemu.qmp_path();
    // A name outside the id rules: usage.
    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "bad-name"]));
    assert_status(&output, USAGE);
    // A malformed MAC: usage, refused before QEMU hears of it.
    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "m", "--mac", "zz"]));
    assert_status(&output, USAGE);
    // QEMU refuses a step: 1, naming the step and QEMU's reason; the rollback leaves nothing.
    let output =
        run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "m", "--model", "no-such-nic"]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: ");
    assert!(
        line.contains("device_add nic-m-pci-2 failed") && line.contains("GenericError"),
        "{line}"
    );
    let output = run(qmp_at(socket, ["pci", "--json"]));
    assert_eq!(json_out(&output)["buses"][0]["free"][0], 2, "slot 2 is free again");
    // A missing image: 1, before QEMU hears of it.
    let output = run(qmp_at(
        socket,
        ["hotplug", "disk", "add", "--name", "d", "--image", "/nonexistent.img"],
    ));
    assert_status(&output, COMMAND_FAILED);
    assert!(one_error_line(&output, "qmp: ").contains("cannot open disk image"));
    // No guest OS acknowledges the unplug: a timeout, 3.
    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "stuck"]));
    assert_status(&output, OK);
    let output = run(qmp_at(socket, ["hotplug", "nic", "del", "nic-stuck-pci-2", "--wait", "0.5"]));
    assert_status(&output, CONNECTION);
    assert!(one_error_line(&output, "qmp: ").contains("did not acknowledge"));
}

/// Issue 10 through the CLI: a repeated `nic add` reports the tap that carries the NIC,
/// not the one it opened; missing ids, wrong kinds, paused VMs and contradicting headers get
/// their documented statuses; `--if-exists`, `--allow-format-mismatch` and `gc` work.
#[test]
fn the_trust_contract_holds_through_the_cli() {
    let qemu = qemu_or_skip!();
    let socket = qemu.qmp_path();
    let dir = tempfile::tempdir().unwrap();

    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "n1"]));
    assert_status(&output, OK);
    let first = json_out(&output);
    assert_eq!(first["outcome"], "added", "{first}");
    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "n1"]));
    assert_status(&output, OK);
    let again = json_out(&output);
    assert_eq!(again["outcome"], "already-present", "{again}");
    assert_eq!(again["tap"], first["tap"], "the tap carrying the NIC, not the one just opened");
    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "n1", "--queues", "2"]));
    assert_status(&output, COMMAND_FAILED);
    assert!(one_error_line(&output, "qmp: ").contains("queues: asked 2, QEMU has 1"));

    let output = run(qmp_at(socket, ["hotplug", "nic", "del", "nic-never-pci-9"]));
    assert_status(&output, COMMAND_FAILED);
    assert!(one_error_line(&output, "qmp: ").contains("no device 'nic-never-pci-9'"));
    let output = run(qmp_at(socket, ["hotplug", "nic", "del", "nic-never-pci-9", "--if-exists"]));
    assert_status(&output, OK);
    assert_eq!(json_out(&output)["outcome"], "absent");
    let output = run(qmp_at(socket, ["hotplug", "disk", "del", "nic-n1-pci-2"]));
    assert_status(&output, COMMAND_FAILED);
    assert!(one_error_line(&output, "qmp: ").contains("is not a disk device"));
    let output = run(qmp_at(socket, ["hotplug", "disk", "del", "disk-x-pci-3", "--drive", "d0"]));
    assert_status(&output, COMMAND_FAILED);

    // A qcow2 image without --format: refused before QEMU hears of it, unless allowed.
    let qcow2 = dir.path().join("disk.qcow2");
    let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
    header.resize(1 << 20, 0);
    std::fs::write(&qcow2, header).unwrap();
    let image = qcow2.to_str().unwrap();
    let output = run(qmp_at(socket, ["hotplug", "disk", "add", "--name", "q", "--image", image]));
    assert_status(&output, COMMAND_FAILED);
    assert!(one_error_line(&output, "qmp: ").contains("--allow-format-mismatch"));
    let allowed =
        ["hotplug", "disk", "add", "--name", "q", "--image", image, "--allow-format-mismatch"];
    let output = run(qmp_at(socket, allowed));
    assert_status(&output, OK);
    let disk = json_out(&output);
    assert_eq!((disk["format"].as_str(), disk["protocol"].as_str()), (Some("raw"), Some("file")));

    // Paused: device_del is sent and the removal ends at once with 4.
    assert_status(&run(qmp_at(socket, ["exec", "stop"])), OK);
    let output = run(qmp_at(socket, ["hotplug", "nic", "del", "nic-n1-pci-2"]));
    assert_status(&output, NOT_NOW);
    assert!(one_error_line(&output, "qmp: ").contains("paused"));
    assert_status(&run(qmp_at(socket, ["exec", "cont"])), OK);

    // gc: a netdev of ours without its NIC, as an interrupted add leaves it.
    let netdev = r#"{"type": "user", "id": "nic-gc-pci-9"}"#;
    assert_status(&run(qmp_at(socket, ["exec", "netdev_add", netdev])), OK);
    let output = run(qmp_at(socket, ["hotplug", "gc", "--dry-run"]));
    assert_status(&output, OK);
    let listed = json_out(&output);
    assert_eq!(listed["leftovers"][0]["name"], "nic-gc-pci-9", "{listed}");
    let output = run(qmp_at(socket, ["hotplug", "gc"]));
    assert_status(&output, OK);
    assert_eq!(json_out(&output)["removed"][0]["part"], "netdev");
    let output = run(qmp_at(socket, ["hotplug", "gc", "--dry-run"]));
    assert_eq!(json_out(&output)["leftovers"], serde_json::json!([]));
}

/// `qmp demo` with `--machine`, or the default pc one; `None` when QEMU or the guest is
/// missing (and allowed to be).
fn demo(machine: &[&str]) -> Option<String> {
    let missing = qemu_launcher::find_qemu().err().or(qemu_launcher::GuestImage::locate().err());
    if let Some(reason) = missing {
        assert!(!qemu_launcher::qemu_required(), "QMP_REQUIRE_QEMU=1 but: {reason}");
        eprintln!("skipped: {reason}");
        return None;
    }
    let output = run(qmp(["demo"].iter().chain(machine)));
    assert_status(&output, OK);
    Some(stdout(&output))
}

#[test]
fn demo_runs_end_to_end_and_leaves_nothing() {
    let Some(text) = demo(&[]) else { return };
    for expected in [
        "connected: QEMU 7.",
        "hot-added disk disk-demo-pci-2",
        "hot-added NIC nic-demo-pci-3",
        "the guest says: GUEST: +vda",
        "hot-removed NIC nic-demo-pci-3",
        "the guest says: GUEST: -eth0",
        "QEMU quit; tap qmpdemo",
        "is gone",
        "removed",
        "done in",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}

#[test]
fn demo_on_q35_plugs_into_root_ports() {
    let Some(text) = demo(&["--machine", "q35"]) else { return };
    for expected in [
        "q35 machine (pc-q35-",
        "rp1  bus 1, pcie-root-port at pcie.0 02.0",
        "hot-added disk disk-demo-rp1-0 at rp1 slot 0",
        "hot-added NIC nic-demo-rp2-0 at rp2 slot 0",
        "the guest says: GUEST: +vda",
        "hot-removed NIC nic-demo-rp2-0",
        "the guest says: GUEST: -eth0",
        "done in",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}

#[test]
fn nic_and_disk_go_onto_the_bus_asked_for_and_an_unknown_bus_changes_nothing() {
    let qemu = guest_or_skip!(
        QemuBuilder::new().args(["-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5"])
    );
    let socket = qemu.qmp_path();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let before = stdout(&run(qmp_at(socket, ["pci", "--json"])));

    // A bus QEMU does not have: refused before anything is plugged or opened.
    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "nb0", "--bus", "br9"]));
    assert_status(&output, COMMAND_FAILED);
    let error = one_error_line(&output, "qmp: ");
    assert!(error.contains("has no bus br9; its buses are "), "{error}");
    assert!(error.contains("br1") && !error.contains("Start the VM"), "{error}");
    assert_eq!(stdout(&run(qmp_at(socket, ["pci", "--json"]))), before, "nothing changed");

    let output = run(qmp_at(socket, ["hotplug", "nic", "add", "--name", "nb1", "--bus", "br1"]));
    assert_status(&output, OK);
    let nic = json_out(&output);
    assert_eq!(nic["id"], "nic-nb1-br1-0", "slot 0 of a bridge is the first free: {nic}");
    // SeaBIOS numbers the bridge's secondary bus 1; the guest sees the NIC there.
    qemu.wait_for_serial("GUEST: +eth0 pci=0000:01:00.0", GUEST_SEES).unwrap();

    let output = run(qmp_at(
        socket,
        ["hotplug", "disk", "add", "--name", "db1", "--image", image.to_str().unwrap()]
            .into_iter()
            .chain(["--pci-bus", "br1", "--slot", "7"]),
    ));
    assert_status(&output, OK);
    assert_eq!(json_out(&output)["id"], "disk-db1-br1-7");
    qemu.wait_for_serial("GUEST: +vda pci=0000:01:07.0", GUEST_SEES).unwrap();

    let output = run(qmp_at(socket, ["hotplug", "nic", "del", "nic-nb1-br1-0", "--wait", "20"]));
    assert_status(&output, OK);
    qemu.wait_for_serial("GUEST: -eth0", GUEST_SEES).unwrap();
    let output = run(qmp_at(socket, ["hotplug", "disk", "del", "disk-db1-br1-7", "--wait", "20"]));
    assert_status(&output, OK);
    qemu.wait_for_serial("GUEST: -vda", GUEST_SEES).unwrap();
    assert_eq!(stdout(&run(qmp_at(socket, ["pci", "--json"]))), before, "all gone again");
}

#[test]
fn a_cd_medium_goes_in_and_out_through_the_cli() {
    let qemu = guest_or_skip!(QemuBuilder::new().empty_scsi_cdrom());
    let ready = qemu.wait_guest_ready(Duration::ZERO).unwrap();
    let socket = qemu.qmp_path();
    let iso = qemu.dir().join("cli.iso");
    std::fs::File::create(&iso).unwrap().set_len(2 << 20).unwrap();
    let iso = iso.to_str().unwrap();

    let output = run(qmp_at(socket, ["hotplug", "cdrom", "change", "cd0", "--image", iso]));
    assert_status(&output, OK);
    assert_eq!(json_out(&output)["medium"], iso);
    let inserted =
        qemu.wait_for_serial_after(ready.end, "BLOCK sr0 sectors=4096 media=1", GUEST_SEES);
    let output = run(qmp_at(socket, ["hotplug", "cdrom", "eject", "cd0"]));
    assert_status(&output, OK);
    qemu.wait_for_serial_after(inserted.unwrap().end, "BLOCK sr0 sectors=4096 media=0", GUEST_SEES)
        .unwrap();

    let output = run(qmp_at(socket, ["hotplug", "cdrom", "eject", "scsi0"]));
    assert_status(&output, COMMAND_FAILED);
    let line = one_error_line(&output, "qmp: ");
    assert!(line.contains("not a CD drive"), "{line}");
}
