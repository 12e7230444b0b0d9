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

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use qmp_codec::{Command, Event, Greeting, QmpCodec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::codec::Decoder;

use crate::client::ClientBuilder;
use crate::error::{DisconnectReason, Error};
use crate::events::EventFilter;
use qmp_codec::{AddFdInfo, FdsetInfo};

use crate::requests::{self, CallOptions};
use crate::session::{EventItem, Phase, Request, Session, Stats};

const READ_CHUNK: usize = 64 * 1024;

impl ClientBuilder {
    /// Connects a [`blocking::Client`](Client) with these options.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub fn connect_blocking(self, path: impl AsRef<Path>) -> Result<Client, Error> {
        let stream = UnixStream::connect(path.as_ref()).map_err(Error::io)?;
        let mut client = Client {
            session: Session::new(self.session_config().clone(), Instant::now()),
            stream,
            codec: QmpCodec::with_max_frame_len(self.frame_limit()),
            buf: BytesMut::new(),
            chunk: vec![0; READ_CHUNK],
            greeting: None,
        };
        while !matches!(client.session.phase(), Phase::Ready | Phase::Closed) {
            client.read_once(None);
        }
        if let Some(error) = client.session.close_error() {
            return Err(error.clone());
        }
        client.greeting = client.session.greeting().cloned();
        Ok(client)
    }
}

/// A blocking QMP client over a unix socket. One call at a time (`&mut self`).
#[derive(Debug)]
pub struct Client {
    session: Session<()>,
    stream: UnixStream,
    codec: QmpCodec,
    buf: BytesMut,
    chunk: Vec<u8>,
    greeting: Option<Greeting>,
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
        self.greeting.as_ref().expect("connected clients have a greeting")
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
    /// As [`Client::execute`].
    pub fn refresh(&mut self) -> Result<(), Error> {
        let value = self.execute("query-commands", ())?;
        self.session.update_commands(&value)
    }

    /// Runs `command` and returns its `return` value; see
    /// [`crate::Client::execute`].
    ///
    /// # Errors
    /// [`Error::Qmp`] when the server answers with an error; see [`Error`] for the rest.
    pub fn execute(&mut self, command: &str, arguments: impl Serialize) -> Result<Value, Error> {
        self.execute_with(command, arguments, CallOptions::default())
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
        requests::decode(command, value)
    }

    /// [`Client::execute`] with a per-call timeout and/or out-of-band execution.
    ///
    /// # Errors
    /// As [`Client::execute`]; [`Error::Timeout`] when the deadline passes.
    pub fn execute_with(
        &mut self,
        command: &str,
        arguments: impl Serialize,
        options: CallOptions,
    ) -> Result<Value, Error> {
        let request = requests::request(command, arguments, options)?;
        self.call(request, None)
    }

    /// Runs an HMP command line; see [`crate::Client::human_monitor_command`].
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn human_monitor_command(&mut self, command_line: &str) -> Result<String, Error> {
        let value = self.execute(requests::HMP, requests::hmp_arguments(command_line))?;
        requests::decode(requests::HMP, value)
    }

    /// Passes `fd` to QEMU under `name` (`getfd`), in the same `sendmsg` as the command.
    ///
    /// # Errors
    /// As [`Client::execute`], plus [`Error::FdPassing`].
    pub fn get_fd(&mut self, name: &str, fd: impl AsFd) -> Result<(), Error> {
        let request = requests::request(
            requests::GETFD,
            requests::fdname_arguments(name),
            CallOptions::default(),
        )?;
        self.call(request, Some(fd.as_fd())).map(drop)
    }

    /// Closes the descriptor QEMU holds under `name` (`closefd`).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn close_fd(&mut self, name: &str) -> Result<(), Error> {
        self.execute(requests::CLOSEFD, requests::fdname_arguments(name)).map(drop)
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
        let arguments = requests::add_fd_arguments(fdset_id, opaque);
        let request = requests::request(requests::ADD_FD, arguments, CallOptions::default())?;
        let value = self.call(request, Some(fd.as_fd()))?;
        requests::decode(requests::ADD_FD, value)
    }

    /// Removes a descriptor, or the whole set, from an fdset (`remove-fd`).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn remove_fd(&mut self, fdset_id: u64, fd: Option<i64>) -> Result<(), Error> {
        self.execute(requests::REMOVE_FD, requests::remove_fd_arguments(fdset_id, fd)).map(drop)
    }

    /// The fdsets QEMU holds (`query-fdsets`).
    ///
    /// # Errors
    /// As [`Client::execute_as`].
    pub fn query_fdsets(&mut self) -> Result<Vec<FdsetInfo>, Error> {
        self.execute_as(requests::QUERY_FDSETS, ())
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

    /// Counters of discarded replies, bad frames and events.
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

    fn call(
        &mut self,
        request: Request,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Value, Error> {
        let command = self.session.start_command(request, (), Instant::now())?;
        let id = command.id.as_ref().and_then(Value::as_u64);
        self.send(&command, fd);
        loop {
            while let Some(done) = self.session.poll_completion() {
                if Some(done.id) == id {
                    return done.result;
                }
            }
            if let Some(error) = self.session.close_error() {
                // Unreachable in practice (closing completes every command), but never spin.
                return Err(error.clone());
            }
            self.read_once(None);
        }
    }

    fn wait_event(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Result<EventItem, Error> {
        let deadline = Instant::now() + timeout;
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
            self.read_once(Some(deadline));
        }
    }

    /// Writes one command, with a descriptor when given; a failure closes the session,
    /// which fails the command.
    fn send(&mut self, command: &Command, fd: Option<std::os::fd::BorrowedFd<'_>>) {
        let bytes = requests::encode(command);
        let sent = match fd {
            None => self.stream.write_all(&bytes).map_err(fdpass::Error::Io),
            Some(fd) => fdpass::send_all_with_fds(&self.stream, &bytes, &[fd]),
        };
        if let Err(error) = sent {
            self.session.handle_closed(DisconnectReason::from_io(&std::io::Error::from(error)));
        }
    }

    /// Reads once (until data, EOF, the session's next deadline or `limit`) and feeds the
    /// session; then writes whatever the session wants sent.
    fn read_once(&mut self, limit: Option<Instant>) {
        if self.session.phase() == Phase::Closed {
            return;
        }
        let now = Instant::now();
        let deadline = match (self.session.poll_timeout(), limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline.is_some_and(|at| at <= now) {
            self.session.handle_timeout(now);
        } else {
            // A zero timeout would mean "block forever"; the check above rules it out.
            let timeout = deadline.map(|at| at - now);
            let _ = self.stream.set_read_timeout(timeout);
            match self.stream.read(&mut self.chunk) {
                Ok(0) => self.handle_eof(),
                Ok(n) => {
                    self.buf.extend_from_slice(&self.chunk[..n]);
                    self.decode_buffered();
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
        while let Some(command) = self.session.poll_transmit() {
            self.send(&command, None);
        }
    }

    fn decode_buffered(&mut self) {
        // The codec's `decode` only fails with stream errors, and it has none without I/O.
        while let Ok(Some(item)) = self.codec.decode(&mut self.buf) {
            self.session.handle_message(item);
        }
    }

    fn handle_eof(&mut self) {
        self.decode_buffered();
        let reason = loop {
            match self.codec.decode_eof(&mut self.buf) {
                Ok(Some(item)) => self.session.handle_message(item),
                Ok(None) => break DisconnectReason::Eof,
                Err(error) => break DisconnectReason::from_codec(&error),
            }
        };
        self.session.handle_closed(reason);
    }
}
