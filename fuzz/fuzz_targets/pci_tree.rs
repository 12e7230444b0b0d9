//! Arbitrary PCI trees through `PciTree`, its free places, its view and the bus device ids:
//! no panic, no unbounded walk (bridge chains past 256 buses, QOM cycles), a place handed
//! out is empty and allowed, and every id made for it parses back to it.
//!
//! The first byte picks the input: even, the rest is JSON (a `TopologyInput`, or a bare
//! `query-pci` reply); odd, the rest drives a generator of query-pci-shaped trees, which
//! raw mutation would rarely get past serde.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{
    BusKind, DeviceId, DeviceKind, MAX_BUSES, PciTree, Peripheral, Preferences, TopologyInput,
};
use serde_json::{Value, json};

const MACHINES: [Option<&str>; 6] = [
    Some("pc-i440fx-7.2-machine"),
    Some("pc-q35-7.2-machine"),
    Some("pc"),
    Some("q35"),
    Some("microvm-machine"),
    None,
];
const IDS: [&str; 14] = [
    "", "b0", "b1", "b2", "b3", "rp1", "rp-2", "d0", "d1", "d2", "pci.0", "pcie.0", "pci", "x.y-z",
];
const TYPES: [&str; 8] = [
    "pci-bridge",
    "pcie-root-port",
    "pcie-pci-bridge",
    "ioh3420",
    "virtio-net-pci",
    "xio3130-downstream",
    "scsi-hd",
    "e1000",
];
const PCI_IDS: [(u16, u16); 6] = [
    (0x1b36, 0x0001),
    (0x1b36, 0x000c),
    (0x1b36, 0x000e),
    (0x8086, 0x1237),
    (0x8086, 0x29c0),
    (0x1af4, 0x1000),
];

fn pick<'a, T>(u: &mut Unstructured<'_>, items: &'a [T]) -> Result<&'a T> {
    u.choose(items)
}

fn function(u: &mut Unstructured<'_>) -> Result<Value> {
    let slot: i64 =
        if u.ratio(1, 16)? { u.int_in_range(-1..=40)? } else { u.int_in_range(0..=31)? };
    let function: i64 =
        if u.ratio(1, 16)? { u.int_in_range(0..=9)? } else { u.int_in_range(0..=7)? };
    let (vendor, device) = *pick(u, &PCI_IDS)?;
    let mut value = json!({"slot": slot, "function": function, "qdev_id": pick(u, &IDS)?,
                           "class_info": {"class": 0x0604}, "id": {"vendor": vendor, "device": device}});
    if u.ratio(1, 8)? {
        value["id"]["vendor"] = json!(u.int_in_range(-1..=70_000)?);
    }
    Ok(value)
}

/// A tree of `nodes` buses, each a bridge on an earlier one, built bottom-up so that even
/// a chain deeper than `MAX_BUSES` costs no recursion here.
fn query_pci(u: &mut Unstructured<'_>) -> Result<Value> {
    let nodes: usize =
        if u.ratio(1, 32)? { u.int_in_range(0..=MAX_BUSES + 8)? } else { u.int_in_range(0..=8)? };
    let chain = u.ratio(1, 2)?;
    let parents: Vec<usize> = (1..=nodes)
        .map(|index| if chain { Ok(index - 1) } else { u.int_in_range(0..=index - 1) })
        .collect::<Result<_>>()?;
    let mut devices: Vec<Vec<Value>> = (0..=nodes).map(|_| Vec::new()).collect();
    for list in &mut devices {
        for _ in 0..u.int_in_range(0..=4)? {
            list.push(function(u)?);
        }
    }
    for index in (1..=nodes).rev() {
        let mut bridge = function(u)?;
        let mut info =
            json!({"bus": {"number": 0, "secondary": u.int_in_range(-1..=300)?, "subordinate": 0}});
        if !u.ratio(1, 4)? {
            info["devices"] = Value::Array(std::mem::take(&mut devices[index]));
        }
        bridge["pci_bridge"] = info;
        devices[parents[index - 1]].push(bridge);
    }
    let mut root = json!({"bus": if u.ratio(1, 16)? { u.int_in_range(-1..=300)? } else { 0 }});
    if !u.ratio(1, 16)? {
        root["devices"] = Value::Array(std::mem::take(&mut devices[0]));
    }
    let mut roots = vec![root];
    if u.ratio(1, 16)? {
        roots.push(json!({"bus": 1, "devices": [function(u)?]}));
    }
    Ok(Value::Array(roots))
}

fn peripheral(u: &mut Unstructured<'_>) -> Result<Peripheral> {
    let id = *pick(u, &IDS[1..])?;
    let mut peripheral = Peripheral::new(id, *pick(u, &TYPES)?);
    let bus = *pick(u, &IDS[1..])?;
    peripheral.parent_bus = match u.int_in_range(0..=4)? {
        0 => None,
        1 => Some("/machine/i440fx/pci.0".into()),
        2 => Some("/machine/q35/pcie.0".into()),
        _ => Some(format!("/machine/peripheral/{bus}/{bus}")),
    };
    peripheral.addr = if u.ratio(1, 8)? { None } else { Some(u.int_in_range(-2..=300)?) };
    peripheral.hotplug = if u.ratio(1, 4)? { None } else { Some(u.arbitrary()?) };
    Ok(peripheral)
}

fn generated(u: &mut Unstructured<'_>) -> Result<TopologyInput> {
    let machine_type = pick(u, &MACHINES)?.map(ToOwned::to_owned);
    let query_pci = query_pci(u)?;
    let count = u.int_in_range(0..=12)?;
    let peripherals = (0..count).map(|_| peripheral(u)).collect::<Result<_>>()?;
    Ok(TopologyInput { machine_type, query_pci, peripherals })
}

fn check(tree: &PciTree, preferences: &Preferences) {
    let buses = tree.buses();
    assert!(buses.len() <= MAX_BUSES);
    for (index, bus) in buses.iter().enumerate() {
        if let Some(parent) = bus.parent {
            assert!(parent.bus < index, "a bus comes after its parent in tree order");
            assert_eq!(bus.depth, buses[parent.bus].depth + 1);
            let bridge =
                buses[parent.bus].slot(parent.slot).find(|f| f.function == parent.function);
            assert_eq!(bridge.and_then(|f| f.secondary), Some(index));
        }
        for function in &bus.functions {
            if let Some(id) = &function.qdev_id {
                if let Some(place) = tree.place_of(id) {
                    assert!(tree.has_device(id, &place));
                }
                if let Ok(parsed) = id.parse::<DeviceId>() {
                    assert_eq!(&parsed.to_string(), id);
                }
            }
        }
    }
    for kind in [DeviceKind::Nic, DeviceKind::Disk] {
        let free = tree.free_places(kind, "fz", preferences);
        let first = tree.free_place(kind, "fz", preferences);
        assert_eq!(first.as_ref().ok(), free.first());
        if let Err(none) = &first {
            assert!(free.is_empty());
            assert!(!none.to_string().is_empty() && serde_json::to_string(none).is_ok());
        }
        let mut ids = BTreeSet::new();
        for place in &free {
            let bus = tree.bus_of(&place.bus).expect("a free place is on a bus of the tree");
            assert!(!bus.is_used(place.slot), "{place} is occupied");
            assert!(bus.kind != BusKind::Q35Root, "{place} is on pcie.0");
            assert!(!(bus.kind == BusKind::PcRoot && place.slot == 0));
            if bus.kind == BusKind::RootPort {
                assert!(place.slot == 0 && bus.functions.is_empty() && bus.hotplug == Some(true));
            }
            let id = DeviceId::at(kind, "fz", place).expect("free places have valid ids");
            let text = id.to_string();
            assert_eq!(text.parse::<DeviceId>().ok().map(|id| id.place()).as_ref(), Some(place));
            assert!(!tree.has_device(&text, place));
            assert!(ids.insert(text), "two places share an id");
        }
    }
    let view = tree.view(preferences);
    assert_eq!(view.buses.len(), buses.len());
    let _ = view.to_string();
    let _ = serde_json::to_string(&view);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(id) = text.parse::<DeviceId>() {
            assert_eq!(id.to_string(), text);
        }
    }
    let input = if mode & 1 == 0 {
        match serde_json::from_slice::<TopologyInput>(rest) {
            Ok(input) => input,
            Err(_) => match serde_json::from_slice::<Value>(rest) {
                Ok(query_pci) => TopologyInput {
                    machine_type: Some(if mode & 2 == 0 { "pc" } else { "q35" }.into()),
                    query_pci,
                    peripherals: Vec::new(),
                },
                Err(_) => return,
            },
        }
    } else {
        match generated(&mut Unstructured::new(rest)) {
            Ok(input) => input,
            Err(_) => return,
        }
    };
    let Ok(tree) = PciTree::new(&input) else { return };
    check(&tree, &Preferences::default());
    let reserved = Preferences::default()
        .reserve("pci.0", [mode >> 3, 1])
        .reserve("rp1", [0])
        .reserve("b0", [mode & 31]);
    check(&tree, &reserved);
});
