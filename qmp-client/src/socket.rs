//! What both drivers do with a unix socket: the one function commands are written with
//! (descriptors or not), the buffer reads go through, and which write errors end the
//! connection.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

/// Sends some of `bytes`, with `fds` attached to the first byte (`SCM_RIGHTS`, through
/// fdpass), and returns how many bytes went. `MSG_NOSIGNAL` either way: a closed peer is
/// an error, never `SIGPIPE`. `EINTR` is retried.
pub(crate) fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    if !fds.is_empty() {
        let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        return fdpass::send_with_fds(socket, bytes, &fds).map_err(io::Error::from);
    }
    loop {
        match nix::sys::socket::send(socket.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => {}
            sent => return sent.map_err(io::Error::from),
        }
    }
}

/// Whether a failed write means the connection is gone, rather than that the system
/// refused the descriptors passed with it.
pub(crate) fn breaks_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::WriteZero
    )
}

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The buffer every connection on this thread reads into before keeping what came:
    /// an idle connection holds no read buffer of its own.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
}

/// Runs `read` with this thread's read buffer.
pub(crate) fn with_read_buffer<R>(read: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with_borrow_mut(|buffer| read(buffer))
}
