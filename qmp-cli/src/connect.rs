//! Connecting to the monitor with the global options: which socket, the deadline, and a
//! failure that says why in terms of the socket.

use std::io;
use std::path::Path;
use std::time::Duration;

use qmp_client::{Client, Error};

use crate::cli::GlobalArgs;
use crate::exit::Failure;

/// The socket from `--socket` or `$QMP_SOCKET`.
///
/// # Errors
/// A usage failure when neither is given.
fn socket(global: &GlobalArgs) -> Result<&Path, Failure> {
    match global.socket.as_deref() {
        Some(path) if !path.as_os_str().is_empty() => Ok(path),
        _ => Err(Failure::usage("no QMP socket given: pass --socket PATH or set QMP_SOCKET")),
    }
}

/// Connects to the socket and negotiates, all within the command timeout; every command on
/// the returned client has that timeout too, and has its arguments checked against the
/// server's schema unless `--no-check` was given.
///
/// QEMU serves one client at a time on a QMP socket: while one is connected, the next
/// connections wait in the socket's backlog (two of them), and connecting fails at once
/// with `EAGAIN` when the backlog is full. The client retries such a connect until the
/// timeout ([`Error::MonitorBusy`] then); a connection that waits in the backlog gets no
/// greeting until the holder leaves. Either way the failure names the monitor as busy.
///
/// # Errors
/// Status 3 with a line naming the socket: not there, not a socket, nothing listening, not
/// a QMP monitor (bad greeting), busy, or too slow.
pub(crate) async fn connect(global: &GlobalArgs) -> Result<Client, Failure> {
    let path = socket(global)?;
    let timeout = global.command_timeout();
    Client::builder()
        .handshake_timeout(timeout)
        .default_command_timeout(Some(timeout))
        .check_arguments(!global.no_check)
        .connect(path)
        .await
        .map_err(|error| connect_failure(path, &error))
}

/// A connection that never got the greeting: QEMU queued it behind another client.
fn no_greeting(path: &Path, timeout: Duration) -> Failure {
    Failure::connection(format!(
        "timed out: the monitor at {} took the connection but sent no greeting within \
         {timeout:?}; it is probably held by another client (QEMU serves one client at a time \
         per QMP socket)",
        path.display()
    ))
}

/// Describes why connecting to `path` failed, with a hint where the OS error is terse.
fn connect_failure(path: &Path, error: &Error) -> Failure {
    let shown = path.display();
    match error {
        Error::Io(io_error) => {
            let hint = match io_error.kind() {
                io::ErrorKind::NotFound => " (no such socket; is QEMU running with -qmp?)",
                io::ErrorKind::ConnectionRefused => match std::fs::metadata(path) {
                    Ok(meta) if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                        " (it is not a socket)"
                    }
                    _ => " (nothing is listening there; has QEMU exited?)",
                },
                io::ErrorKind::PermissionDenied => " (check the socket's permissions)",
                _ => "",
            };
            Failure::connection(format!("cannot connect to {shown}: {io_error}{hint}"))
        }
        Error::Protocol(_) | Error::Disconnected(_) | Error::BadReply { .. } => {
            Failure::connection(format!("{shown} is not a usable QMP monitor: {error}"))
        }
        Error::GreetingTimeout(timeout) => no_greeting(path, *timeout),
        Error::MonitorBusy { waited, .. } => Failure::connection(format!(
            "the monitor at {shown} is busy: another client holds it, and the connections \
             waiting for it fill the socket's queue (retried for {:.1}s)",
            waited.as_secs_f64()
        )),
        Error::Timeout { .. } => {
            Failure::connection(format!("timed out connecting to {shown}: {error}"))
        }
        other => Failure::from_client(other),
    }
}
