//! The one error type of the crate.

use std::io;

/// Why a send or receive with descriptors, or the adoption of an inherited one, failed.
///
/// Every descriptor that reached this process before the error was already closed when
/// you see it: an `Err` never hands out, or leaks, a descriptor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Descriptors were given with no data: `SCM_RIGHTS` must travel with at least one byte.
    #[error("cannot send file descriptors without at least one byte of data")]
    EmptyData,
    /// The receive buffer is empty, so a read could not tell data from end of stream.
    #[error("cannot receive into an empty buffer")]
    EmptyBuffer,
    /// More descriptors than the kernel takes in one message (`SCM_MAX_FD`).
    #[error("cannot send {count} file descriptors in one message (at most {max})")]
    TooManyFds {
        /// How many were given.
        count: usize,
        /// The limit, [`MAX_FDS_PER_MESSAGE`](crate::MAX_FDS_PER_MESSAGE).
        max: usize,
    },
    /// More descriptors came than the caller had room for; those that arrived were closed.
    #[error(
        "received more file descriptors than room was given for; closed the {received} that \
         arrived (and {bytes} data bytes were read)"
    )]
    ControlTruncated {
        /// How many descriptors reached this process (all now closed); the peer may have
        /// sent more, which the kernel dropped.
        received: usize,
        /// How many data bytes were read into the buffer by the same call; the stream has
        /// moved past them.
        bytes: usize,
    },
    /// A descriptor number said to be inherited cannot be adopted.
    #[error("cannot use inherited file descriptor {fd}: {reason} ({source})")]
    Inherited {
        /// The number.
        fd: i32,
        /// Why not.
        reason: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed its end: the read returned no data.
    #[error("the peer closed the connection")]
    Eof,
    /// The system call failed; a non-blocking socket that is not ready gives kind `WouldBlock`.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// An [`Error::Io`] from a nix error number.
    pub(crate) fn errno(errno: nix::errno::Errno) -> Self {
        Self::Io(io::Error::from(errno))
    }
}

impl From<Error> for io::Error {
    /// `Io` unwraps to the original error; `Eof` becomes `UnexpectedEof`, the caller
    /// mistakes become `InvalidInput` and `ControlTruncated` becomes `InvalidData`; each
    /// keeps the [`Error`] as its inner error.
    fn from(error: Error) -> Self {
        let kind = match error {
            Error::Io(inner) => return inner,
            Error::Eof => io::ErrorKind::UnexpectedEof,
            Error::EmptyData
            | Error::EmptyBuffer
            | Error::TooManyFds { .. }
            | Error::Inherited { .. } => io::ErrorKind::InvalidInput,
            Error::ControlTruncated { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}
