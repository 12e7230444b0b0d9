//! How results and events are written: JSON values (indented on a terminal, else one line),
//! event lines, progress on stderr, and write errors turned into [`Failure`]s.
//!
//! Text from the server (device ids, descriptions, error classes, event names) is shown on
//! a terminal only through [`escape_for_terminal`]; JSON output is left to the JSON
//! serialiser, which escapes control characters itself, so `--json` stays exact and valid.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

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

/// An event as the shell shows it: `[event] NAME {data}` (no data part when there is none),
/// escaped for the terminal.
pub(crate) fn event_summary(event: &Event) -> String {
    let line = match &event.data {
        Some(data) => format!("[event] {} {data}", event.event),
        None => format!("[event] {}", event.event),
    };
    escape_for_terminal(&line).into_owned()
}

/// `text` made safe to show on a terminal: every character that could move the cursor,
/// start an escape sequence or reorder what is shown is written out as an escape instead.
///
/// * C0 controls, DEL and C1 controls (`ESC`, `CSI` U+009B among them): `\n`, `\r`, `\t`,
///   else `\u{1b}`;
/// * Unicode bidirectional controls (U+061C, U+200E/F, U+202A-202E, U+2066-2069):
///   `\u{202e}`.
///
/// Everything else, including non-ASCII text, stays as it is, and text with nothing to
/// escape is not copied. The result is for reading, not for parsing back: a literal `\n`
/// in `text` looks the same as an escaped newline.
pub(crate) fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(needs_escape) else {
        return Cow::Borrowed(text);
    };
    let mut escaped = String::with_capacity(text.len() + 8);
    escaped.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Whether a terminal could act on `c` instead of showing it.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Runs `work`; on a terminal, shows `label` and the time spent on stderr while it waits.
pub(crate) async fn with_progress<T>(label: &str, work: impl Future<Output = T>) -> T {
    if !io::stderr().is_terminal() {
        return work.await;
    }
    let label = escape_for_terminal(label);
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => {
                eprint!("\r\x1b[2K");
                return result;
            }
            _ = ticks.tick() => eprint!("\r\x1b[2K{label}... {:.1}s", start.elapsed().as_secs_f64()),
        }
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
    fn terminal_escapes_are_shown_not_acted_on() {
        assert!(matches!(escape_for_terminal("nic-a-pci-5 Ethernet"), Cow::Borrowed(_)));
        assert!(matches!(escape_for_terminal("größe ✓"), Cow::Borrowed(_)));
        assert_eq!(escape_for_terminal("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_for_terminal("\u{9b}31m\u{7f}\u{0}"), "\\u{9b}31m\\u{7f}\\u{0}");
        assert_eq!(escape_for_terminal("x\ny\r\tz"), "x\\ny\\r\\tz");
        assert_eq!(escape_for_terminal("abc\u{202e}fed"), "abc\\u{202e}fed");
        let shown = escape_for_terminal("\u{1b}]0;title\u{7}é\u{2066}");
        assert!(!shown.chars().any(needs_escape), "{shown}");
    }

    #[test]
    fn event_summaries_escape_the_server_text() {
        let hostile = Event {
            event: "EVIL\u{1b}[31m".into(),
            data: Some(json!({"why": "\u{9b}2J"})),
            timestamp: Timestamp { seconds: 1, microseconds: 0 },
        };
        let line = event_summary(&hostile);
        assert!(!line.chars().any(needs_escape), "{line}");
        assert!(line.starts_with("[event] EVIL\\u{1b}[31m "), "{line}");
    }

    #[test]
    fn compact_values_are_one_line() {
        let value = json!({"status": "running", "list": [1, 2]});
        assert!(!Style { pretty: false }.render(&value).contains('\n'));
        assert!(Style { pretty: true }.render(&value).contains('\n'));
    }
}
