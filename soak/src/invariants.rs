//! The soak's invariant checker: reads QEMU's whole state with plain queries (`qom-list`,
//! `query-pci`, `query-block`, `query-named-block-nodes`, `query-fdsets`, HMP
//! `info network`) and the host's taps, and says what does not add up. It never asks
//! qmp-hotplug's `leftovers()`, so a bug there cannot hide a leak here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use qmp_client::Client;
use qmp_hotplug::{DeviceId, DeviceKind, NetworkInfo, PlaceBus};
use serde_json::{Value, json};

/// What QEMU had before the soak touched it: anything in it is not ours to explain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    /// `/machine/peripheral` children.
    pub peripherals: BTreeSet<String>,
    /// Named block nodes.
    pub nodes: BTreeSet<String>,
    /// Netdevs.
    pub netdevs: BTreeSet<String>,
}

/// QEMU's state, as far as the checks need it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// `/machine/peripheral` children.
    pub peripherals: BTreeSet<String>,
    /// PCI devices with a qdev id, on any bus: id to where the guest finds them.
    pub pci: BTreeMap<String, PciAt>,
    /// Bridges and root ports with a qdev id: id to the bus number behind them.
    pub bridges: BTreeMap<String, u64>,
    /// `query-block` backends with a device: qdev path to the inserted node's name.
    pub backends: BTreeMap<String, Option<String>>,
    /// Named nodes: name to the file name QEMU shows.
    pub nodes: BTreeMap<String, String>,
    /// Fdsets: id to (opaques of its descriptors).
    pub fdsets: BTreeMap<u64, Vec<String>>,
    /// `/objects` children.
    pub objects: BTreeSet<String>,
    /// HMP `info network`.
    pub network: NetworkInfo,
    /// QEMU's run state (`query-status`).
    pub status: String,
}

/// Where a PCI device sits, as `query-pci` (and so the guest) numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAt {
    /// The bus number (0 for the root bus; behind a bridge, its secondary bus).
    pub bus: u64,
    /// The slot on that bus.
    pub slot: u64,
}

impl std::fmt::Display for PciAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0000:{:02x}:{:02x}.0", self.bus, self.slot)
    }
}

/// Walks `query-pci`'s devices on bus `bus`, into every bridge, recording devices and bridges
/// that have a qdev id. Depth is bounded: QEMU nests bridges, but never past 256 buses.
fn walk_pci(
    devices: &Value,
    bus: u64,
    depth: usize,
    pci: &mut BTreeMap<String, PciAt>,
    bridges: &mut BTreeMap<String, u64>,
) {
    if depth > 256 {
        return;
    }
    for device in devices.as_array().into_iter().flatten() {
        let id = device["qdev_id"].as_str().filter(|id| !id.is_empty());
        if let Some(id) = id {
            let at = PciAt { bus, slot: device["slot"].as_u64().unwrap_or(u64::MAX) };
            pci.insert(id.to_owned(), at);
        }
        let bridge = &device["pci_bridge"];
        if let Some(secondary) = bridge["bus"]["secondary"].as_u64() {
            if let Some(id) = id {
                bridges.insert(id.to_owned(), secondary);
            }
            walk_pci(&bridge["devices"], secondary, depth + 1, pci, bridges);
        }
    }
}

fn children(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"].as_str().is_some_and(|t| t.starts_with("child<")))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

impl State {
    /// Reads everything.
    ///
    /// # Errors
    /// The first query that failed.
    pub async fn read(client: &Client) -> Result<Self, qmp_client::Error> {
        let peripherals =
            children(&client.execute("qom-list", json!({"path": "/machine/peripheral"})).await?);
        let objects = children(&client.execute("qom-list", json!({"path": "/objects"})).await?);
        let (mut pci, mut bridges) = (BTreeMap::new(), BTreeMap::new());
        for bus in client.execute("query-pci", ()).await?.as_array().into_iter().flatten() {
            let number = bus["bus"].as_u64().unwrap_or(u64::MAX);
            walk_pci(&bus["devices"], number, 0, &mut pci, &mut bridges);
        }
        let mut backends = BTreeMap::new();
        for block in client.execute("query-block", ()).await?.as_array().into_iter().flatten() {
            if let Some(qdev) = block["qdev"].as_str() {
                let node = block["inserted"]["node-name"].as_str().map(str::to_owned);
                backends.insert(qdev.to_owned(), node);
            }
        }
        let nodes = client
            .execute("query-named-block-nodes", json!({"flat": true}))
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                let name = n["node-name"].as_str()?;
                Some((name.to_owned(), n["file"].as_str().unwrap_or("").to_owned()))
            })
            .collect();
        let fdsets = client
            .execute("query-fdsets", ())
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|set| {
                let id = set["fdset-id"].as_u64()?;
                let opaques = set["fds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|fd| fd["opaque"].as_str().unwrap_or("").to_owned())
                    .collect();
                Some((id, opaques))
            })
            .collect();
        let network = NetworkInfo::parse(&client.human_monitor_command("info network").await?);
        let status =
            client.execute("query-status", ()).await?["status"].as_str().unwrap_or("?").to_owned();
        Ok(Self { peripherals, pci, bridges, backends, nodes, fdsets, objects, network, status })
    }

    /// The baseline this state is, before the soak adds anything.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            peripherals: self.peripherals.clone(),
            nodes: self.nodes.keys().cloned().collect(),
            netdevs: self.network.netdevs.keys().cloned().collect(),
        }
    }

    /// Where `id` says its device sits: bus 0 for pc's bus 0 and q35's root complex,
    /// otherwise the bus behind the bridge or root port it names (`None`: no such bridge).
    pub fn place_of(&self, id: &DeviceId) -> Option<PciAt> {
        let bus = match id.bus() {
            PlaceBus::PcRoot => 0,
            PlaceBus::Named(name) if name == "pcie.0" || name == "pci.0" => 0,
            PlaceBus::Named(name) => *self.bridges.get(name)?,
        };
        Some(PciAt { bus, slot: u64::from(id.slot()) })
    }

    /// Our devices (ids in qmp-hotplug's scheme) QEMU has.
    pub fn our_devices(&self) -> Vec<DeviceId> {
        self.peripherals.iter().filter_map(|id| id.parse().ok()).collect()
    }
}

/// Taps whose name starts with `prefix` on the host (`/sys/class/net`).
pub fn host_taps(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// The tap interface behind each tap descriptor process `pid` holds.
pub fn taps_held_by(pid: u32) -> Vec<String> {
    let fd_dir = Path::new("/proc").join(pid.to_string()).join("fd");
    std::fs::read_dir(fd_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| hostdev::tap::interface_of_process_fd(pid, fd).ok().flatten())
        .collect()
}

/// Devices our id scheme does not explain, and devices not where their ids say.
fn placement_violations(state: &State, baseline: &Baseline) -> Vec<String> {
    let mut found = Vec::new();
    for id in &state.peripherals {
        if id.parse::<DeviceId>().is_err() && !baseline.peripherals.contains(id) {
            found.push(format!("device {id} is neither ours nor there before"));
        }
    }
    for (id, at) in &state.pci {
        if !state.peripherals.contains(id) {
            found.push(format!("PCI device {id} at {at} is no peripheral"));
        }
        if let Ok(device) = id.parse::<DeviceId>() {
            match state.place_of(&device) {
                Some(said) if said == *at => {}
                Some(said) => found.push(format!("{id} sits at {at}, its id says {said}")),
                None => found.push(format!("{id} sits at {at} on a bus QEMU does not have")),
            }
        }
    }
    found
}

/// Every violation of the invariants in `state` (empty: all hold). `held_taps` are the
/// taps QEMU holds descriptors of, `host_taps` the soak's taps that exist on the host.
pub fn violations(
    state: &State,
    baseline: &Baseline,
    held_taps: &[String],
    host_taps: &BTreeSet<String>,
) -> Vec<String> {
    let mut found = placement_violations(state, baseline);
    let ours = |name: &str| name.parse::<DeviceId>().ok();
    for object in &state.objects {
        if object.starts_with("qmp-rs") {
            found.push(format!("object {object} left (an intent marker outlived its add)"));
        }
    }
    // Every device has its backend.
    for device in state.our_devices() {
        let id = device.to_string();
        if !state.pci.contains_key(&id) {
            found.push(format!("{id} is a peripheral but not on PCI"));
        }
        match device.kind() {
            DeviceKind::Nic => match state.network.netdevs.get(&device.netdev_id()) {
                Some(netdev) if netdev.nic.as_deref() == Some(id.as_str()) => {
                    if netdev.queues.is_empty() {
                        found.push(format!("netdev of {id} has no queue"));
                    }
                }
                Some(netdev) => found.push(format!("netdev of {id} feeds {:?}", netdev.nic)),
                None => found.push(format!("NIC {id} has no netdev")),
            },
            DeviceKind::Disk => {
                let qdev = format!("/machine/peripheral/{id}/virtio-backend");
                match state.backends.get(&qdev) {
                    Some(Some(node)) if *node == device.node_name() => {}
                    Some(node) => found.push(format!("disk {id} holds node {node:?}")),
                    None => found.push(format!("disk {id} has no block backend")),
                }
                if !state.nodes.contains_key(&device.file_node_name()) {
                    found.push(format!("disk {id} has no protocol node"));
                }
            }
            _ => found.push(format!("{id}: a device kind the soak does not make")),
        }
    }
    // Every backend has its device.
    for (name, netdev) in &state.network.netdevs {
        if baseline.netdevs.contains(name) {
            continue;
        }
        match ours(name) {
            None => found.push(format!("netdev {name} is neither ours nor there before")),
            Some(_) if !state.peripherals.contains(name) => {
                found.push(format!("netdev {name} has no NIC (its NIC: {:?})", netdev.nic));
            }
            Some(_) => {}
        }
    }
    for name in state.nodes.keys() {
        if baseline.nodes.contains(name) {
            continue;
        }
        match ours(name.strip_suffix("-file").unwrap_or(name)) {
            None => found.push(format!("block node {name} is neither ours nor there before")),
            Some(device) if !state.peripherals.contains(&device.to_string()) => {
                found.push(format!("block node {name} has no device"));
            }
            Some(_) => {}
        }
    }
    // No fdset without a node.
    for (fdset, opaques) in &state.fdsets {
        let path = format!("/dev/fdset/{fdset}");
        if !state.nodes.values().any(|file| *file == path) {
            found.push(format!("fdset {fdset} ({opaques:?}) is read by no node"));
        }
    }
    // No tap on the host without its NIC: QEMU holds exactly one descriptor per queue of
    // its tap netdevs, and every tap of ours on the host is one QEMU holds.
    let queues: usize = state
        .network
        .netdevs
        .values()
        .filter(|netdev| netdev.kind == "tap")
        .map(|netdev| netdev.queues.len())
        .sum();
    if held_taps.len() != queues {
        found.push(format!(
            "QEMU holds {} tap descriptors ({held_taps:?}), its tap netdevs have {queues} queues",
            held_taps.len()
        ));
    }
    for tap in host_taps {
        if !held_taps.contains(tap) {
            found.push(format!("tap {tap} exists on the host but QEMU does not hold it"));
        }
    }
    found
}

/// What the guest sees, from its serial log: the PCI addresses of the NICs and disks it
/// has (the test guest prints `GUEST: +eth0 pci=0000:00:05.0` and `GUEST: -eth0 ...`).
pub fn guest_view(serial: &str) -> BTreeSet<String> {
    let mut present: BTreeMap<String, String> = BTreeMap::new();
    for line in serial.lines() {
        let Some(rest) = line.trim_end().split("GUEST: ").nth(1) else { continue };
        let mut words = rest.split_whitespace();
        let (Some(change), Some(pci)) = (words.next(), words.next()) else { continue };
        let Some(pci) = pci.strip_prefix("pci=") else { continue };
        if let Some(name) = change.strip_prefix('+') {
            present.insert(name.to_owned(), pci.to_owned());
        } else if let Some(name) = change.strip_prefix('-') {
            present.remove(name);
        }
    }
    present.into_values().collect()
}

/// The PCI addresses the guest should see for QEMU's devices of ours: where `query-pci`
/// has them (bus numbers behind bridges are the ones the firmware gave, as the guest sees).
pub fn expected_guest_view(state: &State) -> BTreeSet<String> {
    state
        .our_devices()
        .iter()
        .filter_map(|id| state.pci.get(&id.to_string()))
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_view_follows_plus_and_minus_lines() {
        let serial = "GUEST: +eth0 pci=0000:00:05.0\r\nnoise\r\nGUEST: +vda pci=0000:00:06.0\r\n\
                      GUEST: -eth0 pci=0000:00:05.0\r\n";
        assert_eq!(guest_view(serial), BTreeSet::from(["0000:00:06.0".to_owned()]));
    }

    #[test]
    fn devices_behind_root_ports_are_found_where_their_ids_say() {
        // q35's query-pci shape: a NIC of ours behind root port rp2 (secondary bus 2).
        let reply = json!([{"bus": 0, "devices": [
            {"slot": 2, "qdev_id": "rp1", "pci_bridge": {"bus": {"secondary": 1}, "devices": []}},
            {"slot": 3, "qdev_id": "rp2", "pci_bridge": {"bus": {"secondary": 2}, "devices": [
                {"slot": 0, "qdev_id": "nic-a-rp2-0"}]}},
        ]}]);
        let mut state = State::default();
        walk_pci(&reply[0]["devices"], 0, 0, &mut state.pci, &mut state.bridges);
        state.peripherals.extend(["rp1".into(), "rp2".into(), "nic-a-rp2-0".into()]);
        let baseline = Baseline {
            peripherals: ["rp1", "rp2"].map(String::from).into(),
            ..Baseline::default()
        };
        assert_eq!(state.pci["nic-a-rp2-0"], PciAt { bus: 2, slot: 0 });
        assert_eq!(expected_guest_view(&state), BTreeSet::from(["0000:02:00.0".to_owned()]));
        let found = violations(&state, &baseline, &[], &BTreeSet::new());
        assert!(!found.iter().any(|v| v.contains("sits at")), "{found:?}");
        // The same device found behind the other root port contradicts its id.
        state.pci.insert("nic-a-rp2-0".into(), PciAt { bus: 1, slot: 0 });
        let found = violations(&state, &baseline, &[], &BTreeSet::new());
        assert!(
            found.iter().any(|v| v.contains("sits at 0000:01:00.0, its id says 0000:02:00.0")),
            "{found:?}"
        );
    }

    #[test]
    fn a_netdev_without_nic_and_an_unread_fdset_are_violations() {
        let mut state = State {
            network: NetworkInfo::parse("nic-a-pci-5: index=0,type=tap,fd=33\r\n"),
            ..State::default()
        };
        state.fdsets.insert(3, vec!["qmp-rs:disk-b-pci-6".into()]);
        state.objects.insert("qmp-rs-intent.nic-a-pci-5.t1.v0".into());
        let found = violations(&state, &Baseline::default(), &[], &BTreeSet::new());
        assert!(found.iter().any(|v| v.contains("netdev nic-a-pci-5 has no NIC")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("fdset 3")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("intent marker")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("holds 0 tap descriptors")), "{found:?}");
    }

    #[test]
    fn a_complete_nic_is_no_violation() {
        let mut state = State {
            network: NetworkInfo::parse(
                "nic-a-pci-5: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ nic-a-pci-5: index=0,type=tap,fd=33\r\n",
            ),
            ..State::default()
        };
        state.peripherals.insert("nic-a-pci-5".into());
        state.pci.insert("nic-a-pci-5".into(), PciAt { bus: 0, slot: 5 });
        let held = vec!["soak0".to_owned()];
        let found =
            violations(&state, &Baseline::default(), &held, &BTreeSet::from(["soak0".into()]));
        assert!(found.is_empty(), "{found:?}");
    }
}
