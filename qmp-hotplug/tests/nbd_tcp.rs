//! An NBD disk over TCP against a real QEMU 7.2 with the test guest: `qemu-nbd` on
//! 127.0.0.1, the URI parsed by `NbdExport::parse_uri`, the guest sees the disk, the same
//! spec again is adopted (QEMU's node filename parses back to the same export), and the disk
//! goes. With `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails the test.

mod qemu_nbd;

use std::time::Duration;

use qemu_launcher::guest_or_skip;
use qmp_client::Client;
use qmp_hotplug::{DiskSource, DiskSpec, Hotplug, NbdExport, NbdServer, Outcome, RemoveOptions};

/// A deadline per step for QEMU and the guest on a loaded CI machine, not a speed check.
const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nbd_disk_over_tcp_comes_and_goes_in_the_guest() {
    let qemu = guest_or_skip!();
    let image = qemu.dir().join("tcp.raw");
    std::fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let server = qemu_nbd::QemuNbd::serve(&image, "vm disk", &[]);
    let port = server.port();
    let export = NbdExport::parse_uri(&format!("nbd://127.0.0.1:{port}/vm%20disk")).unwrap();
    assert_eq!(export.server, NbdServer::Tcp { host: "127.0.0.1".into(), port });

    let hotplug = Hotplug::new(Client::connect(qemu.qmp_path()).await.unwrap());
    let start = qemu.serial_len();
    let spec = DiskSpec::new("tcp", DiskSource::Nbd(export));
    let report = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!((report.outcome, report.protocol.as_str()), (Outcome::Added, "nbd"));
    qemu.wait_for_serial_after(start, "BLOCK vda sectors=16384 media=1", STEP).unwrap();
    let again = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPresent, "{}", report.file);

    let id = report.id.to_string();
    let removed = hotplug.del_disk(&id, &RemoveOptions::new(STEP)).await.unwrap();
    assert_eq!(removed, Outcome::Removed);
    qemu.wait_for_serial_after(start, "GUEST: -vda", STEP).unwrap();
}
