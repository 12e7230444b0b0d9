//! What the async and the blocking client share above the session: turning arguments into
//! a request, and replies into typed results, for every operation they both offer.

use std::time::Duration;

use bytes::BytesMut;
use qmp_codec::{Command, QmpCodec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio_util::codec::Encoder;

use crate::error::Error;
use crate::session::Request;

/// Per-call options for `execute_with`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Reply deadline for this call (overrides the client's default).
    pub timeout: Option<Duration>,
    /// Send as `exec-oob` (needs `oob` negotiated; only commands QEMU allows out-of-band).
    pub oob: bool,
}

impl CallOptions {
    /// Default options: the client's default timeout, in-band.
    pub fn new() -> Self {
        Self::default()
    }

    /// With this reply deadline.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Out-of-band.
    #[must_use]
    pub fn oob(mut self, oob: bool) -> Self {
        self.oob = oob;
        self
    }
}

/// The command as it goes on the wire: one JSON line.
pub(crate) fn encode(command: &Command) -> BytesMut {
    let mut bytes = BytesMut::new();
    QmpCodec::new()
        .encode(command, &mut bytes)
        .expect("a command, a name and JSON values with string keys, always serialises");
    bytes
}

/// Builds a request; `arguments` may be anything that serialises to a JSON object, or `()`
/// (or `None`, or `Value::Null`) for none.
pub(crate) fn request(
    name: &str,
    arguments: impl Serialize,
    options: CallOptions,
) -> Result<Request, Error> {
    let arguments = match serde_json::to_value(arguments) {
        Ok(Value::Null) => None,
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            return Err(Error::InvalidRequest(format!(
                "arguments of '{name}' must be a JSON object, not {other}"
            )));
        }
        Err(e) => {
            return Err(Error::InvalidRequest(format!(
                "arguments of '{name}' do not serialise: {e}"
            )));
        }
    };
    Ok(Request { name: name.to_owned(), arguments, oob: options.oob, timeout: options.timeout })
}

/// Deserialises a `return` value into the caller's type.
pub(crate) fn decode<T: DeserializeOwned>(command: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value)
        .map_err(|e| Error::Decode { command: command.to_owned(), reason: e.to_string() })
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(crate) const HMP: &str = "human-monitor-command";

/// `human-monitor-command` arguments.
pub(crate) fn hmp_arguments(command_line: &str) -> Map<String, Value> {
    object(json!({ "command-line": command_line }))
}

pub(crate) const GETFD: &str = "getfd";
pub(crate) const CLOSEFD: &str = "closefd";
pub(crate) const ADD_FD: &str = "add-fd";
pub(crate) const REMOVE_FD: &str = "remove-fd";
pub(crate) const QUERY_FDSETS: &str = "query-fdsets";

/// `getfd` / `closefd` arguments.
pub(crate) fn fdname_arguments(name: &str) -> Map<String, Value> {
    object(json!({ "fdname": name }))
}

/// `add-fd` arguments.
pub(crate) fn add_fd_arguments(fdset_id: Option<u64>, opaque: Option<&str>) -> Map<String, Value> {
    let mut arguments = Map::new();
    if let Some(id) = fdset_id {
        arguments.insert("fdset-id".into(), id.into());
    }
    if let Some(opaque) = opaque {
        arguments.insert("opaque".into(), opaque.into());
    }
    arguments
}

/// `remove-fd` arguments.
pub(crate) fn remove_fd_arguments(fdset_id: u64, fd: Option<i64>) -> Map<String, Value> {
    let mut arguments = object(json!({ "fdset-id": fdset_id }));
    if let Some(fd) = fd {
        arguments.insert("fd".into(), fd.into());
    }
    arguments
}
