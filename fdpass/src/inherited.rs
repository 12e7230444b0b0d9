//! Descriptors a process inherits from its parent by number (`qmp ... --tap-fd 3 3<>...`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

use crate::Error;

/// Takes ownership of descriptor `fd`, inherited from the parent process, after checking
/// that it is open, and marks it close-on-exec so it goes to no other child.
///
/// # Errors
/// [`Error::Inherited`] when `fd` is one of stdin, stdout or stderr (or negative), or not
/// open.
///
/// # Safety
/// Nothing else in the process may own `fd` or take it later: call this at start-up,
/// before the process opens descriptors of its own, at most once per number.
#[allow(unsafe_code)]
pub unsafe fn adopt_inherited_fd(fd: RawFd) -> Result<OwnedFd, Error> {
    let refuse = |reason: &'static str, source: io::Error| Error::Inherited { fd, reason, source };
    if fd <= 2 {
        return Err(refuse(
            "it is not above stderr (2)",
            io::Error::from_raw_os_error(libc::EBADF),
        ));
    }
    // SAFETY: fcntl on any integer is defined: a number that is not open fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(refuse("it is not open", io::Error::last_os_error()));
    }
    // SAFETY: as above; F_SETFD changes only this descriptor's close-on-exec flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(refuse("it cannot be set close-on-exec", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is open (F_GETFD succeeded) and above the standard streams; the caller
    // guarantees that no other owner of it exists or will be created.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    fn fd_flags(fd: RawFd) -> i32 {
        // SAFETY: fcntl on any integer is defined.
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    }

    #[test]
    fn an_open_descriptor_is_adopted_and_made_close_on_exec() {
        let raw = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        // SAFETY: fcntl on a descriptor this test opened and owns.
        assert_eq!(unsafe { libc::fcntl(raw, libc::F_SETFD, 0) }, 0);
        // SAFETY: `raw` came from into_raw_fd above: nothing else owns it.
        let owned = unsafe { adopt_inherited_fd(raw) }.unwrap();
        assert_eq!(fd_flags(raw) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        drop(owned);
        assert_eq!(fd_flags(raw), -1, "closed by its owner");
    }

    #[test]
    fn closed_and_standard_descriptors_are_refused() {
        for fd in [-1, 0, 2, 1_000_000] {
            // SAFETY: each of these fails before taking ownership.
            let error = unsafe { adopt_inherited_fd(fd) }.unwrap_err();
            assert!(matches!(error, Error::Inherited { .. }), "{fd}: {error}");
        }
    }
}
