//! Where shell lines come from: stdin read line by line when it is not a terminal
//! (scripted, piped), else the line editor. Both run on a thread of their own and hand lines
//! over a bounded channel, so the connection, its events and Ctrl-C are served meanwhile.

use std::io::{self, BufRead};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread;

use qmp_codec::DEFAULT_MAX_FRAME_LEN;
use rustyline::error::ReadlineError;
use tokio::sync::mpsc;

use super::editor::ShellEditor;
use crate::exit::Failure;

/// The prompt on a terminal.
const PROMPT: &str = "qmp> ";

/// What the input thread hands over.
#[derive(Debug)]
pub(super) enum Input {
    /// One line, without its line end.
    Line(String),
    /// End of input (EOF, Ctrl-D).
    End,
    /// Reading failed.
    Failed(String),
}

/// What the terminal thread is told after each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// Read the next line.
    Next,
    /// The shell ends: restore the terminal and save the history.
    Stop,
}

/// Starts the thread that reads a script from stdin.
///
/// # Errors
/// When the thread cannot be started.
pub(super) fn spawn_script_reader() -> Result<mpsc::Receiver<Input>, Failure> {
    let (lines_tx, lines) = mpsc::channel(16);
    // Left blocked in a read if the shell ends first; the process exits all the same.
    thread::Builder::new()
        .name("qmp-stdin".into())
        .spawn(move || read_script(&lines_tx))
        .map_err(|e| Failure::usage(format!("cannot start the input thread: {e}")))?;
    Ok(lines)
}

/// The terminal thread's ends: lines from it, and after each line, whether to go on.
pub(super) struct Terminal {
    pub(super) lines: mpsc::Receiver<Input>,
    pub(super) replies: std_mpsc::Sender<Reply>,
    pub(super) thread: thread::JoinHandle<()>,
}

/// Starts the thread that reads lines with `editor`, saving the history to `history` when
/// it ends.
///
/// # Errors
/// When the thread cannot be started.
pub(super) fn spawn_terminal_reader(
    editor: ShellEditor,
    history: Option<PathBuf>,
) -> Result<Terminal, Failure> {
    let (lines_tx, lines) = mpsc::channel(1);
    let (replies, reply_rx) = std_mpsc::channel();
    let thread = thread::Builder::new()
        .name("qmp-readline".into())
        .spawn(move || read_terminal(editor, history, &lines_tx, &reply_rx))
        .map_err(|e| Failure::usage(format!("cannot start the input thread: {e}")))?;
    Ok(Terminal { lines, replies, thread })
}

/// Reads stdin line by line into `lines`; a line may be as long as QMP's framing accepts
/// as one message ([`DEFAULT_MAX_FRAME_LEN`]).
fn read_script(lines: &mpsc::Sender<Input>) {
    let stdin = io::stdin();
    let mut reader = stdin.lock();
    let mut number = 0_u64;
    loop {
        number += 1;
        let input = match read_bounded_line(&mut reader, DEFAULT_MAX_FRAME_LEN) {
            Ok(Some(Ok(line))) => Input::Line(line),
            Ok(Some(Err(len))) => Input::Failed(format!(
                "line {number} is too long ({len} bytes, at most {DEFAULT_MAX_FRAME_LEN})"
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

#[cfg(test)]
mod tests {
    use super::*;

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
