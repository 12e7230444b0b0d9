//! Carries out [`Plan`]s over a [`qmp_client::Client`], undoing what was done when a step
//! fails. QEMU is reached through the client only, the host through the handed-in [`Host`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hostdev::image::{Access, Image};
use qmp_client::{Client, ErrorClass, Event, EventFilter};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span, warn};

use crate::Error;
use crate::error::RollbackFailures;
use crate::host::{Host, LocalHost};
use crate::ids::DeviceId;
use crate::pci::SlotMap;
use crate::plan::{FdRef, Plan, Step};
use crate::planner::Planner;
use crate::qemu_errors::{
    DUPLICATE_NETDEV_ID, FD_NAME_NOT_FOUND, FDSET_NOT_FOUND, HMP_DEVICE_NOT_FOUND, NODE_NOT_FOUND,
    UNPLUG_IN_PROGRESS,
};
use crate::snapshot::{Query, Replies, Snapshot};
use crate::spec::{DiskSource, DiskSpec, NicSpec, Vhost};

/// How long [`Hotplug`] waits for the guest to let go of a device when no timeout is given.
pub const DEFAULT_UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Hotplug`] lets its [`Host`] take to open a disk image, unless
/// [`Hotplug::with_host_timeout`] says otherwise.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(30);

/// The QMP commands each operation needs.
const NIC_COMMANDS: &[&str] =
    &["getfd", "closefd", "netdev_add", "netdev_del", "device_add", "device_del"];
const DISK_COMMANDS: &[&str] = &["blockdev-add", "blockdev-del", "device_add", "device_del"];
const FDSET_COMMANDS: &[&str] = &["add-fd", "remove-fd", "query-fdsets"];

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
///
/// Files and devices of this machine (disk images, vhost-net) are reached through a
/// [`Host`]: [`LocalHost`] unless [`Hotplug::with_host`] gives another.
#[derive(Debug, Clone)]
pub struct Hotplug {
    client: Client,
    planner: Planner,
    host: Arc<dyn Host>,
    host_timeout: Duration,
}

impl Hotplug {
    /// Hotplug over `client`, devices on `pci.0` (the `pc` machine's bus 0), this machine's
    /// files and devices through [`LocalHost`].
    pub fn new(client: Client) -> Self {
        Self {
            client,
            planner: Planner::default(),
            host: Arc::new(LocalHost),
            host_timeout: DEFAULT_HOST_TIMEOUT,
        }
    }

    /// Reaches files and devices through `host` instead of [`LocalHost`].
    #[must_use]
    pub fn with_host(mut self, host: impl Host + 'static) -> Self {
        self.host = Arc::new(host);
        self
    }

    /// Gives the [`Host`] up to `timeout` to open a disk image (default
    /// [`DEFAULT_HOST_TIMEOUT`]); after that the add fails with [`Error::HostTimeout`],
    /// before anything is sent. The open goes on in its blocking thread, which a tokio
    /// runtime waits for when it shuts down (`Runtime::shutdown_timeout` bounds that).
    #[must_use]
    pub fn with_host_timeout(mut self, timeout: Duration) -> Self {
        self.host_timeout = timeout;
        self
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
            self.query(Query::Pci),
            self.query(Query::Peripherals),
            self.query(Query::BlockNodes),
            self.query(Query::Fdsets),
        );
        Snapshot::from_replies(Replies {
            pci: pci?,
            peripherals: peripherals?,
            block_nodes: block_nodes?,
            fdsets: fdsets?,
        })
    }

    /// Runs one of the snapshot's queries, decoding the reply as `T`.
    async fn query<T: DeserializeOwned>(&self, query: Query) -> Result<T, Error> {
        Ok(self.client.execute_as(query.command(), query.arguments()).await?)
    }

    /// Bus 0 from `query-pci` (Ganeti's `_GetPCIDevices`), without the planner's reserved slots.
    ///
    /// # Errors
    /// A failed query, or unexpected data.
    pub async fn pci_slots(&self) -> Result<SlotMap, Error> {
        SlotMap::from_query_pci(&self.query(Query::Pci).await?)
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
            self.host
                .vhost_net_usable()
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
        for (queue, fd) in vhost_fds.iter().enumerate() {
            self.host.check_vhost_fd(fd.as_fd()).map_err(|error| {
                Error::InvalidSpec(format!(
                    "vhost descriptor {queue}: {error}; QEMU would abort on it"
                ))
            })?;
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

    /// Hot-adds a disk (Ganeti's `HotAddDisk`). A [`DiskSource::Path`] is opened by the
    /// [`Host`] (read-only when `spec.read_only`), off the async runtime's threads, and,
    /// like a [`DiskSource::Fd`] given as `fd`, passed in an fdset; an NBD source is
    /// reached by QEMU itself.
    ///
    /// # Errors
    /// [`Error::Open`] (a missing image, or a FIFO, directory or character device, refused
    /// without opening it), [`Error::HostTimeout`] or [`Error::Unsupported`] before
    /// anything is sent; a failed step as [`Error::Step`], after undoing the steps before it.
    pub async fn add_disk(
        &self,
        spec: &DiskSpec,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<DeviceId, Error> {
        self.check_disk_support(spec)?;
        let opened: Option<Image> = match (&spec.source, fd) {
            (DiskSource::Path(path), None) => Some(self.open_image(path, spec.read_only).await?),
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

    /// Opens `path` through the host on a blocking thread, for at most the host timeout.
    /// On a timeout the thread is left to finish; what it opened then is closed.
    async fn open_image(&self, path: &Path, read_only: bool) -> Result<Image, Error> {
        let host = Arc::clone(&self.host);
        let owned = path.to_owned();
        let access = Access::from_read_only(read_only);
        let opening = tokio::task::spawn_blocking(move || host.open_image(&owned, access));
        match tokio::time::timeout(self.host_timeout, opening).await {
            Ok(Ok(opened)) => opened.map_err(Error::Open),
            Ok(Err(join)) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(Error::Open(hostdev::Error::ImageOpen {
                    path: path.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the runtime shut down before the image was opened",
                    ),
                })),
            },
            Err(_) => Err(Error::HostTimeout {
                operation: format!("opening disk image {}", path.display()),
                timeout: self.host_timeout,
            }),
        }
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
            Err(Error::Hmp { message, .. })
                if HMP_DEVICE_NOT_FOUND.is_hmp_about(&message, drive) =>
            {
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
                Err(error) if DUPLICATE_NETDEV_ID.matches_reply(error.qmp_error()) => {
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
            Err(error) if is_absent(step, &error) => Ok(()),
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
            Err(error) if UNPLUG_IN_PROGRESS.matches_reply(error.qmp_error()) => {}
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

/// Whether QEMU's answer to removal `step` says the object is not there: then the step
/// counts as done. `false` for a step that adds.
fn is_absent(step: &Step, error: &Error) -> bool {
    let Some((class, desc)) = error.qmp_error() else { return false };
    match step {
        Step::DeviceDel { .. } | Step::NetdevDel { .. } => *class == ErrorClass::DeviceNotFound,
        Step::CloseFd { .. } => FD_NAME_NOT_FOUND.matches(class, desc),
        Step::RemoveFdset { .. } => FDSET_NOT_FOUND.matches(class, desc),
        Step::BlockdevDel { .. } => NODE_NOT_FOUND.matches(class, desc),
        _ => false,
    }
}

fn outcome_unknown(error: &Error) -> bool {
    matches!(error, Error::Client(client) if client.outcome_unknown())
}
