//! PCI hotplug for QEMU over [`qmp_client`]: slot planning from `query-pci`, device ids,
//! NIC and disk hot-add and hot-del, with rollback and idempotent retry.
//!
//! The crate has a pure core and a thin executor, one concern per file:
//!
//! | file | owns |
//! | --- | --- |
//! | `spec.rs` | what the caller asks for: [`NicSpec`], [`DiskSpec`], [`DiskSource`], [`DiskFormat`], [`Vhost`], [`NbdExport`] and NBD URI parsing |
//! | `ids.rs` | [`DeviceId`]: Ganeti's `<kind>-<name>-pci-<slot>` scheme and every QEMU name derived from it |
//! | `pci.rs` | [`SlotMap`]: `query-pci` parsed into bus 0's 32 slots ([`SlotMap::free_slot`], [`SlotMap::has_device`]) |
//! | `snapshot.rs` | [`Snapshot`]: what QEMU has, the queries that read it and the pure parsing of their replies |
//! | `plan.rs` | [`Plan`]: QMP [`Step`]s in order, each with its undo, and which an earlier try already did |
//! | `planner.rs` | [`Planner`]: spec + snapshot to plan; pure, no client and no I/O |
//! | `executor.rs` | [`Hotplug`]: reads the snapshot, runs the plan through the client, waits for `DEVICE_DELETED`, rolls back |
//! | `host.rs` | [`Host`]: the host I/O the executor is handed (images, vhost-net), [`LocalHost`] through `hostdev` |
//! | `qemu_errors.rs` | [`qemu_errors`]: the QEMU error texts recognised, each with the version it was seen on |
//! | `error.rs` | [`Error`], the one error type |
//!
//! Planning needs no QEMU:
//!
//! ```
//! use qmp_hotplug::{NicSpec, Planner, Snapshot, SlotMap};
//! let pci = SlotMap::from_query_pci(&serde_json::json!([{"bus": 0, "devices": []}]))?;
//! let snapshot = Snapshot { pci, peripherals: Default::default(),
//!                           block_nodes: Default::default(), fdsets: vec![] };
//! let (id, plan) = Planner::default().nic_add(&NicSpec::new("web1"), &snapshot)?;
//! assert_eq!(id.to_string(), "nic-web1-pci-1");
//! let commands: Vec<_> = plan.steps().iter().map(|s| s.step.command()).collect();
//! assert_eq!(commands, ["getfd", "netdev_add", "device_add"]);
//! // If device_add fails, the netdev goes; the getfd name was consumed by netdev_add.
//! assert_eq!(plan.undo_after(2).iter().map(|s| s.to_string()).collect::<Vec<_>>(),
//!            ["netdev_del nic-web1-pci-1"]);
//! # Ok::<(), qmp_hotplug::Error>(())
//! ```
//!
//! With QEMU (the guest must have booted far enough to answer ACPI before a removal):
//!
//! ```no_run
//! # async fn example(tap: std::os::fd::OwnedFd) -> Result<(), qmp_hotplug::Error> {
//! use std::time::Duration;
//! use qmp_hotplug::{Hotplug, NicSpec};
//! let client = qmp_client::Client::connect("/run/vm/qmp.sock").await?;
//! let hotplug = Hotplug::new(client);
//! let id = hotplug.add_nic(&NicSpec::new("web1"), &[tap], &[] as &[std::os::fd::OwnedFd]).await?;
//! hotplug.del_nic(&id.to_string(), Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
mod executor;
mod host;
mod ids;
mod pci;
mod plan;
mod planner;
pub mod qemu_errors;
mod snapshot;
mod spec;
mod topology;

pub use error::{Error, RollbackFailures};
pub use executor::{DEFAULT_HOST_TIMEOUT, DEFAULT_UNPLUG_TIMEOUT, Hotplug, PlanFds};
pub use host::{Host, LocalHost};
pub use ids::{DeviceId, DeviceKind, MAX_NAME_LEN};
pub use pci::{PCI_FUNCTIONS, PCI_SLOTS, PciFunction, Slot, SlotMap};
pub use plan::{FdRef, Plan, PlannedStep, Step};
pub use planner::Planner;
pub use snapshot::Snapshot;
pub use spec::{
    DiskFormat, DiskSource, DiskSpec, MAX_NIC_QUEUES, NbdExport, NbdServer, NicSpec, Vhost,
};
pub use topology::{
    Bus, BusDeviceId, BusKind, BusParent, BusView, CheckedBus, FunctionView, MAX_BUSES, MAX_ID_LEN,
    MachineKind, NoFreePlace, PciTree, PciView, Peripheral, Place, PlaceBus, Preferences,
    TopologyInput, TreeFunction, Unusable,
};
