//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use crate::FileKind;

/// Why opening, classifying or checking a host device failed.
///
/// Every descriptor this crate opened before the error was closed when you see it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tap interface name [`Tap::open`](crate::tap::Tap::open) does not take; checked
    /// before any system call.
    #[error("invalid tap interface name {name:?}: {reason}")]
    TapName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tap queue count out of range: 0, or more than the kernel allows.
    #[error("cannot open a tap interface with {requested} queues (1 to {max})")]
    TapQueues {
        /// How many were asked for.
        requested: usize,
        /// The limit, [`MAX_TAP_QUEUES`](crate::tap::MAX_TAP_QUEUES).
        max: usize,
    },
    /// Opening `/dev/net/tun`, or attaching it to the interface (`TUNSETIFF`), failed; the
    /// queues opened before were closed.
    #[error("cannot open queue {queue} of tap interface {name:?} via /dev/net/tun: {source}")]
    TapOpen {
        /// The interface name: as given for queue 0, as the kernel picked it after.
        name: String,
        /// Which queue failed, from 0.
        queue: usize,
        /// The OS error, e.g. `EPERM` without `CAP_NET_ADMIN` or `EBUSY` for a single-queue
        /// interface already in use.
        #[source]
        source: io::Error,
    },
    /// `/dev/vhost-net` cannot be opened, so a tap netdev must not ask QEMU for vhost.
    #[error(
        "vhost-net is unavailable: {reason} ({source}); leave \"vhost\" off, QEMU aborts on a \
         tap netdev with \"vhost\": true when vhost cannot start"
    )]
    VhostNetUnavailable {
        /// Why, in words: no device node, no driver behind it, no permission, or other.
        reason: &'static str,
        /// The error of the open (`ENOENT`, `ENODEV`, `EACCES`, ...).
        #[source]
        source: io::Error,
    },
    /// A descriptor said to be an open `/dev/vhost-net` is something else.
    #[error("the descriptor is {kind}, not /dev/vhost-net (character device 10:238)")]
    NotVhostNet {
        /// What it is instead.
        kind: FileKind,
    },
    /// `stat` of a path failed: it does not exist, a link dangles, or no permission.
    #[error("cannot stat {path}: {source}", path = path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `fstat` of a descriptor failed (it is not open).
    #[error("cannot fstat the descriptor: {0}")]
    Fstat(#[source] io::Error),
    /// `stat` reported a file type Linux does not have.
    #[error("unknown file type in st_mode {mode:#o}")]
    UnknownFileType {
        /// The `st_mode` as reported.
        mode: u32,
    },
    /// A disk image could not be opened (or looked at before the open).
    #[error("cannot open disk image {path}: {source}", path = path.display())]
    ImageOpen {
        /// The image.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A path or descriptor given as a disk image is neither a regular file nor a block
    /// device: refused before it was opened (a path) or used (a descriptor).
    #[error(
        "refusing {what} as a disk image: it is {kind}, and only a regular file or a block \
         device can be one",
        what = path.as_ref().map_or_else(|| "the descriptor".to_owned(), |p| p.display().to_string())
    )]
    NotAnImage {
        /// The path, if the image was given by path.
        path: Option<PathBuf>,
        /// What it is.
        kind: FileKind,
    },
    /// A file under `/proc` could not be read (the process or descriptor is gone, or no
    /// permission).
    #[error("cannot read {path}: {source}", path = path.display())]
    ProcRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading the first bytes of an image failed.
    #[error("cannot read the header of the disk image: {0}")]
    ReadHeader(#[source] io::Error),
}

impl From<Error> for io::Error {
    /// The caller's mistakes and refusals become `InvalidInput`, and the errors of a
    /// system call keep the kind of their OS error; each keeps the [`Error`] as its inner
    /// error.
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::TapName { .. }
            | Error::TapQueues { .. }
            | Error::NotVhostNet { .. }
            | Error::NotAnImage { .. } => io::ErrorKind::InvalidInput,
            Error::UnknownFileType { .. } => io::ErrorKind::InvalidData,
            Error::TapOpen { source, .. }
            | Error::VhostNetUnavailable { source, .. }
            | Error::Stat { source, .. }
            | Error::ImageOpen { source, .. }
            | Error::ProcRead { source, .. }
            | Error::Fstat(source)
            | Error::ReadHeader(source) => source.kind(),
        };
        io::Error::new(kind, error)
    }
}
