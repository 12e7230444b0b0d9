//! The tokio client: a cheap, cloneable handle over one connection, driven by two tasks
//! (a reader that feeds the [`Session`] and a writer that owns the socket's write side).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use qmp_codec::{Command, Event, Greeting, QmpCodec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{DisconnectReason, Error};
use crate::events::{DEFAULT_SUBSCRIPTION_CAPACITY, EventFilter, EventHub, Subscription};
use crate::lock;
use qmp_codec::{AddFdInfo, FdsetInfo};

use crate::requests::{self, CallOptions};
use crate::session::{EventItem, Phase, Request, Session, SessionConfig, Stats};

type Waiter = oneshot::Sender<Result<Value, Error>>;

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
    /// timeout, 10 MiB message limit.
    pub fn new() -> Self {
        Self {
            session: SessionConfig::default(),
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

    /// Time allowed for greeting, negotiation and the capability query (default 10 s).
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

    /// Longest message accepted from the server (default 10 MiB).
    #[must_use]
    pub fn max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
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
    /// # Errors
    /// [`Error::Io`] if the socket cannot be reached, then as [`ClientBuilder::connect_stream`].
    pub async fn connect(self, path: impl AsRef<Path>) -> Result<Client, Error> {
        let stream = UnixStream::connect(path.as_ref()).await.map_err(Error::io)?;
        // SO_PEERCRED: the process that listens on the socket (QEMU), kept for callers that
        // read its /proc entries.
        let peer_pid =
            stream.peer_cred().ok().and_then(|cred| cred.pid()).and_then(|pid| pid.try_into().ok());
        let (read, write) = stream.into_split();
        let mut client = self.start(Box::new(read), Writer::Unix(Arc::new(write))).await?;
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
        let (read, write) = tokio::io::split(stream);
        self.start(Box::new(read), Writer::Stream(Box::new(write))).await
    }

    async fn start(
        self,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        writer: Writer,
    ) -> Result<Client, Error> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (outgoing_tx, outgoing_rx) = mpsc::unbounded_channel();
        let fd_capable = matches!(writer, Writer::Unix(_));
        let direct = match &writer {
            Writer::Unix(half) => Some(Arc::clone(half)),
            Writer::Stream(_) => None,
        };
        let shared_hub = self.hub.is_some();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                session: Session::new(self.session, now()),
                ready: Some(ready_tx),
            }),
            gate: Mutex::new(WriteGate { busy: false, direct }),
            outgoing: outgoing_tx,
            timer: Notify::new(),
            shutdown: CancellationToken::new(),
            hub: self.hub.unwrap_or_default(),
            shared_hub,
            fd_capable,
            tasks: Mutex::new(Vec::new()),
        });
        let span = tracing::debug_span!("qmp_connection");
        let frames = FramedRead::new(reader, QmpCodec::with_max_frame_len(self.max_frame_len));
        let read_task =
            tokio::spawn(read_loop(Arc::clone(&inner), frames).instrument(span.clone()));
        let write_task =
            tokio::spawn(write_loop(Arc::clone(&inner), writer, outgoing_rx).instrument(span));
        lock(&inner.tasks).extend([read_task, write_task]);
        // From here on, dropping the guard (an error below) tears the connection down.
        let guard = Arc::new(HandleGuard { inner: Arc::clone(&inner) });
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(Error::Disconnected(DisconnectReason::Closed)),
        }
        let (greeting, oob) = {
            let state = inner.state();
            (state.session.greeting().cloned(), state.session.oob_enabled())
        };
        let greeting =
            greeting.ok_or_else(|| Error::Protocol("negotiated without a greeting".into()))?;
        Ok(Client { inner, _guard: guard, greeting: Arc::new(greeting), oob, peer_pid: None })
    }
}

/// An async QMP client: a cheap-to-clone handle to one connection.
///
/// Any number of tasks can run commands at once through clones; each gets its own reply,
/// matched by id, in whatever order the server answers. Events go to every
/// [`Subscription`], each bounded. When the last handle is dropped, the connection closes.
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
    inner: Arc<Inner>,
    _guard: Arc<HandleGuard>,
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
    /// fetched once after negotiation; see [`Client::refresh`]).
    pub fn supports(&self, command: &str) -> bool {
        self.inner.state().session.supports(command)
    }

    /// Every command the server has, sorted, per the capability cache.
    pub fn commands(&self) -> Vec<String> {
        self.inner.state().session.commands()
    }

    /// Fetches `query-commands` again and replaces the capability cache.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn refresh(&self) -> Result<(), Error> {
        let value = self.execute("query-commands", ()).await?;
        self.inner.state().session.update_commands(&value)
    }

    /// Runs `command` and returns its `return` value.
    ///
    /// `arguments` is anything that serialises to a JSON object (`serde_json::json!({..})`,
    /// a struct), or `()` for none. A command the server does not have fails with
    /// [`Error::CommandNotSupported`] before anything is sent.
    ///
    /// Cancel-safe: dropping the future abandons the command (its reply is discarded when
    /// it comes) and leaves the connection in sync; QEMU may still carry the command out.
    ///
    /// # Errors
    /// [`Error::Qmp`] when the server answers with an error; see [`Error`] for the rest.
    pub async fn execute(&self, command: &str, arguments: impl Serialize) -> Result<Value, Error> {
        self.execute_with(command, arguments, CallOptions::default()).await
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
        requests::decode(command, self.execute(command, arguments).await?)
    }

    /// [`Client::execute`] with a per-call timeout and/or out-of-band execution.
    ///
    /// A timeout fails the call with [`Error::Timeout`]; the command was sent and its
    /// outcome is unknown, and its late reply is discarded by id.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn execute_with(
        &self,
        command: &str,
        arguments: impl Serialize,
        options: CallOptions,
    ) -> Result<Value, Error> {
        self.call(requests::request(command, arguments, options)?, Vec::new()).await
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
        self.execute_with(command, arguments, CallOptions::new().oob(true)).await
    }

    /// Runs an HMP (human monitor) command line, e.g. `info version` or `drive_del d0`.
    ///
    /// HMP reports its own errors as text in a *successful* reply
    /// (`"Device 'nope' not found\r\n"`), so check the output where that matters.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, Error> {
        let value = self.execute(requests::HMP, requests::hmp_arguments(command_line)).await?;
        requests::decode(requests::HMP, value)
    }

    /// Passes `fd` to QEMU under `name` (`getfd`), e.g. a tap device for `netdev_add`.
    ///
    /// The descriptor travels in the same `sendmsg` as the command's bytes, and nothing
    /// else is written in between. It is duplicated first: the caller's copy stays open.
    ///
    /// # Errors
    /// [`Error::FdPassingUnsupported`] unless connected over a unix socket; otherwise as
    /// [`Client::execute`].
    pub async fn get_fd(&self, name: &str, fd: impl AsFd) -> Result<(), Error> {
        let fd = fd.as_fd().try_clone_to_owned().map_err(Error::io)?;
        let request = requests::request(
            requests::GETFD,
            requests::fdname_arguments(name),
            CallOptions::default(),
        )?;
        self.call(request, vec![fd]).await.map(drop)
    }

    /// Closes the descriptor QEMU holds under `name` (`closefd`).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn close_fd(&self, name: &str) -> Result<(), Error> {
        self.execute(requests::CLOSEFD, requests::fdname_arguments(name)).await.map(drop)
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
        let arguments = requests::add_fd_arguments(fdset_id, opaque);
        let request = requests::request(requests::ADD_FD, arguments, CallOptions::default())?;
        requests::decode(requests::ADD_FD, self.call(request, vec![fd]).await?)
    }

    /// Removes descriptor `fd`, or the whole set, from fdset `fdset_id` (`remove-fd`).
    ///
    /// QEMU closes a descriptor only once nothing uses it (and, in 7.2, only while the VM
    /// runs); until then the set stays listed by `query-fdsets`.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub async fn remove_fd(&self, fdset_id: u64, fd: Option<i64>) -> Result<(), Error> {
        self.execute(requests::REMOVE_FD, requests::remove_fd_arguments(fdset_id, fd))
            .await
            .map(drop)
    }

    /// The fdsets QEMU holds (`query-fdsets`).
    ///
    /// # Errors
    /// As [`Client::execute_as`].
    pub async fn query_fdsets(&self) -> Result<Vec<FdsetInfo>, Error> {
        self.execute_as(requests::QUERY_FDSETS, ()).await
    }

    /// A bounded stream of the events that pass `filter`, from now on.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        self.subscribe_with_capacity(filter, DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// [`Client::subscribe`] with a queue of `capacity` events.
    pub fn subscribe_with_capacity(&self, filter: EventFilter, capacity: usize) -> Subscription {
        self.inner.hub.subscribe(filter, capacity)
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
        self.inner.fd_capable
    }

    /// Commands sent and not yet answered, timed out or abandoned.
    pub fn in_flight(&self) -> usize {
        self.inner.state().session.in_flight()
    }

    /// Counters of discarded replies, bad frames and events.
    pub fn stats(&self) -> Stats {
        self.inner.state().session.stats()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.inner.state().session.phase() == Phase::Closed
    }

    /// Why the connection ended, once it has.
    pub fn close_error(&self) -> Option<Error> {
        self.inner.state().session.close_error().cloned()
    }

    /// Resolves when the connection is over, for whatever reason.
    pub async fn closed(&self) {
        self.inner.shutdown.cancelled().await;
    }

    /// Closes the connection: commands in flight fail with
    /// [`Error::Disconnected`]`(`[`DisconnectReason::Closed`]`)`, the socket is shut down, and
    /// the client's tasks have ended when this returns.
    pub async fn close(&self) {
        self.inner.close(DisconnectReason::Closed);
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn call(&self, request: Request, fds: Vec<OwnedFd>) -> Result<Value, Error> {
        if !fds.is_empty() && !self.inner.fd_capable {
            return Err(Error::FdPassingUnsupported);
        }
        let (waiter, reply) = oneshot::channel();
        let id = {
            let mut state = self.inner.state();
            let command = state.session.start_command(request, waiter, now())?;
            let id = command.id.as_ref().and_then(Value::as_u64).unwrap_or_default();
            // Queued under the lock: a concurrent close either happened before (and
            // start_command failed) or will fail this command after.
            // Alone in flight, the command is written here, saving a hop through the
            // writer task; with others in flight the writer batches them into one write.
            let alone = state.session.in_flight() == 1;
            self.inner.enqueue(&command, fds, alone);
            if state.session.poll_timeout().is_some() {
                // This deadline may be the earliest: let the reader re-arm its timer.
                self.inner.timer.notify_one();
            }
            id
        };
        let mut abandon = AbandonOnDrop { inner: &self.inner, id: Some(id) };
        let result = reply.await;
        abandon.id = None;
        result.unwrap_or(Err(Error::Disconnected(DisconnectReason::Closed)))
    }
}

/// Cancels the command in the session if the caller stops waiting for it.
struct AbandonOnDrop<'a> {
    inner: &'a Inner,
    id: Option<u64>,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if self.inner.state().session.cancel(id).is_some() {
                tracing::debug!(id, "QMP command abandoned by its caller");
            }
        }
    }
}

/// Closes the connection when the last [`Client`] handle goes.
#[derive(Debug)]
struct HandleGuard {
    inner: Arc<Inner>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.inner.close(DisconnectReason::Closed);
    }
}

#[derive(Debug)]
struct State {
    session: Session<Waiter>,
    ready: Option<oneshot::Sender<Result<(), Error>>>,
}

/// One thing for the writer task to send.
#[derive(Debug)]
struct Outgoing {
    bytes: BytesMut,
    fds: Vec<OwnedFd>,
}

/// Who may write to the socket now. A caller writes its command itself (no task hop)
/// when the writer task is idle; otherwise, or when the socket is full, the bytes go to
/// the writer task, in order. The writer is `busy` from the first queued item until its
/// queue is empty again, checked under this lock, so writes never interleave.
#[derive(Debug, Default)]
struct WriteGate {
    busy: bool,
    /// The unix socket's write side, for callers' direct writes; `None` for other
    /// streams and once the connection is over.
    direct: Option<Arc<OwnedWriteHalf>>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    gate: Mutex<WriteGate>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// Wakes the reader when a new deadline may be the earliest.
    timer: Notify,
    /// Cancelled when the connection is over; both tasks stop.
    shutdown: CancellationToken,
    hub: Arc<EventHub>,
    /// The hub outlives this connection (reconnecting client): mark a gap, don't close it.
    shared_hub: bool,
    fd_capable: bool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The session's clock: tokio's, so paused-time tests drive it too.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends `command` (with `fds`): written here when `direct` is allowed, the writer task
    /// is idle and the socket takes it all, else handed to the writer task.
    fn enqueue(&self, command: &Command, fds: Vec<OwnedFd>, direct: bool) {
        let mut bytes = requests::encode(command);
        let mut gate = lock(&self.gate);
        if direct && !gate.busy && fds.is_empty() {
            if let Some(direct) = &gate.direct {
                match direct.try_write(&bytes) {
                    Ok(written) if written == bytes.len() => return,
                    // The rest follows through the writer, before anything queued later.
                    Ok(written) => drop(bytes.split_to(written)),
                    // The writer meets the same error and closes the connection.
                    Err(_) => {}
                }
            }
        }
        gate.busy = true;
        // The writer only stops once the session is closed, which fails this command.
        let _ = self.outgoing.send(Outgoing { bytes, fds });
    }

    /// Runs `input` on the session, then delivers everything it produced; `true` when a
    /// subscriber's queue is filling up.
    fn drive(&self, input: impl FnOnce(&mut Session<Waiter>)) -> bool {
        let mut backed_up = false;
        let mut state = self.state();
        input(&mut state.session);
        while let Some(command) = state.session.poll_transmit() {
            self.enqueue(&command, Vec::new(), false);
        }
        while let Some(completion) = state.session.poll_completion() {
            // The caller may have gone; its result has nowhere to go then.
            let _ = completion.waiter.send(completion.result);
        }
        while let Some(item) = state.session.poll_event() {
            backed_up |= self.hub.publish(&item);
        }
        match state.session.phase() {
            Phase::Ready => {
                if let Some(ready) = state.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            Phase::Closed => {
                let error = state
                    .session
                    .close_error()
                    .cloned()
                    .unwrap_or(Error::Disconnected(DisconnectReason::Closed));
                if let Some(ready) = state.ready.take() {
                    let _ = ready.send(Err(error.clone()));
                }
                if !self.shutdown.is_cancelled() {
                    let reason = error.disconnect_reason();
                    if self.shared_hub {
                        let _ = self.hub.publish(&EventItem::Gap(reason));
                    } else {
                        self.hub.close(&reason);
                    }
                    self.shutdown.cancel();
                }
            }
            _ => {}
        }
        backed_up
    }

    fn close(&self, reason: DisconnectReason) {
        let _ = self.drive(|session| session.handle_closed(reason));
    }
}

/// Reads frames and feeds them, and the clock, to the session until the connection ends.
async fn read_loop(
    inner: Arc<Inner>,
    mut frames: FramedRead<Box<dyn AsyncRead + Send + Unpin>, QmpCodec>,
) {
    loop {
        let deadline = inner.state().session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => break,
            frame = frames.next() => match frame {
                Some(Ok(item)) => {
                    let backed_up = inner.drive(|session| {
                        let now = now();
                        session.handle_message(item);
                        // Under a steady flood this branch always wins; expire deadlines
                        // here too so a timed-out command is not kept waiting behind it.
                        if deadline.is_some_and(|at| at <= now) {
                            session.handle_timeout(now);
                        }
                    });
                    if backed_up {
                        // Buffered frames never make this task wait, so on a one-thread
                        // runtime a burst would fill every queue before a consumer runs.
                        // Let them run once; a consumer that is truly slow still loses
                        // the oldest events, and never slows the connection more than this.
                        tokio::task::yield_now().await;
                    }
                }
                Some(Err(error)) => inner.close(DisconnectReason::from_codec(&error)),
                None => inner.close(DisconnectReason::Eof),
            },
            () = sleep => {
                let _ = inner.drive(|session| session.handle_timeout(now()));
            }
            () = inner.timer.notified() => {}
        }
    }
    tracing::debug!("QMP reader stopped");
}

/// The socket's write side: a unix socket can also carry file descriptors.
enum Writer {
    Unix(Arc<OwnedWriteHalf>),
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unix(_) => "Writer::Unix",
            Self::Stream(_) => "Writer::Stream",
        })
    }
}

impl Writer {
    async fn write_all(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Unix(half) => {
                // `try_write` takes `&self`: callers write through the same half directly.
                while !bytes.is_empty() {
                    match half.try_write(bytes) {
                        Ok(written) => bytes = &bytes[written..],
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                            (**half).as_ref().writable().await?;
                        }
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            }
            Self::Stream(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    async fn write_with_fds(&mut self, bytes: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
        let Self::Unix(half) = self else {
            return Err(std::io::Error::other("file descriptors need a unix socket"));
        };
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        fdpass::tokio::send_all_with_fds((**half).as_ref(), bytes, &borrowed)
            .await
            .map_err(std::io::Error::from)
    }

    /// Ends the write side. The unix half shuts down when its last `Arc` goes: the gate's
    /// was taken before this, this one goes with `self`.
    async fn shutdown(self) {
        if let Self::Stream(mut stream) = self {
            let _ = stream.shutdown().await;
        }
    }
}

/// Owns the write side: writes queued commands in order, batching those without
/// descriptors, so a caller that stops waiting can never leave half a command on the wire.
async fn write_loop(
    inner: Arc<Inner>,
    mut writer: Writer,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => break,
            next = queue.recv() => match next {
                Some(item) => item,
                None => break,
            },
        };
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some(item) = next.take() {
            if item.fds.is_empty() {
                batch.extend_from_slice(&item.bytes);
            } else {
                // Everything queued before goes first, then this command with its fds.
                result = flush(&mut writer, &mut batch).await;
                if result.is_ok() {
                    result = writer.write_with_fds(&item.bytes, &item.fds).await;
                }
                drop(item.fds);
            }
            if result.is_err() {
                break;
            }
            next = queue.try_recv().ok();
            if next.is_none() && result.is_ok() {
                result = flush(&mut writer, &mut batch).await;
                if result.is_ok() {
                    // Callers queue only under the gate: empty here means idle.
                    let mut gate = lock(&inner.gate);
                    next = queue.try_recv().ok();
                    gate.busy = next.is_some();
                }
            }
        }
        if let Err(error) = result {
            tracing::debug!(%error, "QMP write failed");
            inner.close(DisconnectReason::from_io(&error));
            break;
        }
    }
    lock(&inner.gate).direct = None;
    writer.shutdown().await;
    tracing::debug!("QMP writer stopped");
}

async fn flush(writer: &mut Writer, batch: &mut BytesMut) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let result = writer.write_all(batch).await;
    batch.clear();
    result
}
