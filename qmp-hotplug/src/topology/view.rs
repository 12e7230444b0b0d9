//! `qmp pci`: the tree as text, and as JSON (`--json`).

use std::fmt;

use serde::Serialize;

use super::places::{Preferences, Unusable};
use super::tree::{BusKind, MachineKind, PciTree, TreeFunction};
use crate::pci::PCI_SLOTS;

/// The tree with every bus's free slots and every bus's reason for having none, ready to
/// print ([`Display`](fmt::Display)) or to serialize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciView {
    /// The machine's kind.
    pub machine: MachineKind,
    /// The machine type as QEMU gave it.
    pub machine_type: Option<String>,
    /// Every bus, in tree order.
    pub buses: Vec<BusView>,
}

/// One bus of a [`PciView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusView {
    /// The name `device_add` takes, if known.
    pub name: Option<String>,
    /// The name, or the number when it has no name.
    pub label: String,
    /// The bus number, once assigned.
    pub number: Option<u8>,
    /// What it is: `pc root bus`, `q35 root complex`, `pci-bridge`, `pcie-root-port`, ...
    pub kind: String,
    /// Where its bridge sits: `pcie.0 03.1`.
    pub bridge_at: Option<String>,
    /// Bridges between it and its root.
    pub depth: usize,
    /// `false` when only QOM told what is on it.
    pub listed: bool,
    /// Its functions.
    pub functions: Vec<FunctionView>,
    /// Slots a device can be hot-plugged into.
    pub free: Vec<u8>,
    /// Empty slots kept out of planning (pc's slot 0, the caller's).
    pub reserved: Vec<u8>,
    /// Why it takes no device, when [`BusView::free`] is empty.
    pub unusable: Option<Unusable>,
}

/// One function of a [`BusView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionView {
    /// Slot.
    pub slot: u8,
    /// Function.
    pub function: u8,
    /// The qdev id.
    pub id: Option<String>,
    /// What it is (QOM type, class description or ids).
    pub what: String,
    /// PCI vendor id.
    pub vendor: Option<u16>,
    /// PCI device id.
    pub device: Option<u16>,
    /// PCI class.
    pub class: Option<u16>,
    /// For a bridge: the label of the bus behind it.
    pub bus_behind: Option<String>,
}

impl PciTree {
    /// The tree as `qmp pci` shows it, with `preferences`' reserved slots.
    pub fn view(&self, preferences: &Preferences) -> PciView {
        let buses = self
            .buses()
            .iter()
            .enumerate()
            .map(|(index, bus)| {
                let room = self.room(index, preferences);
                let reserved = (0..PCI_SLOTS)
                    .filter(|&slot| !bus.is_used(slot))
                    .filter(|&slot| {
                        (bus.kind == BusKind::PcRoot && slot == 0)
                            || bus
                                .name
                                .as_ref()
                                .and_then(|name| preferences.reserved.get(name))
                                .is_some_and(|set| set.contains(&slot))
                    })
                    .collect();
                BusView {
                    name: bus.name.clone(),
                    label: bus.label(),
                    number: bus.number,
                    kind: bus.kind.label().to_owned(),
                    bridge_at: bus.parent.map(|parent| {
                        let on = self.buses()[parent.bus].label();
                        format!("{on} {:02x}.{}", parent.slot, parent.function)
                    }),
                    depth: bus.depth,
                    listed: bus.listed,
                    functions: bus.functions.iter().map(|f| self.function_view(f)).collect(),
                    free: room.clone().unwrap_or_default(),
                    reserved,
                    unusable: room.err(),
                }
            })
            .collect();
        PciView {
            machine: self.machine().clone(),
            machine_type: self.machine_type().map(ToOwned::to_owned),
            buses,
        }
    }

    fn function_view(&self, function: &TreeFunction) -> FunctionView {
        FunctionView {
            slot: function.slot,
            function: function.function,
            id: function.qdev_id.clone(),
            what: function.what(),
            vendor: function.vendor,
            device: function.device,
            class: function.class,
            bus_behind: function.secondary.map(|index| self.buses()[index].label()),
        }
    }
}

/// `02-04,06,1f`: slots in hex, runs joined.
fn slot_ranges(slots: &[u8]) -> String {
    let mut runs: Vec<(u8, u8)> = Vec::new();
    for &slot in slots {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(slot) => *end = slot,
            _ => runs.push((slot, slot)),
        }
    }
    let text: Vec<String> =
        runs.iter()
            .map(|&(start, end)| {
                if start == end { format!("{start:02x}") } else { format!("{start:02x}-{end:02x}") }
            })
            .collect();
    text.join(",")
}

impl fmt::Display for PciView {
    /// One header line per bus, indented by depth, then its functions:
    ///
    /// ```text
    /// q35 machine (pc-q35-7.2-machine)
    /// pcie.0  bus 0, q35 root complex: q35's root complex takes no hotplug (...)
    ///   00.0  -           Host bridge [8086:29c0]
    ///   02.0  rp1         pcie-root-port [1b36:000c] -> rp1
    ///   rp1  bus 1, pcie-root-port at pcie.0 02.0: empty, free
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.machine_type {
            Some(machine_type) => writeln!(f, "{} machine ({machine_type})", self.machine)?,
            None => writeln!(f, "{} machine", self.machine)?,
        }
        for bus in &self.buses {
            let indent = "  ".repeat(bus.depth);
            let mut details: Vec<String> = Vec::new();
            if let (Some(number), Some(_)) = (bus.number, &bus.name) {
                details.push(format!("bus {number}"));
            }
            details.push(match &bus.bridge_at {
                Some(at) => format!("{} at {at}", bus.kind),
                None => bus.kind.clone(),
            });
            if !bus.listed {
                details.push("contents from QOM".into());
            }
            let state = match (&bus.unusable, bus.kind.as_str()) {
                (Some(why), _) => why.to_string(),
                (None, "pcie-root-port") => "empty, free".into(),
                (None, _) => format!("free {}", slot_ranges(&bus.free)),
            };
            let reserved = if bus.reserved.is_empty() {
                String::new()
            } else {
                format!("; reserved {}", slot_ranges(&bus.reserved))
            };
            writeln!(f, "{indent}{}  {}: {state}{reserved}", bus.label, details.join(", "))?;
            for function in &bus.functions {
                let ids = match (function.vendor, function.device) {
                    (Some(vendor), Some(device)) => format!(" [{vendor:04x}:{device:04x}]"),
                    _ => String::new(),
                };
                let behind = function
                    .bus_behind
                    .as_ref()
                    .map(|bus| format!(" -> {bus}"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "{indent}  {:02x}.{}  {:<12}{}{ids}{behind}",
                    function.slot,
                    function.function,
                    function.id.as_deref().unwrap_or("-"),
                    function.what
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::slot_ranges;

    #[test]
    fn slot_ranges_join_runs() {
        assert_eq!(slot_ranges(&[]), "");
        assert_eq!(slot_ranges(&[0]), "00");
        assert_eq!(slot_ranges(&[1, 2, 3, 5, 30, 31]), "01-03,05,1e-1f");
        assert_eq!(slot_ranges(&[255]), "ff");
    }
}
