//! Round trip through fdpass over a socket pair, shaped by the input.
//!
//! Input: byte 0 = descriptors to send (0..=8), byte 1 = receive room `max_fds` (0..=8),
//! bytes 2-3 = receive buffer size (1..=4096), the rest = the payload. The sender is
//! non-blocking and the two sides are interleaved on one thread, so partial sends and
//! `WouldBlock` happen for large payloads without threads or timing.
//!
//! Checked: no panic; the bytes arrive intact and in order; the descriptors arrive all
//! together (when they fit in `max_fds`) or `ControlTruncated` is reported, never a subset;
//! every received descriptor is a copy of the one sent; and no descriptor is left open.
#![no_main]

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

use fdpass::{Error, recv_with_fds, send_with_fds};
use libfuzzer_sys::fuzz_target;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// What the receiving side has seen so far.
#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    reads_with_fds: usize,
    truncated: bool,
}

impl Received {
    /// One receive; call it only while sent bytes are unread, so it cannot block.
    fn step(&mut self, socket: &UnixStream, buf: &mut [u8], max_fds: usize) {
        match recv_with_fds(socket, buf, max_fds) {
            Ok((n, fds)) => {
                assert!((1..=buf.len()).contains(&n));
                assert!(fds.len() <= max_fds, "{} fds for room {max_fds}", fds.len());
                self.bytes.extend_from_slice(&buf[..n]);
                if !fds.is_empty() {
                    self.reads_with_fds += 1;
                }
                self.fds.extend(fds);
            }
            Err(Error::ControlTruncated { received, bytes }) => {
                assert!(!self.truncated, "descriptors reported twice");
                assert!(received <= fdpass::MAX_FDS_PER_MESSAGE);
                assert!((1..=buf.len()).contains(&bytes));
                self.bytes.extend_from_slice(&buf[..bytes]);
                self.truncated = true;
            }
            Err(e) => panic!("receive failed: {e:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [count, room, size_lo, size_hi, payload @ ..] = data else { return };
    let send_count = usize::from(*count % 9);
    let max_fds = usize::from(*room % 9);
    let buf_len = usize::from(u16::from_le_bytes([*size_lo, *size_hi])) % 4096 + 1;

    let before = open_fds();
    {
        let (tx, rx) = UnixStream::pair().expect("socketpair");
        tx.set_nonblocking(true).expect("non-blocking sender");
        let null = File::open("/dev/null").expect("open /dev/null");
        let null_meta = null.metadata().expect("fstat /dev/null");
        let fds: Vec<BorrowedFd<'_>> = vec![null.as_fd(); send_count];

        if payload.is_empty() {
            let sent = send_with_fds(&tx, payload, &fds);
            if send_count > 0 {
                assert!(matches!(sent, Err(Error::EmptyData)), "{sent:?}");
            } else {
                assert!(matches!(sent, Ok(0)), "{sent:?}");
            }
        } else {
            let mut buf = vec![0_u8; buf_len];
            let mut received = Received::default();
            let mut sent = 0;
            while sent < payload.len() {
                // Descriptors go with the first send that moves any byte, and only with it.
                let attach: &[BorrowedFd<'_>] = if sent == 0 { &fds } else { &[] };
                match send_with_fds(&tx, &payload[sent..], attach) {
                    Ok(n) => sent += n,
                    Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(sent > received.bytes.len(), "WouldBlock on an empty socket");
                        received.step(&rx, &mut buf, max_fds);
                    }
                    Err(e) => panic!("send failed: {e:?}"),
                }
            }
            drop(tx);
            while received.bytes.len() < payload.len() {
                received.step(&rx, &mut buf, max_fds);
            }
            assert!(received.bytes == payload, "payload corrupted");
            // Nothing more: the next read is end of stream.
            assert!(matches!(recv_with_fds(&rx, &mut buf, max_fds), Err(Error::Eof)));

            if send_count == 0 || send_count > max_fds {
                assert!(received.fds.is_empty(), "{} fds arrived", received.fds.len());
                assert_eq!(received.truncated, send_count > 0);
            } else {
                // Room was given: all of them, in one read, each a copy of /dev/null.
                assert!(!received.truncated, "{send_count} fds truncated with room {max_fds}");
                assert_eq!(received.fds.len(), send_count);
                assert_eq!(received.reads_with_fds, 1);
                for fd in received.fds {
                    let meta = File::from(fd).metadata().expect("fstat a received fd");
                    assert_eq!((meta.dev(), meta.ino()), (null_meta.dev(), null_meta.ino()));
                }
            }
        }
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
});
