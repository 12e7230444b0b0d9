//! The sans-IO session driven by arbitrary operations: server bytes (through the codec),
//! commands started, cancelled, clock jumps, and the end of the connection.
//!
//! Invariants: no panic, and every command started is accounted for exactly once, either
//! by its completion or by a cancel that handed its waiter back, once the session closes.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qmp_client::DisconnectReason;
use qmp_client::qmp_codec::QmpCodec;
use qmp_client::session::{Request, Session, SessionConfig};
use tokio_util::codec::Decoder;

const HANDSHAKE: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 0}\r\n{\"return\": [{\"name\": \"a\"}, {\"name\": \"b\"}], \"id\": 1}\r\n";

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let config = SessionConfig { event_queue_capacity: 4, ..SessionConfig::default() };
    let mut session: Session<u64> = Session::new(config, now);
    let mut codec = QmpCodec::with_max_frame_len(256);
    let mut buf = BytesMut::new();
    let mut started: HashSet<u64> = HashSet::new();
    let mut finished: HashSet<u64> = HashSet::new();
    let mut next_waiter = 0_u64;

    // The first byte decides whether the handshake is given for free.
    let (free_handshake, mut ops) = match data.split_first() {
        Some((first, rest)) => (first & 1 == 1, rest),
        None => return,
    };
    let mut feed = |session: &mut Session<u64>, bytes: &[u8]| {
        buf.extend_from_slice(bytes);
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            session.handle_message(item);
        }
        while session.poll_transmit().is_some() {}
    };
    if free_handshake {
        feed(&mut session, HANDSHAKE);
    }
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 6 {
            // Server bytes: the next `len` bytes of input.
            0 | 1 => {
                let len = usize::from(op / 6).min(ops.len());
                let (bytes, rest) = ops.split_at(len);
                ops = rest;
                feed(&mut session, bytes);
            }
            2 => {
                let name = if op & 8 == 0 { "a" } else { "b" };
                let timeout = (op & 16 != 0).then(|| Duration::from_millis(u64::from(op)));
                let request = Request::new(name).timeout(timeout).oob(op & 32 != 0);
                if session.start_command(request, next_waiter, now).is_ok() {
                    started.insert(next_waiter);
                }
                next_waiter += 1;
            }
            3 => {
                // Cancel one of the recent ids (ids and waiters both count from 0 here,
                // offset by the two handshake commands).
                let id = u64::from(op / 6) + 2;
                if let Some(waiter) = session.cancel(id) {
                    assert!(finished.insert(waiter), "waiter {waiter} came back twice");
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(op) * 10);
                session.handle_timeout(now);
            }
            _ => session.handle_closed(DisconnectReason::Eof),
        }
        while let Some(done) = session.poll_completion() {
            assert!(started.contains(&done.waiter), "completion for a waiter never started");
            assert!(finished.insert(done.waiter), "waiter {} completed twice", done.waiter);
        }
        while session.poll_event().is_some() {}
        if let Some(at) = session.poll_timeout() {
            assert!(at >= start, "a deadline before the session began");
        }
    }
    session.handle_closed(DisconnectReason::Closed);
    while let Some(done) = session.poll_completion() {
        assert!(finished.insert(done.waiter), "waiter {} completed twice", done.waiter);
    }
    assert_eq!(started, finished, "every started command ends exactly once");
    assert_eq!(session.in_flight(), 0);
});
