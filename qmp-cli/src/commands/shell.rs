//! `qmp shell`: an interactive QMP shell on a terminal, a line-by-line script runner
//! otherwise.
//!
//! Input lines come from a thread (rustyline on a terminal, plain reads otherwise) over a
//! bounded channel, so the connection, its events and Ctrl-C are handled while a line is
//! being typed or read.

use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::mpsc as std_mpsc;
use std::thread;

use qmp_client::{Client, DisconnectReason, Error, EventFilter, EventItem, Subscription};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, ExternalPrinter, Helper};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::cli::{GlobalArgs, ShellArgs};
use crate::exit::{Failure, Status};
use crate::output::{self, Style};

/// Longest input line accepted when reading a script (as QMP's own message limit).
const MAX_LINE: usize = 10 * 1024 * 1024;
/// Most entries kept in the history file.
const HISTORY_SIZE: usize = 1000;
/// The prompt on a terminal.
const PROMPT: &str = "qmp> ";
/// Words the shell itself understands, completed along with the server's commands.
const BUILTINS: &[&str] = &["exit", "help", "quit"];

/// One line of input, as the shell understands it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// Blank or a `#` comment.
    Skip,
    /// `quit` or `exit`.
    Quit,
    /// `help`: list the server's commands.
    Help,
    /// A QMP command with its arguments, if any.
    Command { name: String, arguments: Option<Map<String, Value>> },
}

/// Parses one input line: `NAME`, `NAME {json}`, or `NAME key=value ...`.
///
/// # Errors
/// A description of what is malformed.
pub(crate) fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Skip);
    }
    let (name, rest) = match line.find(char::is_whitespace) {
        Some(at) => (&line[..at], line[at..].trim_start()),
        None => (line, ""),
    };
    match (name, rest.is_empty()) {
        ("quit" | "exit", true) => return Ok(Line::Quit),
        ("help", true) => return Ok(Line::Help),
        _ => {}
    }
    let arguments = if rest.is_empty() {
        None
    } else if rest.starts_with('{') {
        match serde_json::from_str(rest) {
            Ok(Value::Object(map)) => Some(map),
            Ok(_) => unreachable!("text starting with '{{' parses only as an object"),
            Err(e) => return Err(format!("the arguments are not a valid JSON object: {e}")),
        }
    } else {
        Some(parse_key_values(rest)?)
    };
    Ok(Line::Command { name: name.to_owned(), arguments })
}

/// Parses `key=value ...` into an object; see [`parse_value`] for the values.
fn parse_key_values(text: &str) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for token in split_words(text)? {
        let Some((key, value)) = token.split_once('=') else {
            return Err(format!("expected key=value, got '{token}'"));
        };
        if key.is_empty() {
            return Err(format!("'{token}' has no key before '='"));
        }
        if map.insert(key.to_owned(), parse_value(value)).is_some() {
            return Err(format!("'{key}' is given twice"));
        }
    }
    Ok(map)
}

/// A `key=value` value: `'text'` is the string `text`; anything that parses as JSON is that
/// (`1`, `true`, `null`, `"a b"`, `{"a": 1}`, `[1]`); anything else is a string as written.
fn parse_value(text: &str) -> Value {
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Value::String(inner.to_owned());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Splits at whitespace that is outside quotes, braces and brackets, so `a="x y"` and
/// `b={"c": 1}` stay whole. Quotes are kept (the value parser needs them).
fn split_words(text: &str) -> Result<Vec<&str>, String> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth: usize = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            c if c.is_whitespace() && depth == 0 => {
                if let Some(from) = start.take() {
                    words.push(&text[from..at]);
                }
                continue;
            }
            '"' | '\'' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        start.get_or_insert(at);
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if let Some(from) = start {
        words.push(&text[from..]);
    }
    Ok(words)
}

/// What the input thread hands over.
#[derive(Debug)]
enum Input {
    Line(String),
    /// End of input (EOF, Ctrl-D).
    End,
    /// Reading failed.
    Failed(String),
}

/// What the terminal thread is told after each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Next,
    Stop,
}

/// Runs the shell.
///
/// # Errors
/// Interactive: status 3 when the connection is lost. Script: the status of the first
/// failed line, or 3 at once when the connection is lost.
pub(crate) async fn run(global: &GlobalArgs, _args: &ShellArgs) -> Result<(), Failure> {
    let client = super::connect(global).await?;
    let style = Style::for_stdout(global.json);
    if io::stdin().is_terminal() {
        interactive(&client, style).await
    } else {
        script(&client, style).await
    }
}

/// Where events and messages go while a command runs or a line is typed.
enum Sink {
    /// Script mode: events on stderr.
    Stderr,
    /// A terminal without rustyline's printer: stdout.
    Stdout,
    /// Above rustyline's prompt.
    Printer(Box<dyn ExternalPrinter>),
}

impl Sink {
    fn event(&mut self, item: &EventItem) {
        let line = match item {
            EventItem::Event(event) => output::event_summary(event),
            EventItem::Lagged(n) => format!("[events] {n} dropped (the output could not keep up)"),
            EventItem::Gap(reason) => format!("[events] gap: {reason}"),
            _ => return,
        };
        self.message(&line);
    }

    fn message(&mut self, line: &str) {
        match self {
            Self::Stderr => output::print_stderr(line),
            Self::Stdout => {
                let _ = output::print_line(line);
            }
            Self::Printer(printer) => {
                if printer.print(format!("{line}\n")).is_err() {
                    let _ = output::print_line(line);
                }
            }
        }
    }
}

/// The outcome of one line.
enum Step {
    Done,
    Quit,
    /// The line failed; the shell goes on.
    Failed(Failure),
    /// The connection is gone; the shell ends.
    Lost(Failure),
}

/// Runs one line: parses it, runs the command while showing events, prints the result.
async fn step(
    client: &Client,
    events: &mut Subscription,
    sink: &mut Sink,
    style: Style,
    text: &str,
    interactive: bool,
) -> Step {
    let (name, arguments) = match parse_line(text) {
        Ok(Line::Skip) => return Step::Done,
        Ok(Line::Quit) => return Step::Quit,
        Ok(Line::Help) => {
            let mut names = client.commands();
            names.retain(|n| n != "qmp_capabilities");
            let text = format!(
                "{}\nInput: NAME, NAME {{json}}, or NAME key=value ...; quit or exit to end.",
                names.join(" ")
            );
            return print_result(&text);
        }
        Ok(Line::Command { name, arguments }) => (name, arguments),
        Err(why) => return Step::Failed(Failure::usage(why)),
    };
    let call = pin!(client.execute(&name, arguments));
    let mut call = call;
    let mut interrupted = pin!(async {
        if !interactive || tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            Some(item) = events.recv() => sink.event(&item),
            () = &mut interrupted => {
                return Step::Failed(Failure::new(
                    Status::CommandFailed,
                    format!("interrupted: stopped waiting for '{name}'; its outcome is unknown"),
                ));
            }
        }
    };
    match result {
        Ok(value) => print_result(&style.render(&value)),
        Err(error @ Error::Disconnected(_)) => Step::Lost(Failure::from_client(&error)),
        Err(error) => Step::Failed(Failure::from_client(&error)),
    }
}

fn print_result(text: &str) -> Step {
    match output::print_line(text) {
        Ok(()) => Step::Done,
        // stdout is gone: nothing more can be shown, so end (quietly for a closed pipe).
        Err(failure) => Step::Lost(failure),
    }
}

/// Why the connection ended, as a failure.
fn lost(client: &Client) -> Failure {
    let error = client.close_error().unwrap_or(Error::Disconnected(DisconnectReason::Eof));
    Failure::from_client(&error)
}

/// Script mode: reads lines from stdin, one result per line on stdout, events on stderr.
async fn script(client: &Client, style: Style) -> Result<(), Failure> {
    let (lines_tx, mut lines) = mpsc::channel(16);
    // Left blocked in a read if the shell ends first; the process exits all the same.
    thread::Builder::new()
        .name("qmp-stdin".into())
        .spawn(move || read_script(&lines_tx))
        .map_err(|e| Failure::usage(format!("cannot start the input thread: {e}")))?;
    let mut events = client.subscribe(EventFilter::all());
    let mut sink = Sink::Stderr;
    let mut first_failure: Option<Failure> = None;
    loop {
        tokio::select! {
            input = lines.recv() => match input.unwrap_or(Input::End) {
                Input::Line(text) => {
                    match step(client, &mut events, &mut sink, style, &text, false).await {
                        Step::Done => {}
                        Step::Quit => break,
                        Step::Failed(failure) => {
                            report(&failure);
                            first_failure.get_or_insert(failure);
                        }
                        Step::Lost(failure) => return Err(failure),
                    }
                }
                Input::End => break,
                Input::Failed(why) => return Err(Failure::usage(why)),
            },
            item = events.recv() => match item {
                Some(item) => sink.event(&item),
                None => return Err(lost(client)),
            },
        }
    }
    match first_failure {
        // Already reported: just end with its status.
        Some(failure) => Err(Failure::quiet(failure.status)),
        None => Ok(()),
    }
}

fn report(failure: &Failure) {
    if let Some(message) = &failure.message {
        output::print_stderr(message);
    }
}

/// Reads stdin line by line (each at most [`MAX_LINE`] bytes) into `lines`.
fn read_script(lines: &mpsc::Sender<Input>) {
    let stdin = io::stdin();
    let mut reader = stdin.lock();
    let mut number = 0_u64;
    loop {
        number += 1;
        let input = match read_bounded_line(&mut reader, MAX_LINE) {
            Ok(Some(Ok(line))) => Input::Line(line),
            Ok(Some(Err(len))) => Input::Failed(format!(
                "line {number} is too long ({len} bytes, at most {MAX_LINE})"
            )),
            Ok(None) => Input::End,
            Err(e) => Input::Failed(format!("cannot read stdin: {e}")),
        };
        let last = !matches!(input, Input::Line(_));
        if lines.blocking_send(input).is_err() || last {
            return;
        }
    }
}

/// Reads one line (without its `\n`), holding at most `max` bytes of it: `Ok(None)` at the
/// end of input, `Ok(Some(Err(len)))` for a line that was too long (read past and dropped).
fn read_bounded_line(
    reader: &mut impl BufRead,
    max: usize,
) -> io::Result<Option<Result<String, usize>>> {
    let mut line = Vec::new();
    let mut len = 0_usize;
    let mut any = false;
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], Some(at + 1)),
            None => (buffer, None),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        }
        let used = done.unwrap_or(buffer.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if len > max {
        return Ok(Some(Err(len)));
    }
    Ok(Some(Ok(String::from_utf8_lossy(&line).into_owned())))
}

/// Interactive mode: rustyline on its own thread; events shown above the prompt.
async fn interactive(client: &Client, style: Style) -> Result<(), Failure> {
    let mut editor = new_editor(client.commands())?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut sink = match editor.create_external_printer() {
        Ok(printer) => Sink::Printer(Box::new(printer)),
        Err(_) => Sink::Stdout,
    };
    let (lines_tx, mut lines) = mpsc::channel(1);
    let (reply_tx, reply_rx) = std_mpsc::channel();
    let terminal = thread::Builder::new()
        .name("qmp-readline".into())
        .spawn(move || read_terminal(editor, history, &lines_tx, &reply_rx))
        .map_err(|e| Failure::usage(format!("cannot start the input thread: {e}")))?;

    let version = &client.greeting().version.qemu;
    sink.message(&format!(
        "Connected to QEMU {}.{}.{}. Type `help` for the commands, `quit` or Ctrl-D to leave.",
        version.major, version.minor, version.micro
    ));
    let mut events = client.subscribe(EventFilter::all());
    let mut ending: Option<Failure> = None;
    loop {
        tokio::select! {
            input = lines.recv() => {
                let Some(Input::Line(text)) = input else {
                    if let Some(Input::Failed(why)) = input {
                        ending.get_or_insert(Failure::usage(why));
                    }
                    break;
                };
                if ending.is_some() {
                    // Lost while the line was typed: this line only ends the shell.
                    let _ = reply_tx.send(Reply::Stop);
                    break;
                }
                let next = match step(client, &mut events, &mut sink, style, &text, true).await {
                    Step::Done => Reply::Next,
                    Step::Quit => Reply::Stop,
                    Step::Failed(failure) => {
                        report(&failure);
                        Reply::Next
                    }
                    Step::Lost(failure) => {
                        report(&failure);
                        ending = Some(Failure::quiet(failure.status));
                        Reply::Stop
                    }
                };
                let _ = reply_tx.send(next);
                if next == Reply::Stop {
                    break;
                }
            },
            item = events.recv(), if ending.is_none() => {
                if let Some(item) = item {
                    sink.event(&item);
                } else {
                    let failure = lost(client);
                    if let Some(message) = &failure.message {
                        sink.message(&format!("{message} (press Enter to leave)"));
                    }
                    ending = Some(Failure::quiet(failure.status));
                }
            }
        }
    }
    drop(reply_tx);
    // The terminal thread restores the terminal and saves the history before it ends.
    let _ = terminal.join();
    ending.map_or(Ok(()), Err)
}

type ShellEditor = Editor<CommandCompleter, DefaultHistory>;

fn new_editor(commands: Vec<String>) -> Result<ShellEditor, Failure> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_space(true)
        .max_history_size(HISTORY_SIZE)
        .map_err(|e| Failure::usage(format!("cannot set up line editing: {e}")))?
        .completion_type(CompletionType::List)
        .build();
    let mut editor = Editor::with_config(config)
        .map_err(|e| Failure::usage(format!("cannot set up line editing: {e}")))?;
    let mut names: Vec<String> = BUILTINS.iter().map(|&b| b.to_owned()).collect();
    names.extend(commands.into_iter().filter(|c| c != "qmp_capabilities"));
    names.sort();
    names.dedup();
    editor.set_helper(Some(CommandCompleter { names }));
    Ok(editor)
}

/// The terminal thread: reads a line, hands it over, waits until it was run.
fn read_terminal(
    mut editor: ShellEditor,
    history: Option<PathBuf>,
    lines: &mpsc::Sender<Input>,
    replies: &std_mpsc::Receiver<Reply>,
) {
    loop {
        let input = match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                Input::Line(line)
            }
            // Ctrl-C at the prompt clears the line, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => Input::End,
            Err(e) => Input::Failed(format!("cannot read the terminal: {e}")),
        };
        let wait = matches!(input, Input::Line(_));
        if lines.blocking_send(input).is_err() || !wait {
            break;
        }
        if replies.recv() != Ok(Reply::Next) {
            break;
        }
    }
    if let Some(path) = history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Best effort: a shell without a writable state directory still works.
        let _ = editor.save_history(&path);
    }
}

/// `$XDG_STATE_HOME/qmp/history`, else `~/.local/state/qmp/history`.
fn history_path() -> Option<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))?;
    Some(state.join("qmp").join("history"))
}

/// Completes the first word from the server's commands (and the shell's own words).
struct CommandCompleter {
    names: Vec<String>,
}

impl Completer for CommandCompleter {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        Ok(complete_command(&self.names, line, pos))
    }
}

/// The completions of the word before `pos`, if it is the line's first word.
fn complete_command(names: &[String], line: &str, pos: usize) -> (usize, Vec<Pair>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.len() - before.trim_start().len();
    let word = &before[start..];
    if word.contains(char::is_whitespace) {
        return (pos, Vec::new());
    }
    let pairs = names
        .iter()
        .filter(|name| name.starts_with(word))
        .map(|name| Pair { display: name.clone(), replacement: name.clone() })
        .collect();
    (start, pairs)
}

impl Hinter for CommandCompleter {
    type Hint = String;
}

impl Highlighter for CommandCompleter {}

impl Validator for CommandCompleter {}

impl Helper for CommandCompleter {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command(line: &str) -> (String, Option<Value>) {
        match parse_line(line).unwrap() {
            Line::Command { name, arguments } => (name, arguments.map(Value::Object)),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn lines_are_commands_with_json_or_key_values() {
        assert_eq!(parse_line("  ").unwrap(), Line::Skip);
        assert_eq!(parse_line("# query-status").unwrap(), Line::Skip);
        assert_eq!(parse_line("quit").unwrap(), Line::Quit);
        assert_eq!(parse_line(" exit ").unwrap(), Line::Quit);
        assert_eq!(parse_line("help").unwrap(), Line::Help);
        assert_eq!(command("query-status"), ("query-status".into(), None));
        assert_eq!(
            command(r#"qom-list {"path": "/machine"}"#),
            ("qom-list".into(), Some(json!({"path": "/machine"})))
        );
        assert_eq!(
            command("qom-list path=/machine"),
            ("qom-list".into(), Some(json!({"path": "/machine"})))
        );
        let (_, arguments) = command(
            r#"x n=1 f=1.5 t=true no=false z=null s=text q="a b" sq='42' o={"a": [1, 2]} l=[1, 2] e="#,
        );
        assert_eq!(
            arguments.unwrap(),
            json!({"n": 1, "f": 1.5, "t": true, "no": false, "z": null, "s": "text",
                   "q": "a b", "sq": "42", "o": {"a": [1, 2]}, "l": [1, 2], "e": ""})
        );
        assert_eq!(
            command(r#"human-monitor-command command-line="info pci""#).1.unwrap(),
            json!({"command-line": "info pci"})
        );
    }

    #[test]
    fn malformed_lines_say_why() {
        for bad in
            ["x {", "x {\"a\": }", "x novalue", "x =1", "x a=1 a=2", "x a=\"open", "quit now"]
        {
            let why = parse_line(bad).unwrap_err();
            assert!(!why.is_empty(), "{bad}");
        }
    }

    #[test]
    fn completion_covers_the_first_word_only() {
        let names: Vec<String> =
            ["query-status", "query-pci", "quit", "stop"].iter().map(|&s| s.into()).collect();
        let (start, pairs) = complete_command(&names, "  query-", 8);
        assert_eq!(start, 2);
        let got: Vec<_> = pairs.iter().map(|p| p.replacement.as_str()).collect();
        assert_eq!(got, ["query-status", "query-pci"]);
        assert!(complete_command(&names, "query-status pa", 15).1.is_empty());
        assert_eq!(complete_command(&names, "", 0).1.len(), 4);
    }

    #[test]
    fn script_lines_are_bounded() {
        let mut input = io::Cursor::new(b"short\nxxxxxxxxxxxx\nlast".to_vec());
        let mut reader = io::BufReader::with_capacity(4, &mut input);
        assert_eq!(read_bounded_line(&mut reader, 8).unwrap(), Some(Ok("short".into())));
        assert_eq!(read_bounded_line(&mut reader, 8).unwrap(), Some(Err(12)));
        assert_eq!(read_bounded_line(&mut reader, 8).unwrap(), Some(Ok("last".into())));
        assert_eq!(read_bounded_line(&mut reader, 8).unwrap(), None);
    }
}
