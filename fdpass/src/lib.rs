//! File-descriptor passing (`SCM_RIGHTS`) over unix stream sockets: the one place in
//! qmp-rs that touches ancillary data.
//!
//! QEMU's `getfd` and `add-fd` take the descriptor that arrives with the command's own
//! bytes, so a client must send both in one `sendmsg`. This crate does that, the
//! receiving side for a mock server, and the adoption of descriptors a process inherits;
//! nothing else (the host devices whose descriptors are passed, tap interfaces, vhost-net
//! and disk images, are the `hostdev` crate's):
//!
//! - [`send_with_fds`]: one `sendmsg` with the bytes and the descriptors; may send part
//!   of the bytes, the descriptors always go with the first one.
//! - [`send_all_with_fds`]: the same, then the rest of the bytes; descriptors go once.
//! - [`recv_with_fds`]: bytes plus up to `max_fds` descriptors, each an [`OwnedFd`] with
//!   `FD_CLOEXEC` set (`MSG_CMSG_CLOEXEC`), so none leaks into a child process.
//! - [`tokio`] (cargo feature `tokio`, on by default): the same three over
//!   [`tokio::net::UnixStream`](::tokio::net::UnixStream), waiting for readiness instead of
//!   failing with `WouldBlock`.
//! - [`adopt_inherited_fd`]: own a descriptor inherited from the parent by number (a
//!   tap a VM manager opened, handed to a command-line tool).
//! - [`Error`]: the one error type.
//!
//! All socket calls retry `EINTR`. Sends use `MSG_NOSIGNAL`: a closed peer gives an `EPIPE`
//! error, never a `SIGPIPE`. A received descriptor is never leaked: it is wrapped in an
//! [`OwnedFd`] as soon as the call returns, and an `Err` closes every descriptor that came.
//!
//! Linux (and Android) only: the control-buffer walk follows the Linux `cmsghdr` ABI.
//!
//! # Example
//!
//! Pass a pipe's write end over a socket pair, write through the received copy, and read
//! the text from the pipe:
//!
//! ```
//! use std::fs::File;
//! use std::io::{Read, Write};
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//!
//! let (client, server) = UnixStream::pair()?;
//! let (pipe_read, pipe_write) = nix::unistd::pipe()?;
//!
//! // The command bytes and the descriptor travel in one sendmsg.
//! fdpass::send_all_with_fds(&client, b"take this\n", &[pipe_write.as_fd()])?;
//! drop(pipe_write); // the copy in flight is now the only write end
//!
//! let mut buf = [0; 64];
//! let (n, fds) = fdpass::recv_with_fds(&server, &mut buf, 1)?;
//! assert_eq!(&buf[..n], b"take this\n");
//! let [write_end] = <[_; 1]>::try_from(fds).expect("one descriptor");
//! File::from(write_end).write_all(b"hello")?; // dropped here: the pipe's last writer
//!
//! let mut text = String::new();
//! File::from(pipe_read).read_to_string(&mut text)?;
//! assert_eq!(text, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("fdpass supports Linux and Android only (it reads the Linux cmsghdr layout)");

mod control;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod inherited;
#[cfg(feature = "tokio")]
pub mod tokio;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, recvmsg, send, sendmsg};

pub use crate::error::Error;
pub use crate::inherited::adopt_inherited_fd;

/// The most descriptors one message can carry: the kernel's `SCM_MAX_FD`.
///
/// Sending more fails with [`Error::TooManyFds`] before any system call.
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `data` with `fds` attached, in one `sendmsg`, and returns how many bytes went.
///
/// On a stream socket that can be fewer than `data.len()` (a non-blocking socket with
/// little room, or a signal after part of the data went out); the descriptors always
/// travel with the first byte sent, so send the rest *without* them, or use
/// [`send_all_with_fds`]. The descriptors are duplicated into the message: the caller's
/// own copies stay open. Empty `data` with no `fds` sends nothing and returns `Ok(0)`.
///
/// # Errors
/// - [`Error::EmptyData`] if `fds` is not empty but `data` is, and
///   [`Error::TooManyFds`] above [`MAX_FDS_PER_MESSAGE`]; both before any system call.
/// - [`Error::Io`] from `sendmsg`; `EINTR` is retried. On a non-blocking socket with a
///   full buffer the error has kind [`io::ErrorKind::WouldBlock`] and nothing was sent,
///   descriptors included; call again when the socket is writable.
pub fn send_with_fds(
    socket: impl AsFd,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, Error> {
    check_send(data, fds)?;
    if data.is_empty() {
        return Ok(0);
    }
    let mut numbers: [RawFd; MAX_FDS_PER_MESSAGE] = [0; MAX_FDS_PER_MESSAGE];
    let numbers = &mut numbers[..fds.len()];
    for (number, fd) in numbers.iter_mut().zip(fds) {
        *number = fd.as_raw_fd();
    }
    let rights = [ControlMessage::ScmRights(numbers)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(data)];
    let socket = socket.as_fd();
    retry_eintr(|| sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None))
        .and_then(nonzero)
}

/// Sends all of `data`, with `fds` attached to the first `sendmsg`, then plain sends for
/// whatever that left; the descriptors go exactly once.
///
/// Meant for blocking sockets. On a non-blocking socket it fails with `WouldBlock` as
/// soon as the buffer is full, possibly after part of the data went out (use
/// [`tokio::send_all_with_fds`] there).
///
/// # Errors
/// As [`send_with_fds`]; an error after the first `sendmsg` means the descriptors and
/// part of the data were sent.
pub fn send_all_with_fds(
    socket: impl AsFd,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), Error> {
    let socket = socket.as_fd();
    let mut sent = send_with_fds(socket, data, fds)?;
    while let Some(rest) = data.get(sent..).filter(|rest| !rest.is_empty()) {
        sent += send_some(socket, rest)?;
    }
    Ok(())
}

/// Receives bytes into `buf` and up to `max_fds` descriptors, with one `recvmsg`.
///
/// Returns how many bytes were read (at least one) and the descriptors that came with
/// them, each with `FD_CLOEXEC` set. On a stream socket descriptors arrive with the read
/// that returns the first byte they were sent with, so pass room for them on every read
/// where they may come. `max_fds` above [`MAX_FDS_PER_MESSAGE`] is treated as that.
///
/// Control records of other kinds (for example `SCM_CREDENTIALS` after `SO_PASSCRED`) are
/// skipped; room is kept for them so they do not crowd out the descriptors. A pidfd the
/// kernel adds because of `SO_PASSPIDFD` is closed.
///
/// # Errors
/// - [`Error::EmptyBuffer`] if `buf` is empty.
/// - [`Error::Eof`] if the peer has closed its end (the read returned 0 bytes).
/// - [`Error::ControlTruncated`] if more descriptors came than `max_fds`, or the kernel
///   had to drop some (`MSG_CTRUNC`): every one that arrived is closed, and the bytes
///   read are still in `buf[..bytes]`.
/// - [`Error::Io`] from `recvmsg`; `EINTR` is retried, and a non-blocking socket with no
///   data gives kind [`io::ErrorKind::WouldBlock`].
pub fn recv_with_fds(
    socket: impl AsFd,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<(usize, Vec<OwnedFd>), Error> {
    if buf.is_empty() {
        return Err(Error::EmptyBuffer);
    }
    let socket = socket.as_fd();
    let mut space = [0_u8; control::MAX_CAPACITY];
    let control = &mut space[..control::capacity(max_fds)];
    let (bytes, flags) = loop {
        // Zeroed before every call: the walk in `take_fds` relies on it.
        control.fill(0);
        let mut iov = [IoSliceMut::new(&mut *buf)];
        let received = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut *control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        match received {
            Ok(message) => break (message.bytes, message.flags),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::errno(errno)),
        }
    };
    // Own every descriptor before looking at anything else, so each exit closes them.
    let received = control::take_fds(control);
    drop(received.other);
    let fds = received.rights;
    if flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > max_fds {
        return Err(Error::ControlTruncated { received: fds.len(), bytes });
    }
    if bytes == 0 {
        return Err(Error::Eof);
    }
    Ok((bytes, fds))
}

/// The checks a send makes before any system call.
fn check_send(data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(Error::TooManyFds { count: fds.len(), max: MAX_FDS_PER_MESSAGE });
    }
    if data.is_empty() && !fds.is_empty() {
        return Err(Error::EmptyData);
    }
    Ok(())
}

/// One plain `send` (no descriptors) of non-empty `data`; returns the bytes sent.
fn send_some(socket: BorrowedFd<'_>, data: &[u8]) -> Result<usize, Error> {
    retry_eintr(|| send(socket.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL)).and_then(nonzero)
}

/// Runs `call` until it fails with something other than `EINTR`.
fn retry_eintr<T>(mut call: impl FnMut() -> nix::Result<T>) -> Result<T, Error> {
    loop {
        match call() {
            Err(Errno::EINTR) => {}
            other => return other.map_err(Error::errno),
        }
    }
}

/// A send of non-empty data that reports 0 bytes would loop forever; make it an error.
fn nonzero(sent: usize) -> Result<usize, Error> {
    if sent == 0 { Err(Error::Io(io::ErrorKind::WriteZero.into())) } else { Ok(sent) }
}
