//! Bus 0 of `query-pci` as a map of 32 slots: which are free, which hold what.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// Slots on one conventional PCI bus (Ganeti's `_QEMU_PCI_SLOTS`).
pub const PCI_SLOTS: u8 = 32;

/// Functions per slot.
pub const PCI_FUNCTIONS: u8 = 8;

/// One PCI function on bus 0, as `query-pci` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Slot number, `0..32`.
    pub slot: u8,
    /// Function number, `0..8`.
    pub function: u8,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// PCI class code (`class_info.class`).
    pub class: u16,
    /// QEMU's description of the class (`class_info.desc`), when it gives one.
    pub description: Option<String>,
    /// The device's qdev id; `None` for devices the machine created without one.
    pub qdev_id: Option<String>,
}

/// What a slot of bus 0 holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Slot {
    /// Nothing: a device can be hot-added here.
    Free,
    /// Empty, but kept out of planning: the host bridge's slot 0, or one the caller reserved.
    Reserved,
    /// One or more functions (more than one for a multi-function device such as PIIX).
    Occupied(Vec<PciFunction>),
}

impl Slot {
    /// `true` for [`Slot::Free`].
    pub fn is_free(&self) -> bool {
        matches!(self, Self::Free)
    }

    /// The functions in this slot (empty unless occupied).
    pub fn functions(&self) -> &[PciFunction] {
        match self {
            Self::Occupied(functions) => functions,
            Self::Free | Self::Reserved => &[],
        }
    }
}

/// The 32 slots of PCI bus 0, built from a `query-pci` reply.
///
/// Slot 0 is always treated as taken (the host bridge lives there on every x86 machine
/// type); a slot with any function in use is taken as a whole, because hot-plug puts new
/// devices at function 0. Devices behind bridges are on other buses and not listed.
///
/// ```
/// use qmp_hotplug::SlotMap;
/// let reply = serde_json::json!([{"bus": 0, "devices": [
///     {"bus": 0, "slot": 0, "function": 0, "qdev_id": "",
///      "class_info": {"class": 1536, "desc": "Host bridge"},
///      "id": {"vendor": 32902, "device": 4663}},
///     {"bus": 0, "slot": 5, "function": 0, "qdev_id": "nic-a-pci-5",
///      "class_info": {"class": 512}, "id": {"vendor": 6900, "device": 4096}}]}]);
/// let slots = SlotMap::from_query_pci(&reply)?;
/// assert_eq!(slots.free_slot()?, 1);
/// assert_eq!(slots.slot_of("nic-a-pci-5"), Some(5));
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    slots: Vec<Slot>,
}

#[derive(Deserialize)]
struct RawBus {
    bus: i64,
    #[serde(default)]
    devices: Vec<RawFunction>,
}

#[derive(Deserialize)]
struct RawFunction {
    slot: i64,
    function: i64,
    #[serde(default)]
    qdev_id: Option<String>,
    #[serde(default)]
    class_info: Option<RawClassInfo>,
    #[serde(default)]
    id: Option<RawIds>,
}

#[derive(Deserialize)]
struct RawClassInfo {
    class: i64,
    #[serde(default)]
    desc: Option<String>,
}

#[derive(Deserialize)]
struct RawIds {
    vendor: i64,
    device: i64,
}

impl SlotMap {
    /// Builds the map from the `return` value of `query-pci`.
    ///
    /// # Errors
    /// [`Error::PciData`] when the value is not `query-pci`'s shape, has no bus 0, or
    /// lists a slot, function or id out of range, or the same function twice.
    pub fn from_query_pci(reply: &Value) -> Result<Self, Error> {
        let buses = Vec::<RawBus>::deserialize(reply)
            .map_err(|error| Error::PciData(format!("not a query-pci reply: {error}")))?;
        let bus = buses
            .into_iter()
            .find(|bus| bus.bus == 0)
            .ok_or_else(|| Error::PciData("no bus 0 in query-pci".into()))?;
        let mut slots: Vec<Slot> = (0..PCI_SLOTS).map(|_| Slot::Free).collect();
        slots[0] = Slot::Reserved;
        for raw in bus.devices {
            let function = PciFunction::try_from(raw)?;
            let slot = &mut slots[usize::from(function.slot)];
            if let Slot::Occupied(functions) = slot {
                if functions.iter().any(|f| f.function == function.function) {
                    return Err(Error::PciData(format!(
                        "slot {} function {} is listed twice",
                        function.slot, function.function
                    )));
                }
                functions.push(function);
            } else {
                *slot = Slot::Occupied(vec![function]);
            }
        }
        for slot in &mut slots {
            if let Slot::Occupied(functions) = slot {
                functions.sort_by_key(|f| f.function);
            }
        }
        Ok(Self { slots })
    }

    /// Keeps `slot` out of planning if it is free (callers reserve slots for devices they
    /// add at boot). Out-of-range slots are ignored.
    #[must_use]
    pub fn with_reserved(mut self, reserved: impl IntoIterator<Item = u8>) -> Self {
        for slot in reserved {
            if let Some(state @ Slot::Free) = self.slots.get_mut(usize::from(slot)) {
                *state = Slot::Reserved;
            }
        }
        self
    }

    /// What `slot` holds; `None` when it is out of range.
    pub fn get(&self, slot: u8) -> Option<&Slot> {
        self.slots.get(usize::from(slot))
    }

    /// Every slot with its number, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &Slot)> {
        (0..PCI_SLOTS).zip(&self.slots)
    }

    /// The free slots, lowest first.
    pub fn free_slots(&self) -> impl Iterator<Item = u8> + '_ {
        self.iter().filter(|(_, slot)| slot.is_free()).map(|(number, _)| number)
    }

    /// The first free slot (Ganeti's `GetFreePCISlot`).
    ///
    /// # Errors
    /// [`Error::BusFull`] when none is left.
    pub fn free_slot(&self) -> Result<u8, Error> {
        self.free_slots().next().ok_or(Error::BusFull)
    }

    /// The slot of the device whose qdev id is `id`.
    pub fn slot_of(&self, id: &str) -> Option<u8> {
        self.iter()
            .find(|(_, slot)| slot.functions().iter().any(|f| f.qdev_id.as_deref() == Some(id)))
            .map(|(number, _)| number)
    }

    /// `true` if the device `id` sits in `slot` (Ganeti's `HasPCIDevice`, which matches
    /// both the slot and the id).
    pub fn has_device(&self, id: &str, slot: u8) -> bool {
        self.slot_of(id) == Some(slot)
    }
}

/// The error for a number in a `query-pci` reply outside what PCI allows.
pub(crate) fn out_of_range(what: &str, value: i64) -> Error {
    Error::PciData(format!("{what} {value} is out of range in query-pci"))
}

/// A function's slot and function number from `query-pci`, each within PCI's range.
pub(crate) fn slot_and_function(raw_slot: i64, raw_function: i64) -> Result<(u8, u8), Error> {
    let slot = u8::try_from(raw_slot)
        .ok()
        .filter(|slot| *slot < PCI_SLOTS)
        .ok_or_else(|| out_of_range("slot", raw_slot))?;
    let function = u8::try_from(raw_function)
        .ok()
        .filter(|function| *function < PCI_FUNCTIONS)
        .ok_or_else(|| out_of_range("function", raw_function))?;
    Ok((slot, function))
}

/// A 16-bit number (class, vendor or device id) from `query-pci`.
pub(crate) fn pci_u16(what: &str, value: i64) -> Result<u16, Error> {
    u16::try_from(value).map_err(|_| out_of_range(what, value))
}

impl TryFrom<RawFunction> for PciFunction {
    type Error = Error;

    fn try_from(raw: RawFunction) -> Result<Self, Error> {
        let (slot, function) = slot_and_function(raw.slot, raw.function)?;
        let (class, description) = match raw.class_info {
            Some(info) => (pci_u16("class", info.class)?, info.desc),
            None => (0, None),
        };
        let (vendor, device) = match raw.id {
            Some(ids) => (pci_u16("vendor id", ids.vendor)?, pci_u16("device id", ids.device)?),
            None => (0, 0),
        };
        Ok(Self {
            slot,
            function,
            vendor,
            device,
            class,
            description,
            qdev_id: raw.qdev_id.filter(|id| !id.is_empty()),
        })
    }
}

impl fmt::Display for SlotMap {
    /// A table: one line per slot, with what uses it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<6}{:<10}{:<32}DEVICE", "SLOT", "STATE", "ID")?;
        for (number, slot) in self.iter() {
            match slot {
                Slot::Free => writeln!(f, "{:<6}free", format!("{number:02}"))?,
                Slot::Reserved => writeln!(f, "{:<6}reserved", format!("{number:02}"))?,
                Slot::Occupied(functions) => {
                    for function in functions {
                        let id = function.qdev_id.as_deref().unwrap_or("-");
                        let what = function.description.clone().unwrap_or_else(|| {
                            format!("{:04x}:{:04x}", function.vendor, function.device)
                        });
                        writeln!(
                            f,
                            "{:<6}{:<10}{:<32}{what}",
                            format!("{number:02}.{}", function.function),
                            "used",
                            id
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn function(slot: u8, function: u8, qdev_id: &str) -> Value {
        json!({"bus": 0, "slot": slot, "function": function, "qdev_id": qdev_id,
               "class_info": {"class": 512, "desc": "Ethernet controller"},
               "id": {"vendor": 6900, "device": 4096}, "regions": []})
    }

    /// `query-pci` of an empty `-machine pc -nodefaults`, as QEMU 7.2 returned it.
    fn empty_pc() -> Value {
        json!([{"bus": 0, "devices": [
            {"irq_pin": 0, "bus": 0, "qdev_id": "", "slot": 0, "class_info": {"class": 1536, "desc": "Host bridge"}, "id": {"device": 4663, "subsystem-vendor": 6900, "vendor": 32902, "subsystem": 4352}, "function": 0, "regions": []},
            {"irq_pin": 0, "bus": 0, "qdev_id": "", "slot": 1, "class_info": {"class": 1537, "desc": "ISA bridge"}, "id": {"device": 28672, "subsystem-vendor": 6900, "vendor": 32902, "subsystem": 4352}, "function": 0, "regions": []},
            {"irq_pin": 0, "bus": 0, "qdev_id": "", "slot": 1, "class_info": {"class": 257, "desc": "IDE controller"}, "id": {"device": 28688, "subsystem-vendor": 6900, "vendor": 32902, "subsystem": 4352}, "function": 1, "regions": [{"bar": 4, "size": 16, "address": -1, "type": "io"}]},
            {"irq_pin": 1, "bus": 0, "qdev_id": "", "irq": 0, "slot": 1, "class_info": {"class": 1664, "desc": "Bridge"}, "id": {"device": 28947, "subsystem-vendor": 6900, "vendor": 32902, "subsystem": 4352}, "function": 3, "regions": []}]}])
    }

    #[test]
    fn empty_pc_machine_has_slots_2_to_31_free() {
        let map = SlotMap::from_query_pci(&empty_pc()).unwrap();
        assert_eq!(map.free_slots().collect::<Vec<_>>(), (2..32).collect::<Vec<_>>());
        assert_eq!(map.free_slot().unwrap(), 2);
        let piix = map.get(1).unwrap().functions();
        assert_eq!(piix.iter().map(|f| f.function).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(piix[0].vendor, 0x8086);
        assert_eq!(piix[0].qdev_id, None);
    }

    #[test]
    fn slot_zero_is_reserved_even_when_not_listed() {
        let map = SlotMap::from_query_pci(&json!([{"bus": 0, "devices": []}])).unwrap();
        assert_eq!(map.get(0), Some(&Slot::Reserved));
        assert_eq!(map.free_slot().unwrap(), 1);
    }

    #[test]
    fn devices_are_found_by_id_and_slot() {
        let mut reply = empty_pc();
        reply[0]["devices"].as_array_mut().unwrap().push(function(5, 0, "nic-a-pci-5"));
        let map = SlotMap::from_query_pci(&reply).unwrap();
        assert_eq!(map.slot_of("nic-a-pci-5"), Some(5));
        assert!(map.has_device("nic-a-pci-5", 5));
        assert!(!map.has_device("nic-a-pci-5", 6));
        assert!(!map.has_device("nic-b-pci-5", 5));
        assert_eq!(map.free_slot().unwrap(), 2);
        assert!(!map.free_slots().any(|slot| slot == 5));
    }

    #[test]
    fn a_multifunction_slot_is_taken_even_without_function_zero() {
        let reply = json!([{"bus": 0, "devices": [function(4, 3, "x")]}]);
        let map = SlotMap::from_query_pci(&reply).unwrap();
        assert!(!map.get(4).unwrap().is_free());
    }

    #[test]
    fn a_full_bus_is_an_error() {
        let devices: Vec<Value> = (1..32).map(|slot| function(slot, 0, "")).collect();
        let map = SlotMap::from_query_pci(&json!([{"bus": 0, "devices": devices}])).unwrap();
        assert!(matches!(map.free_slot(), Err(Error::BusFull)));
    }

    #[test]
    fn reserved_slots_are_skipped() {
        let map = SlotMap::from_query_pci(&empty_pc()).unwrap().with_reserved([2, 3, 1, 200]);
        assert_eq!(map.free_slot().unwrap(), 4);
        assert_eq!(map.get(2), Some(&Slot::Reserved));
        assert!(matches!(map.get(1), Some(Slot::Occupied(_))), "occupied stays occupied");
    }

    #[test]
    fn other_buses_are_ignored_and_bus_zero_is_required() {
        let reply = json!([{"bus": 1, "devices": [function(3, 0, "x")]}, {"bus": 0}]);
        let map = SlotMap::from_query_pci(&reply).unwrap();
        assert_eq!(map.slot_of("x"), None);
        let error = SlotMap::from_query_pci(&json!([{"bus": 1, "devices": []}])).unwrap_err();
        assert!(error.to_string().contains("no bus 0"), "{error}");
    }

    #[test]
    fn malformed_replies_are_typed_errors() {
        for (reply, expected) in [
            (json!({"bus": 0}), "not a query-pci reply"),
            (json!([{"bus": 0, "devices": [{"slot": 32, "function": 0}]}]), "slot 32"),
            (json!([{"bus": 0, "devices": [{"slot": -1, "function": 0}]}]), "slot -1"),
            (json!([{"bus": 0, "devices": [{"slot": 3, "function": 8}]}]), "function 8"),
            (
                json!([{"bus": 0, "devices": [{"slot": 3, "function": 0, "id": {"vendor": 70000, "device": 1}}]}]),
                "vendor id 70000",
            ),
            (
                json!([{"bus": 0, "devices": [function(3, 0, "a"), function(3, 0, "b")]}]),
                "listed twice",
            ),
        ] {
            let error = SlotMap::from_query_pci(&reply).unwrap_err();
            assert!(matches!(error, Error::PciData(_)), "{error:?}");
            assert!(error.to_string().contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn the_table_names_every_slot() {
        let mut reply = empty_pc();
        reply[0]["devices"].as_array_mut().unwrap().push(function(5, 0, "nic-a-pci-5"));
        let table = SlotMap::from_query_pci(&reply).unwrap().to_string();
        assert!(table.contains("05.0  used      nic-a-pci-5"), "{table}");
        assert!(table.contains("01.1  used      -"), "{table}");
        assert!(table.contains("02    free"), "{table}");
        assert!(table.contains("00    reserved") || table.contains("00.0  used"), "{table}");
    }
}
