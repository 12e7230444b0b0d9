//! A blocking QMP client for callers without an async runtime (Ganeti-style tools).
//!
//! It is a second, synchronous driver over the same [`Session`] as the async client: the
//! protocol logic (negotiation, ids, timeouts, the capability cache, the event queue) is
//! shared, only the I/O differs. There is no background thread: the socket is read while a
//! call waits for its reply or for an event, and events read along the way are queued
//! (bounded, with a lag marker) until asked for.
//!
//! ```no_run
//! let mut qmp = qmp_client::blocking::Client::connect("/run/vm/qmp.sock")?;
//! let status = qmp.execute("query-status", ())?;
//! println!("{}", status["status"]);
//! # Ok::<(), qmp_client::Error>(())
//! ```

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use qmp_codec::{AddFdInfo, Event, FdsetInfo, Greeting, QmpCodec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::codec::Decoder;

use crate::client::ClientBuilder;
use crate::error::{DisconnectReason, Error};
use crate::events::EventFilter;
use crate::request::{self, Request};
use crate::session::{EventItem, Phase, Session, Stats};

impl ClientBuilder {
    /// Connects a [`blocking::Client`](Client) with these options.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub fn connect_blocking(self, path: impl AsRef<Path>) -> Result<Client, Error> {
        let stream = UnixStream::connect(path.as_ref()).map_err(Error::io)?;
        let started = Instant::now();
        let mut client = Client {
            session: Session::new(self.session_config().clone(), started),
            started,
            stream,
            codec: QmpCodec::with_max_frame_len(self.frame_limit()),
            incoming: BytesMut::new(),
            read_timeout: None,
            write_timeout: None,
        };
        while !matches!(client.session.phase(), Phase::Ready | Phase::Closed) {
            client.step(None);
        }
        if let Some(error) = client.session.close_error() {
            return Err(error.clone());
        }
        Ok(client)
    }
}

/// A blocking QMP client over a unix socket. One call at a time (`&mut self`).
#[derive(Debug)]
pub struct Client {
    session: Session<()>,
    stream: UnixStream,
    codec: QmpCodec,
    /// Bytes read and not yet decoded.
    incoming: BytesMut,
    /// The socket's timeouts as last set, so an unchanged one costs no system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// When the connection started: the instant given to the session for commands without
    /// a deadline, where it is not read (so the clock is not either).
    started: Instant,
}

impl Client {
    /// Connects with the default options (see [`ClientBuilder`]).
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        ClientBuilder::new().connect_blocking(path)
    }

    /// The server's greeting.
    ///
    /// # Panics
    /// Never: a client only exists once the greeting was received.
    pub fn greeting(&self) -> &Greeting {
        self.session.greeting().expect("connected clients have a greeting")
    }

    /// Whether `oob` was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.session.oob_enabled()
    }

    /// Whether the server has `command`, per the capability cache.
    pub fn supports(&self, command: &str) -> bool {
        self.session.supports(command)
    }

    /// Every command the server has, sorted.
    pub fn commands(&self) -> Vec<String> {
        self.session.commands()
    }

    /// Fetches `query-commands` again and replaces the capability cache.
    ///
    /// # Errors
    /// As [`crate::Client::refresh_commands`].
    pub fn refresh_commands(&mut self) -> Result<(), Error> {
        let id = self.session.refresh_commands((), Instant::now())?;
        self.wait_for(id).map(drop)
    }

    /// Runs `command` and returns its `return` value; see
    /// [`crate::Client::execute`].
    ///
    /// # Errors
    /// [`Error::Qmp`] when the server answers with an error; see [`Error`] for the rest.
    pub fn execute(&mut self, command: &str, arguments: impl Serialize) -> Result<Value, Error> {
        self.call(Request::new(command).arguments(arguments)?)
    }

    /// [`Client::execute`], deserialising the `return` value into `T`.
    ///
    /// # Errors
    /// As [`Client::execute`], plus [`Error::Decode`].
    pub fn execute_as<T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: impl Serialize,
    ) -> Result<T, Error> {
        let value = self.execute(command, arguments)?;
        request::decode(command, value)
    }

    /// Runs a [`Request`] (a command with its timeout, `exec-oob`, descriptors); see
    /// [`crate::Client::call`].
    ///
    /// # Errors
    /// As [`Client::execute`]; [`Error::Timeout`] or [`Error::NotSent`] when the
    /// deadline passes.
    pub fn call(&mut self, request: Request) -> Result<Value, Error> {
        let now =
            if self.session.deadline_applies(&request) { Instant::now() } else { self.started };
        let id = self.session.start_command(request, (), now)?;
        self.wait_for(id)
    }

    /// [`Client::call`], deserialising the `return` value into `T`.
    ///
    /// # Errors
    /// As [`Client::call`], plus [`Error::Decode`].
    pub fn call_as<T: DeserializeOwned>(&mut self, request: Request) -> Result<T, Error> {
        let command = request.name.clone();
        request::decode(&command, self.call(request)?)
    }

    /// Runs an HMP command line; see [`crate::Client::human_monitor_command`].
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn human_monitor_command(&mut self, command_line: &str) -> Result<String, Error> {
        request::decode(request::HMP, self.call(request::hmp(command_line))?)
    }

    /// Passes `fd` to QEMU under `name` (`getfd`), in the same `sendmsg` as the command.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn get_fd(&mut self, name: &str, fd: impl AsFd) -> Result<(), Error> {
        let fd = fd.as_fd().try_clone_to_owned().map_err(Error::io)?;
        self.call(request::getfd(name, fd)).map(drop)
    }

    /// Closes the descriptor QEMU holds under `name` (`closefd`).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn close_fd(&mut self, name: &str) -> Result<(), Error> {
        self.call(request::closefd(name)).map(drop)
    }

    /// Adds `fd` to an fdset (`add-fd`); see [`crate::Client::add_fd`].
    ///
    /// # Errors
    /// As [`Client::get_fd`].
    pub fn add_fd(
        &mut self,
        fd: impl AsFd,
        fdset_id: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<AddFdInfo, Error> {
        let fd = fd.as_fd().try_clone_to_owned().map_err(Error::io)?;
        let value = self.call(request::add_fd(fd, fdset_id, opaque))?;
        request::decode(request::ADD_FD, value)
    }

    /// Removes a descriptor, or the whole set, from an fdset (`remove-fd`).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn remove_fd(&mut self, fdset_id: u64, fd: Option<i64>) -> Result<(), Error> {
        self.call(request::remove_fd(fdset_id, fd)).map(drop)
    }

    /// The fdsets QEMU holds (`query-fdsets`).
    ///
    /// # Errors
    /// As [`Client::execute_as`].
    pub fn query_fdsets(&mut self) -> Result<Vec<FdsetInfo>, Error> {
        self.execute_as(request::QUERY_FDSETS, ())
    }

    /// The next event (or lag marker), reading the socket for up to `timeout`.
    ///
    /// # Errors
    /// [`Error::EventTimeout`], or the connection's error once it is over.
    pub fn next_event(&mut self, timeout: Duration) -> Result<EventItem, Error> {
        self.wait_event(timeout, |_| true)
    }

    /// Waits for the next event that passes `filter`; events that do not are kept for
    /// later calls. Events read while earlier calls ran are queued, so one emitted between
    /// a command and this call is not missed.
    ///
    /// # Errors
    /// [`Error::EventTimeout`], [`Error::EventsLost`] if the queue overflowed meanwhile,
    /// or the connection's error once it is over.
    pub fn wait_for_event(
        &mut self,
        filter: &EventFilter,
        timeout: Duration,
    ) -> Result<Event, Error> {
        match self.wait_event(timeout, |event| filter.matches(event))? {
            EventItem::Event(event) => Ok(event),
            EventItem::Lagged(n) => Err(Error::EventsLost(n)),
            EventItem::Gap(reason) => Err(Error::Disconnected(reason)),
        }
    }

    /// Counters of discarded replies, bad frames, withdrawn commands and events.
    pub fn stats(&self) -> Stats {
        self.session.stats()
    }

    /// Why the connection ended, once it has.
    pub fn close_error(&self) -> Option<&Error> {
        self.session.close_error()
    }

    /// Closes the connection.
    pub fn close(mut self) {
        self.session.handle_closed(DisconnectReason::Closed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Drives the connection until command `id` completes.
    fn wait_for(&mut self, id: u64) -> Result<Value, Error> {
        loop {
            while let Some(done) = self.session.poll_completion() {
                if done.id == id {
                    return done.result;
                }
            }
            if let Some(error) = self.session.close_error() {
                // Unreachable in practice (closing completes every command), but never spin.
                return Err(error.clone());
            }
            self.step(None);
        }
    }

    fn wait_event(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<EventItem, Error> {
        let deadline = crate::session::deadline_after(Instant::now(), timeout);
        loop {
            if let Some(item) = self.session.poll_event_matching(&wanted) {
                return Ok(item);
            }
            if let Some(error) = self.session.close_error() {
                return Err(error.clone());
            }
            if Instant::now() >= deadline {
                return Err(Error::EventTimeout(timeout));
            }
            self.step(Some(deadline));
        }
    }

    /// One step of the connection: write what the session has to send, else read once
    /// (until data, EOF, the session's next deadline or `limit`).
    fn step(&mut self, limit: Option<Instant>) {
        if self.session.phase() == Phase::Closed {
            return;
        }
        let deadline = match (self.session.poll_timeout(), limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The clock is read only when there is a deadline. A zero timeout would mean "block
        // forever" to the socket; expire it here instead.
        let timeout = match deadline {
            None => None,
            Some(at) => {
                let now = Instant::now();
                match at.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        self.session.handle_timeout(now);
                        return;
                    }
                }
            }
        };
        if self.session.poll_transmit().is_some() {
            self.write_once(timeout);
        } else {
            self.read_once(timeout);
        }
    }

    /// Writes the next [`Transmit`](crate::session::Transmit): the only place this client
    /// writes to its socket. Blocks for at most `timeout`.
    fn write_once(&mut self, timeout: Option<Duration>) {
        if self.write_timeout != timeout {
            if self.stream.set_write_timeout(timeout).is_err() {
                return;
            }
            self.write_timeout = timeout;
        }
        let Some(transmit) = self.session.poll_transmit() else { return };
        let sent = crate::socket::send(self.stream.as_fd(), transmit.bytes, transmit.fds);
        let had_fds = !transmit.fds.is_empty();
        match sent {
            Ok(count) => self.session.transmitted(count),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.session.handle_timeout(Instant::now());
            }
            Err(e) if had_fds && !crate::socket::breaks_connection(&e) => {
                self.session.transmit_failed(Error::FdPassing(std::sync::Arc::new(e)));
            }
            Err(e) => self.session.handle_closed(DisconnectReason::from_io(&e)),
        }
    }

    /// Reads once, for at most `timeout`, and hands what came to the session.
    fn read_once(&mut self, timeout: Option<Duration>) {
        if self.read_timeout != timeout {
            if self.stream.set_read_timeout(timeout).is_err() {
                return;
            }
            self.read_timeout = timeout;
        }
        let read = crate::socket::with_read_buffer(|scratch| {
            let read = (&self.stream).read(scratch);
            if let Ok(count) = read {
                self.incoming.extend_from_slice(&scratch[..count]);
            }
            read
        });
        match read {
            Ok(0) => self.handle_eof(),
            Ok(_) => {
                // The codec's `decode` only fails with stream errors, and it has none
                // without I/O.
                while let Ok(Some(item)) = self.codec.decode(&mut self.incoming) {
                    self.session.handle_message(item);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                self.session.handle_timeout(Instant::now());
            }
            Err(e) => self.session.handle_closed(DisconnectReason::from_io(&e)),
        }
    }

    fn handle_eof(&mut self) {
        let reason = loop {
            match self.codec.decode_eof(&mut self.incoming) {
                Ok(Some(item)) => self.session.handle_message(item),
                Ok(None) => break DisconnectReason::Eof,
                Err(error) => break DisconnectReason::from_codec(&error),
            }
        };
        self.session.handle_closed(reason);
    }
}
