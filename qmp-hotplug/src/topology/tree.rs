//! The PCI tree: buses, what sits in their slots, and which bridge provides each bus.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::input::{Peripheral, ROOT_PORT_TYPES, RawFunction, RawRootBus, TopologyInput};
use crate::Error;
use crate::pci::{out_of_range, pci_u16, slot_and_function};

/// Most buses a tree may have: PCI bus numbers are 8 bits. Also bounds how deep bridges
/// can nest, so no input can make the walk unbounded.
pub const MAX_BUSES: usize = 256;

/// PCI ids of the bridges QEMU makes, for when a bridge's QOM type is not known.
const PCI_BRIDGE_IDS: (u16, u16) = (0x1b36, 0x0001);
const PCIE_ROOT_PORT_IDS: (u16, u16) = (0x1b36, 0x000c);
const PCIE_PCI_BRIDGE_IDS: (u16, u16) = (0x1b36, 0x000e);
const IOH3420_IDS: (u16, u16) = (0x8086, 0x3420);
/// Host bridges at bus 0 slot 0, for when the machine type is not known.
const I440FX_IDS: (u16, u16) = (0x8086, 0x1237);
const Q35_MCH_IDS: (u16, u16) = (0x8086, 0x29c0);

/// The machine's chipset, which decides where hotplug is possible.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MachineKind {
    /// `pc` (`pc-i440fx-*`): hotplug on bus 0 `pci.0` and on bridges.
    Pc,
    /// `q35` (`pc-q35-*`): hotplug into root ports and bridges, never on `pcie.0`.
    Q35,
    /// Another machine type, by name; nothing is planned on it.
    Other(String),
    /// No machine type given, and the host bridge does not tell.
    Unknown,
}

impl MachineKind {
    /// The kind of a machine type as QEMU names it: `pc-q35-7.2-machine` (from `qom-get
    /// /machine type`), `pc-q35-7.2`, or an alias such as `q35` and `pc`.
    pub fn from_type(machine_type: &str) -> Self {
        let name = machine_type.strip_suffix("-machine").unwrap_or(machine_type);
        if name == "pc" || name.starts_with("pc-i440fx-") {
            Self::Pc
        } else if name == "q35" || name.starts_with("pc-q35-") {
            Self::Q35
        } else {
            Self::Other(machine_type.to_owned())
        }
    }

    /// The name of bus 0, as `device_add` takes it.
    fn root_bus_name(&self) -> Option<&'static str> {
        match self {
            Self::Pc => Some("pci.0"),
            Self::Q35 => Some("pcie.0"),
            Self::Other(_) | Self::Unknown => None,
        }
    }
}

impl fmt::Display for MachineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pc => f.write_str("pc"),
            Self::Q35 => f.write_str("q35"),
            Self::Other(name) => f.write_str(name),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for MachineKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a bus is, which decides how devices can be hot-plugged onto it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BusKind {
    /// `pc`'s bus 0, `pci.0`.
    PcRoot,
    /// `q35`'s root complex, `pcie.0`.
    Q35Root,
    /// Any other root bus: bus 0 of an unknown machine, or an expander's root bus.
    OtherRoot,
    /// Behind a `pci-bridge`: 32 slots.
    PciBridge,
    /// Behind a `pcie-pci-bridge`: 32 conventional PCI slots.
    PciePciBridge,
    /// Behind a `pcie-root-port` (or `ioh3420`): one device, at slot 0.
    RootPort,
    /// Behind another kind of bridge (its QOM type, or its PCI ids as `vvvv:dddd`).
    OtherBridge(String),
}

impl BusKind {
    /// A bridge's kind from its QOM type, or from its PCI ids when the type is unknown.
    fn of_bridge(qom_type: Option<&str>, ids: Option<(u16, u16)>) -> Self {
        match qom_type {
            Some("pci-bridge") => Self::PciBridge,
            Some("pcie-pci-bridge") => Self::PciePciBridge,
            Some(root_port) if ROOT_PORT_TYPES.contains(&root_port) => Self::RootPort,
            Some(other) => Self::OtherBridge(other.to_owned()),
            None => match ids {
                Some(PCI_BRIDGE_IDS) => Self::PciBridge,
                Some(PCIE_PCI_BRIDGE_IDS) => Self::PciePciBridge,
                Some(PCIE_ROOT_PORT_IDS | IOH3420_IDS) => Self::RootPort,
                Some((vendor, device)) => Self::OtherBridge(format!("{vendor:04x}:{device:04x}")),
                None => Self::OtherBridge("unknown bridge".into()),
            },
        }
    }

    /// The QOM types whose peripherals provide a bus of their own.
    fn provides_bus(qom_type: &str) -> bool {
        matches!(qom_type, "pci-bridge" | "pcie-pci-bridge") || ROOT_PORT_TYPES.contains(&qom_type)
    }

    /// A short name: `pc root`, `pcie-root-port`, ...
    pub fn label(&self) -> &str {
        match self {
            Self::PcRoot => "pc root bus",
            Self::Q35Root => "q35 root complex",
            Self::OtherRoot => "root bus",
            Self::PciBridge => "pci-bridge",
            Self::PciePciBridge => "pcie-pci-bridge",
            Self::RootPort => "pcie-root-port",
            Self::OtherBridge(what) => what,
        }
    }
}

/// Where the bridge that provides a bus sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BusParent {
    /// The index of the bus it is on, in [`PciTree::buses`].
    pub bus: usize,
    /// Its slot there.
    pub slot: u8,
    /// Its function there.
    pub function: u8,
}

/// One PCI function in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFunction {
    /// Slot, `0..32`.
    pub slot: u8,
    /// Function, `0..8`.
    pub function: u8,
    /// PCI vendor id (`None` when only QOM reported the device).
    pub vendor: Option<u16>,
    /// PCI device id.
    pub device: Option<u16>,
    /// PCI class code.
    pub class: Option<u16>,
    /// QEMU's description of the class.
    pub description: Option<String>,
    /// The qdev id; `None` for devices made without one.
    pub qdev_id: Option<String>,
    /// The QOM type, when the device is a peripheral.
    pub qom_type: Option<String>,
    /// For a bridge: the index of its secondary bus in [`PciTree::buses`].
    pub secondary: Option<usize>,
}

impl TreeFunction {
    /// What to call the device: its QOM type, else QEMU's class description, else its ids.
    pub fn what(&self) -> String {
        if let Some(qom_type) = &self.qom_type {
            return qom_type.clone();
        }
        if let Some(description) = &self.description {
            return description.clone();
        }
        match (self.vendor, self.device) {
            (Some(vendor), Some(device)) => format!("{vendor:04x}:{device:04x}"),
            _ => "unknown device".into(),
        }
    }
}

/// One PCI bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    /// The name `device_add`'s `bus` takes: `pci.0`, `pcie.0`, or the id of the bridge
    /// that provides the bus; `None` when it has none that is known.
    pub name: Option<String>,
    /// Its bus number, once the firmware or the guest gave it one.
    pub number: Option<u8>,
    /// What it is.
    pub kind: BusKind,
    /// The bridge providing it; `None` for a root bus.
    pub parent: Option<BusParent>,
    /// Bridges between it and its root bus.
    pub depth: usize,
    /// A root port's `hotplug` property, when read (`false` when started with
    /// `hotplug=off`).
    pub hotplug: Option<bool>,
    /// `query-pci` listed its devices (else they come from QOM only).
    pub listed: bool,
    /// Its contents are known: listed, or every peripheral's placement was given.
    pub contents_known: bool,
    /// Another bus has the same name, so `device_add` might not pick this one.
    pub name_clash: bool,
    /// Its functions, by slot, then function.
    pub functions: Vec<TreeFunction>,
}

impl Bus {
    fn new(kind: BusKind, parent: Option<BusParent>) -> Self {
        Self {
            name: None,
            number: None,
            kind,
            parent,
            depth: 0,
            hotplug: None,
            listed: false,
            contents_known: false,
            name_clash: false,
            functions: Vec::new(),
        }
    }

    /// The functions in `slot`.
    pub fn slot(&self, slot: u8) -> impl Iterator<Item = &TreeFunction> {
        self.functions.iter().filter(move |function| function.slot == slot)
    }

    /// `true` if any function uses `slot`.
    pub fn is_used(&self, slot: u8) -> bool {
        self.slot(slot).next().is_some()
    }

    /// Its name, else its number, else where its bridge sits.
    pub fn label(&self) -> String {
        match (&self.name, self.number) {
            (Some(name), _) => name.clone(),
            (None, Some(number)) => format!("bus {number}"),
            (None, None) => "an unnamed bus".into(),
        }
    }

    fn add(&mut self, function: TreeFunction) -> Result<(), Error> {
        if self.functions.iter().any(|f| (f.slot, f.function) == (function.slot, function.function))
        {
            return Err(Error::PciData(format!(
                "{} slot {} function {} is listed twice",
                self.label(),
                function.slot,
                function.function
            )));
        }
        self.functions.push(function);
        Ok(())
    }
}

/// The whole PCI tree of a `pc` or `q35` machine, and where a device can be hot-plugged.
///
/// [`PciTree::new`] builds the tree from a [`TopologyInput`]: `query-pci` (every bus QEMU
/// can walk, devices per slot and function, bridges and their secondary buses), the machine
/// type (`qom-get /machine type`), and the peripherals of `/machine/peripheral` with their
/// QOM type, `parent_bus` and `addr`. The QOM half matters: before the firmware has given
/// the bridges their bus numbers (a VM still paused by `-S`, or just reset), `query-pci`
/// lists nothing behind a bridge or root port, and only QOM tells that a root port is taken.
///
/// Where devices go ([`PciTree::free_place`]), on QEMU 7.2 as measured with the project's
/// test guest (`qmp-hotplug/tests/data/README.md`):
///
/// * `pc`: bus 0 (`pci.0`), slots 1 to 31 (slot 0 is the host bridge);
/// * every `pci-bridge` and `pcie-pci-bridge`: slots 0 to 31 (slot 0 works: the guest sees
///   and releases a device there);
/// * `q35`: every empty `pcie-root-port` (or `ioh3420`) whose `hotplug` property QOM
///   reports on, one device at `addr` 0. QEMU accepts a device at another address of a root port, or in a root port
///   that is taken, but the guest never sees it and it cannot be unplugged; the tree never
///   offers such a place, and a root port with anything on its bus is taken;
/// * never `pcie.0`, q35's root complex (QEMU: `Bus 'pcie.0' does not support
///   hotplugging`), nor a bridge without an id (`device_add` cannot name its bus).
///
/// The order is fixed so that retries pick the same place: pc bus 0 first, then the root
/// ports, then the bridges, each group in tree order (depth first, by slot and function of
/// the bridge), slots lowest first. Root ports come before bridges on q35 because a device
/// in a root port is a PCI Express device; behind a `pcie-pci-bridge` it is conventional PCI.
///
/// # Sizing a root-port pool
///
/// Root ports cannot be hot-added (QEMU refuses with the same `pcie.0` error), so a `q35` VM
/// must start with all the empty ports it will ever hot-plug into; libvirt and Kata start
/// q35 guests with such a pool. Count the most devices the VM holds at once beyond those it
/// boots with, plus one per device whose unplug may be pending (a port stays taken until
/// `DEVICE_DELETED`). Eight ports fit in one `pcie.0` slot as functions
/// (`addr=0xN.0x0,multifunction=on`, then `addr=0xN.0x1` ... `0xN.0x7`). Each port takes one
/// of the 256 PCI bus numbers and its own memory windows; per QEMU's `docs/pcie.txt`, I/O
/// space allows about 10 ports when the devices need I/O ports (modern virtio does not).
/// When no place is left, [`NoFreePlace`](crate::NoFreePlace) lists what was checked and what to add at start.
///
/// ```
/// use qmp_hotplug::{DeviceId, DeviceKind, Peripheral, PciTree, Preferences, TopologyInput};
/// use serde_json::json;
/// let port = |id: &str, slot: u8| json!({"bus": 0, "slot": slot, "function": 0,
///     "qdev_id": id, "class_info": {"class": 1540}, "id": {"vendor": 6966, "device": 12},
///     "pci_bridge": {"bus": {"number": 0, "secondary": 0, "subordinate": 0}}});
/// let input = TopologyInput {
///     machine_type: Some("pc-q35-7.2-machine".into()),
///     query_pci: json!([{"bus": 0, "devices": [port("rp1", 2), port("rp2", 3)]}]),
///     peripherals: vec![
///         Peripheral::placed("rp1", "pcie-root-port", "/machine/q35/pcie.0", 0x10).with_hotplug(true),
///         Peripheral::placed("rp2", "pcie-root-port", "/machine/q35/pcie.0", 0x18).with_hotplug(true),
///         // Paused by -S: query-pci shows nothing behind rp1, QOM does.
///         Peripheral::placed("nic0", "virtio-net-pci", "/machine/peripheral/rp1/rp1", 0),
///     ],
/// };
/// let tree = PciTree::new(&input)?;
/// let place = tree.free_place(DeviceKind::Nic, "web1", &Preferences::default())?;
/// assert_eq!((place.bus.device_add_name(), place.addr()), ("rp2", "0x0".to_owned()));
/// assert_eq!(DeviceId::at(DeviceKind::Nic, "web1", &place)?.to_string(), "nic-web1-rp2-0");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Buses are in tree order: each root bus, then depth first, the bus behind each bridge in
/// the order of the bridge's slot and function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciTree {
    machine: MachineKind,
    machine_type: Option<String>,
    buses: Vec<Bus>,
}

impl PciTree {
    /// Builds the tree.
    ///
    /// # Errors
    /// [`Error::PciData`] when `query-pci` does not have its shape, lists a slot, function,
    /// bus number or id out of range, the same function twice, or more than
    /// [`MAX_BUSES`] buses; or when a peripheral's `addr` is out of range, or QOM and
    /// `query-pci` put a device in different places.
    pub fn new(input: &TopologyInput) -> Result<Self, Error> {
        let mut buses = parse_query_pci(&input.query_pci, &input.peripherals)?;
        let machine = match &input.machine_type {
            Some(machine_type) => MachineKind::from_type(machine_type),
            None => machine_from_host_bridge(&buses),
        };
        if let (Some(root), Some(name)) = (
            buses.iter_mut().find(|bus| bus.parent.is_none() && bus.number == Some(0)),
            machine.root_bus_name(),
        ) {
            root.name = Some(name.to_owned());
            root.kind = if machine == MachineKind::Pc { BusKind::PcRoot } else { BusKind::Q35Root };
        }
        merge_qom(&mut buses, &input.peripherals)?;
        let mut buses = in_tree_order(buses);
        mark_name_clashes(&mut buses);
        mark_known_contents(&mut buses, &input.peripherals);
        Ok(Self { machine, machine_type: input.machine_type.clone(), buses })
    }

    /// The tree of a running machine of `machine_type` (e.g. `pc`, `q35`) from `query-pci`
    /// alone: enough where the firmware has numbered every bus and no root port was
    /// started with `hotplug=off` (root ports count as taking hotplug), e.g. to plan
    /// without QEMU.
    ///
    /// # Errors
    /// As [`PciTree::new`].
    pub fn from_query_pci(machine_type: &str, query_pci: &Value) -> Result<Self, Error> {
        let mut tree = Self::new(&TopologyInput {
            machine_type: Some(machine_type.to_owned()),
            query_pci: query_pci.clone(),
            peripherals: Vec::new(),
        })?;
        for bus in &mut tree.buses {
            if bus.kind == BusKind::RootPort && bus.hotplug.is_none() {
                bus.hotplug = Some(true);
            }
        }
        Ok(tree)
    }

    /// The machine's kind.
    pub fn machine(&self) -> &MachineKind {
        &self.machine
    }

    /// The machine type as given.
    pub fn machine_type(&self) -> Option<&str> {
        self.machine_type.as_deref()
    }

    /// Every bus, in tree order.
    pub fn buses(&self) -> &[Bus] {
        &self.buses
    }

    /// The index of the first bus named `name` in tree order (a root bus comes before the
    /// bridges, as in QEMU's search for `device_add`'s `bus`).
    pub fn bus_index(&self, name: &str) -> Option<usize> {
        self.buses.iter().position(|bus| bus.name.as_deref() == Some(name))
    }
}

fn check_count(buses: &[Bus]) -> Result<(), Error> {
    if buses.len() >= MAX_BUSES {
        return Err(Error::PciData(format!("more than {MAX_BUSES} PCI buses")));
    }
    Ok(())
}

/// Walks `query-pci` with a work list instead of recursion, so nesting depth costs heap, and
/// [`MAX_BUSES`] bounds it.
fn parse_query_pci(reply: &Value, peripherals: &[Peripheral]) -> Result<Vec<Bus>, Error> {
    let not_query_pci = |why: String| Error::PciData(format!("not a query-pci reply: {why}"));
    let roots = reply.as_array().ok_or_else(|| not_query_pci("not a list".into()))?;
    let peripheral_by_id: HashMap<&str, &Peripheral> =
        peripherals.iter().rev().map(|p| (p.id.as_str(), p)).collect();
    let mut buses: Vec<Bus> = Vec::new();
    let mut work: Vec<(usize, &Value)> = Vec::new();
    for root in roots {
        check_count(&buses)?;
        let raw = RawRootBus::deserialize(root).map_err(|e| not_query_pci(e.to_string()))?;
        let mut bus = Bus::new(BusKind::OtherRoot, None);
        bus.number = Some(u8::try_from(raw.bus).map_err(|_| out_of_range("bus", raw.bus))?);
        if let Some(devices) = root.get("devices") {
            bus.listed = true;
            work.push((buses.len(), devices));
        }
        buses.push(bus);
    }
    while let Some((index, devices)) = work.pop() {
        let devices =
            devices.as_array().ok_or_else(|| not_query_pci("devices is not a list".into()))?;
        for value in devices {
            let raw = RawFunction::deserialize(value).map_err(|e| not_query_pci(e.to_string()))?;
            let mut function = tree_function(&raw)?;
            function.qom_type = function
                .qdev_id
                .as_deref()
                .and_then(|id| peripheral_by_id.get(id))
                .map(|p| p.qom_type.clone());
            if let Some(bridge) = &raw.pci_bridge {
                check_count(&buses)?;
                let ids = function.vendor.zip(function.device);
                let parent =
                    BusParent { bus: index, slot: function.slot, function: function.function };
                let mut child =
                    Bus::new(BusKind::of_bridge(function.qom_type.as_deref(), ids), Some(parent));
                child.name.clone_from(&function.qdev_id);
                child.number =
                    u8::try_from(bridge.bus.secondary).ok().filter(|number| *number != 0);
                child.hotplug = function
                    .qdev_id
                    .as_deref()
                    .and_then(|id| peripheral_by_id.get(id))
                    .and_then(|p| p.hotplug);
                if let Some(behind) = value.get("pci_bridge").and_then(|b| b.get("devices")) {
                    child.listed = true;
                    work.push((buses.len(), behind));
                }
                function.secondary = Some(buses.len());
                buses.push(child);
            }
            buses[index].add(function)?;
        }
    }
    Ok(buses)
}

fn tree_function(raw: &RawFunction) -> Result<TreeFunction, Error> {
    let (slot, function) = slot_and_function(raw.slot, raw.function)?;
    let (class, description) = match &raw.class_info {
        Some(info) => (Some(pci_u16("class", info.class)?), info.desc.clone()),
        None => (None, None),
    };
    let (vendor, device) = match &raw.id {
        Some(ids) => {
            (Some(pci_u16("vendor id", ids.vendor)?), Some(pci_u16("device id", ids.device)?))
        }
        None => (None, None),
    };
    Ok(TreeFunction {
        slot,
        function,
        vendor,
        device,
        class,
        description,
        qdev_id: raw.qdev_id.clone().filter(|id| !id.is_empty()),
        qom_type: None,
        secondary: None,
    })
}

fn machine_from_host_bridge(buses: &[Bus]) -> MachineKind {
    let host_bridge = buses
        .iter()
        .find(|bus| bus.parent.is_none() && bus.number == Some(0))
        .and_then(|bus| bus.functions.iter().find(|f| (f.slot, f.function) == (0, 0)))
        .and_then(|f| f.vendor.zip(f.device));
    match host_bridge {
        Some(I440FX_IDS) => MachineKind::Pc,
        Some(Q35_MCH_IDS) => MachineKind::Q35,
        _ => MachineKind::Unknown,
    }
}

/// Adds the peripherals `query-pci` did not list (everything behind a bridge before the
/// firmware ran) from their QOM `parent_bus` and `addr`, bus by bus from the root, so a
/// peripheral on a bus that no chain of bridges reaches (a cycle, or not a PCI bus of
/// this tree) is never placed.
fn merge_qom(buses: &mut Vec<Bus>, peripherals: &[Peripheral]) -> Result<(), Error> {
    let mut listed_at: HashMap<String, (usize, u8, u8)> = HashMap::new();
    for (index, bus) in buses.iter().enumerate() {
        for function in &bus.functions {
            if let Some(id) = &function.qdev_id {
                listed_at.entry(id.clone()).or_insert((index, function.slot, function.function));
            }
        }
    }
    let mut waiting: HashMap<&str, Vec<&Peripheral>> = HashMap::new();
    for peripheral in peripherals {
        if let (Some(bus), Some(_)) = (peripheral.bus_name(), peripheral.addr) {
            waiting.entry(bus).or_default().push(peripheral);
        }
    }
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (index, bus) in buses.iter().enumerate() {
        if let Some(name) = &bus.name {
            by_name.entry(name.clone()).or_insert(index);
            queue.push_back(index);
        }
    }
    while let Some(index) = queue.pop_front() {
        let Some(name) = buses[index].name.clone() else { continue };
        if by_name.get(&name) != Some(&index) {
            continue;
        }
        for peripheral in waiting.remove(name.as_str()).unwrap_or_default() {
            let addr = peripheral.addr.unwrap_or_default();
            let devfn = u8::try_from(addr).map_err(|_| {
                Error::PciData(format!("QOM addr {addr} of '{}' is out of range", peripheral.id))
            })?;
            let (slot, function) = (devfn >> 3, devfn & 7);
            if let Some(&(at, at_slot, at_function)) = listed_at.get(&peripheral.id) {
                if (at, at_slot, at_function) != (index, slot, function) {
                    return Err(Error::PciData(format!(
                        "query-pci and QOM disagree about where '{}' is",
                        peripheral.id
                    )));
                }
                continue;
            }
            if let Some(other) =
                buses[index].functions.iter().find(|f| (f.slot, f.function) == (slot, function))
            {
                return Err(Error::PciData(format!(
                    "QOM puts '{}' at {name} {slot:02x}.{function}, where query-pci lists {}",
                    peripheral.id,
                    other.qdev_id.as_deref().unwrap_or("a device without id")
                )));
            }
            let mut added = TreeFunction {
                slot,
                function,
                vendor: None,
                device: None,
                class: None,
                description: None,
                qdev_id: Some(peripheral.id.clone()),
                qom_type: Some(peripheral.qom_type.clone()),
                secondary: None,
            };
            listed_at.insert(peripheral.id.clone(), (index, slot, function));
            // A bridge's bus is named after its id; devices on such a bus show that the
            // peripheral is a bridge even when its type is not one we plan onto.
            let has_a_bus = BusKind::provides_bus(&peripheral.qom_type)
                || waiting.contains_key(peripheral.id.as_str());
            if has_a_bus {
                check_count(buses)?;
                let parent = BusParent { bus: index, slot, function };
                let mut child =
                    Bus::new(BusKind::of_bridge(Some(&peripheral.qom_type), None), Some(parent));
                child.name = Some(peripheral.id.clone());
                child.hotplug = peripheral.hotplug;
                added.secondary = Some(buses.len());
                by_name.entry(peripheral.id.clone()).or_insert(buses.len());
                queue.push_back(buses.len());
                buses.push(child);
            }
            buses[index].functions.push(added);
        }
    }
    Ok(())
}

/// Reorders the buses depth first from each root, children by their bridge's slot and
/// function, and sorts every bus's functions.
fn in_tree_order(mut arena: Vec<Bus>) -> Vec<Bus> {
    for bus in &mut arena {
        bus.functions.sort_by_key(|f| (f.slot, f.function));
    }
    let mut order: Vec<usize> = Vec::with_capacity(arena.len());
    let mut depth: Vec<usize> = vec![0; arena.len()];
    let mut stack: Vec<usize> =
        (0..arena.len()).filter(|&index| arena[index].parent.is_none()).rev().collect();
    while let Some(index) = stack.pop() {
        order.push(index);
        let children: Vec<usize> =
            arena[index].functions.iter().filter_map(|f| f.secondary).collect();
        for &child in children.iter().rev() {
            depth[child] = depth[index] + 1;
            stack.push(child);
        }
    }
    let mut new_index = vec![0; arena.len()];
    for (position, &old) in order.iter().enumerate() {
        new_index[old] = position;
    }
    let mut placed: Vec<(usize, Bus)> = arena
        .into_iter()
        .enumerate()
        .map(|(old, mut bus)| {
            bus.depth = depth[old];
            if let Some(parent) = &mut bus.parent {
                parent.bus = new_index[parent.bus];
            }
            for function in &mut bus.functions {
                if let Some(secondary) = &mut function.secondary {
                    *secondary = new_index[*secondary];
                }
            }
            (new_index[old], bus)
        })
        .collect();
    placed.sort_by_key(|(position, _)| *position);
    placed.into_iter().map(|(_, bus)| bus).collect()
}

/// A bridge whose name another bus also has cannot be named reliably in `device_add` (QEMU
/// searches from the root, so a root bus keeps its name).
fn mark_name_clashes(buses: &mut [Bus]) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for name in buses.iter().filter_map(|bus| bus.name.clone()) {
        *count.entry(name).or_default() += 1;
    }
    for bus in buses.iter_mut().filter(|bus| bus.parent.is_some()) {
        bus.name_clash = bus.name.as_ref().is_some_and(|name| count[name] > 1);
    }
}

/// A bus `query-pci` did not list is known only when QOM placed every peripheral:
/// each has a `parent_bus`, and each on this bus an `addr`.
fn mark_known_contents(buses: &mut [Bus], peripherals: &[Peripheral]) {
    let every_one_placed = peripherals.iter().all(|p| p.parent_bus.is_some());
    for bus in buses {
        let addr_missing = peripherals
            .iter()
            .any(|p| p.addr.is_none() && bus.name.is_some() && p.bus_name() == bus.name.as_deref());
        bus.contents_known = bus.listed || (every_one_placed && !addr_missing);
    }
}
