//! The control-buffer walk behind every receive, for the fuzz crate's `scm_control` target
//! (cargo feature `fuzzing`). Not an API: nothing but `fuzz/` turns the feature on.

use std::os::fd::OwnedFd;

/// Runs the walk [`recv_with_fds`](crate::recv_with_fds) runs over the control buffer
/// the kernel filled, and returns what it took: the descriptors of `SCM_RIGHTS` records,
/// then those of `SCM_PIDFD` records, each in buffer order.
///
/// # Safety
/// The walk reads `control` in the Linux `cmsghdr` layout: the first record at offset 0;
/// a record's header (`size_t cmsg_len; int cmsg_level; int cmsg_type;`) must lie whole
/// in the buffer or the walk ends, and it ends at a `cmsg_len` below the header's size;
/// the payload runs from `CMSG_LEN(0)` to `cmsg_len`, cut at the buffer's end; the next
/// record starts `cmsg_len` rounded up to a multiple of `size_t` further on (the walk
/// ends if that overflows). Every non-negative native-endian `int` of the payload of a
/// `SOL_SOCKET` record of type `SCM_RIGHTS` or `SCM_PIDFD` (4) so found must be an open
/// descriptor that the caller owns and gives up by this call, no number twice: the
/// returned `OwnedFd`s close them.
#[allow(unsafe_code)]
pub unsafe fn take_fds(control: &[u8]) -> (Vec<OwnedFd>, Vec<OwnedFd>) {
    let received = crate::control::take_fds(control);
    (received.rights, received.other)
}
