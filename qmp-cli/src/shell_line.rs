//! One `qmp shell` line: `NAME`, `NAME {json}` or `NAME key=value ...`. Pure: no I/O.

use serde_json::{Map, Value};

use crate::Error;

/// One line of input, as the shell understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Blank or a `#` comment.
    Skip,
    /// `quit` or `exit`.
    Quit,
    /// `help`: list the server's commands.
    Help,
    /// A QMP command with its arguments, if any.
    Command {
        /// The command's name: one word, never starting with `#`.
        name: String,
        /// Its arguments: the JSON object, or the `key=value` pairs as one.
        arguments: Option<Map<String, Value>>,
    },
}

/// Parses one input line: `NAME`, `NAME {json}`, or `NAME key=value ...`.
///
/// # Errors
/// [`Error::BadLine`], saying what is malformed.
pub fn parse_line(line: &str) -> Result<Line, Error> {
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
            Err(e) => {
                return Err(Error::BadLine(format!(
                    "the arguments are not a valid JSON object: {e}"
                )));
            }
        }
    } else {
        Some(parse_key_values(rest).map_err(Error::BadLine)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Lines made of the characters the parser treats specially, so that quotes, braces,
    /// escapes and `=` meet in every order.
    fn line_like() -> impl Strategy<Value = String> {
        "[ \t]?[a-z#-]{0,8}( [a-z0-9{}\\[\\]\"'=:,\\\\ .\u{e9}\u{1b}\u{202e}-]{0,40})?"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn no_line_makes_the_parser_panic(line in any::<String>()) {
            let _ = parse_line(&line);
        }

        #[test]
        fn commands_have_one_word_names(line in line_like()) {
            match parse_line(&line) {
                Ok(Line::Command { name, .. }) => {
                    prop_assert!(!name.is_empty() && !name.contains(char::is_whitespace));
                    prop_assert!(!name.starts_with('#'));
                }
                Ok(_) => {}
                Err(why) => prop_assert!(!why.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        for open in ["{\"a\":", "["] {
            let deep = format!("x {{\"a\": {}", open.repeat(100_000));
            assert!(parse_line(&deep).is_err());
            let deep = format!("x a={}", open.repeat(100_000));
            assert!(matches!(parse_line(&deep), Ok(Line::Command { .. })));
        }
    }

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
            let why = parse_line(bad).unwrap_err().to_string();
            assert!(!why.is_empty(), "{bad}");
        }
    }
}
