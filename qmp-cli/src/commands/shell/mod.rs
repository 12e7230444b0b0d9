//! `qmp shell`: an interactive QMP shell on a terminal, a line-by-line script runner
//! otherwise.
//!
//! [`qmp_cli::shell_line`] turns a line into a command, [`input`] delivers lines (from a script or the
//! terminal, on a thread of their own), [`editor`] is the terminal's line editor; this module
//! runs the lines and shows events meanwhile.

mod editor;
mod input;

use std::io::{self, IsTerminal};
use std::pin::pin;

use qmp_cli::shell_line::{Line, parse_line};
use qmp_client::{Client, DisconnectReason, Error, EventFilter, EventItem, Subscription};
use rustyline::ExternalPrinter;

use self::input::{Input, Reply};
use crate::cli::{GlobalArgs, ShellArgs};
use crate::exit::{Failure, Status};
use crate::output::{self, Style};

/// Runs the shell.
///
/// # Errors
/// Interactive: status 3 when the connection is lost. Script: the status of the first
/// failed line, or 3 at once when the connection is lost.
pub(crate) async fn run(global: &GlobalArgs, _args: &ShellArgs) -> Result<(), Failure> {
    let client = crate::connect::connect(global).await?;
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

    /// Shows `line`, escaped for the terminal (lines escaped before show the same).
    fn message(&mut self, line: &str) {
        let line = &*output::escape_for_terminal(line);
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
            // The names come from the server.
            let text = format!(
                "{}\nInput: NAME, NAME {{json}}, or NAME key=value ...; quit or exit to end.",
                output::escape_for_terminal(&names.join(" "))
            );
            return print_result(&text);
        }
        Ok(Line::Command { name, arguments }) => (name, arguments),
        Err(why) => return Step::Failed(Failure::usage(why.to_string())),
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
    // Events QEMU sent before its reply are queued already: shown first, and not lost when
    // this was a script's last line.
    while let Some(item) = events.try_recv() {
        sink.event(&item);
    }
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
    let mut lines = input::spawn_script_reader()?;
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

/// Interactive mode: rustyline on its own thread; events shown above the prompt.
async fn interactive(client: &Client, style: Style) -> Result<(), Failure> {
    // For completing argument names and values; without one, command names only.
    let schema = client.schema().await.ok().flatten();
    let mut editor = editor::new_editor(client.commands(), schema)?;
    let history = editor::history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut sink = match editor.create_external_printer() {
        Ok(printer) => Sink::Printer(Box::new(printer)),
        Err(_) => Sink::Stdout,
    };
    let input::Terminal { mut lines, replies: reply_tx, thread: terminal } =
        input::spawn_terminal_reader(editor, history)?;

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
