//! [`StartError`]: everything that can go wrong starting QEMU or waiting for its guest.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::guest::GUEST_READY;

/// Why QEMU could not be started, or a wait on it ended without what was waited for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The binary is not installed; the message says where it was looked for.
    #[error("QEMU is not installed: {0}")]
    NotInstalled(String),
    /// `spawn` failed.
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// QEMU exited before its QMP socket came up.
    #[error("QEMU exited early ({status}): {stderr}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The QMP socket did not accept a connection in time.
    #[error("QMP socket not ready after {waited:?}; QEMU stderr: {stderr}")]
    SocketTimeout {
        /// How long was waited.
        waited: Duration,
        /// What QEMU wrote to stderr so far.
        stderr: String,
    },
    /// More [root ports](crate::QemuBuilder::root_ports) than `pcie.0` has free slots for.
    #[error("{asked} root ports asked, but q35's pcie.0 has room for {}", crate::MAX_ROOT_PORTS)]
    TooManyRootPorts {
        /// How many were asked for.
        asked: u8,
    },
    /// Creating QEMU's private directory or its stderr file failed.
    #[error("cannot set up QEMU's private directory: {0}")]
    Io(#[source] io::Error),
    /// The guest image could not be found or built (see [`crate::GuestImage::locate`]).
    #[error("guest image unavailable: {0}")]
    Guest(String),
    /// QEMU runs, but the guest did not print [`GUEST_READY`] in time (or QEMU exited).
    #[error(
        "the guest did not print {GUEST_READY} within {waited:?}\n\
         --- serial log ---\n{log}\n--- QEMU stderr ---\n{stderr}"
    )]
    GuestNotReady {
        /// How long was waited.
        waited: Duration,
        /// The guest's serial console log.
        log: String,
        /// What QEMU wrote to stderr.
        stderr: String,
    },
    /// No serial line containing `needle` came (see [`crate::Qemu::wait_for_serial_after`]).
    #[error(
        "{}\n--- serial log from byte {offset} (last {} bytes at most) ---\n{log_tail}\n\
         --- QEMU stderr ---\n{stderr}",
        match end {
            SerialWaitEnd::NoSerial => format!(
                "no serial line containing {needle:?}: this QEMU boots no guest and keeps no \
                 serial log"
            ),
            SerialWaitEnd::Exited => {
                format!("QEMU exited before the guest printed a line containing {needle:?}")
            }
            SerialWaitEnd::Timeout(waited) => {
                format!("no serial line containing {needle:?} within {waited:?}")
            }
        },
        crate::guest::LOG_TAIL_BYTES
    )]
    NoSerialLine {
        /// What was looked for.
        needle: String,
        /// Why the wait ended.
        end: SerialWaitEnd,
        /// Where in the serial log the search started.
        offset: usize,
        /// The end of the serial log from `offset` on.
        log_tail: String,
        /// What QEMU wrote to stderr.
        stderr: String,
    },
}

/// Why a wait for a serial line ended without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SerialWaitEnd {
    /// The machine has no serial log: no guest and no [`crate::QemuBuilder::serial_log`].
    NoSerial,
    /// QEMU exited first.
    Exited,
    /// The timeout passed.
    Timeout(Duration),
}
