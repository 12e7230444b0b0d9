//! What a [`PciTree`](super::PciTree) is built from: QMP replies, gathered by the caller.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// QOM types whose bus [`PciTree`](super::PciTree) knows how to plan onto; the root ports
/// among them are the ones with a `hotplug` property.
pub(super) const ROOT_PORT_TYPES: [&str; 2] = ["pcie-root-port", "ioh3420"];

/// The replies a [`PciTree`](super::PciTree) is built from.
///
/// Gather them with:
/// * `machine_type`: `qom-get {"path": "/machine", "property": "type"}`;
/// * `query_pci`: `query-pci`;
/// * `peripherals`: `qom-list {"path": "/machine/peripheral"}` through
///   [`Peripheral::from_qom_list`], then for each the `qom-get`s that
///   [`Peripheral::wanted_properties`] names, through [`Peripheral::set_qom_property`].
///
/// Without the peripherals' `parent_bus` and `addr`, a bus that `query-pci` does not list
/// (all of them behind a bridge until the firmware has run) counts as unknown and takes no
/// device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyInput {
    /// QEMU's machine type, e.g. `pc-i440fx-7.2-machine`; `None` to go by the host bridge.
    #[serde(default)]
    pub machine_type: Option<String>,
    /// The `return` value of `query-pci`.
    pub query_pci: Value,
    /// The user-created devices.
    #[serde(default)]
    pub peripherals: Vec<Peripheral>,
}

/// A child of `/machine/peripheral`: a device created with an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peripheral {
    /// The device id.
    pub id: String,
    /// Its QOM type, e.g. `pcie-root-port`.
    pub qom_type: String,
    /// The QOM path of the bus it sits on (`qom-get parent_bus`), e.g.
    /// `/machine/peripheral/rp1/rp1`; the last part is the bus's name.
    #[serde(default)]
    pub parent_bus: Option<String>,
    /// Its PCI address on that bus as devfn, `slot * 8 + function` (`qom-get addr`); `None`
    /// for devices that are not PCI functions.
    #[serde(default)]
    pub addr: Option<i64>,
    /// A root port's `hotplug` property (`false` when started with `hotplug=off`).
    #[serde(default)]
    pub hotplug: Option<bool>,
}

impl Peripheral {
    /// A peripheral of `qom_type` whose placement is not known yet.
    pub fn new(id: impl Into<String>, qom_type: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            qom_type: qom_type.into(),
            parent_bus: None,
            addr: None,
            hotplug: None,
        }
    }

    /// A PCI peripheral on bus `parent_bus` (a QOM path) at devfn `addr`.
    pub fn placed(
        id: impl Into<String>,
        qom_type: impl Into<String>,
        parent_bus: impl Into<String>,
        addr: i64,
    ) -> Self {
        Self { parent_bus: Some(parent_bus.into()), addr: Some(addr), ..Self::new(id, qom_type) }
    }

    /// The same with its `hotplug` property (for root ports).
    #[must_use]
    pub fn with_hotplug(mut self, hotplug: bool) -> Self {
        self.hotplug = Some(hotplug);
        self
    }

    /// The devices of a `qom-list {"path": "/machine/peripheral"}` reply: its `child<TYPE>`
    /// entries (the `type` property and anything else is skipped).
    ///
    /// # Errors
    /// [`Error::PciData`] when the reply is not a list of `{"name", "type"}` objects.
    pub fn from_qom_list(reply: &Value) -> Result<Vec<Self>, Error> {
        #[derive(Deserialize)]
        struct Entry {
            name: String,
            #[serde(rename = "type")]
            kind: String,
        }
        let entries = Vec::<Entry>::deserialize(reply)
            .map_err(|error| Error::PciData(format!("not a qom-list reply: {error}")))?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| {
                let qom_type = entry.kind.strip_prefix("child<")?.strip_suffix('>')?;
                Some(Self::new(entry.name, qom_type))
            })
            .collect())
    }

    /// The properties to `qom-get` from `/machine/peripheral/ID` for this device:
    /// `parent_bus` and `addr`, and `hotplug` for root ports (other types have none, and
    /// QEMU answers `Property '...' not found`).
    pub fn wanted_properties(&self) -> &'static [&'static str] {
        if ROOT_PORT_TYPES.contains(&self.qom_type.as_str()) {
            &["parent_bus", "addr", "hotplug"]
        } else {
            &["parent_bus", "addr"]
        }
    }

    /// Records the `qom-get` reply for `property`; properties the tree does not use are
    /// ignored.
    ///
    /// # Errors
    /// [`Error::PciData`] when the value has the wrong JSON type.
    pub fn set_qom_property(&mut self, property: &str, value: &Value) -> Result<(), Error> {
        let wrong =
            || Error::PciData(format!("qom-get {} of '{}' returned {value}", property, self.id));
        match property {
            "parent_bus" => self.parent_bus = Some(value.as_str().ok_or_else(wrong)?.to_owned()),
            "addr" => self.addr = Some(value.as_i64().ok_or_else(wrong)?),
            "hotplug" => self.hotplug = Some(value.as_bool().ok_or_else(wrong)?),
            _ => {}
        }
        Ok(())
    }

    /// The name of the bus it sits on: the last part of [`Peripheral::parent_bus`].
    pub(super) fn bus_name(&self) -> Option<&str> {
        let path = self.parent_bus.as_deref()?;
        path.rsplit('/').next().filter(|name| !name.is_empty())
    }
}

/// One entry of a `query-pci` device list, without the devices behind it (those are
/// walked separately, without recursion).
#[derive(Deserialize)]
pub(super) struct RawFunction {
    pub(super) slot: i64,
    pub(super) function: i64,
    #[serde(default)]
    pub(super) qdev_id: Option<String>,
    #[serde(default)]
    pub(super) class_info: Option<RawClassInfo>,
    #[serde(default)]
    pub(super) id: Option<RawIds>,
    #[serde(default)]
    pub(super) pci_bridge: Option<RawBridge>,
}

#[derive(Deserialize)]
pub(super) struct RawClassInfo {
    pub(super) class: i64,
    #[serde(default)]
    pub(super) desc: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawIds {
    pub(super) vendor: i64,
    pub(super) device: i64,
}

#[derive(Deserialize)]
pub(super) struct RawBridge {
    pub(super) bus: RawBridgeBus,
}

#[derive(Deserialize)]
pub(super) struct RawBridgeBus {
    pub(super) secondary: i64,
}

/// A top-level entry of `query-pci`: a root bus.
#[derive(Deserialize)]
pub(super) struct RawRootBus {
    pub(super) bus: i64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn qom_list_children_become_peripherals() {
        let reply = json!([{"name": "type", "type": "string"},
                           {"name": "rp1", "type": "child<pcie-root-port>"},
                           {"name": "nic0", "type": "child<virtio-net-pci>"}]);
        let peripherals = Peripheral::from_qom_list(&reply).unwrap();
        assert_eq!(
            peripherals,
            [Peripheral::new("rp1", "pcie-root-port"), Peripheral::new("nic0", "virtio-net-pci")]
        );
        assert_eq!(peripherals[0].wanted_properties(), ["parent_bus", "addr", "hotplug"]);
        assert_eq!(peripherals[1].wanted_properties(), ["parent_bus", "addr"]);
        let error = Peripheral::from_qom_list(&json!({"name": "x"})).unwrap_err();
        assert!(error.to_string().contains("not a qom-list reply"), "{error}");
    }

    #[test]
    fn qom_properties_are_recorded_and_checked() {
        let mut port = Peripheral::new("rp1", "pcie-root-port");
        port.set_qom_property("parent_bus", &json!("/machine/q35/pcie.0")).unwrap();
        port.set_qom_property("addr", &json!(16)).unwrap();
        port.set_qom_property("hotplug", &json!(false)).unwrap();
        port.set_qom_property("chassis", &json!(1)).unwrap();
        let expected = Peripheral::placed("rp1", "pcie-root-port", "/machine/q35/pcie.0", 16);
        assert_eq!(port, expected.with_hotplug(false));
        assert_eq!(port.bus_name(), Some("pcie.0"));
        let error = port.set_qom_property("addr", &json!("16")).unwrap_err();
        assert!(error.to_string().contains("qom-get addr of 'rp1'"), "{error}");
        assert_eq!(Peripheral::placed("x", "t", "/machine/", 0).bus_name(), None);
    }
}
