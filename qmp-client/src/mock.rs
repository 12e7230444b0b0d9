//! A scriptable mock QMP server, for the faults a real QEMU cannot be made to produce
//! (cargo feature `mock`).
//!
//! The server listens on a unix socket in its own temporary directory and serves every
//! connection like QEMU does: a greeting, then `qmp_capabilities` and `query-commands`
//! answered on its own. Every other command goes to your handler, which answers through
//! the [`MockConnection`] it is given: at once, later, out of order, never, with garbage,
//! or by hanging up. Tests can also push events and raw bytes at any time.
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

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use qmp_codec::{
    Command, ErrorClass, ErrorReply, Event, QmpError, Return, ServerCodec, ServerMessage, Timestamp,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

/// What the handler is given: a command and the descriptors that came with it.
#[derive(Debug)]
pub struct MockRequest {
    /// The command as decoded.
    pub command: Command,
    /// Descriptors received with (or before) this command's bytes, like QEMU's `getfd`.
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

/// Builds a [`MockServer`].
#[derive(Clone)]
pub struct MockServerBuilder {
    greeting: MockGreeting,
    commands: Vec<String>,
    handler: Handler,
}

impl std::fmt::Debug for MockServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServerBuilder")
            .field("greeting", &self.greeting)
            .field("commands", &self.commands)
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

    /// The commands `query-commands` lists (default [`DEFAULT_COMMANDS`]).
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
    /// The default answers `{"return": {}}`.
    #[must_use]
    pub fn handler(
        mut self,
        handler: impl Fn(&MockConnection, MockRequest) + Send + Sync + 'static,
    ) -> Self {
        self.handler = Arc::new(handler);
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
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let task =
            tokio::spawn(accept_loop(listener, Arc::new(self), accepted_tx, Arc::clone(&log)));
        MockServer { path, _dir: dir, task, accepted: tokio::sync::Mutex::new(accepted_rx), log }
    }
}

/// A running mock QMP server; stops (and removes its socket) when dropped.
#[derive(Debug)]
pub struct MockServer {
    path: PathBuf,
    _dir: tempfile::TempDir,
    task: JoinHandle<()>,
    accepted: tokio::sync::Mutex<mpsc::UnboundedReceiver<MockConnection>>,
    log: Arc<Mutex<Vec<Command>>>,
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

    /// Every command received so far, on every connection, in order (negotiation included).
    pub fn received(&self) -> Vec<Command> {
        crate::lock(&self.log).clone()
    }

    /// The names of the commands received so far.
    pub fn received_names(&self) -> Vec<String> {
        self.received().into_iter().map(|c| c.name).collect()
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
    out: mpsc::UnboundedSender<Output>,
}

#[derive(Debug)]
enum Output {
    Bytes(Bytes),
    Disconnect,
}

impl MockConnection {
    /// Sends a success reply to `command`, echoing its id.
    pub fn reply(&self, command: &Command, value: Value) {
        self.send_message(&ServerMessage::Return(Return { value, id: command.id.clone() }));
    }

    /// Sends an error reply to `command`, echoing its id.
    pub fn error(&self, command: &Command, class: &str, desc: &str) {
        let error = QmpError { class: ErrorClass::from(class), desc: desc.to_owned() };
        self.send_message(&ServerMessage::Error(ErrorReply { error, id: command.id.clone() }));
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
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let timestamp = Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            microseconds: i64::from(now.subsec_micros()),
        };
        self.send_message(&ServerMessage::Event(Event { event: name.to_owned(), data, timestamp }));
    }

    /// Sends bytes verbatim (garbage, half a message, several messages at once).
    pub fn send_raw(&self, bytes: impl Into<Bytes>) {
        let _ = self.out.send(Output::Bytes(bytes.into()));
    }

    /// Closes the connection once everything sent before has been written.
    pub fn disconnect(&self) {
        let _ = self.out.send(Output::Disconnect);
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        !self.out.is_closed()
    }

    /// Sends one message, framed by the codec as QEMU frames it.
    fn send_message(&self, message: &ServerMessage) {
        let mut bytes = BytesMut::new();
        ServerCodec::new()
            .encode(message, &mut bytes)
            .expect("a server message, JSON values with string keys, always serialises");
        self.send_raw(bytes.freeze());
    }
}

async fn accept_loop(
    listener: UnixListener,
    config: Arc<MockServerBuilder>,
    accepted: mpsc::UnboundedSender<MockConnection>,
    log: Arc<Mutex<Vec<Command>>>,
) {
    // Owned here, so stopping the server (aborting this task) ends every connection too.
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let conn = MockConnection { out: out_tx };
        let _ = accepted.send(conn.clone());
        connections.spawn(serve(stream, Arc::clone(&config), conn, out_rx, Arc::clone(&log)));
        while connections.try_join_next().is_some() {}
    }
}

/// Serves one connection: the writer side drains `out`, the reader decodes commands.
async fn serve(
    stream: UnixStream,
    config: Arc<MockServerBuilder>,
    conn: MockConnection,
    mut out: mpsc::UnboundedReceiver<Output>,
    log: Arc<Mutex<Vec<Command>>>,
) {
    let stream = Arc::new(stream);
    match &config.greeting {
        MockGreeting::Qemu => conn.send_raw(QEMU_GREETING),
        MockGreeting::Raw(bytes) => conn.send_raw(bytes.clone()),
        MockGreeting::Silent => {}
    }
    let reader = tokio::spawn(read_commands(Arc::clone(&stream), config, conn.clone(), log));
    while let Some(output) = out.recv().await {
        match output {
            Output::Bytes(bytes) => {
                if write_all(&stream, &bytes).await.is_err() {
                    break;
                }
            }
            Output::Disconnect => break,
        }
    }
    reader.abort();
    let _ = reader.await;
    // Dropping the last handle closes the socket; shut it down first so the client sees
    // EOF even if a handler still holds a clone of the connection's sender.
    if let Ok(stream) = Arc::try_unwrap(stream) {
        let mut stream = stream;
        let _ = stream.shutdown().await;
    }
    out.close();
}

async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

const QEMU_GREETING: &str = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"qmp-rs mock\"}, \"capabilities\": [\"oob\"]}}\r\n";

async fn read_commands(
    stream: Arc<UnixStream>,
    config: Arc<MockServerBuilder>,
    conn: MockConnection,
    log: Arc<Mutex<Vec<Command>>>,
) {
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0; 64 * 1024];
    // Descriptors wait here for the next command decoded, as in QEMU.
    let mut fds: Vec<OwnedFd> = Vec::new();
    loop {
        let Ok((n, received)) =
            fdpass::tokio::recv_with_fds(&stream, &mut chunk, fdpass::MAX_FDS_PER_MESSAGE).await
        else {
            conn.disconnect();
            return;
        };
        buf.extend_from_slice(&chunk[..n]);
        fds.extend(received);
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            let Ok(command) = item else {
                tracing::debug!(?item, "mock QMP server ignores an unreadable command");
                continue;
            };
            crate::lock(&log).push(command.clone());
            match command.name.as_str() {
                "qmp_capabilities" => conn.reply(&command, json!({})),
                "query-commands" => {
                    let list: Vec<Value> =
                        config.commands.iter().map(|name| json!({"name": name})).collect();
                    conn.reply(&command, Value::Array(list));
                }
                _ => {
                    (config.handler)(&conn, MockRequest { command, fds: std::mem::take(&mut fds) });
                }
            }
        }
    }
}
