//! The process-wide leak check. This file holds exactly one test, so no other test thread
//! opens or closes descriptors while `/proc/self/fd` is counted.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use common::{PassPidFd, pipe, send_write_ends};
use fdpass::{Error, recv_with_fds, send_with_fds};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};

const ROUNDS: usize = 5_000;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count()
}

/// Whether the kernel here sends an `SCM_PIDFD` record once `SO_PASSPIDFD` is set, checked
/// with nix directly (the pidfd this leaks is opened before anything is counted).
fn kernel_sends_pidfds() -> bool {
    let (a, b) = UnixStream::pair().unwrap();
    if setsockopt(&b, PassPidFd, &true).is_err() {
        return false;
    }
    send_with_fds(&a, b"p", &[]).unwrap();
    let mut buf = [0_u8; 4];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut control = vec![0_u8; 256];
    let message =
        recvmsg::<()>(b.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::MSG_CMSG_CLOEXEC)
            .unwrap();
    message.cmsgs().unwrap().any(|record| {
        matches!(record, ControlMessageOwned::Unknown(ref unknown)
            if unknown.cmsg_header.cmsg_type == 4 && unknown.data_bytes.len() == 4)
    })
}

#[test]
fn thousands_of_passes_leak_no_descriptor() {
    let pidfds = kernel_sends_pidfds();
    let before = open_fds();
    let mut outcomes = [0_usize; 6];

    for round in 0..ROUNDS {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0_u8; 64];
        let case = round % outcomes.len();
        match case {
            0 => {
                send_write_ends(&a, b"two", 2);
                let (n, fds) = recv_with_fds(&b, &mut buf, 2).unwrap();
                assert_eq!((n, fds.len()), (3, 2));
            }
            1 => {
                send_write_ends(&a, b"four", 4);
                let err = recv_with_fds(&b, &mut buf, 1).unwrap_err();
                assert!(matches!(err, Error::ControlTruncated { received: 4, .. }), "{err:?}");
            }
            2 => {
                // More than fit: the kernel itself truncates (MSG_CTRUNC).
                send_write_ends(&a, b"forty", 40);
                let err = recv_with_fds(&b, &mut buf, 0).unwrap_err();
                assert!(matches!(err, Error::ControlTruncated { received: 1.., .. }), "{err:?}");
            }
            3 => {
                drop(a);
                assert!(matches!(recv_with_fds(&b, &mut buf, 4), Err(Error::Eof)));
            }
            4 => {
                let (_read_end, write_end) = pipe();
                let one = [write_end.as_fd()];
                let too_many = vec![write_end.as_fd(); 254];
                assert!(matches!(send_with_fds(&a, b"", &one), Err(Error::EmptyData)));
                assert!(matches!(
                    send_with_fds(&a, b"x", &too_many),
                    Err(Error::TooManyFds { .. })
                ));
                assert!(matches!(recv_with_fds(&b, &mut [], 1), Err(Error::EmptyBuffer)));
            }
            _ => {
                // Foreign records first: credentials, and a pidfd that must be closed.
                setsockopt(&b, sockopt::PassCred, &true).unwrap();
                if pidfds {
                    setsockopt(&b, PassPidFd, &true).unwrap();
                }
                send_write_ends(&a, b"creds", 1);
                let (n, fds) = recv_with_fds(&b, &mut buf, 1).unwrap();
                assert_eq!((n, fds.len()), (5, 1));
            }
        }
        outcomes[case] += 1;
    }

    let after = open_fds();
    assert!(outcomes.iter().all(|&count| count > 0), "{outcomes:?}");
    assert_eq!(after, before, "descriptors leaked over {ROUNDS} rounds (pidfds: {pidfds})");
    if !pidfds {
        eprintln!("NOTE: this kernel sends no SCM_PIDFD (Linux < 6.5); that path went unchecked");
    }
}
