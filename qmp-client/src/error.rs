use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qmp_codec::ErrorClass;
use qmp_schema::Problem;

use crate::limits::ParserLimit;

/// Everything a QMP client call can fail with.
///
/// Three kinds are kept apart: the server's own answer ([`Error::Qmp`], [`Error::Hmp`]), the
/// transport ([`Error::Disconnected`], [`Error::Io`], [`Error::Timeout`], ...), and requests
/// refused before anything was sent ([`Error::InvalidRequest`],
/// [`Error::CommandNotSupported`], [`Error::InvalidArguments`],
/// [`Error::ExceedsParserLimit`]). [`Error::outcome_unknown`] says whether a failed command
/// may still have been carried out. The type is `Clone` so one terminal error can be handed
/// to every pending and later call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered the command with an error reply.
    ///
    /// This includes an error QEMU sent without an `id` (input it could not parse) when
    /// the command was the only one written and unanswered, so the error can only be its
    /// own; see [`Error::Unattributed`] for when it cannot be told.
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
    /// QEMU answered with an error without an `id` (it could not parse some of its input,
    /// for example over its JSON limits) while `among` commands were written and
    /// unanswered, this one among them: the error is one of theirs, but which one cannot
    /// be told, so the outcome of this command is unknown (a late reply to it is
    /// discarded). See the [session docs](crate::session#replies-without-an-id) for the rule.
    #[error(
        "QEMU could not parse one of {among} QMP commands in flight, '{command}' among them \
         ({class}: {desc}); the outcome of '{command}' is unknown"
    )]
    Unattributed {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: ErrorClass,
        /// QEMU's description, e.g. `JSON nesting depth limit exceeded`.
        desc: String,
        /// How many commands the error may belong to.
        among: usize,
    },
    /// The command as encoded would exceed a limit of QEMU's JSON parser, which would
    /// refuse it without an `id`; nothing was sent.
    #[error(
        "QMP command '{command}' not sent: its {limit} is {found}, over QEMU's limit of {}",
        limit.max()
    )]
    ExceedsParserLimit {
        /// The command.
        command: String,
        /// The limit.
        limit: ParserLimit,
        /// What the command has.
        found: u64,
    },
    /// QEMU's schema (`query-qmp-schema`) refuses the command's arguments, so QEMU would
    /// too; nothing was sent. `path`, `expected` and `found` are those of the first
    /// problem; `problems` holds them all (up to [`qmp_schema::MAX_PROBLEMS`]), each with
    /// its close-match suggestion for a misspelt member or value. Only with argument checking on
    /// ([`ClientBuilder::check_arguments`](crate::ClientBuilder::check_arguments)).
    #[error("{command}: {}; nothing was sent", problem_list(.problems))]
    InvalidArguments {
        /// The command.
        command: String,
        /// Where the first problem is: `arguments.file.filename`.
        path: String,
        /// What the schema wants there: `str`, `one of "threads", "native"`.
        expected: String,
        /// What was there: `nothing`, `string "nativ"`, `member "filenme"`.
        found: String,
        /// Every problem found, the first one included.
        problems: Vec<Problem>,
    },
    /// HMP answered a command line with one of its known error texts (see
    /// [`Client::hmp`](crate::Client::hmp)); QEMU reports these as a successful reply.
    #[error("HMP command '{command}' failed: {message}")]
    Hmp {
        /// The command line.
        command: String,
        /// HMP's text, without its trailing line end.
        message: String,
    },
    /// The monitor is held by another client and the connections waiting for it fill the
    /// socket's backlog: `connect(2)` failed with `EAGAIN` until the handshake deadline.
    #[error(
        "the QMP monitor at {} is busy: another client holds it, and the connections waiting \
         for it fill the socket's queue (retried for {waited:.1?})",
        path.display()
    )]
    MonitorBusy {
        /// The socket.
        path: PathBuf,
        /// How long connecting was retried.
        waited: Duration,
    },
    /// The server sent no greeting in time after connecting. QEMU serves one client per
    /// QMP socket and keeps further connections waiting, without a greeting, until the
    /// one it serves leaves: the likely cause.
    #[error(
        "no QMP greeting within {0:?}: the monitor is probably held by another client \
         (QEMU serves one client at a time per QMP socket)"
    )]
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
    /// it timed out, the connection went away while it was in flight, or an error without
    /// an `id` may have been another command's ([`Error::Unattributed`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Disconnected(_) | Self::Unattributed { .. })
    }

    /// The [`Error::InvalidArguments`] for `problems` (not empty) of `command`.
    pub(crate) fn invalid_arguments(command: &str, problems: Vec<Problem>) -> Self {
        let first = problems.first();
        let field = |get: fn(&Problem) -> &String| first.map(get).cloned().unwrap_or_default();
        Self::InvalidArguments {
            command: command.to_owned(),
            path: field(|p| &p.path),
            expected: field(|p| &p.expected),
            found: field(|p| &p.found),
            problems,
        }
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

/// The problems of an [`Error::InvalidArguments`], one after the other.
fn problem_list(problems: &[Problem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
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
