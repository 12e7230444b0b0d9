//! Whether a device QEMU already has under the spec's name is the one the spec would
//! create: compared field by field from QEMU's own state. Pure.
//!
//! Only what QEMU shows can prove anything: the driver (`qom-list`), the NIC's netdev, MAC
//! and multiqueue flag and the disk's drive (`qom-get`), the netdev's queues (`info
//! network`), the node's driver, read-only flag and file (`query-named-block-nodes`), and
//! the fingerprint of the image in the disk's fdset (`query-fdsets`), with the `aio` and
//! `discard` recorded beside it (QEMU shows neither). QEMU 7.2 shows no trace of vhost on
//! a tap netdev, so vhost is not compared.

use std::fmt;

use hostdev::image::ImageIdentity;
use serde_json::{Value, json};

use crate::Error;
use crate::disk_settings::{Aio, DetectZeroes, Discard, DiskSettings};
use crate::ids::{DeviceId, DeviceKind};
use crate::ownership::{DiskFdset, Unseen, disk_opaque};
use crate::scsi;
use crate::snapshot::{DISK_SETTINGS, DeviceProperties, NIC_SETTINGS, Snapshot};
use crate::spec::{DiskBus, DiskSource, DiskSpec, NbdExport, NicSpec};

/// One way an existing device differs from what was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Difference {
    /// What differs: `model`, `mac`, `queues`, `image`, ...
    pub field: &'static str,
    /// What the spec asks for.
    pub wanted: String,
    /// What QEMU has.
    pub found: String,
}

impl Difference {
    pub(crate) fn new(
        field: &'static str,
        wanted: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Self {
        Self { field, wanted: wanted.to_string(), found: found.to_string() }
    }
}

impl fmt::Display for Difference {
    /// `mac: asked 52:54:00:00:00:02, QEMU has 52:54:00:00:00:01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: asked {}, QEMU has {}", self.field, self.wanted, self.found)
    }
}

/// The differences, as `Error::Conflict` lists them.
pub(crate) fn list(differences: &[Difference]) -> String {
    differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The devices QEMU has of `kind` named `name`, in any slot.
fn devices_named(kind: DeviceKind, name: &str, snapshot: &Snapshot) -> Vec<DeviceId> {
    snapshot
        .peripherals
        .keys()
        .filter_map(|id| id.parse::<DeviceId>().ok())
        .filter(|id| id.kind() == kind && id.name() == name)
        .collect()
}

/// The one existing device of the spec's kind and name, or none; several are a conflict.
fn the_device(
    kind: DeviceKind,
    name: &str,
    snapshot: &Snapshot,
) -> Result<Option<DeviceId>, Error> {
    let mut devices = devices_named(kind, name, snapshot);
    match devices.len() {
        0 => Ok(None),
        1 => Ok(devices.pop()),
        _ => {
            let ids: Vec<String> = devices.iter().map(ToString::to_string).collect();
            Err(Error::Conflict {
                id: ids[0].clone(),
                differences: vec![Difference::new("devices", "one", ids.join(", "))],
            })
        }
    }
}

/// What every device kind is compared by: model, the place asked for, and that QEMU has
/// the device where its id says (an id that names another place is not one we made).
fn common(
    id: &DeviceId,
    model: &str,
    (bus, slot): (Option<&str>, Option<u8>),
    snapshot: &Snapshot,
    differences: &mut Vec<Difference>,
) {
    let driver = snapshot.peripherals.get(&id.to_string()).map_or("none", String::as_str);
    if driver != model {
        differences.push(Difference::new("model", model, driver));
    }
    if let Some(bus) = bus.filter(|bus| *bus != id.bus().device_add_name()) {
        differences.push(Difference::new("bus", bus, id.bus()));
    }
    if let Some(slot) = slot.filter(|slot| *slot != id.slot()) {
        differences.push(Difference::new("slot", slot, id.slot()));
    }
    let found = snapshot.pci.place_of(&id.to_string());
    if found.as_ref() != Some(&id.place()) {
        let found = found.map_or_else(|| "no PCI place".to_owned(), |place| place.to_string());
        differences.push(Difference::new("place", id.place(), found));
    }
}

fn shown(value: Option<&str>) -> &str {
    match value {
        None => "nothing readable",
        Some("") => "none",
        Some(text) => text,
    }
}

/// The NIC QEMU has under `spec`'s name, if it is exactly what `spec` would create;
/// `Ok(None)` when there is none.
///
/// # Errors
/// [`Error::Conflict`] naming each difference.
pub(crate) fn existing_nic(spec: &NicSpec, snapshot: &Snapshot) -> Result<Option<DeviceId>, Error> {
    let Some(id) = the_device(DeviceKind::Nic, &spec.name, snapshot)? else { return Ok(None) };
    let mut differences = Vec::new();
    common(&id, &spec.model, (spec.bus.as_deref(), spec.slot), snapshot, &mut differences);
    let properties = snapshot.properties.get(&id.to_string()).cloned().unwrap_or_default();
    let netdev_id = id.netdev_id();
    if properties.netdev.as_deref() != Some(netdev_id.as_str()) {
        differences.push(Difference::new(
            "netdev",
            &netdev_id,
            shown(properties.netdev.as_deref()),
        ));
    }
    match snapshot.network.netdevs.get(&netdev_id) {
        Some(netdev) if netdev.kind == "tap" && netdev.nic.as_deref() == Some(&*netdev_id) => {
            if netdev.queues.len() != spec.queues {
                differences.push(Difference::new("queues", spec.queues, netdev.queues.len()));
            }
        }
        Some(netdev) => differences.push(Difference::new(
            "netdev",
            format!("tap {netdev_id} used by this NIC"),
            format!("{} used by {}", netdev.kind, shown(netdev.nic.as_deref())),
        )),
        None => differences.push(Difference::new("netdev", &netdev_id, "none listed")),
    }
    if let Some(mq) = properties.mq.filter(|mq| *mq != (spec.queues > 1)) {
        differences.push(Difference::new("mq", !mq, mq));
    }
    if let Some(mac) = &spec.mac {
        let found = properties.mac.as_deref();
        if !found.is_some_and(|found| found.eq_ignore_ascii_case(mac)) {
            differences.push(Difference::new("mac", mac, shown(found)));
        }
    }
    let numbers = [spec.host_mtu, spec.rx_queue_size, spec.tx_queue_size, spec.bootindex];
    let wanted = NIC_SETTINGS.iter().zip(
        numbers
            .into_iter()
            .map(|n| n.map(Value::from))
            .chain([spec.romfile.clone().map(Value::from)]),
    );
    for (&name, wanted) in wanted {
        let Some(wanted) = wanted else { continue };
        let found = properties.settings.get(name);
        if found != Some(&wanted) {
            let found = found.map_or_else(|| "nothing readable".to_owned(), ToString::to_string);
            differences.push(Difference::new(name, wanted, found));
        }
    }
    if differences.is_empty() {
        Ok(Some(id))
    } else {
        Err(Error::Conflict { id: id.to_string(), differences })
    }
}

/// The disk QEMU has under `spec`'s name, if it is exactly what `spec` would create with
/// `image` (the identity of the caller's image; `None` for NBD); `Ok(None)` when there is
/// none.
///
/// # Errors
/// [`Error::Conflict`] naming each difference, including an image QEMU's state cannot
/// prove (an fdset without a fingerprint).
pub(crate) fn existing_disk(
    spec: &DiskSpec,
    image: Option<&ImageIdentity>,
    snapshot: &Snapshot,
) -> Result<Option<DeviceId>, Error> {
    let Some(id) = the_device(DeviceKind::Disk, &spec.name, snapshot)? else { return Ok(None) };
    let mut differences = Vec::new();
    let driver = snapshot.peripherals.get(&id.to_string()).map_or("none", String::as_str);
    match (&spec.bus, id.scsi_unit()) {
        (DiskBus::Scsi { controller }, _) => {
            if driver != spec.model {
                differences.push(Difference::new("model", &spec.model, driver));
            }
            let place = scsi::place_differences(&id, controller.as_deref(), snapshot);
            differences.extend(place.into_iter().map(|(field, wanted, found)| Difference {
                field,
                wanted,
                found,
            }));
        }
        (_, Some(unit)) => {
            if driver != spec.model {
                differences.push(Difference::new("model", &spec.model, driver));
            }
            differences.push(Difference::new("bus", "virtio", format!("scsi, unit {unit}")));
        }
        _ => {
            let place = (spec.pci_bus.as_deref(), spec.slot);
            common(&id, &spec.model, place, snapshot, &mut differences);
        }
    }
    let properties = snapshot.properties.get(&id.to_string()).cloned().unwrap_or_default();
    let node_name = id.node_name();
    if properties.drive.as_deref() != Some(node_name.as_str()) {
        differences.push(Difference::new("drive", &node_name, shown(properties.drive.as_deref())));
    }
    let Some(node) = snapshot.block_nodes.get(&node_name) else {
        differences.push(Difference::new("node", &node_name, "none"));
        return Err(Error::Conflict { id: id.to_string(), differences });
    };
    if node.driver != spec.format.driver() {
        differences.push(Difference::new("format", spec.format.driver(), &node.driver));
    }
    if node.read_only != spec.read_only {
        differences.push(Difference::new("read-only", spec.read_only, node.read_only));
    }
    let settings = &spec.settings;
    if node.cache_direct != settings.cache_direct {
        differences.push(Difference::new("cache.direct", settings.cache_direct, node.cache_direct));
    }
    if node.cache_no_flush != settings.cache_no_flush {
        let (wanted, found) = (settings.cache_no_flush, node.cache_no_flush);
        differences.push(Difference::new("cache.no-flush", wanted, found));
    }
    let detect_zeroes = settings.detect_zeroes.map_or("off", DetectZeroes::as_str);
    if node.detect_zeroes != detect_zeroes {
        differences.push(Difference::new("detect-zeroes", detect_zeroes, &node.detect_zeroes));
    }
    differences.extend(device_setting_differences(settings, &properties));
    let protocol = snapshot.block_nodes.get(&id.file_node_name()).map_or("none", |n| &n.driver);
    match (&spec.source, image) {
        (DiskSource::Nbd(export), _) => {
            // QEMU writes the filename without %-encoding: compare text, do not parse it.
            if protocol != "nbd" || export.qemu_filename().as_ref() != Some(&node.file) {
                differences.push(Difference::new("source", nbd_text(export), &node.file));
            }
            // QEMU shows no node's discard, and an NBD disk has no fdset to record it in:
            // a retry asking for one cannot be proven, so it is not adopted.
            if let Some(discard) = Unseen::of(settings).discard {
                let found =
                    "unknown (QEMU does not show it; an NBD disk has no fdset to record it)";
                differences.push(Difference::new("discard", discard.as_str(), found));
            }
        }
        (_, Some(image)) => {
            let wanted_protocol = protocol_driver(image);
            if protocol != wanted_protocol {
                differences.push(Difference::new("protocol driver", wanted_protocol, protocol));
            }
            match image_difference(&id, image, node.fdset(), snapshot) {
                Err(found) => {
                    differences.push(Difference::new("image", disk_opaque(&id, image), found));
                }
                Ok(recorded) => differences.extend(unseen_differences(settings, recorded)),
            }
        }
        (_, None) => differences.push(Difference::new("image", "a known image", "unknown")),
    }
    if differences.is_empty() {
        Ok(Some(id))
    } else {
        Err(Error::Conflict { id: id.to_string(), differences })
    }
}

/// How a disk device's [`DISK_SETTINGS`] as QEMU shows them differ from `settings`, each
/// against QEMU's default when `settings` leaves it (no serial, bootindex -1, write-cache
/// `auto`). A property the model does not show counts as its default.
fn device_setting_differences(
    settings: &DiskSettings,
    properties: &DeviceProperties,
) -> Vec<Difference> {
    let write_cache = settings.write_cache.map_or("auto", |on| if on { "on" } else { "off" });
    // (wanted, QEMU's default), in DISK_SETTINGS' order.
    let wanted = [
        (json!(settings.serial.clone().unwrap_or_default()), json!("")),
        (settings.bootindex.map_or(json!(-1), |index| json!(index)), json!(-1)),
        (json!(write_cache), json!("auto")),
    ];
    let shown = |value: &Value| match value.as_str() {
        Some("") => "none".to_owned(),
        Some(text) => text.to_owned(),
        None => value.to_string(),
    };
    DISK_SETTINGS
        .iter()
        .zip(wanted)
        .filter_map(|(&name, (wanted, default))| {
            let found = properties.settings.get(name);
            (found.unwrap_or(&default) != &wanted).then(|| {
                let found = found.map_or_else(|| "nothing readable".to_owned(), shown);
                Difference::new(name, shown(&wanted), found)
            })
        })
        .collect()
}

/// The `file` node driver QEMU needs for `image`: `host_device` for a block device.
pub(crate) fn protocol_driver(image: &ImageIdentity) -> &'static str {
    match image {
        ImageIdentity::BlockDevice(_) => "host_device",
        _ => "file",
    }
}

/// What is wrong with the proof that node `fdset` holds `image`, or (`Ok`) the settings
/// recorded with it when the fdset holds exactly one descriptor, fingerprinted as `image`
/// for `id`.
fn image_difference(
    id: &DeviceId,
    image: &ImageIdentity,
    fdset: Option<u64>,
    snapshot: &Snapshot,
) -> Result<Unseen, String> {
    let Some(fdset) = fdset else { return Err("a node that does not read an fdset".into()) };
    let Some(set) = snapshot.fdsets.iter().find(|set| set.fdset_id == fdset) else {
        return Err(format!("fdset {fdset}, which QEMU no longer lists (cannot prove its image)"));
    };
    let [fd] = set.fds.as_slice() else {
        return Err(format!("fdset {fdset} with {} descriptors (cannot prove)", set.fds.len()));
    };
    let opaque = fd.opaque.as_deref().unwrap_or_default();
    match DiskFdset::parse(opaque) {
        Some(DiskFdset { device, image: Some(found), unseen })
            if device == *id && found == *image =>
        {
            Ok(unseen)
        }
        Some(DiskFdset { image: None, .. }) => {
            Err(format!("fdset {fdset} without a fingerprint (cannot prove its image)"))
        }
        _ => Err(format!("fdset {fdset} holding '{opaque}'")),
    }
}

/// `aio` and `discard` as `settings` asks and as the fdset recorded them (QEMU shows
/// neither), defaults folded.
fn unseen_differences(settings: &DiskSettings, recorded: Unseen) -> Vec<Difference> {
    let wanted = Unseen::of(settings);
    let mut differences = Vec::new();
    if wanted.aio != recorded.aio {
        let text = |unseen: Unseen| unseen.aio.unwrap_or(Aio::Threads).as_str();
        differences.push(Difference::new("aio", text(wanted), text(recorded)));
    }
    if wanted.discard != recorded.discard {
        let text = |unseen: Unseen| unseen.discard.unwrap_or(Discard::Ignore).as_str();
        differences.push(Difference::new("discard", text(wanted), text(recorded)));
    }
    differences
}

fn nbd_text(export: &NbdExport) -> String {
    export.qemu_filename().unwrap_or_else(|| export.to_string())
}

#[cfg(test)]
mod tests {
    use hostdev::DeviceNumber;
    use qmp_codec::{FdsetFdInfo, FdsetInfo};
    use serde_json::{Value, json};

    use super::*;
    use crate::netinfo::NetworkInfo;
    use crate::snapshot::{BlockNode, DeviceProperties};
    use crate::spec::DiskFormat;
    use crate::topology::PciTree;

    /// A pc machine whose bus 0 has `nic-n1-pci-3` and `disk-d1-pci-2` where their ids say
    /// (the tests add the devices' other parts).
    fn empty() -> Snapshot {
        Snapshot::new(pc_with_slots(&[(3, "nic-n1-pci-3"), (2, "disk-d1-pci-2")]))
    }

    fn pc_with_slots(devices: &[(u8, &str)]) -> PciTree {
        let devices: Vec<Value> = devices
            .iter()
            .map(|(slot, id)| json!({"bus": 0, "slot": slot, "function": 0, "qdev_id": id}))
            .collect();
        PciTree::from_query_pci("pc", &json!([{"bus": 0, "devices": devices}])).unwrap()
    }

    /// QEMU with a two-queue NIC `nic-n1-pci-3`, MAC 52:54:00:00:00:01.
    fn with_nic() -> Snapshot {
        let mut snapshot = empty();
        snapshot.peripherals.insert("nic-n1-pci-3".into(), "virtio-net-pci".into());
        let properties = DeviceProperties {
            netdev: Some("nic-n1-pci-3".into()),
            mac: Some("52:54:00:00:00:01".into()),
            mq: Some(true),
            ..DeviceProperties::default()
        };
        snapshot.properties.insert("nic-n1-pci-3".into(), properties);
        snapshot.network = NetworkInfo::parse(
            "nic-n1-pci-3: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01\n \
             \\ nic-n1-pci-3: index=0,type=tap,fd=12\nnic-n1-pci-3: index=1,type=nic,\n \
             \\ nic-n1-pci-3: index=1,type=tap,fd=13\n",
        );
        snapshot
    }

    fn conflict(result: Result<Option<DeviceId>, Error>) -> Vec<&'static str> {
        match result {
            Err(Error::Conflict { differences, .. }) => {
                differences.iter().map(|d| d.field).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_nic_is_adopted_and_each_difference_is_named() {
        let snapshot = with_nic();
        let spec =
            NicSpec { queues: 2, mac: Some("52:54:00:00:00:01".into()), ..NicSpec::new("n1") };
        assert_eq!(existing_nic(&spec, &snapshot).unwrap().unwrap().to_string(), "nic-n1-pci-3");
        let no_mac = NicSpec { mac: None, ..spec.clone() };
        assert!(existing_nic(&no_mac, &snapshot).unwrap().is_some(), "no MAC asked: any");
        let upper = NicSpec { mac: Some("52:54:00:00:00:01".to_uppercase()), ..spec.clone() };
        assert!(existing_nic(&upper, &snapshot).unwrap().is_some());

        let other_mac = NicSpec { mac: Some("52:54:00:00:00:02".into()), ..spec.clone() };
        assert_eq!(conflict(existing_nic(&other_mac, &snapshot)), ["mac"]);
        let one_queue = NicSpec { queues: 1, ..spec.clone() };
        assert_eq!(conflict(existing_nic(&one_queue, &snapshot)), ["queues", "mq"]);
        let e1000 = NicSpec { model: "e1000".into(), slot: Some(4), ..spec.clone() };
        assert_eq!(conflict(existing_nic(&e1000, &snapshot)), ["model", "slot"]);
        assert_eq!(existing_nic(&NicSpec::new("other"), &snapshot).unwrap(), None);

        let mut no_backend = with_nic();
        no_backend.properties.get_mut("nic-n1-pci-3").unwrap().netdev = Some(String::new());
        no_backend.network = NetworkInfo::default();
        assert_eq!(conflict(existing_nic(&spec, &no_backend)), ["netdev", "netdev"]);
    }

    #[test]
    fn a_device_elsewhere_than_its_id_says_is_not_adopted() {
        let spec =
            NicSpec { queues: 2, mac: Some("52:54:00:00:00:01".into()), ..NicSpec::new("n1") };
        assert!(existing_nic(&spec, &with_nic()).unwrap().is_some());
        let mut moved = with_nic();
        moved.pci = pc_with_slots(&[(5, "nic-n1-pci-3")]);
        assert_eq!(conflict(existing_nic(&spec, &moved)), ["place"]);
        moved.pci = pc_with_slots(&[]);
        let Err(Error::Conflict { differences, .. }) = existing_nic(&spec, &moved) else {
            panic!("adopted a NIC QEMU shows on no bus")
        };
        assert_eq!(differences[0].to_string(), "place: asked pci.0 slot 3, QEMU has no PCI place");
        let on_bus = NicSpec { bus: Some("br1".into()), ..spec };
        assert_eq!(conflict(existing_nic(&on_bus, &with_nic())), ["bus"]);
    }

    #[test]
    fn nic_settings_asked_for_are_compared_with_what_qemu_shows() {
        let spec =
            NicSpec { queues: 2, mac: Some("52:54:00:00:00:01".into()), ..NicSpec::new("n1") };
        let mut snapshot = with_nic();
        let properties = snapshot.properties.get_mut("nic-n1-pci-3").unwrap();
        properties.settings.insert("host_mtu".into(), json!(9000));
        properties.settings.insert("romfile".into(), json!(""));
        let same = NicSpec { host_mtu: Some(9000), romfile: Some(String::new()), ..spec.clone() };
        assert!(existing_nic(&same, &snapshot).unwrap().is_some());
        let other =
            NicSpec { host_mtu: Some(1500), romfile: Some("pxe.rom".into()), ..spec.clone() };
        assert_eq!(conflict(existing_nic(&other, &snapshot)), ["host_mtu", "romfile"]);
        let unread = NicSpec { bootindex: Some(1), ..spec };
        let Err(Error::Conflict { differences, .. }) = existing_nic(&unread, &snapshot) else {
            panic!("adopted a bootindex QEMU did not show")
        };
        assert_eq!(differences[0].to_string(), "bootindex: asked 1, QEMU has nothing readable");
    }

    fn with_disk(opaque: &str) -> Snapshot {
        let mut snapshot = empty();
        snapshot.peripherals.insert("disk-d1-pci-2".into(), "virtio-blk-pci".into());
        let properties =
            DeviceProperties { drive: Some("disk-d1-pci-2".into()), ..DeviceProperties::default() };
        snapshot.properties.insert("disk-d1-pci-2".into(), properties);
        snapshot
            .block_nodes
            .insert("disk-d1-pci-2".into(), BlockNode::new("raw", false, "/dev/fdset/4"));
        snapshot
            .block_nodes
            .insert("disk-d1-pci-2-file".into(), BlockNode::new("file", false, "/dev/fdset/4"));
        snapshot.fdsets.push(FdsetInfo {
            fdset_id: 4,
            fds: vec![FdsetFdInfo { fd: 30, opaque: Some(opaque.into()) }],
        });
        snapshot
    }

    #[test]
    fn a_disk_is_adopted_only_with_proof_of_its_image() {
        let image = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 77 };
        let spec = DiskSpec::new("d1", DiskSource::Path("/img".into()));
        let snapshot = with_disk("qmp-rs:disk-d1-pci-2:file=8.1:77");
        assert!(existing_disk(&spec, Some(&image), &snapshot).unwrap().is_some());

        let other = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 78 };
        assert_eq!(conflict(existing_disk(&spec, Some(&other), &snapshot)), ["image"]);
        let legacy = with_disk("disk-d1-pci-2");
        let Err(error) = existing_disk(&spec, Some(&image), &legacy) else { panic!() };
        assert!(error.to_string().contains("cannot prove"), "{error}");
        let block = ImageIdentity::BlockDevice(DeviceNumber::new(7, 0));
        assert_eq!(
            conflict(existing_disk(&spec, Some(&block), &snapshot)),
            ["protocol driver", "image"]
        );
        let qcow2 = DiskSpec { format: DiskFormat::Qcow2, read_only: true, ..spec.clone() };
        assert_eq!(
            conflict(existing_disk(&qcow2, Some(&image), &snapshot)),
            ["format", "read-only"]
        );
        let nbd = NbdExport::parse_uri("nbd+unix:///e?socket=/s").unwrap();
        let nbd_spec = DiskSpec::new("d1", DiskSource::Nbd(nbd));
        assert_eq!(conflict(existing_disk(&nbd_spec, None, &snapshot)), ["source"]);
    }

    #[test]
    fn every_disk_setting_qemu_shows_is_compared_and_an_equal_one_adopted() {
        use crate::disk_settings::{Aio, Discard};
        type Change = fn(&mut DiskSettings);
        let image = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 77 };
        let base = DiskSpec::new("d1", DiskSource::Path("/img".into()));
        // QEMU's state of a disk added with every setting; aio and discard, which QEMU
        // shows nowhere, recorded in the fdset's opaque.
        let mut snapshot = with_disk("qmp-rs:disk-d1-pci-2:file=8.1:77;aio=native;discard=unmap");
        let node = snapshot.block_nodes.get_mut("disk-d1-pci-2").unwrap();
        (node.cache_direct, node.cache_no_flush) = (true, true);
        node.detect_zeroes = "unmap".into();
        let shown = &mut snapshot.properties.get_mut("disk-d1-pci-2").unwrap().settings;
        shown.insert("serial".into(), json!("SER1"));
        shown.insert("bootindex".into(), json!(3));
        shown.insert("write-cache".into(), json!("off"));
        let all = DiskSettings {
            cache_direct: true,
            cache_no_flush: true,
            aio: Some(Aio::Native),
            discard: Some(Discard::Unmap),
            detect_zeroes: Some(DetectZeroes::Unmap),
            serial: Some("SER1".into()),
            bootindex: Some(3),
            write_cache: Some(false),
        };
        let spec = |settings: DiskSettings| DiskSpec { settings, ..base.clone() };
        assert!(existing_disk(&spec(all.clone()), Some(&image), &snapshot).unwrap().is_some());
        let table: [(&str, Change); 9] = [
            ("aio", |s| s.aio = None),
            ("aio", |s| s.aio = Some(Aio::IoUring)),
            ("discard", |s| s.discard = Some(Discard::Ignore)),
            ("cache.direct", |s| s.cache_direct = false),
            ("cache.no-flush", |s| s.cache_no_flush = false),
            ("detect-zeroes", |s| s.detect_zeroes = Some(DetectZeroes::On)),
            ("serial", |s| s.serial = Some("SER2".into())),
            ("bootindex", |s| s.bootindex = None),
            ("write-cache", |s| s.write_cache = Some(true)),
        ];
        for (field, change) in table {
            let mut settings = all.clone();
            change(&mut settings);
            assert_eq!(conflict(existing_disk(&spec(settings), Some(&image), &snapshot)), [field]);
        }
        // An fdset written without them (or by an older qmp-hotplug) records the defaults:
        // `threads` named or left out is the same, `native` is not.
        let defaults = with_disk("qmp-rs:disk-d1-pci-2:file=8.1:77");
        let threads = DiskSettings { aio: Some(Aio::Threads), ..DiskSettings::default() };
        assert!(existing_disk(&spec(threads), Some(&image), &defaults).unwrap().is_some());
        let native = DiskSettings { aio: Some(Aio::Native), ..DiskSettings::default() };
        assert_eq!(conflict(existing_disk(&spec(native), Some(&image), &defaults)), ["aio"]);
        // The device's defaults match a spec that leaves them, also where the model does
        // not show the property at all.
        let plain = with_disk("qmp-rs:disk-d1-pci-2:file=8.1:77");
        assert!(existing_disk(&base, Some(&image), &plain).unwrap().is_some());
        let Err(Error::Conflict { differences, .. }) = existing_disk(
            &spec(DiskSettings { serial: Some("S".into()), ..Default::default() }),
            Some(&image),
            &plain,
        ) else {
            panic!("adopted a serial QEMU does not show")
        };
        assert_eq!(differences[0].to_string(), "serial: asked S, QEMU has nothing readable");
    }

    #[test]
    fn an_nbd_disk_is_compared_by_server_and_export() {
        let mut snapshot = with_disk("unused");
        let uri = "nbd+unix:///exp0?socket=/run/nbd.sock";
        snapshot.block_nodes.insert("disk-d1-pci-2".into(), BlockNode::new("raw", false, uri));
        snapshot.block_nodes.insert("disk-d1-pci-2-file".into(), BlockNode::new("nbd", false, uri));
        let same = DiskSpec::new("d1", DiskSource::Nbd(NbdExport::parse_uri(uri).unwrap()));
        assert!(existing_disk(&same, None, &snapshot).unwrap().is_some());
        let other = NbdExport::parse_uri("nbd+unix:///exp1?socket=/run/nbd.sock").unwrap();
        let other = DiskSpec::new("d1", DiskSource::Nbd(other));
        assert_eq!(conflict(existing_disk(&other, None, &snapshot)), ["source"]);
        // Nothing records an NBD disk's discard: a retry asking for one is not adopted.
        let mut unmap = same.clone();
        unmap.settings.discard = Some(crate::disk_settings::Discard::Unmap);
        assert_eq!(conflict(existing_disk(&unmap, None, &snapshot)), ["discard"]);
    }
}
