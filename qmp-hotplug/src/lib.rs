//! PCI hotplug for QEMU over [`qmp_client`]: slot planning from `query-pci`, device ids,
//! NIC and disk hot-add and hot-del that do exactly what was asked, or nothing, or say
//! precisely what is left.
//!
//! A VM manager hands this crate a running guest's disks and NICs, so it trusts nothing
//! but QEMU's own state:
//!
//! - **Adopt only what is provably ours.** An add whose device exists returns
//!   [`Outcome::AlreadyPresent`] only when every field QEMU shows matches the spec
//!   (driver, netdev, MAC, queue count; node format, read-only flag, and the image's
//!   fingerprint kept in its fdset's opaque); otherwise [`Error::Conflict`] names each
//!   difference. Parts an interrupted try left are removed, never reused; fdset ids come
//!   from QEMU's `add-fd` replies.
//! - **Check before removing.** A removal checks the id's kind, that the device exists,
//!   and that a drive belongs to it ([`Error::WrongKind`], [`Error::NotFound`] unless
//!   [`RemoveOptions::missing_ok`], [`Error::DriveMismatch`]); it never unplugs in
//!   prelaunch ([`Error::NotRunning`]) and says when a paused guest cannot acknowledge yet
//!   ([`Error::UnplugPending`]).
//! - **Deadlines hold.** One per operation: each command, the unplug wait and the host's
//!   image I/O (on a blocking thread) get what is left of it; a rollback has its own budget.
//! - **Races are survivable.** Calls on one [`Hotplug`] run one at a time; a slot or name
//!   another manager took meanwhile leads to a fresh read and a new plan.
//! - **Nothing is unfindable.** A NIC add first creates an intent marker naming the
//!   descriptors it passes (QEMU cannot list named descriptors);
//!   [`Hotplug::leftovers`] lists what interrupted operations left and
//!   [`Hotplug::clean_leftovers`] removes it.
//! - **SCSI disks too.** [`DiskBus::Scsi`] puts a `scsi-hd` LUN on a named
//!   `virtio-scsi-pci` controller (refused with [`Error::ScsiController`] unless it is one)
//!   or on this crate's own, hot-added when missing; the unit is the first one QEMU shows
//!   free, and a rollback removes a controller only when the same call added it.
//! - **Operations on what is there.** [`Hotplug::resize_disk`] (`block_resize`, shrinking
//!   only when allowed), and a CD drive's [`Hotplug::change_medium`] and
//!   [`Hotplug::eject`]; an NBD disk can go over TLS ([`NbdTls`]), its credentials object
//!   added and removed with it.
//! - **Truthful output.** Adds report what QEMU has afterwards ([`NicReport`],
//!   [`DiskReport`]), down to the tap carrying each queue.
//!
//! One concern per file:
//!
//! | file | owns |
//! | --- | --- |
//! | `spec.rs` | what the caller asks for: [`NicSpec`], [`DiskSpec`], [`DiskSource`], [`DiskFormat`], [`Vhost`], [`NbdExport`], [`RemoveOptions`] |
//! | `ids.rs` | [`DeviceId`]: Ganeti's `<kind>-<name>-pci-<slot>` scheme on pc's bus 0, `<kind>-<name>-<bus>-<slot>` elsewhere, `disk-<name>-<bus>-<slot>-<scsi-id>.<lun>` for a SCSI disk ([`ScsiUnit`]), and every QEMU name derived from it |
//! | `topology/` | [`PciTree`]: every bus from `query-pci` and QOM, where a device can go ([`Place`], [`Preferences`], [`NoFreePlace`]), and its [`PciView`] |
//! | `ownership.rs` | the texts that prove what is ours: [`disk_opaque`] (image fingerprints), [`IntentMarker`] |
//! | `pci.rs` | [`SlotMap`]: `query-pci` parsed into bus 0's 32 slots (pc's bus alone) |
//! | `netinfo.rs` | [`NetworkInfo`]: HMP `info network` parsed (QEMU 7.2 has no `query-netdev`) |
//! | `scsi.rs` | SCSI disks: [`ScsiBus`] (what QEMU shows on a virtio-scsi controller's bus), the choice of controller and unit, [`Hotplug::del_scsi_controller`] |
//! | `snapshot.rs` | [`Snapshot`]: what QEMU has (run state, devices, objects, nodes, backends, fdsets, netdevs, properties) and the queries that read it |
//! | `adopt.rs` | whether an existing device is exactly the spec's ([`Difference`]) |
//! | `leftovers.rs` | [`Leftovers`]: the parts of ours no complete device explains |
//! | `media.rs` | operations on a disk already there: [`Hotplug::resize_disk`] ([`Resized`], [`parse_size`]), a CD drive's [`Hotplug::change_medium`] and [`Hotplug::eject`] |
//! | `tls.rs` | [`NbdTls`]: the `tls-creds-x509` object of an NBD disk over TLS, its id ([`tls_object_id`]), and how an adopted one is compared |
//! | `plan.rs` | [`Plan`]: QMP [`Step`]s in order, each with its undo |
//! | `planner.rs` | [`Planner`]: spec + snapshot to plan, on pc's bus 0, bridges and q35 root ports; pure, no client and no I/O |
//! | `executor.rs` | [`Hotplug`]: reads QEMU, checks, runs plans, waits for `DEVICE_DELETED`, rolls back, retries races |
//! | `report.rs` | [`Outcome`], [`NicReport`], [`DiskReport`]: what QEMU has afterwards |
//! | `host.rs` | [`Host`]: the host I/O the executor is handed (images, vhost-net, `/proc`), [`LocalHost`] through `hostdev` |
//! | `deadline.rs` | one deadline per operation |
//! | `qemu_errors.rs` | [`qemu_errors`]: the QEMU error texts recognised, each with the version it was seen on (whether HMP text is an error at all, the client's checked `hmp` says) |
//! | `error.rs` | [`Error`], the one error type |
//!
//! Planning needs no QEMU:
//!
//! ```
//! use qmp_hotplug::{NicSpec, PciTree, Planner, Snapshot};
//! let pci = PciTree::from_query_pci("pc", &serde_json::json!([{"bus": 0, "devices": []}]))?;
//! let (id, plan) = Planner::default().nic_add(&NicSpec::new("web1"), &Snapshot::new(pci))?;
//! assert_eq!(id.to_string(), "nic-web1-pci-1");
//! let commands: Vec<_> = plan.steps().iter().map(|s| s.step.command()).collect();
//! assert_eq!(commands, ["object-add", "getfd", "netdev_add", "device_add", "object-del"]);
//! // If device_add fails, the netdev goes (it consumed the getfd name), then the marker.
//! assert_eq!(plan.undo_after(3).iter().map(|s| s.to_string()).collect::<Vec<_>>(),
//!            ["netdev_del nic-web1-pci-1", "object-del qmp-rs-intent.nic-web1-pci-1.t1.v0"]);
//! # Ok::<(), qmp_hotplug::Error>(())
//! ```
//!
//! With QEMU (the guest must have booted far enough to answer ACPI before a removal):
//!
//! ```no_run
//! # async fn example(tap: std::os::fd::OwnedFd) -> Result<(), qmp_hotplug::Error> {
//! use std::time::Duration;
//! use qmp_hotplug::{Hotplug, NicSpec, Outcome, RemoveOptions};
//! let client = qmp_client::Client::connect("/run/vm/qmp.sock").await?;
//! let hotplug = Hotplug::new(client);
//! let nic = hotplug.add_nic(&NicSpec::new("web1"), &[tap], &[] as &[std::os::fd::OwnedFd]).await?;
//! println!("{} {} on {:?}", nic.outcome, nic.id, nic.queues[0].tap);
//! let options = RemoveOptions::new(Duration::from_secs(10)).missing_ok(true);
//! assert_eq!(hotplug.del_nic(&nic.id.to_string(), &options).await?, Outcome::Removed);
//! // After a crash: what did interrupted operations leave?
//! let leftovers = hotplug.leftovers().await?;
//! let report = hotplug.clean_leftovers(&leftovers).await?;
//! assert!(report.is_complete());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod adopt;
mod deadline;
mod disk_settings;
mod error;
mod executor;
mod host;
mod ids;
mod leftovers;
mod media;
mod nbd;
mod netinfo;
mod ownership;
mod pci;
mod plan;
mod planner;
pub mod qemu_errors;
mod report;
mod scsi;
mod snapshot;
mod spec;
mod tls;
mod topology;

pub use adopt::Difference;
pub use disk_settings::{Aio, DetectZeroes, Discard, DiskSettings, MAX_DISK_SERIAL_LEN};
pub use error::{Error, PendingReason, RollbackFailures};
pub use executor::{
    DEFAULT_HOST_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_ROLLBACK_BUDGET,
    DEFAULT_UNPLUG_TIMEOUT, Hotplug, MAX_ATTEMPTS, PlanFds, Probe, disk_probes, nic_probes,
};
pub use host::{Host, ImageFacts, LocalHost};
pub use ids::{
    DeviceId, DeviceKind, MAX_ID_LEN, MAX_NAME_LEN, MAX_SCSI_ID, MAX_SCSI_LUN, ScsiUnit,
};
pub use leftovers::{CleanReport, Leftover, LeftoverPart, Leftovers};
pub use media::{CD_DRIVERS, Resized, SECTOR_SIZE, parse_size};
pub use nbd::{NBD_DEFAULT_PORT, NbdExport, NbdServer};
pub use netinfo::{Netdev, NetdevQueue, NetworkInfo};
pub use ownership::{DiskFdset, IntentMarker, Unseen, disk_opaque, disk_opaque_with};
pub use pci::{PCI_FUNCTIONS, PCI_SLOTS, PciFunction, Slot, SlotMap};
pub use plan::{FdRef, FdsetRef, PLANNED_FDSET_PATH, Plan, PlannedStep, Step};
pub use planner::Planner;
pub use report::{DiskReport, NicReport, Outcome, QueueReport};
pub use scsi::ScsiBus;
pub use snapshot::{
    BlockBackend, BlockNode, DISK_SETTINGS, DeviceProperties, JsonReplies, NIC_SETTINGS, RunState,
    Snapshot,
};
pub use spec::{
    DiskBus, DiskFormat, DiskSource, DiskSpec, E1000, MAX_NIC_QUEUES, NicSpec, RTL8139,
    RemoveOptions, VIRTIO_NET, Vhost, check_mac,
};
pub use tls::{NbdTls, tls_object_disk, tls_object_id};
pub use topology::{
    Bus, BusKind, BusParent, BusView, CheckedBus, FunctionView, MAX_BUSES, MachineKind,
    NoFreePlace, PciTree, PciView, Peripheral, Place, PlaceBus, Preferences, TopologyInput,
    TreeFunction, Unusable,
};
