//! The same calls over [`tokio::net::UnixStream`] (cargo feature `tokio`).
//!
//! Each runs the blocking-API function of the crate root inside
//! [`UnixStream::async_io`]: when the socket is not ready (`WouldBlock`) the task waits
//! for readiness and tries again, and `EINTR` is retried inside. There is no second
//! implementation of the system calls.
//!
//! Cancel safety: [`send_with_fds`] and [`recv_with_fds`] are cancel-safe (a call that is
//! dropped while waiting has sent or received nothing). [`send_all_with_fds`] is not: it
//! may have sent the descriptors and part of the data.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ::tokio::io::Interest;
use ::tokio::net::UnixStream;

use crate::Error;

/// [`crate::send_with_fds`], waiting while the socket buffer is full.
///
/// # Errors
/// As [`crate::send_with_fds`], except that `WouldBlock` is never returned.
pub async fn send_with_fds(
    socket: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, Error> {
    crate::check_send(data, fds)?;
    when_ready(socket, Interest::WRITABLE, || crate::send_with_fds(socket, data, fds)).await
}

/// [`crate::send_all_with_fds`], waiting while the socket buffer is full.
///
/// Not cancel-safe: dropped midway, the descriptors and part of `data` may have gone.
///
/// # Errors
/// As [`crate::send_all_with_fds`], except that `WouldBlock` is never returned.
pub async fn send_all_with_fds(
    socket: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), Error> {
    let mut sent = send_with_fds(socket, data, fds).await?;
    while let Some(rest) = data.get(sent..).filter(|rest| !rest.is_empty()) {
        sent += when_ready(socket, Interest::WRITABLE, || crate::send_some(socket.as_fd(), rest))
            .await?;
    }
    Ok(())
}

/// [`crate::recv_with_fds`], waiting until data (or end of stream) arrives.
///
/// # Errors
/// As [`crate::recv_with_fds`], except that `WouldBlock` is never returned.
pub async fn recv_with_fds(
    socket: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<(usize, Vec<OwnedFd>), Error> {
    if buf.is_empty() {
        return Err(Error::EmptyBuffer);
    }
    when_ready(socket, Interest::READABLE, || crate::recv_with_fds(socket, &mut *buf, max_fds))
        .await
}

/// Runs `op` under `async_io`: a `WouldBlock` from it goes back to tokio, which waits for
/// `interest` and calls again; any other outcome, success or error, is the result.
async fn when_ready<R>(
    socket: &UnixStream,
    interest: Interest,
    mut op: impl FnMut() -> Result<R, Error>,
) -> Result<R, Error> {
    socket
        .async_io(interest, || match op() {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            outcome => Ok(outcome),
        })
        .await?
}
