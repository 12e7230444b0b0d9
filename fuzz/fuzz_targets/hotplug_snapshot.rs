//! The hotplug snapshot's inputs that QEMU (or another manager) controls — `qom-list` of
//! peripherals and objects, block node names (`query-named-block-nodes`), `query-block`,
//! fdset opaques (`query-fdsets`), `query-pci` and HMP `info network` — built into a
//! `Snapshot` by `Snapshot::from_json_replies` (the executor's own assembly), then read
//! through the ownership views and `Leftovers::in_snapshot`.
//!
//! The first byte picks the input: the replies as one JSON object (`JsonReplies`; seeds
//! from QEMU 7.2 replies), or replies generated from ids of ours, markers, opaques, legacy
//! names and arbitrary text, so the id scheme is met on every path.
//!
//! Checked: no panic; bounded (the descriptor names a leftover marker implies stay within
//! what a NIC add can pass); everything the snapshot and the leftovers name is in the
//! input; nothing that is not ours by the id scheme is reported as ours (every leftover's
//! part parses back to its device, of the right kind, and is not in use by the input).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{
    DeviceId, DeviceKind, DiskFdset, IntentMarker, JsonReplies, LeftoverPart, Leftovers,
    MAX_NIC_QUEUES, Snapshot, disk_opaque,
};
use serde_json::{Value, json};

/// What the input holds, read straight from the JSON (not through the snapshot).
#[derive(Default)]
struct Given {
    peripherals: BTreeSet<String>,
    objects: BTreeSet<String>,
    nodes: BTreeSet<String>,
    inserted: BTreeSet<String>,
    fdset_opaques: BTreeMap<u64, Vec<String>>,
    network: String,
}

fn children(list: &Value) -> BTreeSet<String> {
    let entries = list.as_array().into_iter().flatten();
    entries
        .filter(|p| p["type"].as_str().is_some_and(|t| t.starts_with("child<") && t.ends_with('>')))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

fn given(replies: &JsonReplies) -> Given {
    let strings = |list: &Value, pick: &dyn Fn(&Value) -> &Value| -> BTreeSet<String> {
        let entries = list.as_array().into_iter().flatten();
        entries.filter_map(|entry| pick(entry).as_str().map(str::to_owned)).collect()
    };
    let mut fdset_opaques = BTreeMap::<u64, Vec<String>>::new();
    for set in replies.fdsets.as_array().into_iter().flatten() {
        let Some(id) = set["fdset-id"].as_u64() else { continue };
        let opaques = set["fds"].as_array().into_iter().flatten();
        let entry = fdset_opaques.entry(id).or_default();
        entry.extend(opaques.filter_map(|fd| fd["opaque"].as_str().map(str::to_owned)));
    }
    Given {
        peripherals: children(&replies.peripherals),
        objects: children(&replies.objects),
        nodes: strings(&replies.block_nodes, &|node| &node["node-name"]),
        inserted: strings(&replies.block, &|backend| &backend["inserted"]["node-name"]),
        fdset_opaques,
        network: replies.network.clone(),
    }
}

fn check(replies: JsonReplies) {
    let given = given(&replies);
    let Ok(snapshot) = Snapshot::from_json_replies(replies) else { return };
    assert!(snapshot.peripherals.keys().all(|id| given.peripherals.contains(id)));
    assert!(snapshot.objects.iter().all(|id| given.objects.contains(id)));
    assert!(snapshot.block_nodes.keys().all(|name| given.nodes.contains(name)));
    for marker in snapshot.markers() {
        assert!(snapshot.objects.contains(&marker.object_id()), "{marker:?}");
        assert_eq!(marker.device.kind(), DeviceKind::Nic);
    }
    for (fdset_id, set) in snapshot.disk_fdsets() {
        let opaques = given.fdset_opaques.get(&fdset_id).expect("an fdset of the input");
        assert!(opaques.iter().any(|o| DiskFdset::parse(o).as_ref() == Some(&set)));
        assert_eq!(set.device.kind(), DeviceKind::Disk);
        for node in snapshot.nodes_reading_fdset(fdset_id) {
            assert_eq!(snapshot.block_nodes[node].fdset(), Some(fdset_id));
        }
    }

    let leftovers = Leftovers::in_snapshot(&snapshot);
    assert_eq!(leftovers.run_state, snapshot.run_state);
    let mut seen = Vec::new();
    for item in &leftovers.items {
        let device = &item.device;
        match &item.part {
            LeftoverPart::BlockNode { node_name } => {
                assert!(given.nodes.contains(node_name), "{node_name:?} not in the input");
                assert_eq!(node_name, &device.to_string(), "not ours by the id scheme");
                assert_eq!(device.kind(), DeviceKind::Disk);
                assert!(!given.inserted.contains(node_name), "{node_name} is in use");
            }
            LeftoverPart::Fdset { fdset_id } => {
                let opaques = given.fdset_opaques.get(fdset_id).expect("an fdset of the input");
                let ours = opaques.iter().filter_map(|o| DiskFdset::parse(o));
                assert!(ours.map(|set| set.device).any(|id| id == *device), "{item:?}");
            }
            LeftoverPart::Netdev { id } => {
                assert!(given.network.contains(id.as_str()), "{id:?} not in the input");
                assert_eq!(id, &device.to_string(), "not ours by the id scheme");
                assert_eq!(device.kind(), DeviceKind::Nic);
                assert_eq!(snapshot.network.netdevs[id].nic, None, "{id} is in use");
            }
            LeftoverPart::NicIntent { marker, fd_names } => {
                assert!(given.objects.contains(marker), "{marker:?} not in the input");
                let parsed = IntentMarker::parse(marker).expect("a marker of ours");
                assert_eq!(&parsed.device, device);
                assert!(fd_names.len() <= 2 * MAX_NIC_QUEUES, "{} names", fd_names.len());
                assert_eq!(fd_names, &parsed.fd_names());
            }
            _ => {}
        }
        let fdset = matches!(item.part, LeftoverPart::Fdset { .. });
        assert!(!item.closes_when_running || (fdset && !snapshot.run_state.is_running()));
        assert!(!seen.contains(&item), "listed twice: {item:?}");
        seen.push(item);
        let named = snapshot.ids_named(device.kind(), device.name());
        assert!(named.contains(device), "{device} is not among its name's ids");
        assert!(named.iter().all(|id| id.kind() == device.kind() && id.name() == device.name()));
        let _ = item.to_string();
    }
}

/// A name QEMU may list: one of ours (any kind, a few names, any slot), a `-file` child,
/// QEMU's own `#blockN`, or any text.
fn name(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=4)? {
        0..=1 => ours(u)?.to_string(),
        2 => format!("{}-file", ours(u)?),
        3 => format!("#block{}", u.int_in_range(0..=999)?),
        _ => u.arbitrary()?,
    })
}

fn ours(u: &mut Unstructured) -> Result<DeviceId> {
    let kind = if u.arbitrary()? { DeviceKind::Disk } else { DeviceKind::Nic };
    let name = *u.choose(&["a", "b", "c", "n1"])?;
    loop {
        if let Ok(id) = DeviceId::new(kind, name, u.int_in_range(0..=31)?) {
            return Ok(id);
        }
        if u.is_empty() {
            return DeviceId::new(kind, name, 2)
                .map_err(|_| libfuzzer_sys::arbitrary::Error::IncorrectFormat);
        }
    }
}

fn object_name(u: &mut Unstructured) -> Result<String> {
    Ok(if u.ratio(1, 2)? {
        let taps = if u.ratio(1, 8)? { u.arbitrary()? } else { u.int_in_range(0..=4)? };
        let vhosts = if u.ratio(1, 8)? { u.arbitrary()? } else { u.int_in_range(0..=4)? };
        let marker = IntentMarker { device: ours(u)?, taps, vhosts };
        marker.object_id()
    } else {
        name(u)?
    })
}

fn opaque(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => {
            let image = hostdev::image::ImageIdentity::File {
                device: hostdev::DeviceNumber::new(
                    u.int_in_range(0..=255)?,
                    u.int_in_range(0..=255)?,
                ),
                inode: u.arbitrary()?,
            };
            disk_opaque(&ours(u)?, &image)
        }
        1 => ours(u)?.to_string(),
        _ => name(u)?,
    })
}

fn list<T>(u: &mut Unstructured, item: impl Fn(&mut Unstructured) -> Result<T>) -> Result<Vec<T>> {
    let count = u.int_in_range(0..=6)?;
    (0..count).map(|_| item(u)).collect()
}

fn generated(u: &mut Unstructured) -> Result<JsonReplies> {
    let mut replies = JsonReplies::default();
    let state = *u.choose(&["running", "paused", "prelaunch", "inmigrate"])?;
    replies.status = json!({"status": state, "running": state == "running"});
    replies.pci =
        json!([{"bus": 0, "devices": [{"bus": 0, "slot": 0, "function": 0, "qdev_id": ""}]}]);
    replies.machine_type = Some("pc-i440fx-7.2-machine".into());
    replies.placements = json!([]);
    let qom_type = |u: &mut Unstructured| -> Result<String> {
        Ok(if u.ratio(1, 6)? {
            "string".into()
        } else {
            format!(
                "child<{}>",
                u.choose(&["virtio-net-pci", "virtio-blk-pci", "secret", "e1000"])?
            )
        })
    };
    let peripherals = list(u, |u| Ok(json!({"name": name(u)?, "type": qom_type(u)?})))?;
    replies.peripherals = json!(peripherals);
    let objects = list(u, |u| Ok(json!({"name": object_name(u)?, "type": qom_type(u)?})))?;
    replies.objects = json!(objects);
    let node_names = list(u, name)?;
    let mut nodes = Vec::new();
    for node in &node_names {
        let file = if u.arbitrary()? {
            format!("/dev/fdset/{}", u.int_in_range(0..=4)?)
        } else {
            u.arbitrary()?
        };
        nodes.push(
            json!({"node-name": node, "drv": "raw", "ro": u.arbitrary::<bool>()?, "file": file}),
        );
    }
    replies.block_nodes = json!(nodes);
    let mut block = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let inserted = if u.arbitrary()? && !node_names.is_empty() {
            u.choose(&node_names)?.clone()
        } else {
            name(u)?
        };
        let qdev = format!("/machine/peripheral/{}/virtio-backend", name(u)?);
        block.push(json!({"device": "", "qdev": qdev, "inserted": {"node-name": inserted}}));
    }
    replies.block = json!(block);
    let mut fdsets = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let fds = list(u, |u| Ok(json!({"fd": u.int_in_range(3..=99)?, "opaque": opaque(u)?})))?;
        fdsets.push(json!({"fdset-id": u.int_in_range(0..=4)?, "fds": fds}));
    }
    replies.fdsets = json!(fdsets);
    let mut network = String::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let netdev = name(u)?;
        match u.int_in_range(0..=3)? {
            0 => network.push_str(&format!(
                "{}: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ {netdev}: index=0,type=tap,fd=11\r\n",
                name(u)?
            )),
            1 => network.push_str(&format!("{netdev}: index={},type=tap,fd=12\r\n", u.int_in_range(0..=3)?)),
            2 => network.push_str(&format!(" \\ {netdev}: index=0,type=tap,fd=13\r\n")),
            _ => network.push_str(&u.arbitrary::<String>()?),
        }
    }
    replies.network = network;
    Ok(replies)
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if mode % 2 == 0 {
        if let Ok(replies) = serde_json::from_slice::<JsonReplies>(rest) {
            check(replies);
        }
    } else if let Ok(replies) = generated(&mut Unstructured::new(rest)) {
        check(replies);
    }
});
