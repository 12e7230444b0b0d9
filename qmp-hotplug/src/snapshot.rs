//! What QEMU has, as far as hotplug cares ([`Snapshot`]), the queries that read it, and
//! the pure parsing of their replies. The executor runs the queries; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use qmp_codec::FdsetInfo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Error;
use crate::ids::{DeviceId, DeviceKind};
use crate::netinfo::NetworkInfo;
use crate::ownership::{DiskFdset, IntentMarker};
use crate::scsi::ScsiBus;
use crate::topology::{PciTree, Peripheral, TopologyInput};

/// The QOM container of user-created devices (those with an `id`).
pub(crate) const PERIPHERAL_PATH: &str = "/machine/peripheral";

/// The QOM container of user-created objects (`object-add`).
const OBJECTS_PATH: &str = "/objects";

/// QEMU's run state (`query-status`), as far as hotplug tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RunState {
    /// The guest runs: it can acknowledge an unplug.
    #[default]
    Running,
    /// Stopped after having run (`stop`): an unplug request waits until `cont`.
    Paused,
    /// Started with `-S` and never run: QEMU 7.2 wedges a device unplugged now for good.
    Prelaunch,
    /// Any other state QEMU reports (`inmigrate`, `shutdown`, `suspended`, ...).
    Other(String),
}

impl RunState {
    /// The state named by `query-status`'s `status`.
    pub fn from_status(status: &str) -> Self {
        match status {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "prelaunch" => Self::Prelaunch,
            other => Self::Other(other.to_owned()),
        }
    }

    /// `query-status`'s name for it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Prelaunch => "prelaunch",
            Self::Other(status) => status,
        }
    }

    /// Whether the guest runs. QEMU 7.2 also closes removed fdset descriptors only then.
    pub fn is_running(&self) -> bool {
        *self == Self::Running
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named block node (`query-named-block-nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BlockNode {
    /// Its driver (`raw`, `qcow2`, `file`, `host_device`, `nbd`, ...).
    pub driver: String,
    /// Read-only.
    pub read_only: bool,
    /// What it reads: `/dev/fdset/N`, a path, or an NBD URI.
    pub file: String,
    /// `cache.direct`.
    pub cache_direct: bool,
    /// `cache.no-flush`.
    pub cache_no_flush: bool,
    /// `detect-zeroes` (`off`, `on`, `unmap`).
    pub detect_zeroes: String,
}

impl BlockNode {
    /// A node of `driver` over `file`, with QEMU's default cache and zero detection.
    pub fn new(driver: impl Into<String>, read_only: bool, file: impl Into<String>) -> Self {
        Self {
            driver: driver.into(),
            read_only,
            file: file.into(),
            cache_direct: false,
            cache_no_flush: false,
            detect_zeroes: "off".into(),
        }
    }

    /// The fdset it reads, if `file` is `/dev/fdset/N`.
    pub fn fdset(&self) -> Option<u64> {
        self.file.strip_prefix("/dev/fdset/")?.parse().ok()
    }
}

/// A block backend (`query-block`): what a device (or a `-drive`) has inserted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BlockBackend {
    /// The legacy drive name (`-drive id=`), empty for a device's anonymous backend.
    pub drive: String,
    /// The QOM path of the device using it, e.g. `/machine/peripheral/disk-a-pci-2/virtio-backend`.
    pub qdev: Option<String>,
    /// The top node inserted, if any.
    pub node: Option<String>,
}

impl BlockBackend {
    /// A backend.
    pub fn new(drive: impl Into<String>, qdev: Option<String>, node: Option<String>) -> Self {
        Self { drive: drive.into(), qdev, node }
    }

    /// The id of the user-created device using it: the `/machine/peripheral/<id>` of its
    /// QOM path (with or without the virtio backend child), or the bare id QEMU 7.2 gives
    /// for a device that owns its backend itself (`scsi-hd`).
    pub fn device_id(&self) -> Option<&str> {
        let qdev = self.qdev.as_deref()?;
        if !qdev.starts_with('/') {
            return (!qdev.is_empty()).then_some(qdev);
        }
        let rest = qdev.strip_prefix(PERIPHERAL_PATH)?.strip_prefix('/')?;
        let id = rest.strip_suffix("/virtio-backend").unwrap_or(rest);
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

/// Properties of one of our devices (`qom-get`); `None` when the device has no such
/// property (a NIC has no `drive`, a disk no `netdev`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeviceProperties {
    /// A NIC's netdev id (empty when it has none).
    pub netdev: Option<String>,
    /// A NIC's MAC address.
    pub mac: Option<String>,
    /// A virtio NIC's multiqueue flag.
    pub mq: Option<bool>,
    /// A disk's drive: the block node (or legacy drive) it uses, empty when none.
    pub drive: Option<String>,
    /// A NIC's settings from [`NIC_SETTINGS`] or a disk's from [`DISK_SETTINGS`], as QEMU
    /// shows them (virtio ones absent on other models).
    pub settings: BTreeMap<String, Value>,
}

/// The NIC properties a [`NicSpec`](crate::NicSpec) may set and adoption compares.
pub const NIC_SETTINGS: [&str; 5] =
    ["host_mtu", "rx_queue_size", "tx_queue_size", "bootindex", "romfile"];

/// The disk device properties a [`DiskSettings`](crate::DiskSettings) sets and adoption
/// compares (`qom-get` on the device). QEMU 7.2 shows a node's `cache` and
/// `detect_zeroes` in `query-named-block-nodes`, but a node's `aio` and `discard` nowhere.
pub const DISK_SETTINGS: [&str; 3] = ["serial", "bootindex", "write-cache"];

/// What QEMU has, as far as hotplug cares: read before planning, and again after an add
/// to report what QEMU really holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The run state (`query-status`).
    pub run_state: RunState,
    /// The whole PCI tree (`query-pci`, the machine type, and where QOM puts each
    /// peripheral).
    pub pci: PciTree,
    /// User-created devices and their drivers (`qom-list /machine/peripheral`).
    pub peripherals: BTreeMap<String, String>,
    /// User-created objects (`qom-list /objects`): intent markers among them.
    pub objects: BTreeSet<String>,
    /// Named block nodes (`query-named-block-nodes`).
    pub block_nodes: BTreeMap<String, BlockNode>,
    /// Block backends (`query-block`).
    pub block_backends: Vec<BlockBackend>,
    /// fdsets (`query-fdsets`).
    pub fdsets: Vec<FdsetInfo>,
    /// Netdevs and NICs (HMP `info network`).
    pub network: NetworkInfo,
    /// Properties of the devices of ours the operation concerns (`qom-get`).
    pub properties: BTreeMap<String, DeviceProperties>,
    /// What sits on each virtio-scsi controller's bus, by controller id (`qom-list` of
    /// the bus, `qom-get` of each device's `scsi-id` and `lun`).
    pub scsi_buses: BTreeMap<String, ScsiBus>,
}

impl Snapshot {
    /// A running QEMU with the PCI tree `pci` and nothing else: for planning without QEMU.
    pub fn new(pci: PciTree) -> Self {
        Self {
            run_state: RunState::Running,
            pci,
            peripherals: BTreeMap::new(),
            objects: BTreeSet::new(),
            block_nodes: BTreeMap::new(),
            block_backends: Vec::new(),
            fdsets: Vec::new(),
            network: NetworkInfo::default(),
            properties: BTreeMap::new(),
            scsi_buses: BTreeMap::new(),
        }
    }

    /// A snapshot from the replies to its [`Query`]s and the HMP `info network` text;
    /// no properties yet.
    ///
    /// # Errors
    /// [`Error::PciData`] when the `query-pci` reply has an unexpected shape or disagrees
    /// with QOM.
    pub(crate) fn from_replies(replies: Replies) -> Result<Self, Error> {
        let children = |list: Vec<QomProperty>| {
            list.into_iter()
                .filter_map(|p| {
                    let driver = p.kind.strip_prefix("child<")?.strip_suffix('>')?.to_owned();
                    Some((p.name, driver))
                })
                .collect::<BTreeMap<_, _>>()
        };
        Ok(Self {
            run_state: RunState::from_status(&replies.status.status),
            pci: PciTree::new(&TopologyInput {
                machine_type: replies.machine_type,
                query_pci: replies.pci,
                peripherals: replies.placements,
            })?,
            peripherals: children(replies.peripherals),
            objects: children(replies.objects).into_keys().collect(),
            block_nodes: replies
                .block_nodes
                .into_iter()
                .map(|node| {
                    let mut block_node =
                        BlockNode::new(node.drv, node.ro, node.file.unwrap_or_default());
                    if let Some(cache) = node.cache {
                        block_node.cache_direct = cache.direct;
                        block_node.cache_no_flush = cache.no_flush;
                    }
                    if let Some(detect_zeroes) = node.detect_zeroes {
                        block_node.detect_zeroes = detect_zeroes;
                    }
                    (node.node_name, block_node)
                })
                .collect(),
            block_backends: replies
                .block
                .into_iter()
                .map(|backend| {
                    let node = backend.inserted.map(|inserted| inserted.node_name);
                    BlockBackend::new(backend.device, backend.qdev, node)
                })
                .collect(),
            fdsets: replies.fdsets,
            network: NetworkInfo::parse(&replies.network),
            properties: BTreeMap::new(),
            scsi_buses: BTreeMap::new(),
        })
    }

    /// A snapshot from QEMU's replies as JSON, recorded elsewhere (a transcript, a fuzz
    /// input): decoded as the executor decodes them, then assembled as
    /// [`Hotplug::snapshot`](crate::Hotplug::snapshot) assembles its own; no properties.
    ///
    /// # Errors
    /// [`Error::Client`] ([`qmp_client::Error::Decode`]) when a reply does not have its
    /// command's shape; [`Error::PciData`] as for a live snapshot.
    pub fn from_json_replies(replies: JsonReplies) -> Result<Self, Error> {
        Self::from_replies(Replies {
            status: decode(Query::Status, replies.status)?,
            pci: replies.pci,
            machine_type: replies.machine_type,
            placements: decode_as("qom-get", replies.placements)?,
            peripherals: decode(Query::Peripherals, replies.peripherals)?,
            objects: decode(Query::Objects, replies.objects)?,
            block_nodes: decode(Query::BlockNodes, replies.block_nodes)?,
            block: decode(Query::Block, replies.block)?,
            fdsets: decode(Query::Fdsets, replies.fdsets)?,
            network: replies.network,
        })
    }

    /// The intent markers QEMU holds, by object id.
    pub fn markers(&self) -> impl Iterator<Item = IntentMarker> + '_ {
        self.objects.iter().filter_map(|id| IntentMarker::parse(id))
    }

    /// The fdsets of ours (each descriptor whose `opaque` is one of our disk texts), with
    /// what the opaque says.
    pub fn disk_fdsets(&self) -> impl Iterator<Item = (u64, DiskFdset)> + '_ {
        self.fdsets.iter().flat_map(|set| {
            set.fds
                .iter()
                .filter_map(|fd| DiskFdset::parse(fd.opaque.as_deref()?))
                .map(move |parsed| (set.fdset_id, parsed))
        })
    }

    /// The named nodes reading `/dev/fdset/<fdset_id>`.
    pub fn nodes_reading_fdset(&self, fdset_id: u64) -> impl Iterator<Item = &str> + '_ {
        self.block_nodes
            .iter()
            .filter(move |(_, node)| node.fdset() == Some(fdset_id))
            .map(|(name, _)| name.as_str())
    }

    /// The backend that has node `node` inserted, if a device or drive uses it.
    pub fn backend_with_node(&self, node: &str) -> Option<&BlockBackend> {
        self.block_backends.iter().find(|backend| backend.node.as_deref() == Some(node))
    }

    /// Every id of ours of `kind` and `name`, in any slot, that some object in QEMU
    /// carries: a device, a netdev, a block node, a fdset opaque or an intent marker.
    pub fn ids_named(&self, kind: DeviceKind, name: &str) -> BTreeSet<DeviceId> {
        let parsed = |text: &str| text.parse::<DeviceId>().ok();
        self.peripherals
            .keys()
            .filter_map(|id| parsed(id))
            .chain(self.network.netdevs.keys().filter_map(|id| parsed(id)))
            .chain(self.block_nodes.keys().filter_map(|node| parsed(node)))
            .chain(self.disk_fdsets().map(|(_, set)| set.device))
            .chain(self.markers().map(|marker| marker.device))
            .filter(|id| id.kind() == kind && id.name() == name)
            .collect()
    }

    /// The devices whose properties the operation needs (`qom-get`): ours of `kind` and
    /// `name` in any slot, or every device of ours for `None`.
    pub(crate) fn property_targets(&self, focus: &Focus) -> Vec<(String, DeviceKind)> {
        self.peripherals
            .keys()
            .filter_map(|id| {
                let kind = match focus {
                    Focus::Everything => id.parse::<DeviceId>().ok()?.kind(),
                    Focus::Named(kind, name) => {
                        let parsed = id.parse::<DeviceId>().ok()?;
                        (parsed.kind() == *kind && parsed.name() == name).then_some(*kind)?
                    }
                    Focus::Device(wanted, kind) => (id == wanted).then_some(*kind)?,
                };
                Some((id.clone(), kind))
            })
            .collect()
    }
}

/// Which devices an inventory reads properties of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Focus {
    /// Every device of ours.
    Everything,
    /// Ours of this kind and name, in any slot.
    Named(DeviceKind, String),
    /// This device id, read as this kind (any id, ours or not).
    Device(String, DeviceKind),
}

/// The `qom-get` properties read for a device of `kind`.
pub(crate) fn properties_of(kind: DeviceKind) -> &'static [&'static str] {
    match kind {
        DeviceKind::Nic => &[
            "netdev",
            "mac",
            "mq",
            NIC_SETTINGS[0],
            NIC_SETTINGS[1],
            NIC_SETTINGS[2],
            NIC_SETTINGS[3],
            NIC_SETTINGS[4],
        ],
        DeviceKind::Disk => &["drive", DISK_SETTINGS[0], DISK_SETTINGS[1], DISK_SETTINGS[2]],
        DeviceKind::ScsiController => &[],
    }
}

impl DeviceProperties {
    /// Records `property`'s value from a `qom-get` reply.
    pub(crate) fn set(&mut self, property: &str, value: &Value) {
        let text = || value.as_str().map(str::to_owned);
        match property {
            "netdev" => self.netdev = text(),
            "mac" => self.mac = text(),
            "mq" => self.mq = value.as_bool(),
            "drive" => self.drive = text(),
            setting if NIC_SETTINGS.contains(&setting) || DISK_SETTINGS.contains(&setting) => {
                self.settings.insert(setting.to_owned(), value.clone());
            }
            _ => {}
        }
    }
}

/// One QMP query a [`Snapshot`] is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// `query-status`: the run state.
    Status,
    /// `query-pci`: the buses and their devices.
    Pci,
    /// `qom-get /machine type`: the machine type, e.g. `pc-q35-7.2-machine`.
    MachineType,
    /// `qom-list /machine/peripheral`: the user-created devices.
    Peripherals,
    /// `qom-list /objects`: the user-created objects.
    Objects,
    /// `query-named-block-nodes {"flat": true}`: every named block node.
    BlockNodes,
    /// `query-block`: which device uses which node or drive.
    Block,
    /// `query-fdsets`.
    Fdsets,
}

impl Query {
    /// The command.
    pub(crate) fn command(self) -> &'static str {
        match self {
            Self::Status => "query-status",
            Self::Pci => "query-pci",
            Self::Peripherals | Self::Objects => "qom-list",
            Self::MachineType => "qom-get",
            Self::BlockNodes => "query-named-block-nodes",
            Self::Block => "query-block",
            Self::Fdsets => "query-fdsets",
        }
    }

    /// Its arguments (`null` for none).
    pub(crate) fn arguments(self) -> Value {
        match self {
            Self::Status | Self::Pci | Self::Block | Self::Fdsets => Value::Null,
            Self::Peripherals => json!({"path": PERIPHERAL_PATH}),
            Self::Objects => json!({"path": OBJECTS_PATH}),
            Self::MachineType => json!({"path": "/machine", "property": "type"}),
            Self::BlockNodes => json!({"flat": true}),
        }
    }
}

/// QEMU's replies a [`Snapshot`] is made of, as JSON (each the command's `return` value),
/// for [`Snapshot::from_json_replies`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JsonReplies {
    /// `query-status`.
    pub status: Value,
    /// `query-pci`.
    pub pci: Value,
    /// `qom-get /machine type`: the machine type, e.g. `pc-q35-7.2-machine`.
    pub machine_type: Option<String>,
    /// Where QOM puts each peripheral: a list of [`Peripheral`]s (`qom-get` of their
    /// `parent_bus`, `addr` and, for root ports, `hotplug`).
    pub placements: Value,
    /// `qom-list /machine/peripheral`.
    pub peripherals: Value,
    /// `qom-list /objects`.
    pub objects: Value,
    /// `query-named-block-nodes {"flat": true}`.
    pub block_nodes: Value,
    /// `query-block`.
    pub block: Value,
    /// `query-fdsets`.
    pub fdsets: Value,
    /// HMP `info network`'s text.
    pub network: String,
}

/// `value` decoded as `query`'s reply, failing as the client's typed `execute` does.
fn decode<T: DeserializeOwned>(query: Query, value: Value) -> Result<T, Error> {
    decode_as(query.command(), value)
}

fn decode_as<T: DeserializeOwned>(command: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| {
        Error::Client(qmp_client::Error::Decode {
            command: command.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// The replies a [`Snapshot`] is made of, typed as far as the client decodes them.
#[derive(Debug)]
pub(crate) struct Replies {
    pub(crate) status: Status,
    /// Parsed into a [`PciTree`].
    pub(crate) pci: Value,
    pub(crate) machine_type: Option<String>,
    /// The peripherals with their QOM `parent_bus`, `addr` and (root ports) `hotplug`.
    pub(crate) placements: Vec<Peripheral>,
    pub(crate) peripherals: Vec<QomProperty>,
    pub(crate) objects: Vec<QomProperty>,
    pub(crate) block_nodes: Vec<RawBlockNode>,
    pub(crate) block: Vec<RawBlockBackend>,
    pub(crate) fdsets: Vec<FdsetInfo>,
    /// HMP `info network`'s text.
    pub(crate) network: String,
}

/// `query-status`'s reply (QEMU's `StatusInfo`); only the state is read.
#[derive(Debug, Deserialize)]
pub(crate) struct Status {
    status: String,
}

/// An entry of a `qom-list` reply (QEMU's `ObjectPropertyInfo`): a child is a property of
/// type `child<TYPE>`.
#[derive(Debug, Deserialize)]
pub(crate) struct QomProperty {
    pub(crate) name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The devices of a `qom-list /machine/peripheral` reply, not placed yet.
pub(crate) fn unplaced(list: &[QomProperty]) -> Vec<Peripheral> {
    list.iter()
        .filter_map(|p| {
            let qom_type = p.kind.strip_prefix("child<")?.strip_suffix('>')?;
            Some(Peripheral::new(p.name.clone(), qom_type))
        })
        .collect()
}

/// An entry of a `query-named-block-nodes` reply (QEMU's `BlockDeviceInfo`).
#[derive(Debug, Deserialize)]
pub(crate) struct RawBlockNode {
    #[serde(rename = "node-name")]
    node_name: String,
    #[serde(default)]
    drv: String,
    #[serde(default)]
    ro: bool,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    cache: Option<RawCache>,
    #[serde(default)]
    detect_zeroes: Option<String>,
}

/// A node's cache mode (QEMU's `BlockdevCacheInfo`).
#[derive(Debug, Deserialize)]
pub(crate) struct RawCache {
    #[serde(default)]
    direct: bool,
    #[serde(default, rename = "no-flush")]
    no_flush: bool,
}

/// An entry of a `query-block` reply (QEMU's `BlockInfo`).
#[derive(Debug, Deserialize)]
pub(crate) struct RawBlockBackend {
    #[serde(default)]
    device: String,
    #[serde(default)]
    qdev: Option<String>,
    #[serde(default)]
    inserted: Option<RawInserted>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawInserted {
    #[serde(rename = "node-name")]
    node_name: String,
}

#[cfg(test)]
mod tests {
    use qmp_codec::FdsetFdInfo;

    use super::*;

    /// Replies as QEMU 7.2.22 gives them (trimmed): a NIC, a disk on an fdset of ours, a
    /// `-drive` disk, an intent marker and a stray fdset.
    fn replies() -> Replies {
        let peripherals = json!([
            {"name": "type", "type": "string"},
            {"name": "nic-a-pci-2", "type": "child<virtio-net-pci>"},
            {"name": "disk-b-pci-3", "type": "child<virtio-blk-pci>"},
            {"name": "legacy-dev", "type": "child<virtio-blk-pci>"}]);
        let objects = json!([
            {"name": "type", "type": "string"},
            {"name": "qmp-rs-intent.nic-c-pci-4.t1.v0", "type": "child<secret>"},
            {"name": "pc.ram", "type": "child<memory-backend-ram>"}]);
        let nodes = json!([
            {"node-name": "disk-b-pci-3", "drv": "raw", "ro": false, "file": "/dev/fdset/0"},
            {"node-name": "disk-b-pci-3-file", "drv": "file", "ro": false, "file": "/dev/fdset/0"},
            {"node-name": "#block124", "drv": "raw", "ro": false, "file": "/srv/leg.img"}]);
        let block = json!([
            {"device": "drv0", "qdev": "/machine/peripheral/legacy-dev/virtio-backend",
             "inserted": {"node-name": "#block124", "file": "/srv/leg.img"}},
            {"device": "", "qdev": "/machine/peripheral/disk-b-pci-3/virtio-backend",
             "inserted": {"node-name": "disk-b-pci-3", "file": "/dev/fdset/0"}}]);
        Replies {
            status: serde_json::from_value(json!({"status": "paused", "running": false})).unwrap(),
            pci: json!([{"bus": 0, "devices": [
                {"bus": 0, "slot": 0, "function": 0, "qdev_id": ""},
                {"bus": 0, "slot": 2, "function": 0, "qdev_id": "nic-a-pci-2"},
                {"bus": 0, "slot": 3, "function": 0, "qdev_id": "disk-b-pci-3"}]}]),
            peripherals: serde_json::from_value(peripherals).unwrap(),
            objects: serde_json::from_value(objects).unwrap(),
            block_nodes: serde_json::from_value(nodes).unwrap(),
            block: serde_json::from_value(block).unwrap(),
            fdsets: vec![
                FdsetInfo {
                    fdset_id: 0,
                    fds: vec![FdsetFdInfo {
                        fd: 12,
                        opaque: Some("qmp-rs:disk-b-pci-3:file=8.1:77".into()),
                    }],
                },
                FdsetInfo {
                    fdset_id: 1,
                    fds: vec![FdsetFdInfo { fd: 13, opaque: Some("someone-else".into()) }],
                },
            ],
            network: " \\ nic-a-pci-2: index=0,type=tap,fd=11\r\n".into(),
            machine_type: Some("pc-i440fx-7.2-machine".into()),
            placements: Vec::new(),
        }
    }

    #[test]
    fn replies_make_a_snapshot() {
        let snapshot = Snapshot::from_replies(replies()).unwrap();
        assert_eq!(snapshot.run_state, RunState::Paused);
        assert_eq!(snapshot.peripherals["nic-a-pci-2"], "virtio-net-pci");
        assert_eq!(snapshot.peripherals.len(), 3, "child<...> properties only");
        assert_eq!(snapshot.objects.len(), 2);
        let markers: Vec<String> = snapshot.markers().map(|m| m.device.to_string()).collect();
        assert_eq!(markers, ["nic-c-pci-4"]);
        assert_eq!(snapshot.block_nodes["disk-b-pci-3-file"].driver, "file");
        assert_eq!(snapshot.block_nodes["disk-b-pci-3"].fdset(), Some(0));
        assert_eq!(snapshot.nodes_reading_fdset(0).collect::<Vec<_>>().len(), 2);
        let ours: Vec<u64> = snapshot.disk_fdsets().map(|(id, _)| id).collect();
        assert_eq!(ours, [0], "the stray fdset is not ours");
        let backend = snapshot.backend_with_node("disk-b-pci-3").unwrap();
        assert_eq!(backend.device_id(), Some("disk-b-pci-3"));
        let legacy = snapshot.backend_with_node("#block124").unwrap();
        assert_eq!((legacy.drive.as_str(), legacy.device_id()), ("drv0", Some("legacy-dev")));
        // QEMU 7.2 gives a scsi-hd's backend its bare id, with no QOM path.
        let lun = BlockBackend::new("", Some("disk-l-pci-3-0.0".into()), Some("n".into()));
        assert_eq!(lun.device_id(), Some("disk-l-pci-3-0.0"));
        assert_eq!(BlockBackend::new("", Some(String::new()), None).device_id(), None);
        let named: Vec<String> =
            snapshot.ids_named(DeviceKind::Nic, "c").iter().map(ToString::to_string).collect();
        assert_eq!(named, ["nic-c-pci-4"], "a marker names an id too");
        assert!(snapshot.ids_named(DeviceKind::Disk, "a").is_empty(), "kind matters");
    }

    #[test]
    fn run_states_and_property_targets() {
        for (text, state) in [
            ("running", RunState::Running),
            ("paused", RunState::Paused),
            ("prelaunch", RunState::Prelaunch),
            ("inmigrate", RunState::Other("inmigrate".into())),
        ] {
            assert_eq!(RunState::from_status(text), state);
            assert_eq!(state.as_str(), text);
        }
        let snapshot = Snapshot::from_replies(replies()).unwrap();
        assert_eq!(
            snapshot.property_targets(&Focus::Everything),
            [("disk-b-pci-3".into(), DeviceKind::Disk), ("nic-a-pci-2".into(), DeviceKind::Nic)],
            "our devices only"
        );
        let focus = Focus::Named(DeviceKind::Nic, "a".into());
        assert_eq!(snapshot.property_targets(&focus).len(), 1);
        let focus = Focus::Device("legacy-dev".into(), DeviceKind::Disk);
        assert_eq!(snapshot.property_targets(&focus), [("legacy-dev".into(), DeviceKind::Disk)]);
    }

    /// The same replies as JSON make the same snapshot; a reply of the wrong shape is the
    /// client's decode error for its command.
    #[test]
    fn json_replies_make_the_same_snapshot() {
        let typed = replies();
        let qom_list = |list: &[QomProperty]| {
            json!(list.iter().map(|p| json!({"name": p.name, "type": p.kind})).collect::<Vec<_>>())
        };
        let mut json_replies = JsonReplies {
            status: json!({"status": "paused", "running": false}),
            pci: typed.pci.clone(),
            machine_type: typed.machine_type.clone(),
            placements: json!([]),
            peripherals: qom_list(&typed.peripherals),
            objects: qom_list(&typed.objects),
            block_nodes: json!([
                {"node-name": "disk-b-pci-3", "drv": "raw", "ro": false, "file": "/dev/fdset/0"},
                {"node-name": "disk-b-pci-3-file", "drv": "file", "ro": false,
                 "file": "/dev/fdset/0"},
                {"node-name": "#block124", "drv": "raw", "ro": false, "file": "/srv/leg.img"}]),
            block: json!([
                {"device": "drv0", "qdev": "/machine/peripheral/legacy-dev/virtio-backend",
                 "inserted": {"node-name": "#block124", "file": "/srv/leg.img"}},
                {"device": "", "qdev": "/machine/peripheral/disk-b-pci-3/virtio-backend",
                 "inserted": {"node-name": "disk-b-pci-3", "file": "/dev/fdset/0"}}]),
            fdsets: json!([
                {"fdset-id": 0, "fds": [{"fd": 12, "opaque": "qmp-rs:disk-b-pci-3:file=8.1:77"}]},
                {"fdset-id": 1, "fds": [{"fd": 13, "opaque": "someone-else"}]}]),
            network: typed.network.clone(),
        };
        let expected = Snapshot::from_replies(typed).unwrap();
        assert_eq!(Snapshot::from_json_replies(json_replies.clone()).unwrap(), expected);

        json_replies.block_nodes = json!([{"drv": "raw"}]);
        let error = Snapshot::from_json_replies(json_replies).unwrap_err();
        assert!(
            matches!(&error, Error::Client(qmp_client::Error::Decode { command, .. })
                if command == "query-named-block-nodes"),
            "{error:?}"
        );
    }

    #[test]
    fn a_bad_pci_reply_is_refused() {
        let mut bad = replies();
        bad.pci = json!({"not": "a list"});
        assert!(matches!(Snapshot::from_replies(bad), Err(Error::PciData(_))));
    }

    #[test]
    fn queries_are_what_the_replies_answer() {
        assert_eq!(Query::Peripherals.command(), "qom-list");
        assert_eq!(Query::Objects.arguments(), json!({"path": "/objects"}));
        assert_eq!(Query::BlockNodes.arguments(), json!({"flat": true}));
        assert_eq!((Query::Pci.command(), Query::Pci.arguments()), ("query-pci", Value::Null));
        assert_eq!(Query::Block.command(), "query-block");
    }
}
