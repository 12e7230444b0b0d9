//! Blocking round trips over real `UnixStream::pair()`s.

mod common;

use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use common::{all_writers_closed, pattern, pipe, read_to_end, send_write_ends, write_through};
use fdpass::{Error, MAX_FDS_PER_MESSAGE, recv_with_fds, send_all_with_fds, send_with_fds};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use proptest::prelude::*;

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

fn is_cloexec(fd: impl AsFd) -> bool {
    FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap()).contains(FdFlag::FD_CLOEXEC)
}

#[test]
fn bytes_without_fds() {
    let (a, b) = pair();
    assert_eq!(send_with_fds(&a, b"just bytes", &[]).unwrap(), 10);
    let mut buf = [0; 64];
    let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
    assert_eq!(&buf[..n], b"just bytes");
    assert!(fds.is_empty());
    // Nothing to send and no descriptors: a no-op, not an error.
    assert_eq!(send_with_fds(&a, b"", &[]).unwrap(), 0);
}

#[test]
fn one_pipe_write_end_works_on_the_other_side() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    send_all_with_fds(&a, b"getfd", &[write_end.as_fd()]).unwrap();
    drop(write_end);

    let mut buf = [0; 16];
    let (n, mut fds) = recv_with_fds(&b, &mut buf, 1).unwrap();
    assert_eq!(&buf[..n], b"getfd");
    assert_eq!(fds.len(), 1);
    write_through(fds.pop().unwrap(), b"hello");
    assert_eq!(read_to_end(read_end), b"hello");
}

#[test]
fn several_fds_in_one_message_keep_their_order() {
    let (a, b) = pair();
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..3).map(|_| pipe()).collect();
    let write_ends: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
    assert_eq!(send_with_fds(&a, b"three", &write_ends).unwrap(), 5);
    drop(write_ends);

    let mut buf = [0; 16];
    let (n, fds) = recv_with_fds(&b, &mut buf, 8).unwrap();
    assert_eq!(&buf[..n], b"three");
    assert_eq!(fds.len(), 3);
    for (i, (fd, (read_end, write_end))) in fds.into_iter().zip(pipes).enumerate() {
        drop(write_end);
        write_through(fd, format!("pipe {i}").as_bytes());
        assert_eq!(read_to_end(read_end), format!("pipe {i}").as_bytes());
    }
}

#[test]
fn received_fds_are_close_on_exec() {
    let (a, b) = pair();
    let (_read_end, write_end) = pipe();
    // The sender's copy has no FD_CLOEXEC, so the flag below comes from the receive.
    assert!(!is_cloexec(&write_end));
    send_with_fds(&a, b"x", &[write_end.as_fd(), write_end.as_fd()]).unwrap();
    let (_, fds) = recv_with_fds(&b, &mut [0; 4], 2).unwrap();
    assert_eq!(fds.len(), 2);
    assert!(fds.iter().all(is_cloexec));
}

#[test]
fn fds_need_at_least_one_byte() {
    let (a, b) = pair();
    let (_read_end, write_end) = pipe();
    assert!(matches!(send_with_fds(&a, b"", &[write_end.as_fd()]), Err(Error::EmptyData)));
    assert!(matches!(send_all_with_fds(&a, b"", &[write_end.as_fd()]), Err(Error::EmptyData)));
    assert!(matches!(recv_with_fds(&b, &mut [], 1), Err(Error::EmptyBuffer)));
    // Nothing went out: the peer has no data.
    b.set_nonblocking(true).unwrap();
    let err = recv_with_fds(&b, &mut [0; 4], 1).unwrap_err();
    assert!(matches!(&err, Error::Io(e) if e.kind() == ErrorKind::WouldBlock), "{err:?}");
    assert_eq!(std::io::Error::from(Error::EmptyData).kind(), ErrorKind::InvalidInput);
}

#[test]
fn at_most_253_fds_per_message() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    let too_many = vec![write_end.as_fd(); MAX_FDS_PER_MESSAGE + 1];
    let err = send_with_fds(&a, b"x", &too_many).unwrap_err();
    assert!(matches!(err, Error::TooManyFds { count: 254, max: 253 }), "{err:?}");
    assert!(matches!(send_all_with_fds(&a, b"x", &too_many), Err(Error::TooManyFds { .. })));

    let most = vec![write_end.as_fd(); MAX_FDS_PER_MESSAGE];
    send_with_fds(&a, b"y", &most).unwrap();
    drop(too_many);
    drop(most);
    drop(write_end);
    let mut buf = [0; 4];
    let (n, fds) = recv_with_fds(&b, &mut buf, MAX_FDS_PER_MESSAGE).unwrap();
    assert_eq!(&buf[..n], b"y", "the rejected send must not have sent anything");
    assert_eq!(fds.len(), MAX_FDS_PER_MESSAGE);
    let mut numbers: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), MAX_FDS_PER_MESSAGE, "every received descriptor is distinct");
    assert!(!all_writers_closed(&read_end));
    drop(fds);
    assert!(all_writers_closed(&read_end));
}

#[test]
fn more_fds_than_room_are_all_closed() {
    let (a, b) = pair();
    let read_ends = send_write_ends(&a, b"four", 4);
    let mut buf = [0; 16];
    let err = recv_with_fds(&b, &mut buf, 1).unwrap_err();
    // Alignment gives room for more than one: all four reached this process, all closed.
    assert!(matches!(err, Error::ControlTruncated { received: 4, bytes: 4 }), "{err:?}");
    assert_eq!(&buf[..4], b"four", "the data bytes are still delivered");
    assert!(read_ends.iter().all(all_writers_closed), "a received write end leaked");
    assert_eq!(std::io::Error::from(err).kind(), ErrorKind::InvalidData);
}

#[test]
fn kernel_truncation_closes_what_fit() {
    // Far more than the control buffer holds: the kernel installs what fits, sets
    // MSG_CTRUNC and drops the rest; nix's `cmsgs()` would refuse to show the installed ones.
    let (a, b) = pair();
    let read_ends = send_write_ends(&a, b"forty", 40);
    let err = recv_with_fds(&b, &mut [0; 16], 1).unwrap_err();
    let Error::ControlTruncated { received, bytes: 5 } = err else { panic!("{err:?}") };
    assert!((1..40).contains(&received), "received {received}");
    assert!(read_ends.iter().all(all_writers_closed), "a received write end leaked");
}

#[test]
fn zero_room_truncates_and_closes() {
    let (a, b) = pair();
    let read_ends = send_write_ends(&a, b"z", 2);
    let err = recv_with_fds(&b, &mut [0; 4], 0).unwrap_err();
    assert!(matches!(err, Error::ControlTruncated { bytes: 1, .. }), "{err:?}");
    assert!(read_ends.iter().all(all_writers_closed));
    // The stream goes on after the truncation.
    send_with_fds(&a, b"next", &[]).unwrap();
    let mut buf = [0; 8];
    assert_eq!(recv_with_fds(&b, &mut buf, 0).unwrap().0, 4);
}

#[test]
fn eof_after_the_peer_is_dropped() {
    let (a, b) = pair();
    send_with_fds(&a, b"last", &[]).unwrap();
    drop(a);
    let mut buf = [0; 16];
    assert_eq!(recv_with_fds(&b, &mut buf, 1).unwrap().0, 4);
    assert!(matches!(recv_with_fds(&b, &mut buf, 1), Err(Error::Eof)));
    assert!(matches!(recv_with_fds(&b, &mut buf, 1), Err(Error::Eof)));
    assert_eq!(std::io::Error::from(Error::Eof).kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn send_to_a_closed_peer_is_an_error_not_a_signal() {
    let (a, b) = pair();
    drop(b);
    let err = send_with_fds(&a, b"x", &[]).unwrap_err();
    assert!(matches!(&err, Error::Io(e) if e.kind() == ErrorKind::BrokenPipe), "{err:?}");
}

#[test]
fn other_control_records_are_skipped_and_do_not_crowd_out_fds() {
    let (a, b) = pair();
    // The kernel now puts an SCM_CREDENTIALS record before the descriptors.
    setsockopt(&b, sockopt::PassCred, &true).unwrap();
    let read_ends = send_write_ends(&a, b"creds", 3);
    let (n, fds) = recv_with_fds(&b, &mut [0; 8], 3).unwrap();
    assert_eq!((n, fds.len()), (5, 3));
    drop(fds);
    assert!(read_ends.iter().all(all_writers_closed));

    // A pidfd record too (Linux 6.5+); where the option exists its pidfd is not returned.
    if setsockopt(&b, common::PassPidFd, &true).is_ok() {
        let read_ends = send_write_ends(&a, b"pidfd", 1);
        let (n, fds) = recv_with_fds(&b, &mut [0; 8], 1).unwrap();
        assert_eq!((n, fds.len()), (5, 1));
        drop(fds);
        assert!(all_writers_closed(&read_ends[0]));
    }
}

#[test]
fn non_blocking_full_buffer_is_would_block_and_sends_nothing() {
    let (a, b) = pair();
    a.set_nonblocking(true).unwrap();
    let filler = vec![0_u8; 64 * 1024];
    let mut queued = 0;
    loop {
        match (&a).write(&filler) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let (read_end, write_end) = pipe();
    let err = send_with_fds(&a, b"late", &[write_end.as_fd()]).unwrap_err();
    assert!(matches!(&err, Error::Io(e) if e.kind() == ErrorKind::WouldBlock), "{err:?}");
    drop(write_end);

    // Drain the filler: no descriptor may have slipped in with it.
    let mut buf = vec![0; 64 * 1024];
    let mut drained = 0;
    while drained < queued {
        let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
        assert!(fds.is_empty());
        drained += n;
    }
    assert_eq!(drained, queued);
    assert!(all_writers_closed(&read_end));
}

#[test]
fn send_all_larger_than_the_socket_buffer_arrives_whole_with_one_fd() {
    const LEN: usize = 1 << 20;
    let (a, b) = pair();
    let send_buffer = getsockopt(&a, sockopt::SndBuf).unwrap();
    assert!(send_buffer < LEN, "the payload must not fit at once ({send_buffer})");
    let payload = pattern(LEN);
    let (read_end, write_end) = pipe();

    let reader = std::thread::spawn(move || {
        let mut received = Vec::with_capacity(LEN);
        let mut fds_by_read = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        while received.len() < LEN {
            let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
            received.extend_from_slice(&buf[..n]);
            fds_by_read.push(fds);
        }
        (received, fds_by_read)
    });
    send_all_with_fds(&a, &payload, &[write_end.as_fd()]).unwrap();
    drop(write_end);
    let (received, mut fds_by_read) = reader.join().unwrap();

    assert!(received == payload, "payload corrupted");
    assert!(fds_by_read.len() > 1, "the payload came in one read; the test proves nothing");
    assert_eq!(fds_by_read[0].len(), 1, "the descriptor comes with the first bytes");
    assert!(fds_by_read[1..].iter().all(Vec::is_empty), "the descriptor was sent twice");
    write_through(fds_by_read[0].pop().unwrap(), b"ok");
    assert_eq!(read_to_end(read_end), b"ok");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_size_and_fd_count_arrives(len in 1_usize..=64 * 1024, count in 0_usize..=16) {
        let (a, b) = pair();
        let payload = pattern(len);
        let (read_end, write_end) = pipe();
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut fds = Vec::new();
            let mut buf = vec![0; 4096];
            while received.len() < len {
                let (n, more) = recv_with_fds(&b, &mut buf, 16).unwrap();
                received.extend_from_slice(&buf[..n]);
                fds.extend(more);
            }
            (received, fds)
        });
        send_all_with_fds(&a, &payload, &vec![write_end.as_fd(); count]).unwrap();
        drop(write_end);
        let (received, fds) = reader.join().unwrap();
        prop_assert!(received == payload);
        prop_assert_eq!(fds.len(), count);
        prop_assert_eq!(all_writers_closed(&read_end), count == 0);
        drop(fds);
        prop_assert!(all_writers_closed(&read_end));
    }
}
