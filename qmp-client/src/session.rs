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
//! # Replies without an id
//!
//! QEMU answers input it cannot parse (over its nesting or token limits, or not JSON)
//! with an error that has no `id`, and then one more per token left over from that
//! input. Such an error belongs to a command that was *written* (at least one byte) and
//! not yet answered, so it never fails a command still waiting in the queue. The rule:
//!
//! * When exactly one command is written and unanswered (counting commands given up on
//!   after they were sent) and no earlier error without an id may still be echoing, the
//!   error is that command's: it fails with [`Error::Qmp`] carrying QEMU's class and
//!   description, a definite error.
//! * Otherwise it cannot be told whose it is. QEMU answers in-band commands in order, but
//!   the leftovers of an earlier unparsable command come as the same kind of error, and with
//!   `oob` QEMU reads ahead. Every written and unanswered command then fails with
//!   [`Error::Unattributed`] (its outcome is unknown), naming how many it may belong to; a
//!   reply that still comes for one of them is discarded as late.
//! * An earlier error "may still be echoing" until the reply to an in-band command written
//!   after every command it could have belonged to arrives: QEMU has parsed past its
//!   leftovers by then.
//! * During the handshake the error closes the session; on the schema request (see below)
//!   it leaves argument checking off for the connection.
//!
//! Each such error is counted in [`Stats::parse_errors`] (and, having no id, in
//! [`Stats::unmatched_replies`]). The client makes them rare: a command over QEMU's parser
//! limits is refused before it is queued ([`Error::ExceedsParserLimit`]).
//!
//! # Argument checking
//!
//! With [`SessionConfig::check_arguments`], [`Session::start_command`] checks a command's
//! arguments against QEMU's own schema (`query-qmp-schema`) and refuses what QEMU would
//! refuse ([`Error::InvalidArguments`]), before anything is queued. The schema is loaded
//! once per connection, by the first caller that needs it: [`Session::load_schema`] sends
//! `query-qmp-schema` (or, when the server does not list it, decides at once that there is
//! none) and completes every waiter given to it when the reply is in. A server without a
//! usable schema (not listed, an error reply, a reply that does not parse) gets one
//! warning and no checking; what the schema cannot judge (`device_add`'s properties) is
//! sent unchecked, and deprecated or unstable use is logged as a warning.
//!
//! The session never blocks and never panics on anything the server sends.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use qmp_codec::{
    Capability, Command, ErrorReply, Event, Greeting, QmpError, Return, ServerMessage,
};
use qmp_schema::{ProblemKind, Schema, Verdict};
use serde_json::{Map, Value};

use crate::error::{DisconnectReason, Error};
use crate::request::Request;

/// The command that fetches QEMU's schema.
const QUERY_SCHEMA: &str = "query-qmp-schema";

/// `now + after`, or, when that is beyond what an [`Instant`] can hold (a timeout of
/// [`Duration::MAX`]), an instant a century away: every duration a caller passes
/// saturates instead of overflowing.
pub(crate) fn deadline_after(now: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(after)
        .or_else(|| now.checked_add(CENTURY))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

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
    /// Check every command's arguments against QEMU's schema before queueing it (default
    /// `false`); see [Argument checking](self#argument-checking).
    pub check_arguments: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            enable_oob: true,
            handshake_timeout: Duration::from_secs(10),
            default_command_timeout: None,
            event_queue_capacity: 1024,
            max_queued_commands: 256,
            check_arguments: false,
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
    /// Error replies without an id: QEMU could not parse some input. Each failed the
    /// commands it may belong to (see [Replies without an id](self#replies-without-an-id)).
    pub parse_errors: u64,
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

/// Commands the session sends on its own: the handshake's, and the schema request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    Capabilities,
    QueryCommands,
    Schema,
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
        oob: bool,
    },
    Internal(Internal),
}

/// Where the connection's schema is.
#[derive(Debug)]
enum SchemaState<W> {
    /// Nobody asked for it yet.
    Unknown,
    /// `query-qmp-schema` (command `id`) is in flight; `waiters` complete when it is in.
    Loading {
        id: u64,
        waiters: Vec<W>,
    },
    Ready(Arc<Schema>),
    /// The server has none that can be used; arguments go unchecked.
    Unusable,
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
    /// Each command's name and whether it went out-of-band.
    names: FastMap<u64, (String, bool)>,
    order: VecDeque<u64>,
}

impl Abandoned {
    const CAPACITY: usize = 4096;

    fn insert(&mut self, id: u64, name: String, oob: bool) {
        if self.order.len() == Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
        self.order.push_back(id);
        self.names.insert(id, (name, oob));
    }

    fn take(&mut self, id: u64) -> Option<(String, bool)> {
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
    /// Queues a command encoded by `encode`; returns where its bytes start in `bytes`.
    fn push(&mut self, id: u64, encode: impl FnOnce(&mut BytesMut), fds: Vec<OwnedFd>) -> usize {
        let start = self.bytes.len();
        encode(&mut self.bytes);
        let len = self.bytes.len() - start;
        self.with_fds += usize::from(!fds.is_empty());
        self.commands.push_back(Queued { id, len, fds });
        start
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

    /// Whether any byte of command `id` (queued at some point) was written.
    fn is_written(&self, id: u64) -> bool {
        match self.commands.binary_search_by_key(&id, |queued| queued.id) {
            Err(_) => true,
            Ok(0) => self.written > 0,
            Ok(_) => false,
        }
    }

    /// Takes back the command just pushed (nothing was written since).
    fn pop_last(&mut self) {
        if let Some(last) = self.commands.pop_back() {
            self.bytes.truncate(self.bytes.len() - last.len);
            self.with_fds -= usize::from(!last.fds.is_empty());
        }
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
    schema: SchemaState<W>,
    /// After an error without an id: the newest command it could have belonged to. Until
    /// an in-band command newer than that is answered, QEMU may still be sending errors
    /// for the leftovers of the input it could not parse.
    parse_echo_until: Option<u64>,
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
            schema: SchemaState::Unknown,
            parse_echo_until: None,
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

    /// QEMU's schema, once [`Session::load_schema`] fetched a usable one.
    pub fn schema(&self) -> Option<&Arc<Schema>> {
        match &self.schema {
            SchemaState::Ready(schema) => Some(schema),
            _ => None,
        }
    }

    /// Whether the schema is settled: fetched, or known to be unusable (so
    /// [`Session::load_schema`] would not wait).
    pub fn schema_settled(&self) -> bool {
        matches!(self.schema, SchemaState::Ready(_) | SchemaState::Unusable)
    }

    /// Whether commands are to be checked and the schema is not settled yet: a driver then
    /// calls [`Session::load_schema`] and waits before starting a command.
    pub fn needs_schema(&self) -> bool {
        self.config.check_arguments && !self.schema_settled()
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
    /// without `oob`, [`Error::CommandNotSupported`] for a command the server lacks,
    /// [`Error::InvalidArguments`] for arguments the schema refuses (with
    /// [`SessionConfig::check_arguments`] and the schema loaded),
    /// [`Error::ExceedsParserLimit`] for a command QEMU's JSON parser would refuse, and
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
        if self.config.check_arguments {
            self.check_arguments(&request)?;
        }
        self.enqueue_user(request, waiter, now, false)
    }

    /// Makes sure the schema gets loaded, for argument checking or [`Session::schema`]:
    /// `Ok(true)` if `waiter` was registered and completes with `Ok(Value::Null)` once the
    /// schema is settled (then see [`Session::schema`]), `Ok(false)` if it is settled
    /// already (`waiter` is dropped). The first call sends `query-qmp-schema`, unless the
    /// server does not list it; later calls before its reply wait for the same request.
    /// The request has no deadline of its own: a waiter that has one gives up on its own
    /// (the load goes on for the others). Its waiters cannot be [`Session::cancel`]ed.
    ///
    /// # Errors
    /// [`Error::Disconnected`] (or the close error) once closed,
    /// [`Error::InvalidRequest`] before the session is ready.
    pub fn load_schema(&mut self, waiter: W) -> Result<bool, Error> {
        match &mut self.schema {
            SchemaState::Ready(_) | SchemaState::Unusable => return Ok(false),
            SchemaState::Loading { waiters, .. } => {
                waiters.push(waiter);
                return Ok(true);
            }
            SchemaState::Unknown => {}
        }
        self.check_phase()?;
        if !self.commands.contains(QUERY_SCHEMA) {
            self.schema_unusable("the server does not list query-qmp-schema");
            return Ok(false);
        }
        // Outside the queue's limit: it is one command per connection.
        let id = self.send_internal(Internal::Schema, Command::new(QUERY_SCHEMA));
        self.schema = SchemaState::Loading { id, waiters: vec![waiter] };
        Ok(true)
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
        self.enqueue_user(request, waiter, now, true)
    }

    /// Gives up on command `id`: its waiter is returned. If none of its bytes was written
    /// it leaves the queue and is never sent; otherwise its reply, if it ever comes, is
    /// discarded. `None` if it already completed.
    pub fn cancel(&mut self, id: u64) -> Option<W> {
        if !matches!(self.pending.get(&id), Some(Pending::User { .. })) {
            return None;
        }
        let Some(Pending::User { name, waiter, oob, .. }) = self.take_pending(id) else {
            return None;
        };
        if self.outgoing.withdraw(id) {
            self.stats.withdrawn += 1;
            tracing::debug!(command = %name, id, "QMP command withdrawn before it was sent");
        } else {
            self.abandoned.insert(id, name, oob);
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
                Some(Internal::Schema) => Error::Timeout { command: QUERY_SCHEMA.into(), timeout },
            };
            return self.close(error);
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(Pending::User { name, waiter, deadline, oob, .. }) = self.take_pending(id)
            else {
                continue;
            };
            let timeout = deadline.map_or(Duration::ZERO, |(_, t)| t);
            let error = if self.outgoing.withdraw(id) {
                self.stats.withdrawn += 1;
                tracing::warn!(command = %name, id, ?timeout, "QMP command not sent in time; withdrawn");
                Error::NotSent { command: name, timeout }
            } else {
                tracing::warn!(command = %name, id, ?timeout, "QMP command timed out; outcome unknown");
                self.abandoned.insert(id, name.clone(), oob);
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

    /// `Ok` once ready; the close error once closed.
    fn check_phase(&self) -> Result<(), Error> {
        match self.phase {
            Phase::Ready => Ok(()),
            Phase::Closed => Err(self
                .close_error
                .clone()
                .unwrap_or(Error::Disconnected(DisconnectReason::Closed))),
            _ => Err(Error::InvalidRequest("the QMP connection is not negotiated yet".into())),
        }
    }

    fn check_startable(&self, request: &Request) -> Result<(), Error> {
        self.check_phase()?;
        if self.queue_is_full() {
            return Err(Error::QueueFull {
                command: request.name.clone(),
                capacity: self.config.max_queued_commands.max(1),
            });
        }
        Ok(())
    }

    /// Refuses what the schema refuses; see [Argument checking](self#argument-checking).
    fn check_arguments(&self, request: &Request) -> Result<(), Error> {
        let SchemaState::Ready(schema) = &self.schema else { return Ok(()) };
        let report = schema.check_map(&request.name, request.arguments.as_ref());
        for warning in &report.warnings {
            tracing::warn!(command = %request.name, %warning, "QMP command uses what QEMU's schema marks deprecated or unstable");
        }
        match report.verdict {
            Verdict::Invalid(problems)
                if problems.iter().any(|p| p.kind != ProblemKind::UnknownCommand) =>
            {
                Err(Error::invalid_arguments(&request.name, problems))
            }
            Verdict::Invalid(_) => {
                // query-commands lists it: the server's word wins over its schema's.
                tracing::debug!(command = %request.name, "QMP command missing from the schema; sent unchecked");
                Ok(())
            }
            Verdict::NotChecked(unchecked) => {
                tracing::debug!(command = %request.name, %unchecked, "QMP arguments not checked");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn enqueue_user(
        &mut self,
        request: Request,
        waiter: W,
        now: Instant,
        refresh: bool,
    ) -> Result<u64, Error> {
        let id = self.allocate_id();
        let command = Command {
            name: request.name,
            arguments: request.arguments,
            id: Some(Value::from(id)),
            oob: request.oob,
        };
        let encoded = self.outgoing.push(id, |bytes| command.encode(bytes), request.fds);
        if command.arguments.is_some() {
            // Without arguments a command is far below every limit.
            if let Err((limit, found)) = crate::limits::check(&self.outgoing.bytes[encoded..]) {
                self.outgoing.pop_last();
                self.next_id = id;
                return Err(Error::ExceedsParserLimit { command: command.name, limit, found });
            }
        }
        let deadline = request
            .timeout
            .or(self.config.default_command_timeout)
            .map(|timeout| (deadline_after(now, timeout), timeout));
        if let Some((at, _)) = deadline {
            self.deadlines.insert((at, id));
        }
        let Command { name, oob, .. } = command;
        self.pending.insert(id, Pending::User { name, waiter, deadline, refresh, oob });
        self.user_in_flight += 1;
        Ok(id)
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

    fn send_internal(&mut self, which: Internal, command: Command) -> u64 {
        let id = self.allocate_id();
        self.pending.insert(id, Pending::Internal(which));
        let command = command.id(id);
        self.outgoing.push(id, |bytes| command.encode(bytes), Vec::new());
        id
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

    fn handle_reply(&mut self, id: Option<&Value>, result: Result<Value, QmpError>) {
        let Some(id) = id.and_then(Value::as_u64) else {
            self.stats.unmatched_replies += 1;
            match result {
                Err(error) if id.is_none() => self.handle_unattributed_error(&error),
                result => tracing::warn!(?id, ?result, "QMP reply without a usable id ignored"),
            }
            return;
        };
        match self.take_pending(id) {
            Some(Pending::User { name, waiter, refresh, oob, .. }) => {
                if self.parse_echo_until.is_some() {
                    self.answered_in_order(id, oob);
                }
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
            Some(Pending::Internal(which)) => {
                self.answered_in_order(id, false);
                self.handle_internal_reply(which, result);
            }
            None => {
                if let Some((name, oob)) = self.abandoned.take(id) {
                    self.answered_in_order(id, oob);
                    self.stats.late_replies += 1;
                    tracing::debug!(command = %name, id, "late reply to an abandoned QMP command discarded");
                } else {
                    self.stats.unmatched_replies += 1;
                    tracing::warn!(id, ?result, "QMP reply with an unknown id ignored");
                }
            }
        }
    }

    /// Command `id` was answered: if it went in-band and was written after every command
    /// an earlier error without an id could have belonged to, that error's leftovers are
    /// over (QEMU answers in-band input in order).
    fn answered_in_order(&mut self, id: u64, oob: bool) {
        if !oob && self.parse_echo_until.is_some_and(|newest| id > newest) {
            self.parse_echo_until = None;
        }
    }

    /// An error reply without an id; see [Replies without an id](self#replies-without-an-id).
    fn handle_unattributed_error(&mut self, error: &QmpError) {
        self.stats.parse_errors += 1;
        let mut candidates: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|&id| self.outgoing.is_written(id))
            .chain(self.abandoned.names.keys().copied())
            .collect();
        candidates.sort_unstable();
        let echoing = self.parse_echo_until.is_some();
        if let Some(&newest) = candidates.last() {
            self.parse_echo_until = Some(self.parse_echo_until.map_or(newest, |n| n.max(newest)));
        }
        let among = candidates.len() + usize::from(echoing);
        tracing::warn!(
            class = %error.class, desc = %error.desc, among,
            "QMP error without an id: QEMU could not parse some of its input"
        );
        if candidates.iter().any(|id| {
            matches!(
                self.pending.get(id),
                Some(Pending::Internal(Internal::Capabilities | Internal::QueryCommands))
            )
        }) {
            return self.close(Error::Protocol(format!(
                "QEMU could not parse the handshake: {}: {}",
                error.class, error.desc
            )));
        }
        let definite = among == 1;
        for id in candidates {
            match self.take_pending(id) {
                Some(Pending::User { name, waiter, oob, .. }) => {
                    let result = if definite {
                        Err(Error::Qmp {
                            command: name,
                            class: error.class.clone(),
                            desc: error.desc.clone(),
                        })
                    } else {
                        self.abandoned.insert(id, name.clone(), oob);
                        Err(Error::Unattributed {
                            command: name,
                            class: error.class.clone(),
                            desc: error.desc.clone(),
                            among,
                        })
                    };
                    self.completions.push_back(Completion { id, waiter, result });
                }
                Some(Pending::Internal(_)) => {
                    if !definite {
                        self.abandoned.insert(id, QUERY_SCHEMA.into(), false);
                    }
                    self.schema_unusable(&format!(
                        "query-qmp-schema may have been refused: {}: {}",
                        error.class, error.desc
                    ));
                }
                None if definite => {
                    // The one candidate was given up on already: this was its answer.
                    self.abandoned.take(id);
                    self.stats.late_replies += 1;
                }
                None => {}
            }
        }
    }

    /// There is no usable schema on this connection: say so once, and let the commands
    /// waiting for it go on unchecked.
    fn schema_unusable(&mut self, why: &str) {
        tracing::warn!(
            reason = why,
            "QEMU's schema is unusable: QMP arguments go unchecked on this connection"
        );
        self.settle_schema(SchemaState::Unusable);
    }

    /// The schema is settled: completes every waiter.
    fn settle_schema(&mut self, settled: SchemaState<W>) {
        if let SchemaState::Loading { id, waiters } = std::mem::replace(&mut self.schema, settled) {
            for waiter in waiters {
                self.completions.push_back(Completion { id, waiter, result: Ok(Value::Null) });
            }
        }
    }

    fn handle_internal_reply(&mut self, which: Internal, result: Result<Value, QmpError>) {
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
            (Internal::Schema, Ok(value)) => match Schema::from_value(&value) {
                Ok(schema) => {
                    tracing::debug!("QEMU's schema loaded");
                    self.settle_schema(SchemaState::Ready(Arc::new(schema)));
                }
                Err(error) => self.schema_unusable(&format!("its reply does not parse: {error}")),
            },
            (Internal::Schema, Err(error)) => {
                self.schema_unusable(&format!("query-qmp-schema failed: {error}"));
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
            Some(Pending::Internal(Internal::Schema)) => {
                self.schema_unusable(&format!("its reply is unreadable: {frame_error}"));
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
        if let SchemaState::Loading { id, waiters } =
            std::mem::replace(&mut self.schema, SchemaState::Unknown)
        {
            for waiter in waiters {
                let result = Err(Error::Disconnected(reason.clone()));
                self.completions.push_back(Completion { id, waiter, result });
            }
        }
        self.close_error = Some(error);
    }
}

/// The command names in a `query-commands` return value.
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
