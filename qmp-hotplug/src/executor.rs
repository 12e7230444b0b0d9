//! Carries out [`Plan`]s over a [`qmp_client::Client`], undoing what was done when a step
//! fails. QEMU is reached through the client only, the host through the handed-in [`Host`].

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use hostdev::image::{Access, Image};
use qmp_client::{Client, ErrorClass, Event, EventFilter};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span, warn};

use crate::Error;
use crate::adopt;
use crate::deadline::Deadline;
use crate::disk_settings::Aio;
use crate::error::{PendingReason, RollbackFailures};
use crate::host::{Host, ImageFacts, LocalHost};
use crate::ids::{DeviceId, DeviceKind};
use crate::leftovers::{self, CleanReport, Leftover, LeftoverPart, Leftovers};
use crate::pci::SlotMap;
use crate::plan::{FdRef, FdsetRef, Plan, Step};
use crate::planner::{Planner, check_queues};
use crate::qemu_errors::{
    FD_NAME_NOT_FOUND, FDSET_NOT_FOUND, HMP_DEVICE_NOT_FOUND, NODE_IN_USE, NODE_NOT_FOUND,
    OBJECT_NOT_FOUND, PROPERTY_NOT_FOUND, RACES, UNPLUG_IN_PROGRESS,
};
use crate::report::{DiskReport, NicReport, Outcome};
use crate::snapshot::{
    DeviceProperties, Focus, PERIPHERAL_PATH, QomProperty, Query, Replies, RunState, Snapshot,
    properties_of, unplaced,
};
use crate::spec::{DiskSource, DiskSpec, NbdExport, NicSpec, RemoveOptions, Vhost};
use crate::tls::{self, TLS_QOM_TYPE, TlsObject};
use crate::topology::{PciTree, Peripheral, Place, TopologyInput};

/// How long a removal waits for the guest (the whole removal's time) when the caller has
/// no better figure, as in [`RemoveOptions::new`]`(DEFAULT_UNPLUG_TIMEOUT)`.
pub const DEFAULT_UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an add (or a leftovers call) may take in all, unless
/// [`Hotplug::with_operation_timeout`] says otherwise.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a rollback may take in all, after the step that failed, unless
/// [`Hotplug::with_rollback_budget`] says otherwise: a frozen QEMU cannot hang the caller
/// for longer than the operation's time plus this.
pub const DEFAULT_ROLLBACK_BUDGET: Duration = Duration::from_secs(10);

/// How long [`Hotplug`] lets its [`Host`] take to open and look at a disk image, unless
/// [`Hotplug::with_host_timeout`] says otherwise (the operation's deadline bounds it too).
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(30);

/// Fresh plans an add makes when another manager keeps taking its slot or names.
pub const MAX_ATTEMPTS: usize = 3;

/// How often a removal tries `blockdev-del` again while a device being finalized still
/// holds the node.
const NODE_RELEASE_POLL: Duration = Duration::from_millis(50);

/// The QMP commands each operation needs.
const NIC_COMMANDS: &[&str] = &[
    "getfd",
    "closefd",
    "netdev_add",
    "netdev_del",
    "device_add",
    "device_del",
    "object-add",
    "object-del",
];
const DISK_COMMANDS: &[&str] = &["blockdev-add", "blockdev-del", "device_add", "device_del"];
const FDSET_COMMANDS: &[&str] = &["add-fd", "remove-fd", "query-fdsets"];

/// A feature probe into QEMU's schema ([`Schema::has`](qmp_client::Schema::has)) and why the
/// operation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The path, e.g. `netdev_add/arg-type/+tap/vhostfds`.
    pub path: String,
    /// What needs it, e.g. `vhost descriptors for 4 queues`.
    pub why: &'static str,
}

impl Probe {
    fn new(path: impl Into<String>, why: &'static str) -> Self {
        Self { path: path.into(), why }
    }
}

/// The schema probes a NIC add of `spec` needs: the tap netdev's members it sends
/// (`fd` or `fds`, `vhost`, `vhostfd(s)`) and the intent marker's QOM `secret`.
pub fn nic_probes(spec: &NicSpec) -> Vec<Probe> {
    let tap = "netdev_add/arg-type/+tap";
    let mut probes = vec![
        Probe::new("object-add/arg-type/+secret/data", "the intent marker"),
        if spec.queues > 1 {
            Probe::new(format!("{tap}/fds"), "one tap descriptor per queue")
        } else {
            Probe::new(format!("{tap}/fd"), "the tap descriptor")
        },
    ];
    match spec.vhost {
        Vhost::Off => {}
        Vhost::Open => probes.push(Probe::new(format!("{tap}/vhost"), "vhost")),
        Vhost::Fds if spec.queues > 1 => {
            probes.push(Probe::new(format!("{tap}/vhostfds"), "vhost descriptors per queue"));
        }
        Vhost::Fds => probes.push(Probe::new(format!("{tap}/vhostfd"), "a vhost descriptor")),
    }
    probes
}

/// The schema probes a disk add of `spec` needs: the format driver, `read-only`, and the
/// protocol (`file` or `host_device` on an fdset with `add-fd`'s `opaque`, or `nbd`, over
/// TLS with `tls-creds`, a `tls-creds-x509` object's `dir` and, if asked, `tls-hostname`).
pub fn disk_probes(spec: &DiskSpec) -> Vec<Probe> {
    let add = "blockdev-add/arg-type";
    let mut probes = vec![
        Probe::new(format!("{add}/+{}", spec.format.driver()), "the declared format"),
        Probe::new(format!("{add}/read-only"), "the read-only flag"),
    ];
    match &spec.source {
        DiskSource::Nbd(export) => {
            probes.push(Probe::new(format!("{add}/+nbd/server"), "an NBD export"));
            if export.export.is_some() {
                probes.push(Probe::new(format!("{add}/+nbd/export"), "a named NBD export"));
            }
            if let Some(tls) = &export.tls {
                probes.push(Probe::new(format!("{add}/+nbd/tls-creds"), "NBD over TLS"));
                probes.push(Probe::new(
                    format!("object-add/arg-type/+{TLS_QOM_TYPE}/dir"),
                    "TLS credentials from a directory",
                ));
                if tls.hostname.is_some() {
                    probes.push(Probe::new(format!("{add}/+nbd/tls-hostname"), "tls-hostname"));
                }
            }
        }
        DiskSource::Path(_) | DiskSource::Fd => {
            probes.push(Probe::new(format!("{add}/+file/filename"), "an image file"));
            probes.push(Probe::new(format!("{add}/+host_device/filename"), "a block device"));
            probes.push(Probe::new("add-fd/arg-type/opaque", "the fdset's fingerprint"));
        }
    }
    if spec.settings.aio == Some(Aio::IoUring) {
        probes.push(Probe::new(format!("{add}/+file/aio/^io_uring"), "aio=io_uring"));
    }
    probes
}

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
/// Every operation reads what QEMU has first and trusts only that:
///
/// - An add whose device QEMU already has returns [`Outcome::AlreadyPresent`] when every
///   field QEMU shows matches the spec (the caller's descriptors are not used), and
///   [`Error::Conflict`] naming each difference otherwise. What an interrupted earlier try
///   of the same name left (a netdev without its NIC, a node without its device, an fdset,
///   an intent marker and its descriptor names) is removed first, never reused.
/// - A failed add undoes its finished steps in reverse, leaving nothing of its own behind,
///   or says precisely what it could not undo.
/// - A removal checks the id is of the kind asked, exists (or was partly removed), and
///   that a drive given belongs to it, before sending anything; it refuses to unplug in
///   prelaunch and returns [`Error::UnplugPending`] at once on a paused VM.
/// - Calls on one `Hotplug` (and its clones) run one at a time. Against another manager,
///   an add whose slot or names were taken meanwhile rolls back and plans again, up to
///   [`MAX_ATTEMPTS`] times. Fdset ids come from QEMU's `add-fd` replies.
/// - Each operation has one deadline; each command, wait and host call gets what is
///   left of it, and a rollback its own bounded budget.
///
/// Files and devices of this machine (disk images, vhost-net, `/proc`) are reached through
/// a [`Host`]: [`LocalHost`] unless [`Hotplug::with_host`] gives another.
#[derive(Debug, Clone)]
pub struct Hotplug {
    client: Client,
    planner: Planner,
    host: Arc<dyn Host>,
    host_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    rollback_budget: Duration,
    serial: Arc<tokio::sync::Mutex<()>>,
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
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            rollback_budget: DEFAULT_ROLLBACK_BUDGET,
            serial: Arc::default(),
        }
    }

    /// Reaches files and devices through `host` instead of [`LocalHost`].
    #[must_use]
    pub fn with_host(mut self, host: impl Host + 'static) -> Self {
        self.host = Arc::new(host);
        self
    }

    /// Gives the [`Host`] up to `timeout` (and never more than what is left of the
    /// operation) to open and inspect a disk image; after that the add fails with
    /// [`Error::HostTimeout`], before anything is sent. The call goes on in its blocking
    /// thread, which a tokio runtime waits for when it shuts down
    /// (`Runtime::shutdown_timeout` bounds that).
    #[must_use]
    pub fn with_host_timeout(mut self, timeout: Duration) -> Self {
        self.host_timeout = timeout;
        self
    }

    /// How long an add, [`Hotplug::leftovers`] or [`Hotplug::clean_leftovers`] may take in
    /// all (default [`DEFAULT_OPERATION_TIMEOUT`]); removals take theirs from
    /// [`RemoveOptions`].
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How long a rollback may take in all (default [`DEFAULT_ROLLBACK_BUDGET`]).
    #[must_use]
    pub fn with_rollback_budget(mut self, budget: Duration) -> Self {
        self.rollback_budget = budget;
        self
    }

    /// Uses `planner`'s bus and reserved slots.
    #[must_use]
    pub fn with_planner(mut self, planner: Planner) -> Self {
        self.planner = planner;
        self
    }

    /// The rollback budget.
    pub(crate) fn rollback_budget(&self) -> Duration {
        self.rollback_budget
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The planner.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Reads what QEMU has: run state, bus 0, user-created devices and objects, block
    /// nodes and backends, fdsets, netdevs, and the properties of every device of ours.
    ///
    /// # Errors
    /// A failed query, or unexpected `query-pci` data.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.inventory(&Focus::Everything, &Deadline::after(self.operation_timeout)).await
    }

    /// Reads QEMU's state. A device listed by `qom-list` but gone by its `qom-get` (the
    /// guest acknowledged an unplug requested earlier, maybe by a manager that died) makes
    /// the whole state be read again, so every listed device has its properties; if it keeps
    /// happening, the vanished devices are left out.
    pub(crate) async fn inventory(
        &self,
        focus: &Focus,
        deadline: &Deadline,
    ) -> Result<Snapshot, Error> {
        const READS: usize = 3;
        let mut reads = 1;
        loop {
            let (mut snapshot, vanished) = self.read_inventory(focus, deadline).await?;
            if vanished.is_empty() || reads == READS {
                for id in &vanished {
                    snapshot.peripherals.remove(id);
                }
                return Ok(snapshot);
            }
            debug!(?vanished, "devices went away while QEMU's state was read; reading again");
            reads += 1;
        }
    }

    /// One read of QEMU's state, and the devices that went away between the listing and
    /// the reading of their properties.
    async fn read_inventory(
        &self,
        focus: &Focus,
        deadline: &Deadline,
    ) -> Result<(Snapshot, Vec<String>), Error> {
        // Boxed: eight queries in flight make a large future, and every operation holds one.
        let (status, pci, machine_type, peripherals, objects, block_nodes, block, fdsets, network) =
            Box::pin(async {
                tokio::join!(
                    self.query(Query::Status, deadline),
                    self.query(Query::Pci, deadline),
                    self.query::<String>(Query::MachineType, deadline),
                    self.query::<Vec<QomProperty>>(Query::Peripherals, deadline),
                    self.query(Query::Objects, deadline),
                    self.query(Query::BlockNodes, deadline),
                    self.query(Query::Block, deadline),
                    self.query(Query::Fdsets, deadline),
                    self.hmp("info network", deadline),
                )
            })
            .await;
        let peripherals = peripherals?;
        let placements = self.place_peripherals(unplaced(&peripherals), deadline).await?;
        let mut snapshot = Snapshot::from_replies(Replies {
            status: status?,
            pci: pci?,
            machine_type: Some(machine_type?),
            placements,
            peripherals,
            objects: objects?,
            block_nodes: block_nodes?,
            block: block?,
            fdsets: fdsets?,
            network: network?,
        })?;
        if snapshot.peripherals.values().any(|driver| crate::scsi::is_virtio_scsi(driver)) {
            snapshot.scsi_buses = self.read_scsi_buses(&snapshot.peripherals, deadline).await?;
        }
        let mut vanished = Vec::new();
        'devices: for (id, kind) in snapshot.property_targets(focus) {
            let mut properties = DeviceProperties::default();
            for property in properties_of(kind) {
                let path = format!("{PERIPHERAL_PATH}/{id}");
                let get =
                    self.client.execute("qom-get", json!({"path": path, "property": property}));
                match self.call(deadline, "qom-get", get).await {
                    Ok(value) => properties.set(property, &value),
                    // Not a property of this device (it is of another kind): nothing to record.
                    Err(error) if PROPERTY_NOT_FOUND.matches_reply(error.qmp_error()) => {}
                    Err(error)
                        if error
                            .qmp_error()
                            .is_some_and(|(class, _)| *class == ErrorClass::DeviceNotFound) =>
                    {
                        vanished.push(id);
                        continue 'devices;
                    }
                    Err(error) => return Err(error),
                }
            }
            snapshot.properties.insert(id, properties);
        }
        Ok((snapshot, vanished))
    }

    /// Reads where QOM puts each peripheral (`parent_bus`, `addr`) and whether a root port
    /// takes hotplug: `query-pci` lists nothing behind a bridge the firmware has not
    /// numbered yet, and does not show a root port's `hotplug` property.
    async fn place_peripherals(
        &self,
        mut peripherals: Vec<Peripheral>,
        deadline: &Deadline,
    ) -> Result<Vec<Peripheral>, Error> {
        for peripheral in &mut peripherals {
            let path = format!("{PERIPHERAL_PATH}/{}", peripheral.id);
            for property in peripheral.wanted_properties() {
                let get =
                    self.client.execute("qom-get", json!({"path": path, "property": property}));
                match self.call(deadline, "qom-get", get).await {
                    Ok(value) => peripheral.set_qom_property(property, &value)?,
                    // Not a PCI device (no addr), or gone since the listing.
                    Err(error) if is_missing(&error) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(peripherals)
    }

    /// Runs one of the snapshot's queries, decoding the reply as `T`.
    async fn query<T: DeserializeOwned>(
        &self,
        query: Query,
        deadline: &Deadline,
    ) -> Result<T, Error> {
        let reply = self.client.execute_as(query.command(), query.arguments());
        self.call(deadline, query.command(), reply).await
    }

    /// Runs an HMP command line through the client's checked [`qmp_client::Client::hmp`]:
    /// HMP's known error texts come back as [`Error::Hmp`].
    async fn hmp(&self, command_line: &str, deadline: &Deadline) -> Result<String, Error> {
        let reply = self.client.hmp(command_line);
        match self.call(deadline, "human-monitor-command", reply).await {
            Err(Error::Client(qmp_client::Error::Hmp { command, message })) => {
                Err(Error::Hmp { command, message })
            }
            other => other,
        }
    }

    /// Waits for this `Hotplug`'s other operations (one runs at a time), for at most what
    /// is left of `deadline`.
    pub(crate) async fn serialise(
        &self,
        deadline: &Deadline,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, Error> {
        tokio::time::timeout(deadline.remaining(), self.serial.lock()).await.map_err(|_| {
            Error::Deadline {
                timeout: deadline.budget(),
                next: "the end of another operation on this Hotplug".into(),
            }
        })
    }

    /// A client call with what is left of `deadline` as its time. Nothing is sent once the
    /// deadline has passed; a call that runs out of time has an unknown outcome.
    pub(crate) async fn call<T>(
        &self,
        deadline: &Deadline,
        command: &str,
        call: impl Future<Output = Result<T, qmp_client::Error>>,
    ) -> Result<T, Error> {
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return Err(Error::Deadline { timeout: deadline.budget(), next: command.into() });
        }
        match tokio::time::timeout(remaining, call).await {
            Ok(result) => result.map_err(Error::from),
            // Dropping the call abandons it; the client discards the late reply.
            Err(_) => Err(Error::Client(qmp_client::Error::Timeout {
                command: command.into(),
                timeout: remaining,
            })),
        }
    }

    /// Bus 0 from `query-pci` alone (Ganeti's `_GetPCIDevices` on `pc`), without the
    /// planner's reserved slots; [`Hotplug::pci_tree`] has every bus.
    ///
    /// # Errors
    /// A failed query, or unexpected data.
    pub async fn pci_slots(&self) -> Result<SlotMap, Error> {
        let deadline = Deadline::after(self.operation_timeout);
        SlotMap::from_query_pci(&self.query(Query::Pci, &deadline).await?)
    }

    /// The whole PCI tree: every bus with its devices, the machine type, and where QOM puts
    /// each peripheral.
    ///
    /// # Errors
    /// A failed query, or unexpected data.
    pub async fn pci_tree(&self) -> Result<PciTree, Error> {
        let deadline = Deadline::after(self.operation_timeout);
        let (pci, machine_type, peripherals) = tokio::join!(
            self.query::<Value>(Query::Pci, &deadline),
            self.query::<String>(Query::MachineType, &deadline),
            self.query::<Vec<QomProperty>>(Query::Peripherals, &deadline),
        );
        let placements = self.place_peripherals(unplaced(&peripherals?), &deadline).await?;
        PciTree::new(&TopologyInput {
            machine_type: Some(machine_type?),
            query_pci: pci?,
            peripherals: placements,
        })
    }

    /// Where the planner would put a device `name` of `kind` (Ganeti's `GetFreePCISlot`,
    /// over every bus, with the planner's [`Preferences`](crate::Preferences)).
    ///
    /// # Errors
    /// [`Error::NoFreePlace`] saying where it looked, or as [`Hotplug::pci_tree`].
    pub async fn free_place(&self, kind: DeviceKind, name: &str) -> Result<Place, Error> {
        DeviceId::check_name(name)?;
        Ok(self.pci_tree().await?.free_place(kind, name, &self.planner.preferences)?)
    }

    /// Whether device `id` sits where its id says, on any bus (Ganeti's `HasPCIDevice`).
    ///
    /// # Errors
    /// As [`Hotplug::pci_tree`].
    pub async fn has_device(&self, id: &DeviceId) -> Result<bool, Error> {
        Ok(self.pci_tree().await?.has_device(&id.to_string(), &id.place()))
    }

    /// Whether NIC hot-add can work here (Ganeti's `CheckNicHotAddSupport`): QEMU has
    /// the commands and, per its schema, every member and variant the add would send
    /// ([`nic_probes`]), the connection can pass descriptors, and vhost-net, if asked
    /// for, can be opened on this host.
    ///
    /// # Errors
    /// [`Error::Unsupported`] with the reason.
    pub async fn check_nic_support(&self, spec: &NicSpec) -> Result<(), Error> {
        self.check_commands(NIC_COMMANDS)?;
        self.check_schema(&nic_probes(spec)).await?;
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
    /// `blockdev-add` and friends and, per its schema, the format and protocol drivers
    /// and members the add would send ([`disk_probes`]), and, for a descriptor source,
    /// fdsets and a connection that can pass descriptors.
    ///
    /// # Errors
    /// [`Error::Unsupported`] with the reason.
    pub async fn check_disk_support(&self, spec: &DiskSpec) -> Result<(), Error> {
        spec.settings.check(matches!(spec.source, DiskSource::Nbd(_)))?;
        self.check_commands(DISK_COMMANDS)?;
        if spec.source.needs_fd() {
            self.check_commands(FDSET_COMMANDS)?;
        }
        if let DiskSource::Nbd(NbdExport { tls: Some(tls), .. }) = &spec.source {
            tls.check()?;
            self.check_commands(&["object-add", "object-del"])?;
        }
        self.check_schema(&disk_probes(spec)).await?;
        if spec.source.needs_fd() {
            self.check_fd_passing("disk images")?;
        }
        Ok(())
    }

    /// Asks QEMU's schema each of `probes` (libvirt-style paths). A server without a usable
    /// schema (an old QEMU, a mock) is judged by its command names alone.
    async fn check_schema(&self, probes: &[Probe]) -> Result<(), Error> {
        let Some(schema) = self.client.schema().await? else {
            tracing::debug!("no usable QEMU schema: hotplug support judged by command names");
            return Ok(());
        };
        let missing: Vec<String> = probes
            .iter()
            .filter(|probe| !schema.has(&probe.path).unwrap_or(false))
            .map(|probe| format!("{} ({})", probe.path, probe.why))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Unsupported(format!("QEMU's schema lacks {}", missing.join(", "))))
        }
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

    /// Hot-adds a NIC (Ganeti's `HotAddNic`): creates an intent marker, passes `taps`
    /// (one per queue) and, with [`Vhost::Fds`], `vhost_fds` with `getfd`, then
    /// `netdev_add` and `device_add`, and deletes the marker. Our copies of the
    /// descriptors stay open; QEMU keeps its own.
    ///
    /// Returns what QEMU has afterwards, read back: the netdev's queues and, where this
    /// host can read QEMU's `/proc`, the tap carrying each. When QEMU already has exactly
    /// this NIC, that is [`Outcome::AlreadyPresent`] and `taps` were not used.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidSpec`] or [`Error::Unsupported`] before
    /// anything is sent; [`Error::Conflict`] when a NIC of that name differs; a failed step
    /// as [`Error::Step`], after undoing the steps before it; [`Error::Raced`] after
    /// [`MAX_ATTEMPTS`] plans raced by another manager.
    pub async fn add_nic(
        &self,
        spec: &NicSpec,
        taps: &[impl AsFd],
        vhost_fds: &[impl AsFd],
    ) -> Result<NicReport, Error> {
        DeviceId::check_name(&spec.name)?;
        check_queues(spec.queues)?;
        spec.check_settings()?;
        self.check_nic_support(spec).await?;
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
        let fds = PlanFds {
            taps: taps.iter().map(AsFd::as_fd).collect(),
            vhost: vhost_fds.iter().map(AsFd::as_fd).collect(),
            image: None,
        };
        let deadline = Deadline::after(self.operation_timeout);
        let _serial = self.serialise(&deadline).await?;
        let span = info_span!("add_nic", name = %spec.name);
        for attempt in 1..=MAX_ATTEMPTS {
            let snapshot = self
                .inventory(&Focus::Named(DeviceKind::Nic, spec.name.clone()), &deadline)
                .instrument(span.clone())
                .await?;
            self.clear_earlier_tries(DeviceKind::Nic, &spec.name, &snapshot, &deadline).await?;
            if let Some(id) = adopt::existing_nic(spec, &snapshot)? {
                debug!(%id, "QEMU already has this NIC");
                return self.nic_report(id, Outcome::AlreadyPresent, &deadline).await;
            }
            let (id, plan) = self.planner.nic_add(spec, &snapshot)?;
            let outcome = self
                .execute_plan(&plan, &fds, &deadline, &snapshot.run_state)
                .instrument(info_span!(parent: &span, "plan", %id, attempt))
                .await;
            match outcome {
                Ok(()) => return self.nic_report(id, Outcome::Added, &deadline).await,
                Err(error) => plan_again_after(&id, error, attempt)?,
            }
        }
        unreachable!("the last attempt returns")
    }

    /// What QEMU has of NIC `id`, read back, with the tap of each queue where it can be
    /// learned (QEMU's pid from the connection, then its `/proc/<pid>/fdinfo`).
    async fn nic_report(
        &self,
        id: DeviceId,
        outcome: Outcome,
        deadline: &Deadline,
    ) -> Result<NicReport, Error> {
        let snapshot =
            self.inventory(&Focus::Device(id.to_string(), DeviceKind::Nic), deadline).await?;
        let fds: Vec<Option<i32>> = snapshot
            .network
            .netdevs
            .get(&id.netdev_id())
            .map(|netdev| netdev.queues.iter().map(|queue| queue.fd).collect())
            .unwrap_or_default();
        let taps = match self.client.peer_pid() {
            Some(pid) => {
                let lookup = self
                    .host_io("reading QEMU's /proc fdinfo".into(), deadline, move |host| {
                        Ok(fds
                            .iter()
                            .map(|fd| fd.and_then(|fd| host.tap_interface(pid, fd).ok().flatten()))
                            .collect::<Vec<_>>())
                    })
                    .await;
                lookup.unwrap_or_else(|error| {
                    debug!(%error, "the taps carrying the queues are unknown");
                    Vec::new()
                })
            }
            None => Vec::new(),
        };
        let mut report = NicReport::read(id, outcome, &snapshot, &taps);
        report.left_behind = leftovers_of_device(&snapshot, &report.id);
        Ok(report)
    }

    /// Hot-adds a disk (Ganeti's `HotAddDisk`). A [`DiskSource::Path`] is opened by the
    /// [`Host`] (read-only when `spec.read_only`), and, like a [`DiskSource::Fd`] given as
    /// `fd`, checked to be a regular file or block device, fingerprinted, and its header
    /// read, all off the async runtime's threads under the deadline. It then goes into a
    /// new fdset that keeps it for the disk's life, its fingerprint as the opaque; a block
    /// device gets the `host_device` driver. An NBD source is reached by QEMU itself.
    ///
    /// The declared format is what QEMU gets (never probed); a header that contradicts it
    /// is refused unless `spec.allow_format_mismatch`.
    ///
    /// # Errors
    /// [`Error::InvalidSource`] (a FIFO, directory, character device or socket, refused
    /// without opening it), [`Error::Open`], [`Error::HostTimeout`],
    /// [`Error::FormatMismatch`] or [`Error::Unsupported`] before anything is sent;
    /// [`Error::Conflict`] when a disk of that name differs (or its image cannot be proven);
    /// a failed step as [`Error::Step`], after undoing the steps before it.
    pub async fn add_disk(
        &self,
        spec: &DiskSpec,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<DiskReport, Error> {
        DeviceId::check_name(&spec.name)?;
        self.check_disk_support(spec).await?;
        let deadline = Deadline::after(self.operation_timeout);
        let opened: Option<(Image, ImageFacts)> = match (&spec.source, fd) {
            (DiskSource::Path(path), None) => {
                let path = path.clone();
                let access = Access::from_read_only(spec.read_only);
                let what = format!("opening disk image {}", path.display());
                Some(
                    self.host_io(what, &deadline, move |host| {
                        let image = host.open_image(&path, access)?;
                        let facts = host.inspect_image(&image)?;
                        Ok((image, facts))
                    })
                    .await?,
                )
            }
            (DiskSource::Fd, Some(fd)) => {
                let copy = fd.try_clone_to_owned().map_err(|source| {
                    Error::Open(hostdev::Error::Fstat(io::Error::new(source.kind(), source)))
                })?;
                let what = "looking at the disk image descriptor".to_owned();
                Some(
                    self.host_io(what, &deadline, move |host| {
                        let image = host.adopt_image_fd(copy)?;
                        let facts = host.inspect_image(&image)?;
                        Ok((image, facts))
                    })
                    .await?,
                )
            }
            (DiskSource::Nbd(_), None) => None,
            (DiskSource::Fd, None) => {
                return Err(Error::InvalidSpec("a descriptor source needs its descriptor".into()));
            }
            (_, Some(_)) => {
                return Err(Error::InvalidSpec(
                    "only a descriptor source takes a descriptor".into(),
                ));
            }
        };
        let identity = opened.as_ref().map(|(_, facts)| facts.identity);
        if let Some((_, facts)) = &opened {
            if !spec.allow_format_mismatch && !spec.format.fits(facts.format) {
                return Err(Error::FormatMismatch { declared: spec.format, found: facts.format });
            }
        }
        let fds = PlanFds {
            image: opened.as_ref().map(|(image, _)| image.as_fd()),
            ..PlanFds::default()
        };
        let _serial = self.serialise(&deadline).await?;
        let span = info_span!("add_disk", name = %spec.name);
        for attempt in 1..=MAX_ATTEMPTS {
            let snapshot = self
                .inventory(&Focus::Named(DeviceKind::Disk, spec.name.clone()), &deadline)
                .instrument(span.clone())
                .await?;
            self.clear_earlier_tries(DeviceKind::Disk, &spec.name, &snapshot, &deadline).await?;
            if let Some(id) = adopt::existing_disk(spec, identity.as_ref(), &snapshot)? {
                self.check_adopted_tls(spec, &id, &snapshot, &deadline).await?;
                debug!(%id, "QEMU already has this disk");
                return self.disk_report(id, Outcome::AlreadyPresent, &deadline).await;
            }
            let (id, plan) = self.planner.disk_add(spec, identity.as_ref(), &snapshot)?;
            let outcome = self
                .execute_plan(&plan, &fds, &deadline, &snapshot.run_state)
                .instrument(info_span!(parent: &span, "plan", %id, attempt))
                .await;
            match outcome {
                Ok(()) => return self.disk_report(id, Outcome::Added, &deadline).await,
                Err(error) => plan_again_after(&id, error, attempt)?,
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Whether disk `id`'s TLS credentials in QEMU are what `spec` would create (read with
    /// `qom-get`); [`Error::Conflict`] naming each difference otherwise.
    async fn check_adopted_tls(
        &self,
        spec: &DiskSpec,
        id: &DeviceId,
        snapshot: &Snapshot,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        let wanted = match &spec.source {
            DiskSource::Nbd(export) => export.tls.as_ref(),
            _ => None,
        };
        let object_id = tls::tls_object_id(id);
        let found = if snapshot.objects.contains(&object_id) {
            let mut values = Vec::new();
            for property in TlsObject::PROPERTIES {
                let get =
                    self.client.execute("qom-get", tls::qom_get_arguments(&object_id, property));
                values.push(self.call(deadline, "qom-get", get).await?);
            }
            Some(TlsObject::from_replies(&values[0], &values[1]))
        } else {
            None
        };
        let differences = tls::differences(wanted, id, found.as_ref());
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::Conflict { id: id.to_string(), differences })
        }
    }

    async fn disk_report(
        &self,
        id: DeviceId,
        outcome: Outcome,
        deadline: &Deadline,
    ) -> Result<DiskReport, Error> {
        let focus = Focus::Device(id.to_string(), DeviceKind::Disk);
        Ok(DiskReport::read(id, outcome, &self.inventory(&focus, deadline).await?))
    }

    /// Runs `call` with the host on a blocking thread, for at most the host timeout and
    /// what is left of `deadline`. On a timeout the thread is left to finish; what it
    /// opened then is closed.
    pub(crate) async fn host_io<T: Send + 'static>(
        &self,
        operation: String,
        deadline: &Deadline,
        call: impl FnOnce(&dyn Host) -> Result<T, hostdev::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let host = Arc::clone(&self.host);
        let timeout = self.host_timeout.min(deadline.remaining());
        let running = tokio::task::spawn_blocking(move || call(&*host));
        match tokio::time::timeout(timeout, running).await {
            Ok(Ok(result)) => result.map_err(|error| match error {
                hostdev::Error::NotAnImage { path, kind } => Error::InvalidSource { path, kind },
                other => Error::Open(other),
            }),
            Ok(Err(join)) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(Error::HostTimeout { operation, timeout }),
            },
            Err(_) => Err(Error::HostTimeout { operation, timeout }),
        }
    }

    /// Removes what earlier, interrupted tries of the device `kind`/`name` left in QEMU
    /// (the snapshot is the check), so a new plan never meets or reuses them.
    async fn clear_earlier_tries(
        &self,
        kind: DeviceKind,
        name: &str,
        snapshot: &Snapshot,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        let items: Vec<Leftover> = leftovers::find(snapshot)
            .into_iter()
            .filter(|item| item.device.kind() == kind && item.device.name() == name)
            .collect();
        let mut failed = Vec::new();
        for item in &items {
            debug!(%item, "removing what an earlier try left");
            if let Err(error) = self.remove_leftover(item, deadline).await {
                failed.push((item.to_string(), error.to_string()));
            }
        }
        match items.first() {
            Some(first) if !failed.is_empty() => {
                Err(Error::LeftoversRemain { id: first.device.to_string(), failed })
            }
            _ => Ok(()),
        }
    }

    /// Sends the commands that remove one leftover part (each tolerant of it being gone).
    async fn remove_leftover(&self, item: &Leftover, deadline: &Deadline) -> Result<(), Error> {
        let steps = match &item.part {
            LeftoverPart::BlockNode { node_name } => {
                vec![Step::BlockdevDel { node_name: node_name.clone() }]
            }
            LeftoverPart::Fdset { fdset_id } => {
                vec![Step::RemoveFdset { fdset: FdsetRef::Id(*fdset_id) }]
            }
            LeftoverPart::Netdev { id } => vec![Step::NetdevDel { id: id.clone() }],
            LeftoverPart::TlsCreds { object } => vec![Step::ObjectDel { id: object.clone() }],
            LeftoverPart::NicIntent { marker, fd_names } => fd_names
                .iter()
                .map(|name| Step::CloseFd { name: name.clone() })
                .chain([Step::ObjectDel { id: marker.clone() }])
                .collect(),
        };
        for step in &steps {
            // No unplug among these: the run state does not matter.
            self.run_step(step, &PlanFds::default(), deadline, &RunState::Running).await?;
        }
        Ok(())
    }

    /// What an interrupted operation left in QEMU: the parts of ours (by the id scheme and
    /// the ownership texts) that no complete device explains. Objects the scheme does not
    /// explain are never listed.
    ///
    /// # Errors
    /// A failed query.
    pub async fn leftovers(&self) -> Result<Leftovers, Error> {
        let deadline = Deadline::after(self.operation_timeout);
        let _serial = self.serialise(&deadline).await?;
        let snapshot = self.inventory(&Focus::Everything, &deadline).await?;
        Ok(Leftovers::in_snapshot(&snapshot))
    }

    /// Removes `leftovers` (as [`Hotplug::leftovers`] listed them), each only if a fresh
    /// look at QEMU right before its removal still shows it as a leftover. On a paused VM
    /// removed fdsets stay listed until it runs: those are reported as pending.
    ///
    /// Another manager's add in progress looks like an interrupted one (its intent
    /// marker, a netdev before its NIC): clean when no other manager is adding, or that
    /// add fails and rolls back.
    ///
    /// # Errors
    /// A failed query; a part that cannot be removed is reported, not an error.
    pub async fn clean_leftovers(&self, leftovers: &Leftovers) -> Result<CleanReport, Error> {
        let deadline = Deadline::after(self.operation_timeout);
        let _serial = self.serialise(&deadline).await?;
        let mut report = CleanReport::default();
        for item in &leftovers.items {
            let snapshot = self.inventory(&Focus::Everything, &deadline).await?;
            if !leftovers::is_leftover(item, &snapshot) {
                report.skipped.push(item.clone());
                continue;
            }
            match self.remove_leftover(item, &deadline).await {
                Ok(())
                    if matches!(item.part, LeftoverPart::Fdset { .. })
                        && !snapshot.run_state.is_running() =>
                {
                    report.pending_until_running.push(item.clone());
                }
                Ok(()) => report.removed.push(item.clone()),
                Err(error) => report.failed.push((item.clone(), error.to_string())),
            }
        }
        Ok(report)
    }

    /// Hot-removes NIC `id` (Ganeti's `HotDelNic`): `device_del`, wait for the guest
    /// (`DEVICE_DELETED`), then `netdev_del`; also finishes a removal an earlier call
    /// started, and removes what an interrupted add of `id` left.
    ///
    /// Checked before anything is sent: `id` is a NIC's id of our scheme and the device,
    /// if present, is a NIC; the VM is running (in prelaunch nothing is sent, since QEMU 7.2
    /// wedges a device unplugged then; when paused, `device_del` is sent and
    /// [`Error::UnplugPending`] returned at once).
    ///
    /// # Errors
    /// [`Error::WrongKind`], [`Error::InvalidName`], [`Error::NotFound`] (unless
    /// `missing_ok`), [`Error::NotRunning`], [`Error::UnplugPending`]; [`Error::UnplugTimeout`]
    /// or [`Error::UnplugRefused`] inside [`Error::Step`] when the guest does not let go:
    /// the netdev is then left in place, so the NIC keeps working.
    pub async fn del_nic(&self, id: &str, options: &RemoveOptions) -> Result<Outcome, Error> {
        let device = our_id(id, DeviceKind::Nic)?;
        let deadline = Deadline::after(options.timeout);
        let _serial = self.serialise(&deadline).await?;
        let focus = Focus::Device(id.to_owned(), DeviceKind::Nic);
        let snapshot = self.inventory(&focus, &deadline).await?;
        if let Some(driver) = snapshot.peripherals.get(id) {
            let properties = snapshot.properties.get(id).cloned().unwrap_or_default();
            if properties.netdev.is_none() {
                return Err(Error::WrongKind {
                    id: id.into(),
                    expected: DeviceKind::Nic,
                    found: format!("a {driver} device, which has no netdev"),
                });
            }
        }
        let plan = self.planner.nic_del(&device, &snapshot);
        self.remove(id, &plan, options, &deadline, &snapshot.run_state)
            .instrument(info_span!("del_nic", id))
            .await
    }

    /// Hot-removes disk `id` added with `blockdev-add` (Ganeti's `HotDelDisk`):
    /// `device_del`, wait for the guest, `blockdev-del`, then `remove-fd` of its fdset;
    /// also finishes a removal an earlier call started.
    ///
    /// # Errors
    /// As [`Hotplug::del_nic`], and [`Error::DriveMismatch`] when the device uses another
    /// drive than its own node (remove it with [`Hotplug::del_drive`]); the block node
    /// stays when the guest does not let go.
    pub async fn del_disk(&self, id: &str, options: &RemoveOptions) -> Result<Outcome, Error> {
        let device = our_id(id, DeviceKind::Disk)?;
        let deadline = Deadline::after(options.timeout);
        let _serial = self.serialise(&deadline).await?;
        let focus = Focus::Device(id.to_owned(), DeviceKind::Disk);
        let snapshot = self.inventory(&focus, &deadline).await?;
        if let Some(driver) = snapshot.peripherals.get(id) {
            // A drive emptied by an earlier, unfinished removal is this disk's to finish.
            check_own_node(&snapshot, id, &device, driver, true)?;
        }
        let plan = self.planner.disk_del(&device, &snapshot);
        self.remove(id, &plan, options, &deadline, &snapshot.run_state)
            .instrument(info_span!("del_disk", id))
            .await
    }

    /// Hot-removes disk device `id` whose drive `drive` came from `-drive` or HMP
    /// `drive_add`: `device_del`, wait for the guest, then HMP `drive_del` (QMP has no
    /// command for it), its output checked. QEMU usually deletes such a drive with its
    /// device already; `drive_del` then finds nothing, which counts as done. `id` need not
    /// be of our scheme (such disks are usually created at boot).
    ///
    /// Checked before anything is sent: the device exists and is a block device, and
    /// `drive` is the one it uses (`query-block`); a typo never removes another disk's drive.
    ///
    /// # Errors
    /// [`Error::NotFound`] (unless `missing_ok`), [`Error::WrongKind`],
    /// [`Error::DriveMismatch`], the run-state errors of [`Hotplug::del_nic`], a failed
    /// unplug inside [`Error::Step`], or [`Error::Hmp`].
    pub async fn del_drive(
        &self,
        id: &str,
        drive: &str,
        options: &RemoveOptions,
    ) -> Result<Outcome, Error> {
        let deadline = Deadline::after(options.timeout);
        let _serial = self.serialise(&deadline).await?;
        let focus = Focus::Device(id.to_owned(), DeviceKind::Disk);
        let snapshot = self.inventory(&focus, &deadline).await?;
        let backend = snapshot.block_backends.iter().find(|backend| backend.drive == drive);
        let owner = backend.and_then(|backend| backend.device_id()).map(str::to_owned);
        let Some(driver) = snapshot.peripherals.get(id) else {
            return match (backend, &owner) {
                // The device is gone and its drive has no user: finish the removal.
                (Some(_), None) => {
                    self.drive_del(drive, &deadline).await?;
                    Ok(Outcome::Removed)
                }
                _ if options.missing_ok => Ok(Outcome::Absent),
                _ => Err(Error::NotFound { id: id.into() }),
            };
        };
        let properties = snapshot.properties.get(id).cloned().unwrap_or_default();
        let Some(uses) = properties.drive else {
            return Err(Error::WrongKind {
                id: id.into(),
                expected: DeviceKind::Disk,
                found: format!("a {driver} device, which has no drive"),
            });
        };
        if uses != drive || owner.as_deref() != Some(id) {
            return Err(Error::DriveMismatch {
                id: id.into(),
                drive: drive.into(),
                uses: Some(uses),
                owner,
            });
        }
        let plan =
            Plan::new(vec![crate::plan::PlannedStep::new(Step::DeviceDel { id: id.into() }, None)]);
        self.remove(id, &plan, options, &deadline, &snapshot.run_state)
            .instrument(info_span!("del_drive", id, drive))
            .await?;
        self.drive_del(drive, &deadline).await?;
        Ok(Outcome::Removed)
    }

    /// HMP `drive_del`: prints nothing on success; "not found" means QEMU deleted the
    /// drive with its device already.
    async fn drive_del(&self, drive: &str, deadline: &Deadline) -> Result<(), Error> {
        let command_line = format!("drive_del {drive}");
        match self.hmp(&command_line, deadline).await {
            Ok(output) if output.trim().is_empty() => Ok(()),
            Ok(output) => Err(Error::Hmp { command: command_line, message: output.trim().into() }),
            Err(Error::Hmp { message, .. })
                if HMP_DEVICE_NOT_FOUND.is_hmp_about(&message, drive) =>
            {
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// Runs a removal plan: an empty one means nothing of `id` exists.
    pub(crate) async fn remove(
        &self,
        id: &str,
        plan: &Plan,
        options: &RemoveOptions,
        deadline: &Deadline,
        run_state: &RunState,
    ) -> Result<Outcome, Error> {
        if plan.steps().is_empty() {
            return if options.missing_ok {
                Ok(Outcome::Absent)
            } else {
                Err(Error::NotFound { id: id.into() })
            };
        }
        for planned in plan.steps() {
            let step = &planned.step;
            loop {
                match self.run_step(step, &PlanFds::default(), deadline, run_state).await {
                    Ok(_) => break,
                    Err(error @ (Error::NotRunning { .. } | Error::UnplugPending { .. })) => {
                        return Err(error);
                    }
                    // The device left QOM but QEMU has not finalized it yet, so its drive
                    // still holds the node: released within moments, so try again.
                    Err(error)
                        if matches!(step, Step::BlockdevDel { .. })
                            && NODE_IN_USE.matches_reply(error.qmp_error())
                            && deadline.remaining() > NODE_RELEASE_POLL =>
                    {
                        debug!(%step, "node still in use by a device being finalized; retrying");
                        tokio::time::sleep(NODE_RELEASE_POLL).await;
                    }
                    Err(error) => {
                        return Err(Error::Step {
                            step: step.to_string(),
                            source: Box::new(error),
                            rollback: RollbackFailures::default(),
                        });
                    }
                }
            }
        }
        Ok(Outcome::Removed)
    }

    /// Carries out `plan`, in order, within `timeout` (the caller's descriptors in `fds`).
    /// When a step fails, the steps before it are undone newest first, within the rollback
    /// budget; an undo that finds its object already gone counts as done. Runs like the
    /// operations, one at a time per `Hotplug`.
    ///
    /// # Errors
    /// [`Error::Step`]: the failed step, its cause, and any undo that failed.
    pub async fn run(
        &self,
        plan: &Plan,
        fds: &PlanFds<'_>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Deadline::after(timeout);
        let _serial = self.serialise(&deadline).await?;
        let run_state = self.query::<Value>(Query::Status, &deadline).await?;
        let run_state = RunState::from_status(run_state["status"].as_str().unwrap_or_default());
        self.execute_plan(plan, fds, &deadline, &run_state).await
    }

    async fn execute_plan(
        &self,
        plan: &Plan,
        fds: &PlanFds<'_>,
        deadline: &Deadline,
        run_state: &RunState,
    ) -> Result<(), Error> {
        let mut new_fdset = None;
        for (index, planned) in plan.steps().iter().enumerate() {
            let step = planned.step.resolved(new_fdset);
            let error = match Box::pin(self.run_step(&step, fds, deadline, run_state)).await {
                Ok(fdset) => {
                    new_fdset = fdset.or(new_fdset);
                    continue;
                }
                Err(error) => error,
            };
            if planned.best_effort {
                warn!(%step, %error, "tidy-up failed; leftovers() lists what it left");
                continue;
            }
            let mut undo = plan.undo_after(index);
            if outcome_unknown(&error) {
                // QEMU may have done it after all: undo it too (it is gone-tolerant).
                undo.splice(0..0, planned.undo.clone());
            }
            warn!(%step, %error, undo = undo.len(), "step failed; rolling back");
            let opaque = plan.steps().iter().find_map(|planned| match &planned.step {
                Step::AddFd { opaque, .. } => Some(opaque.as_str()),
                _ => None,
            });
            let rollback = self.roll_back(&undo, new_fdset, opaque, run_state).await;
            return Err(Error::Step { step: step.to_string(), source: Box::new(error), rollback });
        }
        Ok(())
    }

    /// Undoes `undo` in order within the rollback budget. A planned fdset whose id the
    /// lost `add-fd` reply never gave is found by `opaque` (the plan's own text).
    async fn roll_back(
        &self,
        undo: &[Step],
        new_fdset: Option<u64>,
        opaque: Option<&str>,
        run_state: &RunState,
    ) -> RollbackFailures {
        let deadline = Deadline::after(self.rollback_budget);
        let mut failures = RollbackFailures::default();
        for (index, step) in undo.iter().enumerate() {
            let steps = match (step.resolved(new_fdset), opaque) {
                (Step::RemoveFdset { fdset: FdsetRef::Planned }, Some(opaque)) => {
                    match self.fdsets_with_opaque(opaque, &deadline).await {
                        Ok(sets) => sets
                            .into_iter()
                            .map(|id| Step::RemoveFdset { fdset: FdsetRef::Id(id) })
                            .collect(),
                        Err(error) => {
                            failures.0.push((step.to_string(), error.to_string()));
                            continue;
                        }
                    }
                }
                (resolved, _) => vec![resolved],
            };
            for step in steps {
                let Err(error) =
                    self.run_step(&step, &PlanFds::default(), &deadline, run_state).await
                else {
                    continue;
                };
                warn!(%step, %error, "undo failed");
                failures.0.push((step.to_string(), error.to_string()));
                if matches!(step, Step::DeviceDel { .. }) {
                    // The device still uses its backend: deleting the netdev or node now
                    // would leave it without one. Everything after stays, and says so.
                    for kept in &undo[index + 1..] {
                        let why = format!("not attempted: {step} did not complete");
                        failures.0.push((kept.resolved(new_fdset).to_string(), why));
                    }
                    return failures;
                }
            }
        }
        failures
    }

    async fn fdsets_with_opaque(
        &self,
        opaque: &str,
        deadline: &Deadline,
    ) -> Result<Vec<u64>, Error> {
        let sets = self.call(deadline, "query-fdsets", self.client.query_fdsets()).await?;
        Ok(sets
            .into_iter()
            .filter(|set| set.fds.iter().any(|fd| fd.opaque.as_deref() == Some(opaque)))
            .map(|set| set.fdset_id)
            .collect())
    }

    /// Runs one step; returns the new fdset's id for `add-fd`.
    async fn run_step(
        &self,
        step: &Step,
        fds: &PlanFds<'_>,
        deadline: &Deadline,
        run_state: &RunState,
    ) -> Result<Option<u64>, Error> {
        debug!(%step, "running");
        let result = match step {
            Step::GetFd { name, fd } => {
                let fd = fds.get(*fd)?;
                self.call(deadline, step.command(), self.client.get_fd(name, fd))
                    .await
                    .map(|()| None)
            }
            Step::AddFd { opaque, fd } => {
                let fd = fds.get(*fd)?;
                let added = self.client.add_fd(fd, None, Some(opaque));
                self.call(deadline, step.command(), added).await.map(|info| Some(info.fdset_id))
            }
            Step::RemoveFdset { fdset: FdsetRef::Planned }
            | Step::BlockdevAdd { fdset: Some(FdsetRef::Planned), .. } => {
                return Err(Error::InvalidSpec(format!(
                    "{step} needs the new fdset's id, which no add-fd of this plan gave"
                )));
            }
            Step::DeviceDel { id } => self.unplug(id, deadline, run_state).await.map(|()| None),
            _ => {
                let reply = self.client.execute(step.command(), step.arguments());
                self.call(deadline, step.command(), reply).await.map(|_| None)
            }
        };
        match result {
            Err(error) if is_absent(step, &error) => Ok(None),
            other => other,
        }
    }

    /// `device_del id` and wait for the guest to let go, for what is left of `deadline`.
    /// Never in prelaunch; on a paused VM the request is sent and left pending.
    async fn unplug(
        &self,
        id: &str,
        deadline: &Deadline,
        run_state: &RunState,
    ) -> Result<(), Error> {
        match run_state {
            RunState::Running | RunState::Paused => {}
            RunState::Prelaunch => {
                return Err(Error::NotRunning {
                    state: run_state.clone(),
                    reason: "QEMU 7.2 wedges a device unplugged before the guest first ran \
                             (every later device_del says it is already in the process of \
                             unplug); `cont` and wait for the guest to boot first"
                        .into(),
                });
            }
            other => {
                return Err(Error::NotRunning {
                    state: other.clone(),
                    reason: "the guest cannot acknowledge an unplug in this state".into(),
                });
            }
        }
        let wanted = id.to_owned();
        // Virtio devices send DEVICE_DELETED twice: first for the backend (no `device`).
        let filter = EventFilter::names(["DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR"])
            .matching(move |event| event_device(event) == Some(wanted.as_str()));
        // Subscribed before the command, so an event that beats the reply is not missed.
        let mut events = self.client.subscribe(filter);
        let request = self.client.execute("device_del", json!({"id": id}));
        match self.call(deadline, "device_del", request).await {
            Ok(_) => {}
            // A retry while the guest still has the first request: keep waiting for it.
            Err(error) if UNPLUG_IN_PROGRESS.matches_reply(error.qmp_error()) => {}
            Err(error) => return Err(error),
        }
        if *run_state == RunState::Paused {
            return Err(Error::UnplugPending { id: id.into(), reason: PendingReason::Paused });
        }
        match events.wait(deadline.remaining()).await {
            Ok(event) if event.event == "DEVICE_DELETED" => Ok(()),
            Ok(_) => Err(Error::UnplugRefused { id: id.into() }),
            Err(qmp_client::Error::EventTimeout(_)) => {
                Err(Error::UnplugTimeout { id: id.into(), timeout: deadline.budget() })
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// `id` as a device id of our scheme of `kind`.
pub(crate) fn our_id(id: &str, kind: DeviceKind) -> Result<DeviceId, Error> {
    let device = id.parse::<DeviceId>()?;
    if device.kind() == kind {
        Ok(device)
    } else {
        Err(Error::WrongKind {
            id: id.into(),
            expected: kind,
            found: format!("the id of a {} device", device.kind().prefix()),
        })
    }
}

/// The leftovers in `snapshot` that belong to `device`.
fn leftovers_of_device(snapshot: &Snapshot, device: &DeviceId) -> Vec<Leftover> {
    leftovers::find(snapshot).into_iter().filter(|item| item.device == *device).collect()
}

fn event_device(event: &Event) -> Option<&str> {
    event.data.as_ref()?.get("device").and_then(Value::as_str)
}

/// Whether QEMU's answer to removal `step` says the object is not there: then the step
/// counts as done. `false` for a step that adds.
fn is_absent(step: &Step, error: &Error) -> bool {
    let Some((class, desc)) = error.qmp_error() else { return false };
    match step {
        Step::DeviceDel { .. } | Step::NetdevDel { .. } | Step::SetLink { up: true, .. } => {
            *class == ErrorClass::DeviceNotFound
        }
        Step::CloseFd { .. } => FD_NAME_NOT_FOUND.matches(class, desc),
        Step::RemoveFdset { .. } => FDSET_NOT_FOUND.matches(class, desc),
        Step::BlockdevDel { .. } => NODE_NOT_FOUND.matches(class, desc),
        Step::ObjectDel { .. } => OBJECT_NOT_FOUND.matches(class, desc),
        _ => false,
    }
}

fn outcome_unknown(error: &Error) -> bool {
    matches!(error, Error::Client(client) if client.outcome_unknown())
}

/// A failed, cleanly rolled-back step that another manager caused by taking a slot or a
/// name this plan used.
fn is_race(error: &Error) -> bool {
    match error {
        Error::Step { source, rollback, .. } => {
            rollback.is_empty() && RACES.iter().any(|race| race.matches_reply(source.qmp_error()))
        }
        _ => false,
    }
}

/// What an add does after its plan for `id` failed with `error` on `attempt`: plans again
/// (`Ok`) after a race another manager caused, up to [`MAX_ATTEMPTS`]; otherwise fails, with
/// [`Error::Raced`] once the attempts are spent.
fn plan_again_after(id: &DeviceId, error: Error, attempt: usize) -> Result<(), Error> {
    if !is_race(&error) {
        return Err(error);
    }
    if attempt < MAX_ATTEMPTS {
        warn!(%id, %error, attempt, "raced by another manager; planning again");
        Ok(())
    } else {
        Err(Error::Raced { attempts: attempt, last: Box::new(error) })
    }
}

/// A `qom-get` of a property the object does not have, or of an object that went away.
pub(crate) fn is_missing(error: &Error) -> bool {
    PROPERTY_NOT_FOUND.matches_reply(error.qmp_error())
        || error.qmp_error().is_some_and(|(class, _)| *class == ErrorClass::DeviceNotFound)
}

/// That disk `id` (a `driver` device QEMU has) uses its own block node: a device without a
/// `drive` property is [`Error::WrongKind`], one using another node [`Error::DriveMismatch`]
/// naming that node's owner. An empty `drive` (the backend already gone) passes only when
/// `empty_ok`.
pub(crate) fn check_own_node(
    snapshot: &Snapshot,
    id: &str,
    device: &DeviceId,
    driver: &str,
    empty_ok: bool,
) -> Result<(), Error> {
    let node = device.node_name();
    let drive = snapshot.properties.get(id).and_then(|properties| properties.drive.as_deref());
    match drive {
        Some("") if empty_ok => Ok(()),
        None | Some("") => Err(Error::WrongKind {
            id: id.into(),
            expected: DeviceKind::Disk,
            found: format!("a {driver} device, which has no drive"),
        }),
        Some(drive) if drive != node => {
            let owner = snapshot
                .backend_with_node(&node)
                .and_then(|backend| backend.device_id())
                .map(str::to_owned);
            Err(Error::DriveMismatch {
                id: id.into(),
                drive: node,
                uses: Some(drive.into()),
                owner,
            })
        }
        Some(_) => Ok(()),
    }
}
