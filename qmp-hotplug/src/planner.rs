//! From what the caller wants ([`spec`](crate::spec)) and what QEMU has ([`Snapshot`]) to a
//! [`Plan`]: pure, no I/O and no client; the QMP shapes it reads come from `qmp_codec`.

use serde_json::{Map, Value, json};

use crate::Error;
use crate::ids::{DeviceId, DeviceKind};
use crate::pci::Slot;
use crate::plan::{FdRef, Plan, PlannedStep, Step};
use crate::snapshot::Snapshot;
use crate::spec::{DiskSource, DiskSpec, MAX_NIC_QUEUES, NbdExport, NbdServer, NicSpec, Vhost};

/// Turns specs and a [`Snapshot`] into [`Plan`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planner {
    /// The bus devices go on (`pci.0` on the `pc` machine).
    pub bus: String,
    /// Slots never picked automatically (kept for devices added at boot).
    pub reserved_slots: Vec<u8>,
}

impl Default for Planner {
    fn default() -> Self {
        Self { bus: "pci.0".into(), reserved_slots: Vec::new() }
    }
}

impl Planner {
    /// The id and slot for a new device of `kind`: the one an earlier try of the same
    /// device left behind, the caller's slot, or the first free one.
    fn place(
        &self,
        kind: DeviceKind,
        name: &str,
        wanted: Option<u8>,
        snapshot: &Snapshot,
    ) -> Result<DeviceId, Error> {
        if let Some(earlier) = snapshot.earlier_try(kind, name) {
            if wanted.is_none_or(|slot| slot == earlier.slot()) {
                let slot_state = snapshot.pci.get(earlier.slot());
                let ours_or_free = match slot_state {
                    Some(Slot::Free) => true,
                    Some(Slot::Occupied(_)) => {
                        snapshot.pci.has_device(&earlier.to_string(), earlier.slot())
                    }
                    _ => false,
                };
                if ours_or_free {
                    return Ok(earlier);
                }
            }
        }
        let pci = snapshot.pci.clone().with_reserved(self.reserved_slots.iter().copied());
        let slot = match wanted {
            Some(slot) => match pci.get(slot) {
                Some(Slot::Free) => slot,
                Some(Slot::Occupied(functions)) => {
                    let user = functions.first().and_then(|f| f.qdev_id.clone());
                    return Err(Error::SlotUnavailable {
                        slot,
                        reason: format!("in use by {}", user.as_deref().unwrap_or("the machine")),
                    });
                }
                Some(Slot::Reserved) => {
                    return Err(Error::SlotUnavailable { slot, reason: "reserved".into() });
                }
                None => return Err(Error::SlotUnavailable { slot, reason: "out of range".into() }),
            },
            None => pci.free_slot()?,
        };
        DeviceId::new(kind, name, slot)
    }

    /// The plan to hot-add `spec`'s NIC: `getfd` each tap (and vhost) descriptor,
    /// `netdev_add`, `device_add`.
    ///
    /// # Errors
    /// A bad name, slot or queue count, or a full bus.
    pub fn nic_add(&self, spec: &NicSpec, snapshot: &Snapshot) -> Result<(DeviceId, Plan), Error> {
        if spec.queues == 0 || spec.queues > MAX_NIC_QUEUES {
            return Err(Error::InvalidSpec(format!(
                "a NIC needs 1 to {MAX_NIC_QUEUES} queues, not {}",
                spec.queues
            )));
        }
        let id = self.place(DeviceKind::Nic, &spec.name, spec.slot, snapshot)?;
        let present = snapshot.peripherals.contains(&id.to_string());
        let mut steps = Vec::new();
        let mut fd_names =
            |names: &mut Vec<String>, fd: fn(usize) -> FdRef, name: &dyn Fn(usize) -> String| {
                for queue in 0..spec.queues {
                    names.push(name(queue));
                    steps.push(
                        PlannedStep::new(
                            Step::GetFd { name: name(queue), fd: fd(queue) },
                            Some(Step::CloseFd { name: name(queue) }),
                        )
                        .already_done(present),
                    );
                }
            };
        let mut taps = Vec::new();
        fd_names(&mut taps, FdRef::Tap, &|queue| id.tap_fd_name(queue));
        let mut vhosts = Vec::new();
        if spec.vhost == Vhost::Fds {
            fd_names(&mut vhosts, FdRef::Vhost, &|queue| id.vhost_fd_name(queue));
        }
        let fd_steps: Vec<usize> = (0..steps.len()).collect();

        let mut netdev = Map::new();
        netdev.insert("type".into(), "tap".into());
        netdev.insert("id".into(), id.netdev_id().into());
        if spec.queues == 1 {
            netdev.insert("fd".into(), taps[0].clone().into());
        } else {
            netdev.insert("fds".into(), taps.join(":").into());
        }
        if spec.vhost != Vhost::Off {
            netdev.insert("vhost".into(), true.into());
        }
        match vhosts.as_slice() {
            [] => {}
            [one] => {
                netdev.insert("vhostfd".into(), one.clone().into());
            }
            many => {
                netdev.insert("vhostfds".into(), many.join(":").into());
            }
        }
        steps.push(
            PlannedStep::new(
                Step::NetdevAdd { id: id.netdev_id(), arguments: netdev },
                Some(Step::NetdevDel { id: id.netdev_id() }),
            )
            .already_done(present)
            .superseding(fd_steps),
        );

        let mut device = self.device_arguments(&spec.model, &id);
        device.insert("netdev".into(), id.netdev_id().into());
        if let Some(mac) = &spec.mac {
            device.insert("mac".into(), mac.clone().into());
        }
        if spec.queues > 1 {
            device.insert("mq".into(), true.into());
            // One vector per rx and tx queue, plus config and control.
            device.insert("vectors".into(), (2 * spec.queues + 2).into());
        }
        steps.push(Self::device_step(&id, device, present));
        Ok((id, Plan::new(steps)))
    }

    /// The plan to hot-add `spec`'s disk: `add-fd` (for a descriptor source),
    /// `blockdev-add`, `remove-fd` to hand the fdset over to the node, `device_add`.
    ///
    /// # Errors
    /// A bad name or slot, or a full bus.
    pub fn disk_add(
        &self,
        spec: &DiskSpec,
        snapshot: &Snapshot,
    ) -> Result<(DeviceId, Plan), Error> {
        let id = self.place(DeviceKind::Disk, &spec.name, spec.slot, snapshot)?;
        let node_present = snapshot.block_nodes.contains(&id.node_name());
        let mut steps = Vec::new();
        let file = if spec.source.needs_fd() {
            let existing = snapshot.fdset_with_opaque(&id.fdset_opaque());
            let fdset_id = existing.unwrap_or_else(|| snapshot.unused_fdset_id());
            // With the node present, any fdset of ours is an earlier try's leftover copy.
            let add_done = existing.is_some() || node_present;
            let add_undo =
                (existing.is_some() || !node_present).then_some(Step::RemoveFdset { fdset_id });
            steps.push(
                PlannedStep::new(
                    Step::AddFd { fdset_id, opaque: id.fdset_opaque(), fd: FdRef::Image },
                    add_undo,
                )
                .already_done(add_done),
            );
            json!({
                "driver": "file",
                "node-name": id.file_node_name(),
                "filename": format!("/dev/fdset/{fdset_id}"),
                "read-only": spec.read_only,
            })
        } else {
            let DiskSource::Nbd(export) = &spec.source else {
                unreachable!("every source without a descriptor is NBD")
            };
            nbd_file(export, &id.file_node_name())
        };
        let fdset_step = spec.source.needs_fd().then_some(0);

        let mut node = Map::new();
        node.insert("driver".into(), spec.format.driver().into());
        node.insert("node-name".into(), id.node_name().into());
        node.insert("read-only".into(), spec.read_only.into());
        node.insert("file".into(), file);
        steps.push(
            PlannedStep::new(
                Step::BlockdevAdd { node_name: id.node_name(), arguments: node },
                Some(Step::BlockdevDel { node_name: id.node_name() }),
            )
            .already_done(node_present),
        );
        if let Some(add_fd) = fdset_step {
            let Step::AddFd { fdset_id, .. } = steps[add_fd].step else { unreachable!() };
            // The node holds its own duplicate now; removing the set makes QEMU close our
            // copy and drop the set when the node goes, so nothing is left to undo.
            let still_listed = snapshot.fdset_with_opaque(&id.fdset_opaque()).is_some();
            steps.push(
                PlannedStep::new(Step::RemoveFdset { fdset_id }, None)
                    .already_done(node_present && !still_listed)
                    .superseding([add_fd]),
            );
        }

        let mut device = self.device_arguments(&spec.model, &id);
        device.insert("drive".into(), id.node_name().into());
        let present = snapshot.peripherals.contains(&id.to_string());
        steps.push(Self::device_step(&id, device, present));
        Ok((id, Plan::new(steps)))
    }

    /// The plan to hot-remove NIC `id`: `device_del` (waiting for the guest), then
    /// `netdev_del`, in that order: deleting the netdev first would leave the NIC without
    /// a backend and still return success.
    pub fn nic_del(&self, id: &str, snapshot: &Snapshot) -> Plan {
        Plan::new(vec![
            PlannedStep::new(Step::DeviceDel { id: id.into() }, None)
                .already_done(!snapshot.peripherals.contains(id)),
            PlannedStep::new(Step::NetdevDel { id: id.into() }, None),
        ])
    }

    /// The plan to hot-remove disk `id`: `device_del` (waiting for the guest), then
    /// `blockdev-del` of its node, and `remove-fd` of an fdset an interrupted add left.
    pub fn disk_del(&self, id: &str, snapshot: &Snapshot) -> Plan {
        let mut steps = vec![
            PlannedStep::new(Step::DeviceDel { id: id.into() }, None)
                .already_done(!snapshot.peripherals.contains(id)),
            PlannedStep::new(Step::BlockdevDel { node_name: id.into() }, None)
                .already_done(!snapshot.block_nodes.contains(id)),
        ];
        if let Some(fdset_id) = snapshot.fdset_with_opaque(id) {
            steps.push(PlannedStep::new(Step::RemoveFdset { fdset_id }, None));
        }
        Plan::new(steps)
    }

    fn device_arguments(&self, model: &str, id: &DeviceId) -> Map<String, Value> {
        let mut device = Map::new();
        device.insert("driver".into(), model.into());
        device.insert("id".into(), id.to_string().into());
        device.insert("bus".into(), self.bus.clone().into());
        device.insert("addr".into(), id.pci_addr().into());
        device
    }

    fn device_step(id: &DeviceId, arguments: Map<String, Value>, present: bool) -> PlannedStep {
        PlannedStep::new(
            Step::DeviceAdd { id: id.to_string(), arguments },
            Some(Step::DeviceDel { id: id.to_string() }),
        )
        .already_done(present)
    }
}

/// The `file` child of an NBD disk's `blockdev-add`: QEMU's `nbd` driver, no descriptor.
fn nbd_file(export: &NbdExport, node_name: &str) -> Value {
    let server = match &export.server {
        NbdServer::Unix(path) => json!({"type": "unix", "path": path}),
        NbdServer::Tcp { host, port } => {
            json!({"type": "inet", "host": host, "port": port.to_string()})
        }
    };
    let mut file = json!({"driver": "nbd", "node-name": node_name, "server": server});
    if let Some(name) = &export.export {
        file["export"] = name.clone().into();
    }
    file
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use qmp_codec::{FdsetFdInfo, FdsetInfo};

    use super::*;
    use crate::pci::SlotMap;
    use crate::spec::DiskFormat;

    fn empty() -> Snapshot {
        let pci = json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "qdev_id": ""},
            {"bus": 0, "slot": 1, "function": 0, "qdev_id": ""},
            {"bus": 0, "slot": 1, "function": 1, "qdev_id": ""}]}]);
        Snapshot {
            pci: SlotMap::from_query_pci(&pci).unwrap(),
            peripherals: BTreeSet::new(),
            block_nodes: BTreeSet::new(),
            fdsets: Vec::new(),
        }
    }

    fn with_device(mut snapshot: Snapshot, slot: u8, id: &str) -> Snapshot {
        let mut devices = vec![json!({"bus": 0, "slot": 0, "function": 0, "qdev_id": ""})];
        for (number, state) in snapshot.pci.iter().skip(1) {
            for function in state.functions() {
                devices.push(json!({"bus": 0, "slot": number, "function": function.function,
                                    "qdev_id": function.qdev_id.clone().unwrap_or_default()}));
            }
        }
        devices.push(json!({"bus": 0, "slot": slot, "function": 0, "qdev_id": id}));
        snapshot.pci = SlotMap::from_query_pci(&json!([{"bus": 0, "devices": devices}])).unwrap();
        snapshot.peripherals.insert(id.into());
        snapshot
    }

    fn commands(plan: &Plan) -> Vec<String> {
        plan.steps().iter().map(|s| s.step.to_string()).collect()
    }

    fn arguments(plan: &Plan, command: &str) -> Value {
        plan.steps().iter().find(|s| s.step.command() == command).unwrap().step.arguments()
    }

    #[test]
    fn a_single_queue_nic_is_getfd_netdev_device() {
        let mut spec = NicSpec::new("a1");
        spec.mac = Some("52:54:00:12:34:56".into());
        let (id, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
        assert_eq!(id.to_string(), "nic-a1-pci-2");
        assert_eq!(
            commands(&plan),
            ["getfd nic-a1-pci-2-tap0", "netdev_add nic-a1-pci-2", "device_add nic-a1-pci-2"]
        );
        assert_eq!(
            arguments(&plan, "netdev_add"),
            json!({"type": "tap", "id": "nic-a1-pci-2", "fd": "nic-a1-pci-2-tap0"})
        );
        assert_eq!(
            arguments(&plan, "device_add"),
            json!({"driver": "virtio-net-pci", "id": "nic-a1-pci-2", "bus": "pci.0", "addr": "0x2",
                   "netdev": "nic-a1-pci-2", "mac": "52:54:00:12:34:56"})
        );
        assert!(plan.steps().iter().all(|s| !s.already_done));
    }

    #[test]
    fn multiqueue_vhost_nic_passes_every_descriptor_by_name() {
        let mut spec = NicSpec::new("mq");
        spec.queues = 2;
        spec.vhost = Vhost::Fds;
        spec.slot = Some(9);
        let (_, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
        assert_eq!(
            arguments(&plan, "netdev_add"),
            json!({"type": "tap", "id": "nic-mq-pci-9", "fds": "nic-mq-pci-9-tap0:nic-mq-pci-9-tap1",
                   "vhost": true, "vhostfds": "nic-mq-pci-9-vhost0:nic-mq-pci-9-vhost1"})
        );
        let device = arguments(&plan, "device_add");
        assert_eq!(
            (device["mq"].clone(), device["vectors"].clone(), device["addr"].clone()),
            (json!(true), json!(6), json!("0x9"))
        );
        let fds: Vec<_> = plan.steps().iter().filter_map(|s| s.step.fd()).collect();
        assert_eq!(fds, [FdRef::Tap(0), FdRef::Tap(1), FdRef::Vhost(0), FdRef::Vhost(1)]);
        // Before netdev_add, every getfd name is undone; after it, only the netdev.
        assert_eq!(plan.undo_after(4).len(), 4);
        assert_eq!(
            plan.undo_after(5).iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["netdev_del nic-mq-pci-9"]
        );
    }

    #[test]
    fn single_queue_vhost_uses_vhostfd_and_open_vhost_passes_none() {
        let mut spec = NicSpec::new("v");
        spec.vhost = Vhost::Fds;
        let (_, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
        assert_eq!(arguments(&plan, "netdev_add")["vhostfd"], json!("nic-v-pci-2-vhost0"));
        spec.vhost = Vhost::Open;
        let (_, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
        let netdev = arguments(&plan, "netdev_add");
        assert_eq!(netdev["vhost"], json!(true));
        assert!(netdev.get("vhostfd").is_none() && netdev.get("vhostfds").is_none());
    }

    #[test]
    fn bad_nic_specs_are_refused() {
        let mut spec = NicSpec::new("q");
        spec.queues = 0;
        assert!(matches!(Planner::default().nic_add(&spec, &empty()), Err(Error::InvalidSpec(_))));
        spec.queues = 1;
        spec.slot = Some(1);
        let error = Planner::default().nic_add(&spec, &empty()).unwrap_err();
        assert!(
            error.to_string().contains("slot 1") && error.to_string().contains("the machine"),
            "{error}"
        );
        spec.slot = Some(0);
        assert!(matches!(
            Planner::default().nic_add(&spec, &empty()),
            Err(Error::SlotUnavailable { .. })
        ));
        let planner = Planner { reserved_slots: vec![4], ..Planner::default() };
        spec.slot = Some(4);
        assert!(planner.nic_add(&spec, &empty()).unwrap_err().to_string().contains("reserved"));
        spec.slot = None;
        assert_eq!(planner.nic_add(&spec, &empty()).unwrap().0.slot(), 2);
        spec.name = "bad-name".into();
        assert!(matches!(
            Planner::default().nic_add(&spec, &empty()),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn a_retried_nic_add_finds_its_earlier_device() {
        let snapshot = with_device(empty(), 7, "nic-a1-pci-7");
        let (id, plan) = Planner::default().nic_add(&NicSpec::new("a1"), &snapshot).unwrap();
        assert_eq!(id.slot(), 7, "the earlier try's slot, not the first free one");
        assert!(plan.steps().iter().all(|s| s.already_done));
        assert_eq!(plan.pending().count(), 0);
    }

    #[test]
    fn another_devices_slot_is_not_reused() {
        let snapshot = with_device(empty(), 2, "nic-other-pci-2");
        let (id, _) = Planner::default().nic_add(&NicSpec::new("a1"), &snapshot).unwrap();
        assert_eq!(id.slot(), 3);
    }

    #[test]
    fn a_path_disk_is_addfd_blockdev_release_device() {
        let mut snapshot = empty();
        snapshot.fdsets.push(FdsetInfo { fdset_id: 0, fds: vec![] });
        let mut spec = DiskSpec::new("d1", DiskSource::Path("/img".into()));
        spec.format = DiskFormat::Qcow2;
        spec.read_only = true;
        let (id, plan) = Planner::default().disk_add(&spec, &snapshot).unwrap();
        assert_eq!(id.to_string(), "disk-d1-pci-2");
        assert_eq!(
            commands(&plan),
            [
                "add-fd fdset 1",
                "blockdev-add disk-d1-pci-2",
                "remove-fd fdset 1",
                "device_add disk-d1-pci-2"
            ]
        );
        assert_eq!(
            arguments(&plan, "blockdev-add"),
            json!({"driver": "qcow2", "node-name": "disk-d1-pci-2", "read-only": true,
                   "file": {"driver": "file", "node-name": "disk-d1-pci-2-file",
                            "filename": "/dev/fdset/1", "read-only": true}})
        );
        assert_eq!(arguments(&plan, "device_add")["drive"], json!("disk-d1-pci-2"));
        let undo = |n| plan.undo_after(n).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(undo(1), ["remove-fd fdset 1"]);
        assert_eq!(undo(2), ["blockdev-del disk-d1-pci-2", "remove-fd fdset 1"]);
        assert_eq!(undo(3), ["blockdev-del disk-d1-pci-2"], "the node owns the released set");
    }

    #[test]
    fn an_nbd_disk_passes_no_descriptor() {
        let export = NbdExport::parse_uri("nbd+unix:///exp0?socket=/run/nbd.sock").unwrap();
        let (_, plan) = Planner::default()
            .disk_add(&DiskSpec::new("n", DiskSource::Nbd(export)), &empty())
            .unwrap();
        assert_eq!(commands(&plan), ["blockdev-add disk-n-pci-2", "device_add disk-n-pci-2"]);
        assert_eq!(
            arguments(&plan, "blockdev-add")["file"],
            json!({"driver": "nbd", "node-name": "disk-n-pci-2-file", "export": "exp0",
                   "server": {"type": "unix", "path": "/run/nbd.sock"}})
        );
    }

    #[test]
    fn a_retried_disk_add_completes_what_is_missing() {
        let spec = DiskSpec::new("d1", DiskSource::Path("/img".into()));
        let fdset = |id| FdsetInfo {
            fdset_id: id,
            fds: vec![FdsetFdInfo { fd: 20, opaque: Some("disk-d1-pci-2".into()) }],
        };
        // The earlier try stopped after add-fd: reuse its set.
        let mut snapshot = empty();
        snapshot.fdsets.push(fdset(5));
        let (_, plan) = Planner::default().disk_add(&spec, &snapshot).unwrap();
        let pending: Vec<_> = plan.pending().map(|(_, s)| s.step.to_string()).collect();
        assert_eq!(
            pending,
            ["blockdev-add disk-d1-pci-2", "remove-fd fdset 5", "device_add disk-d1-pci-2"]
        );
        // ... after blockdev-add: release the set and add the device.
        snapshot.block_nodes.insert("disk-d1-pci-2".into());
        let (_, plan) = Planner::default().disk_add(&spec, &snapshot).unwrap();
        let pending: Vec<_> = plan.pending().map(|(_, s)| s.step.to_string()).collect();
        assert_eq!(pending, ["remove-fd fdset 5", "device_add disk-d1-pci-2"]);
        // ... after the release: only the device; a rollback would still delete the node.
        snapshot.fdsets.clear();
        let (_, plan) = Planner::default().disk_add(&spec, &snapshot).unwrap();
        let pending: Vec<_> = plan.pending().map(|(_, s)| s.step.to_string()).collect();
        assert_eq!(pending, ["device_add disk-d1-pci-2"]);
        assert_eq!(
            plan.undo_after(3).iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["blockdev-del disk-d1-pci-2"]
        );
    }

    #[test]
    fn removal_plans_skip_what_is_already_gone() {
        let snapshot = with_device(empty(), 3, "nic-a-pci-3");
        let plan = Planner::default().nic_del("nic-a-pci-3", &snapshot);
        assert_eq!(commands(&plan), ["device_del nic-a-pci-3", "netdev_del nic-a-pci-3"]);
        assert!(!plan.steps()[0].already_done);
        let plan = Planner::default().nic_del("nic-a-pci-3", &empty());
        assert!(plan.steps()[0].already_done, "no device: only the netdev is left to delete");
        let mut snapshot = empty();
        snapshot.fdsets.push(FdsetInfo {
            fdset_id: 2,
            fds: vec![FdsetFdInfo { fd: 9, opaque: Some("disk-b-pci-4".into()) }],
        });
        let plan = Planner::default().disk_del("disk-b-pci-4", &snapshot);
        let pending: Vec<_> = plan.pending().map(|(_, s)| s.step.to_string()).collect();
        assert_eq!(pending, ["remove-fd fdset 2"]);
    }

    #[test]
    fn planning_fills_the_bus_then_reports_it_full() {
        let mut snapshot = empty();
        for n in 0..30 {
            let (id, _) =
                Planner::default().nic_add(&NicSpec::new(format!("n{n}")), &snapshot).unwrap();
            assert_eq!(id.slot(), n + 2);
            snapshot = with_device(snapshot, id.slot(), &id.to_string());
        }
        assert!(matches!(
            Planner::default().nic_add(&NicSpec::new("last"), &snapshot),
            Err(Error::BusFull)
        ));
    }
}
