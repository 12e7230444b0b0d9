//! Arbitrary schemas and arbitrary arguments through the schema crate: parsing, checking,
//! probes, descriptions and completions must not panic, must not overflow the stack (a
//! hostile schema can make types refer to themselves) and must finish in bounded time.
//!
//! Input: one byte choosing the schema, then
//! * even: QEMU 7.2's real schema, two bytes picking a command, the rest the arguments;
//! * odd: a schema, a NUL byte, then the arguments (JSON) or, if they do not parse, a probe
//!   path and a completion prefix.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qmp_schema::{MAX_PROBLEMS, Schema, Verdict};
use serde_json::Value;

fn real() -> &'static Schema {
    static REAL: OnceLock<Schema> = OnceLock::new();
    REAL.get_or_init(|| {
        Schema::from_slice(include_bytes!("../../qmp-schema/tests/data/qemu-7.2-schema.json"))
            .expect("QEMU 7.2's schema parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let [choice, rest @ ..] = data else { return };
    if choice % 2 == 0 {
        let [high, low, arguments @ ..] = rest else { return };
        let schema = real();
        let commands: Vec<&str> = schema.commands().collect();
        let command = commands[usize::from(u16::from_be_bytes([*high, *low])) % commands.len()];
        exercise(schema, command, arguments);
        return;
    }
    let (schema_bytes, tail) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(schema) = Schema::from_slice(schema_bytes) else { return };
    let commands: Vec<String> = schema.commands().take(8).map(Into::into).collect();
    for command in &commands {
        exercise(&schema, command, tail);
    }
    if let Ok(text) = std::str::from_utf8(tail) {
        let _ = schema.has(text);
        if let Ok(description) = schema.describe(text) {
            let _ = description.to_string();
        }
        for command in &commands {
            let _ = schema.complete_member(command, None, text);
            let _ = schema.complete_value(command, None, text, "");
        }
    }
    for name in schema.commands().chain(schema.events()).take(8) {
        let description = schema.describe(name).expect("every command and event describes");
        let _ = description.to_string();
    }
});

fn exercise(schema: &Schema, command: &str, arguments: &[u8]) {
    let arguments: Option<Value> = serde_json::from_slice(arguments).ok();
    let report = schema.check(command, arguments.as_ref());
    if let Verdict::Invalid(problems) = &report.verdict {
        assert!(!problems.is_empty() && problems.len() <= MAX_PROBLEMS);
        for problem in problems {
            let _ = problem.to_string();
        }
    }
    let _ = schema.check(command, None);
    for warning in &report.warnings {
        let _ = warning.to_string();
    }
    if let Some(arguments) = &arguments {
        let _ = schema.complete_member(command, Some(arguments), "");
    }
}
