//! What QEMU has, as far as hotplug cares ([`Snapshot`]), the queries that read it, and
//! the pure parsing of their replies. The executor runs the queries; nothing here does I/O.

use std::collections::BTreeSet;

use qmp_codec::FdsetInfo;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::ids::{DeviceId, DeviceKind};
use crate::pci::SlotMap;

/// The QOM container of user-created devices (those with an `id`).
const PERIPHERAL_PATH: &str = "/machine/peripheral";

/// What QEMU has, as far as hotplug cares: read before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Bus 0 (`query-pci`).
    pub pci: SlotMap,
    /// Ids of user-created devices (`qom-list /machine/peripheral`).
    pub peripherals: BTreeSet<String>,
    /// Named block nodes (`query-named-block-nodes`).
    pub block_nodes: BTreeSet<String>,
    /// fdsets (`query-fdsets`).
    pub fdsets: Vec<FdsetInfo>,
}

impl Snapshot {
    /// A snapshot from the replies to its [`Query`]s.
    ///
    /// # Errors
    /// [`Error::PciData`] when the `query-pci` reply has an unexpected shape.
    pub(crate) fn from_replies(replies: Replies) -> Result<Self, Error> {
        Ok(Self {
            pci: SlotMap::from_query_pci(&replies.pci)?,
            peripherals: replies
                .peripherals
                .into_iter()
                .filter(|property| property.kind.starts_with("child<"))
                .map(|property| property.name)
                .collect(),
            block_nodes: replies.block_nodes.into_iter().map(|node| node.node_name).collect(),
            fdsets: replies.fdsets,
        })
    }

    /// The fdset whose descriptor carries `opaque`.
    pub fn fdset_with_opaque(&self, opaque: &str) -> Option<u64> {
        self.fdsets
            .iter()
            .find(|set| set.fds.iter().any(|fd| fd.opaque.as_deref() == Some(opaque)))
            .map(|set| set.fdset_id)
    }

    /// The lowest fdset id QEMU does not use.
    pub fn unused_fdset_id(&self) -> u64 {
        let used: BTreeSet<u64> = self.fdsets.iter().map(|set| set.fdset_id).collect();
        // Of len + 1 candidates at least one is unused.
        (0..=used.len() as u64).find(|id| !used.contains(id)).unwrap_or_default()
    }

    /// Every name of ours QEMU knows, as device ids of `kind` and `name`: a device, a
    /// block node or an fdset left by an earlier try.
    pub(crate) fn earlier_try(&self, kind: DeviceKind, name: &str) -> Option<DeviceId> {
        let opaques =
            self.fdsets.iter().flat_map(|set| &set.fds).filter_map(|fd| fd.opaque.as_ref());
        self.peripherals
            .iter()
            .chain(&self.block_nodes)
            .chain(opaques)
            .filter_map(|text| text.parse::<DeviceId>().ok())
            .find(|id| id.kind() == kind && id.name() == name)
    }
}

/// One QMP query a [`Snapshot`] is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// `query-pci`: the buses and their devices.
    Pci,
    /// `qom-list /machine/peripheral`: the user-created devices.
    Peripherals,
    /// `query-named-block-nodes {"flat": true}`: every named block node.
    BlockNodes,
    /// `query-fdsets`.
    Fdsets,
}

impl Query {
    /// The command.
    pub(crate) fn command(self) -> &'static str {
        match self {
            Self::Pci => "query-pci",
            Self::Peripherals => "qom-list",
            Self::BlockNodes => "query-named-block-nodes",
            Self::Fdsets => "query-fdsets",
        }
    }

    /// Its arguments (`null` for none).
    pub(crate) fn arguments(self) -> Value {
        match self {
            Self::Pci | Self::Fdsets => Value::Null,
            Self::Peripherals => json!({"path": PERIPHERAL_PATH}),
            Self::BlockNodes => json!({"flat": true}),
        }
    }
}

/// The replies a [`Snapshot`] is made of, typed as far as the client decodes them.
#[derive(Debug)]
pub(crate) struct Replies {
    /// [`Query::Pci`]'s, parsed by [`SlotMap::from_query_pci`].
    pub(crate) pci: Value,
    /// [`Query::Peripherals`]'s.
    pub(crate) peripherals: Vec<QomProperty>,
    /// [`Query::BlockNodes`]'s.
    pub(crate) block_nodes: Vec<BlockNode>,
    /// [`Query::Fdsets`]'s.
    pub(crate) fdsets: Vec<FdsetInfo>,
}

/// An entry of a `qom-list` reply (QEMU's `ObjectPropertyInfo`): a child device is a
/// property of type `child<DRIVER>`.
#[derive(Debug, Deserialize)]
pub(crate) struct QomProperty {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// An entry of a `query-named-block-nodes` reply (QEMU's `BlockDeviceInfo`); only the
/// name is read.
#[derive(Debug, Deserialize)]
pub(crate) struct BlockNode {
    #[serde(rename = "node-name")]
    node_name: String,
}

#[cfg(test)]
mod tests {
    use qmp_codec::FdsetFdInfo;

    use super::*;

    /// Replies as QEMU 7.2 gives them (trimmed): one NIC, one disk with its file node,
    /// and the disk's released fdset.
    fn replies() -> Replies {
        let peripherals = json!([
            {"name": "type", "type": "string"},
            {"name": "nic-a-pci-2", "type": "child<virtio-net-pci>"},
            {"name": "disk-b-pci-3", "type": "child<virtio-blk-pci>"}]);
        let nodes = json!([
            {"node-name": "disk-b-pci-3", "drv": "raw", "ro": false},
            {"node-name": "disk-b-pci-3-file", "drv": "file", "ro": false}]);
        Replies {
            pci: json!([{"bus": 0, "devices": [
                {"bus": 0, "slot": 0, "function": 0, "qdev_id": ""},
                {"bus": 0, "slot": 2, "function": 0, "qdev_id": "nic-a-pci-2"},
                {"bus": 0, "slot": 3, "function": 0, "qdev_id": "disk-b-pci-3"}]}]),
            peripherals: serde_json::from_value(peripherals).unwrap(),
            block_nodes: serde_json::from_value(nodes).unwrap(),
            fdsets: serde_json::from_value(json!([{"fdset-id": 0, "fds": []}])).unwrap(),
        }
    }

    #[test]
    fn replies_make_a_snapshot() {
        let snapshot = Snapshot::from_replies(replies()).unwrap();
        assert_eq!(
            snapshot.peripherals,
            BTreeSet::from(["nic-a-pci-2".to_owned(), "disk-b-pci-3".to_owned()]),
            "child<...> properties only"
        );
        assert_eq!(
            snapshot.block_nodes,
            BTreeSet::from(["disk-b-pci-3".to_owned(), "disk-b-pci-3-file".to_owned()])
        );
        assert!(snapshot.pci.has_device("nic-a-pci-2", 2));
        assert_eq!(snapshot.unused_fdset_id(), 1);
        let nic = snapshot.earlier_try(DeviceKind::Nic, "a").unwrap();
        assert_eq!(nic.to_string(), "nic-a-pci-2");
        assert_eq!(snapshot.earlier_try(DeviceKind::Disk, "a"), None, "kind matters");
    }

    #[test]
    fn a_bad_pci_reply_is_refused() {
        let mut bad = replies();
        bad.pci = json!({"not": "a list"});
        assert!(matches!(Snapshot::from_replies(bad), Err(Error::PciData(_))));
    }

    #[test]
    fn fdsets_are_found_by_opaque_and_ids_are_not_reused() {
        let mut snapshot = Snapshot::from_replies(replies()).unwrap();
        snapshot.fdsets = vec![
            FdsetInfo { fdset_id: 0, fds: vec![] },
            FdsetInfo {
                fdset_id: 2,
                fds: vec![FdsetFdInfo { fd: 20, opaque: Some("disk-c-pci-4".into()) }],
            },
        ];
        assert_eq!(snapshot.fdset_with_opaque("disk-c-pci-4"), Some(2));
        assert_eq!(snapshot.fdset_with_opaque("disk-b-pci-3"), None);
        assert_eq!(snapshot.unused_fdset_id(), 1);
        let disk = snapshot.earlier_try(DeviceKind::Disk, "c").unwrap();
        assert_eq!(disk.slot(), 4, "an fdset's opaque names an earlier try too");
    }

    #[test]
    fn queries_are_what_the_replies_answer() {
        assert_eq!(Query::Peripherals.command(), "qom-list");
        assert_eq!(Query::Peripherals.arguments(), json!({"path": "/machine/peripheral"}));
        assert_eq!(Query::BlockNodes.arguments(), json!({"flat": true}));
        assert_eq!((Query::Pci.command(), Query::Pci.arguments()), ("query-pci", Value::Null));
        assert_eq!(Query::Fdsets.command(), "query-fdsets");
    }
}
