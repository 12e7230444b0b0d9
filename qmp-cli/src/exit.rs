//! Exit statuses and the one-line error reports that go with them: every error a command
//! can end with becomes a [`Failure`] here ([`Failure::from_client`],
//! [`Failure::from_hotplug`], [`Failure::output`]), and [`Failure::report`] is the one place
//! that prints it.
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | success (also: Ctrl-C ends `events`, stdout closed by its reader) |
//! | 1 | the server answered with an error (`error: <Class>: <desc>`), the command is not in the server's `query-commands`, the server's schema refuses the arguments (nothing sent; `exec --check-only` too), `schema` of an unknown name or without a usable schema, HMP rejected the command line, stdout could not be written, a hotplug step was refused (after rollback); hotplug refusals found once connected, with nothing changed: a same-name device differs (`Conflict`), nothing of a device to remove exists (`NotFound`, without `--if-exists`), an id of the other kind (`WrongKind`), a `--drive` not the device's (`DriveMismatch`), a source that is no image (`InvalidSource`), a header contradicting `--format` (`FormatMismatch`), another manager kept taking the slot (`Raced`), `gc` could not remove a part |
//! | 2 | usage, found before anything is connected or opened: an unknown option or a bad option value (one line, like every error), malformed or non-object `ARGS_JSON`, no socket given, unusable inherited descriptors |
//! | 3 | connection: cannot connect, not a QMP monitor (bad greeting), a busy monitor (after retrying until the timeout), protocol violation, disconnect, timeout (including a guest that does not acknowledge an unplug) |
//! | 4 | a hotplug removal that cannot complete now: prelaunch (nothing sent) or a paused VM (`device_del` sent; rerun after `cont`) |
//! | 130, 143 | `qmp demo` ended by SIGINT or SIGTERM, after undoing what it made |

use std::io;
use std::process::ExitCode;

use qmp_client::Error;

use crate::output::escape_for_terminal;

/// Longest error message printed, in characters; the rest is cut with an ellipsis.
const MAX_MESSAGE_CHARS: usize = 1000;

/// How `qmp` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// Everything worked.
    Success = 0,
    /// The server (or HMP) refused the command.
    CommandFailed = 1,
    /// The command line (or a command's arguments) was wrong.
    Usage = 2,
    /// The monitor could not be reached or talked to.
    Connection = 3,
    /// A hotplug removal cannot complete now (prelaunch, or paused: rerun after `cont`).
    NotNow = 4,
    /// `qmp demo` was ended by SIGINT (and cleaned up): 128 + 2, as a shell reports it.
    Interrupted = 130,
    /// `qmp demo` was ended by SIGTERM (and cleaned up): 128 + 15.
    Terminated = 143,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status as u8)
    }
}

/// A failure: its exit status, and the line to print on stderr (none for a quiet end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: Status,
    pub(crate) message: Option<String>,
}

impl Failure {
    /// A failure reported as `qmp: <message>`.
    pub(crate) fn new(status: Status, message: impl AsRef<str>) -> Self {
        Self { status, message: Some(format!("qmp: {}", one_line(message.as_ref()))) }
    }

    /// A usage error (status 2).
    pub(crate) fn usage(message: impl AsRef<str>) -> Self {
        Self::new(Status::Usage, message)
    }

    /// A connection-level failure (status 3).
    pub(crate) fn connection(message: impl AsRef<str>) -> Self {
        Self::new(Status::Connection, message)
    }

    /// Ends with `status` and prints nothing.
    pub(crate) fn quiet(status: Status) -> Self {
        Self { status, message: None }
    }

    /// Maps a client error to its status and line.
    ///
    /// * [`Error::Qmp`] -> 1, as `error: <Class>: <desc>`.
    /// * [`Error::CommandNotSupported`] -> 1: the client's own check against
    ///   `query-commands` (QEMU would have said `CommandNotFound`); nothing was sent.
    /// * [`Error::InvalidArguments`] -> 1: the server's schema refuses the arguments, so
    ///   QEMU would too; nothing was sent. Every problem is named ([`refusal`]).
    /// * [`Error::InvalidRequest`] -> 2.
    /// * everything else (transport, protocol, timeouts) -> 3.
    pub(crate) fn from_client(error: &Error) -> Self {
        match error {
            Error::Qmp { class, desc, .. } => Self {
                status: Status::CommandFailed,
                // Both parts come from the server: escaped alike.
                message: Some(one_line(&format!("error: {class}: {desc}"))),
            },
            Error::CommandNotSupported { command } => Self::new(
                Status::CommandFailed,
                format!(
                    "command '{command}' is not supported by this server (CommandNotFound: it \
                     is not in query-commands; nothing was sent)"
                ),
            ),
            Error::InvalidArguments { command, problems, .. } => {
                Self::new(Status::CommandFailed, refusal(command, problems))
            }
            Error::InvalidRequest(why) => Self::usage(why),
            Error::Timeout { .. } | Error::GreetingTimeout(_) | Error::EventTimeout(_) => {
                Self::connection(format!("timed out: {error}"))
            }
            other => Self::connection(other.to_string()),
        }
    }

    /// Maps a hotplug error to its status and line: QEMU's refusals are 1, transport
    /// trouble and a guest that does not answer in time are 3, a request that cannot work
    /// is 2. A failed step keeps the status of its cause and says which step it was.
    pub(crate) fn from_hotplug(error: &qmp_hotplug::Error) -> Self {
        use qmp_hotplug::Error as E;
        let status = match error {
            E::Step { source, .. } => {
                return Self {
                    message: Some(format!("qmp: {}", one_line(&error.to_string()))),
                    ..Self::from_hotplug(source)
                };
            }
            E::Client(client) => return Self::from_client(client),
            E::InvalidName { .. } | E::InvalidSpec(_) => Status::Usage,
            E::UnplugTimeout { .. }
            | E::HostTimeout { .. }
            | E::Deadline { .. }
            | E::PciData(_) => Status::Connection,
            E::NotRunning { .. } | E::UnplugPending { .. } => Status::NotNow,
            E::Raced { last, .. } => {
                return Self {
                    message: Some(format!("qmp: {}", one_line(&error.to_string()))),
                    ..Self::from_hotplug(last)
                };
            }
            _ => Status::CommandFailed,
        };
        Self::new(status, error.to_string())
    }

    /// A failure to write the output: a closed pipe ends quietly with 0 (the reader has
    /// all it wanted), anything else is status 1.
    pub(crate) fn output(error: &io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Self::quiet(Status::Success)
        } else {
            Self::new(Status::CommandFailed, format!("cannot write the output: {error}"))
        }
    }

    /// Prints the message (if any) on stderr and gives the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        if let Some(message) = &self.message {
            // Nothing sensible is left to do if stderr itself is gone.
            let _ =
                io::Write::write_all(&mut io::stderr().lock(), format!("{message}\n").as_bytes());
        }
        self.status.into()
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::from_client(&error)
    }
}

impl From<qmp_hotplug::Error> for Failure {
    fn from(error: qmp_hotplug::Error) -> Self {
        Self::from_hotplug(&error)
    }
}

/// The line for arguments the server's schema refuses: the command, then each problem with
/// its path, what the schema expects, what was found and a close match, and how to send
/// them anyway.
pub(crate) fn refusal(command: &str, problems: &[qmp_schema::Problem]) -> String {
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "{command}: the server's schema refuses the arguments, nothing was sent: {} \
         (--no-check sends them anyway)",
        problems.join("; ")
    )
}

/// `text` as one printable line: escaped by [`escape_for_terminal`] (so newlines and escape
/// sequences from the server show as `\n`, `\u{1b}`), without trailing line ends, and cut
/// at [`MAX_MESSAGE_CHARS`].
pub(crate) fn one_line(text: &str) -> String {
    let escaped = escape_for_terminal(text.trim_end_matches(['\r', '\n']));
    match escaped.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_client::ErrorClass;

    #[test]
    fn statuses_follow_the_documented_table() {
        let qmp = Error::Qmp {
            command: "x".into(),
            class: ErrorClass::GenericError,
            desc: "bad\nthing".into(),
        };
        let failure = Failure::from_client(&qmp);
        assert_eq!(failure.status, Status::CommandFailed);
        assert_eq!(failure.message.as_deref(), Some("error: GenericError: bad\\nthing"));
        let unsupported = Error::CommandNotSupported { command: "nope".into() };
        assert_eq!(Failure::from_client(&unsupported).status, Status::CommandFailed);
        assert_eq!(Failure::from_client(&Error::InvalidRequest("x".into())).status, Status::Usage);
        let timeout = Error::Timeout {
            command: "query-status".into(),
            timeout: std::time::Duration::from_millis(500),
        };
        let failure = Failure::from_client(&timeout);
        assert_eq!(failure.status, Status::Connection);
        assert!(failure.message.unwrap().starts_with("qmp: timed out: "));
        let gone = Error::Disconnected(qmp_client::DisconnectReason::Eof);
        assert_eq!(Failure::from_client(&gone).status, Status::Connection);
        assert_eq!(Failure::from_client(&Error::Protocol("x".into())).status, Status::Connection);
    }

    #[test]
    fn hotplug_errors_follow_the_documented_table() {
        use qmp_hotplug::{DeviceKind, DiskFormat, Error as E, PendingReason, RunState};
        let status = |error: E| Failure::from_hotplug(&error).status;
        assert_eq!(status(E::NotFound { id: "nic-a-pci-2".into() }), Status::CommandFailed);
        assert_eq!(
            status(E::Conflict { id: "x".into(), differences: vec![] }),
            Status::CommandFailed
        );
        // Refusals found once connected: 1 (2 is for what is wrong before connecting).
        let wrong = E::WrongKind { id: "x".into(), expected: DeviceKind::Disk, found: "y".into() };
        assert_eq!(status(wrong), Status::CommandFailed);
        let drive = E::DriveMismatch { id: "x".into(), drive: "d".into(), uses: None, owner: None };
        assert_eq!(status(drive), Status::CommandFailed);
        let format = E::FormatMismatch { declared: DiskFormat::Raw, found: None };
        assert_eq!(status(format), Status::CommandFailed);
        let prelaunch = E::NotRunning { state: RunState::Prelaunch, reason: "r".into() };
        assert_eq!(status(prelaunch), Status::NotNow);
        let pending = E::UnplugPending { id: "x".into(), reason: PendingReason::Paused };
        assert_eq!(status(pending), Status::NotNow);
        let refused = E::Client(Error::Qmp {
            command: "device_add".into(),
            class: ErrorClass::GenericError,
            desc: "PCI: slot 2 function 0 not available".into(),
        });
        let raced = E::Raced { attempts: 3, last: Box::new(refused) };
        let failure = Failure::from_hotplug(&raced);
        assert_eq!(failure.status, Status::CommandFailed);
        assert!(failure.message.unwrap().contains("gave up after 3 attempts"));
        assert_eq!(ExitCode::from(Status::NotNow), ExitCode::from(4));
    }

    #[test]
    fn server_text_in_an_error_is_escaped_class_included() {
        let qmp = Error::Qmp {
            command: "x".into(),
            class: ErrorClass::Other("Evil\u{1b}]0;owned\u{7}".into()),
            desc: "desc\u{9b}31m".into(),
        };
        let message = Failure::from_client(&qmp).message.unwrap();
        assert_eq!(message, "error: Evil\\u{1b}]0;owned\\u{7}: desc\\u{9b}31m");
    }

    #[test]
    fn messages_are_one_bounded_line() {
        assert_eq!(one_line("a\r\nb\u{1b}c\r\n"), "a\\r\\nb\\u{1b}c");
        let long = "x".repeat(5000);
        assert_eq!(one_line(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn a_closed_pipe_ends_quietly() {
        let failure = Failure::output(&io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(failure, Failure::quiet(Status::Success));
        let failure = Failure::output(&io::Error::other("disk full"));
        assert_eq!(failure.status, Status::CommandFailed);
    }
}
