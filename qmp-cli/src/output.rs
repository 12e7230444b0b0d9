//! How results and events are written: JSON values (indented on a terminal, else one line),
//! event lines, progress on stderr, and write errors turned into [`Failure`]s.
//!
//! Nothing the server (or a guest) sends reaches the terminal raw. Text is shown through
//! [`escape_for_terminal`] (one line) or [`escape_text_for_terminal`] (HMP's multi-line
//! text); JSON goes through [`Style::render`] or [`event_json`], which stay valid, exact
//! JSON but write every character a terminal could act on as a `\uXXXX` escape: the JSON
//! encoder escapes C0 controls itself, [`TerminalSafe`] adds DEL, the C1 controls
//! (U+0080-U+009F, CSI among them) and the bidirectional controls.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use qmp_client::Event;
use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter, Serializer};

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

    /// `value` as JSON text, without a trailing newline, with the characters a terminal
    /// could act on escaped ([`TerminalSafe`]).
    pub(crate) fn render(self, value: &Value) -> String {
        if self.pretty {
            to_safe_json(value, PrettyFormatter::new())
        } else {
            to_safe_json(value, CompactFormatter)
        }
    }
}

/// `value` serialised with `formatter` wrapped in [`TerminalSafe`].
fn to_safe_json(value: &Value, formatter: impl Formatter) -> String {
    let mut bytes = Vec::new();
    let mut serializer = Serializer::with_formatter(&mut bytes, TerminalSafe(formatter));
    // A `Value` has string keys only, and a Vec takes every write: this cannot fail.
    if value.serialize(&mut serializer).is_err() {
        return value.to_string();
    }
    // The serialiser writes UTF-8, and the escapes are ASCII.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A JSON formatter that writes, inside strings, DEL, the C1 controls and the bidirectional
/// controls as `\uXXXX` escapes (the same characters [`escape_for_terminal`] escapes; the
/// C0 controls the JSON encoder escapes itself). The JSON means exactly the same; a
/// terminal just never receives those characters raw. Layout is `F`'s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TerminalSafe<F>(pub(crate) F);

impl<F: Formatter> Formatter for TerminalSafe<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(needs_escape) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let Some(c) = rest[at..].chars().next() else { break };
            // Every character `needs_escape` matches outside C0 is in the BMP: one `\u`.
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    // The layout: whatever `F` does.
    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_array(writer)
    }
    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object(writer)
    }
    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(writer, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_key(writer)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object_value(writer)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_value(writer)
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

/// Writes a line to stderr, escaped for the terminal (escaping is idempotent, so text
/// escaped before is shown the same); a failure to write is ignored (there is nowhere to
/// report it).
pub(crate) fn print_stderr(text: &str) {
    let mut stderr = io::stderr().lock();
    let text = escape_for_terminal(text);
    let _ = stderr.write_all(text.as_bytes()).and_then(|()| stderr.write_all(b"\n"));
}

/// An event as one line of JSON, in QEMU's own shape and key order:
/// `{"event": .., "data": .., "timestamp": {"seconds": .., "microseconds": ..}}`, `data` left
/// out when the event has none; strings as [`Style::render`] writes them.
pub(crate) fn event_json(event: &Event) -> String {
    let compact = Style { pretty: false };
    let name = compact.render(&Value::String(event.event.clone()));
    let timestamp = format!(
        "{{\"seconds\":{},\"microseconds\":{}}}",
        event.timestamp.seconds, event.timestamp.microseconds
    );
    match &event.data {
        Some(data) => format!(
            "{{\"event\":{name},\"data\":{},\"timestamp\":{timestamp}}}",
            compact.render(data)
        ),
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

/// `text` made safe to show on a terminal as one line: every character that could move
/// the cursor, start an escape sequence or reorder what is shown is written out as an
/// escape instead.
///
/// * C0 controls, DEL and C1 controls (`ESC`, `CSI` U+009B among them): `\n`, `\r`, `\t`,
///   else `\u{1b}`;
/// * Unicode bidirectional controls (U+061C, U+200E/F, U+202A-202E, U+2066-2069):
///   `\u{202e}`.
///
/// Everything else, including non-ASCII text, stays as it is, and text with nothing to
/// escape is not copied. The result is for reading, not for parsing back: a literal `\n`
/// in `text` looks the same as an escaped newline. Escaping twice changes nothing more.
pub(crate) fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, Lines::Escaped)
}

/// Like [`escape_for_terminal`], for text of several lines (HMP's output): newlines, tabs
/// and the carriage return of a CRLF line end stay as they are; a carriage return on its
/// own (which would let a line overwrite itself) is escaped like every other control.
pub(crate) fn escape_text_for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, Lines::Kept)
}

/// Whether line ends and tabs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lines {
    Escaped,
    Kept,
}

fn escape(text: &str, lines: Lines) -> Cow<'_, str> {
    let kept = |c: char| lines == Lines::Kept && matches!(c, '\n' | '\t');
    let Some(first) = text.find(|c: char| needs_escape(c) && !kept(c)) else {
        return Cow::Borrowed(text);
    };
    let mut escaped = String::with_capacity(text.len() + 8);
    escaped.push_str(&text[..first]);
    let mut chars = text[first..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if kept(c) => escaped.push(c),
            '\r' if lines == Lines::Kept && chars.peek() == Some(&'\n') => escaped.push(c),
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
    // Clears the progress line when the wait ends, also when it is cancelled (`qmp demo`
    // on a signal), so what is printed next starts on a clean line.
    let _clear = ClearProgressLine;
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticks.tick() => eprint!("\r\x1b[2K{label}... {:.1}s", start.elapsed().as_secs_f64()),
        }
    }
}

/// Erases the current line of the terminal on stderr when dropped.
struct ClearProgressLine;

impl Drop for ClearProgressLine {
    fn drop(&mut self) {
        eprint!("\r\x1b[2K");
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

    /// Characters a terminal acts on that the JSON encoder leaves raw.
    const HOSTILE: &str = "a\u{1b}[2J\u{7f}\u{85}\u{9b}31m\u{202e}\u{2066}\u{61c}\u{200f}é✓\n\"\\z";

    #[test]
    fn json_is_exact_and_never_carries_terminal_controls() {
        let value = json!({HOSTILE: [HOSTILE, {"k": HOSTILE}], "n": 1.5, "t": true, "z": null});
        for style in [Style { pretty: false }, Style { pretty: true }] {
            let text = style.render(&value);
            assert!(!text.chars().any(|c| needs_escape(c) && c != '\n'), "{text}");
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value, "{text}");
            assert!(text.contains("\\u009b31m\\u202e\\u2066"), "{text}");
            assert!(text.contains("é✓"), "{text}");
        }
        // Layout is the wrapped formatter's.
        let plain = json!({"a": [1, {"b": "c"}]});
        assert_eq!(Style { pretty: false }.render(&plain), serde_json::to_string(&plain).unwrap());
        assert_eq!(
            Style { pretty: true }.render(&plain),
            serde_json::to_string_pretty(&plain).unwrap()
        );
        let event = Event {
            event: HOSTILE.into(),
            data: Some(json!({"why": HOSTILE})),
            timestamp: Timestamp { seconds: 1, microseconds: 2 },
        };
        let line = event_json(&event);
        assert!(!line.chars().any(needs_escape), "{line}");
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (parsed["event"].as_str(), parsed["data"]["why"].as_str()),
            (Some(HOSTILE), Some(HOSTILE))
        );
    }

    #[test]
    fn text_keeps_its_lines_and_tabs_only() {
        assert!(matches!(escape_text_for_terminal("a\tb\nc\n"), Cow::Borrowed(_)));
        assert_eq!(escape_text_for_terminal("a\r\nb\rc\r"), "a\r\nb\\rc\\r");
        assert_eq!(
            escape_text_for_terminal("x\u{1b}[2J\ty\u{9b}\u{202e}\n"),
            "x\\u{1b}[2J\ty\\u{9b}\\u{202e}\n"
        );
        let shown = escape_text_for_terminal(HOSTILE);
        assert!(!shown.chars().any(|c| needs_escape(c) && c != '\n'), "{shown}");
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let once = escape_for_terminal(HOSTILE).into_owned();
        assert_eq!(escape_for_terminal(&once), once);
        let once = escape_text_for_terminal(HOSTILE).into_owned();
        assert_eq!(escape_text_for_terminal(&once), once);
    }

    #[test]
    fn compact_values_are_one_line() {
        let value = json!({"status": "running", "list": [1, 2]});
        assert!(!Style { pretty: false }.render(&value).contains('\n'));
        assert!(Style { pretty: true }.render(&value).contains('\n'));
    }
}
