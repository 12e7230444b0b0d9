//! [`Request`]: a command to run, with everything about how to run it. Every way of running
//! a command (both clients, the session) goes through it; the typed helpers that both
//! clients offer (`getfd`, HMP, ...) build theirs here.

use std::os::fd::OwnedFd;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::Error;

/// A command to run, with its options: arguments, reply deadline, out-of-band execution
/// and descriptors to pass with it.
///
/// It is not the wire type. [`qmp_codec::Command`] stays what goes on (and comes off) the
/// wire: it carries the `id`, which only the [`Session`](crate::session::Session) assigns,
/// and it has no room for what never becomes JSON: the reply deadline, and descriptors,
/// which travel as `SCM_RIGHTS` beside the command's bytes. The session turns a `Request`
/// into a `Command` with a fresh id and encodes it straight into its outgoing queue.
///
/// ```
/// use std::time::Duration;
/// use qmp_client::Request;
/// use serde_json::json;
///
/// let request = Request::new("device_del")
///     .arguments(json!({"id": "nic0"}))?
///     .timeout(Duration::from_secs(5));
/// assert_eq!(request.name(), "device_del");
/// # Ok::<(), qmp_client::Error>(())
/// ```
#[derive(Debug)]
pub struct Request {
    pub(crate) name: String,
    pub(crate) arguments: Option<Map<String, Value>>,
    pub(crate) oob: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) fds: Vec<OwnedFd>,
}

impl Request {
    /// A plain `execute` of `name`: no arguments, the client's default timeout, in-band.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), arguments: None, oob: false, timeout: None, fds: Vec::new() }
    }

    /// With these arguments: anything that serialises to a JSON object
    /// (`serde_json::json!({..})`, a struct, a map), or `()` (or `None`) for none.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if `arguments` does not serialise, or not to an object.
    pub fn arguments(mut self, arguments: impl Serialize) -> Result<Self, Error> {
        self.arguments = match serde_json::to_value(arguments) {
            Ok(Value::Null) => None,
            Ok(Value::Object(map)) => Some(map),
            Ok(other) => {
                return Err(Error::InvalidRequest(format!(
                    "arguments of '{}' must be a JSON object, not {other}",
                    self.name
                )));
            }
            Err(e) => {
                return Err(Error::InvalidRequest(format!(
                    "arguments of '{}' do not serialise: {e}",
                    self.name
                )));
            }
        };
        Ok(self)
    }

    /// With this reply deadline, instead of the client's default.
    ///
    /// When it passes, the call fails with [`Error::Timeout`] if the command was written
    /// (its outcome is unknown), or with [`Error::NotSent`] if it was still waiting to be
    /// written (it is then dropped and never sent).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Out-of-band (`exec-oob`): QEMU runs it at once, even while an in-band command is
    /// executing. Needs `oob` negotiated, and a command QEMU allows out-of-band.
    #[must_use]
    pub fn oob(mut self, oob: bool) -> Self {
        self.oob = oob;
        self
    }

    /// Passes `fd` with the command: it goes in the same `sendmsg` as the command's first
    /// byte, with nothing else written in between, the way `getfd` and `add-fd` need it.
    /// Needs a unix socket connection.
    #[must_use]
    pub fn fd(mut self, fd: OwnedFd) -> Self {
        self.fds.push(fd);
        self
    }

    /// The command's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn with_map(mut self, arguments: Map<String, Value>) -> Self {
        self.arguments = Some(arguments);
        self
    }
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
pub(crate) const GETFD: &str = "getfd";
pub(crate) const CLOSEFD: &str = "closefd";
pub(crate) const ADD_FD: &str = "add-fd";
pub(crate) const REMOVE_FD: &str = "remove-fd";
pub(crate) const QUERY_FDSETS: &str = "query-fdsets";

/// `human-monitor-command` for `command_line`.
pub(crate) fn hmp(command_line: &str) -> Request {
    Request::new(HMP).with_map(object(json!({ "command-line": command_line })))
}

/// `getfd` of `fd` under `name`.
pub(crate) fn getfd(name: &str, fd: OwnedFd) -> Request {
    Request::new(GETFD).with_map(object(json!({ "fdname": name }))).fd(fd)
}

/// `closefd` of `name`.
pub(crate) fn closefd(name: &str) -> Request {
    Request::new(CLOSEFD).with_map(object(json!({ "fdname": name })))
}

/// `add-fd` of `fd`, into fdset `fdset_id` or a new one.
pub(crate) fn add_fd(fd: OwnedFd, fdset_id: Option<u64>, opaque: Option<&str>) -> Request {
    let mut arguments = Map::new();
    if let Some(id) = fdset_id {
        arguments.insert("fdset-id".into(), id.into());
    }
    if let Some(opaque) = opaque {
        arguments.insert("opaque".into(), opaque.into());
    }
    Request::new(ADD_FD).with_map(arguments).fd(fd)
}

/// `remove-fd` of descriptor `fd`, or of the whole set.
pub(crate) fn remove_fd(fdset_id: u64, fd: Option<i64>) -> Request {
    let mut arguments = object(json!({ "fdset-id": fdset_id }));
    if let Some(fd) = fd {
        arguments.insert("fd".into(), fd.into());
    }
    Request::new(REMOVE_FD).with_map(arguments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_an_object_or_nothing() {
        assert_eq!(Request::new("stop").arguments(()).unwrap().arguments, None);
        assert_eq!(Request::new("stop").arguments(None::<Value>).unwrap().arguments, None);
        let with = Request::new("x").arguments(json!({"a": 1})).unwrap();
        assert_eq!(with.arguments, json!({"a": 1}).as_object().cloned());
        let error = Request::new("x").arguments(json!([1])).unwrap_err();
        assert!(matches!(&error, Error::InvalidRequest(why) if why.contains("'x'")), "{error}");
        let mut bad_keys = std::collections::HashMap::new();
        bad_keys.insert((1, 2), 3);
        assert!(matches!(Request::new("x").arguments(bad_keys), Err(Error::InvalidRequest(_))));
    }
}
