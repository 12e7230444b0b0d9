use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hostdev::FileKind;
use hostdev::format::ImageFormat;

use crate::adopt::{self, Difference};
use crate::ids::DeviceKind;
use crate::snapshot::RunState;
use crate::spec::DiskFormat;
use crate::topology::NoFreePlace;

/// Everything planning or carrying out a hotplug operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every slot of bus 0 is taken.
    #[error("PCI bus 0 has no free slot")]
    BusFull,
    /// No bus of the machine can take the device: where the planner looked, why each bus
    /// could not, and what to start the VM with.
    #[error(transparent)]
    NoFreePlace(#[from] NoFreePlace),
    /// The slot asked for cannot take a device.
    #[error("PCI slot {slot} of {bus} cannot take a device: {reason}")]
    SlotUnavailable {
        /// The bus (`pci.0` for pc's bus 0).
        bus: String,
        /// The slot.
        slot: u8,
        /// Why.
        reason: String,
    },
    /// `query-pci` did not have the expected shape.
    #[error("unexpected query-pci data: {0}")]
    PciData(String),
    /// A name for a device id breaks the id rules.
    #[error("invalid device name '{name}': {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The operation's parameters do not fit together.
    #[error("invalid hotplug request: {0}")]
    InvalidSpec(String),
    /// This QEMU, connection or host cannot do the operation; nothing was sent.
    #[error("hotplug is not possible here: {0}")]
    Unsupported(String),
    /// A disk image could not be opened or looked at; nothing was sent.
    #[error(transparent)]
    Open(hostdev::Error),
    /// A disk's source is not an image: a FIFO, directory, character device or socket
    /// (refused before anything was opened or sent; opening a FIFO would block).
    #[error(
        "refusing {what} as a disk image: it is {kind}, and only a regular file or a block \
         device can be one; nothing was sent to QEMU",
        what = path.as_ref().map_or_else(|| "the descriptor".to_owned(), |p| p.display().to_string())
    )]
    InvalidSource {
        /// The path, if the image was given by path.
        path: Option<PathBuf>,
        /// What it is.
        kind: FileKind,
    },
    /// The image's header contradicts the declared (or default) format. QEMU never probes
    /// here (a guest-written header must not choose the driver), so the caller decides:
    /// declare the format the header shows, or set
    /// [`DiskSpec::allow_format_mismatch`](crate::DiskSpec::allow_format_mismatch) to use the
    /// declared one anyway. Nothing was sent.
    #[error(
        "the disk image is declared {declared} but its header {}; nothing was sent to QEMU. \
         Declare the format it has, or, if the header is the guest's data and {declared} is \
         right, allow the mismatch explicitly (DiskSpec::allow_format_mismatch, qmp \
         --allow-format-mismatch)",
        found.map_or_else(|| "has no qcow2 signature".to_owned(), |format| format!("says {}", format.driver()))
    )]
    FormatMismatch {
        /// The format asked for.
        declared: DiskFormat,
        /// The format the header shows (`None`: no known signature).
        found: Option<ImageFormat>,
    },
    /// A device of the same name exists and is not what the spec would create (or QEMU's
    /// state cannot prove it is); nothing was changed.
    #[error(
        "device '{id}' exists and is not what was asked: {}; nothing was changed",
        adopt::list(differences)
    )]
    Conflict {
        /// The existing device.
        id: String,
        /// Each difference.
        differences: Vec<Difference>,
    },
    /// Nothing of this device exists (no device, no leftover part); nothing was changed.
    /// Pass `missing_ok` ([`RemoveOptions::missing_ok`](crate::RemoveOptions::missing_ok))
    /// to treat that as done.
    #[error("no device '{id}' and nothing of it left over; nothing was changed")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The id is not of the kind asked (a NIC's id given to a disk removal, a device
    /// without a NIC's or disk's properties); nothing was changed.
    #[error("'{id}' is not a {} device: {found}; nothing was changed", expected.prefix())]
    WrongKind {
        /// The id asked for.
        id: String,
        /// The kind the operation removes.
        expected: DeviceKind,
        /// What it is instead.
        found: String,
    },
    /// The drive given with a disk removal is not the one that device uses; nothing was
    /// changed.
    #[error(
        "device '{id}' does not use drive '{drive}' (it uses {}; {} has drive '{drive}'); \
         nothing was changed",
        uses.as_deref().filter(|u| !u.is_empty()).unwrap_or("none"),
        owner.as_deref().unwrap_or("no device")
    )]
    DriveMismatch {
        /// The device.
        id: String,
        /// The drive asked for.
        drive: String,
        /// The drive the device uses.
        uses: Option<String>,
        /// The device that uses `drive`, if any.
        owner: Option<String>,
    },
    /// The SCSI controller asked for cannot take a disk (missing, not a virtio-scsi
    /// controller, no PCI place, full), or cannot be removed while devices are on it;
    /// nothing was changed.
    #[error("SCSI controller '{id}': {reason}; nothing was changed")]
    ScsiController {
        /// The controller's id.
        id: String,
        /// Why not.
        reason: String,
    },
    /// The VM is in a state where an unplug must not be sent; nothing was sent.
    #[error("cannot unplug while the VM is {state}: {reason}; nothing was sent")]
    NotRunning {
        /// QEMU's run state.
        state: RunState,
        /// Why not.
        reason: String,
    },
    /// `device_del` was sent but cannot complete yet; the device and its backend are
    /// still there. Run the removal again once the cause is gone.
    #[error("unplug of '{id}' requested, but {reason}")]
    UnplugPending {
        /// The device.
        id: String,
        /// Why it cannot complete now.
        reason: PendingReason,
    },
    /// Another manager kept taking the slot or names planned (`attempts` fresh plans);
    /// each attempt was rolled back.
    #[error("gave up after {attempts} attempts, each raced by another manager; last: {last}")]
    Raced {
        /// How many plans were tried.
        attempts: usize,
        /// The last attempt's failure.
        last: Box<Error>,
    },
    /// The operation's deadline passed before a command could be sent.
    #[error("the operation's {timeout:?} ran out before {next}; it was not sent")]
    Deadline {
        /// The operation's time.
        timeout: Duration,
        /// What was next.
        next: String,
    },
    /// Parts an earlier, interrupted try of this device left in QEMU could not be
    /// removed, so nothing new was added.
    #[error("parts of an earlier try of '{id}' could not be removed: {}; nothing was added",
            failed.iter().map(|(part, why)| format!("{part}: {why}")).collect::<Vec<_>>().join(", "))]
    LeftoversRemain {
        /// The device.
        id: String,
        /// Each part, with why.
        failed: Vec<(String, String)>,
    },
    /// The [`Host`](crate::Host) did not finish in time (an image on a hung file system);
    /// nothing was sent.
    #[error("{operation} did not finish within {timeout:?}; nothing was sent to QEMU")]
    HostTimeout {
        /// What it was doing, e.g. `opening disk image /srv/a.img`.
        operation: String,
        /// How long it had.
        timeout: Duration,
    },
    /// A step failed; the steps before it were undone (see `rollback`).
    #[error("{step} failed: {source}{rollback}")]
    Step {
        /// The failed step, e.g. `netdev_add nic-a-pci-5`.
        step: String,
        /// Why it failed (QEMU's error is inside, see [`Error::qmp_error`]).
        source: Box<Error>,
        /// What the rollback could not undo (empty when it left QEMU clean).
        rollback: RollbackFailures,
    },
    /// A QMP call failed.
    #[error(transparent)]
    Client(#[from] qmp_client::Error),
    /// HMP answered with an error message (HMP reports errors as successful text).
    #[error("HMP '{command}' failed: {message}")]
    Hmp {
        /// The HMP command line.
        command: String,
        /// HMP's message.
        message: String,
    },
    /// The guest did not let go of a device in time: no `DEVICE_DELETED`. The unplug
    /// request stays pending in QEMU; the device is still there.
    #[error("device '{id}' was not unplugged within {timeout:?}: the guest did not acknowledge it")]
    UnplugTimeout {
        /// The device.
        id: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A resize would make the disk smaller, which was not allowed (the guest's data past
    /// the new end would be lost); nothing was changed.
    #[error(
        "resizing disk '{id}' from {current} to {requested} bytes would shrink it and lose \
         the data past the new end; allow shrinking to do that; nothing was changed"
    )]
    Shrink {
        /// The disk.
        id: String,
        /// Its size now, in bytes.
        current: u64,
        /// The size asked for.
        requested: u64,
    },
    /// The disk is read-only, so it cannot be resized; nothing was changed.
    #[error("disk '{id}' is read-only and cannot be resized; nothing was changed")]
    ReadOnly {
        /// The disk.
        id: String,
    },
    /// The guest refused to unplug the device (`DEVICE_UNPLUG_GUEST_ERROR`).
    #[error("the guest refused to unplug device '{id}'")]
    UnplugRefused {
        /// The device.
        id: String,
    },
}

/// Why an unplug is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PendingReason {
    /// The VM is paused: the guest acknowledges the unplug only once it runs.
    Paused,
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Paused => f.write_str(
                "the VM is paused: the guest can acknowledge the unplug only once it runs \
                 (`cont`); run the removal again after that to delete the backend",
            ),
        }
    }
}

impl Error {
    /// QEMU's error class and description, if QEMU refused a command (directly or inside
    /// a failed step).
    pub fn qmp_error(&self) -> Option<(&qmp_client::ErrorClass, &str)> {
        match self {
            Self::Client(error) => error.qmp_error(),
            Self::Step { source, .. } => source.qmp_error(),
            Self::Raced { last, .. } => last.qmp_error(),
            _ => None,
        }
    }

    /// The failed step's name, if this is a failed step.
    pub fn failed_step(&self) -> Option<&str> {
        match self {
            Self::Step { step, .. } => Some(step),
            _ => None,
        }
    }
}

/// The undo steps that failed during a rollback, with why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollbackFailures(pub Vec<(String, String)>);

impl RollbackFailures {
    /// `true` when the rollback left nothing behind.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for RollbackFailures {
    /// Empty when clean; otherwise `; rollback incomplete: <step>: <error>, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (step, error)) in self.0.iter().enumerate() {
            let lead = if index == 0 { "; rollback incomplete: " } else { ", " };
            write!(f, "{lead}{step}: {error}")?;
        }
        Ok(())
    }
}
