//! Device ids: Ganeti's `<kind>-<name>-pci-<slot>` on pc's bus 0, `<kind>-<name>-<bus>-<slot>`
//! on any other bus; deterministic, parseable, within QEMU's rules.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::pci::PCI_SLOTS;
use crate::topology::{Place, PlaceBus};

/// Longest `name` part of an id. QEMU keeps block node names in a 32-byte buffer (31
/// characters), and the longest name derived from a bus 0 id is a disk's file node,
/// `disk-<name>-pci-31-file`.
pub const MAX_NAME_LEN: usize = 14;

/// Longest id: the longest name derived from an id is a disk's file node, `<id>-file`,
/// which must fit QEMU's 31 characters. Ganeti's ids on bus 0 always fit
/// (`disk-` + 14 + `-pci-31`).
pub const MAX_ID_LEN: usize = 26;

/// The bus part that marks pc's bus 0 in an id; a bus with this name gets no ids.
const PC_ROOT_MARK: &str = "pci";

/// What kind of device an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A network interface (netdev + NIC device).
    Nic,
    /// A disk (block node + block device): on PCI, or a LUN on a SCSI controller.
    Disk,
    /// A `virtio-scsi-pci` controller this library hot-added for SCSI disks.
    ScsiController,
}

impl DeviceKind {
    /// The id prefix: `nic`, `disk` or `scsi`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Nic => "nic",
            Self::Disk => "disk",
            Self::ScsiController => "scsi",
        }
    }

    const ALL: [Self; 3] = [Self::Nic, Self::Disk, Self::ScsiController];
}

/// Highest SCSI target (`scsi-id`) on a `virtio-scsi` bus.
pub const MAX_SCSI_ID: u8 = 255;

/// Highest LUN on a `virtio-scsi` bus (QEMU's `VIRTIO_SCSI_MAX_LUN`).
pub const MAX_SCSI_LUN: u16 = 16383;

/// Where a SCSI disk sits on its controller's bus: target (`scsi-id`) and `lun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScsiUnit {
    /// The target, 0 to [`MAX_SCSI_ID`].
    pub scsi_id: u8,
    /// The LUN, 0 to [`MAX_SCSI_LUN`].
    pub lun: u16,
}

impl fmt::Display for ScsiUnit {
    /// `<scsi-id>.<lun>`, the last part of a SCSI disk's id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.scsi_id, self.lun)
    }
}

impl ScsiUnit {
    /// Parses `<scsi-id>.<lun>` as `Display` writes it (no leading zeros, in range).
    fn parse(text: &str) -> Option<Self> {
        let (scsi_id, lun) = text.split_once('.')?;
        let unit = Self { scsi_id: scsi_id.parse().ok()?, lun: lun.parse().ok()? };
        (unit.lun <= MAX_SCSI_LUN && unit.to_string() == text).then_some(unit)
    }
}

/// The id of a hot-plugged device, where it sits, and every QEMU name derived from it.
///
/// On pc's bus 0 the scheme is Ganeti's, `<kind>-<name>-pci-<slot>`: the caller's name,
/// usually the first group of its UUID, and the PCI slot, so the same device always gets
/// the same id and an id found in QEMU tells which of ours it is and where it sits. On any
/// other bus it is `<kind>-<name>-<bus>-<slot>`, `<bus>` being the bus's name (the id of
/// its bridge or root port). Ids parse back to kind, name, bus and slot: the name has no
/// `-` and the slot is the last part, so `<bus>` is what lies between, `-` and all. A bus
/// named `pci` would read as bus 0 and gets no ids. The whole id stays within
/// [`MAX_ID_LEN`].
///
/// ```
/// use qmp_hotplug::{DeviceId, DeviceKind, Place, PlaceBus, ScsiUnit};
/// let id = DeviceId::from_uuid(DeviceKind::Nic, "6f2a1c3e-0d4b-4d5e-9a8f-001122334455", 5)?;
/// assert_eq!(id.to_string(), "nic-6f2a1c3e-pci-5");
/// assert_eq!("nic-6f2a1c3e-pci-5".parse::<DeviceId>()?, id);
/// assert_eq!(id.tap_fd_name(1), "nic-6f2a1c3e-pci-5-tap1");
/// let place = Place { bus: PlaceBus::Named("rp-2".into()), slot: 0 };
/// let id = DeviceId::at(DeviceKind::Disk, "6f2a1c3e", &place)?;
/// assert_eq!(id.to_string(), "disk-6f2a1c3e-rp-2-0");
/// assert_eq!("disk-6f2a1c3e-rp-2-0".parse::<DeviceId>()?.place(), place);
/// // A LUN at target 0, lun 1 on the SCSI controller in pc's slot 5:
/// let pc5 = Place { bus: PlaceBus::PcRoot, slot: 5 };
/// let lun = DeviceId::scsi("6f2a1c3e", &pc5, ScsiUnit { scsi_id: 0, lun: 1 })?;
/// assert_eq!(lun.to_string(), "disk-6f2a1c3e-pci-5-0.1");
/// assert_eq!("disk-6f2a1c3e-pci-5-0.1".parse::<DeviceId>()?, lun);
/// assert_eq!(lun.scsi_unit(), Some(ScsiUnit { scsi_id: 0, lun: 1 }));
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    kind: DeviceKind,
    name: String,
    bus: PlaceBus,
    slot: u8,
    scsi: Option<ScsiUnit>,
}

impl DeviceId {
    /// The id of device `name` of `kind` in `slot` of pc's bus 0.
    ///
    /// # Errors
    /// [`Error::InvalidName`] unless `name` passes [`DeviceId::check_name`], or
    /// [`Error::InvalidSpec`] when `slot` is not below 32.
    pub fn new(kind: DeviceKind, name: &str, slot: u8) -> Result<Self, Error> {
        Self::at(kind, name, &Place { bus: PlaceBus::PcRoot, slot })
    }

    /// The id of device `name` of `kind` at `place`, on any bus.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `name` breaks [`DeviceId::check_name`], the bus name is
    /// not a QEMU id or is `pci`, or the id would be longer than [`MAX_ID_LEN`];
    /// [`Error::InvalidSpec`] when the slot is not below 32.
    pub fn at(kind: DeviceKind, name: &str, place: &Place) -> Result<Self, Error> {
        Self::check_name(name)?;
        if place.slot >= PCI_SLOTS {
            return Err(Error::InvalidSpec(format!(
                "PCI slot {} is not below {PCI_SLOTS}",
                place.slot
            )));
        }
        if let PlaceBus::Named(bus) = &place.bus {
            check_bus_name(bus)?;
        }
        let id = Self {
            kind,
            name: name.to_owned(),
            bus: place.bus.clone(),
            slot: place.slot,
            scsi: None,
        };
        id.checked_length()
    }

    /// The id of SCSI disk `name` at `unit` on the controller at `controller`'s PCI place.
    ///
    /// # Errors
    /// As [`DeviceId::at`], and [`Error::InvalidSpec`] for a LUN over [`MAX_SCSI_LUN`].
    pub fn scsi(name: &str, controller: &Place, unit: ScsiUnit) -> Result<Self, Error> {
        if unit.lun > MAX_SCSI_LUN {
            return Err(Error::InvalidSpec(format!(
                "SCSI LUN {} is over {MAX_SCSI_LUN}",
                unit.lun
            )));
        }
        let mut id = Self::at(DeviceKind::Disk, name, controller)?;
        id.scsi = Some(unit);
        id.checked_length()
    }

    fn checked_length(self) -> Result<Self, Error> {
        let text = self.to_string();
        if text.len() > MAX_ID_LEN {
            return Err(Error::InvalidName {
                name: text,
                reason: format!(
                    "a device id may have {MAX_ID_LEN} characters, so that the node names \
                     made from it fit QEMU's 31; use a shorter name or bus id"
                ),
            });
        }
        Ok(self)
    }

    /// The id Ganeti would give on pc's bus 0: the UUID's first group, lower-cased, as the
    /// name.
    ///
    /// # Errors
    /// As [`DeviceId::new`].
    pub fn from_uuid(kind: DeviceKind, uuid: &str, slot: u8) -> Result<Self, Error> {
        let first_group = uuid.split('-').next().unwrap_or_default().to_ascii_lowercase();
        Self::new(kind, &first_group, slot)
    }

    /// Checks a device name on its own, before any slot is known: 1 to [`MAX_NAME_LEN`]
    /// ASCII letters, digits or `_` (a bus with a long id may still refuse it, see
    /// [`MAX_ID_LEN`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`] with the rule broken.
    pub fn check_name(name: &str) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidName { name: name.to_owned(), reason });
        if name.is_empty() {
            return invalid("it is empty".into());
        }
        if name.len() > MAX_NAME_LEN {
            return invalid(format!("it is longer than {MAX_NAME_LEN} characters"));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
            return invalid(format!("{bad:?} is not an ASCII letter, digit or '_'"));
        }
        Ok(())
    }

    /// The kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The caller's name part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PCI slot on [`DeviceId::bus`] (a SCSI disk's: its controller's).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The PCI bus (a SCSI disk's: its controller's).
    pub fn bus(&self) -> &PlaceBus {
        &self.bus
    }

    /// A SCSI disk's unit on its controller's bus; `None` for a PCI device.
    pub fn scsi_unit(&self) -> Option<ScsiUnit> {
        self.scsi
    }

    /// Where the device sits on PCI (a SCSI disk: where its controller sits).
    pub fn place(&self) -> Place {
        Place { bus: self.bus.clone(), slot: self.slot }
    }

    /// The `addr` property for `device_add`.
    pub fn pci_addr(&self) -> String {
        format!("0x{:x}", self.slot)
    }

    /// The netdev's id (netdevs have their own namespace, so it is the device id, as in Ganeti).
    pub fn netdev_id(&self) -> String {
        self.to_string()
    }

    /// The format node's name for `blockdev-add` (the node namespace is separate from
    /// qdev ids; block backends made by `-drive` are the only clash and use other names).
    pub fn node_name(&self) -> String {
        self.to_string()
    }

    /// The protocol (file, nbd) node under [`DeviceId::node_name`].
    pub fn file_node_name(&self) -> String {
        format!("{self}-file")
    }

    /// The `getfd` name of tap queue `queue`.
    pub fn tap_fd_name(&self, queue: usize) -> String {
        format!("{self}-tap{queue}")
    }

    /// The `getfd` name of vhost queue `queue`.
    pub fn vhost_fd_name(&self, queue: usize) -> String {
        format!("{self}-vhost{queue}")
    }

    /// The `opaque` text of the fdset holding a disk's image, so a retry can find it in
    /// `query-fdsets`.
    pub fn fdset_opaque(&self) -> String {
        self.to_string()
    }
}

/// A bus name in an id must be a QEMU id (`[A-Za-z][A-Za-z0-9_.-]*`), and not the mark of
/// pc's bus 0.
fn check_bus_name(bus: &str) -> Result<(), Error> {
    let invalid =
        |reason: &str| Err(Error::InvalidName { name: bus.to_owned(), reason: reason.into() });
    if bus == PC_ROOT_MARK {
        return invalid("a bus named 'pci' would give ids that read as pc bus 0's");
    }
    if !bus.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return invalid("a QEMU id starts with an ASCII letter");
    }
    if !bus.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return invalid("a QEMU id has only ASCII letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bus = match &self.bus {
            PlaceBus::PcRoot => PC_ROOT_MARK,
            PlaceBus::Named(name) => name,
        };
        write!(f, "{}-{}-{bus}-{}", self.kind.prefix(), self.name, self.slot)?;
        match &self.scsi {
            Some(unit) => write!(f, "-{unit}"),
            None => Ok(()),
        }
    }
}

impl FromStr for DeviceId {
    type Err = Error;

    /// Parses an id made by `Display`, and nothing else: `nic-a-pci-05` (a leading zero)
    /// or `nic0` are not ours.
    fn from_str(id: &str) -> Result<Self, Error> {
        let not_ours = || Error::InvalidName {
            name: id.to_owned(),
            reason: "not an id of the form <nic|disk|scsi>-<name>-<bus>-<slot>[-<scsi-id>.<lun>]"
                .into(),
        };
        let (kind, rest) = DeviceKind::ALL
            .into_iter()
            .find_map(|kind| {
                id.strip_prefix(kind.prefix())?.strip_prefix('-').map(|rest| (kind, rest))
            })
            .ok_or_else(not_ours)?;
        let (name, mut rest) = rest.split_once('-').ok_or_else(not_ours)?;
        let mut unit = None;
        if let Some((before, last)) = rest.rsplit_once('-').filter(|(_, last)| last.contains('.')) {
            unit = Some(
                ScsiUnit::parse(last).filter(|_| kind == DeviceKind::Disk).ok_or_else(not_ours)?,
            );
            rest = before;
        }
        let (bus, slot) = rest.rsplit_once('-').ok_or_else(not_ours)?;
        let slot: u8 = slot.parse().map_err(|_| not_ours())?;
        if slot >= PCI_SLOTS {
            return Err(not_ours());
        }
        let bus =
            if bus == PC_ROOT_MARK { PlaceBus::PcRoot } else { PlaceBus::Named(bus.to_owned()) };
        let place = Place { bus, slot };
        let parsed = match unit {
            Some(unit) => Self::scsi(name, &place, unit)?,
            None => Self::at(kind, name, &place)?,
        };
        if parsed.to_string() == id { Ok(parsed) } else { Err(not_ours()) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn named(bus: &str, slot: u8) -> Place {
        Place { bus: PlaceBus::Named(bus.into()), slot }
    }

    #[test]
    fn derived_names_fit_qemu_limits() {
        let id = DeviceId::new(DeviceKind::Disk, &"x".repeat(MAX_NAME_LEN), 31).unwrap();
        assert_eq!(id.file_node_name().len(), 31, "QEMU's node-name limit is 31 characters");
        assert_eq!(id.to_string().len(), MAX_ID_LEN);
        assert!(id.node_name().starts_with(|c: char| c.is_ascii_alphabetic()));
        assert_eq!(id.pci_addr(), "0x1f");
        // Ganeti's 8-character names leave 9 characters of bus name on any slot.
        let id = DeviceId::at(DeviceKind::Disk, "6f2a1c3e", &named("pcie-rp.9", 31)).unwrap();
        assert_eq!(id.file_node_name().len(), 31);
        let error =
            DeviceId::at(DeviceKind::Disk, "6f2a1c3e", &named("pcie-rp.10", 31)).unwrap_err();
        assert!(error.to_string().contains("26 characters"), "{error}");
    }

    #[test]
    fn bad_names_buses_and_slots_are_refused() {
        for name in ["", "has-dash", "has space", "ünï", &"x".repeat(MAX_NAME_LEN + 1)] {
            let error = DeviceId::new(DeviceKind::Nic, name, 3).unwrap_err();
            assert!(matches!(error, Error::InvalidName { .. }), "{name:?}: {error:?}");
            assert!(DeviceId::check_name(name).is_err(), "{name:?}");
        }
        assert!(DeviceId::check_name("web_1").is_ok());
        assert!(matches!(DeviceId::new(DeviceKind::Nic, "a", 32), Err(Error::InvalidSpec(_))));
        for bus in ["pci", "1rp", "-rp", "rp 1", "rp/1", "", "ü"] {
            let result = DeviceId::at(DeviceKind::Nic, "a", &named(bus, 0));
            assert!(matches!(result, Err(Error::InvalidName { .. })), "{bus:?}: {result:?}");
        }
        let result = DeviceId::at(DeviceKind::Nic, "a", &named("rp1", 32));
        assert!(matches!(result, Err(Error::InvalidSpec(_))), "{result:?}");
    }

    #[test]
    fn pc_root_ids_are_ganetis() {
        let id = DeviceId::at(DeviceKind::Nic, "web1", &Place { bus: PlaceBus::PcRoot, slot: 5 })
            .unwrap();
        assert_eq!(id.to_string(), "nic-web1-pci-5");
        assert_eq!(id, DeviceId::new(DeviceKind::Nic, "web1", 5).unwrap());
        assert_eq!(id.bus(), &PlaceBus::PcRoot);
    }

    #[test]
    fn ids_with_dashes_in_the_bus_parse_back() {
        for (text, bus, slot) in [
            ("nic-a-rp-1-0", "rp-1", 0),
            ("nic-a-pci-7-3", "pci-7", 3),
            ("disk-b-x-pci-31", "x-pci", 31),
            ("nic-a-pci.1-0", "pci.1", 0),
        ] {
            let id: DeviceId = text.parse().unwrap();
            assert_eq!(id.place(), named(bus, slot), "{text}");
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn foreign_ids_do_not_parse() {
        for id in [
            "nic0",
            "nic-a-pci-",
            "nic-a-pci-x",
            "nic-a-pci-05",
            "hd-a-pci-1",
            "nic--pci-1",
            "nic-a-rp1-32",
            "nic-a-1",
        ] {
            assert!(id.parse::<DeviceId>().is_err(), "{id} parsed");
        }
    }

    #[test]
    fn scsi_disk_ids_parse_back_and_never_read_as_pci_ids() {
        let pc5 = Place { bus: PlaceBus::PcRoot, slot: 5 };
        let unit = ScsiUnit { scsi_id: 3, lun: 16383 };
        let id = DeviceId::scsi("d1", &pc5, unit).unwrap();
        assert_eq!(id.to_string(), "disk-d1-pci-5-3.16383");
        assert_eq!(
            (id.kind(), id.place(), id.scsi_unit()),
            (DeviceKind::Disk, pc5.clone(), Some(unit))
        );
        assert_eq!(id.file_node_name(), "disk-d1-pci-5-3.16383-file");
        let id: DeviceId = "disk-d1-rp-1.2-0-0.1".parse().unwrap();
        assert_eq!(id.place(), named("rp-1.2", 0));
        assert_eq!(id.scsi_unit(), Some(ScsiUnit { scsi_id: 0, lun: 1 }));
        let hba: DeviceId = "scsi-hba-pci-5".parse().unwrap();
        assert_eq!((hba.kind(), hba.scsi_unit()), (DeviceKind::ScsiController, None));
        assert_eq!(
            DeviceId::scsi("d1", &pc5, ScsiUnit { scsi_id: 0, lun: 16384 })
                .unwrap_err()
                .to_string(),
            "invalid hotplug request: SCSI LUN 16384 is over 16383"
        );
        for foreign in [
            "nic-a-pci-5-0.0",
            "scsi-hba-pci-5-0.0",
            "disk-a-pci-5-0.00",
            "disk-a-pci-5-00.0",
            "disk-a-pci-5-256.0",
            "disk-a-pci-5-0.16384",
            "disk-a-pci-5-0.",
            "disk-a-pci-5-.0",
            "disk-a-pci-0.0",
            "disk-a-0.0",
        ] {
            assert!(foreign.parse::<DeviceId>().is_err(), "{foreign} parsed");
        }
    }

    fn any_place() -> impl Strategy<Value = Place> {
        prop_oneof![
            (0u8..32).prop_map(|slot| Place { bus: PlaceBus::PcRoot, slot }),
            ("[A-Za-z][A-Za-z0-9_.-]{0,10}", 0u8..32)
                .prop_filter("pci is the bus 0 mark", |(bus, _)| bus != "pci")
                .prop_map(|(bus, slot)| Place { bus: PlaceBus::Named(bus), slot }),
        ]
    }

    proptest! {
        #[test]
        fn ids_parse_back(name in "[A-Za-z0-9_]{1,14}", place in any_place(), disk: bool) {
            let kind = if disk { DeviceKind::Disk } else { DeviceKind::Nic };
            match DeviceId::at(kind, &name, &place) {
                Ok(id) => {
                    prop_assert!(id.to_string().len() <= MAX_ID_LEN);
                    let parsed: DeviceId = id.to_string().parse().unwrap();
                    prop_assert_eq!(parsed.place(), place);
                    prop_assert_eq!((parsed.kind(), parsed.name()), (kind, name.as_str()));
                    prop_assert_eq!(&parsed, &id);
                }
                Err(error) => prop_assert!(error.to_string().contains("26 characters"), "{}", error),
            }
        }

        #[test]
        fn scsi_ids_parse_back(
            name in "[A-Za-z0-9_]{1,14}",
            place in any_place(),
            scsi_id: u8,
            lun in 0..=MAX_SCSI_LUN,
        ) {
            let unit = ScsiUnit { scsi_id, lun };
            if let Ok(id) = DeviceId::scsi(&name, &place, unit) {
                prop_assert!(id.to_string().len() <= MAX_ID_LEN);
                let parsed: DeviceId = id.to_string().parse().unwrap();
                prop_assert_eq!(parsed.scsi_unit(), Some(unit));
                prop_assert_eq!(parsed.place(), place.clone());
                prop_assert_eq!(&parsed, &id);
                let pci = DeviceId::at(DeviceKind::Disk, &name, &place).unwrap();
                prop_assert_ne!(pci.to_string(), id.to_string());
            }
        }

        #[test]
        fn distinct_places_give_distinct_ids(
            name in "[A-Za-z0-9_]{1,8}",
            a in any_place(),
            b in any_place(),
        ) {
            let ids = (DeviceId::at(DeviceKind::Nic, &name, &a), DeviceId::at(DeviceKind::Nic, &name, &b));
            if let (Ok(x), Ok(y)) = ids {
                prop_assert_eq!(a == b, x.to_string() == y.to_string());
            }
        }

        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,40}") {
            if let Ok(id) = text.parse::<DeviceId>() {
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }
}
