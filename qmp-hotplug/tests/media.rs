//! Operations on an existing disk against a real QEMU 7.2 with the test guest: `block_resize`
//! through `Hotplug::resize_disk`, seen by the guest (`BLOCK vda sectors=N`), and each
//! refusal before anything is sent; a `scsi-cd`'s medium changed and ejected
//! (`Hotplug::change_medium`, `Hotplug::eject`), seen by the guest (`BLOCK sr0 ... media=`).
//! With `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails
//! the test.

use std::time::Duration;

use qemu_launcher::{QemuBuilder, guest_or_skip};
use qmp_client::Client;
use qmp_hotplug::{DiskFormat, DiskSource, DiskSpec, Error, Hotplug, Outcome, RemoveOptions};
use serde_json::json;

const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_grows_in_the_guest_and_bad_resizes_change_nothing() {
    let qemu = guest_or_skip!();
    let hotplug = Hotplug::new(Client::connect(qemu.qmp_path()).await.unwrap());
    let image = qemu.dir().join("grow.raw");
    std::fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let start = qemu.serial_len();
    let spec = DiskSpec::new("grow", DiskSource::Path(image.clone()));
    let disk = hotplug.add_disk(&spec, None).await.unwrap();
    let id = disk.id.to_string();
    let seen = qemu.wait_for_serial_after(start, "BLOCK vda sectors=16384 media=1", STEP).unwrap();

    let grown = hotplug.resize_disk(&id, 16 << 20, false).await.unwrap();
    assert_eq!((grown.old_size, grown.new_size), (8 << 20, 16 << 20));
    let seen = qemu.wait_for_serial_after(seen.end, "BLOCK vda sectors=32768 media=1", STEP);
    let seen = seen.unwrap();
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 16 << 20, "the image file grew");
    assert!(!hotplug.resize_disk(&id, 16 << 20, false).await.unwrap().changed());

    // Refusals: nothing sent, the size stays.
    match hotplug.resize_disk(&id, 8 << 20, false).await {
        Err(Error::Shrink { current, requested, .. }) => {
            assert_eq!((current, requested), (16 << 20, 8 << 20));
        }
        other => panic!("expected a shrink refusal, got {other:?}"),
    }
    for bad in [0, 1000] {
        let refused = hotplug.resize_disk(&id, bad, false).await;
        assert!(matches!(refused, Err(Error::InvalidSpec(_))), "{bad}: {refused:?}");
    }
    let nic = hotplug.resize_disk("nic-grow-pci-5", 16 << 20, false).await;
    assert!(matches!(nic, Err(Error::WrongKind { .. })), "{nic:?}");
    let missing = hotplug.resize_disk("disk-none-pci-9", 16 << 20, false).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 16 << 20);

    // A read-only disk is refused.
    let frozen = qemu.dir().join("frozen.raw");
    std::fs::File::create(&frozen).unwrap().set_len(4 << 20).unwrap();
    let spec = DiskSpec { read_only: true, ..DiskSpec::new("frozen", DiskSource::Path(frozen)) };
    let frozen_disk = hotplug.add_disk(&spec, None).await.unwrap();
    let refused = hotplug.resize_disk(&frozen_disk.id.to_string(), 8 << 20, false).await;
    assert!(matches!(refused, Err(Error::ReadOnly { .. })), "{refused:?}");

    // Shrinking when allowed.
    let shrunk = hotplug.resize_disk(&id, 4 << 20, true).await.unwrap();
    assert_eq!(shrunk.new_size, 4 << 20);
    qemu.wait_for_serial_after(seen.end, "BLOCK vda sectors=8192 media=1", STEP).unwrap();

    for id in [id, frozen_disk.id.to_string()] {
        let removed = hotplug.del_disk(&id, &RemoveOptions::new(STEP)).await.unwrap();
        assert_eq!(removed, Outcome::Removed);
    }
}

/// The fdsets that hold CD media this crate passed to `cd0`.
async fn cd_fdsets(client: &Client) -> usize {
    let sets = client.query_fdsets().await.unwrap();
    sets.iter()
        .filter(|set| set.fds.iter().any(|fd| fd.opaque.as_deref() == Some("qmp-rs-cd:cd0")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cd_medium_goes_in_is_changed_and_comes_out() {
    let qemu = guest_or_skip!(QemuBuilder::new().empty_scsi_cdrom());
    let ready = qemu.wait_guest_ready(Duration::ZERO).unwrap();
    let hotplug = Hotplug::new(Client::connect(qemu.qmp_path()).await.unwrap());
    let client = hotplug.client().clone();
    let medium = |name: &str, size: u64| {
        let path = qemu.dir().join(name);
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        path
    };
    let (first, second) = (medium("one.iso", 2 << 20), medium("two.iso", 4 << 20));

    // Refused before anything is sent.
    let missing = hotplug.change_medium("nocd", &first, DiskFormat::Raw, true).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");
    let controller = hotplug.change_medium("scsi0", &first, DiskFormat::Raw, true).await;
    assert!(matches!(controller, Err(Error::WrongKind { .. })), "{controller:?}");
    let qcow = hotplug.change_medium("cd0", &first, DiskFormat::Qcow2, true).await;
    assert!(matches!(qcow, Err(Error::FormatMismatch { .. })), "{qcow:?}");
    assert!(matches!(hotplug.eject("scsi0", false).await, Err(Error::WrongKind { .. })));
    assert_eq!(cd_fdsets(&client).await, 0);

    hotplug.change_medium("cd0", &first, DiskFormat::Raw, true).await.unwrap();
    let inserted = qemu.wait_for_serial_after(ready.end, "BLOCK sr0 sectors=4096 media=1", STEP);
    let inserted = inserted.unwrap();
    assert_eq!(cd_fdsets(&client).await, 1);
    let block = client.execute("query-block", json!({})).await.unwrap();
    let cd = block.as_array().unwrap().iter().find(|b| b["device"] == "cd0").unwrap();
    assert_eq!(cd["inserted"]["ro"], true, "{cd}");
    assert!(cd["inserted"]["file"].as_str().unwrap().starts_with("/dev/fdset/"), "{cd}");

    // A change QEMU refuses (a qcow2 header with no valid cluster size): the new fdset is
    // removed again and the first medium stays.
    let broken = qemu.dir().join("broken.qcow2");
    let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
    header.resize(4096, 0);
    std::fs::write(&broken, header).unwrap();
    match hotplug.change_medium("cd0", &broken, DiskFormat::Qcow2, true).await {
        Err(Error::Step { step, rollback, .. }) => {
            assert_eq!(step, "blockdev-change-medium cd0");
            assert!(rollback.is_empty(), "{rollback}");
        }
        other => panic!("expected QEMU's refusal, got {other:?}"),
    }
    assert_eq!(cd_fdsets(&client).await, 1, "the refused medium's fdset is gone");
    let block = client.execute("query-block", json!({})).await.unwrap();
    let cd = block.as_array().unwrap().iter().find(|b| b["device"] == "cd0").unwrap();
    assert_eq!(cd["inserted"]["image"]["virtual-size"], 2 << 20, "{cd}");

    // Another medium: the first one's fdset goes.
    hotplug.change_medium("cd0", &second, DiskFormat::Raw, true).await.unwrap();
    let changed = qemu.wait_for_serial_after(inserted.end, "BLOCK sr0 sectors=8192 media=1", STEP);
    let changed = changed.unwrap();
    assert_eq!(cd_fdsets(&client).await, 1);

    hotplug.eject("cd0", false).await.unwrap();
    qemu.wait_for_serial_after(changed.end, "BLOCK sr0 sectors=8192 media=0", STEP).unwrap();
    assert_eq!(cd_fdsets(&client).await, 0);
    let block = client.execute("query-block", json!({})).await.unwrap();
    let cd = block.as_array().unwrap().iter().find(|b| b["device"] == "cd0").unwrap();
    assert!(cd.get("inserted").is_none(), "{cd}");
}
