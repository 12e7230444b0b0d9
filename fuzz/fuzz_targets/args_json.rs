//! `qmp exec`'s `ARGS_JSON` check (`qmp_cli::parse_args_json`): text from the command
//! line or stdin. The first byte picks raw text, or a generated object written compact or
//! pretty, with whitespace around it.
//!
//! Checked: no panic; it accepts exactly the texts that are one JSON object, with the
//! object serde_json reads; what it refuses says `ARGS_JSON` and, for valid JSON of
//! another kind, names that kind; an accepted text starts with `{` and ends with `}`
//! once JSON's whitespace is trimmed; every generated object comes back equal.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_cli::{Error, json_kind, parse_args_json};
use serde_json::Value;

#[path = "../shared/arbitrary_json.rs"]
mod arbitrary_json;

const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

fn check(text: &str) {
    let parsed = parse_args_json(text);
    match (serde_json::from_str::<Value>(text), &parsed) {
        (Ok(Value::Object(expected)), Ok(map)) => {
            assert_eq!(map, &expected);
            let inner = text.trim_matches(JSON_WHITESPACE);
            assert!(inner.starts_with('{') && inner.ends_with('}'), "{text:?}");
        }
        (Ok(other), Err(Error::ArgsNotAnObject { kind })) => {
            assert!(!other.is_object());
            assert_eq!(*kind, json_kind(&other));
        }
        (Err(_), Err(Error::ArgsNotJson(_))) => {}
        (read, parsed) => panic!("{text:?}: serde_json {read:?}, ARGS_JSON {parsed:?}"),
    }
    if let Err(error) = parsed {
        assert!(error.to_string().starts_with("ARGS_JSON "), "{error}");
    }
}

fn generated(u: &mut Unstructured) -> Result<()> {
    let map = arbitrary_json::object(u, 4)?;
    let body = if u.arbitrary()? {
        serde_json::to_string_pretty(&map)
    } else {
        serde_json::to_string(&map)
    }
    .expect("JSON");
    let pad = |u: &mut Unstructured| -> Result<String> {
        let count = u.int_in_range(0..=3)?;
        (0..count).map(|_| u.choose(&JSON_WHITESPACE).copied()).collect()
    };
    let text = format!("{}{body}{}", pad(u)?, pad(u)?);
    assert_eq!(parse_args_json(&text).ok(), Some(map), "{text:?}");
    check(&text);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if mode % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            check(text);
        }
    } else {
        let _ = generated(&mut Unstructured::new(rest));
    }
});
