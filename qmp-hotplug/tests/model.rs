//! The property test over the model of QEMU in `common`: random sequences of adds,
//! removals, pauses, reconnects and clean-ups, each with a failure injected at a random
//! step (a refusal, a lost reply, a hang-up before or after QEMU acts). After every
//! operation and at the end:
//!
//! - no add ever reports a device (added or adopted) that differs from its spec, down to
//!   the identity of the image QEMU opened;
//! - everything of ours in QEMU is part of a complete device that some add asked for
//!   exactly, or is listed by `leftovers()`;
//! - after `clean_leftovers()` (the VM running), nothing of ours but complete devices
//!   remains: no named descriptor, marker, unused netdev, node or fdset.
//!
//! Each sequence runs on one of three machines: pc (bus 0), pc with bus 0 reserved so that
//! devices go behind two pci-bridges, and q35 with three empty root ports (fewer than the
//! devices the sequence may ask for, so a full pool is part of it).

mod common;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use common::{Device, FakeQemu, Fault, State};
use hostdev::image::{Access, ImageIdentity, open_image};
use proptest::prelude::*;
use qmp_client::Client;
use qmp_hotplug::{
    DeviceId, DiskReport, DiskSource, DiskSpec, Error, Hotplug, NicReport, NicSpec, Outcome,
    Planner, Preferences, RemoveOptions,
};

const NAMES: [&str; 2] = ["a", "b"];
const MACS: [&str; 2] = ["52:54:00:00:00:0a", "52:54:00:00:00:0b"];

#[derive(Debug, Clone)]
enum Op {
    AddNic { name: usize, queues: usize, mac: Option<usize> },
    AddDisk { name: usize, image: usize, read_only: bool },
    DelNic { name: usize },
    DelDisk { name: usize },
    Pause,
    Cont,
    Reconnect,
    Clean,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 1..3usize, proptest::option::of(0..2usize))
            .prop_map(|(name, queues, mac)| Op::AddNic { name, queues, mac }),
        3 => (0..2usize, 0..2usize, any::<bool>())
            .prop_map(|(name, image, read_only)| Op::AddDisk { name, image, read_only }),
        1 => (0..2usize).prop_map(|name| Op::DelNic { name }),
        1 => (0..2usize).prop_map(|name| Op::DelDisk { name }),
        1 => Just(Op::Pause),
        1 => Just(Op::Cont),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Clean),
    ]
}

fn fault() -> impl Strategy<Value = Option<(usize, Fault)>> {
    let kind = prop_oneof![
        Just(Fault::Refuse),
        Just(Fault::DoButStaySilent),
        Just(Fault::DoThenDisconnect),
        Just(Fault::Disconnect),
    ];
    proptest::option::weighted(0.6, (0..6usize, kind))
}

/// What some add asked for under a name: the complete devices QEMU may hold.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    Nic(NicSpec),
    Disk(DiskSpec, ImageIdentity),
}

struct World {
    fake: FakeQemu,
    /// The manager under test: short command timeouts, so lost replies are cheap (and a
    /// slow machine only adds more of them, which the properties must survive too).
    hotplug: Option<Hotplug>,
    /// Another manager on its own connection, without timeouts, that checks and cleans.
    observer: Hotplug,
    images: Vec<(PathBuf, ImageIdentity)>,
    asked: Vec<Asked>,
    /// What the manager under test plans with.
    planner: Planner,
    _dir: tempfile::TempDir,
}

/// The machine a sequence runs on.
#[derive(Debug, Clone, Copy)]
enum Machine {
    Pc,
    PcBridges,
    Q35,
}

fn machine() -> impl Strategy<Value = Machine> {
    prop_oneof![Just(Machine::Pc), Just(Machine::PcBridges), Just(Machine::Q35)]
}

fn pipes(n: usize) -> Vec<OwnedFd> {
    (0..n).map(|_| std::os::unix::net::UnixStream::pair().unwrap().0.into()).collect()
}

impl World {
    async fn hotplug(&mut self) -> Hotplug {
        if let Some(hotplug) = self.hotplug.as_ref().filter(|h| !h.client().is_closed()) {
            return hotplug.clone();
        }
        let client = Client::builder()
            .default_command_timeout(Some(Duration::from_millis(100)))
            .connect(self.fake.server.path())
            .await
            .unwrap();
        let hotplug = Hotplug::new(client)
            .with_rollback_budget(Duration::from_secs(2))
            .with_planner(self.planner.clone());
        self.hotplug = Some(hotplug.clone());
        hotplug
    }

    fn drop_connection(&mut self) {
        if self.hotplug.take().is_some() {
            // The client is gone: QEMU cleans fdsets as for a monitor without clients.
            self.fake.state().client_gone();
        }
    }

    fn id_of(&self, kind: &str, name: &str) -> Option<String> {
        self.fake.state().devices.keys().find(|id| is_id_of(id, kind, name)).cloned()
    }

    async fn run(&mut self, op: &Op) -> Result<(), String> {
        let hotplug = self.hotplug().await;
        let remove = RemoveOptions::new(Duration::from_secs(1));
        match op {
            Op::AddNic { name, queues, mac } => {
                let spec = NicSpec {
                    queues: *queues,
                    mac: mac.map(|m| MACS[m].to_owned()),
                    ..NicSpec::new(NAMES[*name])
                };
                self.asked.push(Asked::Nic(spec.clone()));
                if let Ok(report) = hotplug.add_nic(&spec, &pipes(*queues), &[] as &[OwnedFd]).await
                {
                    check_nic(&self.fake.state(), &spec, &report)?;
                }
            }
            Op::AddDisk { name, image, read_only } => {
                let (path, identity) = self.images[*image].clone();
                let spec = DiskSpec {
                    read_only: *read_only,
                    ..DiskSpec::new(NAMES[*name], DiskSource::Path(path))
                };
                self.asked.push(Asked::Disk(spec.clone(), identity));
                if let Ok(report) = hotplug.add_disk(&spec, None).await {
                    check_disk(&self.fake.state(), &spec, identity, &report)?;
                }
            }
            Op::DelNic { name } => {
                let id = self
                    .id_of("nic", NAMES[*name])
                    .unwrap_or(format!("nic-{}-pci-9", NAMES[*name]));
                let result = hotplug.del_nic(&id, &remove).await;
                check_removal(&result, &id)?;
            }
            Op::DelDisk { name } => {
                let id = self
                    .id_of("disk", NAMES[*name])
                    .unwrap_or(format!("disk-{}-pci-9", NAMES[*name]));
                let result = hotplug.del_disk(&id, &remove).await;
                check_removal(&result, &id)?;
            }
            Op::Pause => drop(hotplug.client().execute("stop", ()).await),
            Op::Cont => drop(hotplug.client().execute("cont", ()).await),
            Op::Reconnect => self.drop_connection(),
            Op::Clean => {
                if let Ok(leftovers) = hotplug.leftovers().await {
                    let _ = hotplug.clean_leftovers(&leftovers).await;
                }
            }
        }
        if self.hotplug.as_ref().is_some_and(|h| h.client().is_closed()) {
            self.drop_connection();
        }
        Ok(())
    }

    /// Everything of ours in the model is part of a complete device some add asked for,
    /// or listed by `leftovers()` (read without faults).
    async fn check_accounted(&mut self) -> Result<(), String> {
        let leftovers = self.observer.leftovers().await.map_err(|e| e.to_string())?;
        let listed: Vec<String> = leftovers.items.iter().map(ToString::to_string).collect();
        let state = self.fake.state();
        let complete = complete_devices(&state, &self.asked)?;
        for name in state.fd_names.keys() {
            if !listed.iter().any(|item| item.contains(name.as_str())) {
                return Err(format!("named descriptor {name} is not findable: {listed:?}"));
            }
        }
        for object in &state.objects {
            if !listed.iter().any(|item| item.contains(object.as_str())) {
                return Err(format!("object {object} is not listed: {listed:?}"));
            }
        }
        for netdev in state.netdevs.keys() {
            let used = complete.iter().any(|id| id == netdev);
            if !used && !listed.iter().any(|item| item.contains(&format!("netdev {netdev} "))) {
                return Err(format!("netdev {netdev} is neither used nor listed: {listed:?}"));
            }
        }
        for node in state.nodes.keys() {
            let used = complete.iter().any(|id| id == node);
            if !used && !listed.iter().any(|item| item.contains(&format!("block node {node} "))) {
                return Err(format!("node {node} is neither used nor listed: {listed:?}"));
            }
        }
        for fdset in state.fdsets.keys() {
            let read = state.nodes.values().any(|node| node.fdset == Some(*fdset));
            if !read && !listed.iter().any(|item| item.contains(&format!("fdset {fdset} "))) {
                return Err(format!("fdset {fdset} is neither read nor listed: {listed:?}"));
            }
        }
        Ok(())
    }
}

/// The devices in the model whose every part is there and that match a spec some add
/// asked for; an error for a device of ours that matches none (a wrong adoption or a
/// half-made device would show up here).
fn complete_devices(state: &State, asked: &[Asked]) -> Result<Vec<String>, String> {
    let mut complete = Vec::new();
    for (id, device) in &state.devices {
        let matches = asked.iter().any(|asked| match asked {
            Asked::Nic(spec) => {
                is_id_of(id, "nic", &spec.name) && nic_matches(state, id, device, spec).is_ok()
            }
            Asked::Disk(spec, image) => {
                is_id_of(id, "disk", &spec.name)
                    && disk_matches(state, id, device, spec, *image).is_ok()
            }
        });
        if !matches {
            return Err(format!("device {id} ({device:?}) is no device any add asked for"));
        }
        let place = id.parse::<DeviceId>().map(|id| id.place()).map_err(|e| e.to_string())?;
        if (place.bus.device_add_name(), place.slot) != (device.bus.as_str(), device.slot) {
            return Err(format!("device {id} sits on {} slot {}", device.bus, device.slot));
        }
        complete.push(id.clone());
    }
    Ok(complete)
}

fn nic_matches(state: &State, id: &str, device: &Device, spec: &NicSpec) -> Result<(), String> {
    let queues = state.netdevs.get(id).copied();
    let mac_ok = spec.mac.as_ref().is_none_or(|mac| device.mac.as_deref() == Some(mac.as_str()));
    if device.netdev.as_deref() == Some(id)
        && queues == Some(spec.queues)
        && device.mq == (spec.queues > 1)
        && device.driver == spec.model
        && mac_ok
    {
        Ok(())
    } else {
        Err(format!("{id}: {device:?} with {queues:?} queues is not {spec:?}"))
    }
}

fn disk_matches(
    state: &State,
    id: &str,
    device: &Device,
    spec: &DiskSpec,
    image: ImageIdentity,
) -> Result<(), String> {
    let node = state.nodes.get(id);
    let ok = device.drive.as_deref() == Some(id)
        && device.driver == spec.model
        && node.is_some_and(|node| {
            node.image == Some(image)
                && node.read_only == spec.read_only
                && node.driver == spec.format.driver()
                && node.protocol == "file"
        });
    if ok { Ok(()) } else { Err(format!("{id}: {device:?} on {node:?} is not {spec:?}")) }
}

fn check_nic(state: &State, spec: &NicSpec, report: &NicReport) -> Result<(), String> {
    let id = report.id.to_string();
    let device = state.devices.get(&id).ok_or(format!("{id} reported but absent"))?;
    nic_matches(state, &id, device, spec)
        .map_err(|why| format!("{} NIC differs from its spec: {why}", report.outcome))
}

fn check_disk(
    state: &State,
    spec: &DiskSpec,
    image: ImageIdentity,
    report: &DiskReport,
) -> Result<(), String> {
    let id = report.id.to_string();
    let device = state.devices.get(&id).ok_or(format!("{id} reported but absent"))?;
    disk_matches(state, &id, device, spec, image)
        .map_err(|why| format!("{} disk differs from its spec: {why}", report.outcome))
}

fn check_removal(result: &Result<Outcome, Error>, id: &str) -> Result<(), String> {
    match result {
        Ok(Outcome::Removed | Outcome::Absent) | Err(_) => Ok(()),
        Ok(other) => Err(format!("removing {id} gave {other}")),
    }
}

/// Whether `id` is ours, of `kind` (`nic`, `disk`) and `name`, on any bus.
fn is_id_of(id: &str, kind: &str, name: &str) -> bool {
    id.parse::<DeviceId>().is_ok_and(|id| id.kind().prefix() == kind && id.name() == name)
}

async fn play(machine: Machine, ops: Vec<(Op, Option<(usize, Fault)>)>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let images = (0..2)
        .map(|n| {
            let path = dir.path().join(format!("image{n}.raw"));
            std::fs::write(&path, vec![0u8; 4096]).unwrap();
            let identity = open_image(&path, Access::ReadOnly).unwrap().identity().unwrap();
            (path, identity)
        })
        .collect();
    let fake = FakeQemu::start(None);
    let mut planner = Planner::default();
    match machine {
        Machine::Pc => {}
        Machine::PcBridges => {
            fake.state().pc_bridges(&["br1", "br2"]);
            planner.preferences =
                Preferences::default().reserve("pci.0", 0..32).reserve("br1", 1..32);
        }
        Machine::Q35 => fake.state().q35(&["rp1", "rp2", "rp3"]),
    }
    let observer = Hotplug::new(Client::connect(fake.server.path()).await.unwrap());
    let mut world =
        World { fake, hotplug: None, observer, images, asked: Vec::new(), planner, _dir: dir };
    for (index, (op, fault)) in ops.iter().enumerate() {
        {
            let mut state = world.fake.state();
            state.fault = fault.map(|(offset, kind)| (state.changes + offset, kind));
        }
        world.run(op).await.map_err(|why| format!("op {index} {op:?} {fault:?}: {why}"))?;
        world.fake.state().fault = None;
        world
            .check_accounted()
            .await
            .map_err(|why| format!("after op {index} {op:?} {fault:?}: {why}"))?;
    }
    // The VM runs, the manager is gone, another cleans up: only complete devices are left.
    world.drop_connection();
    let hotplug = world.observer.clone();
    hotplug.client().execute("cont", ()).await.map_err(|e| e.to_string())?;
    let leftovers = hotplug.leftovers().await.map_err(|e| e.to_string())?;
    let report = hotplug.clean_leftovers(&leftovers).await.map_err(|e| e.to_string())?;
    if !report.is_complete() {
        return Err(format!("clean-up failed: {report:?}"));
    }
    let again = hotplug.leftovers().await.map_err(|e| e.to_string())?;
    if !again.is_empty() {
        return Err(format!("leftovers after the clean-up: {again:?}"));
    }
    let state = world.fake.state();
    let complete = complete_devices(&state, &world.asked)?;
    let clean = state.fd_names.is_empty()
        && state.objects.is_empty()
        && state.netdevs.keys().all(|netdev| complete.contains(netdev))
        && state.nodes.keys().all(|node| complete.contains(node))
        && state.fdsets.keys().all(|set| state.nodes.values().any(|n| n.fdset == Some(*set)));
    if clean { Ok(()) } else { Err(format!("after the clean-up QEMU still holds: {state:?}")) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_failures_leaves_anything_unaccounted(
        machine in machine(),
        ops in proptest::collection::vec((op(), fault()), 1..10)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = runtime.block_on(play(machine, ops));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// The model's own rules, checked once, so the property test above means something:
/// an fdset removed while paused stays listed and usable, and goes when the VM runs.
#[test]
fn the_model_keeps_removed_fdsets_while_paused() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let fake = FakeQemu::start(None);
        let client = Client::connect(fake.server.path()).await.unwrap();
        let file = tempfile::tempfile().unwrap();
        client.execute("stop", ()).await.unwrap();
        let added = client.add_fd(&file, None, Some("x")).await.unwrap();
        client.remove_fd(added.fdset_id, None).await.unwrap();
        assert_eq!(client.query_fdsets().await.unwrap().len(), 1, "listed while paused");
        client.execute("cont", ()).await.unwrap();
        assert!(client.query_fdsets().await.unwrap().is_empty(), "closed once running");
    });
}
