//! The control (ancillary-data) buffer of `recvmsg`: its size, and the walk over what the
//! kernel wrote into it.
//!
//! nix's `RecvMsg::cmsgs` refuses to iterate when `MSG_CTRUNC` is set (it returns `ENOBUFS`),
//! yet on truncation the kernel has already installed every descriptor that fit. To close
//! those, this module reads the buffer itself, in safe code, following the Linux ABI of
//! `struct cmsghdr` (`size_t cmsg_len; int cmsg_level; int cmsg_type;`, records aligned to
//! `size_t`). The same walk serves every receive, so it is exercised by every test.

use std::mem::{offset_of, size_of};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

use crate::MAX_FDS_PER_MESSAGE;

/// Records in the control buffer are aligned to `size_t` (Linux `CMSG_ALIGN`).
const ALIGN: usize = size_of::<usize>();
/// `sizeof(struct cmsghdr)`.
const HEADER_LEN: usize = size_of::<libc::cmsghdr>();
/// Where a record's payload starts: `CMSG_LEN(0)`.
const DATA_OFFSET: usize = align(HEADER_LEN);
/// Offset of `cmsg_level`; `cmsg_type` follows it.
const LEVEL_OFFSET: usize = size_of::<usize>();
const TYPE_OFFSET: usize = LEVEL_OFFSET + size_of::<libc::c_int>();

// The walk below reads the kernel's layout; make sure libc agrees with it on this target
// (glibc and musl both do on Linux, including musl's padded 32-bit `cmsg_len`).
const _: () = {
    assert!(HEADER_LEN == size_of::<usize>() + 2 * size_of::<libc::c_int>());
    assert!(offset_of!(libc::cmsghdr, cmsg_level) == LEVEL_OFFSET);
    assert!(offset_of!(libc::cmsghdr, cmsg_type) == TYPE_OFFSET);
};

/// `SCM_PIDFD` (Linux 6.5+, sent when the receiver set `SO_PASSPIDFD`): carries one pidfd
/// the kernel installed for us. Not in the libc crate yet; the value is the kernel's.
const SCM_PIDFD: libc::c_int = 0x04;

/// Room kept beside the descriptors for the other records the kernel may put first when
/// the caller enabled them on the socket: `SCM_CREDENTIALS` (`SO_PASSCRED`) and
/// `SCM_PIDFD` (`SO_PASSPIDFD`). Without it they would crowd the descriptors out.
const OTHER_RECORDS_ROOM: usize = space(size_of::<libc::ucred>()) + space(size_of::<libc::c_int>());

/// The largest control buffer [`capacity`] asks for.
pub(crate) const MAX_CAPACITY: usize =
    space(MAX_FDS_PER_MESSAGE * size_of::<RawFd>()) + OTHER_RECORDS_ROOM;

/// `CMSG_ALIGN`.
const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_SPACE(data_len)`: the bytes one record with `data_len` payload bytes takes.
const fn space(data_len: usize) -> usize {
    DATA_OFFSET + align(data_len)
}

/// The control buffer length for a receive that takes up to `max_fds` descriptors.
///
/// Alignment can leave room for one more descriptor than asked (two 4-byte fds fit where
/// one was asked on 64-bit), so the caller still compares the count with `max_fds`.
pub(crate) const fn capacity(max_fds: usize) -> usize {
    let max_fds = if max_fds > MAX_FDS_PER_MESSAGE { MAX_FDS_PER_MESSAGE } else { max_fds };
    space(max_fds * size_of::<RawFd>()) + OTHER_RECORDS_ROOM
}

/// Every descriptor found in a control buffer that the kernel just filled.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// From `SCM_RIGHTS`: what the peer sent.
    pub(crate) rights: Vec<OwnedFd>,
    /// From other records that install descriptors (`SCM_PIDFD`); the caller drops them.
    pub(crate) other: Vec<OwnedFd>,
}

/// Takes ownership of every descriptor in `control`, the buffer a successful `recvmsg`
/// has just filled (truncated or not). Records of other kinds are skipped.
///
/// `control` must have been zeroed before that `recvmsg`: the walk stops at the first
/// record whose `cmsg_len` is smaller than a header, and a zeroed tail is where the
/// kernel stopped writing. That is also why a number is never taken twice: no stale
/// record from an earlier call can be in the buffer.
pub(crate) fn take_fds(control: &[u8]) -> Received {
    let mut received = Received::default();
    let mut offset = 0;
    while let (Some(len), Some(level), Some(kind)) = (
        read_ne(control, offset).map(usize::from_ne_bytes),
        read_ne(control, offset + LEVEL_OFFSET).map(libc::c_int::from_ne_bytes),
        read_ne(control, offset + TYPE_OFFSET).map(libc::c_int::from_ne_bytes),
    ) {
        if len < HEADER_LEN {
            break;
        }
        let end = offset.saturating_add(len).min(control.len());
        let payload = control.get(offset + DATA_OFFSET..end).unwrap_or_default();
        let sink = match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => Some(&mut received.rights),
            (libc::SOL_SOCKET, SCM_PIDFD) => Some(&mut received.other),
            _ => None,
        };
        if let Some(sink) = sink {
            sink.extend(
                payload
                    .chunks_exact(size_of::<RawFd>())
                    .filter_map(|bytes| read_ne(bytes, 0).map(RawFd::from_ne_bytes))
                    .filter_map(own_received_fd),
            );
        }
        match len.checked_next_multiple_of(ALIGN).and_then(|step| offset.checked_add(step)) {
            Some(next) => offset = next,
            None => break,
        }
    }
    received
}

/// `N` bytes of `bytes` at `offset`, if they are all there.
fn read_ne<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// Wraps one descriptor number taken from an `SCM_RIGHTS` or `SCM_PIDFD` payload.
///
/// Only [`take_fds`] calls this, once per payload integer of a buffer that the kernel
/// filled during the `recvmsg` that has just returned.
#[allow(unsafe_code)]
fn own_received_fd(raw: RawFd) -> Option<OwnedFd> {
    // The kernel only writes descriptors it installed; a negative number would be a
    // corrupt record, and `from_raw_fd(-1)` is not allowed, so skip it rather than trust it.
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` comes from an SCM_RIGHTS/SCM_PIDFD record that the kernel wrote into a
    // zeroed buffer during the recvmsg that just returned. For each integer of such a record
    // the kernel installed a new descriptor in this process's table (`scm_detach_fds` /
    // `scm_pidfd_recv` write only after installing), and counted it in `cmsg_len`, which
    // the walk honours. The number is fresh: it was unused before the call, no other code
    // has seen it, and the walk visits each integer once, so this `OwnedFd` is its only
    // owner and the descriptor is open until that owner drops it.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_libc() {
        assert_eq!(DATA_OFFSET, nix::sys::socket::cmsg_space::<()>());
        assert_eq!(space(size_of::<RawFd>()), nix::sys::socket::cmsg_space::<RawFd>());
        assert_eq!(space(size_of::<[RawFd; 3]>()), nix::sys::socket::cmsg_space::<[RawFd; 3]>());
        assert_eq!(
            space(size_of::<[RawFd; MAX_FDS_PER_MESSAGE]>()),
            nix::sys::socket::cmsg_space::<[RawFd; MAX_FDS_PER_MESSAGE]>()
        );
        assert_eq!(capacity(1000), capacity(MAX_FDS_PER_MESSAGE));
        assert_eq!(capacity(MAX_FDS_PER_MESSAGE), MAX_CAPACITY);
    }

    /// One record as the kernel lays it out, padded to the alignment.
    fn record(level: libc::c_int, kind: libc::c_int, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(DATA_OFFSET + payload.len()).to_ne_bytes());
        bytes.extend_from_slice(&level.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.resize(DATA_OFFSET, 0);
        bytes.extend_from_slice(payload);
        bytes.resize(space(payload.len()), 0);
        bytes
    }

    #[test]
    fn walk_skips_foreign_records_and_stops_at_zero() {
        // Only records that carry no descriptors and bogus headers: nothing is taken, so
        // no `from_raw_fd` runs on a number this test does not own.
        let mut control = record(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[7; 12]);
        control.extend(record(libc::IPPROTO_IP, libc::SCM_RIGHTS, &5_i32.to_ne_bytes()));
        control.extend(vec![0; 64]);
        // After the zero header: would be a rights record, must never be read.
        control.extend(record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &(-1_i32).to_ne_bytes()));
        let received = take_fds(&control);
        assert!(received.rights.is_empty() && received.other.is_empty());
    }

    #[test]
    fn walk_survives_lengths_past_the_buffer() {
        for len in [HEADER_LEN - 1, usize::MAX, usize::MAX - 3, 4096] {
            let mut control = vec![0; 40];
            control[..size_of::<usize>()].copy_from_slice(&len.to_ne_bytes());
            // Level/type of a foreign record, so nothing is taken whatever is parsed.
            control[LEVEL_OFFSET..LEVEL_OFFSET + 4].copy_from_slice(&1234_i32.to_ne_bytes());
            let received = take_fds(&control);
            assert!(received.rights.is_empty());
        }
        assert!(take_fds(&[]).rights.is_empty());
        assert!(take_fds(&[0xff; 3]).rights.is_empty());
    }

    #[test]
    fn walk_takes_rights_and_pidfd_records_in_order() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let (a, b) = nix::unistd::pipe().unwrap();
        let (c, d) = nix::unistd::pipe().unwrap();
        // Give up ownership: the walk must hand each number back exactly once.
        let raw = [a.into_raw_fd(), b.into_raw_fd(), c.into_raw_fd()];
        let rights: Vec<u8> = raw[..2].iter().flat_map(|fd| fd.to_ne_bytes()).collect();
        let mut control = record(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[7; 12]);
        control.extend(record(libc::SOL_SOCKET, SCM_PIDFD, &raw[2].to_ne_bytes()));
        control.extend(record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &rights));
        control.extend(vec![0; 32]);
        let received = take_fds(&control);
        let numbers: Vec<RawFd> = received.rights.iter().map(AsRawFd::as_raw_fd).collect();
        assert_eq!(numbers, raw[..2]);
        assert_eq!(received.other.len(), 1);
        assert_eq!(received.other[0].as_raw_fd(), raw[2]);
        drop(d);
    }

    #[test]
    fn a_payload_longer_than_the_buffer_is_cut_at_its_end() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let (a, b) = nix::unistd::pipe().unwrap();
        let raw = [a.into_raw_fd(), b.into_raw_fd()];
        let rights: Vec<u8> = raw.iter().flat_map(|fd| fd.to_ne_bytes()).collect();
        let mut control = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &rights);
        // The record claims 4 KiB; the buffer ends two bytes into a third number, which
        // is not a number and must not be read as one.
        control[..size_of::<usize>()].copy_from_slice(&4096_usize.to_ne_bytes());
        control.extend_from_slice(&[0xff, 0x7f]);
        let received = take_fds(&control);
        let numbers: Vec<RawFd> = received.rights.iter().map(AsRawFd::as_raw_fd).collect();
        assert_eq!(numbers, raw);
    }

    #[test]
    fn negative_numbers_are_never_wrapped() {
        let control = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &(-1_i32).to_ne_bytes());
        assert!(take_fds(&control).rights.is_empty());
    }
}
