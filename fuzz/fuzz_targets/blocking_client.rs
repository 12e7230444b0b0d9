//! Arbitrary server bytes fed to the blocking client (`qmp_client::blocking::Client`),
//! whose read loop runs on the caller's thread, over a real unix socket: a server thread
//! accepts, writes the input, closes its writing side and reads until the client hangs up.
//!
//! The first byte picks what the client does once connected (one command, several in a
//! row, HMP, an event wait then a command, the schema); the rest is what the "server" says.
//! Seeds start with QEMU 7.2's handshake (ids 0 and 1 answer `qmp_capabilities` and
//! `query-commands`).
//!
//! Checked: no panic; no hang: the handshake and every call return within their timeouts
//! (plus slack for a loaded machine); every call returns, and once the connection is over
//! every call that sends a command fails with an error at once, while what already arrived
//! (queued events, the cached schema) stays readable: nothing received is lost (the
//! 10-minute campaign's one "crash" was this check asking too much of an event read);
//! memory stays bounded (the frame limit, the event
//! queue: no more events come out than the server sent objects); the server thread ends.
#![no_main]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use qmp_client::blocking::Client;
use qmp_client::{EventFilter, EventItem};

/// Every timeout the client gets.
const SHORT: Duration = Duration::from_millis(50);
/// How long past its timeout a call may take on a loaded, sanitized build.
const SLACK: Duration = Duration::from_secs(5);
/// `SessionConfig`'s default event queue, plus a lag marker and a gap.
const MAX_QUEUED_EVENTS: usize = 1024 + 2;

/// The listening socket's path: one per fuzzing process.
fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("qmp-rs-fuzz-blocking-{}.sock", std::process::id()))
}

static SOCKET: LazyLock<(PathBuf, UnixListener)> = LazyLock::new(|| {
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the fuzz socket");
    // SAFETY: `remove_socket` is a plain `extern "C" fn` that neither unwinds nor calls
    // `exit`; registering it has no other precondition.
    unsafe { libc::atexit(remove_socket) };
    (path, listener)
});

/// Removes the socket file when libFuzzer exits (it ends runs with `exit`).
extern "C" fn remove_socket() {
    let _ = std::fs::remove_file(socket_path());
}

/// Writes all of `bytes` without raising SIGPIPE when the client has gone (the target
/// keeps SIGPIPE's default, so a client write that raised it would show as a crash).
fn send_all(stream: &UnixStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes; the descriptor is the
        // stream's, open for this call.
        let sent = unsafe {
            libc::send(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)
        };
        let Ok(sent) = usize::try_from(sent) else {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        };
        bytes = &bytes[sent..];
    }
}

fn serve(listener: &UnixListener, bytes: Vec<u8>) {
    let Ok((stream, _)) = listener.accept() else { return };
    send_all(&stream, &bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    while matches!((&stream).read(&mut sink), Ok(n) if n > 0) {}
}

/// Whether a call needs the server: one that sends a command fails once the connection is
/// over; one that reads what already arrived (queued events, the cached schema) may still
/// succeed then, since nothing received is lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Server,
    WhatArrived,
}

/// Runs `call`, checking it returns within `timeout` plus slack, and that once the
/// connection is over a call that needs the server is an error.
fn timed<T>(
    client: &mut Client,
    timeout: Duration,
    needs: Needs,
    call: impl FnOnce(&mut Client) -> Result<T, qmp_client::Error>,
) -> Result<T, qmp_client::Error> {
    let was_closed = client.close_error().is_some();
    let started = Instant::now();
    let result = call(client);
    let took = started.elapsed();
    assert!(took < timeout + SLACK, "a call took {took:?} (timeout {timeout:?})");
    if was_closed && needs == Needs::Server {
        assert!(result.is_err(), "a command succeeded on a closed connection");
    }
    result
}

/// Takes every queued event without reading the socket: no more than the queue holds, and
/// no more events than the server sent objects.
fn drain_events(client: &mut Client, objects_sent: usize) {
    let mut items = 0;
    let mut events = 0;
    while let Ok(item) =
        timed(client, Duration::ZERO, Needs::WhatArrived, |c| c.next_event(Duration::ZERO))
    {
        items += 1;
        events += usize::from(matches!(item, EventItem::Event(_)));
        assert!(items <= MAX_QUEUED_EVENTS, "more queued than the queue holds");
    }
    assert!(events <= objects_sent, "{events} events from {objects_sent} objects");
}

fuzz_target!(|input: &[u8]| {
    let [mode, server_bytes @ ..] = input else { return };
    let (path, listener) = &*SOCKET;
    let objects_sent = server_bytes.iter().filter(|&&b| b == b'{').count();
    std::thread::scope(|scope| {
        let server = scope.spawn(|| serve(listener, server_bytes.to_vec()));
        let started = Instant::now();
        let connected = qmp_client::Client::builder()
            .handshake_timeout(SHORT)
            .default_command_timeout(Some(SHORT))
            .max_frame_len(4096)
            .connect_blocking(path);
        let took = started.elapsed();
        assert!(took < SHORT + SLACK, "the handshake took {took:?}");
        if let Ok(mut owned) = connected {
            let client = &mut owned;
            match mode % 6 {
                0 => drop(timed(client, SHORT, Needs::Server, |c| c.execute("query-status", ()))),
                1 => {
                    for _ in 0..3 {
                        drop(timed(client, SHORT, Needs::Server, |c| {
                            c.execute("query-status", ())
                        }));
                    }
                }
                2 => drop(timed(client, SHORT, Needs::Server, |c| c.hmp("info status"))),
                3 => {
                    drop(timed(client, SHORT, Needs::WhatArrived, |c| c.next_event(SHORT)));
                    drop(timed(client, SHORT, Needs::Server, |c| c.execute("query-status", ())));
                }
                4 => {
                    let filter = EventFilter::names(["STOP"]);
                    drop(timed(client, SHORT, Needs::WhatArrived, |c| {
                        c.wait_for_event(&filter, SHORT)
                    }));
                    drop(timed(client, SHORT, Needs::Server, |c| c.query_fdsets()));
                }
                _ => drop(timed(client, SHORT, Needs::WhatArrived, |c| c.schema())),
            }
            drain_events(client, objects_sent);
            let _ = client.stats();
            owned.close();
        }
        // The client is closed (or never connected): the server thread sees the end.
        server.join().expect("the server thread");
    });
});
