//! `fdpass::tokio` over `tokio::net::UnixStream::pair()`, on a current-thread runtime so
//! "the other task has not run yet" is a fact of scheduling, not of timing.

mod common;

use std::os::fd::AsFd;

use common::{all_writers_closed, pattern, pipe, read_to_end, write_through};
use fdpass::Error;
use fdpass::tokio::{recv_with_fds, send_all_with_fds, send_with_fds};
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::UnixStream;
use tokio::task::{JoinHandle, yield_now};

/// Lets every other ready task run a few times, then says whether `task` is still pending.
/// A task that is pending here waits for I/O readiness: nothing else can wake it.
async fn still_waiting<T>(task: &JoinHandle<T>) -> bool {
    for _ in 0..16 {
        yield_now().await;
    }
    !task.is_finished()
}

#[tokio::test]
async fn round_trip_with_a_pipe() {
    let (a, b) = UnixStream::pair().unwrap();
    let (read_end, write_end) = pipe();
    send_all_with_fds(&a, b"getfd", &[write_end.as_fd()]).await.unwrap();
    drop(write_end);
    let mut buf = [0; 16];
    let (n, mut fds) = recv_with_fds(&b, &mut buf, 1).await.unwrap();
    assert_eq!(&buf[..n], b"getfd");
    write_through(fds.pop().unwrap(), b"hello");
    assert!(fds.is_empty());
    assert_eq!(read_to_end(read_end), b"hello");
}

#[tokio::test]
async fn recv_waits_for_data_sent_later() {
    let (a, b) = UnixStream::pair().unwrap();
    let receiver = tokio::spawn(async move {
        let mut buf = [0; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf, 2).await?;
        Ok::<_, Error>((buf[..n].to_vec(), fds))
    });
    assert!(still_waiting(&receiver).await, "recv returned before any data was sent");

    let (read_end, write_end) = pipe();
    let sender = tokio::spawn(async move {
        send_with_fds(&a, b"late", &[write_end.as_fd()]).await.unwrap();
    });
    sender.await.unwrap();
    let (data, fds) = receiver.await.unwrap().unwrap();
    assert_eq!(data, b"late");
    assert_eq!(fds.len(), 1);
    drop(fds);
    assert!(all_writers_closed(&read_end));
}

#[tokio::test]
async fn send_all_waits_on_a_full_buffer_and_completes() {
    const LEN: usize = 4 << 20;
    let (a, b) = UnixStream::pair().unwrap();
    let buffers =
        getsockopt(&a, sockopt::SndBuf).unwrap() + getsockopt(&b, sockopt::RcvBuf).unwrap();
    assert!(buffers < LEN, "the payload must not fit in the socket buffers ({buffers})");
    let (read_end, write_end) = pipe();

    let sender =
        tokio::spawn(
            async move { send_all_with_fds(&a, &pattern(LEN), &[write_end.as_fd()]).await },
        );
    // Nobody reads yet and the payload does not fit: the send must be waiting on EAGAIN,
    // not failing with WouldBlock and not finished.
    assert!(still_waiting(&sender).await, "send_all finished without a reader");

    // Drain slowly: small reads, yielding to the sender after each.
    let mut received = Vec::with_capacity(LEN);
    let mut fds = Vec::new();
    let mut buf = [0; 4096];
    while received.len() < LEN {
        let (n, more) = recv_with_fds(&b, &mut buf, 1).await.unwrap();
        if received.is_empty() {
            assert_eq!(more.len(), 1, "the descriptor comes with the first bytes");
        }
        received.extend_from_slice(&buf[..n]);
        fds.extend(more);
        yield_now().await;
    }
    sender.await.unwrap().unwrap();
    assert!(received == pattern(LEN), "payload corrupted");
    assert_eq!(fds.len(), 1, "the descriptor went exactly once");
    drop(fds);
    assert!(all_writers_closed(&read_end));
}

#[tokio::test]
async fn send_with_fds_waits_for_room_then_sends_the_fd() {
    let (a, b) = UnixStream::pair().unwrap();
    // Fill the socket with plain bytes until the kernel says EAGAIN (the blocking API on
    // a non-blocking socket returns WouldBlock).
    let filler = vec![7_u8; 64 * 1024];
    let mut queued = 0;
    loop {
        match fdpass::send_with_fds(&a, &filler, &[]) {
            Ok(n) => queued += n,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let (read_end, write_end) = pipe();
    let sender = tokio::spawn(async move { send_with_fds(&a, b"fd", &[write_end.as_fd()]).await });
    assert!(still_waiting(&sender).await, "send_with_fds did not wait for room");

    // Read until the descriptor comes; it must come with the first byte after the filler.
    let mut seen = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let fds = loop {
        let (n, fds) = recv_with_fds(&b, &mut buf, 1).await.unwrap();
        seen.extend_from_slice(&buf[..n]);
        if !fds.is_empty() {
            break fds;
        }
    };
    let sent = sender.await.unwrap().unwrap();
    assert!(seen.len() > queued, "the descriptor came with filler bytes only");
    while seen.len() < queued + sent {
        let (n, more) = recv_with_fds(&b, &mut buf, 1).await.unwrap();
        assert!(more.is_empty());
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen[..queued].iter().all(|&byte| byte == 7));
    assert_eq!(seen[queued..], b"fd"[..sent]);
    assert_eq!(fds.len(), 1);
    drop(fds);
    assert!(all_writers_closed(&read_end));
}

#[tokio::test]
async fn errors_match_the_blocking_api() {
    let (a, b) = UnixStream::pair().unwrap();
    let (read_end, write_end) = pipe();
    assert!(matches!(send_with_fds(&a, b"", &[write_end.as_fd()]).await, Err(Error::EmptyData)));
    let many = vec![write_end.as_fd(); 254];
    assert!(matches!(send_all_with_fds(&a, b"x", &many).await, Err(Error::TooManyFds { .. })));
    drop(many);
    assert!(matches!(recv_with_fds(&b, &mut [], 1).await, Err(Error::EmptyBuffer)));

    send_with_fds(&a, b"x", &[write_end.as_fd(), write_end.as_fd()]).await.unwrap();
    drop(write_end);
    let err = recv_with_fds(&b, &mut [0; 4], 0).await.unwrap_err();
    assert!(matches!(err, Error::ControlTruncated { bytes: 1, .. }), "{err:?}");
    assert!(all_writers_closed(&read_end));

    drop(a);
    assert!(matches!(recv_with_fds(&b, &mut [0; 4], 1).await, Err(Error::Eof)));
}
