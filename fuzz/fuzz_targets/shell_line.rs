//! `qmp shell`'s line parser (`qmp_cli::shell_line::parse_line`): text a user or a script
//! types. The first byte picks the input: raw text, or a generated command line (`NAME`,
//! `NAME {json}` or `NAME key=value ...` with arbitrary JSON values) whose meaning is known.
//!
//! Checked: no panic; a command's name is one word, not a comment; a `NAME {json}` line has
//! exactly the object serde_json reads from its text (and fails when serde_json does);
//! generated `key=value` lines whose values are JSON give those values, `key='text'` the
//! text, a repeated key an error; generated `NAME {json}` lines give the object.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_cli::shell_line::{Line, parse_line};
use serde_json::{Map, Value};

#[path = "../shared/arbitrary_json.rs"]
mod arbitrary_json;

/// Whether `c` may be in a generated name or key: the splitter's and parser's special
/// characters (whitespace, quotes, brackets, `=`) are not.
fn plain(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '"' | '\'' | '{' | '}' | '[' | ']' | '=')
}

/// A non-empty word of `plain` characters.
fn word(u: &mut Unstructured) -> Result<String> {
    let text: String = u.arbitrary::<String>()?.chars().filter(|&c| plain(c)).take(16).collect();
    Ok(if text.is_empty() { "x".to_owned() } else { text })
}

/// Raw text: the checks that hold for any line.
fn check_any(line: &str) {
    let parsed = parse_line(line);
    if let Ok(Line::Command { name, .. }) = &parsed {
        assert!(!name.is_empty() && !name.contains(char::is_whitespace), "{name:?}");
        assert!(!name.starts_with('#'), "{name:?}");
    }
    if let Err(why) = &parsed {
        assert!(!why.to_string().is_empty());
    }
    // `NAME {json}`: exactly what serde_json reads from the text after the name.
    let trimmed = line.trim();
    let Some(at) = trimmed.find(char::is_whitespace) else { return };
    let (name, rest) = (&trimmed[..at], trimmed[at..].trim_start());
    if name.starts_with('#') || !rest.starts_with('{') {
        return;
    }
    match serde_json::from_str::<Value>(rest) {
        Ok(Value::Object(map)) => assert_eq!(
            parsed.ok(),
            Some(Line::Command { name: name.to_owned(), arguments: Some(map) })
        ),
        _ => assert!(parsed.is_err(), "{line:?}"),
    }
}

/// A generated line with the command it must give.
fn generated(u: &mut Unstructured) -> Result<()> {
    let name = loop {
        let name = word(u)?;
        if !name.starts_with('#') && !matches!(name.as_str(), "quit" | "exit" | "help") {
            break name;
        }
        if u.is_empty() {
            return Ok(());
        }
    };
    let mut line = name.clone();
    let expected = if u.arbitrary()? {
        let map = arbitrary_json::object(u, 3)?;
        let text = if u.arbitrary()? {
            serde_json::to_string_pretty(&map)
        } else {
            serde_json::to_string(&map)
        };
        line.push(' ');
        line.push_str(&text.expect("JSON"));
        Ok(map)
    } else {
        let mut map = Map::new();
        let mut repeated = false;
        let pairs = u.int_in_range(1..=6)?;
        for _ in 0..pairs {
            let key = word(u)?;
            let (text, value) = if u.ratio(1, 4)? {
                // `'text'`: the text as written (it must not split or end early).
                let text: String = word(u)?.chars().filter(|&c| c != '\'').collect();
                (format!("'{text}'"), Value::String(text))
            } else {
                let value = arbitrary_json::value(u, 3)?;
                (serde_json::to_string(&value).expect("JSON"), value)
            };
            line.push_str(&format!(" {key}={text}"));
            repeated |= map.insert(key, value).is_some();
        }
        if repeated { Err(()) } else { Ok(map) }
    };
    let parsed = parse_line(&line);
    match expected {
        Ok(map) => assert_eq!(
            parsed.unwrap_or_else(|why| panic!("{line:?}: {why}")),
            Line::Command { name, arguments: Some(map) },
            "{line:?}"
        ),
        Err(()) => assert!(parsed.is_err(), "a repeated key in {line:?}"),
    }
    check_any(&line);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if mode % 2 == 0 {
        if let Ok(line) = std::str::from_utf8(rest) {
            check_any(line);
        }
    } else {
        let _ = generated(&mut Unstructured::new(rest));
    }
});
