use std::fmt;
use std::time::Duration;

/// Everything planning or carrying out a hotplug operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every slot of bus 0 is taken.
    #[error("PCI bus 0 has no free slot")]
    BusFull,
    /// The slot asked for cannot take a device.
    #[error("PCI slot {slot} cannot take a device: {reason}")]
    SlotUnavailable {
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
    /// A disk image could not be opened, or is not an image (a FIFO, directory or
    /// character device is refused without being opened); nothing was sent.
    #[error(transparent)]
    Open(hostdev::Error),
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
    /// The guest refused to unplug the device (`DEVICE_UNPLUG_GUEST_ERROR`).
    #[error("the guest refused to unplug device '{id}'")]
    UnplugRefused {
        /// The device.
        id: String,
    },
}

impl Error {
    /// QEMU's error class and description, if QEMU refused a command (directly or inside
    /// a failed step).
    pub fn qmp_error(&self) -> Option<(&qmp_client::ErrorClass, &str)> {
        match self {
            Self::Client(error) => error.qmp_error(),
            Self::Step { source, .. } => source.qmp_error(),
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
