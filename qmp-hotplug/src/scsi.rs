//! SCSI disks: `scsi-hd` LUNs on a `virtio-scsi-pci` controller. What QEMU shows of each
//! controller's bus ([`ScsiBus`]), the choice of controller and free unit for a new disk,
//! the plan steps for a controller this library hot-adds, and the removal of such a
//! controller once it carries nothing.
//!
//! QEMU 7.2 shows a controller's bus at `/machine/peripheral/<id>/virtio-backend/<id>.0`;
//! `qom-list` there gives one `child[N]` link per device on it, `qom-get` of the link the
//! device's QOM path, and the device's own `scsi-id` and `lun` its unit. Devices without an
//! id (`/machine/peripheral-anon/...`) are listed too, so their units are never taken.
//! `device_del` of a LUN needs no guest acknowledgement: `DEVICE_DELETED` came 0.05-0.14 s
//! after it on the test guest over 7 runs on a loaded machine (virtio-scsi tells the guest
//! with an event; no ACPI handshake), once, with the LUN's id.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tracing::debug;

use crate::Error;
use crate::deadline::Deadline;
use crate::executor::{Hotplug, is_missing};
use crate::ids::{DeviceId, DeviceKind, MAX_SCSI_ID, ScsiUnit};
use crate::plan::{Plan, PlannedStep, Step};
use crate::planner::Planner;
use crate::report::Outcome;
use crate::snapshot::{Focus, PERIPHERAL_PATH, QomProperty, Snapshot};
use crate::spec::{DiskSpec, RemoveOptions};
use crate::topology::Place;

/// The controller model this library adds and accepts.
pub(crate) const VIRTIO_SCSI: &str = "virtio-scsi-pci";

/// The name part of the controllers this library hot-adds: `scsi-hba-<bus>-<slot>`.
pub(crate) const OUR_CONTROLLER_NAME: &str = "hba";

/// Whether a device of `driver` is a virtio-scsi controller (`virtio-scsi-pci` and its
/// `-transitional` / `-non-transitional` variants).
pub(crate) fn is_virtio_scsi(driver: &str) -> bool {
    driver.starts_with(VIRTIO_SCSI)
}

/// What sits on one virtio-scsi controller's bus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScsiBus {
    /// The QOM path of the device at each unit.
    pub units: BTreeMap<ScsiUnit, String>,
}

impl ScsiBus {
    /// The bus name `device_add` takes for a device on controller `controller`.
    pub(crate) fn device_add_name(controller: &str) -> String {
        format!("{controller}.0")
    }

    /// The first unit nobody uses: targets in order, LUN 0 each (as Linux scans them).
    fn free_unit(&self) -> Option<ScsiUnit> {
        (0..=MAX_SCSI_ID)
            .map(|scsi_id| ScsiUnit { scsi_id, lun: 0 })
            .find(|unit| !self.units.contains_key(unit))
    }

    /// The unit of the device with id `id`, if it is on this bus.
    pub(crate) fn unit_of(&self, id: &str) -> Option<ScsiUnit> {
        let path = format!("{PERIPHERAL_PATH}/{id}");
        self.units.iter().find(|(_, device)| **device == path).map(|(unit, _)| *unit)
    }
}

/// Where a new SCSI disk goes: its id, the controller's id, and the steps that hot-add
/// the controller first when it is this call's.
#[derive(Debug)]
pub(crate) struct ScsiTarget {
    pub(crate) id: DeviceId,
    pub(crate) controller: String,
    pub(crate) controller_steps: Vec<PlannedStep>,
}

impl Planner {
    /// Chooses the controller and unit for `spec`'s SCSI disk: `controller` when given
    /// (it must be a virtio-scsi controller with a PCI place), else this library's own
    /// controller with a free unit, else a new one of ours planned like any PCI device.
    pub(crate) fn scsi_target(
        &self,
        spec: &DiskSpec,
        controller: Option<&str>,
        snapshot: &Snapshot,
    ) -> Result<ScsiTarget, Error> {
        DeviceId::check_name(&spec.name)?;
        if !spec.model.starts_with("scsi-") {
            return Err(Error::InvalidSpec(format!(
                "a disk on a SCSI bus needs a SCSI model such as scsi-hd, not {}",
                spec.model
            )));
        }
        let refuse = |id: &str, reason: String| Error::ScsiController { id: id.into(), reason };
        if let Some(controller) = controller {
            let place = given_controller_place(controller, snapshot)
                .map_err(|reason| refuse(controller, reason))?;
            let bus = snapshot.scsi_buses.get(controller).cloned().unwrap_or_default();
            let unit = bus.free_unit().ok_or_else(|| {
                refuse(controller, format!("all {} targets are taken", u16::from(MAX_SCSI_ID) + 1))
            })?;
            return Ok(ScsiTarget {
                id: DeviceId::scsi(&spec.name, &place, unit)?,
                controller: controller.into(),
                controller_steps: Vec::new(),
            });
        }
        for (id, place) in our_controllers(snapshot) {
            let bus = snapshot.scsi_buses.get(&id).cloned().unwrap_or_default();
            if let Some(unit) = bus.free_unit() {
                return Ok(ScsiTarget {
                    id: DeviceId::scsi(&spec.name, &place, unit)?,
                    controller: id,
                    controller_steps: Vec::new(),
                });
            }
        }
        let controller = self.place(
            DeviceKind::ScsiController,
            OUR_CONTROLLER_NAME,
            spec.pci_bus.as_deref(),
            spec.slot,
            snapshot,
        )?;
        let mut arguments = Map::new();
        arguments.insert("driver".into(), VIRTIO_SCSI.into());
        arguments.insert("id".into(), controller.to_string().into());
        arguments.insert("bus".into(), controller.bus().device_add_name().into());
        arguments.insert("addr".into(), controller.pci_addr().into());
        let unit = ScsiUnit { scsi_id: 0, lun: 0 };
        Ok(ScsiTarget {
            id: DeviceId::scsi(&spec.name, &controller.place(), unit)?,
            controller: controller.to_string(),
            controller_steps: vec![Self::device_step(&controller, arguments)],
        })
    }

    /// The `device_add` arguments of a LUN on `target`.
    pub(crate) fn scsi_device_arguments(
        spec: &DiskSpec,
        target: &ScsiTarget,
    ) -> Map<String, Value> {
        let unit = target.id.scsi_unit().unwrap_or(ScsiUnit { scsi_id: 0, lun: 0 });
        let mut device = Map::new();
        device.insert("driver".into(), spec.model.clone().into());
        device.insert("id".into(), target.id.to_string().into());
        device.insert("bus".into(), ScsiBus::device_add_name(&target.controller).into());
        device.insert("scsi-id".into(), unit.scsi_id.into());
        device.insert("lun".into(), unit.lun.into());
        device
    }
}

/// The PCI place of the caller's controller `id`, or why it cannot take a disk.
fn given_controller_place(id: &str, snapshot: &Snapshot) -> Result<Place, String> {
    let Some(driver) = snapshot.peripherals.get(id) else {
        return Err("QEMU has no device with this id".into());
    };
    if !is_virtio_scsi(driver) {
        return Err(format!("it is a {driver} device, not a {VIRTIO_SCSI} controller"));
    }
    snapshot
        .pci
        .place_of(id)
        .ok_or_else(|| "QEMU shows it at no PCI place (a disk's id names its controller's)".into())
}

/// This library's own controllers (`scsi-hba-<bus>-<slot>`, virtio-scsi, sitting where
/// their id says), in id order.
fn our_controllers(snapshot: &Snapshot) -> Vec<(String, Place)> {
    snapshot
        .peripherals
        .iter()
        .filter(|(_, driver)| is_virtio_scsi(driver))
        .filter_map(|(id, _)| {
            let parsed = id.parse::<DeviceId>().ok()?;
            let place = snapshot.pci.place_of(id)?;
            (parsed.kind() == DeviceKind::ScsiController && parsed.place() == place)
                .then(|| (id.clone(), place))
        })
        .collect()
}

/// The id of the virtio-scsi controller sitting at a SCSI disk id's place, if any.
pub(crate) fn controller_of(id: &DeviceId, snapshot: &Snapshot) -> Option<String> {
    id.scsi_unit()?;
    snapshot
        .peripherals
        .iter()
        .filter(|(_, driver)| is_virtio_scsi(driver))
        .map(|(controller, _)| controller)
        .find(|controller| snapshot.pci.place_of(controller) == Some(id.place()))
        .cloned()
}

/// How SCSI disk `id` differs in where it sits: QEMU must show it on the controller at
/// its id's PCI place, at its id's unit, and on the controller the spec names, if any.
pub(crate) fn place_differences(
    id: &DeviceId,
    wanted_controller: Option<&str>,
    snapshot: &Snapshot,
) -> Vec<(&'static str, String, String)> {
    let mut differences = Vec::new();
    let Some(unit) = id.scsi_unit() else {
        return vec![("bus", "scsi".into(), "a PCI device of its own".into())];
    };
    let controller = controller_of(id, snapshot);
    match &controller {
        None => differences.push((
            "controller",
            format!("a {VIRTIO_SCSI} at {}", id.place()),
            "none there".into(),
        )),
        Some(controller) => {
            let found =
                snapshot.scsi_buses.get(controller).and_then(|bus| bus.unit_of(&id.to_string()));
            if found != Some(unit) {
                let found = found.map_or_else(|| "not on its bus".into(), |unit| unit.to_string());
                differences.push(("unit", format!("{controller} {unit}"), found));
            }
        }
    }
    if let Some(wanted) = wanted_controller.filter(|wanted| controller.as_deref() != Some(*wanted))
    {
        differences.push((
            "controller",
            wanted.into(),
            controller.unwrap_or_else(|| "none".into()),
        ));
    }
    differences
}

impl Hotplug {
    /// Reads the bus of every virtio-scsi controller among `peripherals` (id to driver).
    /// A controller that went away meanwhile is left out.
    pub(crate) async fn read_scsi_buses(
        &self,
        peripherals: &BTreeMap<String, String>,
        deadline: &Deadline,
    ) -> Result<BTreeMap<String, ScsiBus>, Error> {
        let mut buses = BTreeMap::new();
        for (controller, _) in peripherals.iter().filter(|(_, driver)| is_virtio_scsi(driver)) {
            let bus_path = format!("{PERIPHERAL_PATH}/{controller}/virtio-backend/{controller}.0");
            let list =
                self.client().execute_as::<Vec<QomProperty>>("qom-list", json!({"path": bus_path}));
            let links = match self.call(deadline, "qom-list", list).await {
                Ok(links) => links,
                Err(error) if is_missing(&error) => continue,
                Err(error) => return Err(error),
            };
            let mut bus = ScsiBus::default();
            for link in links.iter().filter(|p| p.name.starts_with("child[")) {
                let Some(device) = self.qom_get(&bus_path, &link.name, deadline).await? else {
                    continue;
                };
                let Some(device) = device.as_str().map(str::to_owned) else { continue };
                let scsi_id = self.qom_get(&device, "scsi-id", deadline).await?;
                let lun = self.qom_get(&device, "lun", deadline).await?;
                let unit = scsi_id.zip(lun).and_then(|(scsi_id, lun)| {
                    Some(ScsiUnit {
                        scsi_id: u8::try_from(scsi_id.as_u64()?).ok()?,
                        lun: u16::try_from(lun.as_u64()?).ok()?,
                    })
                });
                if let Some(unit) = unit {
                    bus.units.insert(unit, device);
                } else {
                    debug!(%device, "a device on a SCSI bus without a readable unit");
                }
            }
            buses.insert(controller.clone(), bus);
        }
        Ok(buses)
    }

    /// `qom-get`; `None` when the object or property is not there.
    async fn qom_get(
        &self,
        path: &str,
        property: &str,
        deadline: &Deadline,
    ) -> Result<Option<Value>, Error> {
        let get = self.client().execute("qom-get", json!({"path": path, "property": property}));
        match self.call(deadline, "qom-get", get).await {
            Ok(value) => Ok(Some(value)),
            Err(error) if is_missing(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Hot-removes a SCSI controller this library added (`scsi-hba-<bus>-<slot>`) once no
    /// device is on its bus: `device_del` and wait for the guest (a PCI unplug, which the
    /// guest acknowledges). [`Hotplug::del_disk`] leaves the controller in place, since
    /// other disks may be added to it and its removal needs the guest's ACPI, unlike a LUN's.
    ///
    /// # Errors
    /// [`Error::WrongKind`] for an id that is not one of our controllers,
    /// [`Error::ScsiController`] while a device remains on its bus (nothing is sent), and
    /// the removal errors of [`Hotplug::del_nic`].
    pub async fn del_scsi_controller(
        &self,
        id: &str,
        options: &RemoveOptions,
    ) -> Result<Outcome, Error> {
        let parsed = id.parse::<DeviceId>()?;
        if parsed.kind() != DeviceKind::ScsiController {
            return Err(Error::WrongKind {
                id: id.into(),
                expected: DeviceKind::ScsiController,
                found: format!("the id of a {} device", parsed.kind().prefix()),
            });
        }
        let deadline = Deadline::after(options.timeout);
        let _serial = self.serialise(&deadline).await?;
        let snapshot = self
            .inventory(&Focus::Device(id.into(), DeviceKind::ScsiController), &deadline)
            .await?;
        let mut steps = Vec::new();
        if let Some(driver) = snapshot.peripherals.get(id) {
            if !is_virtio_scsi(driver) {
                return Err(Error::WrongKind {
                    id: id.into(),
                    expected: DeviceKind::ScsiController,
                    found: format!("a {driver} device"),
                });
            }
            let bus = snapshot.scsi_buses.get(id).cloned().unwrap_or_default();
            if !bus.units.is_empty() {
                let on_it: Vec<String> =
                    bus.units.iter().map(|(unit, device)| format!("{device} at {unit}")).collect();
                return Err(Error::ScsiController {
                    id: id.into(),
                    reason: format!(
                        "{} device(s) are still on its bus: {}",
                        on_it.len(),
                        on_it.join(", ")
                    ),
                });
            }
            steps.push(PlannedStep::new(Step::DeviceDel { id: id.into() }, None));
        }
        self.remove(id, &Plan::new(steps), options, &deadline, &snapshot.run_state).await
    }
}

#[cfg(test)]
mod tests {
    use hostdev::DeviceNumber;
    use hostdev::image::ImageIdentity;

    use super::*;
    use crate::spec::{DiskBus, DiskSource};
    use crate::topology::PciTree;

    /// pc with a virtio-scsi `scsi0` in slot 4 whose target 0 is taken, and a NIC in slot 5.
    fn snapshot() -> Snapshot {
        let devices = json!([
            {"bus": 0, "slot": 4, "function": 0, "qdev_id": "scsi0"},
            {"bus": 0, "slot": 5, "function": 0, "qdev_id": "net0"}]);
        let pci = PciTree::from_query_pci("pc", &json!([{"bus": 0, "devices": devices}])).unwrap();
        let mut snapshot = Snapshot::new(pci);
        snapshot.peripherals.insert("scsi0".into(), VIRTIO_SCSI.into());
        snapshot.peripherals.insert("net0".into(), "virtio-net-pci".into());
        let mut bus = ScsiBus::default();
        bus.units.insert(ScsiUnit { scsi_id: 0, lun: 0 }, "/machine/peripheral/boot".into());
        snapshot.scsi_buses.insert("scsi0".into(), bus);
        snapshot
    }

    const IMAGE: ImageIdentity = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 7 };

    fn spec(controller: Option<&str>) -> DiskSpec {
        DiskSpec::new("d1", DiskSource::Fd)
            .with_bus(DiskBus::Scsi { controller: controller.map(str::to_owned) })
    }

    #[test]
    fn a_named_controller_gets_a_lun_at_its_first_free_target_and_no_pci_slot() {
        let (id, plan) =
            Planner::default().disk_add(&spec(Some("scsi0")), Some(&IMAGE), &snapshot()).unwrap();
        assert_eq!(id.to_string(), "disk-d1-pci-4-1.0");
        let commands: Vec<&str> = plan.steps().iter().map(|s| s.step.command()).collect();
        assert_eq!(commands, ["add-fd", "blockdev-add", "device_add"]);
        assert_eq!(
            plan.steps()[2].step.arguments(),
            json!({"driver": "scsi-hd", "id": "disk-d1-pci-4-1.0", "bus": "scsi0.0",
                   "scsi-id": 1, "lun": 0, "drive": "disk-d1-pci-4-1.0"})
        );
    }

    #[test]
    fn without_a_controller_of_ours_one_is_planned_first_and_undone_last() {
        let (id, plan) =
            Planner::default().disk_add(&spec(None), Some(&IMAGE), &snapshot()).unwrap();
        assert_eq!(
            id.to_string(),
            "disk-d1-pci-1-0.0",
            "scsi0 is not ours: a new one in slot 1 (the first free here)"
        );
        assert_eq!(
            plan.steps()[0].step.arguments(),
            json!({"driver": "virtio-scsi-pci", "id": "scsi-hba-pci-1", "bus": "pci.0",
                   "addr": "0x1"})
        );
        let undo: Vec<String> = plan.undo_after(4).iter().map(ToString::to_string).collect();
        assert_eq!(undo.first().map(String::as_str), Some("device_del disk-d1-pci-1-0.0"));
        assert_eq!(undo.last().map(String::as_str), Some("device_del scsi-hba-pci-1"));
        // With ours present, it is used.
        let mut with_ours = snapshot();
        let (_, add) = Planner::default().disk_add(&spec(None), Some(&IMAGE), &with_ours).unwrap();
        let Step::DeviceAdd { arguments, .. } = &add.steps()[0].step else { panic!() };
        with_ours.peripherals.insert(arguments["id"].as_str().unwrap().into(), VIRTIO_SCSI.into());
        let devices = json!([
            {"bus": 0, "slot": 1, "function": 0, "qdev_id": arguments["id"]},
            {"bus": 0, "slot": 4, "function": 0, "qdev_id": "scsi0"}]);
        with_ours.pci =
            PciTree::from_query_pci("pc", &json!([{"bus": 0, "devices": devices}])).unwrap();
        let (id, plan) =
            Planner::default().disk_add(&spec(None), Some(&IMAGE), &with_ours).unwrap();
        assert_eq!(id.to_string(), "disk-d1-pci-1-0.0");
        assert_eq!(plan.steps().len(), 3, "no controller step");
    }

    #[test]
    fn controllers_that_cannot_take_a_disk_are_refused_by_name() {
        for (controller, reason) in [
            ("net0", "it is a virtio-net-pci device, not a virtio-scsi-pci controller"),
            ("nope", "QEMU has no device with this id"),
        ] {
            let error =
                Planner::default().disk_add(&spec(Some(controller)), Some(&IMAGE), &snapshot());
            let Err(Error::ScsiController { id, reason: why }) = error else { panic!("{error:?}") };
            assert_eq!((id.as_str(), why.as_str()), (controller, reason));
        }
        let virtio_model = DiskSpec { model: "virtio-blk-pci".into(), ..spec(Some("scsi0")) };
        let error = Planner::default().disk_add(&virtio_model, Some(&IMAGE), &snapshot());
        assert!(matches!(error, Err(Error::InvalidSpec(_))), "{error:?}");
    }
}
