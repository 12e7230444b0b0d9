//! The tokio side of one connection: the state the [`Client`](crate::Client) handles
//! share, and the one task that owns the socket.
//!
//! * [`Shared`] holds the [`Session`] behind a mutex, with the driver's waker. A caller
//!   starts a command by encoding it into the session's outgoing queue and waking the
//!   driver; it never touches the socket. When the queue is full it waits for room.
//! * [`Driver`] is the connection's only task and the only code that writes to the
//!   socket. Each time it runs it reads what has arrived and hands every message to the
//!   session, then writes what [`Session::poll_transmit`] offers (a command with
//!   descriptors alone in its `sendmsg`), runs the session's timer, and delivers what the
//!   session produced (replies to waiters, events to the hub).
//! * A unix socket is registered with the runtime for reading only, so the peer draining
//!   what was written does not wake the driver: only when a write would block is a second
//!   registration made, for writability, and it is dropped once the queue is written.
//!   Other byte streams go through tokio's `AsyncRead`/`AsyncWrite`.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::BytesMut;
use qmp_codec::QmpCodec;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::codec::Decoder;

use crate::error::{DisconnectReason, Error};
use crate::events::EventHub;
use crate::request::Request;
use crate::session::{EventItem, Phase, Session};

/// How a finished command reaches the task that waits for it.
pub(crate) type Waiter = oneshot::Sender<Result<Value, Error>>;

/// Messages handed to the session under one lock before what they produced is delivered:
/// a subscriber with the default queue (256) is let to catch up when half full, so a batch
/// stays well below that.
const BATCH: usize = 32;

/// A connection's read buffer larger than this is given back once it is empty (after a
/// burst of events or a big reply), so idle connections stay small.
const KEEP_READ_CAPACITY: usize = 16 * 1024;

/// What the handles and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) hub: Arc<EventHub>,
    /// The hub outlives this connection (reconnecting client): mark a gap, don't close it.
    hub_outlives_connection: bool,
    pub(crate) fd_capable: bool,
    /// Woken when the connection ends.
    ended: Notify,
    /// Woken when the outgoing queue, full before, has room again (or the connection ended).
    room: Notify,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) session: Session<Waiter>,
    /// The driver, parked until there is something to write or a new deadline.
    driver: Option<Waker>,
    /// Somebody waits on [`Shared::room`].
    room_wanted: bool,
    ready: Option<oneshot::Sender<Result<(), Error>>>,
    task: Option<JoinHandle<()>>,
    /// The end of the connection was announced.
    end_told: bool,
    /// When the connection started: the instant given to the session for commands without
    /// a deadline, where it is not read (so the clock is not either).
    started: std::time::Instant,
}

/// The session's clock: tokio's, so paused-time tests drive it too.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Runs `command` and waits for its reply; see [`Client::call`](crate::Client::call).
    pub(crate) async fn call(&self, request: Request) -> Result<Value, Error> {
        if !request.fds.is_empty() && !self.fd_capable {
            return Err(Error::FdPassingUnsupported);
        }
        let (waiter, reply) = oneshot::channel();
        let id = match self.try_start(request, waiter)? {
            Start::Queued(id) => id,
            // Boxed: waiting for room is rare, and its future (a timer among it) would
            // otherwise make every call's future (one allocation per call in a
            // `buffer_unordered` or a spawned task) about twice as big.
            Start::Full(request, waiter) => Box::pin(self.start_when_room(request, waiter)).await?,
        };
        let mut abandon = AbandonOnDrop { shared: self, id: Some(id) };
        let result = reply.await;
        abandon.id = None;
        result.unwrap_or(Err(Error::Disconnected(DisconnectReason::Closed)))
    }

    /// [`Client::refresh_commands`](crate::Client::refresh_commands).
    pub(crate) async fn refresh_commands(&self) -> Result<(), Error> {
        let (waiter, reply) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            let id = state.session.refresh_commands(waiter, now())?;
            wake_driver(state);
            id
        };
        let mut abandon = AbandonOnDrop { shared: self, id: Some(id) };
        let result = reply.await;
        abandon.id = None;
        result.unwrap_or(Err(Error::Disconnected(DisconnectReason::Closed))).map(drop)
    }

    /// Queues `request` in the session unless the queue is full.
    fn try_start(&self, request: Request, waiter: Waiter) -> Result<Start, Error> {
        let mut state = self.lock();
        if state.session.queue_is_full() {
            return Ok(Start::Full(request, waiter));
        }
        let now = if state.session.deadline_applies(&request) { now() } else { state.started };
        let id = state.session.start_command(request, waiter, now)?;
        wake_driver(state);
        Ok(Start::Queued(id))
    }

    /// When the queue is full (the server is not reading its socket): waits for
    /// room up to the command's timeout; cancel-safe (nothing is queued until it returns).
    async fn start_when_room(&self, request: Request, waiter: Waiter) -> Result<u64, Error> {
        let timeout = {
            let state = self.lock();
            request.timeout.or(state.session.config().default_command_timeout)
        };
        let deadline = timeout.map(|timeout| {
            tokio::time::Instant::from_std(crate::session::deadline_after(
                std::time::Instant::now(),
                timeout,
            ))
        });
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check below, so room made after it is not missed.
            room.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.session.queue_is_full() || state.session.phase() == Phase::Closed {
                    let id = state.session.start_command(request, waiter, now())?;
                    wake_driver(state);
                    return Ok(id);
                }
                state.room_wanted = true;
            }
            match (deadline, timeout) {
                (Some(deadline), Some(timeout)) => {
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        return Err(Error::NotSent { command: request.name, timeout });
                    }
                }
                _ => room.await,
            }
        }
    }

    /// Delivers what the session produced: replies to their waiters, events to the hub,
    /// the end of the handshake or of the connection. `true` when a subscriber's queue
    /// is filling up.
    fn deliver(&self, state: &mut State) -> bool {
        let mut backed_up = false;
        while let Some(completion) = state.session.poll_completion() {
            // The caller may have gone; its result has nowhere to go then.
            let _ = completion.waiter.send(completion.result);
        }
        if let Some(first) = state.session.poll_event() {
            let session = &mut state.session;
            backed_up |= self.hub.publish_each(first, || session.poll_event());
        }
        let phase = state.session.phase();
        if state.room_wanted && (phase == Phase::Closed || !state.session.queue_is_full()) {
            state.room_wanted = false;
            self.room.notify_waiters();
        }
        match phase {
            Phase::Ready => {
                if let Some(ready) = state.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            Phase::Closed => self.ended(state),
            _ => {}
        }
        backed_up
    }

    /// The session has closed: tell the handshake, the subscribers and `closed()`
    /// waiters, once.
    fn ended(&self, state: &mut State) {
        if state.end_told {
            return;
        }
        state.end_told = true;
        let error = state
            .session
            .close_error()
            .cloned()
            .unwrap_or(Error::Disconnected(DisconnectReason::Closed));
        if let Some(ready) = state.ready.take() {
            let _ = ready.send(Err(error.clone()));
        }
        let reason = error.disconnect_reason();
        if self.hub_outlives_connection {
            let _ = self.hub.publish(EventItem::Gap(reason));
        } else {
            self.hub.close(&reason);
        }
        self.ended.notify_waiters();
    }

    /// Ends the connection (`close()`, or the last handle dropped): commands in flight
    /// fail, and the driver shuts the socket down and stops.
    pub(crate) fn close(&self, reason: DisconnectReason) {
        let mut state = self.lock();
        state.session.handle_closed(reason);
        self.deliver(&mut state);
        wake_driver(state);
    }

    /// Takes the driver task, to await its end.
    pub(crate) fn take_task(&self) -> Option<JoinHandle<()>> {
        self.lock().task.take()
    }

    /// Resolves once the connection is over.
    pub(crate) async fn closed(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.lock().session.phase() == Phase::Closed {
                return;
            }
            ended.await;
        }
    }
}

/// Whether [`Shared::try_start`] queued the command.
enum Start {
    Queued(u64),
    Full(Request, Waiter),
}

/// Wakes the driver if it is parked, after letting go of the lock.
fn wake_driver(mut state: MutexGuard<'_, State>) {
    let driver = state.driver.take();
    drop(state);
    if let Some(driver) = driver {
        driver.wake();
    }
}

/// Gives the command up in the session if its caller stops waiting for it: withdrawn if
/// not written yet, its reply discarded otherwise.
struct AbandonOnDrop<'a> {
    shared: &'a Shared,
    id: Option<u64>,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut state = self.shared.lock();
            if state.session.cancel(id).is_some() {
                tracing::debug!(id, "QMP command abandoned by its caller");
                self.shared.deliver(&mut state);
            }
        }
    }
}

/// Closes the connection when the last [`Client`](crate::Client) handle goes (or when
/// `connect` is abandoned halfway).
#[derive(Debug)]
pub(crate) struct CloseOnDrop(pub(crate) Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(DisconnectReason::Closed);
    }
}

/// Starts the driver of a new connection over `transport` and waits until the session
/// is ready (greeting, negotiation, capability cache).
pub(crate) async fn connect(
    config: crate::session::SessionConfig,
    max_frame_len: usize,
    hub: Option<Arc<EventHub>>,
    transport: Transport,
) -> Result<CloseOnDrop, Error> {
    let (ready, handshake) = oneshot::channel();
    let started = now();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            session: Session::new(config, started),
            started,
            driver: None,
            room_wanted: false,
            ready: Some(ready),
            task: None,
            end_told: false,
        }),
        hub_outlives_connection: hub.is_some(),
        hub: hub.unwrap_or_default(),
        fd_capable: transport.can_pass_fds(),
        ended: Notify::new(),
        room: Notify::new(),
    });
    let driver = Driver {
        shared: Arc::clone(&shared),
        transport,
        codec: QmpCodec::with_max_frame_len(max_frame_len),
        incoming: BytesMut::new(),
        timer: None,
        read_wake: None,
        read_armed: false,
        shutting_down: false,
    };
    let span = tracing::debug_span!("qmp_connection");
    let task = tokio::spawn(tracing::Instrument::instrument(driver, span));
    shared.lock().task = Some(task);
    // From here on, an error (or this future dropped) closes the connection.
    let guard = CloseOnDrop(shared);
    match handshake.await {
        Ok(Ok(())) => Ok(guard),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::Disconnected(DisconnectReason::Closed)),
    }
}

/// The connection's one task: see the [module docs](self).
struct Driver {
    shared: Arc<Shared>,
    transport: Transport,
    codec: QmpCodec,
    /// Bytes read and not yet decoded (at most the start of one message between reads).
    incoming: BytesMut,
    /// Armed at the session's next deadline, while it has one.
    timer: Option<Pin<Box<Sleep>>>,
    /// What the socket's read side wakes (see [`ReadWake`]), made at the first poll.
    read_wake: Option<(Arc<ReadWake>, Waker)>,
    /// The last read found nothing and left the read waker registered with the socket.
    read_armed: bool,
    /// The session is closed; the socket is being shut down.
    shutting_down: bool,
}

/// The waker the driver gives the socket's read side: it notes that the socket woke it,
/// then wakes the driver's task. A poll that was not caused by the socket (a caller's
/// command to write, a deadline) then skips the read side, which costs more to poll for
/// nothing than the write itself.
#[derive(Debug)]
struct ReadWake {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// What reading left to do.
enum Incoming {
    /// Nothing more to read now; the runtime wakes the driver when there is.
    Idle,
    /// A subscriber's queue is filling up: let consumers run, then read on.
    Yield,
    /// The stream ended or the session closed.
    Ended,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if this.shutting_down {
                return this.transport.poll_shutdown(cx);
            }
            let incoming = this.poll_incoming(cx);
            let mut state = this.shared.lock();
            let mut deadline_passed = false;
            if state.session.phase() != Phase::Closed {
                flush(&mut this.transport, cx, &mut state);
                if let Some(deadline) = poll_timer(&mut this.timer, cx, &state) {
                    // Never earlier than the deadline the timer fired for, or it re-fires.
                    state.session.handle_timeout(now().max(deadline));
                    deadline_passed = true;
                }
            }
            this.shared.deliver(&mut state);
            if state.session.phase() == Phase::Closed {
                state.driver = None;
                this.shutting_down = true;
                tracing::debug!("QMP connection closed; driver stops");
                continue;
            }
            if deadline_passed {
                continue;
            }
            if matches!(incoming, Incoming::Yield) {
                drop(state);
                // As `tokio::task::yield_now` does: tokio runs a deferred wake only after
                // everything else that is ready, a `block_on` future included, where a
                // plain `wake_by_ref` would be run again at once (up to 61 times before
                // the runtime looks at its main future) and overflow the consumer.
                let _ = pin!(tokio::task::yield_now()).poll(cx);
                return Poll::Pending;
            }
            if !state.driver.as_ref().is_some_and(|driver| driver.will_wake(cx.waker())) {
                state.driver = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
    }
}

impl Driver {
    /// Hands every message that has arrived to the session, reading until the socket has
    /// nothing more (or a subscriber needs to catch up).
    fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Incoming {
        if !self.read_wake.as_ref().is_some_and(|(wake, _)| wake.task.will_wake(cx.waker())) {
            // First poll (a spawned task keeps its waker): register afresh below.
            let wake =
                Arc::new(ReadWake { fired: AtomicBool::new(false), task: cx.waker().clone() });
            self.read_wake = Some((Arc::clone(&wake), Waker::from(wake)));
            self.read_armed = false;
        }
        loop {
            // Messages are handed over in batches, each under one lock and delivered at
            // once; a batch never holds more events than the session keeps.
            let mut more = true;
            while more {
                let mut state = None;
                let mut batch = 0;
                more = false;
                // The codec only fails with stream errors, and it has none without I/O.
                while let Ok(Some(item)) = self.codec.decode(&mut self.incoming) {
                    let state = state.get_or_insert_with(|| self.shared.lock());
                    state.session.handle_message(item);
                    batch += 1;
                    if batch == BATCH.min(state.session.config().event_queue_capacity.max(1)) {
                        more = true;
                        break;
                    }
                }
                let Some(mut state) = state else { break };
                let backed_up = self.shared.deliver(&mut state);
                if state.session.phase() == Phase::Closed {
                    return Incoming::Ended;
                }
                if backed_up {
                    // Buffered frames never make this task wait, so on a one-thread
                    // runtime a burst would fill every queue before a consumer runs.
                    return Incoming::Yield;
                }
            }
            if self.incoming.is_empty() && self.incoming.capacity() > KEEP_READ_CAPACITY {
                self.incoming = BytesMut::new();
            }
            let Some((wake, read_waker)) = &self.read_wake else { return Incoming::Idle };
            if self.read_armed && !wake.fired.swap(false, Ordering::Acquire) {
                // Still registered, and the socket has not woken us: nothing came.
                return Incoming::Idle;
            }
            self.read_armed = false;
            let mut read_cx = Context::from_waker(read_waker);
            let read = crate::socket::with_read_buffer(|scratch| {
                let read = self.transport.poll_read(&mut read_cx, scratch);
                if let Poll::Ready(Ok(count)) = read {
                    self.incoming.extend_from_slice(&scratch[..count]);
                }
                read
            });
            match read {
                Poll::Ready(Ok(0)) => {
                    self.end_of_stream();
                    return Incoming::Ended;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "QMP read failed");
                    let mut state = self.shared.lock();
                    state.session.handle_closed(DisconnectReason::from_io(&error));
                    return Incoming::Ended;
                }
                Poll::Pending => {
                    self.read_armed = true;
                    return Incoming::Idle;
                }
            }
        }
    }

    /// The server closed the connection: what is left in the buffer is decoded, and an
    /// unfinished message makes the reason [`DisconnectReason::Truncated`].
    fn end_of_stream(&mut self) {
        let mut state = self.shared.lock();
        let reason = loop {
            match self.codec.decode_eof(&mut self.incoming) {
                Ok(Some(item)) => state.session.handle_message(item),
                Ok(None) => break DisconnectReason::Eof,
                Err(error) => break DisconnectReason::from_codec(&error),
            }
        };
        state.session.handle_closed(reason);
    }
}

/// Writes what the session has to send until it has nothing more or the socket is
/// full. This is the only place anything is written to the socket.
fn flush(transport: &mut Transport, cx: &mut Context<'_>, state: &mut State) {
    loop {
        let Some(transmit) = state.session.poll_transmit() else {
            if let Poll::Ready(Err(error)) = transport.poll_written(cx) {
                state.session.handle_closed(DisconnectReason::from_io(&error));
            }
            return;
        };
        let has_fds = !transmit.fds.is_empty();
        match transport.poll_write(cx, transmit.bytes, transmit.fds) {
            Poll::Ready(Ok(count)) => state.session.transmitted(count),
            Poll::Ready(Err(error)) if has_fds && !crate::socket::breaks_connection(&error) => {
                tracing::debug!(%error, "descriptors refused; the command was not sent");
                state.session.transmit_failed(Error::FdPassing(Arc::new(error)));
            }
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "QMP write failed");
                state.session.handle_closed(DisconnectReason::from_io(&error));
                return;
            }
            Poll::Pending => return,
        }
    }
}

/// Arms the timer at the session's next deadline; the deadline, once it has passed.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    state: &State,
) -> Option<std::time::Instant> {
    let Some(deadline) = state.session.poll_timeout() else {
        *timer = None;
        return None;
    };
    let at = tokio::time::Instant::from_std(deadline);
    let timer = match timer {
        Some(timer) => {
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(at))),
    };
    timer.as_mut().poll(cx).is_ready().then_some(deadline)
}

/// Any byte stream QMP can run over.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send + ?Sized> ByteStream for T {}

/// The connection's socket, as the driver reads and writes it.
///
/// A unix socket is registered through tokio's `pipe::Receiver` (read interest only) and,
/// while a write would block, `pipe::Sender` (write interest only, on a duplicate
/// descriptor). They are the safe way tokio offers to register an owned descriptor for
/// one direction: `UnixStream` always registers both, and `AsyncFd`'s constructors are
/// `unsafe` since tokio 1.54. Both only wait for readiness and `read(2)`, which on a
/// stream socket is `recv` without flags; every write is a `sendmsg` of our own.
pub(crate) enum Transport {
    /// A unix socket: can pass descriptors.
    Unix {
        socket: pipe::Receiver,
        /// Writability of a duplicate descriptor, registered only while a write would block.
        writable: Option<pipe::Sender>,
    },
    /// Anything else.
    Stream(Pin<Box<dyn ByteStream>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unix { .. } => "Transport::Unix",
            Self::Stream(_) => "Transport::Stream",
        })
    }
}

impl Transport {
    /// A connected unix socket, moved from tokio's read-and-write registration to a
    /// read-only one.
    pub(crate) fn unix(stream: tokio::net::UnixStream) -> io::Result<Self> {
        // Non-blocking, as `into_std` leaves it and the registration needs it.
        let socket = OwnedFd::from(stream.into_std()?);
        Ok(Self::Unix { socket: pipe::Receiver::from_owned_fd_unchecked(socket)?, writable: None })
    }

    pub(crate) fn stream(stream: impl ByteStream + 'static) -> Self {
        Self::Stream(Box::pin(stream))
    }

    fn can_pass_fds(&self) -> bool {
        matches!(self, Self::Unix { .. })
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut read = ReadBuf::new(buf);
        // Both clear the registration's readiness after a short read, which shows the
        // socket was emptied: the next poll waits for the reactor, not a failing `read`.
        ready!(match self {
            Self::Unix { socket, .. } => Pin::new(socket).poll_read(cx, &mut read),
            Self::Stream(stream) => stream.as_mut().poll_read(cx, &mut read),
        })?;
        Poll::Ready(Ok(read.filled().len()))
    }

    /// Writes some of `bytes`, with `fds` attached to the first byte.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        fds: &[OwnedFd],
    ) -> Poll<io::Result<usize>> {
        match self {
            Self::Unix { socket, writable } => loop {
                let attempt = || crate::socket::send(socket.as_fd(), bytes, fds);
                // Through the write registration when there is one, so that a `WouldBlock`
                // clears its readiness.
                let sent = match writable {
                    Some(registration) => registration.try_io(attempt),
                    None => attempt(),
                };
                match sent {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    result => return Poll::Ready(result),
                }
                if writable.is_none() {
                    let duplicate = socket.as_fd().try_clone_to_owned()?;
                    *writable = Some(pipe::Sender::from_owned_fd_unchecked(duplicate)?);
                }
                let Some(registration) = writable else { continue };
                ready!(registration.poll_write_ready(cx))?;
            },
            Self::Stream(_) if !fds.is_empty() => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file descriptors need a unix socket",
            ))),
            Self::Stream(stream) => stream.as_mut().poll_write(cx, bytes),
        }
    }

    /// Everything queued was written: flush a stream; drop the writability registration.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Unix { writable, .. } => {
                *writable = None;
                Poll::Ready(Ok(()))
            }
            Self::Stream(stream) => stream.as_mut().poll_flush(cx),
        }
    }

    /// Ends the connection's byte stream (a unix socket closes when the driver drops it).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Self::Unix { writable, .. } => {
                *writable = None;
                Poll::Ready(())
            }
            Self::Stream(stream) => {
                let _ = ready!(stream.as_mut().poll_shutdown(cx));
                Poll::Ready(())
            }
        }
    }
}
