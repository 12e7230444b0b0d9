//! The async client's public face: [`ClientBuilder`] and the cheap, cloneable [`Client`]
//! handle. Everything that touches the socket lives in the [driver](crate::driver).

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qmp_codec::{AddFdInfo, Event, FdsetInfo, Greeting};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::driver::{self, CloseOnDrop, Shared, Transport};
use crate::error::{DisconnectReason, Error};
use crate::events::{DEFAULT_SUBSCRIPTION_CAPACITY, EventFilter, EventHub, Subscription};
use crate::request::{self, Request};
use crate::session::{Phase, SessionConfig, Stats, deadline_after};

/// The environment variable that turns argument checking on by default
/// ([`ClientBuilder::check_arguments`]): `1` (or `true`, `yes`, `on`) turns it on.
pub const CHECK_ARGUMENTS_ENV: &str = "QMP_CHECK_ARGUMENTS";

/// The first pause before connecting again to a busy monitor; it doubles up to
/// [`MAX_BUSY_BACKOFF`].
pub(crate) const FIRST_BUSY_BACKOFF: Duration = Duration::from_millis(10);
pub(crate) const MAX_BUSY_BACKOFF: Duration = Duration::from_millis(200);

/// Whether `connect(2)` failed because the monitor's backlog is full (`EAGAIN`).
pub(crate) fn is_busy(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

/// How to connect. `Client::builder()` gives the defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    session: SessionConfig,
    max_frame_len: usize,
    hub: Option<Arc<EventHub>>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// Defaults: `oob` enabled when offered, 10 s handshake timeout, no default command
    /// timeout, 10 MiB message limit, 256 commands queued while the server is not reading,
    /// argument checking off unless the environment variable `QMP_CHECK_ARGUMENTS` is `1`
    /// ([`CHECK_ARGUMENTS_ENV`]).
    pub fn new() -> Self {
        let check_arguments = std::env::var(CHECK_ARGUMENTS_ENV)
            .is_ok_and(|value| matches!(value.trim(), "1" | "true" | "yes" | "on"));
        Self {
            session: SessionConfig { check_arguments, ..SessionConfig::default() },
            max_frame_len: qmp_codec::DEFAULT_MAX_FRAME_LEN,
            hub: None,
        }
    }

    /// Enable `oob` when the server offers it (default `true`).
    #[must_use]
    pub fn enable_oob(mut self, enable: bool) -> Self {
        self.session.enable_oob = enable;
        self
    }

    /// Time allowed for connecting (retried while the monitor is busy), the greeting,
    /// negotiation and the capability query (default 10 s; [`Duration::MAX`] waits as
    /// long as it takes).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.session.handshake_timeout = timeout;
        self
    }

    /// Timeout for commands that set none (default: none).
    #[must_use]
    pub fn default_command_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.session.default_command_timeout = timeout;
        self
    }

    /// Check every command's arguments against the server's own schema before sending it
    /// (default off, or on when `QMP_CHECK_ARGUMENTS=1` is set in the environment).
    ///
    /// The schema (`query-qmp-schema`, about 207 KB on QEMU 7.2) is fetched once per
    /// connection, by the first command, which waits for it within its own timeout;
    /// concurrent first commands share the one request. Arguments QEMU would refuse fail
    /// with [`Error::InvalidArguments`], and nothing is sent; deprecated or unstable use is
    /// logged as a `tracing` warning. What the schema cannot judge (`device_add`'s device
    /// properties, `any`-typed values) is sent unchecked. A server without a usable schema
    /// (not in `query-commands`, an error reply, a reply that does not parse) gets one
    /// warning, and its commands go unchecked: checking never turns a command that works
    /// into a failure.
    #[must_use]
    pub fn check_arguments(mut self, check: bool) -> Self {
        self.session.check_arguments = check;
        self
    }

    /// Longest message accepted from the server (default 10 MiB).
    #[must_use]
    pub fn max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
        self
    }

    /// Commands that may wait to be written while the server is not reading its socket
    /// (default 256, at least 1). When that many wait, further calls wait for room (up to
    /// their timeout, then [`Error::NotSent`]); a caller that gives up on a command that
    /// was not written yet takes it out of the queue, so it is never sent.
    #[must_use]
    pub fn max_queued_commands(mut self, max: usize) -> Self {
        self.session.max_queued_commands = max;
        self
    }

    pub(crate) fn shared_hub(mut self, hub: Arc<EventHub>) -> Self {
        self.hub = Some(hub);
        self
    }

    pub(crate) fn session_config(&self) -> &SessionConfig {
        &self.session
    }

    pub(crate) fn frame_limit(&self) -> usize {
        self.max_frame_len
    }

    /// Connects to a QMP unix socket; the connection can pass file descriptors.
    ///
    /// QEMU serves one client per QMP socket. While one is connected, the next two
    /// connections wait in the socket's backlog without a greeting, and `connect(2)` fails
    /// with `EAGAIN` once the backlog is full: that is retried (10 to 200 ms apart) until
    /// the handshake timeout, then fails with [`Error::MonitorBusy`]. A connection that got
    /// in but no greeting in time fails with [`Error::GreetingTimeout`].
    ///
    /// # Errors
    /// [`Error::Io`] if the socket cannot be reached, [`Error::MonitorBusy`], then as
    /// [`ClientBuilder::connect_stream`].
    pub async fn connect(self, path: impl AsRef<Path>) -> Result<Client, Error> {
        let path = path.as_ref();
        let started = driver::now();
        let deadline = deadline_after(started, self.session.handshake_timeout);
        let mut backoff = FIRST_BUSY_BACKOFF;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(error) if is_busy(&error) => {
                    let left = deadline.saturating_duration_since(driver::now());
                    if left.is_zero() {
                        let waited = driver::now().saturating_duration_since(started);
                        return Err(Error::MonitorBusy { path: path.to_owned(), waited });
                    }
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(MAX_BUSY_BACKOFF);
                }
                Err(error) => return Err(Error::io(error)),
            }
        };
        // SO_PEERCRED: the process that listens on the socket (QEMU), kept for callers that
        // read its /proc entries.
        let peer_pid =
            stream.peer_cred().ok().and_then(|cred| cred.pid()).and_then(|pid| pid.try_into().ok());
        let mut client = self.start(Transport::unix(stream).map_err(Error::io)?, started).await?;
        client.peer_pid = peer_pid;
        Ok(client)
    }

    /// Runs QMP over any byte stream (a socket pair, an in-memory duplex, a TCP stream).
    /// File-descriptor commands fail with [`Error::FdPassingUnsupported`] on such streams.
    ///
    /// # Errors
    /// [`Error::GreetingTimeout`], [`Error::Protocol`] (no greeting, negotiation refused),
    /// [`Error::Timeout`] (negotiation too slow) or [`Error::Disconnected`].
    pub async fn connect_stream<S>(self, stream: S) -> Result<Client, Error>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.start(Transport::stream(stream), driver::now()).await
    }

    async fn start(
        self,
        transport: Transport,
        started: std::time::Instant,
    ) -> Result<Client, Error> {
        let guard =
            driver::connect(self.session, self.max_frame_len, self.hub, transport, started).await?;
        let (greeting, oob) = {
            let state = guard.0.lock();
            (state.session.greeting().cloned(), state.session.oob_enabled())
        };
        let greeting =
            greeting.ok_or_else(|| Error::Protocol("negotiated without a greeting".into()))?;
        Ok(Client {
            shared: Arc::clone(&guard.0),
            _guard: Arc::new(guard),
            greeting: Arc::new(greeting),
            oob,
            peer_pid: None,
        })
    }
}

/// An async QMP client: a cheap-to-clone handle to one connection.
///
/// Any number of tasks can run commands at once through clones; each gets its own reply,
/// matched by id, in whatever order the server answers. Events go to every
/// [`Subscription`], each bounded. When the last handle is dropped, the connection closes.
///
/// The connection is served by one task (no thread), the only code that writes to the
/// socket: a call encodes its command into the outgoing queue and wakes that task.
///
/// ```no_run
/// # async fn example() -> Result<(), qmp_client::Error> {
/// let client = qmp_client::Client::connect("/run/vm/qmp.sock").await?;
/// println!("QEMU {}", client.greeting().version.qemu);
/// let status = client.execute("query-status", ()).await?;
/// println!("{}", status["status"]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _guard: Arc<CloseOnDrop>,
    greeting: Arc<Greeting>,
    oob: bool,
    peer_pid: Option<u32>,
}

impl Client {
    /// A builder for non-default options.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Connects to a QMP unix socket with the default options.
    ///
    /// # Errors
    /// See [`ClientBuilder::connect`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        ClientBuilder::new().connect(path).await
    }

    /// The server's greeting: QEMU's version triple, package and offered capabilities.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Whether `oob` was negotiated (so [`Client::execute_oob`] is available).
    pub fn oob_enabled(&self) -> bool {
        self.oob
    }

    /// The process id of the server (QEMU), as the kernel gave it for the unix socket at
    /// connect time (`SO_PEERCRED`); `None` for [`ClientBuilder::connect_stream`] or when
    /// the kernel did not say.
    pub fn peer_pid(&self) -> Option<u32> {
        self.peer_pid
    }

    /// Whether the server has `command`, per the capability cache (`query-commands`,
    /// fetched once after negotiation; see [`Client::refresh_commands`]).
    pub fn supports(&self, command: &str) -> bool {
        self.shared.lock().session.supports(command)
    }

    /// Every command the server has, sorted, per the capability cache.
    pub fn commands(&self) -> Vec<String> {
        self.shared.lock().session.commands()
    }

    /// Fetches `query-commands` again and replaces the capability cache (a QEMU whose
    /// commands changed, or after loading a module).
    ///
    /// # Errors
    /// As [`Client::execute`]; [`Error::Protocol`] if the reply is not a command list (the
    /// cache is then left as it was).
    pub async fn refresh_commands(&self) -> Result<(), Error> {
        self.shared.refresh_commands().await
    }

    /// Runs `command` and returns its `return` value.
    ///
    /// `arguments` is anything that serialises to a JSON object (`serde_json::json!({..})`,
    /// a struct), or `()` for none. A command the server does not have fails with
    /// [`Error::CommandNotSupported`] before anything is sent.
    ///
    /// Cancel-safe: dropping the future abandons the command and leaves the connection in
    /// sync. If it was not written yet it is never sent; otherwise its reply is discarded
    /// when it comes, and QEMU may still carry it out.
    ///
    /// # Errors
    /// [`Error::Qmp`] when the server answers with an error; see [`Error`] for the rest.
    pub async fn execute(&self, command: &str, arguments: impl Serialize) -> Result<Value, Error> {
        self.shared.call(Request::new(command).arguments(arguments)?).await
    }

    /// [`Client::execute`], deserialising the `return` value into `T`.
    ///
    /// # Errors
    /// As [`Client::execute`], plus [`Error::Decode`] if the value does not fit `T`.
    pub async fn execute_as<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: impl Serialize,
    ) -> Result<T, Error> {
        request::decode(command, self.execute(command, arguments).await?)
    }

    /// Runs a [`Request`]: a command with its options (timeout, `exec-oob`, descriptors).
    ///
    /// A timeout fails the call with [`Error::Timeout`] if the command was written (its
    /// outcome is unknown, and its late reply is discarded by id), or with
    /// [`Error::NotSent`] if it was still waiting to be written (it is dropped then).
    ///
    /// # Errors
    /// As [`Client::execute`]; [`Error::FdPassingUnsupported`] for descriptors over a
    /// connection that is not a unix socket, [`Error::FdPassing`] if the system refused
    /// them.
    pub async fn call(&self, request: Request) -> Result<Value, Error> {
        self.shared.call(request).await
    }

    /// [`Client::call`], deserialising the `return` value into `T`.
    ///
    /// # Errors
    /// As [`Client::call`], plus [`Error::Decode`] if the value does not fit `T`.
    pub async fn call_as<T: DeserializeOwned>(&self, request: Request) -> Result<T, Error> {
        let command = request.name.clone();
        request::decode(&command, self.call(request).await?)
    }

    /// Runs `command` out-of-band (`exec-oob`): QEMU runs it at once, even while an
    /// in-band command is still executing. Needs `oob` negotiated, and a command QEMU
    /// allows out-of-band (such as `migrate-pause`).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] without `oob`; otherwise as [`Client::execute`].
    pub async fn execute_oob(
        &self,
        command: &str,
        arguments: impl Serialize,
    ) -> Result<Value, Error> {
        self.call(Request::new(command).arguments(arguments)?.oob(true)).await
    }

    /// Runs an HMP (human monitor) command line, e.g. `info version` or `drive_del d0`,
    /// and returns its text as it is.
    ///
    /// HMP reports its own errors as text in a *successful* reply
    /// (`"Device 'nope' not found\r\n"`); [`Client::hmp`] tells them apart.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, Error> {
        request::decode(request::HMP, self.call(request::hmp(command_line)).await?)
    }

    /// Runs an HMP command line like [`Client::human_monitor_command`], but fails with
    /// [`Error::Hmp`] when HMP's text is one of its known error shapes
    /// ([`hmp::ERROR_SHAPES`](crate::hmp::ERROR_SHAPES): `unknown command: ...`,
    /// `Error: ...`, `Device '...' not found`, `Node ... is in use`, `Could not ...`,
    /// `Failed to ...`, `Invalid ...`, `Try "help ..."`, ...). Any other text is the
    /// command's output: `info` commands, `help`, `x`/`xp`, `i`, `print`, `sum` and a few
    /// others print text when they succeed (`drive_add` prints `OK`); most others print
    /// nothing.
    ///
    /// # Errors
    /// [`Error::Hmp`], else as [`Client::execute`].
    pub async fn hmp(&self, command_line: &str) -> Result<String, Error> {
        let text = self.human_monitor_command(command_line).await?;
        request::hmp_result(command_line, text)
    }

    /// QEMU's schema (`query-qmp-schema`), for feature probes
    /// ([`Schema::has`](qmp_schema::Schema::has)) and descriptions: fetched on first use
    /// (or by the first checked command) and kept for the connection. `None` when the
    /// server has no usable schema (see [`ClientBuilder::check_arguments`]).
    ///
    /// ```no_run
    /// # async fn example(client: qmp_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(schema) = client.schema().await? {
    ///     let direct_io = schema.has("blockdev-add/arg-type/+file/cache/direct")?;
    /// #   let _ = direct_io;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Disconnected`] (or the connection's error) when it ends first;
    /// [`Error::Timeout`] after the default command timeout, if one is set.
    pub async fn schema(&self) -> Result<Option<Arc<qmp_schema::Schema>>, Error> {
        let timeout = self.shared.lock().session.config().default_command_timeout;
        let settled = self.shared.settle_schema();
        match timeout {
            Some(timeout) => {
                let deadline =
                    tokio::time::Instant::from_std(deadline_after(driver::now(), timeout));
                tokio::time::timeout_at(deadline, settled).await.map_err(|_| {
                    Error::Timeout { command: "query-qmp-schema".into(), timeout }
                })??;
            }
            None => settled.await?,
        }
        Ok(self.shared.lock().session.schema().cloned())
    }

    /// Passes `fd` to QEMU under `name` (`getfd`), e.g. a tap device for `netdev_add`.
    ///
    /// The descriptor travels in the same `sendmsg` as the command's bytes, and nothing
    /// else is written in between. It is duplicated first: the caller's copy stays open.
    ///
    /// # Errors
    /// [`Error::FdPassingUnsupported`] unless connected over a unix socket; otherwise as
    /// [`Client::call`].
    pub async fn get_fd(&self, name: &str, fd: impl AsFd) -> Result<(), Error> {
        let fd = fd.as_fd().try_clone_to_owned().map_err(Error::io)?;
        self.call(request::getfd(name, fd)).await.map(drop)
    }

    /// Closes the descriptor QEMU holds under `name` (`closefd`).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn close_fd(&self, name: &str) -> Result<(), Error> {
        self.call(request::closefd(name)).await.map(drop)
    }

    /// Adds `fd` to an fdset (`add-fd`): a new one, or `fdset_id`. QEMU can then open it as
    /// `/dev/fdset/<id>`. `opaque` is free text shown by `query-fdsets`.
    ///
    /// # Errors
    /// As [`Client::get_fd`].
    pub async fn add_fd(
        &self,
        fd: impl AsFd,
        fdset_id: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<AddFdInfo, Error> {
        let fd = fd.as_fd().try_clone_to_owned().map_err(Error::io)?;
        let value = self.call(request::add_fd(fd, fdset_id, opaque)).await?;
        request::decode(request::ADD_FD, value)
    }

    /// Removes descriptor `fd`, or the whole set, from fdset `fdset_id` (`remove-fd`).
    ///
    /// QEMU closes a descriptor only once nothing uses it (and, in 7.2, only while the VM
    /// runs); until then the set stays listed by `query-fdsets`.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn remove_fd(&self, fdset_id: u64, fd: Option<i64>) -> Result<(), Error> {
        self.call(request::remove_fd(fdset_id, fd)).await.map(drop)
    }

    /// The fdsets QEMU holds (`query-fdsets`).
    ///
    /// # Errors
    /// As [`Client::execute_as`].
    pub async fn query_fdsets(&self) -> Result<Vec<FdsetInfo>, Error> {
        self.execute_as(request::QUERY_FDSETS, ()).await
    }

    /// A bounded stream of the events that pass `filter`, from now on.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        self.subscribe_with_capacity(filter, DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// [`Client::subscribe`] with a queue of `capacity` events.
    pub fn subscribe_with_capacity(&self, filter: EventFilter, capacity: usize) -> Subscription {
        self.shared.hub.subscribe(filter, capacity)
    }

    /// Waits for the next event that passes `filter`.
    ///
    /// To wait for an event that a command causes, subscribe *before* sending the command
    /// (`let mut s = client.subscribe(f); client.execute(..).await?; s.wait(t).await`), so
    /// an event that comes before the reply is not missed.
    ///
    /// # Errors
    /// See [`Subscription::wait`].
    pub async fn wait_for_event(
        &self,
        filter: EventFilter,
        timeout: Duration,
    ) -> Result<Event, Error> {
        self.subscribe(filter).wait(timeout).await
    }

    /// `true` if this connection can pass file descriptors (it is a unix socket), so
    /// [`Client::get_fd`] and [`Client::add_fd`] can work.
    pub fn can_pass_fds(&self) -> bool {
        self.shared.fd_capable
    }

    /// Commands started and not yet answered, timed out or abandoned (written or not).
    pub fn in_flight(&self) -> usize {
        self.shared.lock().session.in_flight()
    }

    /// Commands waiting to be written (the server is slow to read its socket).
    pub fn queued(&self) -> usize {
        self.shared.lock().session.queued()
    }

    /// Counters of discarded replies, bad frames, withdrawn commands and events.
    pub fn stats(&self) -> Stats {
        self.shared.lock().session.stats()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().session.phase() == Phase::Closed
    }

    /// Why the connection ended, once it has.
    pub fn close_error(&self) -> Option<Error> {
        self.shared.lock().session.close_error().cloned()
    }

    /// Resolves when the connection is over, for whatever reason.
    pub async fn closed(&self) {
        self.shared.closed().await;
    }

    /// Closes the connection: commands in flight fail with
    /// [`Error::Disconnected`]`(`[`DisconnectReason::Closed`]`)`, the socket is shut down, and
    /// the client's task has ended when this returns.
    pub async fn close(&self) {
        self.shared.close(DisconnectReason::Closed);
        if let Some(task) = self.shared.take_task() {
            let _ = task.await;
        }
    }
}
