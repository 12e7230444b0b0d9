//! The tree and its places over QEMU 7.2's own replies (`tests/data`), and properties over
//! generated machines.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::ids::{DeviceId, DeviceKind};

/// The captures of `tests/data` (see its README for the command lines).
const CAPTURES: [(&str, &str); 12] = [
    ("pc-empty-prelaunch", include_str!("../../tests/data/pc-empty-prelaunch.json")),
    ("pc-empty-running", include_str!("../../tests/data/pc-empty-running.json")),
    ("pc-bridge-prelaunch", include_str!("../../tests/data/pc-bridge-prelaunch.json")),
    ("pc-bridge-running", include_str!("../../tests/data/pc-bridge-running.json")),
    (
        "pc-nested-bridges-prelaunch",
        include_str!("../../tests/data/pc-nested-bridges-prelaunch.json"),
    ),
    ("pc-nested-bridges-running", include_str!("../../tests/data/pc-nested-bridges-running.json")),
    ("q35-empty-prelaunch", include_str!("../../tests/data/q35-empty-prelaunch.json")),
    ("q35-empty-running", include_str!("../../tests/data/q35-empty-running.json")),
    ("q35-root-ports-prelaunch", include_str!("../../tests/data/q35-root-ports-prelaunch.json")),
    ("q35-root-ports-running", include_str!("../../tests/data/q35-root-ports-running.json")),
    (
        "q35-pcie-pci-bridge-prelaunch",
        include_str!("../../tests/data/q35-pcie-pci-bridge-prelaunch.json"),
    ),
    (
        "q35-pcie-pci-bridge-running",
        include_str!("../../tests/data/q35-pcie-pci-bridge-running.json"),
    ),
];

/// A capture as the caller would gather it; `with_placement: false` leaves out the QOM
/// `parent_bus`/`addr`/`hotplug` replies, as a caller that only lists peripherals would.
fn input(name: &str, with_placement: bool) -> TopologyInput {
    let text = CAPTURES.iter().find(|(capture, _)| *capture == name).expect("a capture").1;
    let capture: Value = serde_json::from_str(text).unwrap();
    let mut peripherals = Peripheral::from_qom_list(&capture["qom_list_peripheral"]).unwrap();
    if with_placement {
        for peripheral in &mut peripherals {
            for property in peripheral.wanted_properties() {
                let value = &capture["qom_get"][&peripheral.id][*property];
                peripheral.set_qom_property(property, value).unwrap();
            }
        }
    }
    TopologyInput {
        machine_type: capture["machine_type"].as_str().map(ToOwned::to_owned),
        query_pci: capture["query_pci"].clone(),
        peripherals,
    }
}

pub(crate) fn tree(name: &str) -> PciTree {
    PciTree::new(&input(name, true)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn places(tree: &PciTree, preferences: &Preferences) -> Vec<String> {
    tree.free_places(DeviceKind::Nic, "web1", preferences)
        .iter()
        .map(|place| format!("{}:{}", place.bus, place.slot))
        .collect()
}

fn on(bus: &str, slots: impl IntoIterator<Item = u8>) -> Vec<String> {
    slots.into_iter().map(|slot| format!("{bus}:{slot}")).collect()
}

fn except(range: std::ops::RangeInclusive<u8>, taken: &[u8]) -> Vec<u8> {
    range.filter(|slot| !taken.contains(slot)).collect()
}

#[test]
fn every_capture_gives_its_exact_free_places() {
    let none = Preferences::default();
    for state in ["prelaunch", "running"] {
        let name = |scenario: &str| format!("{scenario}-{state}");
        assert_eq!(places(&tree(&name("pc-empty")), &none), on("pci.0", 2..=31), "{state}");
        let bridge = [on("pci.0", except(2..=31, &[5])), on("br1", 0..=31)].concat();
        assert_eq!(places(&tree(&name("pc-bridge")), &none), bridge, "{state}");
        let nested = [
            on("pci.0", except(2..=31, &[5])),
            on("br1", except(0..=31, &[3, 4])),
            on("br2", 1..=31),
        ]
        .concat();
        assert_eq!(places(&tree(&name("pc-nested-bridges")), &none), nested, "{state}");
        assert_eq!(places(&tree(&name("q35-empty")), &none), Vec::<String>::new(), "{state}");
        let ports = [on("rp1", [0]), on("rp2", [0]), on("rp4", [0])].concat();
        assert_eq!(places(&tree(&name("q35-root-ports")), &none), ports, "{state}");
        let behind = [on("rp1", [0]), on("pb1", except(0..=31, &[1]))].concat();
        assert_eq!(places(&tree(&name("q35-pcie-pci-bridge")), &none), behind, "{state}");
    }
}

#[test]
fn machines_and_buses_are_recognised() {
    let pc = tree("pc-nested-bridges-running");
    assert_eq!(pc.machine(), &MachineKind::Pc);
    let summary: Vec<(String, Option<u8>, BusKind, usize)> =
        pc.buses().iter().map(|b| (b.label(), b.number, b.kind.clone(), b.depth)).collect();
    assert_eq!(
        summary,
        [
            ("pci.0".into(), Some(0), BusKind::PcRoot, 0),
            ("br1".into(), Some(1), BusKind::PciBridge, 1),
            ("br2".into(), Some(2), BusKind::PciBridge, 2)
        ]
    );
    let br2 = &pc.buses()[2];
    assert_eq!(br2.parent, Some(BusParent { bus: 1, slot: 4, function: 0 }));
    assert_eq!(br2.functions[0].qdev_id.as_deref(), Some("nic1"));
    assert_eq!(br2.functions[0].vendor, Some(0x1af4));
    // Prelaunch: the same tree, bus numbers unknown, devices behind bridges from QOM.
    let early = tree("pc-nested-bridges-prelaunch");
    assert!(early.buses().iter().skip(1).all(|b| b.number.is_none() && !b.listed));
    assert_eq!(early.buses()[2].functions[0].qom_type.as_deref(), Some("virtio-net-pci"));
    assert_eq!(early.buses()[2].functions[0].vendor, None);

    let q35 = tree("q35-root-ports-running");
    assert_eq!(q35.machine(), &MachineKind::Q35);
    assert_eq!(q35.buses()[0].name.as_deref(), Some("pcie.0"));
    let ports: Vec<(String, Option<bool>)> =
        q35.buses().iter().skip(1).map(|b| (b.label(), b.hotplug)).collect();
    let expected = [("rp1", true), ("rp2", true), ("rp3", true), ("rp4", true), ("rp5", false)];
    assert_eq!(ports, expected.map(|(name, hotplug)| (name.to_owned(), Some(hotplug))));
    assert!(q35.buses().iter().skip(1).all(|b| b.kind == BusKind::RootPort));
    // Multi-function: rp2, rp3 and rp4 are functions 0-2 of pcie.0 slot 3.
    let slot3: Vec<u8> = q35.buses()[0].slot(3).map(|f| f.function).collect();
    assert_eq!(slot3, [0, 1, 2]);
}

#[test]
fn without_qom_types_the_pci_ids_tell_the_bridges_and_the_host_bridge_the_machine() {
    for (name, kinds) in [
        (
            "q35-pcie-pci-bridge-running",
            vec![BusKind::Q35Root, BusKind::RootPort, BusKind::RootPort, BusKind::PciePciBridge],
        ),
        ("pc-bridge-running", vec![BusKind::PcRoot, BusKind::PciBridge]),
    ] {
        let mut bare = input(name, false);
        bare.machine_type = None;
        bare.peripherals.clear();
        let tree = PciTree::new(&bare).unwrap();
        assert_eq!(
            tree.buses().iter().map(|b| b.kind.clone()).collect::<Vec<_>>(),
            kinds,
            "{name}"
        );
        // Root ports need QOM's hotplug property, bridges do not.
        let with_types = PciTree::new(&input(name, true)).unwrap();
        let none = Preferences::default();
        let mut expected = places(&with_types, &none);
        expected.retain(|place| !place.starts_with("rp"));
        assert_eq!(places(&tree, &none), expected, "{name}");
    }
    assert_eq!(MachineKind::from_type("pc-q35-2.12-machine"), MachineKind::Q35);
    assert_eq!(MachineKind::from_type("pc"), MachineKind::Pc);
    assert_eq!(MachineKind::from_type("pc-i440fx-1.4"), MachineKind::Pc);
    assert_eq!(
        MachineKind::from_type("microvm-machine"),
        MachineKind::Other("microvm-machine".into())
    );
}

#[test]
fn before_the_firmware_runs_only_qom_placement_makes_buses_usable() {
    let none = Preferences::default();
    // Types only, no parent_bus/addr: nothing behind a bridge is known, so nothing there
    // is offered (rp3 holds nic0, which query-pci cannot show yet).
    let blind = PciTree::new(&input("q35-root-ports-prelaunch", false)).unwrap();
    let error = blind.free_place(DeviceKind::Nic, "web1", &none).unwrap_err();
    let (pcie0, ports) = error.checked.split_last().unwrap();
    assert_eq!(pcie0.bus, "pcie.0");
    assert!(ports.iter().all(|c| c.why == Unusable::ContentsUnknown), "{error}");
    let blind = PciTree::new(&input("pc-bridge-prelaunch", false)).unwrap();
    assert_eq!(places(&blind, &none), on("pci.0", except(2..=31, &[5])));
    // After the firmware ran, query-pci lists everything behind bridges ...
    let listed = PciTree::new(&input("pc-nested-bridges-running", false)).unwrap();
    assert_eq!(places(&listed, &none), places(&tree("pc-nested-bridges-running"), &none));
    // ... but only QOM tells a root port started with hotplug=off (rp5) from the others.
    let listed = PciTree::new(&input("q35-root-ports-running", false)).unwrap();
    let error = listed.free_place(DeviceKind::Nic, "web1", &none).unwrap_err();
    let ports: Vec<(&str, &Unusable)> =
        error.checked.iter().map(|c| (c.bus.as_str(), &c.why)).collect();
    assert_eq!(ports[0], ("rp1", &Unusable::HotplugUnknown));
    assert_eq!(ports[2], ("rp3", &Unusable::PortTaken { by: "nic0 at 00.0".into() }));
    assert_eq!(ports[4], ("rp5", &Unusable::HotplugUnknown));
}

#[test]
fn q35_without_root_ports_says_pcie_0_takes_no_hotplug_and_what_to_add() {
    let error = tree("q35-empty-running")
        .free_place(DeviceKind::Nic, "web1", &Preferences::default())
        .unwrap_err();
    assert_eq!(
        error.checked,
        [CheckedBus { bus: "pcie.0".into(), why: Unusable::RootComplex { empty_slots: 30 } }]
    );
    let text = error.to_string();
    for expected in [
        "no free PCI place on this q35 machine",
        "pcie.0: q35's root complex takes no hotplug (QEMU: Bus 'pcie.0' does not support hotplugging), though 30 of its slots are empty",
        "pcie.0 has 30 empty slots, but q35 hot-plugs only into root ports and bridges",
        "-device pcie-root-port,id=rp9,bus=pcie.0,chassis=1,slot=9,addr=0x9",
        "libvirt and Kata start q35 guests with a pool of empty root ports",
    ] {
        assert!(text.contains(expected), "{text}\nlacks: {expected}");
    }
}

#[test]
fn a_full_root_port_pool_says_where_it_looked() {
    let preferences =
        Preferences::default().reserve("rp1", [0]).reserve("rp2", [0]).reserve("rp4", [0]);
    let error = tree("q35-root-ports-running").free_place(DeviceKind::Disk, "db", &preferences);
    let error = error.unwrap_err();
    let buses: Vec<&str> = error.checked.iter().map(|c| c.bus.as_str()).collect();
    assert_eq!(
        buses,
        ["rp1", "rp2", "rp3", "rp4", "rp5", "pcie.0"],
        "root ports first, in tree order"
    );
    let text = error.to_string();
    for expected in [
        "rp1: a root port the caller reserved",
        "rp3: a root port holding nic0 at 00.0",
        "rp5: a root port started with hotplug=off",
        "pcie.0: q35's root complex takes no hotplug (QEMU: Bus 'pcie.0' does not support hotplugging), though 27 of its slots are empty",
        "Start the VM with more empty root ports",
    ] {
        assert!(text.contains(expected), "{text}\nlacks: {expected}");
    }
    let only = Preferences::default().only(["rp3", "rp5", "nope"]);
    let error = tree("q35-root-ports-running").free_place(DeviceKind::Nic, "a", &only).unwrap_err();
    let buses: Vec<&str> = error.checked.iter().map(|c| c.bus.as_str()).collect();
    assert_eq!(buses, ["rp3", "rp5", "nope"]);
    assert_eq!(error.checked[2].why, Unusable::NoSuchBus);
    assert!(
        error.advice.starts_with(
            "This q35 machine has no bus nope; its buses are pcie.0, rp1, rp2, rp3, rp4, rp5"
        ),
        "{}",
        error.advice
    );
    assert!(error.advice.ends_with("Only the buses asked for were checked."), "{}", error.advice);
    // Only missing buses asked for: a typo, so no advice to add root ports.
    let only = Preferences::default().only(["rp9"]);
    let error = tree("q35-root-ports-running").free_place(DeviceKind::Nic, "a", &only).unwrap_err();
    assert!(
        error.advice.starts_with("This q35 machine has no bus rp9; its buses are "),
        "{}",
        error.advice
    );
    assert!(!error.advice.contains("Start the VM"), "{}", error.advice);
}

#[test]
fn a_full_pc_says_to_add_a_bridge() {
    let reserve_all = Preferences::default().reserve("pci.0", 0..32).reserve("br1", 0..32);
    let error =
        tree("pc-bridge-running").free_place(DeviceKind::Nic, "a", &reserve_all).unwrap_err();
    assert_eq!(
        error.checked,
        [
            CheckedBus { bus: "pci.0".into(), why: Unusable::Full { used: 3, reserved: 29 } },
            CheckedBus { bus: "br1".into(), why: Unusable::Full { used: 0, reserved: 32 } },
        ]
    );
    assert!(
        error.to_string().contains("-device pci-bridge,id=br2,chassis_nr=2,bus=pci.0"),
        "{error}"
    );
}

#[test]
fn preferences_pick_and_reserve() {
    let pc = tree("pc-nested-bridges-running");
    let first =
        |preferences: &Preferences| pc.free_place(DeviceKind::Nic, "a", preferences).unwrap();
    assert_eq!(first(&Preferences::default()), Place { bus: PlaceBus::PcRoot, slot: 2 });
    let reserved = Preferences::default().reserve("pci.0", [2, 3]);
    assert_eq!(first(&reserved), Place { bus: PlaceBus::PcRoot, slot: 4 });
    let behind = Preferences::default().only(["br2", "br1"]).reserve("br2", [1]);
    assert_eq!(first(&behind), Place { bus: PlaceBus::Named("br2".into()), slot: 2 });
    assert_eq!(first(&Preferences::default().only(["pci.0"])).bus, PlaceBus::PcRoot);
}

#[test]
fn ids_too_long_for_a_bus_skip_it() {
    let q35 = tree("q35-root-ports-running");
    // disk-<14>-rp1-0 is 24 characters: fits.
    let place = q35.free_place(DeviceKind::Disk, &"n".repeat(14), &Preferences::default()).unwrap();
    assert_eq!(place.bus.device_add_name(), "rp1");
    let mut input = input("pc-bridge-running", true);
    let long = "bridge-with-a-long-id";
    let text =
        serde_json::to_string(&input.query_pci).unwrap().replace("\"br1\"", &format!("\"{long}\""));
    input.query_pci = serde_json::from_str(&text).unwrap();
    input.peripherals[0].id = long.into();
    let only = Preferences::default().only([long]);
    let error =
        PciTree::new(&input).unwrap().free_place(DeviceKind::Disk, "6f2a1c3e", &only).unwrap_err();
    assert!(
        matches!(&error.checked[0].why, Unusable::BadId { reason } if reason.contains("26 characters")),
        "{error}"
    );
}

#[test]
fn devices_are_found_by_id_and_place() {
    let q35 = tree("q35-pcie-pci-bridge-prelaunch");
    let nic0 = Place { bus: PlaceBus::Named("pb1".into()), slot: 1 };
    assert_eq!(q35.place_of("nic0"), Some(nic0.clone()));
    assert!(q35.has_device("nic0", &nic0));
    assert!(!q35.has_device("nic0", &Place { slot: 2, ..nic0.clone() }));
    assert!(!q35.has_device("nic1", &nic0));
    assert_eq!(q35.place_of("pb1"), Some(Place { bus: PlaceBus::Named("rp2".into()), slot: 0 }));
    assert_eq!(q35.place_of("rp1"), Some(Place { bus: PlaceBus::Named("pcie.0".into()), slot: 2 }));
    assert_eq!(q35.place_of("nope"), None);
    let pc = tree("pc-bridge-running");
    assert_eq!(pc.place_of("br1"), Some(Place { bus: PlaceBus::PcRoot, slot: 5 }));
    assert!(pc.has_device("br1", &Place { bus: PlaceBus::Named("pci.0".into()), slot: 5 }));
}

#[test]
fn malformed_input_is_a_typed_error() {
    let bridge = |devices: Value| {
        json!([{"bus": 0, "devices": [{"slot": 5, "function": 0, "qdev_id": "br1",
        "pci_bridge": {"bus": {"number": 0, "secondary": 1, "subordinate": 1}, "devices": devices}}]}])
    };
    for (query_pci, peripherals, expected) in [
        (json!({"bus": 0}), vec![], "not a query-pci reply"),
        (json!([{"bus": 256, "devices": []}]), vec![], "bus 256"),
        (json!([{"bus": 0, "devices": {}}]), vec![], "devices is not a list"),
        (bridge(json!([{"slot": 32, "function": 0}])), vec![], "slot 32"),
        (
            bridge(json!([{"slot": 1, "function": 0}, {"slot": 1, "function": 0}])),
            vec![],
            "br1 slot 1 function 0 is listed twice",
        ),
        (
            json!([{"bus": 0, "devices": []}]),
            vec![Peripheral::placed("x", "e1000", "/machine/i440fx/pci.0", 256)],
            "QOM addr 256 of 'x'",
        ),
        (
            bridge(json!([{"slot": 1, "function": 0, "qdev_id": "x"}])),
            vec![Peripheral::placed("x", "e1000", "/machine/i440fx/pci.0", 8)],
            "disagree about where 'x' is",
        ),
        (
            json!([{"bus": 0, "devices": [{"slot": 0, "function": 0}]}]),
            vec![Peripheral::placed("x", "e1000", "/machine/i440fx/pci.0", 0)],
            "QOM puts 'x' at pci.0 00.0",
        ),
    ] {
        let input = TopologyInput { machine_type: Some("pc".into()), query_pci, peripherals };
        let error = PciTree::new(&input).unwrap_err();
        assert!(matches!(error, crate::Error::PciData(_)), "{error:?}");
        assert!(error.to_string().contains(expected), "{error} lacks {expected}");
    }
}

#[test]
fn bridge_chains_are_bounded_without_recursion() {
    // 255 bridges in a chain (256 buses with the root) is the most PCI numbering allows.
    let chain = |bridges: usize| {
        let mut devices = json!([]);
        for level in (0..bridges).rev() {
            devices = json!([{"slot": 1, "function": 0, "qdev_id": format!("b{level}"),
                "id": {"vendor": 0x1b36, "device": 1},
                "pci_bridge": {"bus": {"secondary": level + 1}, "devices": devices}}]);
        }
        TopologyInput {
            machine_type: Some("pc".into()),
            query_pci: json!([{"bus": 0, "devices": devices}]),
            peripherals: vec![],
        }
    };
    let deepest = PciTree::new(&chain(MAX_BUSES - 1)).unwrap();
    assert_eq!(deepest.buses().len(), MAX_BUSES);
    assert_eq!(deepest.buses().last().unwrap().depth, MAX_BUSES - 1);
    assert_eq!(
        deepest.free_places(DeviceKind::Nic, "a", &Preferences::default()).len(),
        30 + 254 * 31 + 32
    );
    let error = PciTree::new(&chain(MAX_BUSES)).unwrap_err();
    assert!(error.to_string().contains("more than 256 PCI buses"), "{error}");
    // A QOM cycle (each bridge behind the other) is never reached from the root.
    let cycle = TopologyInput {
        machine_type: Some("pc".into()),
        query_pci: json!([{"bus": 0, "devices": []}]),
        peripherals: vec![
            Peripheral::placed("a", "pci-bridge", "/machine/peripheral/b/b", 8),
            Peripheral::placed("b", "pci-bridge", "/machine/peripheral/a/a", 8),
        ],
    };
    assert_eq!(PciTree::new(&cycle).unwrap().buses().len(), 1);
}

#[test]
fn a_bridge_named_like_another_bus_is_not_used() {
    let input = TopologyInput {
        machine_type: Some("pc".into()),
        query_pci: json!([{"bus": 0, "devices": []}]),
        peripherals: vec![
            Peripheral::placed("pci.0", "pci-bridge", "/machine/i440fx/pci.0", 8),
            Peripheral::placed("pci", "pci-bridge", "/machine/i440fx/pci.0", 16),
        ],
    };
    let tree = PciTree::new(&input).unwrap();
    let view = tree.view(&Preferences::default());
    assert_eq!(view.buses[1].unusable, Some(Unusable::NameClash));
    assert!(view.buses[2].unusable.is_none(), "a bus named pci is fine in the tree");
    let error =
        tree.free_place(DeviceKind::Nic, "a", &Preferences::default().only(["pci"])).unwrap_err();
    assert!(
        matches!(&error.checked[0].why, Unusable::BadId { reason } if reason.contains("pc bus 0")),
        "{error}"
    );
    // Two bridges with one id (QEMU forbids it; the tree must not trust it): a device
    // behind the second cannot be named, so it has no place.
    let twins = |behind: Value| {
        json!({"slot": 6, "function": 0, "qdev_id": "tw",
        "pci_bridge": {"bus": {"secondary": 2}, "devices": behind}})
    };
    let first = twins(json!([]));
    let mut second = twins(json!([{"slot": 3, "function": 0, "qdev_id": "d0"}]));
    second["slot"] = json!(7);
    let input = TopologyInput {
        machine_type: Some("pc".into()),
        query_pci: json!([{"bus": 0, "devices": [second, first]}]),
        peripherals: vec![],
    };
    let twins = PciTree::new(&input).unwrap();
    assert_eq!(twins.place_of("d0"), None);
    assert!(!twins.has_device("d0", &Place { bus: PlaceBus::Named("tw".into()), slot: 3 }));
    // The root keeps its name: pci.0 places are bus 0's.
    assert!(
        tree.free_places(DeviceKind::Nic, "a", &Preferences::default())
            .iter()
            .all(|p| p.bus != PlaceBus::Named("pci.0".into()))
    );
}

#[test]
fn unknown_machines_get_no_places() {
    let mut other = input("pc-bridge-running", true);
    other.machine_type = Some("microvm-machine".into());
    let error = PciTree::new(&other)
        .unwrap()
        .free_place(DeviceKind::Nic, "a", &Preferences::default())
        .unwrap_err();
    assert_eq!(error.checked.len(), 2);
    assert!(
        error.to_string().contains("the machine type microvm-machine is neither pc nor q35"),
        "{error}"
    );
    assert!(error.advice.contains("pc and q35 machines only"), "{error}");
}

#[test]
fn the_view_shows_every_bus_and_serializes() {
    let view =
        tree("q35-pcie-pci-bridge-prelaunch").view(&Preferences::default().reserve("pb1", [5]));
    let text = view.to_string();
    for expected in [
        "q35 machine (pc-q35-7.2-machine)\n",
        "pcie.0  bus 0, q35 root complex: q35's root complex takes no hotplug",
        "  00.0  -           Host bridge [8086:29c0]\n",
        "  02.0  rp1         pcie-root-port [1b36:000c] -> rp1\n",
        "  rp1  pcie-root-port at pcie.0 02.0, contents from QOM: empty, free\n",
        "  rp2  pcie-root-port at pcie.0 03.0, contents from QOM: a root port holding pb1 at 00.0\n",
        "    00.0  pb1         pcie-pci-bridge -> pb1\n",
        "    pb1  pcie-pci-bridge at rp2 00.0, contents from QOM: free 00,02-04,06-1f; reserved 05\n",
        "      01.0  nic0        virtio-net-pci\n",
    ] {
        assert!(text.contains(expected), "{text}\nlacks: {expected:?}");
    }
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["machine"], "q35");
    assert_eq!(json["buses"][3]["name"], "pb1");
    assert_eq!(json["buses"][3]["reserved"], json!([5]));
    assert_eq!(json["buses"][3]["functions"][0]["id"], "nic0");
    assert_eq!(json["buses"][2]["unusable"], json!({"why": "port-taken", "by": "pb1 at 00.0"}));
    let running = tree("pc-bridge-running").view(&Preferences::default()).to_string();
    assert!(running.contains("pci.0  bus 0, pc root bus: free 02-04,06-1f\n"), "{running}");
    let bare = PciTree::new(&TopologyInput {
        machine_type: Some("pc".into()),
        query_pci: json!([{"bus": 0, "devices": []}]),
        peripherals: vec![],
    })
    .unwrap();
    assert!(
        bare.view(&Preferences::default())
            .to_string()
            .contains("pc root bus: free 01-1f; reserved 00\n")
    );
    assert!(running.contains("  br1  bus 1, pci-bridge at pci.0 05.0: free 00-1f\n"), "{running}");
}

/// A generated machine: bridges (each on the root or an earlier bridge) and devices.
#[derive(Debug, Clone)]
struct Model {
    q35: bool,
    /// (QOM type, parent: 0 = root or 1 + bridge index, slot, function, hotplug)
    bridges: Vec<(&'static str, usize, u8, u8, bool)>,
    /// (parent, slot, function)
    devices: Vec<(usize, u8, u8)>,
}

const BRIDGE_TYPES: [(&str, u16); 4] = [
    ("pci-bridge", 0x0001),
    ("pcie-pci-bridge", 0x000e),
    ("pcie-root-port", 0x000c),
    ("xio3130-downstream", 0x8233),
];

/// One function of a generated machine: on bus `parent` (0 = root, 1 + n = bridge `bn`).
struct Entry {
    parent: usize,
    slot: u8,
    function: u8,
    /// Its `query-pci` entry, without `pci_bridge`.
    value: Value,
    /// Its id and QOM type, for a peripheral.
    peripheral: Option<(String, &'static str)>,
    /// For a bridge: its index in `Model::bridges`.
    bridge: Option<usize>,
}

impl Model {
    fn bus_path(&self, parent: usize) -> String {
        match (parent, self.q35) {
            (0, true) => "/machine/q35/pcie.0".into(),
            (0, false) => "/machine/i440fx/pci.0".into(),
            (bridge, _) => format!("/machine/peripheral/b{0}/b{0}", bridge - 1),
        }
    }

    /// The machine's own devices, then the bridges and devices that are reachable from the
    /// root and do not collide with an earlier one.
    fn entries(&self) -> Vec<Entry> {
        let mut used = BTreeSet::new();
        let mut reachable = BTreeSet::from([0]);
        let mut entries = Vec::new();
        let fixed: &[(u8, u8, u16)] = if self.q35 {
            &[(0, 0, 0x29c0), (31, 0, 0x2918), (31, 2, 0x2922)]
        } else {
            &[(0, 0, 0x1237), (1, 0, 0x7000), (1, 1, 0x7010)]
        };
        for &(slot, function, device) in fixed {
            used.insert((0, slot, function));
            let value = json!({"slot": slot, "function": function, "qdev_id": "",
                               "id": {"vendor": 0x8086, "device": device}});
            entries.push(Entry {
                parent: 0,
                slot,
                function,
                value,
                peripheral: None,
                bridge: None,
            });
        }
        for (index, &(kind, parent, slot, function, _)) in self.bridges.iter().enumerate() {
            if !reachable.contains(&parent) || !used.insert((parent, slot, function)) {
                continue;
            }
            reachable.insert(index + 1);
            let device = BRIDGE_TYPES.iter().find(|(name, _)| *name == kind).unwrap().1;
            let vendor = if kind == "xio3130-downstream" { 0x104c } else { 0x1b36 };
            let id = format!("b{index}");
            let value = json!({"slot": slot, "function": function, "qdev_id": id,
                "class_info": {"class": 0x0604}, "id": {"vendor": vendor, "device": device}});
            let peripheral = Some((id, kind));
            entries.push(Entry { parent, slot, function, value, peripheral, bridge: Some(index) });
        }
        for (index, &(parent, slot, function)) in self.devices.iter().enumerate() {
            if !reachable.contains(&parent) || !used.insert((parent, slot, function)) {
                continue;
            }
            let id = format!("d{index}");
            let value = json!({"slot": slot, "function": function, "qdev_id": id,
                "class_info": {"class": 0x0200}, "id": {"vendor": 0x1af4, "device": 0x1000}});
            let peripheral = Some((id, "virtio-net-pci"));
            entries.push(Entry { parent, slot, function, value, peripheral, bridge: None });
        }
        entries
    }

    /// The input QEMU would give: `listed` after the firmware ran, else from prelaunch.
    fn input(&self, listed: bool) -> TopologyInput {
        let entries = self.entries();
        let mut peripherals = Vec::new();
        for entry in &entries {
            if let Some((id, kind)) = &entry.peripheral {
                let addr = i64::from(entry.slot * 8 + entry.function);
                let mut peripheral =
                    Peripheral::placed(id.clone(), *kind, self.bus_path(entry.parent), addr);
                if let (Some(bridge), "pcie-root-port") = (entry.bridge, *kind) {
                    peripheral.hotplug = Some(self.bridges[bridge].4);
                }
                peripherals.push(peripheral);
            }
        }
        let devices = devices_of(0, &entries, listed, &mut 0);
        let machine_type = if self.q35 { "pc-q35-7.2-machine" } else { "pc-i440fx-7.2-machine" };
        TopologyInput {
            machine_type: Some(machine_type.into()),
            query_pci: json!([{"bus": 0, "devices": devices}]),
            peripherals,
        }
    }
}

/// The `query-pci` device list of bus `bus`: bridges with the buses behind them when
/// `listed`, numbered depth first as the firmware does; without them, as in prelaunch.
fn devices_of(bus: usize, entries: &[Entry], listed: bool, number: &mut i64) -> Value {
    let mut devices = Vec::new();
    for entry in entries.iter().filter(|entry| entry.parent == bus) {
        let mut value = entry.value.clone();
        if let Some(bridge) = entry.bridge {
            value["pci_bridge"] = if listed {
                *number += 1;
                let secondary = *number;
                let behind = devices_of(bridge + 1, entries, listed, number);
                json!({"bus": {"number": 0, "secondary": secondary, "subordinate": *number},
                       "devices": behind})
            } else {
                json!({"bus": {"number": 0, "secondary": 0, "subordinate": 0}})
            };
        }
        devices.push(value);
    }
    Value::Array(devices)
}

fn any_model() -> impl Strategy<Value = Model> {
    let bridge = (
        0..BRIDGE_TYPES.len(),
        0usize..6,
        0u8..32,
        prop_oneof![4 => Just(0u8), 1 => 1u8..8],
        prop::bool::weighted(0.8),
    );
    let device = (0usize..7, 0u8..32, prop_oneof![4 => Just(0u8), 1 => 1u8..8]);
    (any::<bool>(), prop::collection::vec(bridge, 0..6), prop::collection::vec(device, 0..12))
        .prop_map(|(q35, bridges, devices)| Model {
            q35,
            bridges: bridges
                .into_iter()
                .map(|(kind, parent, slot, function, hotplug)| {
                    (BRIDGE_TYPES[kind].0, parent, slot, function, hotplug)
                })
                .collect(),
            devices,
        })
}

/// The model's parent index of a place's bus.
fn parent_of(place: &Place) -> usize {
    match &place.bus {
        PlaceBus::PcRoot => 0,
        PlaceBus::Named(name) => name.strip_prefix('b').unwrap().parse::<usize>().unwrap() + 1,
    }
}

proptest! {
    #[test]
    fn free_places_are_empty_allowed_and_the_same_before_and_after_the_firmware(model in any_model()) {
        let none = Preferences::default();
        let after = PciTree::new(&model.input(true)).unwrap();
        let before = PciTree::new(&model.input(false)).unwrap();
        let free = after.free_places(DeviceKind::Nic, "p", &none);
        prop_assert_eq!(&free, &before.free_places(DeviceKind::Nic, "p", &none));
        prop_assert_eq!(after.free_place(DeviceKind::Nic, "p", &none).ok(), free.first().cloned());
        let mut ids = BTreeSet::new();
        for place in &free {
            let bus = after.bus_of(&place.bus).unwrap();
            prop_assert!(!bus.is_used(place.slot), "{} is occupied", place);
            prop_assert!(bus.kind != BusKind::Q35Root, "{} is on pcie.0", place);
            prop_assert!(!(bus.kind == BusKind::PcRoot && place.slot == 0));
            if bus.kind == BusKind::RootPort {
                prop_assert!(place.slot == 0 && bus.functions.is_empty() && bus.hotplug == Some(true));
            }
            let id = DeviceId::at(DeviceKind::Nic, "p", place).unwrap();
            prop_assert_eq!(id.to_string().parse::<DeviceId>().unwrap().place(), place.clone());
            prop_assert!(ids.insert(id.to_string()), "two places share the id {}", id);
        }
    }

    #[test]
    fn a_device_added_at_the_free_place_is_found_there_and_takes_it(model in any_model(), listed: bool) {
        let none = Preferences::default();
        let tree = PciTree::new(&model.input(listed)).unwrap();
        let free = tree.free_places(DeviceKind::Nic, "p", &none);
        let Some(place) = free.first() else {
            let error = tree.free_place(DeviceKind::Nic, "p", &none).unwrap_err();
            prop_assert!(!error.checked.is_empty() && !error.advice.is_empty());
            return Ok(());
        };
        let mut grown = model.clone();
        grown.devices.push((parent_of(place), place.slot, 0));
        let id = format!("d{}", grown.devices.len() - 1);
        let tree = PciTree::new(&grown.input(listed)).unwrap();
        prop_assert!(tree.has_device(&id, place));
        prop_assert_eq!(tree.place_of(&id), Some(place.clone()));
        let now = tree.free_places(DeviceKind::Nic, "p", &none);
        prop_assert!(!now.contains(place));
        prop_assert_eq!(now.len() + 1, free.len());
    }
}
