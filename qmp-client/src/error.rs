use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use qmp_codec::ErrorClass;

/// Everything a QMP client call can fail with.
///
/// Three kinds are kept apart: the server's own answer ([`Error::Qmp`]), the transport
/// ([`Error::Disconnected`], [`Error::Io`], [`Error::Timeout`], ...), and caller mistakes
/// ([`Error::InvalidRequest`], [`Error::CommandNotSupported`]). The type is `Clone` so one
/// terminal error can be handed to every pending and later call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered the command with an error reply.
    #[error("QMP command '{command}' failed: {class}: {desc}")]
    Qmp {
        /// The command that failed.
        command: String,
        /// QEMU's error class (almost always `GenericError`).
        class: ErrorClass,
        /// QEMU's description.
        desc: String,
    },
    /// The server does not have this command (it is not in `query-commands`); nothing was sent.
    #[error("QMP command '{command}' is not supported by this server")]
    CommandNotSupported {
        /// The command asked for.
        command: String,
    },
    /// No reply came in time. The command was sent, so QEMU may still carry it out: its
    /// outcome is unknown. A late reply is discarded.
    #[error(
        "QMP command '{command}' got no reply within {timeout:?}; its outcome is unknown \
         (QEMU may still carry it out)"
    )]
    Timeout {
        /// The command.
        command: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The command was never written: its deadline passed while it waited in the outgoing
    /// queue (or for room in it) because the server stopped reading its socket. The
    /// server never saw it, so it had no effect and can be retried.
    #[error(
        "QMP command '{command}' was not sent within {timeout:?}: the server is not reading \
         its socket; it never saw the command"
    )]
    NotSent {
        /// The command.
        command: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The outgoing queue already holds its limit of commands that are not written yet
    /// (the server is not reading its socket); nothing was queued. Only the sans-IO
    /// [`Session`](crate::session::Session) returns this: the clients wait for room.
    #[error(
        "QMP command '{command}' not queued: {capacity} commands already wait to be written \
         (the server is not reading its socket)"
    )]
    QueueFull {
        /// The command.
        command: String,
        /// The queue's limit.
        capacity: usize,
    },
    /// The server sent no greeting in time after connecting.
    #[error("no QMP greeting within {0:?}")]
    GreetingTimeout(Duration),
    /// The connection is gone. Commands in flight fail with this: their outcome is unknown.
    #[error("QMP connection lost: {0}")]
    Disconnected(DisconnectReason),
    /// The server broke the protocol (no greeting, refused negotiation, ...).
    #[error("QMP protocol violation: {0}")]
    Protocol(String),
    /// The reply to a command could not be read (too long, malformed); the connection stays.
    #[error("unreadable reply to QMP command '{command}': {reason}")]
    BadReply {
        /// The command.
        command: String,
        /// What was wrong with the reply.
        reason: String,
    },
    /// The reply's `return` value does not have the type the caller asked for.
    #[error("cannot decode the reply to QMP command '{command}': {reason}")]
    Decode {
        /// The command.
        command: String,
        /// The deserialiser's message.
        reason: String,
    },
    /// Connecting failed, or another transport I/O error outside a live connection.
    #[error("QMP I/O error: {0}")]
    Io(Arc<io::Error>),
    /// The system refused the descriptors passed with a command (for example
    /// `ETOOMANYREFS`), so nothing of that command was sent; the connection stays usable.
    #[error("passing file descriptors failed: {0}")]
    FdPassing(Arc<io::Error>),
    /// This connection cannot carry file descriptors (it is not a unix socket).
    #[error("this QMP connection cannot pass file descriptors: it is not a unix socket")]
    FdPassingUnsupported,
    /// The request itself is wrong (arguments not an object, `exec-oob` without `oob`, ...).
    #[error("invalid QMP request: {0}")]
    InvalidRequest(String),
    /// A subscriber fell behind and events were dropped while waiting for one.
    #[error("{0} events were dropped while waiting for one (the subscriber fell behind)")]
    EventsLost(u64),
    /// No matching event arrived in time.
    #[error("no matching QMP event within {0:?}")]
    EventTimeout(Duration),
}

impl Error {
    /// The server's error class and description, if this is a QMP error reply.
    pub fn qmp_error(&self) -> Option<(&ErrorClass, &str)> {
        match self {
            Self::Qmp { class, desc, .. } => Some((class, desc)),
            _ => None,
        }
    }

    /// `true` if the connection is gone (see [`Error::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    /// `true` if the command may have been carried out although no success was seen:
    /// it timed out, or the connection went away while it was in flight.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Disconnected(_))
    }

    pub(crate) fn io(error: io::Error) -> Self {
        Self::Io(Arc::new(error))
    }

    /// Why a connection that ended with this error is gone, as commands in flight see it.
    pub(crate) fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            Self::Disconnected(reason) => reason.clone(),
            other => DisconnectReason::Protocol(other.to_string()),
        }
    }
}

impl From<fdpass::Error> for Error {
    /// An [`Error::FdPassing`] holding the error as [`io::Error`] (its own conversion).
    fn from(error: fdpass::Error) -> Self {
        Self::FdPassing(Arc::new(io::Error::from(error)))
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server closed the connection (end of stream).
    Eof,
    /// The server closed the connection in the middle of a message.
    Truncated {
        /// Bytes of the unfinished message.
        len: usize,
    },
    /// Reading or writing failed (for example `ECONNRESET` when QEMU is killed).
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The error's text.
        message: String,
    },
    /// The server broke the protocol and the client hung up.
    Protocol(String),
    /// This client closed the connection (`close()`, or the last handle was dropped).
    Closed,
}

impl DisconnectReason {
    pub(crate) fn from_io(error: &io::Error) -> Self {
        Self::Io { kind: error.kind(), message: error.to_string() }
    }

    /// The reason for a stream error from the codec (EOF mid-message or I/O).
    pub(crate) fn from_codec(error: &qmp_codec::Error) -> Self {
        match error {
            qmp_codec::Error::Truncated { len } => Self::Truncated { len: *len },
            qmp_codec::Error::Io(error) => Self::from_io(error),
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eof => f.write_str("the server closed the connection"),
            Self::Truncated { len } => {
                write!(f, "the server closed the connection in the middle of a {len}-byte message")
            }
            Self::Io { message, .. } => write!(f, "I/O error: {message}"),
            Self::Protocol(why) => write!(f, "protocol violation: {why}"),
            Self::Closed => f.write_str("the client closed the connection"),
        }
    }
}
