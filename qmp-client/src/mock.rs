//! A scriptable mock QMP server, for the faults a real QEMU cannot be made to produce, and
//! as the cheap server of benchmarks (cargo feature `mock`).
//!
//! It serves every connection the way QEMU 7.2 does: a greeting offering `oob`,
//! `qmp_capabilities` before anything else (with or without `{"enable": ["oob"]}`),
//! `query-commands` answered from its command list, `CommandNotFound` for a command not
//! in it, `exec-oob` only once `oob` is negotiated, and an error without id for input that
//! is not a command. Like QEMU it reads a JSON *stream*, so commands need no line
//! terminator (Python's `qemu.qmp` sends none). Every other command goes to your handler,
//! which answers through the [`MockConnection`] it is given: at once, later, out of order,
//! never, with garbage, with a burst of events, or by hanging up. Everything answered
//! while handling one read goes out in one write.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), qmp_client::Error> {
//! use qmp_client::mock::MockServer;
//! use serde_json::json;
//!
//! let server = MockServer::builder()
//!     .handler(|conn, request| conn.reply(&request.command, json!({"status": "running"})))
//!     .start();
//! let client = qmp_client::Client::connect(server.path()).await?;
//! let status = client.execute("query-status", ()).await?;
//! assert_eq!(status["status"], "running");
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use qmp_codec::{
    Command, ErrorClass, ErrorReply, Event, QmpError, Return, ServerCodec, ServerMessage, Timestamp,
};
use serde_json::{Value, json};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::Encoder;

/// What the handler is given: a command and the descriptors that came with it.
#[derive(Debug)]
pub struct MockRequest {
    /// The command as decoded.
    pub command: Command,
    /// Descriptors received with this command's bytes: those of every read that ended
    /// inside the command (or in the blank space after it), as QEMU takes the descriptor
    /// that came with a `getfd`.
    pub fds: Vec<OwnedFd>,
}

type Handler = Arc<dyn Fn(&MockConnection, MockRequest) + Send + Sync>;

/// The greeting a mock server sends.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MockGreeting {
    /// A QEMU 7.2.22 greeting offering `oob`.
    Qemu,
    /// These bytes, verbatim (a newline is not added).
    Raw(Bytes),
    /// Nothing: the server stays silent after accepting.
    Silent,
}

/// The commands a mock server lists in `query-commands` unless told otherwise.
pub const DEFAULT_COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-status",
    "query-version",
    "query-pci",
    "stop",
    "cont",
    "getfd",
    "closefd",
    "add-fd",
    "remove-fd",
    "query-fdsets",
    "human-monitor-command",
    "device_add",
    "device_del",
    "netdev_add",
    "netdev_del",
    "blockdev-add",
    "blockdev-del",
    "migrate-pause",
];

/// Longest unfinished command kept while waiting for the rest of it; more input is
/// answered with an error and dropped up to the next newline, as QEMU's parser does.
const MAX_COMMAND_LEN: usize = 16 * 1024 * 1024;

/// Bytes read at once, and about the most gathered before a write.
const CHUNK: usize = 64 * 1024;

/// Builds a [`MockServer`].
#[derive(Clone)]
pub struct MockServerBuilder {
    greeting: MockGreeting,
    commands: Vec<String>,
    handler: Handler,
    record: bool,
}

impl std::fmt::Debug for MockServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServerBuilder")
            .field("greeting", &self.greeting)
            .field("commands", &self.commands)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Default for MockServerBuilder {
    fn default() -> Self {
        Self {
            greeting: MockGreeting::Qemu,
            commands: DEFAULT_COMMANDS.iter().map(|&c| c.to_owned()).collect(),
            handler: Arc::new(|conn: &MockConnection, request: MockRequest| {
                conn.reply(&request.command, json!({}));
            }),
            record: true,
        }
    }
}

impl MockServerBuilder {
    /// The greeting to send on connect (default [`MockGreeting::Qemu`]).
    #[must_use]
    pub fn greeting(mut self, greeting: MockGreeting) -> Self {
        self.greeting = greeting;
        self
    }

    /// The commands `query-commands` lists and the server accepts (default
    /// [`DEFAULT_COMMANDS`]); any other is refused with `CommandNotFound`, as by QEMU.
    #[must_use]
    pub fn commands<I, S>(mut self, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.commands = commands.into_iter().map(Into::into).collect();
        self
    }

    /// What to do with each command other than `qmp_capabilities` and `query-commands`.
    /// The default answers `{"return": {}}`. It runs on the connection's task, between
    /// reading a command and reading the next.
    #[must_use]
    pub fn handler(
        mut self,
        handler: impl Fn(&MockConnection, MockRequest) + Send + Sync + 'static,
    ) -> Self {
        self.handler = Arc::new(handler);
        self
    }

    /// Whether to keep every command received for [`MockServer::received`] (default
    /// `true`); a benchmark turns it off so the list does not grow without bound.
    #[must_use]
    pub fn record_commands(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Binds a socket in a fresh temporary directory and starts serving (on the current
    /// tokio runtime).
    ///
    /// # Panics
    /// Outside a tokio runtime, or if the directory or socket cannot be created.
    pub fn start(self) -> MockServer {
        let dir =
            tempfile::Builder::new().prefix("qmp-mock.").tempdir().expect("temporary directory");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind the mock QMP socket");
        self.serve(listener, path, Some(dir))
    }

    /// Binds a socket at `path` (replacing a stale socket there, nothing else) and starts
    /// serving on the current tokio runtime; the socket stays when the server stops.
    ///
    /// # Errors
    /// When `path` holds something other than a socket, or binding fails.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start_at(self, path: impl AsRef<Path>) -> io::Result<MockServer> {
        let path = path.as_ref();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        Ok(self.serve(listener, path.to_owned(), None))
    }

    fn serve(
        self,
        listener: UnixListener,
        path: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> MockServer {
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let config = Arc::new(Config {
            greeting: self.greeting,
            commands: Mutex::new(self.commands),
            handler: self.handler,
            log: self.record.then(Mutex::default),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&config), accepted_tx));
        MockServer { path, _dir: dir, task, accepted: tokio::sync::Mutex::new(accepted_rx), config }
    }
}

/// What every connection of a server shares.
struct Config {
    greeting: MockGreeting,
    commands: Mutex<Vec<String>>,
    handler: Handler,
    /// Every command received, when recorded.
    log: Option<Mutex<Vec<Command>>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("greeting", &self.greeting).finish_non_exhaustive()
    }
}

/// A running mock QMP server; stops (and removes its temporary directory, if it made one)
/// when dropped.
#[derive(Debug)]
pub struct MockServer {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    task: JoinHandle<()>,
    accepted: tokio::sync::Mutex<mpsc::UnboundedReceiver<MockConnection>>,
    config: Arc<Config>,
}

impl MockServer {
    /// A builder with QEMU-like defaults.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder::default()
    }

    /// The socket to connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection the server accepts (waiting for it), in order.
    ///
    /// # Panics
    /// If the server's accept loop has stopped.
    pub async fn accepted(&self) -> MockConnection {
        self.accepted.lock().await.recv().await.expect("the mock server is running")
    }

    /// Every command received so far, on every connection, in order (negotiation included;
    /// empty unless [`MockServerBuilder::record_commands`]).
    pub fn received(&self) -> Vec<Command> {
        self.config.log.as_ref().map(|log| crate::lock(log).clone()).unwrap_or_default()
    }

    /// The names of the commands received so far.
    pub fn received_names(&self) -> Vec<String> {
        self.received().into_iter().map(|c| c.name).collect()
    }

    /// Replaces the commands the server has, on every connection, from the next command
    /// on: as a QEMU that gained or lost commands (a module loaded, a newer binary) would
    /// list them in its next `query-commands`.
    pub fn set_commands<I, S>(&self, commands: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        *crate::lock(&self.config.commands) = commands.into_iter().map(Into::into).collect();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection of a [`MockServer`]; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct MockConnection {
    shared: Arc<ConnectionShared>,
}

#[derive(Debug)]
struct ConnectionShared {
    outbox: Mutex<Outbox>,
    /// Wakes the connection's task for output queued from elsewhere.
    wake: Notify,
    /// The connection's task is running a handler: it writes when that returns.
    in_handler: AtomicBool,
    open: AtomicBool,
}

/// What is still to be written, in order.
#[derive(Debug, Default)]
struct Outbox {
    segments: VecDeque<Segment>,
}

#[derive(Debug)]
enum Segment {
    Bytes(BytesMut),
    Burst(Burst),
    Disconnect,
}

/// Events made a chunk at a time as the socket takes them.
#[derive(Debug)]
struct Burst {
    name: String,
    next: u64,
    end: u64,
}

impl Burst {
    /// Appends events to `out` until it holds about [`CHUNK`] bytes or the burst is over.
    fn write_into(&mut self, out: &mut BytesMut) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let (seconds, micros) = (now.as_secs(), now.subsec_micros());
        let mut writer = out.writer();
        while self.next < self.end && writer.get_ref().len() < CHUNK {
            // Writing to a BytesMut cannot fail.
            let _ = write!(
                writer,
                "{{\"event\":\"{}\",\"data\":{{\"n\":{}}},\"timestamp\":{{\"seconds\":{seconds},\"microseconds\":{micros}}}}}\r\n",
                self.name, self.next
            );
            self.next += 1;
        }
    }
}

impl MockConnection {
    fn new() -> Self {
        Self {
            shared: Arc::new(ConnectionShared {
                outbox: Mutex::default(),
                wake: Notify::new(),
                in_handler: AtomicBool::new(false),
                open: AtomicBool::new(true),
            }),
        }
    }

    /// Sends a success reply to `command`, echoing its id.
    pub fn reply(&self, command: &Command, value: Value) {
        self.send_message(&ServerMessage::Return(Return { value, id: command.id.clone() }));
    }

    /// Sends an error reply to `command`, echoing its id.
    pub fn error(&self, command: &Command, class: impl Into<ErrorClass>, desc: &str) {
        self.error_reply(command.id.clone(), class.into(), desc);
    }

    /// [`MockConnection::reply`] after `delay` (spawns a task; needs a tokio runtime).
    pub fn reply_after(&self, delay: Duration, command: &Command, value: Value) {
        let conn = self.clone();
        let command = command.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            conn.reply(&command, value);
        });
    }

    /// Sends an event with a current timestamp.
    pub fn event(&self, name: &str, data: Option<Value>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            microseconds: i64::from(now.subsec_micros()),
        };
        self.send_message(&ServerMessage::Event(Event { event: name.to_owned(), data, timestamp }));
    }

    /// Sends `count` events called `name` with data `{"n": k}` for k = 0, 1, ..., as
    /// fast as the socket takes them. They are made a chunk at a time while the socket
    /// drains, so a burst of millions costs no memory; whatever is sent after comes after
    /// the last of them.
    pub fn event_burst(&self, name: &str, count: u64) {
        self.push(Segment::Burst(Burst { name: name.to_owned(), next: 0, end: count }));
    }

    /// Sends bytes verbatim (garbage, half a message, several messages at once).
    pub fn send_raw(&self, bytes: impl Into<Bytes>) {
        let bytes: Bytes = bytes.into();
        self.append(|out| out.extend_from_slice(&bytes));
    }

    /// Closes the connection once everything sent before has been written.
    pub fn disconnect(&self) {
        self.push(Segment::Disconnect);
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Sends one message, framed by the codec as QEMU frames it.
    fn send_message(&self, message: &ServerMessage) {
        self.append(|out| {
            ServerCodec::new()
                .encode(message, out)
                .expect("a server message, JSON values with string keys, always serialises");
        });
    }

    fn error_reply(&self, id: Option<Value>, class: ErrorClass, desc: &str) {
        let error = QmpError { class, desc: desc.to_owned() };
        self.send_message(&ServerMessage::Error(ErrorReply { error, id }));
    }

    /// Adds bytes to the last segment (a new one after a burst or a disconnect).
    fn append(&self, write: impl FnOnce(&mut BytesMut)) {
        {
            let mut outbox = crate::lock(&self.shared.outbox);
            if !matches!(outbox.segments.back(), Some(Segment::Bytes(_))) {
                outbox.segments.push_back(Segment::Bytes(BytesMut::new()));
            }
            if let Some(Segment::Bytes(out)) = outbox.segments.back_mut() {
                write(out);
            }
        }
        self.wake_writer();
    }

    fn push(&self, segment: Segment) {
        crate::lock(&self.shared.outbox).segments.push_back(segment);
        self.wake_writer();
    }

    fn wake_writer(&self) {
        // A handler's output is written as soon as it returns; only output from elsewhere
        // needs to wake the connection's task.
        if !self.shared.in_handler.load(Ordering::Acquire) {
            self.shared.wake.notify_one();
        }
    }

    /// Moves what is next to write into `out` (up to about [`CHUNK`] bytes).
    fn fill(&self, out: &mut BytesMut) -> Fill {
        let mut outbox = crate::lock(&self.shared.outbox);
        while out.len() < CHUNK {
            let last = outbox.segments.len() == 1;
            if out.is_empty() && matches!(outbox.segments.front(), Some(Segment::Disconnect)) {
                return Fill::Disconnect;
            }
            match outbox.segments.front_mut() {
                // Nothing more, or a disconnect to reach once this is written.
                None | Some(Segment::Disconnect) => break,
                Some(Segment::Bytes(bytes)) => {
                    out.extend_from_slice(bytes);
                    bytes.clear();
                    if last {
                        // The last one stays, with its capacity, for the next reply.
                        break;
                    }
                    outbox.segments.pop_front();
                }
                Some(Segment::Burst(burst)) => {
                    burst.write_into(out);
                    if burst.next == burst.end {
                        outbox.segments.pop_front();
                    }
                }
            }
        }
        if out.is_empty() { Fill::Nothing } else { Fill::Bytes }
    }
}

/// What [`MockConnection::fill`] found.
enum Fill {
    Bytes,
    Nothing,
    /// Everything before the disconnect was written.
    Disconnect,
}

async fn accept_loop(
    listener: UnixListener,
    config: Arc<Config>,
    accepted: mpsc::UnboundedSender<MockConnection>,
) {
    // Owned here, so stopping the server (aborting this task) ends every connection too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let conn = MockConnection::new();
                let _ = accepted.send(conn.clone());
                connections.spawn(serve(stream, Arc::clone(&config), conn));
                while connections.try_join_next().is_some() {}
            }
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE)) => {
                tracing::warn!(error = %e, "mock QMP server out of descriptors; accepting again soon");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "mock QMP server stops accepting");
                return;
            }
        }
    }
}

const QEMU_GREETING: &str = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"qmp-rs mock\"}, \"capabilities\": [\"oob\"]}}\r\n";

/// Serves one connection: reads commands and answers them, writes what is queued.
async fn serve(stream: UnixStream, config: Arc<Config>, conn: MockConnection) {
    match &config.greeting {
        MockGreeting::Qemu => conn.send_raw(QEMU_GREETING),
        MockGreeting::Raw(bytes) => conn.send_raw(bytes.clone()),
        MockGreeting::Silent => {}
    }
    let mut peer = Peer { negotiated: false, oob: false };
    let mut input = Input::default();
    let mut chunk = vec![0; CHUNK];
    let mut out = BytesMut::new();
    'connection: loop {
        // Write what is queued, as far as the socket takes it.
        loop {
            if out.is_empty() {
                match conn.fill(&mut out) {
                    Fill::Bytes => {}
                    Fill::Nothing => break,
                    Fill::Disconnect => break 'connection,
                }
            }
            match stream.try_write(&out) {
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break 'connection,
            }
        }
        let interest = if out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        tokio::select! {
            biased;
            ready = stream.ready(interest) => {
                let Ok(ready) = ready else { break };
                if !ready.is_readable() && !ready.is_read_closed() {
                    continue;
                }
                let received = stream.try_io(Interest::READABLE, || {
                    fdpass::recv_with_fds(stream.as_fd(), &mut chunk, fdpass::MAX_FDS_PER_MESSAGE)
                        .map_err(io::Error::from)
                });
                match received {
                    Ok((n, fds)) => {
                        input.received(&chunk[..n], fds);
                        conn.shared.in_handler.store(true, Ordering::Release);
                        while let Some(item) = input.next_command() {
                            peer.answer(&conn, &config, item);
                        }
                        conn.shared.in_handler.store(false, Ordering::Release);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // End of stream (`UnexpectedEof` from fdpass) or an error.
                    Err(_) => break,
                }
            }
            () = conn.shared.wake.notified() => {}
        }
    }
    conn.shared.open.store(false, Ordering::Release);
    // Dropping the stream closes its only descriptor: the client sees the end of stream.
    drop(stream);
}

/// A connection's negotiation state.
#[derive(Debug)]
struct Peer {
    negotiated: bool,
    oob: bool,
}

impl Peer {
    /// Answers one command as QEMU would, handing the rest to the handler.
    fn answer(
        &mut self,
        conn: &MockConnection,
        config: &Config,
        item: Result<(Command, Vec<OwnedFd>), Unreadable>,
    ) {
        let (command, fds) = match item {
            Ok(command) => command,
            // QEMU answers input it cannot take with an error (with the id, if it saw one).
            Err(Unreadable { id, desc }) => {
                return conn.error_reply(id, ErrorClass::GenericError, &desc);
            }
        };
        if let Some(log) = &config.log {
            crate::lock(log).push(command.clone());
        }
        let id = command.id.clone();
        if !self.negotiated {
            if command.name != "qmp_capabilities" {
                return conn.error_reply(
                    id,
                    ErrorClass::CommandNotFound,
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                );
            }
            let enable = command.arguments.as_ref().and_then(|a| a.get("enable"));
            for capability in enable.and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
                if capability.as_str() != Some("oob") {
                    return conn.error_reply(
                        id,
                        ErrorClass::GenericError,
                        &format!("Capability {capability} not available"),
                    );
                }
                self.oob = true;
            }
            self.negotiated = true;
            return conn.reply(&command, json!({}));
        }
        if command.oob && !self.oob {
            return conn.error_reply(
                id,
                ErrorClass::GenericError,
                "Please enable out-of-band first for the session during capabilities negotiation",
            );
        }
        match command.name.as_str() {
            "qmp_capabilities" => conn.error_reply(
                id,
                ErrorClass::CommandNotFound,
                "Capabilities negotiation is already complete, command ignored",
            ),
            "query-commands" => {
                let commands = crate::lock(&config.commands);
                let list = commands.iter().map(|name| json!({ "name": name })).collect();
                drop(commands);
                conn.reply(&command, Value::Array(list));
            }
            name if !crate::lock(&config.commands).iter().any(|known| known == name) => conn
                .error_reply(
                    id,
                    ErrorClass::CommandNotFound,
                    &format!("The command {name} has not been found"),
                ),
            _ => (config.handler)(conn, MockRequest { command, fds }),
        }
    }
}

/// Input that is not a command, as QEMU reports it.
#[derive(Debug)]
struct Unreadable {
    id: Option<Value>,
    desc: String,
}

/// The bytes received and not yet parsed, and the descriptors that came with them.
#[derive(Debug, Default)]
struct Input {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// Descriptors of each read with descriptors: the stream offset of its last byte.
    fds: VecDeque<(u64, Vec<OwnedFd>)>,
    /// The first value was incomplete when `buf` was this long (0: not known so).
    incomplete_at: usize,
}

impl Input {
    fn received(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) {
        self.buf.extend_from_slice(bytes);
        if !fds.is_empty() {
            let last = self.offset + self.buf.len() as u64 - 1;
            self.fds.push_back((last, fds));
        }
    }

    /// Takes the next complete JSON value off the front of the input, as a command with
    /// its descriptors; `None` until one is complete.
    fn next_command(&mut self) -> Option<Result<(Command, Vec<OwnedFd>), Unreadable>> {
        let start = self.buf.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            self.advance(self.buf.len());
            return None;
        };
        // A command is an object, so it can only be complete at a `}`: one arriving in
        // pieces is not parsed again until a piece brings one.
        if self.incomplete_at > 0
            && self.buf.len() <= MAX_COMMAND_LEN
            && memchr::memchr(b'}', &self.buf[self.incomplete_at..]).is_none()
        {
            return None;
        }
        self.incomplete_at = 0;
        let mut values = serde_json::Deserializer::from_slice(&self.buf[start..])
            .into_iter::<serde::de::IgnoredAny>();
        let end = match values.next() {
            None => return None,
            Some(Ok(_)) => start + values.byte_offset(),
            Some(Err(e)) if e.is_eof() && self.buf.len() <= MAX_COMMAND_LEN => {
                self.incomplete_at = self.buf.len();
                return None;
            }
            Some(Err(e)) => {
                // Resynchronise at the next newline, as QEMU's parser does.
                let skip =
                    self.buf.iter().position(|&b| b == b'\n').map_or(self.buf.len(), |i| i + 1);
                self.advance(skip);
                return Some(Err(Unreadable { id: None, desc: format!("JSON parse error, {e}") }));
            }
        };
        // Descriptors belong to the command a read ended in, or in the blank after it.
        let next = self.buf[end..].iter().position(|b| !b.is_ascii_whitespace());
        let owned_up_to = self.offset + (end + next.unwrap_or(self.buf.len() - end)) as u64;
        let mut fds = Vec::new();
        while self.fds.front().is_some_and(|(last, _)| *last < owned_up_to) {
            fds.extend(self.fds.pop_front().map(|(_, fds)| fds).unwrap_or_default());
        }
        let parsed = Command::from_slice(&self.buf[start..end]);
        self.advance(end);
        Some(match parsed {
            Ok(command) => Ok((command, fds)),
            Err(qmp_codec::Error::UnknownShape { object, .. }) => Err(Unreadable {
                id: object.get("id").cloned(),
                desc: "QMP input lacks member 'execute'".to_owned(),
            }),
            Err(other) => Err(Unreadable { id: None, desc: other.to_string() }),
        })
    }

    fn advance(&mut self, count: usize) {
        self.incomplete_at = 0;
        self.buf.advance(count);
        self.offset += count as u64;
    }
}
