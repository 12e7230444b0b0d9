//! The pure parts of the `qmp` command-line tool, as a library so they can be fuzzed
//! (`fuzz/fuzz_targets/shell_line.rs` and `args_json.rs`) and reused: the `qmp shell` line
//! parser ([`shell_line`]) and `qmp exec`'s `ARGS_JSON` check ([`parse_args_json`]). The
//! `qmp` binary (`src/main.rs`) uses them from here; everything with I/O stays in the binary.
//!
//! ```
//! use qmp_cli::shell_line::{Line, parse_line};
//! use serde_json::json;
//!
//! let Line::Command { name, arguments } = parse_line("qom-list path=/machine")? else {
//!     unreachable!("a command line");
//! };
//! assert_eq!(name, "qom-list");
//! assert_eq!(arguments, qmp_cli::parse_args_json(r#"{"path": "/machine"}"#).ok());
//! assert_eq!(json!(arguments), json!({"path": "/machine"}));
//! assert!(qmp_cli::parse_args_json("[1]").is_err(), "ARGS_JSON is an object");
//! # Ok::<(), qmp_cli::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod shell_line;

use serde_json::{Map, Value};

/// What is wrong with a shell line or an `ARGS_JSON`: the text `qmp` prints after `qmp: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A shell line that is not `NAME`, `NAME {json}` or `NAME key=value ...`.
    #[error("{0}")]
    BadLine(String),
    /// `ARGS_JSON` is not JSON.
    #[error("ARGS_JSON is not valid JSON: {0}")]
    ArgsNotJson(serde_json::Error),
    /// `ARGS_JSON` is JSON, but not an object.
    #[error("ARGS_JSON must be a JSON object like '{{\"path\": \"/machine\"}}', not {kind}")]
    ArgsNotAnObject {
        /// What it is instead, e.g. `an array`.
        kind: &'static str,
    },
}

/// Parses `qmp exec`'s `ARGS_JSON`: it must be one JSON object (whitespace around it
/// allowed, nothing else).
///
/// # Errors
/// [`Error::ArgsNotJson`] or [`Error::ArgsNotAnObject`].
pub fn parse_args_json(text: &str) -> Result<Map<String, Value>, Error> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::ArgsNotAnObject { kind: json_kind(&other) }),
        Err(e) => Err(Error::ArgsNotJson(e)),
    }
}

/// What kind of JSON value this is, for messages: `null`, `a boolean`, `an array`, ...
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages `qmp exec` prints after `qmp: `, as they were before the parser moved
    /// into the library.
    #[test]
    fn args_json_refusals_say_what_the_text_is() {
        let not_an_object = |text: &str| parse_args_json(text).unwrap_err().to_string();
        assert_eq!(
            not_an_object("[1]"),
            "ARGS_JSON must be a JSON object like '{\"path\": \"/machine\"}', not an array"
        );
        for (text, kind) in
            [("null", "null"), ("true", "a boolean"), ("3", "a number"), ("\"x\"", "a string")]
        {
            assert!(not_an_object(text).ends_with(&format!(", not {kind}")), "{text}");
        }
        let invalid = not_an_object("{\"a\": }");
        assert!(invalid.starts_with("ARGS_JSON is not valid JSON: expected value"), "{invalid}");
        assert_eq!(parse_args_json(" {\"a\": 1}\n").unwrap()["a"], 1);
    }
}
