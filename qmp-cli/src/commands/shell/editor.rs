//! Line editing on a terminal: rustyline with history and completion of command names.

use std::borrow::Cow;
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};

use crate::exit::Failure;
use crate::output::escape_for_terminal;

/// Most entries kept in the history file.
const HISTORY_SIZE: usize = 1000;
/// Words the shell itself understands, completed along with the server's commands.
const BUILTINS: &[&str] = &["exit", "help", "quit"];

/// The shell's line editor.
pub(super) type ShellEditor = Editor<CommandCompleter, DefaultHistory>;

/// A line editor that completes `commands` (the server's) and the shell's own words, and
/// keeps lines in its history only when told to (lines starting with a space never).
///
/// # Errors
/// When rustyline cannot be set up.
pub(super) fn new_editor(commands: Vec<String>) -> Result<ShellEditor, Failure> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_space(true)
        .max_history_size(HISTORY_SIZE)
        .map_err(|e| Failure::usage(format!("cannot set up line editing: {e}")))?
        .completion_type(CompletionType::List)
        .build();
    let mut editor = Editor::with_config(config)
        .map_err(|e| Failure::usage(format!("cannot set up line editing: {e}")))?;
    let names = completion_names(commands);
    editor.set_helper(Some(CommandCompleter { names }));
    Ok(editor)
}

/// The words to complete: the shell's own and the server's commands, sorted, without
/// `qmp_capabilities` (the connection made it already) and without names the terminal
/// would have to see escaped (no name to type).
fn completion_names(commands: Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = BUILTINS.iter().map(|&b| b.to_owned()).collect();
    names.extend(
        commands.into_iter().filter(|c| {
            c != "qmp_capabilities" && matches!(escape_for_terminal(c), Cow::Borrowed(_))
        }),
    );
    names.sort();
    names.dedup();
    names
}

/// `$XDG_STATE_HOME/qmp/history`, else `~/.local/state/qmp/history`.
pub(super) fn history_path() -> Option<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))?;
    Some(state.join("qmp").join("history"))
}

/// Completes the first word from the server's commands (and the shell's own words).
pub(super) struct CommandCompleter {
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

    #[test]
    fn completion_offers_only_names_that_can_be_shown() {
        let server = ["stop", "qmp_capabilities", "evil\u{1b}[2J", "quit", "x\u{202e}"];
        let names = completion_names(server.iter().map(|&s| s.to_owned()).collect());
        assert_eq!(names, ["exit", "help", "quit", "stop"]);
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
}
