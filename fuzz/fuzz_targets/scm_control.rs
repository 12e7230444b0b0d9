//! Arbitrary ancillary (control) buffers through fdpass's control-message walk: the code
//! that takes ownership of every descriptor the kernel installed during a `recvmsg`.
//!
//! The walk adopts the descriptor numbers it reads, so the numbers it reads must be ours
//! to give. A model of the Linux `cmsghdr` walk, written here and independent of fdpass,
//! finds every payload integer the walk will adopt; each non-negative one is replaced by
//! a fresh duplicate of `/dev/null` made for it (negative ones stay: the walk must skip
//! them). A payload never overlaps a header, so the replacement does not move the walk.
//!
//! Checked: no panic; the walk takes exactly the model's descriptors, in order, each once,
//! `SCM_RIGHTS` and `SCM_PIDFD` apart; once they are dropped every one of them is closed
//! and no other descriptor is. If the walk ever returned a number it was not given, what
//! it returned is forgotten (never closed) before the panic, so none of the fuzzer's own
//! descriptors is touched.
//!
//! Input: byte 0 even, the rest is the buffer as it is; odd, the rest drives a generator
//! of records (kernel-shaped, lying lengths, foreign levels and types, odd padding).
#![no_main]

use std::fs::File;
use std::mem::size_of;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// `size_t`: the width of `cmsg_len` and the records' alignment.
const WORD: usize = size_of::<usize>();
/// `sizeof(struct cmsghdr)`: `size_t cmsg_len; int cmsg_level; int cmsg_type;`.
const HEADER: usize = WORD + 2 * size_of::<libc::c_int>();
/// `CMSG_LEN(0)`: where a payload starts.
const DATA: usize = HEADER.next_multiple_of(WORD);
/// `SCM_PIDFD` (Linux 6.5); not in the libc crate.
const SCM_PIDFD: libc::c_int = 4;
/// Larger than any control buffer fdpass asks the kernel for (about 1 KiB).
const MAX_BUFFER: usize = 4096;
/// Descriptors made for one input, at most.
const MAX_FDS: usize = 600;

/// Which list of the walk's result a descriptor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Rights,
    Pidfd,
}

fn int_at(buf: &[u8], at: usize) -> libc::c_int {
    libc::c_int::from_ne_bytes(buf[at..at + 4].try_into().expect("four bytes"))
}

/// The model: where the walk reads descriptor numbers, in walk order.
fn descriptor_positions(buf: &[u8]) -> Vec<(usize, Sink)> {
    let mut positions = Vec::new();
    let mut offset = 0_usize;
    while offset.checked_add(HEADER).is_some_and(|end| end <= buf.len()) {
        let len = usize::from_ne_bytes(buf[offset..offset + WORD].try_into().expect("a word"));
        if len < HEADER {
            break;
        }
        let sink = match (int_at(buf, offset + WORD), int_at(buf, offset + WORD + 4)) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => Some(Sink::Rights),
            (libc::SOL_SOCKET, SCM_PIDFD) => Some(Sink::Pidfd),
            _ => None,
        };
        if let Some(sink) = sink {
            let end = offset.saturating_add(len).min(buf.len());
            let mut at = offset + DATA;
            while at + 4 <= end {
                positions.push((at, sink));
                at += 4;
            }
        }
        match len.checked_next_multiple_of(WORD).and_then(|step| offset.checked_add(step)) {
            Some(next) => offset = next,
            None => break,
        }
    }
    positions
}

/// Records as the kernel writes them, and as it never would.
fn generated(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let level = match u.int_in_range(0..=4)? {
            0..=2 => libc::SOL_SOCKET,
            3 => libc::IPPROTO_IP,
            _ => u.arbitrary()?,
        };
        let kind = match u.int_in_range(0..=5)? {
            0 | 1 => libc::SCM_RIGHTS,
            2 => libc::SCM_CREDENTIALS,
            3 => SCM_PIDFD,
            _ => u.arbitrary()?,
        };
        let ints = u.int_in_range(0..=12)?;
        let odd_tail = if u.ratio(1, 8)? { u.int_in_range(1..=3)? } else { 0 };
        let payload_len = ints * 4 + odd_tail;
        let len: usize = match u.int_in_range(0..=9)? {
            0..=5 => DATA + payload_len,
            6 => u.int_in_range(0..=HEADER)?,
            7 => DATA + payload_len + u.int_in_range(1..=64)?,
            8 => u.int_in_range(DATA..=DATA + payload_len)?,
            _ => u.arbitrary()?,
        };
        let start = buf.len();
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&level.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.resize(start + DATA, 0);
        for _ in 0..ints {
            // 0 marks a place for a descriptor; the model decides which are read.
            let number: libc::c_int =
                if u.ratio(1, 8)? { u.int_in_range(i32::MIN..=-1)? } else { 0 };
            buf.extend_from_slice(&number.to_ne_bytes());
        }
        for _ in 0..odd_tail {
            buf.push(u.arbitrary()?);
        }
        let padding = if u.ratio(1, 8)? {
            u.int_in_range(0..=WORD - 1)?
        } else {
            (buf.len() - start).next_multiple_of(WORD) - (buf.len() - start)
        };
        buf.resize(buf.len() + padding, 0);
    }
    // The kernel zeroes nothing: fdpass zeroes the buffer before each call, so a zero tail
    // is the usual end; anything else tests the walk's own bounds.
    if u.ratio(1, 4)? {
        let tail_len = u.int_in_range(0..=64)?;
        for _ in 0..tail_len {
            buf.push(u.arbitrary()?);
        }
    } else {
        buf.resize(buf.len() + u.int_in_range(0..=64)?, 0);
    }
    Ok(buf)
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags of a number; any number is allowed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut buf = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match generated(&mut Unstructured::new(rest)) {
            Ok(buf) => buf,
            Err(_) => return,
        }
    };
    buf.truncate(MAX_BUFFER);
    let positions = descriptor_positions(&buf);
    if positions.len() > MAX_FDS {
        return;
    }

    let before = open_fds();
    let null = File::open("/dev/null").expect("open /dev/null");
    let mut expected: Vec<(RawFd, Sink)> = Vec::new();
    for &(at, sink) in &positions {
        if int_at(&buf, at) < 0 {
            continue;
        }
        // The number's ownership passes to the buffer, and from it to the walk.
        let fd = null.try_clone().expect("dup /dev/null").into_raw_fd();
        buf[at..at + 4].copy_from_slice(&fd.to_ne_bytes());
        expected.push((fd, sink));
    }
    drop(null);
    assert_eq!(descriptor_positions(&buf), positions, "writing numbers moved the walk");

    // SAFETY: by the model above, which follows the layout `take_fds` documents, the
    // non-negative integers the walk reads are exactly the descriptors just duplicated,
    // each a distinct open number owned by nothing else; their ownership is given up here.
    let (rights, pidfds) = unsafe { fdpass::fuzzing::take_fds(&buf) };
    let numbers = |fds: &[OwnedFd]| fds.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>();
    let expected_in =
        |sink| expected.iter().filter(|e| e.1 == sink).map(|e| e.0).collect::<Vec<_>>();
    let (got_rights, got_pidfds) = (numbers(&rights), numbers(&pidfds));
    if got_rights != expected_in(Sink::Rights) || got_pidfds != expected_in(Sink::Pidfd) {
        // Never close a number the walk should not have taken.
        std::mem::forget(rights);
        std::mem::forget(pidfds);
        panic!(
            "the walk took rights {got_rights:?} and pidfds {got_pidfds:?}, expected {expected:?}"
        );
    }
    drop(rights);
    drop(pidfds);
    for (fd, _) in &expected {
        assert!(!is_open(*fd), "descriptor {fd} was handed to the walk and is still open");
    }
    assert_eq!(open_fds(), before, "descriptors leaked or closed that were not the walk's");
});
