//! The sans-IO session driven by arbitrary operations: server bytes (through the codec),
//! commands started (some with a descriptor), cancelled, refreshed, written in arbitrary
//! pieces or refused, clock jumps, and the end of the connection.
//!
//! Invariants: no panic; every command started is accounted for exactly once, either by
//! its completion or by a cancel that handed its waiter back, once the session closes; the
//! bytes written are whole commands, in order, and a command withdrawn (or refused) before
//! any of its bytes went never appears in them; a descriptor goes with the first byte of
//! its own command, alone.
#![no_main]

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qmp_client::qmp_codec::{QmpCodec, ServerCodec};
use qmp_client::session::{Session, SessionConfig};
use qmp_client::{DisconnectReason, Error, Request};
use tokio_util::codec::Decoder;

const HANDSHAKE: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 0}\r\n{\"return\": [{\"name\": \"a\"}, {\"name\": \"b\"}, {\"name\": \"query-commands\"}], \"id\": 1}\r\n";

fn descriptor() -> OwnedFd {
    std::fs::File::open("/dev/null").expect("/dev/null").into()
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let config = SessionConfig {
        event_queue_capacity: 4,
        max_queued_commands: 6,
        ..SessionConfig::default()
    };
    let mut session: Session<u64> = Session::new(config, now);
    let mut codec = QmpCodec::with_max_frame_len(256);
    let mut buf = BytesMut::new();
    let mut started: HashSet<u64> = HashSet::new();
    let mut finished: HashSet<u64> = HashSet::new();
    // The ids that must never reach the wire.
    let mut never_sent: HashSet<u64> = HashSet::new();
    let mut wire = BytesMut::new();
    let mut with_fd: HashSet<u64> = HashSet::new();
    let mut fd_writes: Vec<usize> = Vec::new();
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
    };
    if free_handshake {
        feed(&mut session, HANDSHAKE);
        while let Some(transmit) = session.poll_transmit() {
            let count = transmit.bytes.len();
            wire.extend_from_slice(transmit.bytes);
            session.transmitted(count);
        }
    }
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 9 {
            // Server bytes: the next `len` bytes of input.
            0 | 1 => {
                let len = usize::from(op / 9).min(ops.len());
                let (bytes, rest) = ops.split_at(len);
                ops = rest;
                feed(&mut session, bytes);
            }
            2 => {
                let name = if op & 8 == 0 { "a" } else { "b" };
                let mut request = Request::new(name).oob(op & 32 != 0);
                if op & 16 != 0 {
                    request = request.timeout(Duration::from_millis(u64::from(op)));
                }
                let fd = op & 64 != 0;
                if fd {
                    request = request.fd(descriptor());
                }
                if let Ok(id) = session.start_command(request, next_waiter, now) {
                    started.insert(next_waiter);
                    if fd {
                        with_fd.insert(id);
                    }
                }
                next_waiter += 1;
            }
            3 => {
                // Cancel one of the recent ids (offset by the two handshake commands).
                let id = u64::from(op / 9) + 2;
                let unsent_before = session.stats().withdrawn;
                if let Some(waiter) = session.cancel(id) {
                    assert!(finished.insert(waiter), "waiter {waiter} came back twice");
                    if session.stats().withdrawn > unsent_before {
                        never_sent.insert(id);
                    }
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(op) * 10);
                session.handle_timeout(now);
            }
            5 | 6 => {
                // Write part of what the session offers.
                if let Some(transmit) = session.poll_transmit() {
                    let count = (usize::from(op / 9) + 1).min(transmit.bytes.len());
                    if !transmit.fds.is_empty() {
                        fd_writes.push(wire.len());
                        assert_eq!(transmit.fds.len(), 1, "one command's descriptors only");
                    }
                    wire.extend_from_slice(&transmit.bytes[..count]);
                    session.transmitted(count);
                }
            }
            7 => {
                // The system refuses the descriptors of the command offered, if it has any.
                if session.poll_transmit().is_some_and(|t| !t.fds.is_empty()) {
                    let refused = std::io::Error::other("refused");
                    session.transmit_failed(Error::FdPassing(std::sync::Arc::new(refused)));
                }
            }
            _ => session.handle_closed(DisconnectReason::Eof),
        }
        while let Some(done) = session.poll_completion() {
            assert!(started.contains(&done.waiter), "completion for a waiter never started");
            assert!(finished.insert(done.waiter), "waiter {} completed twice", done.waiter);
            if matches!(done.result, Err(Error::NotSent { .. } | Error::FdPassing(_))) {
                never_sent.insert(done.id);
            }
        }
        while session.poll_event().is_some() {}
        if let Some(at) = session.poll_timeout() {
            assert!(at >= start, "a deadline before the session began");
        }
        assert!(session.queued() <= 6 + 2, "the queue is bounded");
    }
    session.handle_closed(DisconnectReason::Closed);
    while let Some(done) = session.poll_completion() {
        assert!(finished.insert(done.waiter), "waiter {} completed twice", done.waiter);
    }
    assert_eq!(started, finished, "every started command ends exactly once");
    assert_eq!(session.in_flight(), 0);

    // What went out is whole commands (the last maybe cut off by the close), in id order,
    // none of them withdrawn, and descriptors only ever at the start of their own command.
    let mut server = ServerCodec::new();
    let mut offset = 0;
    let mut last_id = None;
    let mut fd_command_starts = HashSet::new();
    loop {
        let before = wire.len();
        let Ok(Some(item)) = server.decode(&mut wire) else { break };
        let command = item.expect("the session writes well-formed commands");
        let id = command.id.as_ref().and_then(serde_json::Value::as_u64).expect("an id");
        assert!(!never_sent.contains(&id), "withdrawn command {id} reached the wire");
        assert!(last_id.is_none_or(|last| id > last), "commands out of order");
        last_id = Some(id);
        if with_fd.contains(&id) {
            assert!(fd_writes.contains(&offset), "command {id}'s descriptor not at its start");
            fd_command_starts.insert(offset);
        }
        offset += before - wire.len();
    }
    for at in fd_writes {
        assert!(
            at >= offset || fd_command_starts.contains(&at),
            "a descriptor went with bytes of a command that has none"
        );
    }
});
