//! Device ids on any bus: Ganeti's `<kind>-<name>-pci-<slot>` on pc's bus 0,
//! `<kind>-<name>-<bus>-<slot>` elsewhere.

use std::fmt;
use std::str::FromStr;

use super::places::{Place, PlaceBus};
use crate::Error;
use crate::ids::{DeviceId, DeviceKind};
use crate::pci::PCI_SLOTS;

/// Longest id: QEMU keeps block node names in 32 bytes (31 characters), and the longest
/// name derived from an id is a disk's file node, `<id>-file`. Ganeti's ids on bus 0 always
/// fit (`disk-` + 14 + `-pci-31`).
pub const MAX_ID_LEN: usize = 26;

/// The bus part that marks pc's bus 0 in an id; a bus with this name gets no ids.
const PC_ROOT_MARK: &str = "pci";

/// The id of a hot-plugged device on any bus, and where it sits.
///
/// On pc's bus 0 it is [`DeviceId`]'s, Ganeti's `<kind>-<name>-pci-<slot>`; on any other
/// bus it is `<kind>-<name>-<bus>-<slot>`, `<bus>` being the bus's name (the id of its
/// bridge or root port). Ids parse back to kind, name, bus and slot: the name has no `-`,
/// the slot is the last part, so `<bus>` is what lies between, `-` and all. A bus named
/// `pci` would read as bus 0 and gets no ids. The whole id stays within [`MAX_ID_LEN`].
///
/// ```
/// use qmp_hotplug::{BusDeviceId, DeviceKind, Place, PlaceBus};
/// let place = Place { bus: PlaceBus::Named("pcie.0-root-port-2".into()), slot: 0 };
/// let id = BusDeviceId::new(DeviceKind::Nic, "6f2a1c3e", &place);
/// assert!(id.is_err(), "longer than 26 characters");
/// let place = Place { bus: PlaceBus::Named("rp-2".into()), slot: 0 };
/// let id = BusDeviceId::new(DeviceKind::Disk, "6f2a1c3e", &place)?;
/// assert_eq!(id.to_string(), "disk-6f2a1c3e-rp-2-0");
/// assert_eq!("disk-6f2a1c3e-rp-2-0".parse::<BusDeviceId>()?.place(), place);
/// let ganeti: BusDeviceId = "nic-6f2a1c3e-pci-5".parse()?;
/// assert_eq!(ganeti.place(), Place { bus: PlaceBus::PcRoot, slot: 5 });
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BusDeviceId {
    kind: DeviceKind,
    name: String,
    bus: PlaceBus,
    slot: u8,
}

impl BusDeviceId {
    /// The id of device `name` of `kind` at `place`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `name` breaks [`DeviceId`]'s rules, the bus name is not
    /// a QEMU id or is `pci`, or the id would be longer than [`MAX_ID_LEN`];
    /// [`Error::InvalidSpec`] when the slot is not below 32.
    pub fn new(kind: DeviceKind, name: &str, place: &Place) -> Result<Self, Error> {
        DeviceId::new(kind, name, place.slot)?;
        if let PlaceBus::Named(bus) = &place.bus {
            check_bus_name(bus)?;
        }
        let id = Self { kind, name: name.to_owned(), bus: place.bus.clone(), slot: place.slot };
        let text = id.to_string();
        if text.len() > MAX_ID_LEN {
            return Err(Error::InvalidName {
                name: text,
                reason: format!(
                    "a device id may have {MAX_ID_LEN} characters, so that the node names \
                     made from it fit QEMU's 31; use a shorter name or bus id"
                ),
            });
        }
        Ok(id)
    }

    /// The kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The caller's name part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the device sits.
    pub fn place(&self) -> Place {
        Place { bus: self.bus.clone(), slot: self.slot }
    }

    /// The same id as a [`DeviceId`], for a device on pc's bus 0.
    pub fn on_pc_root(&self) -> Option<DeviceId> {
        match self.bus {
            PlaceBus::PcRoot => DeviceId::new(self.kind, &self.name, self.slot).ok(),
            PlaceBus::Named(_) => None,
        }
    }
}

impl From<DeviceId> for BusDeviceId {
    fn from(id: DeviceId) -> Self {
        Self { kind: id.kind(), name: id.name().to_owned(), bus: PlaceBus::PcRoot, slot: id.slot() }
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

impl fmt::Display for BusDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bus = match &self.bus {
            PlaceBus::PcRoot => PC_ROOT_MARK,
            PlaceBus::Named(name) => name,
        };
        write!(f, "{}-{}-{bus}-{}", self.kind.prefix(), self.name, self.slot)
    }
}

impl FromStr for BusDeviceId {
    type Err = Error;

    /// Parses an id made by `Display`, and nothing else (no leading zeros, no foreign ids).
    fn from_str(id: &str) -> Result<Self, Error> {
        let not_ours = || Error::InvalidName {
            name: id.to_owned(),
            reason: "not an id of the form <nic|disk>-<name>-<bus>-<slot>".into(),
        };
        let (kind, rest) = [DeviceKind::Nic, DeviceKind::Disk]
            .into_iter()
            .find_map(|kind| {
                id.strip_prefix(kind.prefix())?.strip_prefix('-').map(|rest| (kind, rest))
            })
            .ok_or_else(not_ours)?;
        let (name, rest) = rest.split_once('-').ok_or_else(not_ours)?;
        let (bus, slot) = rest.rsplit_once('-').ok_or_else(not_ours)?;
        let slot: u8 = slot.parse().map_err(|_| not_ours())?;
        if slot >= PCI_SLOTS {
            return Err(not_ours());
        }
        let bus =
            if bus == PC_ROOT_MARK { PlaceBus::PcRoot } else { PlaceBus::Named(bus.to_owned()) };
        let parsed = Self::new(kind, name, &Place { bus, slot })?;
        if parsed.to_string() == id { Ok(parsed) } else { Err(not_ours()) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::MAX_NAME_LEN;

    fn named(bus: &str, slot: u8) -> Place {
        Place { bus: PlaceBus::Named(bus.into()), slot }
    }

    #[test]
    fn pc_root_ids_are_ganetis() {
        let id =
            BusDeviceId::new(DeviceKind::Nic, "web1", &Place { bus: PlaceBus::PcRoot, slot: 5 })
                .unwrap();
        assert_eq!(id.to_string(), "nic-web1-pci-5");
        let ganeti = id.on_pc_root().unwrap();
        assert_eq!(ganeti.to_string(), id.to_string());
        assert_eq!(BusDeviceId::from(ganeti), id);
        assert_eq!(
            BusDeviceId::new(DeviceKind::Nic, "web1", &named("rp1", 0)).unwrap().on_pc_root(),
            None
        );
    }

    #[test]
    fn the_longest_ids_keep_node_names_within_31() {
        let longest_root = BusDeviceId::new(
            DeviceKind::Disk,
            &"x".repeat(MAX_NAME_LEN),
            &Place { bus: PlaceBus::PcRoot, slot: 31 },
        )
        .unwrap();
        assert_eq!(longest_root.to_string().len(), MAX_ID_LEN);
        assert_eq!(format!("{longest_root}-file").len(), 31);
        // Ganeti's 8-character names leave 9 characters of bus name on any slot.
        let id = BusDeviceId::new(DeviceKind::Disk, "6f2a1c3e", &named("pcie-rp.9", 31)).unwrap();
        assert_eq!(id.to_string().len(), MAX_ID_LEN);
        let error =
            BusDeviceId::new(DeviceKind::Disk, "6f2a1c3e", &named("pcie-rp.10", 31)).unwrap_err();
        assert!(error.to_string().contains("26 characters"), "{error}");
    }

    #[test]
    fn bad_bus_names_are_refused() {
        for bus in ["pci", "1rp", "-rp", "rp 1", "rp/1", "", "ü"] {
            let result = BusDeviceId::new(DeviceKind::Nic, "a", &named(bus, 0));
            assert!(matches!(result, Err(Error::InvalidName { .. })), "{bus:?}: {result:?}");
        }
        let result = BusDeviceId::new(DeviceKind::Nic, "a", &named("rp1", 32));
        assert!(matches!(result, Err(Error::InvalidSpec(_))), "{result:?}");
        let result = BusDeviceId::new(DeviceKind::Nic, "a-b", &named("rp1", 0));
        assert!(matches!(result, Err(Error::InvalidName { .. })), "{result:?}");
    }

    #[test]
    fn ids_with_dashes_in_the_bus_parse_back() {
        for (text, bus, slot) in [
            ("nic-a-rp-1-0", "rp-1", 0),
            ("nic-a-pci-7-3", "pci-7", 3),
            ("disk-b-x-pci-31", "x-pci", 31),
            ("nic-a-pci.1-0", "pci.1", 0),
        ] {
            let id: BusDeviceId = text.parse().unwrap();
            assert_eq!(id.place(), named(bus, slot), "{text}");
            assert_eq!(id.to_string(), text);
            assert!(text.parse::<DeviceId>().is_err(), "{text} reads as a bus 0 id");
        }
    }

    #[test]
    fn foreign_ids_do_not_parse() {
        for id in [
            "nic0",
            "nic-a-rp1-",
            "nic-a-rp1-x",
            "nic-a-rp1-05",
            "nic-a-rp1-32",
            "hd-a-rp1-1",
            "nic--rp1-1",
            "nic-a-1",
        ] {
            assert!(id.parse::<BusDeviceId>().is_err(), "{id} parsed");
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
        fn ids_round_trip(name in "[A-Za-z0-9_]{1,14}", place in any_place(), disk: bool) {
            let kind = if disk { DeviceKind::Disk } else { DeviceKind::Nic };
            if let Ok(id) = BusDeviceId::new(kind, &name, &place) {
                prop_assert!(id.to_string().len() <= MAX_ID_LEN);
                let parsed: BusDeviceId = id.to_string().parse().unwrap();
                prop_assert_eq!(parsed.place(), place);
                prop_assert_eq!(&parsed, &id);
                // On bus 0 the old parser agrees.
                if let Some(ganeti) = id.on_pc_root() {
                    prop_assert_eq!(id.to_string().parse::<DeviceId>().unwrap(), ganeti);
                }
            } else {
                let error = BusDeviceId::new(kind, &name, &place).unwrap_err();
                prop_assert!(error.to_string().contains("26 characters"), "{}", error);
            }
        }

        #[test]
        fn distinct_places_give_distinct_ids(
            name in "[A-Za-z0-9_]{1,8}",
            a in any_place(),
            b in any_place(),
        ) {
            let ids = (BusDeviceId::new(DeviceKind::Nic, &name, &a), BusDeviceId::new(DeviceKind::Nic, &name, &b));
            if let (Ok(x), Ok(y)) = ids {
                prop_assert_eq!(a == b, x.to_string() == y.to_string());
            }
        }

        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,40}") {
            if let Ok(id) = text.parse::<BusDeviceId>() {
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }
}
