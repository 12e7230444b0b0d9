//! Checks a command against a saved `query-qmp-schema` reply, or describes it:
//!
//! ```text
//! cargo run -p qmp-schema --example check -- SCHEMA.json COMMAND [ARGUMENTS_JSON]
//! cargo run -p qmp-schema --example check -- SCHEMA.json --describe COMMAND|EVENT|PATH
//! cargo run -p qmp-schema --example check -- SCHEMA.json --has PATH
//! ```
//!
//! e.g. with `qmp-schema/tests/data/qemu-7.2-schema.json`, `blockdev-add
//! '{"driver":"raw","node-name":"d0","file":{"driver":"file"}}'` prints the missing
//! `arguments.file.filename`. Exit status: 0 valid (or not checked), 1 refused, 2 usage.

use std::process::ExitCode;

use qmp_schema::{Schema, Verdict};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(file), Some(what)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: check SCHEMA.json (COMMAND [ARGUMENTS_JSON] | --describe TARGET | --has PATH)"
        );
        return ExitCode::from(2);
    };
    let schema = match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| Schema::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(schema) => schema,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    match (what.as_str(), args.get(2)) {
        ("--describe", Some(target)) => match schema.describe(target) {
            Ok(description) => print!("{description}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        ("--has", Some(path)) => match schema.has(path) {
            Ok(present) => println!("{present}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        (command, arguments) => {
            let arguments = match arguments.map(|text| serde_json::from_str(text)).transpose() {
                Ok(arguments) => arguments,
                Err(e) => {
                    eprintln!("ARGUMENTS_JSON: {e}");
                    return ExitCode::from(2);
                }
            };
            let report = schema.check(command, arguments.as_ref());
            for warning in &report.warnings {
                eprintln!("warning: {command}: {warning}");
            }
            match report.verdict {
                Verdict::Invalid(problems) => {
                    for problem in problems {
                        println!("{command}: {problem}");
                    }
                    return ExitCode::FAILURE;
                }
                Verdict::NotChecked(unchecked) => println!("{command}: {unchecked}"),
                _ => println!("{command}: valid"),
            }
        }
    }
    ExitCode::SUCCESS
}
