//! How results and events are written: JSON values (indented on a terminal, else one line),
//! event lines, and write errors turned into [`Failure`]s.

use std::io::{self, IsTerminal, Write};

use qmp_client::Event;
use serde_json::Value;

use crate::exit::Failure;

/// How JSON values are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    /// Indented over several lines (else compact, on one line).
    pub(crate) pretty: bool,
}

impl Style {
    /// Indented when stdout is a terminal and `--json` was not given.
    pub(crate) fn for_stdout(json: bool) -> Self {
        Self { pretty: !json && io::stdout().is_terminal() }
    }

    /// `value` as text, without a trailing newline.
    pub(crate) fn render(self, value: &Value) -> String {
        let text = if self.pretty {
            serde_json::to_string_pretty(value)
        } else {
            serde_json::to_string(value)
        };
        // A `Value` (string keys only) always serialises.
        text.unwrap_or_else(|_| value.to_string())
    }
}

/// Writes `text` and a newline to stdout and flushes it.
///
/// # Errors
/// [`Failure::output`] of the write error.
pub(crate) fn print_line(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::output(&e))
}

/// Writes `text` to stdout as it is (no newline added) and flushes it.
///
/// # Errors
/// [`Failure::output`] of the write error.
pub(crate) fn print_raw(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| Failure::output(&e))
}

/// Writes a line to stderr; a failure to do so is ignored (there is nowhere to report it).
pub(crate) fn print_stderr(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes()).and_then(|()| stderr.write_all(b"\n"));
}

/// An event as one line of JSON, in QEMU's own shape and key order:
/// `{"event": .., "data": .., "timestamp": {"seconds": .., "microseconds": ..}}`, `data` left
/// out when the event has none.
pub(crate) fn event_json(event: &Event) -> String {
    let name = Value::String(event.event.clone());
    let timestamp = format!(
        "{{\"seconds\":{},\"microseconds\":{}}}",
        event.timestamp.seconds, event.timestamp.microseconds
    );
    match &event.data {
        Some(data) => format!("{{\"event\":{name},\"data\":{data},\"timestamp\":{timestamp}}}"),
        None => format!("{{\"event\":{name},\"timestamp\":{timestamp}}}"),
    }
}

/// An event as the shell shows it: `[event] NAME {data}` (no data part when there is none).
pub(crate) fn event_summary(event: &Event) -> String {
    match &event.data {
        Some(data) => format!("[event] {} {data}", event.event),
        None => format!("[event] {}", event.event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_client::Timestamp;
    use serde_json::json;

    fn event(data: Option<Value>) -> Event {
        Event {
            event: "STOP".into(),
            data,
            timestamp: Timestamp { seconds: 1_700_000_000, microseconds: 42 },
        }
    }

    #[test]
    fn events_keep_qemus_shape() {
        let line = event_json(&event(None));
        assert_eq!(
            line,
            r#"{"event":"STOP","timestamp":{"seconds":1700000000,"microseconds":42}}"#
        );
        let line = event_json(&event(Some(json!({"reason": "x\ny"}))));
        assert!(!line.contains('\n'));
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["data"]["reason"], "x\ny");
        assert_eq!(event_summary(&event(Some(json!({"a": 1})))), r#"[event] STOP {"a":1}"#);
        assert_eq!(event_summary(&event(None)), "[event] STOP");
    }

    #[test]
    fn compact_values_are_one_line() {
        let value = json!({"status": "running", "list": [1, 2]});
        assert!(!Style { pretty: false }.render(&value).contains('\n'));
        assert!(Style { pretty: true }.render(&value).contains('\n'));
    }
}
