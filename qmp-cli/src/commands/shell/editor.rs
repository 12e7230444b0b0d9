//! Line editing on a terminal: rustyline with history, and completion of command names
//! and, from the server's schema, of argument names and values (`key=value` form).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use qmp_schema::Schema;
use serde_json::Value;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};

use crate::exit::Failure;
use crate::output::escape_for_terminal;
use qmp_cli::shell_line::{Line, parse_line};

/// Most entries kept in the history file.
const HISTORY_SIZE: usize = 1000;
/// Words the shell itself understands, completed along with the server's commands.
const BUILTINS: &[&str] = &["exit", "help", "quit"];

/// The shell's line editor.
pub(super) type ShellEditor = Editor<CommandCompleter, DefaultHistory>;

/// A line editor that completes `commands` (the server's) and the shell's own words, and,
/// given the server's `schema`, argument names and values; it keeps lines in its history
/// only when told to (lines starting with a space never).
///
/// # Errors
/// When rustyline cannot be set up.
pub(super) fn new_editor(
    commands: Vec<String>,
    schema: Option<Arc<Schema>>,
) -> Result<ShellEditor, Failure> {
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
    editor.set_helper(Some(CommandCompleter { names, schema }));
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

/// Completes the first word from the server's commands (and the shell's own words), and
/// the words after it from the server's schema ([`complete_line`]).
pub(super) struct CommandCompleter {
    names: Vec<String>,
    schema: Option<Arc<Schema>>,
}

impl Completer for CommandCompleter {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        Ok(complete_line(&self.names, self.schema.as_deref(), line, pos))
    }
}

/// The completions of the word before `pos`: the first word from `names`; after it, in the
/// `NAME key=value ...` form, the command's argument names (as `name=`, leaving out those
/// given already) or, after `key=`, its values (enum values, `true`/`false`), following
/// the union variants the arguments typed so far pick (`driver=file` ...). Nothing for the
/// JSON form, for words in quotes or brackets, or without a schema.
fn complete_line(
    names: &[String],
    schema: Option<&Schema>,
    line: &str,
    pos: usize,
) -> (usize, Vec<Pair>) {
    let before = line.get(..pos).unwrap_or(line);
    let trimmed = before.trim_start();
    let Some(name_end) = trimmed.find(char::is_whitespace) else {
        return complete_command(names, line, pos);
    };
    let none = (pos, Vec::new());
    let Some(schema) = schema else { return none };
    let command = &trimmed[..name_end];
    if trimmed[name_end..].trim_start().starts_with('{') {
        return none;
    }
    let word_start = before.rfind(char::is_whitespace).map_or(0, |at| at + 1);
    let word = &before[word_start..];
    if word.contains(['"', '\'', '{', '[']) {
        return none;
    }
    // The arguments typed before this word pick union variants and are not offered again.
    let given = match parse_line(&before[..word_start]) {
        Ok(Line::Command { arguments: Some(map), .. }) => Some(Value::Object(map)),
        _ => None,
    };
    let candidates: Vec<String> = match word.split_once('=') {
        Some((key, prefix)) => schema
            .complete_value(command, given.as_ref(), key, prefix)
            .into_iter()
            .map(|value| format!("{key}={value}"))
            .collect(),
        // Nested members go inside a JSON value (`file={...}`): top-level names only.
        None if !word.contains('.') => schema
            .complete_member(command, given.as_ref(), word)
            .into_iter()
            .map(|member| format!("{member}="))
            .collect(),
        None => Vec::new(),
    };
    let pairs = candidates
        .into_iter()
        .filter(|text| matches!(escape_for_terminal(text), Cow::Borrowed(_)))
        .map(|text| Pair { display: text.clone(), replacement: text })
        .collect();
    (word_start, pairs)
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

    /// QEMU 7.2's schema, as `query-qmp-schema` returns it.
    fn qemu_schema() -> Schema {
        Schema::from_slice(include_bytes!("../../../../qmp-schema/tests/data/qemu-7.2-schema.json"))
            .unwrap()
    }

    fn completed(schema: &Schema, line: &str) -> (usize, Vec<String>) {
        let names: Vec<String> = ["blockdev-add", "quit"].iter().map(|&s| s.into()).collect();
        let (start, pairs) = complete_line(&names, Some(schema), line, line.len());
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn arguments_complete_from_the_schema_along_the_variant_typed() {
        let schema = qemu_schema();
        assert_eq!(completed(&schema, "blockd"), (0, vec!["blockdev-add".into()]));
        assert_eq!(completed(&schema, "blockdev-add dr"), (13, vec!["driver=".into()]));
        let (start, drivers) = completed(&schema, "blockdev-add driver=q");
        assert_eq!(
            (start, drivers),
            (
                13,
                vec![
                    "driver=qcow".into(),
                    "driver=qcow2".into(),
                    "driver=qed".into(),
                    "driver=quorum".into()
                ]
            )
        );
        // driver=file picks the variant: its members come, given ones do not come again.
        let (start, members) = completed(&schema, "blockdev-add driver=file node-name=d0 a");
        assert_eq!(start, 38);
        assert_eq!(members, ["aio=", "aio-max-batch=", "auto-read-only="]);
        assert_eq!(
            completed(&schema, "blockdev-add driver=file aio=n").1,
            ["aio=native"],
            "an enum value of the variant"
        );
        assert_eq!(
            completed(&schema, "blockdev-add driver=file read-only=").1,
            ["read-only=true", "read-only=false"]
        );
        assert!(
            completed(&schema, "blockdev-add driver=raw no").1.contains(&"node-name=".to_owned())
        );
        assert!(completed(&schema, "blockdev-add driver=raw node-name=d0 no").1.is_empty());
        // Not offered: the JSON form, quoted words, nested paths, unknown commands.
        assert!(completed(&schema, r#"blockdev-add {"dr"#).1.is_empty());
        assert!(completed(&schema, r#"blockdev-add node-name="a b"#).1.is_empty());
        assert!(completed(&schema, "blockdev-add file.fi").1.is_empty());
        assert!(completed(&schema, "no-such-command a").1.is_empty());
        // Without a schema, only command names.
        let names = vec!["blockdev-add".to_owned()];
        assert!(complete_line(&names, None, "blockdev-add dr", 15).1.is_empty());
        assert_eq!(complete_line(&names, None, "bl", 2).1.len(), 1);
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
