//! The whole PCI tree of a machine and where devices can be hot-plugged: see [`PciTree`].

mod input;
mod places;
mod tree;
mod view;

pub use input::{Peripheral, TopologyInput};
pub use places::{CheckedBus, NoFreePlace, Place, PlaceBus, Preferences, Unusable};
pub use tree::{Bus, BusKind, BusParent, MAX_BUSES, MachineKind, PciTree, TreeFunction};
pub use view::{BusView, FunctionView, PciView};

#[cfg(test)]
pub(crate) mod tests;
