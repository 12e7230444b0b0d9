//! The QMP protocol state machine, with no I/O and no clock.
//!
//! [`Session`] holds everything about one QMP connection that is protocol rather than
//! transport: the greeting and capability negotiation, command ids, the bytes to send, the
//! commands in flight and their deadlines, the command-capability cache and a bounded
//! event queue. The tokio [`Client`](crate::Client) and the
//! [`blocking::Client`](crate::blocking::Client) are thin drivers over it; anyone with
//! another event loop can drive it too.
//!
//! # Driving contract
//!
//! * **Inputs.** Feed every decoded item from the server to [`Session::handle_message`]
//!   (frame errors included: they are counted and, when they carry a command's id, fail
//!   that command), call [`Session::handle_timeout`] when the instant from
//!   [`Session::poll_timeout`] has passed, and [`Session::handle_closed`] when the
//!   transport ends. Report every write with [`Session::transmitted`], and a refused
//!   descriptor send with [`Session::transmit_failed`].
//! * **Commands.** [`Session::start_command`] and [`Session::refresh_commands`] encode a
//!   command into the session's outgoing queue; a caller that gives up on one calls
//!   [`Session::cancel`]. The queue holds at most
//!   [`SessionConfig::max_queued_commands`] commands not yet written.
//! * **Outputs.** After each input drain, in this order: [`Session::poll_transmit`] (the
//!   bytes to write, with the descriptors that go with them: write, then report how much
//!   went with [`Session::transmitted`], until it returns `None` or the transport would
//!   block), [`Session::poll_completion`] (finished commands: wake their waiters),
//!   [`Session::poll_event`] (events and lag markers: deliver them), and re-read
//!   [`Session::poll_timeout`]. Only the inputs and the command calls change them.
//! * **Time** is passed in as an [`Instant`] wherever it matters, so tests use fake time.
//!
//! # What a command's bytes mean for its fate
//!
//! A command is *sent* once any of its bytes was reported written. Until then it can be
//! withdrawn: cancelled or timed out, it leaves the queue and the server never sees it
//! ([`Error::NotSent`] for a timeout). Once sent, only its reply (or its deadline, or the
//! end of the connection) finishes it, and a reply after it was given up on is discarded.
//! A command with descriptors is always the only one in its [`Transmit`], so the
//! descriptors go with its own first byte and nothing else is written in between.
//!
//! The session never blocks and never panics on anything the server sends.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use qmp_codec::{Capability, Command, ErrorReply, Event, Greeting, Return, ServerMessage};
use serde_json::{Map, Value};

use crate::error::{DisconnectReason, Error};
use crate::request::Request;

/// How a session negotiates and buffers.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Enable the `oob` capability when the server offers it (default `true`). With it QEMU
    /// reads ahead and queues requests, which roughly doubles pipelined throughput, and
    /// `exec-oob` becomes available.
    pub enable_oob: bool,
    /// Time allowed from the start until the session is ready: greeting, negotiation and
    /// the `query-commands` that fills the capability cache (default 10 s).
    pub handshake_timeout: Duration,
    /// Timeout for commands that do not set their own (default: none, since commands such
    /// as a VFIO `device_add` can legitimately take long).
    pub default_command_timeout: Option<Duration>,
    /// Events kept when nobody drains them; the oldest are dropped beyond this and
    /// reported as [`EventItem::Lagged`] (default 1024).
    pub event_queue_capacity: usize,
    /// Commands that may wait in the outgoing queue, not yet written, because the server
    /// stopped reading its socket (default 256). Beyond it
    /// [`Session::start_command`] fails with [`Error::QueueFull`]; the async client waits
    /// for room instead. A written command no longer counts.
    pub max_queued_commands: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            enable_oob: true,
            handshake_timeout: Duration::from_secs(10),
            default_command_timeout: None,
            event_queue_capacity: 1024,
            max_queued_commands: 256,
        }
    }
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for the server's greeting.
    AwaitingGreeting,
    /// `qmp_capabilities` sent, waiting for its reply.
    Negotiating,
    /// `query-commands` sent to fill the capability cache.
    LoadingCommands,
    /// Commands can be started.
    Ready,
    /// The connection is over; see [`Session::close_error`].
    Closed,
}

/// A finished command, handed back with the waiter given to [`Session::start_command`].
#[derive(Debug)]
pub struct Completion<W> {
    /// The id the command was given.
    pub id: u64,
    /// The caller's waiter.
    pub waiter: W,
    /// The `return` value, or why there is none.
    pub result: Result<Value, Error>,
}

/// What an event consumer receives.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventItem {
    /// An event.
    Event(Event),
    /// This many events (matching the consumer's filter) were dropped here because the
    /// consumer fell behind; the ones before and after are intact.
    Lagged(u64),
    /// The connection was lost and re-established here: events the server emitted in
    /// between were never seen.
    Gap(DisconnectReason),
}

/// Counters of things that went wrong without failing the connection; all only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Replies whose id matched no command ever sent, or that carried no id.
    pub unmatched_replies: u64,
    /// Replies that came after their command timed out or was cancelled (discarded).
    pub late_replies: u64,
    /// Lines the codec could not turn into a message (too long, not JSON, unknown shape).
    pub bad_frames: u64,
    /// Events received.
    pub events: u64,
    /// Events dropped from the session's own queue because nobody drained it.
    pub events_dropped: u64,
    /// Messages that made no sense where they came (a second greeting, ...).
    pub unexpected_messages: u64,
    /// Commands cancelled or timed out before any of their bytes was written: they left
    /// the queue and were never sent.
    pub withdrawn: u64,
}

/// What to write next: the front of the outgoing queue.
///
/// Write `bytes` (with `fds` attached to the first byte, as `SCM_RIGHTS`, when there are
/// any), then report how many bytes went with [`Session::transmitted`]. `bytes` is one or
/// more whole commands, the first of them possibly partly written already; when `fds` is
/// not empty it is exactly the one command they belong to.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// The bytes to write.
    pub bytes: &'a [u8],
    /// Descriptors to send with the first byte of `bytes`; usually none.
    pub fds: &'a [OwnedFd],
}

/// Commands the session sends on its own during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    Capabilities,
    QueryCommands,
}

#[derive(Debug)]
enum Pending<W> {
    /// A caller's command; `refresh` marks the `query-commands` of
    /// [`Session::refresh_commands`], whose reply replaces the capability cache.
    User {
        name: String,
        waiter: W,
        deadline: Option<(Instant, Duration)>,
        refresh: bool,
    },
    Internal(Internal),
}

/// A hasher for the session's own small keys: command ids (sequential `u64`s, spread by
/// one multiplication) and command names (short ASCII, FNV-1a). The keys come from this
/// process or from the server's short list of names, so `SipHash`'s flooding resistance
/// buys nothing here and costs a few hundred instructions per command.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const FNV_PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        self.0 = hash;
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the high bits hashbrown uses as tags get every bit of `id`.
        self.0 = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<KeyHasher>>;

/// Ids of commands given up on (timed out or cancelled) after they were sent, so their
/// late replies are told apart from replies nobody asked for. Bounded: the oldest are
/// forgotten first.
#[derive(Debug, Default)]
struct Abandoned {
    names: FastMap<u64, String>,
    order: VecDeque<u64>,
}

impl Abandoned {
    const CAPACITY: usize = 4096;

    fn insert(&mut self, id: u64, name: String) {
        if self.order.len() == Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
        self.order.push_back(id);
        self.names.insert(id, name);
    }

    fn take(&mut self, id: u64) -> Option<String> {
        // The id stays in `order` until it ages out; `names` is the truth.
        self.names.remove(&id)
    }
}

/// One command waiting in the outgoing queue.
#[derive(Debug)]
struct Queued {
    id: u64,
    /// Its encoded length in [`Outgoing::bytes`].
    len: usize,
    /// Descriptors to send with its first byte; emptied once that byte went.
    fds: Vec<OwnedFd>,
}

/// Commands encoded but not yet (completely) written, in order.
#[derive(Debug, Default)]
struct Outgoing {
    /// The unwritten bytes of every queued command, back to back.
    bytes: BytesMut,
    /// One entry per queued command, in id order (ids only grow).
    commands: VecDeque<Queued>,
    /// How much of the front command was written already.
    written: usize,
    /// Queued commands whose descriptors have not gone yet.
    with_fds: usize,
}

impl Outgoing {
    fn push(&mut self, id: u64, encode: impl FnOnce(&mut BytesMut), fds: Vec<OwnedFd>) {
        let start = self.bytes.len();
        encode(&mut self.bytes);
        let len = self.bytes.len() - start;
        self.with_fds += usize::from(!fds.is_empty());
        self.commands.push_back(Queued { id, len, fds });
    }

    fn next(&self) -> Option<Transmit<'_>> {
        let front = self.commands.front()?;
        if !front.fds.is_empty() {
            // Descriptors never share a write with another command's bytes.
            return Some(Transmit { bytes: &self.bytes[..front.len], fds: &front.fds });
        }
        let mut end = self.bytes.len();
        if self.with_fds > 0 {
            end = front.len - self.written;
            for queued in self.commands.iter().skip(1) {
                if !queued.fds.is_empty() {
                    break;
                }
                end += queued.len;
            }
        }
        Some(Transmit { bytes: &self.bytes[..end], fds: &[] })
    }

    fn written(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let count = count.min(self.bytes.len());
        self.bytes.advance(count);
        if let Some(front) = self.commands.front_mut() {
            if !front.fds.is_empty() {
                // They went with this write's first byte, which is the front command's.
                front.fds.clear();
                self.with_fds -= 1;
            }
        }
        let mut done = self.written + count;
        while let Some(front) = self.commands.front() {
            if done < front.len {
                break;
            }
            done -= front.len;
            self.commands.pop_front();
        }
        self.written = done;
    }

    /// Removes command `id` if none of its bytes was written yet; `true` if it was.
    fn withdraw(&mut self, id: u64) -> bool {
        let Ok(index) = self.commands.binary_search_by_key(&id, |queued| queued.id) else {
            return false;
        };
        if index == 0 && self.written > 0 {
            return false;
        }
        let before: usize = self.commands.iter().take(index).map(|queued| queued.len).sum();
        let offset = before - self.written;
        let Some(queued) = self.commands.remove(index) else { return false };
        let mut tail = self.bytes.split_off(offset);
        tail.advance(queued.len);
        self.bytes.unsplit(tail);
        self.with_fds -= usize::from(!queued.fds.is_empty());
        true
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The protocol state of one QMP connection. See the [module docs](self) for how to drive it.
#[derive(Debug)]
pub struct Session<W> {
    config: SessionConfig,
    phase: Phase,
    close_error: Option<Error>,
    handshake_deadline: Instant,
    greeting: Option<Greeting>,
    oob_enabled: bool,
    commands: FastSet<String>,
    next_id: u64,
    pending: FastMap<u64, Pending<W>>,
    /// Caller commands in `pending` (the rest are the handshake's).
    user_in_flight: usize,
    deadlines: BTreeSet<(Instant, u64)>,
    abandoned: Abandoned,
    outgoing: Outgoing,
    completions: VecDeque<Completion<W>>,
    events: VecDeque<Event>,
    events_missed: u64,
    stats: Stats,
}

impl<W> Session<W> {
    /// A session whose transport has just connected at `now`; it waits for the greeting.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        Self {
            handshake_deadline: deadline_after(now, config.handshake_timeout),
            config,
            phase: Phase::AwaitingGreeting,
            close_error: None,
            greeting: None,
            oob_enabled: false,
            commands: FastSet::default(),
            next_id: 0,
            pending: FastMap::default(),
            user_in_flight: 0,
            deadlines: BTreeSet::new(),
            abandoned: Abandoned::default(),
            outgoing: Outgoing::default(),
            completions: VecDeque::new(),
            events: VecDeque::new(),
            events_missed: 0,
            stats: Stats::default(),
        }
    }

    // ---- getters ----

    /// The configuration it was made with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Why the session closed, once it has.
    pub fn close_error(&self) -> Option<&Error> {
        self.close_error.as_ref()
    }

    /// The server's greeting, once received.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Whether `oob` was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.oob_enabled
    }

    /// Whether the server has `command`, per the last `query-commands`.
    pub fn supports(&self, command: &str) -> bool {
        self.commands.contains(command)
    }

    /// The server's commands, per the last `query-commands`, sorted.
    pub fn commands(&self) -> Vec<String> {
        let mut commands: Vec<String> = self.commands.iter().cloned().collect();
        commands.sort_unstable();
        commands
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Caller commands started and not yet answered, timed out or cancelled.
    pub fn in_flight(&self) -> usize {
        self.user_in_flight
    }

    /// Commands in the outgoing queue: not yet (completely) written.
    pub fn queued(&self) -> usize {
        self.outgoing.commands.len()
    }

    /// Whether `request` gets a reply deadline (its own timeout, or the default).
    pub fn deadline_applies(&self, request: &Request) -> bool {
        request.timeout.or(self.config.default_command_timeout).is_some()
    }

    /// Whether the outgoing queue is full, so [`Session::start_command`] would fail with
    /// [`Error::QueueFull`].
    pub fn queue_is_full(&self) -> bool {
        self.queued() >= self.config.max_queued_commands.max(1)
    }

    // ---- commands ----

    /// Registers `request`, encodes it into the outgoing queue and returns its id. Its
    /// reply (or its deadline, or the end of the connection) will produce a [`Completion`]
    /// carrying `waiter`; until the first of its bytes is written, [`Session::cancel`]
    /// withdraws it unsent.
    ///
    /// `now` places the command's deadline; a driver can skip reading the clock for a
    /// command without one (see [`Session::deadline_applies`]) and pass any instant.
    ///
    /// # Errors
    /// Before anything is registered: [`Error::Disconnected`] (or the close error) once
    /// closed, [`Error::InvalidRequest`] before the session is ready or for `exec-oob`
    /// without `oob`, [`Error::CommandNotSupported`] for a command the server lacks, and
    /// [`Error::QueueFull`] when [`SessionConfig::max_queued_commands`] are waiting.
    pub fn start_command(
        &mut self,
        request: Request,
        waiter: W,
        now: Instant,
    ) -> Result<u64, Error> {
        self.check_startable(&request)?;
        if !self.commands.contains(&request.name) {
            return Err(Error::CommandNotSupported { command: request.name });
        }
        if request.oob && !self.oob_enabled {
            return Err(Error::InvalidRequest(format!(
                "exec-oob of '{}' needs the 'oob' capability, which was not negotiated",
                request.name
            )));
        }
        Ok(self.enqueue_user(request, waiter, now, false))
    }

    /// Fetches `query-commands` again: when its reply comes the capability cache is
    /// replaced and `waiter` completes with `Ok(Value::Null)`. Returns the command's id.
    ///
    /// # Errors
    /// As [`Session::start_command`]; a reply that is not a command list completes
    /// `waiter` with [`Error::Protocol`] and leaves the cache as it was.
    pub fn refresh_commands(&mut self, waiter: W, now: Instant) -> Result<u64, Error> {
        let request = Request::new("query-commands");
        self.check_startable(&request)?;
        Ok(self.enqueue_user(request, waiter, now, true))
    }

    /// Gives up on command `id`: its waiter is returned. If none of its bytes was written
    /// it leaves the queue and is never sent; otherwise its reply, if it ever comes, is
    /// discarded. `None` if it already completed.
    pub fn cancel(&mut self, id: u64) -> Option<W> {
        if !matches!(self.pending.get(&id), Some(Pending::User { .. })) {
            return None;
        }
        let Some(Pending::User { name, waiter, .. }) = self.take_pending(id) else {
            return None;
        };
        if self.outgoing.withdraw(id) {
            self.stats.withdrawn += 1;
            tracing::debug!(command = %name, id, "QMP command withdrawn before it was sent");
        } else {
            self.abandoned.insert(id, name);
        }
        Some(waiter)
    }

    // ---- inputs ----

    /// Handles one decoded item from the server: a message, or a codec frame error.
    pub fn handle_message(&mut self, item: Result<ServerMessage, qmp_codec::Error>) {
        if self.phase == Phase::Closed {
            return;
        }
        let message = match item {
            Ok(message) => message,
            Err(frame_error) => return self.handle_bad_frame(&frame_error),
        };
        match message {
            ServerMessage::Greeting(greeting) => self.handle_greeting(greeting),
            _ if self.phase == Phase::AwaitingGreeting => {
                self.close(Error::Protocol(format!(
                    "expected the QMP greeting, got {}",
                    message.to_value()
                )));
            }
            ServerMessage::Return(Return { value, id }) => {
                self.handle_reply(id.as_ref(), Ok(value));
            }
            ServerMessage::Error(ErrorReply { error, id }) => {
                self.handle_reply(id.as_ref(), Err(error));
            }
            ServerMessage::Event(event) => self.push_event(event),
            other => {
                self.stats.unexpected_messages += 1;
                tracing::warn!(message = %other.to_value(), "unexpected QMP message ignored");
            }
        }
    }

    /// Expires whatever deadline has passed at `now`: the handshake, or commands. A sent
    /// command completes with [`Error::Timeout`]; one still waiting to be written is
    /// withdrawn and completes with [`Error::NotSent`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase != Phase::Ready && now >= self.handshake_deadline {
            let timeout = self.config.handshake_timeout;
            let error = match self.internal_in_flight() {
                None => Error::GreetingTimeout(timeout),
                Some(Internal::Capabilities) => {
                    Error::Timeout { command: "qmp_capabilities".into(), timeout }
                }
                Some(Internal::QueryCommands) => {
                    Error::Timeout { command: "query-commands".into(), timeout }
                }
            };
            return self.close(error);
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(Pending::User { name, waiter, deadline, .. }) = self.take_pending(id) else {
                continue;
            };
            let timeout = deadline.map_or(Duration::ZERO, |(_, t)| t);
            let error = if self.outgoing.withdraw(id) {
                self.stats.withdrawn += 1;
                tracing::warn!(command = %name, id, ?timeout, "QMP command not sent in time; withdrawn");
                Error::NotSent { command: name, timeout }
            } else {
                tracing::warn!(command = %name, id, ?timeout, "QMP command timed out; outcome unknown");
                self.abandoned.insert(id, name.clone());
                Error::Timeout { command: name, timeout }
            };
            self.completions.push_back(Completion { id, waiter, result: Err(error) });
        }
    }

    /// The transport ended. Every command in flight completes with
    /// [`Error::Disconnected`]; later calls fail the same way.
    pub fn handle_closed(&mut self, reason: DisconnectReason) {
        self.close(Error::Disconnected(reason));
    }

    /// `count` bytes of the last [`Transmit`] were written (with its descriptors, if it had
    /// any and `count` is not zero).
    pub fn transmitted(&mut self, count: usize) {
        self.outgoing.written(count);
    }

    /// The transport refused the last [`Transmit`], which carried descriptors, without
    /// writing any of it, for a reason that leaves the connection usable (such as
    /// `ETOOMANYREFS`): its command completes with `error` and is never sent.
    pub fn transmit_failed(&mut self, error: Error) {
        let Some(front) = self.outgoing.commands.front() else { return };
        let id = front.id;
        match self.take_pending(id) {
            Some(Pending::User { waiter, .. }) => {
                self.outgoing.withdraw(id);
                self.completions.push_back(Completion { id, waiter, result: Err(error) });
            }
            Some(internal @ Pending::Internal(_)) => {
                // Only caller commands carry descriptors; never drop the handshake.
                self.pending.insert(id, internal);
            }
            None => {}
        }
    }

    // ---- outputs ----

    /// What to write next, if anything; see [`Transmit`].
    #[must_use]
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        self.outgoing.next()
    }

    /// A finished command.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<Completion<W>> {
        self.completions.pop_front()
    }

    /// The next event, or a marker of events dropped because nobody drained the queue.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EventItem> {
        if self.events_missed > 0 {
            return Some(EventItem::Lagged(std::mem::take(&mut self.events_missed)));
        }
        self.events.pop_front().map(EventItem::Event)
    }

    /// Like [`Session::poll_event`], but takes the first queued event that passes `wanted`
    /// and leaves the others queued, for a consumer waiting for one kind of event.
    #[must_use]
    pub fn poll_event_matching(&mut self, wanted: impl Fn(&Event) -> bool) -> Option<EventItem> {
        if self.events_missed > 0 {
            return Some(EventItem::Lagged(std::mem::take(&mut self.events_missed)));
        }
        let at = self.events.iter().position(wanted)?;
        self.events.remove(at).map(EventItem::Event)
    }

    /// When [`Session::handle_timeout`] must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Ready => self.deadlines.first().map(|&(at, _)| at),
            _ => Some(self.handshake_deadline),
        }
    }

    // ---- internals ----

    fn check_startable(&self, request: &Request) -> Result<(), Error> {
        match self.phase {
            Phase::Ready => {}
            Phase::Closed => {
                return Err(self
                    .close_error
                    .clone()
                    .unwrap_or(Error::Disconnected(DisconnectReason::Closed)));
            }
            _ => {
                return Err(Error::InvalidRequest(
                    "the QMP connection is not negotiated yet".into(),
                ));
            }
        }
        if self.queue_is_full() {
            return Err(Error::QueueFull {
                command: request.name.clone(),
                capacity: self.config.max_queued_commands.max(1),
            });
        }
        Ok(())
    }

    fn enqueue_user(&mut self, request: Request, waiter: W, now: Instant, refresh: bool) -> u64 {
        let id = self.allocate_id();
        let deadline = request
            .timeout
            .or(self.config.default_command_timeout)
            .map(|timeout| (deadline_after(now, timeout), timeout));
        if let Some((at, _)) = deadline {
            self.deadlines.insert((at, id));
        }
        let command = Command {
            name: request.name,
            arguments: request.arguments,
            id: Some(Value::from(id)),
            oob: request.oob,
        };
        self.outgoing.push(id, |bytes| command.encode(bytes), request.fds);
        let name = command.name;
        self.pending.insert(id, Pending::User { name, waiter, deadline, refresh });
        self.user_in_flight += 1;
        id
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Removes command `id` from the commands in flight, with its deadline.
    fn take_pending(&mut self, id: u64) -> Option<Pending<W>> {
        let pending = self.pending.remove(&id)?;
        if let Pending::User { deadline, .. } = &pending {
            self.user_in_flight -= 1;
            if let Some((at, _)) = deadline {
                self.deadlines.remove(&(*at, id));
            }
        }
        Some(pending)
    }

    fn internal_in_flight(&self) -> Option<Internal> {
        self.pending.values().find_map(|p| match p {
            Pending::Internal(internal) => Some(*internal),
            Pending::User { .. } => None,
        })
    }

    fn send_internal(&mut self, which: Internal, command: Command) {
        let id = self.allocate_id();
        self.pending.insert(id, Pending::Internal(which));
        let command = command.id(id);
        self.outgoing.push(id, |bytes| command.encode(bytes), Vec::new());
    }

    fn handle_greeting(&mut self, greeting: Greeting) {
        if self.phase != Phase::AwaitingGreeting {
            self.stats.unexpected_messages += 1;
            tracing::warn!("second QMP greeting ignored");
            return;
        }
        let oob = self.config.enable_oob && greeting.capabilities.contains(&Capability::Oob);
        tracing::debug!(version = %greeting.version.qemu, oob, "QMP greeting");
        self.greeting = Some(greeting);
        self.oob_enabled = oob;
        let mut command = Command::new("qmp_capabilities");
        if oob {
            let mut arguments = Map::new();
            arguments.insert("enable".into(), Value::from(vec![Capability::Oob.as_str()]));
            command = command.arguments(arguments);
        }
        self.send_internal(Internal::Capabilities, command);
        self.phase = Phase::Negotiating;
    }

    fn handle_reply(&mut self, id: Option<&Value>, result: Result<Value, qmp_codec::QmpError>) {
        let Some(id) = id.and_then(Value::as_u64) else {
            self.stats.unmatched_replies += 1;
            tracing::warn!(?id, ?result, "QMP reply without a usable id ignored");
            return;
        };
        match self.take_pending(id) {
            Some(Pending::User { name, waiter, refresh, .. }) => {
                let result = match result {
                    Ok(value) if refresh => parse_command_list(&value).map(|commands| {
                        self.commands = commands;
                        Value::Null
                    }),
                    Ok(value) => Ok(value),
                    Err(e) => Err(Error::Qmp { command: name, class: e.class, desc: e.desc }),
                };
                self.completions.push_back(Completion { id, waiter, result });
            }
            Some(Pending::Internal(which)) => self.handle_internal_reply(which, result),
            None => {
                if let Some(name) = self.abandoned.take(id) {
                    self.stats.late_replies += 1;
                    tracing::debug!(command = %name, id, "late reply to an abandoned QMP command discarded");
                } else {
                    self.stats.unmatched_replies += 1;
                    tracing::warn!(id, ?result, "QMP reply with an unknown id ignored");
                }
            }
        }
    }

    fn handle_internal_reply(
        &mut self,
        which: Internal,
        result: Result<Value, qmp_codec::QmpError>,
    ) {
        match (which, result) {
            (Internal::Capabilities, Ok(_)) => {
                self.send_internal(Internal::QueryCommands, Command::new("query-commands"));
                self.phase = Phase::LoadingCommands;
            }
            (Internal::QueryCommands, Ok(value)) => match parse_command_list(&value) {
                Ok(commands) => {
                    self.commands = commands;
                    self.phase = Phase::Ready;
                }
                Err(error) => self.close(error),
            },
            (Internal::Capabilities, Err(error)) => {
                self.close(Error::Protocol(format!("qmp_capabilities was refused: {error}")));
            }
            (Internal::QueryCommands, Err(error)) => {
                self.close(Error::Protocol(format!("query-commands failed: {error}")));
            }
        }
    }

    fn handle_bad_frame(&mut self, frame_error: &qmp_codec::Error) {
        self.stats.bad_frames += 1;
        tracing::warn!(error = %frame_error, "unreadable QMP message");
        if self.phase == Phase::AwaitingGreeting {
            return self.close(Error::Protocol(format!("unreadable greeting: {frame_error}")));
        }
        // If the bad line still shows which command it answered, fail that command now
        // rather than leave it waiting for a reply that has already come and gone.
        let Some(id) = recover_id(frame_error) else { return };
        match self.take_pending(id) {
            Some(Pending::User { name, waiter, .. }) => {
                let result =
                    Err(Error::BadReply { command: name, reason: frame_error.to_string() });
                self.completions.push_back(Completion { id, waiter, result });
            }
            Some(Pending::Internal(_)) => {
                self.close(Error::Protocol(format!(
                    "unreadable reply during negotiation: {frame_error}"
                )));
            }
            None => {}
        }
    }

    fn push_event(&mut self, event: Event) {
        self.stats.events += 1;
        if self.events.len() >= self.config.event_queue_capacity.max(1) {
            self.events.pop_front();
            self.events_missed += 1;
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn close(&mut self, error: Error) {
        if self.phase == Phase::Closed {
            return;
        }
        tracing::debug!(%error, "QMP session closed");
        self.phase = Phase::Closed;
        let reason = error.disconnect_reason();
        self.deadlines.clear();
        self.outgoing.clear();
        self.user_in_flight = 0;
        for (id, pending) in self.pending.drain() {
            if let Pending::User { waiter, .. } = pending {
                let result = Err(Error::Disconnected(reason.clone()));
                self.completions.push_back(Completion { id, waiter, result });
            }
        }
        self.close_error = Some(error);
    }
}

/// The command names in a `query-commands` return value.
/// The instant `timeout` after `now`; a timeout past what the clock can hold
/// (`Duration::MAX`) means about 30 years from now instead of a panic.
pub(crate) fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);
    now.checked_add(timeout).unwrap_or_else(|| now + FAR_FUTURE)
}

fn parse_command_list(value: &Value) -> Result<FastSet<String>, Error> {
    let invalid =
        || Error::Protocol(format!("query-commands returned an unexpected value: {value}"));
    value
        .as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|entry| {
            entry.get("name").and_then(Value::as_str).map(str::to_owned).ok_or_else(invalid)
        })
        .collect()
}

/// The numeric `"id"` of a reply that could not be decoded, when enough of it survives.
fn recover_id(frame_error: &qmp_codec::Error) -> Option<u64> {
    match frame_error {
        qmp_codec::Error::UnknownShape { object, .. } => object.get("id").and_then(Value::as_u64),
        qmp_codec::Error::FrameTooLong { head, tail, .. } => {
            find_id(tail).or_else(|| find_id(head))
        }
        qmp_codec::Error::InvalidJson { line, .. } | qmp_codec::Error::InvalidUtf8 { line, .. } => {
            find_id(line)
        }
        _ => None,
    }
}

/// Finds `"id": <digits>` in raw bytes (QEMU writes it last in replies, first in errors);
/// the last occurrence wins, as a reply's own id follows anything quoted in its payload.
fn find_id(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":";
    let start = bytes.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits: String = bytes[start..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
