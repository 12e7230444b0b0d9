//! From what the caller wants ([`spec`](crate::spec)) and what QEMU has ([`Snapshot`]) to a
//! [`Plan`]: pure, no I/O and no client; the QMP shapes it reads come from `qmp_codec`.

use hostdev::image::ImageIdentity;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::adopt::protocol_driver;
use crate::ids::{DeviceId, DeviceKind};
use crate::ownership::{IntentMarker, MARKER_QOM_TYPE, Unseen, disk_opaque_with};
use crate::pci::PCI_SLOTS;
use crate::plan::{FdRef, FdsetRef, PLANNED_FDSET_PATH, Plan, PlannedStep, Step};
use crate::snapshot::Snapshot;
use crate::spec::{
    DiskBus, DiskSource, DiskSpec, MAX_NIC_QUEUES, NbdExport, NbdServer, NicSpec, Vhost,
};
use crate::tls;
use crate::topology::{BusKind, MachineKind, Preferences};

/// Turns specs and a [`Snapshot`] into [`Plan`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planner {
    /// Where devices may go: slots kept free per bus (for devices added at boot), and the
    /// buses to search.
    pub preferences: Preferences,
}

impl Planner {
    /// The id and place for a new device of `kind`: the caller's bus and slot, or the
    /// first free place ([`PciTree::free_place`](crate::PciTree::free_place)). Never an
    /// earlier try's: what an interrupted try left is removed before planning, and a
    /// complete device is compared, not planned again.
    pub(crate) fn place(
        &self,
        kind: DeviceKind,
        name: &str,
        wanted_bus: Option<&str>,
        wanted_slot: Option<u8>,
        snapshot: &Snapshot,
    ) -> Result<DeviceId, Error> {
        DeviceId::check_name(name)?;
        let tree = &snapshot.pci;
        let Some(slot) = wanted_slot else {
            let preferences = match wanted_bus {
                Some(bus) => self.preferences.clone().only([bus]),
                None => self.preferences.clone(),
            };
            let place = tree.free_place(kind, name, &preferences)?;
            return DeviceId::at(kind, name, &place);
        };
        // A slot alone means bus 0, as in Ganeti.
        let bus_name = wanted_bus.unwrap_or(match tree.machine() {
            MachineKind::Q35 => "pcie.0",
            _ => "pci.0",
        });
        let only = self.preferences.clone().only([bus_name]);
        if let Some(place) =
            tree.free_places(kind, name, &only).into_iter().find(|place| place.slot == slot)
        {
            return DeviceId::at(kind, name, &place);
        }
        let reason = match tree.free_place(kind, name, &only) {
            Err(none) => none.checked.first().map(|c| c.why.to_string()).unwrap_or_default(),
            Ok(_) if slot >= PCI_SLOTS => "out of range".into(),
            Ok(_) => {
                let bus = tree.bus_index(bus_name).map(|index| &tree.buses()[index]);
                let user = bus.and_then(|bus| bus.slot(slot).next());
                match (user, bus.map(|bus| &bus.kind)) {
                    (Some(function), _) => format!(
                        "in use by {}",
                        function.qdev_id.clone().unwrap_or_else(|| function.what())
                    ),
                    (None, Some(BusKind::RootPort)) => {
                        "a root port takes one device, at slot 0".into()
                    }
                    (None, _) => "reserved".into(),
                }
            }
        };
        Err(Error::SlotUnavailable { bus: bus_name.to_owned(), slot, reason })
    }

    /// The plan to hot-add `spec`'s NIC: create the intent marker, `getfd` each tap (and
    /// vhost) descriptor, `netdev_add`, `device_add`, delete the marker.
    ///
    /// # Errors
    /// A bad name, slot or queue count, or a full bus.
    pub fn nic_add(&self, spec: &NicSpec, snapshot: &Snapshot) -> Result<(DeviceId, Plan), Error> {
        check_queues(spec.queues)?;
        spec.check_settings()?;
        let id =
            self.place(DeviceKind::Nic, &spec.name, spec.bus.as_deref(), spec.slot, snapshot)?;
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

        let mut device = Self::device_arguments(&spec.model, &id);
        device.insert("netdev".into(), id.netdev_id().into());
        if let Some(mac) = &spec.mac {
            device.insert("mac".into(), mac.clone().into());
        }
        if spec.queues > 1 {
            device.insert("mq".into(), true.into());
            // One vector per rx and tx queue, plus config and control.
            device.insert("vectors".into(), (2 * spec.queues + 2).into());
        }
        let numbers = [
            ("host_mtu", spec.host_mtu),
            ("rx_queue_size", spec.rx_queue_size),
            ("tx_queue_size", spec.tx_queue_size),
            ("bootindex", spec.bootindex),
        ];
        for (property, value) in numbers {
            if let Some(value) = value {
                device.insert(property.into(), value.into());
            }
        }
        if let Some(romfile) = &spec.romfile {
            device.insert("romfile".into(), romfile.clone().into());
        }
        device.extend(spec.features.iter().map(|(name, value)| (name.clone(), value.clone())));
        steps.push(Self::device_step(&id, device));
        if !spec.link_up {
            // Undone by bringing it up again (the device_del undo that follows removes it).
            steps.push(PlannedStep::new(
                Step::SetLink { id: id.to_string(), up: false },
                Some(Step::SetLink { id: id.to_string(), up: true }),
            ));
        }
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
    /// `host_device` for a block device, `nbd` for an export, after `object-add` of its
    /// TLS credentials for an export over TLS); `device_add`.
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
        let (id, mut steps, scsi) = if let DiskBus::Scsi { controller } = &spec.bus {
            let mut target = self.scsi_target(spec, controller.as_deref(), snapshot)?;
            let steps = std::mem::take(&mut target.controller_steps);
            (target.id.clone(), steps, Some(target))
        } else {
            let (bus, slot) = (spec.pci_bus.as_deref(), spec.slot);
            (self.place(DeviceKind::Disk, &spec.name, bus, slot, snapshot)?, Vec::new(), None)
        };
        let (mut file, fdset) = match (&spec.source, image) {
            (DiskSource::Nbd(export), _) => {
                let mut file = nbd_file(export, &id.file_node_name());
                if let Some(tls) = &export.tls {
                    tls.check()?;
                    steps.push(tls::object_add_step(&id, tls));
                    tls::nbd_options(&mut file, &id, tls);
                }
                (file, None)
            }
            (_, Some(image)) => {
                steps.push(PlannedStep::new(
                    Step::AddFd {
                        opaque: disk_opaque_with(&id, image, Unseen::of(&spec.settings)),
                        fd: FdRef::Image,
                    },
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
        let mut device = match &scsi {
            Some(target) => Self::scsi_device_arguments(spec, target),
            None => Self::device_arguments(&spec.model, &id),
        };
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
    /// (waiting for the guest), `blockdev-del` of its node, `object-del` of its TLS
    /// credentials, `remove-fd` of its fdsets.
    pub fn disk_del(&self, id: &DeviceId, snapshot: &Snapshot) -> Plan {
        let mut steps = Vec::new();
        let name = id.to_string();
        if snapshot.peripherals.contains_key(&name) {
            steps.push(PlannedStep::new(Step::DeviceDel { id: name }, None));
        }
        if snapshot.block_nodes.contains_key(&id.node_name()) {
            steps.push(PlannedStep::new(Step::BlockdevDel { node_name: id.node_name() }, None));
        }
        steps.extend(tls::removal_step(id, snapshot));
        let mut sets: Vec<u64> =
            snapshot.disk_fdsets().filter(|(_, set)| set.device == *id).map(|(id, _)| id).collect();
        sets.dedup();
        for fdset_id in sets {
            steps.push(PlannedStep::new(Step::RemoveFdset { fdset: FdsetRef::Id(fdset_id) }, None));
        }
        Plan::new(steps)
    }

    fn device_arguments(model: &str, id: &DeviceId) -> Map<String, Value> {
        let mut device = Map::new();
        device.insert("driver".into(), model.into());
        device.insert("id".into(), id.to_string().into());
        device.insert("bus".into(), id.bus().device_add_name().into());
        device.insert("addr".into(), id.pci_addr().into());
        device
    }

    pub(crate) fn device_step(id: &DeviceId, arguments: Map<String, Value>) -> PlannedStep {
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
    use crate::snapshot::BlockNode;
    use crate::spec::{DiskFormat, NbdExport};
    use crate::topology::PciTree;

    fn empty() -> Snapshot {
        let pci = json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "qdev_id": ""},
            {"bus": 0, "slot": 1, "function": 0, "qdev_id": ""},
            {"bus": 0, "slot": 1, "function": 1, "qdev_id": ""}]}]);
        Snapshot::new(PciTree::from_query_pci("pc", &pci).unwrap())
    }

    fn with_device(mut snapshot: Snapshot, slot: u8, id: &str) -> Snapshot {
        let mut devices: Vec<Value> = snapshot.pci.buses()[0]
            .functions
            .iter()
            .map(
                |f| json!({"bus": 0, "slot": f.slot, "function": f.function, "qdev_id": f.qdev_id}),
            )
            .collect();
        devices.push(json!({"bus": 0, "slot": slot, "function": 0, "qdev_id": id}));
        let reply = json!([{"bus": 0, "devices": devices}]);
        snapshot.pci = PciTree::from_query_pci("pc", &reply).unwrap();
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
            error.to_string().contains("slot 1") && error.to_string().contains("in use"),
            "{error}"
        );
        spec.slot = Some(0);
        assert!(matches!(
            Planner::default().nic_add(&spec, &empty()),
            Err(Error::SlotUnavailable { .. })
        ));
        let planner = Planner { preferences: Preferences::default().reserve("pci.0", [4]) };
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
            Err(Error::NoFreePlace(none)) if none.checked.len() == 1
        ));
    }

    fn on(capture: &str) -> Snapshot {
        Snapshot::new(crate::topology::tests::tree(capture))
    }

    #[test]
    fn q35_devices_go_into_empty_root_ports() {
        let snapshot = on("q35-root-ports-running");
        let (id, plan) = Planner::default().nic_add(&NicSpec::new("web1"), &snapshot).unwrap();
        assert_eq!(id.to_string(), "nic-web1-rp1-0");
        let device = arguments(&plan, "device_add");
        assert_eq!((&device["bus"], &device["addr"]), (&json!("rp1"), &json!("0x0")));
        let reserved = Planner { preferences: Preferences::default().reserve("rp1", [0]) };
        let (id, _) = reserved.disk_add(&nbd_disk("d1"), None, &snapshot).unwrap();
        assert_eq!(id.to_string(), "disk-d1-rp2-0");
        // A root port takes one device, at slot 0; rp3 holds nic0; pcie.0 takes no hotplug.
        for (bus, slot, expected) in [
            (Some("rp2"), Some(1), "a root port takes one device, at slot 0"),
            (Some("rp3"), Some(0), "a root port holding nic0 at 00.0"),
            (None, Some(9), "q35's root complex takes no hotplug"),
            (Some("rp5"), None, "hotplug=off"),
        ] {
            let spec = NicSpec { bus: bus.map(Into::into), slot, ..NicSpec::new("a") };
            let error = Planner::default().nic_add(&spec, &snapshot).unwrap_err();
            assert!(error.to_string().contains(expected), "{bus:?} {slot:?}: {error}");
        }
        let spec = NicSpec { bus: Some("rp4".into()), ..NicSpec::new("a") };
        assert_eq!(
            Planner::default().nic_add(&spec, &snapshot).unwrap().0.to_string(),
            "nic-a-rp4-0"
        );
    }

    #[test]
    fn a_full_root_port_pool_is_no_free_place() {
        let pool =
            Preferences::default().reserve("rp1", [0]).reserve("rp2", [0]).reserve("rp4", [0]);
        let error = Planner { preferences: pool }
            .nic_add(&NicSpec::new("a"), &on("q35-root-ports-running"))
            .unwrap_err();
        let Error::NoFreePlace(none) = &error else { panic!("{error:?}") };
        assert_eq!(none.checked.len(), 6, "five root ports and pcie.0: {error}");
        assert!(error.to_string().contains("Start the VM with more empty root ports"), "{error}");
        let empty_q35 = Planner::default().nic_add(&NicSpec::new("a"), &on("q35-empty-running"));
        let error = empty_q35.unwrap_err().to_string();
        assert!(error.contains("pcie.0: q35's root complex takes no hotplug"), "{error}");
    }

    #[test]
    fn pc_fills_bus_0_then_bridges_slot_0_included() {
        let reserve = Preferences::default().reserve("pci.0", 0..32);
        let planner = Planner { preferences: reserve };
        let snapshot = on("pc-bridge-running");
        let (id, plan) = planner.nic_add(&NicSpec::new("a"), &snapshot).unwrap();
        assert_eq!(id.to_string(), "nic-a-br1-0");
        assert_eq!(arguments(&plan, "device_add")["bus"], "br1");
        let (id, _) = Planner::default().nic_add(&NicSpec::new("a"), &snapshot).unwrap();
        assert_eq!(id.to_string(), "nic-a-pci-2", "bus 0 first, Ganeti's ids");
        let spec = NicSpec { bus: Some("br1".into()), slot: Some(7), ..NicSpec::new("a") };
        assert_eq!(
            Planner::default().nic_add(&spec, &snapshot).unwrap().0.to_string(),
            "nic-a-br1-7"
        );
        let spec = NicSpec { slot: Some(5), ..NicSpec::new("a") };
        let error = Planner::default().nic_add(&spec, &snapshot).unwrap_err().to_string();
        assert!(error.contains("slot 5 of pci.0") && error.contains("in use by br1"), "{error}");
    }

    fn nbd_disk(name: &str) -> DiskSpec {
        let export = NbdExport::parse_uri("nbd+unix:///e?socket=/run/n.sock").unwrap();
        DiskSpec::new(name, DiskSource::Nbd(export))
    }

    #[test]
    fn nic_models_and_settings_reach_device_add_checked_first() {
        let mut spec = NicSpec {
            host_mtu: Some(9000),
            rx_queue_size: Some(1024),
            tx_queue_size: Some(256),
            bootindex: Some(2),
            romfile: Some(String::new()),
            link_up: false,
            ..NicSpec::new("s1")
        };
        spec.features.insert("csum".into(), json!(false));
        let (_, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
        let device = arguments(&plan, "device_add");
        for (property, value) in [
            ("host_mtu", json!(9000)),
            ("rx_queue_size", json!(1024)),
            ("tx_queue_size", json!(256)),
            ("bootindex", json!(2)),
            ("romfile", json!("")),
            ("csum", json!(false)),
        ] {
            assert_eq!(device[property], value, "{property}");
        }
        assert_eq!(arguments(&plan, "set_link"), json!({"name": "nic-s1-pci-2", "up": false}));
        // set_link comes after device_add and is undone by bringing the link up, then the
        // device goes.
        assert_eq!(
            undo(&plan, 5),
            [
                "set_link nic-s1-pci-2",
                "device_del nic-s1-pci-2",
                "netdev_del nic-s1-pci-2",
                "object-del qmp-rs-intent.nic-s1-pci-2.t1.v0"
            ]
        );
        assert_eq!(plan.undo_after(5)[0].arguments(), json!({"name": "nic-s1-pci-2", "up": true}));

        for model in [crate::E1000, crate::RTL8139] {
            let spec = NicSpec {
                model: model.into(),
                mac: Some("52:54:00:00:00:07".into()),
                ..NicSpec::new("m")
            };
            let (_, plan) = Planner::default().nic_add(&spec, &empty()).unwrap();
            assert_eq!(arguments(&plan, "device_add")["driver"], model);
        }
        let bad: [(NicSpec, &str); 9] = [
            (NicSpec { mac: Some("52:54:00:00:00".into()), ..NicSpec::new("b") }, "not a MAC"),
            (NicSpec { mac: Some("01:00:5e:00:00:01".into()), ..NicSpec::new("b") }, "multicast"),
            (
                NicSpec { model: "e1000".into(), queues: 2, ..NicSpec::new("b") },
                "queues > 1 needs a virtio-net model",
            ),
            (
                NicSpec { model: "rtl8139".into(), host_mtu: Some(1500), ..NicSpec::new("b") },
                "host_mtu needs",
            ),
            (NicSpec { host_mtu: Some(67), ..NicSpec::new("b") }, "below 68"),
            (NicSpec { rx_queue_size: Some(512 + 1), ..NicSpec::new("b") }, "rx_queue_size 513"),
            (NicSpec { tx_queue_size: Some(2048), ..NicSpec::new("b") }, "tx_queue_size 2048"),
            (
                NicSpec { features: [("mac".to_owned(), json!("x"))].into(), ..NicSpec::new("b") },
                "set by the spec",
            ),
            (
                NicSpec {
                    features: [("Bad Name".to_owned(), json!(1))].into(),
                    ..NicSpec::new("b")
                },
                "not a property name",
            ),
        ];
        for (spec, expected) in bad {
            let error = Planner::default().nic_add(&spec, &empty()).unwrap_err();
            assert!(
                matches!(error, Error::InvalidSpec(_)) && error.to_string().contains(expected),
                "{error} lacks {expected}"
            );
        }
        let nested =
            NicSpec { features: [("x".to_owned(), json!({"a": 1}))].into(), ..NicSpec::new("b") };
        assert!(
            nested
                .check_settings()
                .unwrap_err()
                .to_string()
                .contains("not a boolean, integer or string")
        );
    }
}
