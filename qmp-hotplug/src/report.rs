//! What an operation reports: read back from QEMU after it, not echoed from the request.

use std::fmt;

use crate::ids::DeviceId;
use crate::leftovers::Leftover;
use crate::snapshot::Snapshot;

/// What an operation found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Added now, with the caller's descriptors.
    Added,
    /// QEMU already had exactly this device (an earlier call added it): nothing was sent,
    /// and the caller's descriptors (taps, image) were not used; QEMU holds its own.
    AlreadyPresent,
    /// Removed (or the removal an earlier call started was finished).
    Removed,
    /// Nothing of the device existed, and the caller said that is fine (`missing_ok`).
    Absent,
}

impl Outcome {
    /// `added`, `already-present`, `removed` or `absent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::AlreadyPresent => "already-present",
            Self::Removed => "removed",
            Self::Absent => "absent",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One queue of a NIC's tap netdev.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueReport {
    /// The descriptor number inside QEMU (`info network`'s `fd=`).
    pub fd: Option<i32>,
    /// The tap interface carrying it, from QEMU's `/proc/<pid>/fdinfo/<fd>`; `None` when
    /// that cannot be read (another user's QEMU, not a unix socket, a remote QEMU).
    pub tap: Option<String>,
}

/// A NIC as QEMU has it after [`Hotplug::add_nic`](crate::Hotplug::add_nic).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NicReport {
    /// The device id.
    pub id: DeviceId,
    /// Added now or already there.
    pub outcome: Outcome,
    /// The device's driver.
    pub model: String,
    /// Its netdev.
    pub netdev: String,
    /// Its MAC address.
    pub mac: Option<String>,
    /// The netdev's queues, in order.
    pub queues: Vec<QueueReport>,
    /// Parts of ours the operation could not tidy away (the intent marker, when deleting
    /// it failed): listed by [`Hotplug::leftovers`](crate::Hotplug::leftovers) too.
    pub left_behind: Vec<Leftover>,
}

impl NicReport {
    /// The report for NIC `id` from `snapshot`; `taps` names the tap of each queue (in
    /// order) where it could be learned.
    pub(crate) fn read(
        id: DeviceId,
        outcome: Outcome,
        snapshot: &Snapshot,
        taps: &[Option<String>],
    ) -> Self {
        let name = id.to_string();
        let properties = snapshot.properties.get(&name);
        let netdev = properties.and_then(|p| p.netdev.clone()).unwrap_or_default();
        let queues = snapshot
            .network
            .netdevs
            .get(&netdev)
            .map(|netdev| {
                netdev
                    .queues
                    .iter()
                    .enumerate()
                    .map(|(n, queue)| QueueReport {
                        fd: queue.fd,
                        tap: taps.get(n).cloned().flatten(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            model: snapshot.peripherals.get(&name).cloned().unwrap_or_default(),
            mac: properties.and_then(|p| p.mac.clone()),
            id,
            outcome,
            netdev,
            queues,
            left_behind: Vec::new(),
        }
    }
}

/// A disk as QEMU has it after [`Hotplug::add_disk`](crate::Hotplug::add_disk).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskReport {
    /// The device id.
    pub id: DeviceId,
    /// Added now or already there.
    pub outcome: Outcome,
    /// The device's driver.
    pub model: String,
    /// Its block node.
    pub node: String,
    /// The node's format driver (`raw`, `qcow2`).
    pub format: String,
    /// The protocol driver under it (`file`, `host_device`, `nbd`).
    pub protocol: String,
    /// Read-only.
    pub read_only: bool,
    /// What the node reads (`/dev/fdset/N`, an NBD URI).
    pub file: String,
    /// The fdset holding the image, whose opaque fingerprints it.
    pub fdset_id: Option<u64>,
}

impl DiskReport {
    /// The report for disk `id` from `snapshot`.
    pub(crate) fn read(id: DeviceId, outcome: Outcome, snapshot: &Snapshot) -> Self {
        let node = snapshot.block_nodes.get(&id.node_name()).cloned().unwrap_or_default();
        let protocol = snapshot
            .block_nodes
            .get(&id.file_node_name())
            .map(|child| child.driver.clone())
            .unwrap_or_default();
        Self {
            model: snapshot.peripherals.get(&id.to_string()).cloned().unwrap_or_default(),
            node: id.node_name(),
            format: node.driver.clone(),
            protocol,
            read_only: node.read_only,
            fdset_id: node.fdset(),
            file: node.file,
            id,
            outcome,
        }
    }
}
