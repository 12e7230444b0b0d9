//! Typed QMP messages: what the server sends ([`ServerMessage`]) and what a client sends
//! ([`Command`]). Plain serde types with no I/O.
//!
//! Parsing is one pass straight into the typed form (no intermediate `Value` tree for the
//! envelope), so it costs about what `serde_json::from_slice::<Value>` costs. Anything the
//! types do not recognise is kept whole in [`Error::UnknownShape`] or [`Error::NotAnObject`].

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;

/// A message from a QMP server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// The greeting sent once on connect: `{"QMP": {...}}`.
    Greeting(Greeting),
    /// A successful command reply: `{"return": ..., "id": ...}`.
    Return(Return),
    /// A failed command reply: `{"error": {"class": ..., "desc": ...}, "id": ...}`.
    Error(ErrorReply),
    /// An asynchronous event: `{"event": ..., "data": ..., "timestamp": ...}`.
    Event(Event),
}

impl ServerMessage {
    /// Parses one message (without its line terminator).
    ///
    /// Top-level members other than the ones QMP defines are ignored, as the QMP
    /// specification asks of clients for forward compatibility.
    ///
    /// # Errors
    /// A frame error ([`Error::is_frame_error`]) describing what was wrong, holding what was
    /// received.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_line(bytes)
    }

    /// The `id` of a command reply, if this is one and it carries an id.
    pub fn id(&self) -> Option<&Value> {
        match self {
            Self::Return(r) => r.id.as_ref(),
            Self::Error(e) => e.id.as_ref(),
            Self::Greeting(_) | Self::Event(_) => None,
        }
    }

    /// The message as a JSON value, exactly as it would be sent.
    ///
    /// # Panics
    /// Never: serialising to a `Value` fails only for maps with non-string keys, and every
    /// map in a message is keyed by strings.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("QMP messages always serialise")
    }
}

/// The server greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// Server version.
    pub version: VersionInfo,
    /// Capabilities the server offers for negotiation (`oob` on QEMU unix monitors).
    pub capabilities: Vec<Capability>,
}

/// `version` member of the greeting (and the return value of `query-version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The upstream version triple.
    pub qemu: QemuVersion,
    /// Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`.
    pub package: String,
}

/// QEMU's version triple. Ordered, so `version >= QemuVersion::new(7, 2, 0)` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QemuVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro version.
    pub micro: u32,
}

impl QemuVersion {
    /// A version triple.
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        Self { major, minor, micro }
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Defines an open set of wire strings: known names get variants, anything else is kept
/// in `Other` so a newer server never breaks deserialisation.
macro_rules! open_string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version of qmp-codec does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The string used on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )*
                    Self::Other(other) => other,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $wire => Self::$variant, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;
                impl Visitor<'_> for StrVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::from(v))
                    }
                }
                deserializer.deserialize_str(StrVisitor)
            }
        }
    };
}

open_string_enum! {
    /// A capability offered in the greeting and enabled by `qmp_capabilities`.
    pub enum Capability {
        /// Out-of-band execution (`exec-oob`); also makes QEMU read ahead and queue requests.
        Oob => "oob",
    }
}

open_string_enum! {
    /// The `class` of a QMP error reply (QEMU's `QapiErrorClass`).
    pub enum ErrorClass {
        /// Most errors.
        GenericError => "GenericError",
        /// The command does not exist (or is not allowed in the current negotiation state).
        CommandNotFound => "CommandNotFound",
        /// A device exists but is not active.
        DeviceNotActive => "DeviceNotActive",
        /// No device (or netdev, or block node) has the given id.
        DeviceNotFound => "DeviceNotFound",
        /// KVM lacks a needed capability.
        KvmMissingCap => "KVMMissingCap",
    }
}

/// A successful command reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    /// The `return` member, any JSON value (`{}` for commands without output).
    pub value: Value,
    /// The command's `id`, echoed by the server.
    pub id: Option<Value>,
}

/// A failed command reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: QmpError,
    /// The command's `id`, echoed by the server (absent for protocol errors).
    pub id: Option<Value>,
}

/// The `error` member of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpError {
    /// Machine-readable class; almost always `GenericError` in modern QEMU.
    pub class: ErrorClass,
    /// Human-readable description.
    pub desc: String,
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.desc)
    }
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `STOP` or `DEVICE_DELETED`.
    pub event: String,
    /// Event payload; absent for events without data such as `STOP`.
    pub data: Option<Value>,
    /// When the server emitted it.
    pub timestamp: Timestamp,
}

/// Host time at which an event was emitted. QEMU sends `-1, -1` when it could not read
/// the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// A command from client to server.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Command name, e.g. `query-status`.
    pub name: String,
    /// Arguments object, if any.
    pub arguments: Option<Map<String, Value>>,
    /// Client-chosen id, copied into the reply.
    pub id: Option<Value>,
    /// Send as `exec-oob` (out-of-band) instead of `execute`; needs `oob` negotiated and an id.
    pub oob: bool,
}

impl Command {
    /// A command without arguments or id.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), arguments: None, id: None, oob: false }
    }

    /// Sets the arguments object.
    #[must_use]
    pub fn arguments(mut self, arguments: Map<String, Value>) -> Self {
        self.arguments = Some(arguments);
        self
    }

    /// Sets the id.
    #[must_use]
    pub fn id(mut self, id: impl Into<Value>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Marks the command out-of-band (`exec-oob`).
    #[must_use]
    pub fn oob(mut self, oob: bool) -> Self {
        self.oob = oob;
        self
    }

    /// Appends the command to `dst` as it goes on the wire: one line of compact JSON, then
    /// `\r\n`. This is what [`QmpCodec`](crate::QmpCodec)'s encoder writes; a client that
    /// keeps one outgoing buffer calls it directly instead of making a codec per command.
    ///
    /// # Panics
    /// Never: a name and JSON values keyed by strings always serialise, and writing to a
    /// `BytesMut` cannot fail.
    pub fn encode(&self, dst: &mut bytes::BytesMut) {
        use bytes::BufMut;
        // The same bytes as the `Serialize` impl gives through the encoder (a test holds
        // them equal), written member by member: the map serializer's bookkeeping costs
        // more than the rest of encoding a small command.
        fn json<T: Serialize + ?Sized>(dst: &mut bytes::BytesMut, value: &T) {
            serde_json::to_writer(dst.writer(), value).expect("a QMP command always serialises");
        }
        dst.put_slice(if self.oob { b"{\"exec-oob\":" } else { b"{\"execute\":" });
        // Command names are plain ASCII: copied as they are unless something needs escaping.
        if self.name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            dst.put_u8(b'"');
            dst.put_slice(self.name.as_bytes());
            dst.put_u8(b'"');
        } else {
            json(dst, &self.name);
        }
        if let Some(arguments) = &self.arguments {
            dst.put_slice(b",\"arguments\":");
            json(dst, arguments);
        }
        if let Some(id) = &self.id {
            dst.put_slice(b",\"id\":");
            json(dst, id);
        }
        dst.put_slice(b"}\r\n");
    }

    /// Parses one command (without its line terminator); used by servers and mocks.
    ///
    /// Unlike QEMU this is lenient about unknown top-level members: they are ignored.
    ///
    /// # Errors
    /// A frame error describing what was wrong, holding what was received.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_line(bytes)
    }
}

/// A message the [`JsonLinesCodec`](crate::JsonLinesCodec) decodes: one parsed from one
/// line (without its terminator). A bad line is a frame error holding what was received
/// (see [`Error::is_frame_error`]).
pub trait FromLine: Sized {
    /// Parses one line.
    ///
    /// # Errors
    /// A frame error describing what was wrong.
    fn from_line(line: &[u8]) -> Result<Self, Error>;
}

impl FromLine for ServerMessage {
    /// Replies and events in the shapes QEMU writes them take a short path that parses
    /// the envelope by hand and only the payload through serde, which costs a fraction of
    /// serde's member-by-member visit of a small message: `{"return": VALUE, "id": N}`
    /// with an unsigned integer id, and events with `event` (a string without escapes),
    /// `timestamp` (`{"seconds": S, "microseconds": U}`) and optional `data` in any order.
    /// Spaces after `:` and `,` are optional. Every other line (other members, another id
    /// type, anything odd) takes the general path, and so does a line that could hold a
    /// value nested deep enough to meet `serde_json`'s recursion limit, so both paths
    /// accept and reject exactly the same lines.
    fn from_line(line: &[u8]) -> Result<Self, Error> {
        let text = utf8(line)?;
        match short_path(text) {
            Some(message) => Ok(message),
            None => parse_str(text, line),
        }
    }
}

impl FromLine for Command {
    fn from_line(line: &[u8]) -> Result<Self, Error> {
        parse_str(utf8(line)?, line)
    }
}

/// Nesting that `serde_json`'s parser allows (its recursion limit), counting the envelope.
const MAX_NESTING: usize = 128;

/// See [`ServerMessage::from_line`]: the message, or `None` for the general path.
fn short_path(text: &str) -> Option<ServerMessage> {
    // A payload nested `MAX_NESTING - 1` deep fails inside the envelope but would parse on
    // its own; opening a level takes a byte and closing it another.
    // (Counting stops at the limit: a big reply with many brackets just takes the general
    // path, where its payload costs far more than the envelope anyway.)
    if text.len() >= 2 * (MAX_NESTING - 1)
        && memchr::memchr2_iter(b'[', b'{', text.as_bytes()).take(MAX_NESTING - 1).count()
            >= MAX_NESTING - 1
    {
        return None;
    }
    if let Some(rest) = text.strip_prefix("{\"return\":") {
        return reply_short_path(rest);
    }
    let mut line = Cursor { text, bytes: text.as_bytes(), at: 0 };
    line.byte(b'{')?;
    let (mut event, mut data, mut timestamp) = (None, None, None);
    loop {
        match line.key()? {
            Key::Event if event.is_none() => event = Some(line.plain_string()?.to_owned()),
            Key::Data if data.is_none() => data = Some(line.value()?),
            Key::Timestamp if timestamp.is_none() => timestamp = Some(line.timestamp()?),
            _ => return None,
        }
        if !line.separator() {
            break;
        }
    }
    line.byte(b'}')?;
    (line.at == line.bytes.len()).then_some(())?;
    Some(ServerMessage::Event(Event { event: event?, data, timestamp: timestamp? }))
}

/// A reply's short path, after `{"return":`: the value, then `}` or `, "id": N}`.
fn reply_short_path(rest: &str) -> Option<ServerMessage> {
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    let value = values.next()?.ok()?;
    let tail = rest.get(values.byte_offset()..)?.strip_suffix('}')?;
    let id = if tail.is_empty() {
        None
    } else {
        let tail = tail.strip_prefix(',')?;
        let tail = tail.strip_prefix(' ').unwrap_or(tail).strip_prefix("\"id\":")?;
        let digits = tail.strip_prefix(' ').unwrap_or(tail);
        // JSON has no leading zeros; anything but plain digits (or too many) goes the
        // general way.
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        let mut id: u64 = 0;
        for digit in digits.bytes() {
            if !digit.is_ascii_digit() {
                return None;
            }
            id = id.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        }
        Some(Value::from(id))
    };
    Some(ServerMessage::Return(Return { value, id }))
}

/// The member names the event short path knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Event,
    Data,
    Timestamp,
    Seconds,
    Microseconds,
}

/// Reads the few exact shapes the short path takes; anything else is `None`.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self, byte: u8) -> Option<()> {
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// `,` and an optional space (QEMU writes one); `false` (having read nothing) if the
    /// next byte is not a comma.
    fn separator(&mut self) -> bool {
        if self.byte(b',').is_none() {
            return false;
        }
        let _ = self.byte(b' ');
        true
    }

    /// `"name":` and an optional space, for the names the short path knows.
    fn key(&mut self) -> Option<Key> {
        self.byte(b'"')?;
        let rest = &self.bytes[self.at..];
        // Picked by first byte, then compared with the closing quote: no general matching
        // of an arbitrary name.
        let (key, name): (Key, &[u8]) = match rest.first()? {
            b'e' => (Key::Event, b"event\""),
            b'd' => (Key::Data, b"data\""),
            b't' => (Key::Timestamp, b"timestamp\""),
            b's' => (Key::Seconds, b"seconds\""),
            b'm' => (Key::Microseconds, b"microseconds\""),
            _ => return None,
        };
        rest.starts_with(name).then(|| self.at += name.len())?;
        self.byte(b':')?;
        let _ = self.byte(b' ');
        Some(key)
    }

    /// A string without escapes or control characters (which JSON forbids raw).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.byte(b'"')?;
        let start = self.at;
        // Names and event names are short: a plain loop beats a vectorised search here.
        let len = self.bytes[start..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let end = start + len;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Both ends are next to a quote, an ASCII byte, so they are character boundaries.
        self.text.get(start..end)
    }

    /// Digits without a leading zero, in `u64`.
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        // Up to 19 digits always fit in a u64; only longer numbers need checking.
        if digits.len() <= 19 {
            return Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')));
        }
        digits.iter().try_fold(0_u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }

    /// An integer in `i64` (a minus sign only before a non-zero number).
    fn signed(&mut self) -> Option<i64> {
        if self.byte(b'-').is_some() {
            if self.bytes.get(self.at) == Some(&b'0') {
                return None;
            }
            return 0_i64.checked_sub_unsigned(self.unsigned()?);
        }
        i64::try_from(self.unsigned()?).ok()
    }

    /// `{"seconds": S, "microseconds": U}`.
    fn timestamp(&mut self) -> Option<Timestamp> {
        self.byte(b'{')?;
        (self.key()? == Key::Seconds).then_some(())?;
        let seconds = self.signed()?;
        self.separator().then_some(())?;
        (self.key()? == Key::Microseconds).then_some(())?;
        let microseconds = self.signed()?;
        self.byte(b'}')?;
        Some(Timestamp { seconds, microseconds })
    }

    /// Any JSON value, through serde, up to where it ends.
    fn value(&mut self) -> Option<Value> {
        let rest = self.text.get(self.at..)?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        self.at += values.byte_offset();
        Some(value)
    }
}

/// The line as text: JSON is UTF-8, and checking it once for the whole line lets `serde_json`
/// skip its own check of every string and member name.
fn utf8(line: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(line).map_err(|utf8| Error::InvalidUtf8 {
        valid_up_to: utf8.valid_up_to(),
        line: bytes::Bytes::copy_from_slice(line),
    })
}

/// Parses one line into `T`, and on failure classifies what was received so nothing is
/// lost. The classification re-parses only on the (cold) error path.
fn parse_str<T: DeserializeOwned>(text: &str, line: &[u8]) -> Result<T, Error> {
    match serde_json::from_str::<T>(text) {
        Ok(message) => Ok(message),
        Err(shape_error) if shape_error.is_data() => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => {
                Err(Error::UnknownShape { reason: shape_error.to_string(), object })
            }
            Ok(value) => Err(Error::NotAnObject { value }),
            Err(syntax_error) => Err(invalid_json(syntax_error, line)),
        },
        Err(syntax_error) => Err(invalid_json(syntax_error, line)),
    }
}

fn invalid_json(source: serde_json::Error, line: &[u8]) -> Error {
    Error::InvalidJson { source, line: bytes::Bytes::copy_from_slice(line) }
}

/// Top-level member names of QMP messages, matched without allocating.
enum Member {
    Qmp,
    Return,
    Error,
    Event,
    Data,
    Timestamp,
    Id,
    Execute,
    ExecOob,
    Arguments,
    Unknown,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Member, E> {
                Ok(match v {
                    "QMP" => Member::Qmp,
                    "return" => Member::Return,
                    "error" => Member::Error,
                    "event" => Member::Event,
                    "data" => Member::Data,
                    "timestamp" => Member::Timestamp,
                    "id" => Member::Id,
                    "execute" => Member::Execute,
                    "exec-oob" => Member::ExecOob,
                    "arguments" => Member::Arguments,
                    _ => Member::Unknown,
                })
            }
        }
        deserializer.deserialize_identifier(MemberVisitor)
    }
}

/// Stores a member's value, rejecting a repeated member (which JSON allows but QMP never
/// sends; taking either copy silently would hide a broken peer).
fn set_once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ServerMessageVisitor)
    }
}

struct ServerMessageVisitor;

impl<'de> Visitor<'de> for ServerMessageVisitor {
    type Value = ServerMessage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a QMP message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerMessage, A::Error> {
        let mut greeting: Option<Greeting> = None;
        let mut value: Option<Value> = None;
        let mut error: Option<QmpError> = None;
        let mut event: Option<String> = None;
        let mut data: Option<Value> = None;
        let mut timestamp: Option<Timestamp> = None;
        let mut id: Option<Value> = None;
        while let Some(member) = map.next_key::<Member>()? {
            match member {
                Member::Qmp => set_once(&mut greeting, &mut map, "QMP")?,
                Member::Return => set_once(&mut value, &mut map, "return")?,
                Member::Error => set_once(&mut error, &mut map, "error")?,
                Member::Event => set_once(&mut event, &mut map, "event")?,
                Member::Data => set_once(&mut data, &mut map, "data")?,
                Member::Timestamp => set_once(&mut timestamp, &mut map, "timestamp")?,
                Member::Id => set_once(&mut id, &mut map, "id")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match (greeting, value, error, event) {
            (Some(greeting), None, None, None) => Ok(ServerMessage::Greeting(greeting)),
            (None, Some(value), None, None) => Ok(ServerMessage::Return(Return { value, id })),
            (None, None, Some(error), None) => Ok(ServerMessage::Error(ErrorReply { error, id })),
            (None, None, None, Some(event)) => {
                let timestamp = timestamp.ok_or_else(|| de::Error::missing_field("timestamp"))?;
                Ok(ServerMessage::Event(Event { event, data, timestamp }))
            }
            (None, None, None, None) => {
                Err(de::Error::custom("no 'QMP', 'return', 'error' or 'event' member"))
            }
            _ => Err(de::Error::custom(
                "more than one of 'QMP', 'return', 'error' and 'event' members",
            )),
        }
    }
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::Greeting(greeting) => map.serialize_entry("QMP", greeting)?,
            Self::Return(Return { value, id }) => {
                map.serialize_entry("return", value)?;
                if let Some(id) = id {
                    map.serialize_entry("id", id)?;
                }
            }
            Self::Error(ErrorReply { error, id }) => {
                map.serialize_entry("error", error)?;
                if let Some(id) = id {
                    map.serialize_entry("id", id)?;
                }
            }
            Self::Event(Event { event, data, timestamp }) => {
                map.serialize_entry("event", event)?;
                if let Some(data) = data {
                    map.serialize_entry("data", data)?;
                }
                map.serialize_entry("timestamp", timestamp)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a QMP command object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Command, A::Error> {
        let mut execute: Option<String> = None;
        let mut exec_oob: Option<String> = None;
        let mut arguments: Option<Map<String, Value>> = None;
        let mut id: Option<Value> = None;
        while let Some(member) = map.next_key::<Member>()? {
            match member {
                Member::Execute => set_once(&mut execute, &mut map, "execute")?,
                Member::ExecOob => set_once(&mut exec_oob, &mut map, "exec-oob")?,
                Member::Arguments => set_once(&mut arguments, &mut map, "arguments")?,
                Member::Id => set_once(&mut id, &mut map, "id")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (name, oob) = match (execute, exec_oob) {
            (Some(name), None) => (name, false),
            (None, Some(name)) => (name, true),
            (None, None) => return Err(de::Error::custom("no 'execute' or 'exec-oob' member")),
            (Some(_), Some(_)) => {
                return Err(de::Error::custom("both 'execute' and 'exec-oob' members"));
            }
        };
        Ok(Command { name, arguments, id, oob })
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(if self.oob { "exec-oob" } else { "execute" }, &self.name)?;
        if let Some(arguments) = &self.arguments {
            map.serialize_entry("arguments", arguments)?;
        }
        if let Some(id) = &self.id {
            map.serialize_entry("id", id)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(text: &str) -> Result<ServerMessage, Error> {
        ServerMessage::from_slice(text.as_bytes())
    }

    #[test]
    fn real_greeting() {
        let text = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
        let ServerMessage::Greeting(greeting) = server(text).unwrap() else { panic!() };
        assert_eq!(greeting.version.qemu, QemuVersion::new(7, 2, 22));
        assert_eq!(greeting.version.qemu.to_string(), "7.2.22");
        assert_eq!(greeting.version.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(greeting.capabilities, vec![Capability::Oob]);
    }

    #[test]
    fn unknown_capability_is_kept() {
        let text = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 99}, "package": ""}, "capabilities": ["oob", "teleport"]}}"#;
        let ServerMessage::Greeting(greeting) = server(text).unwrap() else { panic!() };
        assert_eq!(greeting.capabilities[1], Capability::Other("teleport".into()));
        assert_eq!(greeting.capabilities[1].as_str(), "teleport");
    }

    #[test]
    fn return_with_and_without_id() {
        let msg = server(r#"{"return": {"status": "running"}, "id": 7}"#).unwrap();
        assert_eq!(
            msg,
            ServerMessage::Return(Return {
                value: json!({"status": "running"}),
                id: Some(json!(7))
            })
        );
        assert_eq!(msg.id(), Some(&json!(7)));
        let msg = server(r#"{"return": {}}"#).unwrap();
        assert_eq!(msg, ServerMessage::Return(Return { value: json!({}), id: None }));
        // An explicit null id is kept, distinct from no id.
        assert_eq!(server(r#"{"return": 1, "id": null}"#).unwrap().id(), Some(&Value::Null));
    }

    #[test]
    fn error_reply_classes() {
        let msg = server(r#"{"id": "a", "error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}"#).unwrap();
        let ServerMessage::Error(reply) = msg else { panic!() };
        assert_eq!(reply.error.class, ErrorClass::CommandNotFound);
        assert_eq!(reply.id, Some(json!("a")));
        assert_eq!(
            reply.error.to_string(),
            "CommandNotFound: The command no-such-command has not been found"
        );
        let ServerMessage::Error(reply) =
            server(r#"{"error": {"class": "FutureClass", "desc": "x"}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(reply.error.class, ErrorClass::Other("FutureClass".into()));
        assert_eq!(reply.id, None);
    }

    #[test]
    fn events_with_and_without_data() {
        let msg = server(
            r#"{"timestamp": {"seconds": 1700000000, "microseconds": 12}, "event": "STOP"}"#,
        )
        .unwrap();
        assert_eq!(
            msg,
            ServerMessage::Event(Event {
                event: "STOP".into(),
                data: None,
                timestamp: Timestamp { seconds: 1_700_000_000, microseconds: 12 },
            })
        );
        let msg = server(r#"{"event": "DEVICE_DELETED", "data": {"device": "nic0", "path": "/machine/peripheral/nic0"}, "timestamp": {"seconds": -1, "microseconds": -1}}"#).unwrap();
        let ServerMessage::Event(event) = msg else { panic!() };
        assert_eq!(event.data.unwrap()["device"], "nic0");
        assert_eq!(event.timestamp.seconds, -1);
    }

    #[test]
    fn unknown_top_level_members_are_ignored() {
        let msg = server(r#"{"return": 3, "id": 1, "future": [1, 2]}"#).unwrap();
        assert_eq!(msg, ServerMessage::Return(Return { value: json!(3), id: Some(json!(1)) }));
    }

    #[test]
    fn unknown_shapes_keep_the_object() {
        for (text, reason) in [
            (r#"{"hello": 1}"#, "no 'QMP'"),
            (r#"{"return": 1, "error": {"class": "GenericError", "desc": ""}}"#, "more than one"),
            (r#"{"event": "STOP"}"#, "timestamp"),
            (r#"{"event": 5, "timestamp": {"seconds": 1, "microseconds": 2}}"#, "invalid type"),
            (r#"{"return": 1, "return": 2}"#, "duplicate field"),
            (r#"{"error": {"class": "GenericError"}}"#, "desc"),
        ] {
            match server(text) {
                Err(err @ Error::UnknownShape { .. }) => {
                    assert!(err.to_string().contains(reason), "{text}: {err}");
                    let Error::UnknownShape { object, .. } = err else { unreachable!() };
                    let expected: Map<String, Value> = serde_json::from_str(text).unwrap();
                    assert_eq!(object, expected);
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn non_objects_keep_the_value() {
        for text in ["[1, 2]", "42", "\"QMP\"", "null", "true"] {
            match server(text) {
                Err(Error::NotAnObject { value }) => {
                    assert_eq!(value, serde_json::from_str::<Value>(text).unwrap());
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_json_and_utf8() {
        for text in [r#"{"return": }"#, "{", r#"{"return": {}} trailing"#, "not json", ""] {
            match server(text) {
                Err(Error::InvalidJson { line, .. }) => assert_eq!(line, text.as_bytes()),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let bad = b"{\"return\": \"\xff\xfe\"}";
        match ServerMessage::from_slice(bad) {
            Err(Error::InvalidUtf8 { valid_up_to, line }) => {
                assert_eq!(valid_up_to, 12);
                assert_eq!(line, &bad[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_messages_round_trip_through_json() {
        for text in [
            r#"{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":22},"package":"p"},"capabilities":["oob","x"]}}"#,
            r#"{"return":{"a":[1,2,{"b":null}]},"id":{"nested":"id"}}"#,
            r#"{"error":{"class":"GenericError","desc":"Parameter 'id' is missing"},"id":3}"#,
            r#"{"event":"RESUME","timestamp":{"seconds":1,"microseconds":2}}"#,
            r#"{"event":"X","data":{"k":"v"},"timestamp":{"seconds":1,"microseconds":2}}"#,
        ] {
            let msg = server(text).unwrap();
            let original: Value = serde_json::from_str(text).unwrap();
            assert_eq!(msg.to_value(), original, "{text}");
        }
    }

    #[test]
    fn the_short_path_accepts_and_rejects_what_the_general_parser_does() {
        let nested = |depth: usize| {
            format!("{{\"return\": {}1{}, \"id\": 1}}", "[".repeat(depth), "]".repeat(depth))
        };
        let lines = [
            r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 7}"#
                .to_owned(),
            r#"{"return":{"a":[1,2]},"id":0}"#.to_owned(),
            r#"{"return": {}}"#.to_owned(),
            r#"{"return": "has \"id\": 3 inside", "id": 4}"#.to_owned(),
            r#"{"return": 1, "id": 05}"#.to_owned(),
            r#"{"return": 1, "id": -1}"#.to_owned(),
            r#"{"return": 1, "id": 1.5}"#.to_owned(),
            r#"{"return": 1, "id": "x"}"#.to_owned(),
            r#"{"return": 1, "id": null}"#.to_owned(),
            r#"{"return": 1, "id": 18446744073709551616}"#.to_owned(),
            r#"{"return": 1 , "id": 2}"#.to_owned(),
            r#"{"return": 1, "id": 2, "extra": 3}"#.to_owned(),
            r#"{"return": 1, "id": 2} "#.to_owned(),
            r#"{"return": 1, "return": 2}"#.to_owned(),
            r#"{"return": 1 2}"#.to_owned(),
            r#"{"return": }"#.to_owned(),
            r#"{"return": {"a": 1, "a": 2}, "id": 3}"#.to_owned(),
            r#"{"return": 1, "id": 2, "error": {"class": "GenericError", "desc": ""}}"#.to_owned(),
            nested(125),
            nested(126),
            nested(127),
            nested(200),
            r#"{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}"#.to_owned(),
            r#"{"event":"BENCH","data":{"n":3},"timestamp":{"seconds":1,"microseconds":2}}"#.to_owned(),
            r#"{"timestamp": {"seconds": -1, "microseconds": -1}, "event": "X", "data": null}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": -0, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": 01, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": 1.5, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": 9223372036854775808, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": -9223372036854775808, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"microseconds": 0, "seconds": 1}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": 1, "microseconds": 0, "extra": 1}}"#.to_owned(),
            r#"{"event": "X\u0041", "timestamp": {"seconds": 1, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "event": "Y", "timestamp": {"seconds": 1, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "data": 1, "data": 2, "timestamp": {"seconds": 1, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X"}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": 1, "microseconds": 0}, "future": 1}"#.to_owned(),
            r#"{"event" : "X", "timestamp": {"seconds": 1, "microseconds": 0}}"#.to_owned(),
            r#"{"event": 5, "timestamp": {"seconds": 1, "microseconds": 0}}"#.to_owned(),
            r#"{"event": "X", "timestamp": {"seconds": 1, "microseconds": 0}} "#.to_owned(),
            r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#.to_owned(),
            r#"{"error": {"class": "GenericError", "desc": "x"}, "id": 1}"#.to_owned(),
        ];
        for line in &lines {
            let short = ServerMessage::from_slice(line.as_bytes());
            let general = parse_str::<ServerMessage>(line, line.as_bytes());
            assert_eq!(format!("{short:?}"), format!("{general:?}"), "{line}");
        }
        for short in [0, 1, 22, 23, 24] {
            assert!(short_path(&lines[short]).is_some(), "{}", lines[short]);
        }
        assert!(ServerMessage::from_slice(nested(126).as_bytes()).is_ok());
        assert!(ServerMessage::from_slice(nested(127).as_bytes()).is_err(), "serde_json's limit");
    }

    #[test]
    fn commands_round_trip() {
        let mut args = Map::new();
        args.insert("fdname".into(), json!("fd0"));
        let command = Command::new("getfd").arguments(args).id(1);
        let text = serde_json::to_string(&command).unwrap();
        assert_eq!(text, r#"{"execute":"getfd","arguments":{"fdname":"fd0"},"id":1}"#);
        assert_eq!(Command::from_slice(text.as_bytes()).unwrap(), command);

        let oob = Command::new("migrate-pause").id("x").oob(true);
        let text = serde_json::to_string(&oob).unwrap();
        assert_eq!(text, r#"{"exec-oob":"migrate-pause","id":"x"}"#);
        assert_eq!(Command::from_slice(text.as_bytes()).unwrap(), oob);

        // `encode` writes exactly what the serde impl (and so the codec's encoder) writes.
        let odd_name = Command::new("x\"\u{e9}\n").id(json!({"nested": [1, "two"]}));
        for each in [&command, &oob, &odd_name, &Command::new("stop")] {
            let mut wire = bytes::BytesMut::new();
            each.encode(&mut wire);
            assert_eq!(wire, format!("{}\r\n", serde_json::to_string(each).unwrap()).as_bytes());
        }
        // `encode` appends the same JSON as one CRLF line, after what is already there.
        let mut wire = bytes::BytesMut::from(&b"before\r\n"[..]);
        command.encode(&mut wire);
        oob.encode(&mut wire);
        assert_eq!(
            &wire[..],
            b"before\r\n{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"fd0\"},\"id\":1}\r\n\
              {\"exec-oob\":\"migrate-pause\",\"id\":\"x\"}\r\n"
        );
    }

    #[test]
    fn bad_commands() {
        for text in [
            r#"{"arguments": {}}"#,
            r#"{"execute": "a", "exec-oob": "b"}"#,
            r#"{"execute": "a", "arguments": 5}"#,
        ] {
            assert!(
                matches!(Command::from_slice(text.as_bytes()), Err(Error::UnknownShape { .. })),
                "{text}"
            );
        }
    }
}
