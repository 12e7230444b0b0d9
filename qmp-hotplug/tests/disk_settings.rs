//! Disk settings against a real QEMU 7.2 with the test guest: what the spec asks for is what
//! QEMU reports afterwards (`query-named-block-nodes`, `qom-get`), a disk that differs in a
//! setting QEMU shows is not adopted (each of serial, bootindex and write-cache named alone), and settings QEMU would refuse are refused before anything is
//! sent. With `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails the test.

use std::time::Duration;

use qemu_launcher::{Qemu, guest_or_skip};
use qmp_client::Client;
use qmp_hotplug::{
    Aio, DetectZeroes, Discard, DiskSettings, DiskSource, DiskSpec, Error, Hotplug, Outcome,
    RemoveOptions,
};
use serde_json::{Value, json};

/// A deadline per step for QEMU and the guest on a loaded CI machine, not a speed check.
const STEP: Duration = Duration::from_secs(60);

async fn node(client: &Client, name: &str) -> Value {
    let nodes = client.execute("query-named-block-nodes", json!({"flat": true})).await.unwrap();
    nodes.as_array().unwrap().iter().find(|n| n["node-name"] == name).cloned().unwrap_or_default()
}

async fn property(client: &Client, device: &str, property: &str) -> Value {
    let path = format!("/machine/peripheral/{device}");
    client.execute("qom-get", json!({"path": path, "property": property})).await.unwrap()
}

async fn pci_devices(client: &Client) -> usize {
    let pci = client.execute("query-pci", ()).await.unwrap();
    pci[0]["devices"].as_array().unwrap().len()
}

fn image(qemu: &Qemu, name: &str) -> std::path::PathBuf {
    let path = qemu.dir().join(name);
    std::fs::File::create(&path).unwrap().set_len(4 << 20).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_settings_reach_qemu_and_the_guest() {
    let qemu = guest_or_skip!();
    let hotplug = Hotplug::new(Client::connect(qemu.qmp_path()).await.unwrap());
    let client = hotplug.client();
    let start = qemu.serial_len();

    let settings = DiskSettings {
        cache_direct: true,
        cache_no_flush: true,
        aio: Some(Aio::Native),
        discard: Some(Discard::Unmap),
        detect_zeroes: Some(DetectZeroes::Unmap),
        serial: Some("QMPRS-0001".into()),
        bootindex: Some(5),
        write_cache: Some(false),
    };
    let spec = DiskSpec {
        settings: settings.clone(),
        ..DiskSpec::new("set", DiskSource::Path(image(&qemu, "set.raw")))
    };
    let report = hotplug.add_disk(&spec, None).await.unwrap();
    let id = report.id.to_string();
    qemu.wait_for_serial_after(start, "GUEST: +vda", STEP).unwrap();

    let format = node(client, &report.node).await;
    assert_eq!(format["cache"]["direct"], true, "{format}");
    assert_eq!(format["cache"]["no-flush"], true, "{format}");
    assert_eq!(format["detect_zeroes"], "unmap", "{format}");
    assert_eq!(property(client, &id, "serial").await, "QMPRS-0001");
    assert_eq!(property(client, &id, "bootindex").await, 5);
    assert_eq!(property(client, &id, "write-cache").await, "off");

    // The same spec again is this disk; one setting different is not.
    let again = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPresent);
    let buffered = DiskSpec {
        settings: DiskSettings { cache_direct: false, aio: None, ..settings.clone() },
        ..spec.clone()
    };
    match hotplug.add_disk(&buffered, None).await {
        Err(Error::Conflict { differences, .. }) => {
            assert!(differences.iter().any(|d| d.field == "cache.direct"), "{differences:?}");
        }
        other => panic!("a disk with another cache mode was taken: {other:?}"),
    }
    // Each device setting QEMU shows (qom-get) is compared on its own, and so are aio and
    // discard, which QEMU shows nowhere: the fdset's opaque recorded them.
    let changes: [(&[&str], DiskSettings); 5] = [
        (&["serial"], DiskSettings { serial: Some("QMPRS-0002".into()), ..settings.clone() }),
        (&["bootindex"], DiskSettings { bootindex: None, ..settings.clone() }),
        (&["write-cache"], DiskSettings { write_cache: Some(true), ..settings.clone() }),
        (&["aio"], DiskSettings { aio: Some(Aio::IoUring), ..settings.clone() }),
        // detect-zeroes=unmap needs discard=unmap, so both change.
        (
            &["detect-zeroes", "discard"],
            DiskSettings { discard: None, detect_zeroes: None, ..settings.clone() },
        ),
    ];
    let devices = pci_devices(client).await;
    for (expected, changed) in changes {
        let retry = DiskSpec { settings: changed, ..spec.clone() };
        match hotplug.add_disk(&retry, None).await {
            Err(Error::Conflict { differences, .. }) => {
                let fields: Vec<&str> = differences.iter().map(|d| d.field).collect();
                assert_eq!(fields, expected, "{differences:?}");
            }
            other => panic!("a disk with another {expected:?} was taken: {other:?}"),
        }
    }
    assert_eq!(pci_devices(client).await, devices, "conflicts change nothing");

    // What QEMU would refuse part way is refused before anything is sent.
    let devices = pci_devices(client).await;
    let native_buffered = DiskSpec {
        settings: DiskSettings { aio: Some(Aio::Native), ..DiskSettings::default() },
        ..DiskSpec::new("bad", DiskSource::Path(image(&qemu, "bad.raw")))
    };
    let refused = hotplug.add_disk(&native_buffered, None).await.unwrap_err();
    assert!(matches!(refused, Error::InvalidSpec(_)), "{refused}");
    assert_eq!(pci_devices(client).await, devices);

    // io_uring: this QEMU 7.2 is built with it (the probe reads its schema).
    let uring = DiskSpec {
        settings: DiskSettings { aio: Some(Aio::IoUring), ..DiskSettings::default() },
        ..DiskSpec::new("uring", DiskSource::Path(image(&qemu, "uring.raw")))
    };
    let uring_report = hotplug.add_disk(&uring, None).await.unwrap();
    qemu.wait_for_serial_after(start, "GUEST: +vdb", STEP).unwrap();

    let remove = RemoveOptions::new(STEP);
    for removed in [id, uring_report.id.to_string()] {
        assert_eq!(hotplug.del_disk(&removed, &remove).await.unwrap(), Outcome::Removed);
    }
    assert_eq!(node(client, &report.node).await, Value::Null);
}
