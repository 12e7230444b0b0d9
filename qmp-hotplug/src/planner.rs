//! From what the caller wants ([`spec`](crate::spec)) and what QEMU has ([`Snapshot`]) to a
//! [`Plan`]: pure, no I/O and no client; the QMP shapes it reads come from `qmp_codec`.

use hostdev::image::ImageIdentity;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::adopt::protocol_driver;
use crate::ids::{DeviceId, DeviceKind};
use crate::ownership::{IntentMarker, MARKER_QOM_TYPE, disk_opaque};
use crate::pci::Slot;
use crate::plan::{FdRef, FdsetRef, PLANNED_FDSET_PATH, Plan, PlannedStep, Step};
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
    /// The id and slot for a new device of `kind`: the caller's slot, or the first free
    /// one. Never an earlier try's: what an interrupted try left is removed before
    /// planning, and a complete device is compared, not planned again.
    fn place(
        &self,
        kind: DeviceKind,
        name: &str,
        wanted: Option<u8>,
        snapshot: &Snapshot,
    ) -> Result<DeviceId, Error> {
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

    /// The plan to hot-add `spec`'s NIC: create the intent marker, `getfd` each tap (and
    /// vhost) descriptor, `netdev_add`, `device_add`, delete the marker.
    ///
    /// # Errors
    /// A bad name, slot or queue count, or a full bus.
    pub fn nic_add(&self, spec: &NicSpec, snapshot: &Snapshot) -> Result<(DeviceId, Plan), Error> {
        check_queues(spec.queues)?;
        let id = self.place(DeviceKind::Nic, &spec.name, spec.slot, snapshot)?;
        let vhosts = if spec.vhost == Vhost::Fds { spec.queues } else { 0 };
        let marker = IntentMarker { device: id.clone(), taps: spec.queues, vhosts };
        let mut marker_arguments = Map::new();
        marker_arguments.insert("qom-type".into(), MARKER_QOM_TYPE.into());
        marker_arguments.insert("id".into(), marker.object_id().into());
        marker_arguments.insert("data".into(), "qmp-rs hotplug intent".into());
        let mut steps = vec![PlannedStep::new(
            Step::ObjectAdd { id: marker.object_id(), arguments: marker_arguments },
            Some(Step::ObjectDel { id: marker.object_id() }),
        )];
        let taps: Vec<String> = (0..spec.queues).map(|queue| id.tap_fd_name(queue)).collect();
        let vhost_names: Vec<String> = (0..vhosts).map(|queue| id.vhost_fd_name(queue)).collect();
        let descriptors =
            taps.iter().enumerate().map(|(queue, name)| (name, FdRef::Tap(queue))).chain(
                vhost_names.iter().enumerate().map(|(queue, name)| (name, FdRef::Vhost(queue))),
            );
        for (name, fd) in descriptors {
            steps.push(PlannedStep::new(
                Step::GetFd { name: name.clone(), fd },
                Some(Step::CloseFd { name: name.clone() }),
            ));
        }
        let fd_steps: Vec<usize> = (1..steps.len()).collect();

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
        match vhost_names.as_slice() {
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
        steps.push(Self::device_step(&id, device));
        steps.push(
            PlannedStep::new(Step::ObjectDel { id: marker.object_id() }, None)
                .superseding([0])
                .best_effort(),
        );
        Ok((id, Plan::new(steps)))
    }

    /// The plan to hot-add `spec`'s disk: for a descriptor source, `add-fd` of the image
    /// (whose identity is `image`) into a new fdset that keeps it for the disk's life,
    /// with the fingerprint as its opaque; `blockdev-add` (`file` for a regular file,
    /// `host_device` for a block device, `nbd` for an export); `device_add`.
    ///
    /// # Errors
    /// A bad name or slot, a full bus, or a descriptor source without `image`.
    pub fn disk_add(
        &self,
        spec: &DiskSpec,
        image: Option<&ImageIdentity>,
        snapshot: &Snapshot,
    ) -> Result<(DeviceId, Plan), Error> {
        spec.settings.check(matches!(spec.source, DiskSource::Nbd(_)))?;
        let id = self.place(DeviceKind::Disk, &spec.name, spec.slot, snapshot)?;
        let mut steps = Vec::new();
        let (mut file, fdset) = match (&spec.source, image) {
            (DiskSource::Nbd(export), _) => (nbd_file(export, &id.file_node_name()), None),
            (_, Some(image)) => {
                steps.push(PlannedStep::new(
                    Step::AddFd { opaque: disk_opaque(&id, image), fd: FdRef::Image },
                    Some(Step::RemoveFdset { fdset: FdsetRef::Planned }),
                ));
                let file = json!({
                    "driver": protocol_driver(image),
                    "node-name": id.file_node_name(),
                    "filename": PLANNED_FDSET_PATH,
                    "read-only": spec.read_only,
                });
                (file, Some(FdsetRef::Planned))
            }
            (_, None) => {
                return Err(Error::InvalidSpec(
                    "a disk passed as a descriptor needs its image's identity".into(),
                ));
            }
        };
        if let Value::Object(file) = &mut file {
            spec.settings.node_options(file, true);
        }
        let mut node = Map::new();
        node.insert("driver".into(), spec.format.driver().into());
        node.insert("node-name".into(), id.node_name().into());
        node.insert("read-only".into(), spec.read_only.into());
        spec.settings.node_options(&mut node, false);
        node.insert("file".into(), file);
        steps.push(PlannedStep::new(
            Step::BlockdevAdd { node_name: id.node_name(), arguments: node, fdset },
            Some(Step::BlockdevDel { node_name: id.node_name() }),
        ));
        let mut device = self.device_arguments(&spec.model, &id);
        device.insert("drive".into(), id.node_name().into());
        spec.settings.device_options(&mut device);
        steps.push(Self::device_step(&id, device));
        Ok((id, Plan::new(steps)))
    }

    /// The plan to hot-remove NIC `id`, as far as QEMU still has it: `device_del`
    /// (waiting for the guest), then `netdev_del` (in that order: deleting the netdev
    /// first would leave the NIC without a backend and still return success), then the
    /// descriptor names and marker of an interrupted add.
    pub fn nic_del(&self, id: &DeviceId, snapshot: &Snapshot) -> Plan {
        let mut steps = Vec::new();
        let name = id.to_string();
        if snapshot.peripherals.contains_key(&name) {
            steps.push(PlannedStep::new(Step::DeviceDel { id: name.clone() }, None));
        }
        if snapshot.network.netdevs.contains_key(&id.netdev_id()) {
            steps.push(PlannedStep::new(Step::NetdevDel { id: id.netdev_id() }, None));
        }
        for marker in snapshot.markers().filter(|marker| marker.device == *id) {
            for fd_name in marker.fd_names() {
                steps.push(PlannedStep::new(Step::CloseFd { name: fd_name }, None));
            }
            steps.push(PlannedStep::new(Step::ObjectDel { id: marker.object_id() }, None));
        }
        Plan::new(steps)
    }

    /// The plan to hot-remove disk `id`, as far as QEMU still has it: `device_del`
    /// (waiting for the guest), `blockdev-del` of its node, `remove-fd` of its fdsets.
    pub fn disk_del(&self, id: &DeviceId, snapshot: &Snapshot) -> Plan {
        let mut steps = Vec::new();
        let name = id.to_string();
        if snapshot.peripherals.contains_key(&name) {
            steps.push(PlannedStep::new(Step::DeviceDel { id: name }, None));
        }
        if snapshot.block_nodes.contains_key(&id.node_name()) {
            steps.push(PlannedStep::new(Step::BlockdevDel { node_name: id.node_name() }, None));
        }
        let mut sets: Vec<u64> =
            snapshot.disk_fdsets().filter(|(_, set)| set.device == *id).map(|(id, _)| id).collect();
        sets.dedup();
        for fdset_id in sets {
            steps.push(PlannedStep::new(Step::RemoveFdset { fdset: FdsetRef::Id(fdset_id) }, None));
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

    fn device_step(id: &DeviceId, arguments: Map<String, Value>) -> PlannedStep {
        PlannedStep::new(
            Step::DeviceAdd { id: id.to_string(), arguments },
            Some(Step::DeviceDel { id: id.to_string() }),
        )
    }
}

/// Checks a queue count: 1 to [`MAX_NIC_QUEUES`].
///
/// # Errors
/// [`Error::InvalidSpec`].
pub(crate) fn check_queues(queues: usize) -> Result<(), Error> {
    if queues == 0 || queues > MAX_NIC_QUEUES {
        return Err(Error::InvalidSpec(format!(
            "a NIC needs 1 to {MAX_NIC_QUEUES} queues, not {queues}"
        )));
    }
    Ok(())
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
    use hostdev::DeviceNumber;
    use qmp_codec::{FdsetFdInfo, FdsetInfo};

    use super::*;
    use crate::disk_settings::{Aio, DetectZeroes, Discard, DiskSettings};
    use crate::netinfo::NetworkInfo;
    use crate::pci::SlotMap;
    use crate::snapshot::BlockNode;
    use crate::spec::{DiskFormat, NbdExport};

    fn empty() -> Snapshot {
        let pci = json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "qdev_id": ""},
            {"bus": 0, "slot": 1, "function": 0, "qdev_id": ""},
            {"bus": 0, "slot": 1, "function": 1, "qdev_id": ""}]}]);
        Snapshot::new(SlotMap::from_query_pci(&pci).unwrap())
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
        snapshot.peripherals.insert(id.into(), "virtio-net-pci".into());
        snapshot
    }

    fn commands(plan: &Plan) -> Vec<String> {
        plan.steps().iter().map(|s| s.step.to_string()).collect()
    }

    fn arguments(plan: &Plan, command: &str) -> Value {
        plan.steps().iter().find(|s| s.step.command() == command).unwrap().step.arguments()
    }

    fn undo(plan: &Plan, completed: usize) -> Vec<String> {
        plan.undo_after(completed).iter().map(ToString::to_string).collect()
    }

    const FILE: ImageIdentity = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 77 };

    #[test]
    fn a_single_queue_nic_is_marked_passed_added_and_unmarked() {
        let mut spec = NicSpec::new("a1");
        spec.mac = Some("52:54:00:12:34:56".into());
        let (id, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
        assert_eq!(id.to_string(), "nic-a1-pci-2");
        assert_eq!(
            commands(&plan),
            [
                "object-add qmp-rs-intent.nic-a1-pci-2.t1.v0",
                "getfd nic-a1-pci-2-tap0",
                "netdev_add nic-a1-pci-2",
                "device_add nic-a1-pci-2",
                "object-del qmp-rs-intent.nic-a1-pci-2.t1.v0"
            ]
        );
        assert_eq!(
            arguments(&plan, "object-add"),
            json!({"qom-type": "secret", "id": "qmp-rs-intent.nic-a1-pci-2.t1.v0",
                   "data": "qmp-rs hotplug intent"})
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
        // The marker goes last in every rollback, so an interrupted one still finds the names.
        assert_eq!(
            undo(&plan, 2),
            ["closefd nic-a1-pci-2-tap0", "object-del qmp-rs-intent.nic-a1-pci-2.t1.v0"]
        );
        assert_eq!(
            undo(&plan, 4),
            [
                "device_del nic-a1-pci-2",
                "netdev_del nic-a1-pci-2",
                "object-del qmp-rs-intent.nic-a1-pci-2.t1.v0"
            ]
        );
        let last = plan.steps().last().unwrap();
        assert!(last.best_effort && last.undo.is_none());
        assert_eq!(undo(&plan, 5), ["device_del nic-a1-pci-2", "netdev_del nic-a1-pci-2"]);
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
        assert_eq!(arguments(&plan, "object-add")["id"], "qmp-rs-intent.nic-mq-pci-9.t2.v2");
        let device = arguments(&plan, "device_add");
        assert_eq!(
            (device["mq"].clone(), device["vectors"].clone(), device["addr"].clone()),
            (json!(true), json!(6), json!("0x9"))
        );
        let fds: Vec<_> = plan.steps().iter().filter_map(|s| s.step.fd()).collect();
        assert_eq!(fds, [FdRef::Tap(0), FdRef::Tap(1), FdRef::Vhost(0), FdRef::Vhost(1)]);
        // Before netdev_add, every getfd name is undone; after it, only the netdev.
        assert_eq!(plan.undo_after(5).len(), 5);
        assert_eq!(
            undo(&plan, 6),
            ["netdev_del nic-mq-pci-9", "object-del qmp-rs-intent.nic-mq-pci-9.t2.v2"]
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
    fn another_devices_slot_is_not_reused() {
        let snapshot = with_device(empty(), 2, "nic-other-pci-2");
        let (id, _) = Planner::default().nic_add(&NicSpec::new("a1"), &snapshot).unwrap();
        assert_eq!(id.slot(), 3);
    }

    #[test]
    fn a_path_disk_keeps_its_fingerprinted_fdset() {
        let mut snapshot = empty();
        snapshot.fdsets.push(FdsetInfo { fdset_id: 0, fds: vec![] });
        let mut spec = DiskSpec::new("d1", DiskSource::Path("/img".into()));
        spec.format = DiskFormat::Qcow2;
        spec.read_only = true;
        let (id, plan) = Planner::default().disk_add(&spec, Some(&FILE), &snapshot).unwrap();
        assert_eq!(id.to_string(), "disk-d1-pci-2");
        assert_eq!(
            commands(&plan),
            ["add-fd a new fdset", "blockdev-add disk-d1-pci-2", "device_add disk-d1-pci-2"]
        );
        assert_eq!(
            arguments(&plan, "add-fd"),
            json!({"opaque": "qmp-rs:disk-d1-pci-2:file=8.1:77"}),
            "no fdset-id: QEMU picks a new one"
        );
        let node = plan.steps()[1].step.resolved(Some(5)).arguments();
        assert_eq!(
            node,
            json!({"driver": "qcow2", "node-name": "disk-d1-pci-2", "read-only": true,
                   "file": {"driver": "file", "node-name": "disk-d1-pci-2-file",
                            "filename": "/dev/fdset/5", "read-only": true}})
        );
        assert_eq!(arguments(&plan, "device_add")["drive"], json!("disk-d1-pci-2"));
        assert_eq!(undo(&plan, 1), ["remove-fd the new fdset"]);
        assert_eq!(undo(&plan, 2), ["blockdev-del disk-d1-pci-2", "remove-fd the new fdset"]);
        assert!(matches!(
            Planner::default().disk_add(&spec, None, &snapshot),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn a_block_device_takes_host_device() {
        let spec = DiskSpec::new("b", DiskSource::Path("/dev/loop0".into()));
        let block = ImageIdentity::BlockDevice(DeviceNumber::new(7, 0));
        let (_, plan) = Planner::default().disk_add(&spec, Some(&block), &empty()).unwrap();
        assert_eq!(arguments(&plan, "blockdev-add")["file"]["driver"], "host_device");
        assert_eq!(arguments(&plan, "add-fd")["opaque"], "qmp-rs:disk-b-pci-2:blk=7.0");
    }

    #[test]
    fn an_nbd_disk_passes_no_descriptor() {
        let export = NbdExport::parse_uri("nbd+unix:///exp0?socket=/run/nbd.sock").unwrap();
        let (_, plan) = Planner::default()
            .disk_add(&DiskSpec::new("n", DiskSource::Nbd(export)), None, &empty())
            .unwrap();
        assert_eq!(commands(&plan), ["blockdev-add disk-n-pci-2", "device_add disk-n-pci-2"]);
        assert_eq!(
            arguments(&plan, "blockdev-add")["file"],
            json!({"driver": "nbd", "node-name": "disk-n-pci-2-file", "export": "exp0",
                   "server": {"type": "unix", "path": "/run/nbd.sock"}})
        );
    }

    #[test]
    fn disk_settings_go_to_both_nodes_and_the_device_and_bad_ones_plan_nothing() {
        let export = NbdExport::parse_uri("nbd://h/e").unwrap();
        let settings = DiskSettings {
            cache_direct: true,
            discard: Some(Discard::Unmap),
            detect_zeroes: Some(DetectZeroes::Unmap),
            serial: Some("S1".into()),
            bootindex: Some(2),
            write_cache: Some(true),
            ..DiskSettings::default()
        };
        let spec = DiskSpec { settings, ..DiskSpec::new("n", DiskSource::Nbd(export.clone())) };
        let (_, plan) = Planner::default().disk_add(&spec, None, &empty()).unwrap();
        let node = arguments(&plan, "blockdev-add");
        for node in [&node, &node["file"]] {
            assert_eq!(node["cache"], json!({"direct": true, "no-flush": false}), "{node}");
            assert_eq!(
                (&node["discard"], &node["detect-zeroes"]),
                (&json!("unmap"), &json!("unmap"))
            );
        }
        let device = arguments(&plan, "device_add");
        assert_eq!((&device["serial"], &device["bootindex"]), (&json!("S1"), &json!(2)));
        assert_eq!(device["write-cache"], "on");

        let aio = DiskSettings { aio: Some(Aio::Threads), ..DiskSettings::default() };
        let spec = DiskSpec { settings: aio, ..DiskSpec::new("n", DiskSource::Nbd(export)) };
        let refused = Planner::default().disk_add(&spec, None, &empty()).unwrap_err();
        assert!(refused.to_string().contains("not to NBD"), "{refused}");
    }

    #[test]
    fn removal_plans_take_only_what_qemu_has() {
        let nic: DeviceId = "nic-a-pci-3".parse().unwrap();
        let mut snapshot = with_device(empty(), 3, "nic-a-pci-3");
        snapshot.network = NetworkInfo::parse(" \\ nic-a-pci-3: index=0,type=tap,fd=9\n");
        snapshot.objects.insert("qmp-rs-intent.nic-a-pci-3.t1.v0".into());
        assert_eq!(
            commands(&Planner::default().nic_del(&nic, &snapshot)),
            [
                "device_del nic-a-pci-3",
                "netdev_del nic-a-pci-3",
                "closefd nic-a-pci-3-tap0",
                "object-del qmp-rs-intent.nic-a-pci-3.t1.v0"
            ]
        );
        assert!(Planner::default().nic_del(&nic, &empty()).steps().is_empty());

        let disk: DeviceId = "disk-b-pci-4".parse().unwrap();
        let mut snapshot = empty();
        snapshot
            .block_nodes
            .insert("disk-b-pci-4".into(), BlockNode::new("raw", false, "/dev/fdset/2"));
        snapshot.fdsets.push(FdsetInfo {
            fdset_id: 2,
            fds: vec![FdsetFdInfo { fd: 9, opaque: Some("qmp-rs:disk-b-pci-4:blk=7.0".into()) }],
        });
        snapshot.fdsets.push(FdsetInfo {
            fdset_id: 3,
            fds: vec![FdsetFdInfo { fd: 10, opaque: Some("disk-b-pci-4".into()) }],
        });
        assert_eq!(
            commands(&Planner::default().disk_del(&disk, &snapshot)),
            ["blockdev-del disk-b-pci-4", "remove-fd fdset 2", "remove-fd fdset 3"]
        );
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
