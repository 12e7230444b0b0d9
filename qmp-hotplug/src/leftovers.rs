//! What an interrupted operation can leave in QEMU, found from a [`Snapshot`] alone: the
//! parts of ours (recognised by the id scheme and the [`ownership`](crate::ownership)
//! texts) that no complete device explains. Pure; the executor removes them.

use std::fmt;

use crate::ids::{DeviceId, DeviceKind};
use crate::snapshot::{RunState, Snapshot};
use crate::tls::tls_object_disk;

/// One part an interrupted operation left in QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leftover {
    /// The device the part was made for.
    pub device: DeviceId,
    /// What it is.
    pub part: LeftoverPart,
    /// The VM is not running, so QEMU keeps listing this fdset even after `remove-fd`
    /// (QEMU 7.2 closes removed descriptors only while the VM runs): its removal may
    /// already be pending and is complete only once the VM runs.
    pub closes_when_running: bool,
}

/// The kinds of parts [`Leftover`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeftoverPart {
    /// A block node of ours that no device uses (`blockdev-del` removes it, with its
    /// protocol child).
    BlockNode {
        /// The node.
        node_name: String,
    },
    /// An fdset of ours that no block node of a device uses (`remove-fd`).
    Fdset {
        /// The set.
        fdset_id: u64,
    },
    /// A netdev of ours that no NIC uses (`netdev_del`).
    Netdev {
        /// The netdev.
        id: String,
    },
    /// The intent marker of an interrupted NIC add, and the `getfd` names it implies
    /// (QEMU cannot list named descriptors; `closefd` each, then delete the marker).
    NicIntent {
        /// The marker's object id.
        marker: String,
        /// The descriptor names the add passed or was about to pass.
        fd_names: Vec<String>,
    },
    /// The TLS credentials object of an NBD disk over TLS whose node is gone (or is itself
    /// a leftover): `object-del`.
    TlsCreds {
        /// The object's id.
        object: String,
    },
}

impl fmt::Display for Leftover {
    /// E.g. `netdev nic-a-pci-2 (no NIC uses it)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.part {
            LeftoverPart::BlockNode { node_name } => {
                write!(f, "block node {node_name} (no device uses it)")?;
            }
            LeftoverPart::Fdset { fdset_id } => {
                write!(f, "fdset {fdset_id} of {} (no device's node reads it)", self.device)?;
            }
            LeftoverPart::Netdev { id } => write!(f, "netdev {id} (no NIC uses it)")?,
            LeftoverPart::NicIntent { marker, fd_names } => write!(
                f,
                "intent marker {marker} of an interrupted add of {} (descriptor names {})",
                self.device,
                fd_names.join(", ")
            )?,
            LeftoverPart::TlsCreds { object } => {
                write!(f, "TLS credentials {object} (no node of {} uses them)", self.device)?;
            }
        }
        if self.closes_when_running {
            f.write_str(", listed until the VM runs")?;
        }
        Ok(())
    }
}

/// What [`Hotplug::leftovers`](crate::Hotplug::leftovers) found, in the order
/// [`Hotplug::clean_leftovers`](crate::Hotplug::clean_leftovers) removes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Leftovers {
    /// QEMU's run state when they were read.
    pub run_state: RunState,
    /// The parts.
    pub items: Vec<Leftover>,
}

impl Leftovers {
    /// The leftovers in `snapshot`: what [`Hotplug::leftovers`](crate::Hotplug::leftovers)
    /// reports for QEMU's state read into it.
    pub fn in_snapshot(snapshot: &Snapshot) -> Self {
        Self { items: find(snapshot), run_state: snapshot.run_state.clone() }
    }

    /// `true` when nothing of ours is left over.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What [`Hotplug::clean_leftovers`](crate::Hotplug::clean_leftovers) did with each part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CleanReport {
    /// Removed.
    pub removed: Vec<Leftover>,
    /// `remove-fd` was sent, but the VM is not running, so QEMU keeps the fdset listed
    /// (and its descriptor open) until it runs.
    pub pending_until_running: Vec<Leftover>,
    /// No longer a leftover when checked again right before its removal (another
    /// manager completed or removed it): left alone.
    pub skipped: Vec<Leftover>,
    /// Could not be removed, with why.
    pub failed: Vec<(Leftover, String)>,
}

impl CleanReport {
    /// `true` when every part was removed or is pending only on the VM running.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Every leftover in `snapshot`, in removal order: nodes, then fdsets, netdevs, intent
/// markers (so an interrupted clean still finds the descriptor names), and TLS credentials
/// after the nodes that used them.
pub(crate) fn find(snapshot: &Snapshot) -> Vec<Leftover> {
    let pending = !snapshot.run_state.is_running();
    let mut found = Vec::new();
    let leftover_node = |name: &str| {
        let id = name.parse::<DeviceId>().ok().filter(|id| id.kind() == DeviceKind::Disk)?;
        snapshot.backend_with_node(name).is_none().then_some(id)
    };
    for name in snapshot.block_nodes.keys() {
        if let Some(device) = leftover_node(name) {
            let part = LeftoverPart::BlockNode { node_name: name.clone() };
            found.push(Leftover { device, part, closes_when_running: false });
        }
    }
    let mut seen_sets = Vec::new();
    for (fdset_id, set) in snapshot.disk_fdsets() {
        if seen_sets.contains(&fdset_id) {
            continue;
        }
        seen_sets.push(fdset_id);
        // In use when a node reads it that is not itself a leftover of ours (or that
        // leftover's protocol child).
        let in_use = snapshot.nodes_reading_fdset(fdset_id).any(|node| {
            let top = node.strip_suffix("-file").unwrap_or(node);
            leftover_node(top).is_none()
        });
        if !in_use {
            let part = LeftoverPart::Fdset { fdset_id };
            found.push(Leftover { device: set.device, part, closes_when_running: pending });
        }
    }
    for (id, netdev) in &snapshot.network.netdevs {
        let Ok(device) = id.parse::<DeviceId>() else { continue };
        if device.kind() == DeviceKind::Nic && netdev.nic.is_none() {
            let part = LeftoverPart::Netdev { id: id.clone() };
            found.push(Leftover { device, part, closes_when_running: false });
        }
    }
    for marker in snapshot.markers() {
        let part =
            LeftoverPart::NicIntent { marker: marker.object_id(), fd_names: marker.fd_names() };
        found.push(Leftover { device: marker.device, part, closes_when_running: false });
    }
    for object in &snapshot.objects {
        let Some(device) = tls_object_disk(object) else { continue };
        let node = device.node_name();
        if !snapshot.block_nodes.contains_key(&node) || leftover_node(&node).is_some() {
            let part = LeftoverPart::TlsCreds { object: object.clone() };
            found.push(Leftover { device, part, closes_when_running: false });
        }
    }
    found
}

/// Whether `item` is (still) a leftover in `snapshot`.
pub(crate) fn is_leftover(item: &Leftover, snapshot: &Snapshot) -> bool {
    find(snapshot).iter().any(|other| other.device == item.device && other.part == item.part)
}

#[cfg(test)]
mod tests {
    use qmp_codec::{FdsetFdInfo, FdsetInfo};
    use serde_json::json;

    use super::*;
    use crate::netinfo::NetworkInfo;
    use crate::snapshot::{BlockBackend, BlockNode};
    use crate::topology::PciTree;

    fn empty() -> Snapshot {
        Snapshot::new(PciTree::from_query_pci("pc", &json!([{"bus": 0, "devices": []}])).unwrap())
    }

    fn fdset(id: u64, opaque: &str) -> FdsetInfo {
        FdsetInfo { fdset_id: id, fds: vec![FdsetFdInfo { fd: 20, opaque: Some(opaque.into()) }] }
    }

    fn names(found: &[Leftover]) -> Vec<String> {
        found.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn complete_devices_leave_nothing() {
        let mut snapshot = empty();
        snapshot.peripherals.insert("disk-a-pci-2".into(), "virtio-blk-pci".into());
        snapshot
            .block_nodes
            .insert("disk-a-pci-2".into(), BlockNode::new("raw", false, "/dev/fdset/0"));
        snapshot
            .block_nodes
            .insert("disk-a-pci-2-file".into(), BlockNode::new("file", false, "/dev/fdset/0"));
        snapshot.block_backends.push(BlockBackend::new(
            "",
            Some("/machine/peripheral/disk-a-pci-2/virtio-backend".into()),
            Some("disk-a-pci-2".into()),
        ));
        snapshot.fdsets.push(fdset(0, "qmp-rs:disk-a-pci-2:file=8.1:5"));
        snapshot.network = NetworkInfo::parse(
            "nic-n-pci-3: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\n \\ nic-n-pci-3: index=0,type=tap,fd=9\n",
        );
        assert_eq!(find(&snapshot), []);
    }

    #[test]
    fn every_kind_of_part_is_found_in_removal_order() {
        let mut snapshot = empty();
        snapshot.run_state = RunState::Paused;
        // A node whose device is gone, reading fdset 0; a set no node reads; a foreign set.
        snapshot
            .block_nodes
            .insert("disk-a-pci-2".into(), BlockNode::new("raw", false, "/dev/fdset/0"));
        snapshot
            .block_nodes
            .insert("disk-a-pci-2-file".into(), BlockNode::new("file", false, "/dev/fdset/0"));
        snapshot.fdsets.push(fdset(0, "qmp-rs:disk-a-pci-2:file=8.1:5"));
        snapshot.fdsets.push(fdset(1, "disk-b-pci-4"));
        snapshot.fdsets.push(fdset(2, "someone-elses"));
        snapshot.network =
            NetworkInfo::parse("nic-o-pci-5: index=0,type=tap,fd=14\nu1: index=0,type=user\n");
        snapshot.objects.insert("qmp-rs-intent.nic-o-pci-5.t1.v0".into());
        snapshot.objects.insert("pc.ram".into());
        // Credentials whose node is a leftover, and credentials of a complete disk.
        snapshot.objects.insert("qmp-rs-tls.disk-a-pci-2".into());
        snapshot.objects.insert("qmp-rs-tls.disk-c-pci-6".into());
        snapshot.peripherals.insert("disk-c-pci-6".into(), "virtio-blk-pci".into());
        snapshot
            .block_nodes
            .insert("disk-c-pci-6".into(), BlockNode::new("raw", false, "nbd://h:1"));
        snapshot.block_backends.push(BlockBackend::new(
            "",
            Some("/machine/peripheral/disk-c-pci-6/virtio-backend".into()),
            Some("disk-c-pci-6".into()),
        ));
        let found = find(&snapshot);
        assert_eq!(
            names(&found),
            [
                "block node disk-a-pci-2 (no device uses it)",
                "fdset 0 of disk-a-pci-2 (no device's node reads it), listed until the VM runs",
                "fdset 1 of disk-b-pci-4 (no device's node reads it), listed until the VM runs",
                "netdev nic-o-pci-5 (no NIC uses it)",
                "intent marker qmp-rs-intent.nic-o-pci-5.t1.v0 of an interrupted add of \
                 nic-o-pci-5 (descriptor names nic-o-pci-5-tap0)",
                "TLS credentials qmp-rs-tls.disk-a-pci-2 (no node of disk-a-pci-2 uses them)",
            ]
        );
        assert!(found.iter().all(|item| is_leftover(item, &snapshot)));
        snapshot.run_state = RunState::Running;
        assert!(find(&snapshot).iter().all(|item| !item.closes_when_running));
    }

    #[test]
    fn a_node_of_ours_in_use_and_foreign_names_are_not_leftovers() {
        let mut snapshot = empty();
        snapshot.block_nodes.insert("disk-a-pci-2".into(), BlockNode::new("raw", false, "/x"));
        snapshot.block_nodes.insert("mine".into(), BlockNode::new("raw", false, "/dev/fdset/3"));
        snapshot.fdsets.push(fdset(3, "qmp-rs:disk-z-pci-9:blk=7.0"));
        snapshot.block_backends.push(BlockBackend::new(
            "",
            Some("/machine/peripheral/someone/virtio-backend".into()),
            Some("disk-a-pci-2".into()),
        ));
        snapshot.network = NetworkInfo::parse("net0: index=0,type=tap,fd=3\n");
        assert_eq!(find(&snapshot), [], "used node, fdset read by a foreign node, foreign netdev");
    }
}
