//! Where a device can be hot-plugged, and why the other buses cannot take it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Serialize, Serializer};

use super::tree::{Bus, BusKind, MachineKind, PciTree};
use crate::ids::{DeviceId, DeviceKind};
use crate::pci::PCI_SLOTS;

/// The bus of a [`Place`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlaceBus {
    /// `pc`'s bus 0 (`pci.0`): Ganeti's bus, with the ids `<kind>-<name>-pci-<slot>`.
    PcRoot,
    /// Any other bus, by the name `device_add` takes: the id of the bridge or root port
    /// that provides it (or `pcie.0`).
    Named(String),
}

impl PlaceBus {
    /// The value for `device_add`'s `bus`.
    pub fn device_add_name(&self) -> &str {
        match self {
            Self::PcRoot => "pci.0",
            Self::Named(name) => name,
        }
    }
}

impl fmt::Display for PlaceBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.device_add_name())
    }
}

impl Serialize for PlaceBus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.device_add_name())
    }
}

/// A slot on a bus: where `device_add` puts a device (`bus` and `addr`, function 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Place {
    /// The bus.
    pub bus: PlaceBus,
    /// The slot, `0..32`.
    pub slot: u8,
}

impl Place {
    /// The value for `device_add`'s `addr`, e.g. `0x1f`.
    pub fn addr(&self) -> String {
        format!("{:#x}", self.slot)
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} slot {}", self.bus, self.slot)
    }
}

/// What the caller wants from [`PciTree::free_place`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferences {
    /// Slots never handed out, per bus name (`pci.0` for pc's bus 0; slot 0 of a root
    /// port's bus reserves the port), e.g. kept for devices the VM gets at its next start.
    pub reserved: BTreeMap<String, BTreeSet<u8>>,
    /// When not empty: only these buses, in this order (a `--bus` option).
    pub buses: Vec<String>,
}

impl Preferences {
    /// Reserves `slots` of bus `bus`.
    #[must_use]
    pub fn reserve(mut self, bus: impl Into<String>, slots: impl IntoIterator<Item = u8>) -> Self {
        self.reserved.entry(bus.into()).or_default().extend(slots);
        self
    }

    /// Looks only at `buses`, in that order.
    #[must_use]
    pub fn only(mut self, buses: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.buses = buses.into_iter().map(Into::into).collect();
        self
    }

    fn is_reserved(&self, bus: &Bus, slot: u8) -> bool {
        bus.name
            .as_ref()
            .and_then(|name| self.reserved.get(name))
            .is_some_and(|set| set.contains(&slot))
    }
}

/// Why a bus has no place for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Unusable {
    /// The machine is neither `pc` nor `q35`.
    UnknownMachine {
        /// The machine type, or `unknown`.
        machine: String,
    },
    /// q35's root complex `pcie.0` takes no hotplug, whatever room it has.
    RootComplex {
        /// Its slots with nothing in them.
        empty_slots: usize,
    },
    /// Not a kind of bus devices are planned onto (an expander root bus, a switch port...).
    NotPlanned {
        /// What it is.
        what: String,
    },
    /// A bridge without an id: `device_add` cannot name its bus.
    Unnamed,
    /// Another bus has the same name, so `device_add` may pick that one.
    NameClash,
    /// `query-pci` does not list its devices (the firmware has not numbered the bus yet)
    /// and QOM did not place every peripheral.
    ContentsUnknown,
    /// A root port started with `hotplug=off` (QEMU: `Bus '...' does not support
    /// hotplugging`).
    HotplugOff,
    /// A root port whose `hotplug` property was not read: it may be off.
    HotplugUnknown,
    /// A root port with something on its bus: it takes one device, at slot 0.
    PortTaken {
        /// What holds it, e.g. `nic0 at 00.0`.
        by: String,
    },
    /// A root port whose slot 0 the caller reserved.
    PortReserved,
    /// Every slot is used or reserved.
    Full {
        /// Slots in use.
        used: usize,
        /// Free slots the caller reserved (and pc's slot 0).
        reserved: usize,
    },
    /// A device id on this bus would break the id rules (e.g. too long for node names).
    BadId {
        /// The rule.
        reason: String,
    },
    /// A bus named in [`Preferences::buses`] that the tree does not have.
    NoSuchBus,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMachine { machine } => {
                write!(f, "the machine type {machine} is neither pc nor q35")
            }
            Self::RootComplex { empty_slots } => write!(
                f,
                "q35's root complex takes no hotplug (QEMU: Bus 'pcie.0' does not support \
                 hotplugging), though {empty_slots} of its slots are empty"
            ),
            Self::NotPlanned { what } => write!(f, "a {what}, not a bus devices are planned onto"),
            Self::Unnamed => f.write_str("its bridge has no id, so device_add cannot name it"),
            Self::NameClash => f.write_str("another bus has the same name"),
            Self::ContentsUnknown => f.write_str(
                "query-pci does not list its devices (the firmware has not numbered the bus) \
                 and QOM did not place every peripheral",
            ),
            Self::HotplugOff => f.write_str("a root port started with hotplug=off"),
            Self::HotplugUnknown => {
                f.write_str("a root port whose hotplug property was not read (it may be off)")
            }
            Self::PortTaken { by } => write!(f, "a root port holding {by}"),
            Self::PortReserved => f.write_str("a root port the caller reserved"),
            Self::Full { used, reserved } => {
                write!(f, "no free slot ({used} used, {reserved} reserved)")
            }
            Self::BadId { reason } => write!(f, "no valid device id here: {reason}"),
            Self::NoSuchBus => f.write_str("no such bus"),
        }
    }
}

/// A bus [`PciTree::free_place`] looked at, and why it had no room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckedBus {
    /// The bus's name (or number).
    pub bus: String,
    /// Why.
    #[serde(flatten)]
    pub why: Unusable,
}

/// No bus can take the device: every bus that was checked, why it could not, and what to
/// start the VM with to have room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoFreePlace {
    /// The machine.
    pub machine: MachineKind,
    /// Every bus checked, in the order checked.
    pub checked: Vec<CheckedBus>,
    /// What to change at VM start.
    pub advice: String,
}

impl fmt::Display for NoFreePlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no free PCI place on this {} machine; checked", self.machine)?;
        for (index, checked) in self.checked.iter().enumerate() {
            let lead = if index == 0 { " " } else { "; " };
            write!(f, "{lead}{}: {}", checked.bus, checked.why)?;
        }
        if self.checked.is_empty() {
            f.write_str(" no bus")?;
        }
        write!(f, ". {}", self.advice)
    }
}

impl std::error::Error for NoFreePlace {}

impl PciTree {
    /// The first place a device `name` of `kind` can be hot-plugged (Ganeti's
    /// `GetFreePCISlot`, over every bus), in the order documented on [`PciTree`].
    /// [`DeviceId::at`] with the same kind and name is sure to accept it.
    ///
    /// # Errors
    /// [`NoFreePlace`] when there is none.
    pub fn free_place(
        &self,
        kind: DeviceKind,
        name: &str,
        preferences: &Preferences,
    ) -> Result<Place, NoFreePlace> {
        let mut checked = Vec::new();
        for (index, label) in self.search_order(preferences) {
            let Some(index) = index else {
                checked.push(CheckedBus { bus: label, why: Unusable::NoSuchBus });
                continue;
            };
            match self.places_on(index, kind, name, preferences) {
                Ok(places) => return Ok(places[0].clone()),
                Err(why) => checked.push(CheckedBus { bus: label, why }),
            }
        }
        let advice = self.advice(&checked, !preferences.buses.is_empty());
        Err(NoFreePlace { machine: self.machine().clone(), checked, advice })
    }

    /// Every place [`PciTree::free_place`] could pick, in its order.
    pub fn free_places(
        &self,
        kind: DeviceKind,
        name: &str,
        preferences: &Preferences,
    ) -> Vec<Place> {
        self.search_order(preferences)
            .into_iter()
            .filter_map(|(index, _)| index)
            .filter_map(|index| self.places_on(index, kind, name, preferences).ok())
            .flatten()
            .collect()
    }

    /// `true` if the device `id` sits in `place` (Ganeti's `HasPCIDevice`: the slot and the
    /// id must both match; any function of the slot counts).
    pub fn has_device(&self, id: &str, place: &Place) -> bool {
        self.bus_of(&place.bus)
            .is_some_and(|bus| bus.slot(place.slot).any(|f| f.qdev_id.as_deref() == Some(id)))
    }

    /// Where the device `id` sits, if it is on a bus `device_add` can name (not one whose
    /// name an earlier bus has too).
    pub fn place_of(&self, id: &str) -> Option<Place> {
        self.buses().iter().enumerate().find_map(|(index, bus)| {
            let function = bus.functions.iter().find(|f| f.qdev_id.as_deref() == Some(id))?;
            let place_bus = place_bus(bus)?;
            (self.index_of(&place_bus) == Some(index))
                .then_some(Place { bus: place_bus, slot: function.slot })
        })
    }

    /// The bus a [`PlaceBus`] means: the one `device_add` would pick.
    pub fn bus_of(&self, bus: &PlaceBus) -> Option<&Bus> {
        self.index_of(bus).map(|index| &self.buses()[index])
    }

    fn index_of(&self, bus: &PlaceBus) -> Option<usize> {
        match bus {
            PlaceBus::PcRoot => self.buses().iter().position(|bus| bus.kind == BusKind::PcRoot),
            PlaceBus::Named(name) => self.bus_index(name),
        }
    }

    /// The free slots of bus `index` for any device, or why it has none; id rules aside.
    pub(super) fn room(
        &self,
        index: usize,
        preferences: &Preferences,
    ) -> Result<Vec<u8>, Unusable> {
        let bus = &self.buses()[index];
        if !matches!(self.machine(), MachineKind::Pc | MachineKind::Q35) {
            return Err(Unusable::UnknownMachine { machine: self.machine().to_string() });
        }
        let first_slot = match &bus.kind {
            BusKind::PcRoot => 1,
            BusKind::PciBridge | BusKind::PciePciBridge | BusKind::RootPort => 0,
            BusKind::Q35Root => {
                let empty_slots = (0..PCI_SLOTS)
                    .filter(|&slot| !bus.is_used(slot) && !preferences.is_reserved(bus, slot))
                    .count();
                return Err(Unusable::RootComplex { empty_slots });
            }
            BusKind::OtherRoot => {
                return Err(Unusable::NotPlanned { what: "root bus other than bus 0".into() });
            }
            BusKind::OtherBridge(what) => return Err(Unusable::NotPlanned { what: what.clone() }),
        };
        if bus.name.is_none() {
            return Err(Unusable::Unnamed);
        }
        if bus.name_clash {
            return Err(Unusable::NameClash);
        }
        if !bus.contents_known {
            return Err(Unusable::ContentsUnknown);
        }
        if bus.kind == BusKind::RootPort {
            if let Some(holder) = bus.functions.first() {
                let id = holder.qdev_id.clone().unwrap_or_else(|| holder.what());
                let by = format!("{id} at {:02x}.{}", holder.slot, holder.function);
                return Err(Unusable::PortTaken { by });
            }
            match bus.hotplug {
                Some(true) => {}
                Some(false) => return Err(Unusable::HotplugOff),
                None => return Err(Unusable::HotplugUnknown),
            }
            if preferences.is_reserved(bus, 0) {
                return Err(Unusable::PortReserved);
            }
            return Ok(vec![0]);
        }
        let free: Vec<u8> = (first_slot..PCI_SLOTS)
            .filter(|&slot| !bus.is_used(slot) && !preferences.is_reserved(bus, slot))
            .collect();
        if free.is_empty() {
            let used = (0..PCI_SLOTS).filter(|&slot| bus.is_used(slot)).count();
            return Err(Unusable::Full { used, reserved: usize::from(PCI_SLOTS) - used });
        }
        Ok(free)
    }

    /// The places on bus `index` whose device id is valid for `kind` and `name`.
    fn places_on(
        &self,
        index: usize,
        kind: DeviceKind,
        name: &str,
        preferences: &Preferences,
    ) -> Result<Vec<Place>, Unusable> {
        let slots = self.room(index, preferences)?;
        let bus = place_bus(&self.buses()[index]).ok_or(Unusable::Unnamed)?;
        let mut first_error = None;
        let places: Vec<Place> = slots
            .into_iter()
            .map(|slot| Place { bus: bus.clone(), slot })
            .filter(|place| match DeviceId::at(kind, name, place) {
                Ok(_) => true,
                Err(error) => {
                    first_error.get_or_insert_with(|| error.to_string());
                    false
                }
            })
            .collect();
        match first_error {
            Some(reason) if places.is_empty() => Err(Unusable::BadId { reason }),
            _ => Ok(places),
        }
    }

    /// The buses to check, in order, with their labels; `None` for a bus asked for by a
    /// name the tree does not have.
    fn search_order(&self, preferences: &Preferences) -> Vec<(Option<usize>, String)> {
        if !preferences.buses.is_empty() {
            return preferences
                .buses
                .iter()
                .map(|name| (self.bus_index(name), name.clone()))
                .collect();
        }
        let mut order: Vec<usize> = (0..self.buses().len()).collect();
        order.sort_by_key(|&index| match self.buses()[index].kind {
            BusKind::PcRoot => 0,
            BusKind::RootPort => 1,
            _ => 2,
        });
        order.into_iter().map(|index| (Some(index), self.buses()[index].label())).collect()
    }

    fn advice(&self, checked: &[CheckedBus], restricted: bool) -> String {
        // A bus that is not there is most likely a typo: name the buses there are, and do
        // not advise adding a bridge when every bus asked for is missing.
        let missing: Vec<&str> = checked
            .iter()
            .filter(|c| c.why == Unusable::NoSuchBus)
            .map(|c| c.bus.as_str())
            .collect();
        let named: Vec<String> = self.buses().iter().filter_map(|bus| bus.name.clone()).collect();
        let typo = (!missing.is_empty()).then(|| {
            format!(
                "This {} machine has no bus {}; its buses are {} (`qmp pci` shows them).",
                self.machine(),
                missing.join(", "),
                if named.is_empty() { "unnamed".to_owned() } else { named.join(", ") }
            )
        });
        if missing.len() == checked.len()
            && let Some(typo) = typo
        {
            return typo;
        }
        let mut advice = match self.machine() {
            MachineKind::Pc => "Start the VM with another pci-bridge for 32 more slots (slot 0 \
                included), e.g. `-device pci-bridge,id=br2,chassis_nr=2,bus=pci.0,addr=0x1e` \
                (or behind a bridge, `bus=br1`), or reserve fewer slots."
                .to_owned(),
            MachineKind::Q35 => {
                let root_room = checked.iter().find_map(|c| match c.why {
                    Unusable::RootComplex { empty_slots } if empty_slots > 0 => Some(empty_slots),
                    _ => None,
                });
                let note = root_room
                    .map(|empty_slots| {
                        format!(
                            "pcie.0 has {empty_slots} empty slots, but q35 hot-plugs only into \
                             root ports and bridges. "
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{note}Start the VM with more empty root ports, one hot-plugged device each, \
                     e.g. `-device pcie-root-port,id=rp9,bus=pcie.0,chassis=1,slot=9,addr=0x9` \
                     (each with its own id, chassis/slot pair and pcie.0 address; up to 8 per \
                     pcie.0 slot as functions: `addr=0x9.0x0,multifunction=on`, then \
                     `addr=0x9.0x1` ...). Root ports cannot be hot-added; libvirt and Kata \
                     start q35 guests with a pool of empty root ports."
                )
            }
            MachineKind::Other(_) | MachineKind::Unknown => {
                "Hotplug is planned on pc and q35 machines only.".to_owned()
            }
        };
        if let Some(typo) = typo {
            advice = format!("{typo} {advice}");
        }
        if restricted {
            advice.push_str(" Only the buses asked for were checked.");
        }
        advice
    }
}

/// The [`PlaceBus`] of `bus`, if `device_add` can name it.
pub(super) fn place_bus(bus: &Bus) -> Option<PlaceBus> {
    if bus.kind == BusKind::PcRoot {
        return Some(PlaceBus::PcRoot);
    }
    bus.name.clone().map(PlaceBus::Named)
}
