//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

pub(crate) mod monitor;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use fdpass::send_all_with_fds;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
// `sockopt_impl!` expands to calls of its two helper macros and of `libc::` by plain name.
use nix::{getsockopt_impl, libc, setsockopt_impl, sockopt_impl};

/// `SO_PASSPIDFD` (Linux 6.5+): the kernel adds an `SCM_PIDFD` record, a new descriptor,
/// to every receive. Neither libc nor nix names it yet; the value is the kernel's.
pub(crate) const SO_PASSPIDFD: libc::c_int = 76;

sockopt_impl!(
    /// `SO_PASSPIDFD` as a nix socket option.
    #[allow(unreachable_pub)]
    PassPidFd,
    Both,
    libc::SOL_SOCKET,
    SO_PASSPIDFD,
    bool
);

/// A pipe as `(read end, write end)`; neither has `FD_CLOEXEC`.
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().expect("pipe")
}

/// Whether every write end of the pipe whose read end this is has been closed, i.e. a
/// read returns end-of-file at once instead of `EAGAIN`. The leak check that works while
/// other tests open descriptors in parallel: a leaked write end keeps the pipe open.
///
/// Call it only on an empty pipe (it consumes at most one byte).
pub(crate) fn all_writers_closed(read_end: &OwnedFd) -> bool {
    let flags = OFlag::from_bits_retain(fcntl(read_end.as_fd(), FcntlArg::F_GETFL).unwrap());
    fcntl(read_end.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
    let mut byte = [0_u8; 1];
    match nix::unistd::read(read_end.as_fd(), &mut byte) {
        Ok(0) => true,
        Err(Errno::EAGAIN) => false,
        other => panic!("unexpected read on the pipe: {other:?}"),
    }
}

/// Writes `text` through `fd` (consuming it: the descriptor is closed after).
pub(crate) fn write_through(fd: OwnedFd, text: &[u8]) {
    use std::io::Write;
    std::fs::File::from(fd).write_all(text).expect("write through the passed descriptor");
}

/// Reads everything from `read_end` until end of file.
pub(crate) fn read_to_end(read_end: OwnedFd) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::from(read_end).read_to_end(&mut bytes).expect("read the pipe");
    bytes
}

/// A payload whose bytes depend on their position, so reordering or loss shows.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| i.to_le_bytes()[0] ^ i.to_le_bytes()[2].wrapping_mul(31)).collect()
}

/// Sends `count` fresh pipe write ends with `data` and returns the read ends; the
/// senders' copies of the write ends are closed, so only the ones in flight remain.
pub(crate) fn send_write_ends(socket: &UnixStream, data: &[u8], count: usize) -> Vec<OwnedFd> {
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..count).map(|_| pipe()).collect();
    let write_ends: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
    send_all_with_fds(socket, data, &write_ends).unwrap();
    drop(write_ends);
    pipes.into_iter().map(|(read_end, _)| read_end).collect()
}
