//! Arbitrary `query-pci` replies, as pc's or q35's, through the PCI tree and the planner:
//! no panic, a place handed out is one the tree lists as free (never pcie.0, a taken root
//! port or a reserved slot), the id names that place and parses back, and every plan's undo
//! list only removes. The bus-0 `SlotMap` keeps its own checks.
#![no_main]

use hostdev::DeviceNumber;
use hostdev::image::ImageIdentity;
use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{
    DeviceKind, DiskSource, DiskSpec, NicSpec, PCI_SLOTS, PciTree, Planner, Preferences, SlotMap,
    Snapshot, Vhost,
};

fuzz_target!(|data: &[u8]| {
    let [queues, vhost, slot, reserved, machine, json @ ..] = data else { return };
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    if let Ok(pci) = SlotMap::from_query_pci(&reply) {
        let free: Vec<u8> = pci.free_slots().collect();
        assert!(free.iter().all(|slot| *slot < PCI_SLOTS && *slot != 0));
        assert_eq!(pci.free_slot().ok(), free.first().copied());
        let _ = pci.to_string();
    }
    let machine = ["pc", "q35", "microvm"][usize::from(machine % 3)];
    let Ok(tree) = PciTree::from_query_pci(machine, &reply) else { return };
    let ids: Vec<String> = tree
        .buses()
        .iter()
        .flat_map(|bus| &bus.functions)
        .filter_map(|f| f.qdev_id.clone())
        .collect();

    // Reserve one slot on one of the tree's named buses.
    let names: Vec<&str> = tree.buses().iter().filter_map(|bus| bus.name.as_deref()).collect();
    let mut preferences = Preferences::default();
    if let Some(bus) = names.get(usize::from(reserved / 40) % names.len().max(1)) {
        preferences = preferences.reserve(*bus, [reserved % 40]);
    }
    let wanted_bus = (slot % 3 == 0)
        .then(|| names.get(usize::from(*slot) % names.len().max(1)).map(|b| (*b).to_owned()))
        .flatten();
    let wanted = (slot % 2 == 0).then_some(slot / 2 % 40);
    let mut snapshot = Snapshot::new(tree);
    snapshot.peripherals.extend(ids.into_iter().map(|id| (id, "virtio-net-pci".to_owned())));
    let planner = Planner { preferences: preferences.clone() };
    let nic = NicSpec {
        queues: usize::from(queues % 5),
        vhost: [Vhost::Off, Vhost::Open, Vhost::Fds][usize::from(vhost % 3)],
        slot: wanted,
        bus: wanted_bus.clone(),
        ..NicSpec::new("fz")
    };
    let disk = DiskSpec {
        slot: wanted,
        pci_bus: wanted_bus,
        ..DiskSpec::new("fz", DiskSource::Path("/i".into()))
    };
    let image = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 2 };
    let plans = [
        (DeviceKind::Nic, planner.nic_add(&nic, &snapshot)),
        (DeviceKind::Disk, planner.disk_add(&disk, Some(&image), &snapshot)),
    ];
    for (kind, planned) in plans {
        let Ok((id, plan)) = planned else { continue };
        let id_text = id.to_string();
        let free = snapshot.pci.free_places(
            kind,
            "fz",
            &preferences.clone().only([id.bus().device_add_name()]),
        );
        assert!(free.contains(&id.place()), "{id_text} planned into a place not free: {free:?}");
        assert_eq!(id_text.parse::<qmp_hotplug::DeviceId>().unwrap(), id);
        let device = plan.steps().iter().find(|s| s.step.command() == "device_add").unwrap();
        let arguments = device.step.arguments();
        assert_eq!(arguments["bus"], id.bus().device_add_name());
        assert_eq!(arguments["addr"], id.place().addr());
        for completed in 0..=plan.steps().len() {
            for undo in plan.undo_after(completed) {
                assert!(undo.is_removal(), "{undo} undoes something");
            }
        }
    }
});
