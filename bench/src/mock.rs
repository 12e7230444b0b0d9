//! A standalone, multi-connection mock QMP server that costs as little as possible, so a
//! client's own cost shows: the server behind `mock-qmp`.
//!
//! Per connection: a QEMU 7.2-like greeting offering `oob`; `qmp_capabilities` (with or
//! without `{"enable": ["oob"]}`) must come first, as in QEMU; then
//!
//! * `query-status` returns `{"status": "running", "singlestep": false, "running": true}`,
//! * `query-commands` returns [`COMMANDS`], `query-version` the greeting's version,
//! * `x-bench-events {"count": N}` writes `N` events
//!   `{"event": "BENCH", "data": {"i": k}, "timestamp": {...}}` (k = 0..N) as fast as the
//!   socket takes them, then replies `{}`,
//! * every other command in [`COMMANDS`] returns `{}`; anything else is `CommandNotFound`.
//!
//! Replies echo the command's `id` and work for `exec-oob` too (once `oob` is negotiated).
//! All commands read in one `read` are answered with one `write`.
//!
//! Input is a JSON *stream*, as QEMU parses it, not newline-framed lines: Python's
//! `qemu.qmp` sends each command as a bare JSON object with no line terminator. Replies and
//! events are CRLF-terminated lines encoded with `qmp_codec::ServerCodec`, as QEMU's are.

use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use qmp_codec::{
    Capability, Command, ErrorClass, ErrorReply, Greeting, QemuVersion, QmpError, Return,
    ServerCodec, ServerMessage, VersionInfo,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::Encoder;

/// The commands the mock has, as `query-commands` lists them.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-status",
    "query-version",
    "query-name",
    "stop",
    "cont",
    "system_reset",
    "migrate-pause",
    "x-bench-events",
];

/// The event name `x-bench-events` emits.
pub const BENCH_EVENT: &str = "BENCH";

/// Most events one `x-bench-events` may ask for.
pub const MAX_EVENTS: u64 = 100_000_000;

/// Longest unfinished command kept while waiting for the rest of it.
const MAX_COMMAND_LEN: usize = 1024 * 1024;

/// Bytes gathered before the event writer hands them to the socket.
const WRITE_CHUNK: usize = 64 * 1024;

/// The greeting: QEMU 7.2.22 as Debian packages it, offering `oob`.
pub fn greeting() -> Greeting {
    Greeting {
        version: VersionInfo {
            qemu: QemuVersion::new(7, 2, 22),
            package: "qmp-bench mock".to_owned(),
        },
        capabilities: vec![Capability::Oob],
    }
}

/// Binds `path` (replacing a stale socket file) and serves connections until the process
/// ends.
///
/// # Errors
/// When the socket cannot be bound, or `accept` fails for a reason other than running out
/// of descriptors (that one is logged and retried after a pause).
pub async fn bind_and_serve(path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    serve(UnixListener::bind(path)?).await
}

/// Serves every connection `listener` accepts, each on its own task.
///
/// # Errors
/// As [`bind_and_serve`].
pub async fn serve(listener: UnixListener) -> std::io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // A client that goes away mid-write is its own business.
                    let _ = handle(stream).await;
                });
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => {
                eprintln!("mock-qmp: accept: {e}; raise RLIMIT_NOFILE");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The negotiation state of one connection.
#[derive(Debug, Default)]
struct Conn {
    negotiated: bool,
    oob: bool,
}

/// What a command asks the connection loop to do besides replying.
enum Action {
    Reply(ServerMessage),
    Events { count: u64, reply: ServerMessage },
}

/// Takes the next complete JSON value off the front of `input` and parses it as a command.
/// `None` when `input` holds no complete value yet (only whitespace is dropped).
///
/// A syntax error drops the input up to the next newline (or all of it), as QEMU's parser
/// resynchronises, and is returned as an `Err` to answer.
pub fn next_command(input: &mut BytesMut) -> Option<Result<Command, String>> {
    let Some(start) = input.iter().position(|b| !b.is_ascii_whitespace()) else {
        input.clear();
        return None;
    };
    let mut values =
        serde_json::Deserializer::from_slice(&input[start..]).into_iter::<serde::de::IgnoredAny>();
    match values.next() {
        None => {
            input.clear();
            None
        }
        Some(Ok(_)) => {
            let end = start + values.byte_offset();
            let frame = input.split_to(end);
            Some(Command::from_slice(&frame[start..]).map_err(|e| e.to_string()))
        }
        Some(Err(e)) if e.is_eof() && input.len() <= MAX_COMMAND_LEN => None,
        Some(Err(e)) => {
            let skip = input.iter().position(|&b| b == b'\n').map_or(input.len(), |i| i + 1);
            input.advance(skip);
            Some(Err(e.to_string()))
        }
    }
}

async fn handle(mut stream: UnixStream) -> std::io::Result<()> {
    let mut codec = ServerCodec::new();
    let mut out = BytesMut::with_capacity(1024);
    codec.encode(ServerMessage::Greeting(greeting()), &mut out).map_err(std::io::Error::other)?;
    stream.write_all(&out).await?;
    out.clear();
    let mut input = BytesMut::new();
    let mut conn = Conn::default();
    loop {
        input.reserve(4096);
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while let Some(item) = next_command(&mut input) {
            let action = match item {
                Ok(command) => conn.answer(command),
                // QEMU answers unparsable input with an error without an id.
                Err(e) => Action::Reply(error(None, ErrorClass::GenericError, e)),
            };
            match action {
                Action::Reply(reply) => {
                    codec.encode(reply, &mut out).map_err(std::io::Error::other)?;
                }
                Action::Events { count, reply } => {
                    write_events(&mut stream, &mut out, count).await?;
                    codec.encode(reply, &mut out).map_err(std::io::Error::other)?;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
            if out.capacity() > WRITE_CHUNK * 2 {
                // An event burst grew the buffer; an idle connection keeps it small.
                out = BytesMut::with_capacity(1024);
            }
        }
    }
}

/// Writes `count` events after whatever `out` already holds, in chunks of about
/// [`WRITE_CHUNK`] bytes; `out` is empty on return.
async fn write_events(
    stream: &mut UnixStream,
    out: &mut BytesMut,
    count: u64,
) -> std::io::Result<()> {
    for i in 0..count {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        write!(
            out.writer(),
            "{{\"event\":\"{BENCH_EVENT}\",\"data\":{{\"i\":{i}}},\"timestamp\":{{\"seconds\":{},\"microseconds\":{}}}}}\r\n",
            now.as_secs(),
            now.subsec_micros()
        )?;
        if out.len() >= WRITE_CHUNK {
            stream.write_all(out).await?;
            out.clear();
        }
    }
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

fn ok(id: Option<Value>, value: Value) -> ServerMessage {
    ServerMessage::Return(Return { value, id })
}

fn error(id: Option<Value>, class: ErrorClass, desc: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorReply { error: QmpError { class, desc: desc.into() }, id })
}

impl Conn {
    fn answer(&mut self, command: Command) -> Action {
        let Command { name, arguments, id, oob } = command;
        if !self.negotiated {
            if name != "qmp_capabilities" {
                return Action::Reply(error(
                    id,
                    ErrorClass::CommandNotFound,
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                ));
            }
            let enable = arguments.as_ref().and_then(|a| a.get("enable"));
            let enable = enable.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            for capability in enable {
                if capability.as_str() == Some("oob") {
                    self.oob = true;
                } else {
                    return Action::Reply(error(
                        id,
                        ErrorClass::GenericError,
                        format!("Capability {capability} not available"),
                    ));
                }
            }
            self.negotiated = true;
            return Action::Reply(ok(id, json!({})));
        }
        if oob && !self.oob {
            return Action::Reply(error(
                id,
                ErrorClass::GenericError,
                "Please enable out-of-band first for the session during capabilities negotiation",
            ));
        }
        let reply = match name.as_str() {
            "qmp_capabilities" => error(
                id,
                ErrorClass::CommandNotFound,
                "Capabilities negotiation is already complete, command ignored",
            ),
            "query-status" => {
                ok(id, json!({"status": "running", "singlestep": false, "running": true}))
            }
            "query-commands" => {
                let list: Vec<Value> = COMMANDS.iter().map(|c| json!({"name": c})).collect();
                ok(id, Value::Array(list))
            }
            "query-version" => {
                let version = greeting().version;
                ok(id, json!({"qemu": version.qemu, "package": version.package}))
            }
            "x-bench-events" => {
                let count = arguments.as_ref().and_then(|a| a.get("count")).and_then(Value::as_u64);
                return match count {
                    Some(count) if count <= MAX_EVENTS => {
                        Action::Events { count, reply: ok(id, json!({})) }
                    }
                    _ => Action::Reply(error(
                        id,
                        ErrorClass::GenericError,
                        format!("'count' must be an integer from 0 to {MAX_EVENTS}"),
                    )),
                };
            }
            other if COMMANDS.contains(&other) => ok(id, json!({})),
            other => error(
                id,
                ErrorClass::CommandNotFound,
                format!("The command {other} has not been found"),
            ),
        };
        Action::Reply(reply)
    }
}
