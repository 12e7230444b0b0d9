//! Arbitrary `query-pci` replies through the slot map and the planner: no panic, a slot
//! handed out is free, and every plan's undo list only removes.
#![no_main]

use hostdev::DeviceNumber;
use hostdev::image::ImageIdentity;
use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{
    DiskSource, DiskSpec, NicSpec, PCI_SLOTS, Planner, Slot, SlotMap, Snapshot, Vhost,
};

fuzz_target!(|data: &[u8]| {
    let [queues, vhost, slot, reserved, json @ ..] = data else { return };
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    let Ok(pci) = SlotMap::from_query_pci(&reply) else { return };

    let free: Vec<u8> = pci.free_slots().collect();
    assert!(free.iter().all(|slot| *slot < PCI_SLOTS && *slot != 0));
    assert_eq!(pci.free_slot().ok(), free.first().copied());
    let _ = pci.to_string();
    let mut ids = Vec::new();
    for (number, state) in pci.iter() {
        for function in state.functions() {
            assert_eq!(function.slot, number);
            if let Some(id) = &function.qdev_id {
                assert!(pci.slot_of(id).is_some());
                ids.push(id.clone());
            }
        }
    }

    let mut snapshot = Snapshot::new(pci);
    snapshot.peripherals.extend(ids.into_iter().map(|id| (id, "virtio-net-pci".to_owned())));
    let planner = Planner { reserved_slots: vec![reserved % 40], ..Planner::default() };
    let wanted = (slot % 2 == 0).then_some(slot / 2 % 40);
    let nic = NicSpec {
        queues: usize::from(queues % 5),
        vhost: [Vhost::Off, Vhost::Open, Vhost::Fds][usize::from(vhost % 3)],
        slot: wanted,
        ..NicSpec::new("fz")
    };
    let disk = DiskSpec { slot: wanted, ..DiskSpec::new("fz", DiskSource::Path("/i".into())) };
    let image = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 2 };
    let plans =
        [planner.nic_add(&nic, &snapshot), planner.disk_add(&disk, Some(&image), &snapshot)];
    for (id, plan) in plans.into_iter().flatten() {
        let id_text = id.to_string();
        match snapshot.pci.get(id.slot()) {
            Some(Slot::Free) => {}
            other => panic!("{id_text} planned into {other:?}"),
        }
        assert_eq!(id_text.parse::<qmp_hotplug::DeviceId>().unwrap(), id);
        for completed in 0..=plan.steps().len() {
            for undo in plan.undo_after(completed) {
                assert!(undo.is_removal(), "{undo} undoes something");
            }
        }
    }
});
