//! Carries out [`Plan`]s over a [`qmp_client::Client`], undoing what was done when a step fails.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::Duration;

use qmp_client::{Client, Event, EventFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span, warn};

use crate::Error;
use crate::error::RollbackFailures;
use crate::ids::DeviceId;
use crate::pci::SlotMap;
use crate::plan::{FdRef, Plan, Step};
use crate::planner::{DiskSource, DiskSpec, NicSpec, Planner, Snapshot, Vhost};

/// How long [`Hotplug`] waits for the guest to let go of a device when no timeout is given.
pub const DEFAULT_UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// The QMP commands each operation needs.
const NIC_COMMANDS: &[&str] =
    &["getfd", "closefd", "netdev_add", "netdev_del", "device_add", "device_del"];
const DISK_COMMANDS: &[&str] = &["blockdev-add", "blockdev-del", "device_add", "device_del"];
const FDSET_COMMANDS: &[&str] = &["add-fd", "remove-fd", "query-fdsets"];

/// vhost-net's character device: misc major 10, minor 238 (`VHOST_NET_MINOR`).
const VHOST_NET_RDEV: (u64, u64) = (10, 238);

/// The descriptors a plan passes, by [`FdRef`].
#[derive(Debug, Default)]
pub struct PlanFds<'a> {
    /// Tap queues, in order.
    pub taps: Vec<BorrowedFd<'a>>,
    /// vhost-net descriptors, one per queue.
    pub vhost: Vec<BorrowedFd<'a>>,
    /// The disk image.
    pub image: Option<BorrowedFd<'a>>,
}

impl<'a> PlanFds<'a> {
    fn get(&self, fd: FdRef) -> Result<BorrowedFd<'a>, Error> {
        let found = match fd {
            FdRef::Tap(queue) => self.taps.get(queue).copied(),
            FdRef::Vhost(queue) => self.vhost.get(queue).copied(),
            FdRef::Image => self.image,
        };
        found.ok_or_else(|| {
            Error::InvalidSpec(format!("the plan needs descriptor {fd:?}, which was not given"))
        })
    }
}

/// Hot-plugs NICs and disks into one QEMU: Ganeti's `HotAddNic`, `HotDelNic`,
/// `HotAddDisk`, `HotDelDisk` and their helpers, as plans with rollback.
///
/// Every add reads what QEMU has first ([`Hotplug::snapshot`]), so running the same add
/// again after a timeout completes it instead of failing on duplicate ids; every failed
/// add undoes its finished steps in reverse, leaving no netdev, fd name, fdset, block node
/// or device of its own behind.
#[derive(Debug, Clone)]
pub struct Hotplug {
    client: Client,
    planner: Planner,
}

impl Hotplug {
    /// Hotplug over `client`, devices on `pci.0` (the `pc` machine's bus 0).
    pub fn new(client: Client) -> Self {
        Self { client, planner: Planner::default() }
    }

    /// Uses `planner`'s bus and reserved slots.
    #[must_use]
    pub fn with_planner(mut self, planner: Planner) -> Self {
        self.planner = planner;
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The planner.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Reads what QEMU has: bus 0, user-created devices, named block nodes and fdsets.
    ///
    /// # Errors
    /// A failed query, or unexpected `query-pci` data.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let (pci, peripherals, block_nodes, fdsets) = tokio::join!(
            self.pci_slots(),
            self.peripherals(),
            self.block_nodes(),
            self.client.query_fdsets(),
        );
        Ok(Snapshot {
            pci: pci?,
            peripherals: peripherals?,
            block_nodes: block_nodes?,
            fdsets: fdsets?,
        })
    }

    /// Bus 0 from `query-pci` (Ganeti's `_GetPCIDevices`), without the planner's reserved slots.
    ///
    /// # Errors
    /// A failed query, or unexpected data.
    pub async fn pci_slots(&self) -> Result<SlotMap, Error> {
        SlotMap::from_query_pci(&self.client.execute("query-pci", ()).await?)
    }

    /// The first slot the planner would pick (Ganeti's `GetFreePCISlot`).
    ///
    /// # Errors
    /// [`Error::BusFull`], or as [`Hotplug::pci_slots`].
    pub async fn free_slot(&self) -> Result<u8, Error> {
        self.pci_slots()
            .await?
            .with_reserved(self.planner.reserved_slots.iter().copied())
            .free_slot()
    }

    /// Whether device `id` sits in `slot` (Ganeti's `HasPCIDevice`).
    ///
    /// # Errors
    /// As [`Hotplug::pci_slots`].
    pub async fn has_device(&self, id: &DeviceId) -> Result<bool, Error> {
        Ok(self.pci_slots().await?.has_device(&id.to_string(), id.slot()))
    }

    async fn peripherals(&self) -> Result<BTreeSet<String>, Error> {
        #[derive(Deserialize)]
        struct Property {
            name: String,
            #[serde(rename = "type")]
            kind: String,
        }
        let properties: Vec<Property> =
            self.client.execute_as("qom-list", json!({"path": "/machine/peripheral"})).await?;
        Ok(properties
            .into_iter()
            .filter(|p| p.kind.starts_with("child<"))
            .map(|p| p.name)
            .collect())
    }

    async fn block_nodes(&self) -> Result<BTreeSet<String>, Error> {
        #[derive(Deserialize)]
        struct Node {
            #[serde(rename = "node-name")]
            node_name: String,
        }
        let nodes: Vec<Node> =
            self.client.execute_as("query-named-block-nodes", json!({"flat": true})).await?;
        Ok(nodes.into_iter().map(|node| node.node_name).collect())
    }

    /// Whether NIC hot-add can work here (Ganeti's `CheckNicHotAddSupport`): QEMU has
    /// the commands, the connection can pass descriptors, and vhost-net, if asked for,
    /// can be opened on this host.
    ///
    /// # Errors
    /// [`Error::Unsupported`] with the reason.
    pub fn check_nic_support(&self, spec: &NicSpec) -> Result<(), Error> {
        self.check_commands(NIC_COMMANDS)?;
        self.check_fd_passing("tap devices")?;
        if spec.vhost == Vhost::Open {
            // QEMU 7.2 aborts (assertion in net_client_init1) when it cannot start vhost
            // for a tap netdev, so find out here instead.
            hostdev::vhost::vhost_net_usable()
                .map_err(|error| Error::Unsupported(format!("vhost was asked for but {error}")))?;
        }
        Ok(())
    }

    /// Whether disk hot-add can work here (Ganeti's `CheckDiskHotAddSupport`): QEMU has
    /// `blockdev-add` and friends, and, for a descriptor source, fdsets and a connection
    /// that can pass descriptors.
    ///
    /// # Errors
    /// [`Error::Unsupported`] with the reason.
    pub fn check_disk_support(&self, spec: &DiskSpec) -> Result<(), Error> {
        self.check_commands(DISK_COMMANDS)?;
        if spec.source.needs_fd() {
            self.check_commands(FDSET_COMMANDS)?;
            self.check_fd_passing("disk images")?;
        }
        Ok(())
    }

    fn check_commands(&self, commands: &[&str]) -> Result<(), Error> {
        let missing: Vec<&str> =
            commands.iter().copied().filter(|c| !self.client.supports(c)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Unsupported(format!("QEMU lacks the QMP command(s) {}", missing.join(", "))))
        }
    }

    fn check_fd_passing(&self, what: &str) -> Result<(), Error> {
        if self.client.can_pass_fds() {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "{what} are passed as file descriptors, which needs a unix-socket QMP connection"
            )))
        }
    }

    /// Hot-adds a NIC (Ganeti's `HotAddNic`): passes `taps` (one per queue) and, with
    /// [`Vhost::Fds`], `vhost_fds` with `getfd`, then `netdev_add` and `device_add`.
    /// Our copies of the descriptors stay open; QEMU keeps its own.
    ///
    /// # Errors
    /// [`Error::Unsupported`] or [`Error::InvalidSpec`] before anything is sent; a failed
    /// step as [`Error::Step`], after undoing the steps before it.
    pub async fn add_nic(
        &self,
        spec: &NicSpec,
        taps: &[impl AsFd],
        vhost_fds: &[impl AsFd],
    ) -> Result<DeviceId, Error> {
        self.check_nic_support(spec)?;
        if taps.len() != spec.queues {
            return Err(Error::InvalidSpec(format!(
                "{} queues need {} tap descriptors, not {}",
                spec.queues,
                spec.queues,
                taps.len()
            )));
        }
        let expected_vhost = if spec.vhost == Vhost::Fds { spec.queues } else { 0 };
        if vhost_fds.len() != expected_vhost {
            return Err(Error::InvalidSpec(format!(
                "vhost {:?} with {} queues needs {expected_vhost} vhost descriptors, not {}",
                spec.vhost,
                spec.queues,
                vhost_fds.len()
            )));
        }
        for fd in vhost_fds {
            check_vhost_net(fd.as_fd())?;
        }
        let snapshot = self.snapshot().await?;
        let (id, plan) = self.planner.nic_add(spec, &snapshot)?;
        let fds = PlanFds {
            taps: taps.iter().map(AsFd::as_fd).collect(),
            vhost: vhost_fds.iter().map(AsFd::as_fd).collect(),
            image: None,
        };
        self.run(&plan, &fds, DEFAULT_UNPLUG_TIMEOUT)
            .instrument(info_span!("add_nic", %id))
            .await?;
        Ok(id)
    }

    /// Hot-removes NIC `id` (Ganeti's `HotDelNic`): `device_del`, wait up to `timeout`
    /// for the guest (`DEVICE_DELETED`), then `netdev_del`. Also finishes a removal an
    /// earlier call started.
    ///
    /// # Errors
    /// [`Error::UnplugTimeout`] or [`Error::UnplugRefused`] inside [`Error::Step`] when
    /// the guest does not let go: the netdev is then left in place, so the NIC keeps
    /// working.
    pub async fn del_nic(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let plan = self.planner.nic_del(id, &self.snapshot().await?);
        self.run(&plan, &PlanFds::default(), timeout).instrument(info_span!("del_nic", id)).await
    }

    /// Hot-adds a disk (Ganeti's `HotAddDisk`). A [`DiskSource::Path`] is opened here
    /// (read-only when `spec.read_only`) and, like a [`DiskSource::Fd`] given as `fd`,
    /// passed in an fdset; an NBD source is reached by QEMU itself.
    ///
    /// # Errors
    /// [`Error::Open`] or [`Error::Unsupported`] before anything is sent; a failed step as
    /// [`Error::Step`], after undoing the steps before it.
    pub async fn add_disk(
        &self,
        spec: &DiskSpec,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<DeviceId, Error> {
        self.check_disk_support(spec)?;
        let opened: Option<File> = match (&spec.source, fd) {
            (DiskSource::Path(path), None) => Some(
                OpenOptions::new()
                    .read(true)
                    .write(!spec.read_only)
                    .open(path)
                    .map_err(|source| Error::Open { path: path.clone(), source })?,
            ),
            (DiskSource::Fd, Some(_)) | (DiskSource::Nbd(_), None) => None,
            (DiskSource::Fd, None) => {
                return Err(Error::InvalidSpec("a descriptor source needs its descriptor".into()));
            }
            (_, Some(_)) => {
                return Err(Error::InvalidSpec(
                    "only a descriptor source takes a descriptor".into(),
                ));
            }
        };
        let image = opened.as_ref().map(AsFd::as_fd).or(fd);
        let snapshot = self.snapshot().await?;
        let (id, plan) = self.planner.disk_add(spec, &snapshot)?;
        let fds = PlanFds { image, ..PlanFds::default() };
        self.run(&plan, &fds, DEFAULT_UNPLUG_TIMEOUT)
            .instrument(info_span!("add_disk", %id))
            .await?;
        Ok(id)
    }

    /// Hot-removes disk `id` added with `blockdev-add` (Ganeti's `HotDelDisk`):
    /// `device_del`, wait up to `timeout` for the guest, then `blockdev-del`.
    ///
    /// # Errors
    /// As [`Hotplug::del_nic`]; the block node stays when the guest does not let go.
    pub async fn del_disk(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let plan = self.planner.disk_del(id, &self.snapshot().await?);
        self.run(&plan, &PlanFds::default(), timeout).instrument(info_span!("del_disk", id)).await
    }

    /// Hot-removes disk device `id` whose drive `drive` came from `-drive` or HMP
    /// `drive_add`: `device_del`, wait for the guest, then HMP `drive_del` (QMP has no
    /// command for it), reading HMP's text for an error. QEMU usually deletes such a drive
    /// with its device already; `drive_del` then finds nothing, which counts as done.
    ///
    /// # Errors
    /// As [`Hotplug::del_nic`], or [`Error::Hmp`].
    pub async fn del_drive(&self, id: &str, drive: &str, timeout: Duration) -> Result<(), Error> {
        self.run_step(&Step::DeviceDel { id: id.into() }, &PlanFds::default(), timeout)
            .await
            .map_err(|error| Error::Step {
                step: format!("device_del {id}"),
                source: Box::new(error),
                rollback: RollbackFailures::default(),
            })?;
        match self.hmp_silent(&format!("drive_del {drive}")).await {
            Err(Error::Hmp { message, .. }) if message == format!("Device '{drive}' not found") => {
                Ok(())
            }
            other => other,
        }
    }

    /// Runs an HMP command that prints nothing when it succeeds: any text is its error.
    async fn hmp_silent(&self, command_line: &str) -> Result<(), Error> {
        let output = self.client.human_monitor_command(command_line).await?;
        let message = output.trim();
        if message.is_empty() {
            Ok(())
        } else {
            Err(Error::Hmp { command: command_line.into(), message: message.into() })
        }
    }

    /// Carries out `plan`: each step QEMU does not already have, in order. When one fails,
    /// the steps before it are undone newest first; an undo that finds its object already
    /// gone counts as done. `unplug_timeout` bounds each wait for `DEVICE_DELETED`.
    ///
    /// # Errors
    /// [`Error::Step`]: the failed step, its cause, and any undo that failed.
    pub async fn run(
        &self,
        plan: &Plan,
        fds: &PlanFds<'_>,
        unplug_timeout: Duration,
    ) -> Result<(), Error> {
        for (index, planned) in plan.pending() {
            let Err(error) = self.run_step(&planned.step, fds, unplug_timeout).await else {
                continue;
            };
            let mut undo = plan.undo_after(index);
            if outcome_unknown(&error) {
                // QEMU may have done it after all: undo it too (it is gone-tolerant).
                undo.splice(0..0, planned.undo.clone());
            }
            warn!(step = %planned.step, %error, undo = undo.len(), "step failed; rolling back");
            let rollback = self.roll_back(&undo, unplug_timeout).await;
            return Err(Error::Step {
                step: planned.step.to_string(),
                source: Box::new(error),
                rollback,
            });
        }
        Ok(())
    }

    async fn roll_back(&self, undo: &[Step], unplug_timeout: Duration) -> RollbackFailures {
        let mut failures = RollbackFailures::default();
        for step in undo {
            if let Err(error) = self.run_step(step, &PlanFds::default(), unplug_timeout).await {
                warn!(%step, %error, "undo failed");
                failures.0.push((step.to_string(), error.to_string()));
            }
        }
        failures
    }

    async fn run_step(
        &self,
        step: &Step,
        fds: &PlanFds<'_>,
        unplug_timeout: Duration,
    ) -> Result<(), Error> {
        debug!(%step, "running");
        let result = match step {
            Step::GetFd { name, fd } => {
                self.client.get_fd(name, fds.get(*fd)?).await.map_err(Error::from)
            }
            Step::AddFd { fdset_id, opaque, fd } => self
                .client
                .add_fd(fds.get(*fd)?, Some(*fdset_id), Some(opaque))
                .await
                .map(drop)
                .map_err(Error::from),
            Step::DeviceDel { id } => self.unplug(id, unplug_timeout).await,
            Step::NetdevAdd { id, .. } => match self.execute(step).await {
                Err(error) if desc_contains(error.qmp_error(), "Duplicate ID") => {
                    // An earlier try's netdev without its NIC (the plan knows the NIC is
                    // absent): replace it, since its descriptors may be stale.
                    debug!(id, "replacing a netdev an earlier try left");
                    self.execute(&Step::NetdevDel { id: id.clone() }).await?;
                    self.execute(step).await
                }
                other => other,
            },
            _ => self.execute(step).await,
        };
        match result {
            Err(error) if step.is_removal() && is_absent(&error) => Ok(()),
            other => other,
        }
    }

    async fn execute(&self, step: &Step) -> Result<(), Error> {
        self.client.execute(step.command(), step.arguments()).await.map(drop).map_err(Error::from)
    }

    /// `device_del id` and wait for the guest to let go. The subscription starts before
    /// the command so an event that beats the reply is not missed.
    async fn unplug(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let wanted = id.to_owned();
        // Virtio devices send DEVICE_DELETED twice: first for the backend (no `device`).
        let filter = EventFilter::names(["DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR"])
            .matching(move |event| event_device(event) == Some(wanted.as_str()));
        let mut events = self.client.subscribe(filter);
        match self.client.execute("device_del", json!({"id": id})).await {
            Ok(_) => {}
            // A retry while the guest still has the first request: keep waiting for it.
            Err(error) if desc_contains(error.qmp_error(), "in the process of unplug") => {}
            Err(error) => return Err(error.into()),
        }
        match events.wait(timeout).await {
            Ok(event) if event.event == "DEVICE_DELETED" => Ok(()),
            Ok(_) => Err(Error::UnplugRefused { id: id.into() }),
            Err(qmp_client::Error::EventTimeout(_)) => {
                Err(Error::UnplugTimeout { id: id.into(), timeout })
            }
            Err(error) => Err(error.into()),
        }
    }
}

fn event_device(event: &Event) -> Option<&str> {
    event.data.as_ref()?.get("device").and_then(Value::as_str)
}

/// QEMU's ways of saying the object to remove does not exist.
fn is_absent(error: &Error) -> bool {
    error.qmp_error().is_some_and(|(class, desc)| {
        class.as_str() == "DeviceNotFound"
            || ["not found", "has not been found", "Failed to find node"]
                .iter()
                .any(|s| desc.contains(s))
    })
}

fn outcome_unknown(error: &Error) -> bool {
    matches!(error, Error::Client(client) if client.outcome_unknown())
}

/// Whether QEMU's error description (from either error type's `qmp_error()`) says `needle`.
fn desc_contains(qmp_error: Option<(&qmp_client::ErrorClass, &str)>, needle: &str) -> bool {
    qmp_error.is_some_and(|(_, desc)| desc.contains(needle))
}

/// Refuses a vhost descriptor that is not `/dev/vhost-net`: QEMU 7.2 aborts on one.
fn check_vhost_net(fd: BorrowedFd<'_>) -> Result<(), Error> {
    let bad = |why: String| {
        Error::InvalidSpec(format!("a vhost descriptor {why}; QEMU would abort on it"))
    };
    let metadata = File::from(
        fd.try_clone_to_owned().map_err(|e| bad(format!("cannot be duplicated ({e})")))?,
    )
    .metadata()
    .map_err(|e| bad(format!("cannot be inspected ({e})")))?;
    let rdev = metadata.rdev();
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    if metadata.file_type().is_char_device() && (major, minor) == VHOST_NET_RDEV {
        Ok(())
    } else {
        Err(bad("is not /dev/vhost-net (character device 10:238)".into()))
    }
}
