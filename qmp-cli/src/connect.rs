//! Connecting to the monitor with the global options: which socket, the deadline, and a
//! failure that says why in terms of the socket.

use std::io;
use std::path::Path;

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

/// Why a QMP socket may accept a connection and then stay silent.
const BUSY_HINT: &str = " (QEMU serves one client at a time per QMP socket: is another connected?)";

/// Connects to the socket and negotiates, all within the command timeout; every command on
/// the returned client has that timeout too.
///
/// # Errors
/// Status 3 with a line naming the socket: not there, not a socket, nothing listening, not
/// a QMP monitor (bad greeting), or too slow.
pub(crate) async fn connect(global: &GlobalArgs) -> Result<Client, Failure> {
    let path = socket(global)?;
    let timeout = global.command_timeout();
    let connecting = Client::builder()
        .handshake_timeout(timeout)
        .default_command_timeout(Some(timeout))
        .connect(path);
    // The handshake has its own deadline; this one also bounds the connect(2) itself.
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(connect_failure(path, &error)),
        Err(_) => Err(Failure::connection(format!(
            "timed out: {} did not complete the QMP handshake within {timeout:?}{BUSY_HINT}",
            path.display()
        ))),
    }
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
        Error::GreetingTimeout(_) | Error::Timeout { .. } => {
            Failure::connection(format!("timed out connecting to {shown}: {error}{BUSY_HINT}"))
        }
        other => Failure::from_client(other),
    }
}
