//! The typical checks whose cost BENCHMARKS.md records, shared by both benches.

use serde_json::{Value, json};

/// (bench name, command, arguments): a disk and a NIC backend as qmp-hotplug adds them, a
/// NIC (`device_add`, which is reported as not checked after the command lookup), and a
/// query without arguments.
pub(crate) fn typical_checks() -> [(&'static str, &'static str, Value); 4] {
    [
        (
            "blockdev_add_raw_file",
            "blockdev-add",
            json!({"driver": "raw", "node-name": "disk-d1-pci-2", "read-only": false,
                   "file": {"driver": "file", "node-name": "disk-d1-pci-2-file",
                            "filename": "/dev/fdset/0", "read-only": false}}),
        ),
        (
            "netdev_add_tap",
            "netdev_add",
            json!({"type": "tap", "id": "nic-a1-pci-2", "fd": "nic-a1-pci-2-tap0", "vhost": true,
                   "vhostfd": "nic-a1-pci-2-vhost0"}),
        ),
        (
            "device_add",
            "device_add",
            json!({"driver": "virtio-net-pci", "id": "nic-a1-pci-2", "bus": "pci.0", "addr": "0x2",
                   "netdev": "nic-a1-pci-2"}),
        ),
        ("query_status", "query-status", json!({})),
    ]
}
