//! `qmp exec NAME [ARGS_JSON]`.

use std::io::Read;

use qmp_codec::DEFAULT_MAX_FRAME_LEN;
use serde_json::{Map, Value};

use qmp_client::{Client, Error};
use qmp_schema::{ProblemKind, Verdict};

use crate::cli::{ExecArgs, GlobalArgs};
use crate::exit::{self, Failure, Status};
use crate::output::{self, Style};

/// Runs one command and prints its `return` value.
///
/// # Errors
/// 2 for bad `ARGS_JSON` (checked before connecting); 1 for arguments the server's schema
/// refuses (nothing sent); else as [`Failure::from_client`].
pub(crate) async fn run(global: &GlobalArgs, args: &ExecArgs) -> Result<(), Failure> {
    let arguments = match args.arguments.as_deref() {
        None => None,
        Some("-") => Some(parse_arguments(&read_stdin()?)?),
        Some(text) => Some(parse_arguments(text)?),
    };
    let style = Style::for_stdout(global.json);
    let client = crate::connect::connect(global).await?;
    if args.check_only {
        let verdict = check_only(&client, &args.name, arguments.as_ref()).await?;
        return output::print_line(&verdict);
    }
    let value = client.execute(&args.name, arguments).await?;
    output::print_line(&style.render(&value))
}

/// `--check-only`: checks `arguments` against the server's schema and sends nothing.
/// Returns the line to print for arguments QEMU would take: `valid`, or `PATH: not checked:
/// WHY` for what the schema cannot judge.
///
/// # Errors
/// Status 1: the command is not the server's, the schema refuses the arguments, or the
/// server has no usable schema; else as [`Failure::from_client`] (fetching the schema).
async fn check_only(
    client: &Client,
    name: &str,
    arguments: Option<&Map<String, Value>>,
) -> Result<String, Failure> {
    if !client.supports(name) {
        return Err(Error::CommandNotSupported { command: name.to_owned() }.into());
    }
    let Some(schema) = client.schema().await? else {
        return Err(Failure::new(
            Status::CommandFailed,
            "the server has no usable schema (query-qmp-schema): nothing can be checked",
        ));
    };
    let report = schema.check_map(name, arguments);
    for warning in &report.warnings {
        output::print_stderr(&format!("qmp: warning: {warning}"));
    }
    match report.verdict {
        // query-commands lists it: the client would send it unchecked, as here.
        Verdict::Invalid(problems)
            if problems.iter().all(|p| p.kind == ProblemKind::UnknownCommand) =>
        {
            Ok("not checked: the command is missing from the server's schema".to_owned())
        }
        Verdict::Invalid(problems) => {
            Err(Failure::new(Status::CommandFailed, exit::refusal(name, &problems)))
        }
        Verdict::NotChecked(unchecked) => {
            Ok(output::escape_for_terminal(&unchecked.to_string()).into_owned())
        }
        _ => Ok("valid".to_owned()),
    }
}

/// Parses `ARGS_JSON` ([`qmp_cli::parse_args_json`]).
///
/// # Errors
/// A usage failure saying what is wrong.
fn parse_arguments(text: &str) -> Result<Map<String, Value>, Failure> {
    qmp_cli::parse_args_json(text).map_err(|e| Failure::usage(e.to_string()))
}

/// Reads `ARGS_JSON` from stdin, at most what QMP's framing accepts as one message.
fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(DEFAULT_MAX_FRAME_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| Failure::usage(format!("cannot read ARGS_JSON from stdin: {e}")))?;
    if text.len() > DEFAULT_MAX_FRAME_LEN {
        return Err(Failure::usage(format!(
            "ARGS_JSON on stdin is longer than {DEFAULT_MAX_FRAME_LEN} bytes"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Status;

    #[test]
    fn arguments_must_be_an_object() {
        assert_eq!(parse_arguments(r#"{"path": "/machine"}"#).unwrap()["path"], "/machine");
        for bad in ["[1]", "3", "\"x\"", "null", "{", "", "{\"a\":1} x"] {
            let failure = parse_arguments(bad).unwrap_err();
            assert_eq!(failure.status, Status::Usage, "{bad}");
            assert!(failure.message.unwrap().starts_with("qmp: ARGS_JSON"), "{bad}");
        }
    }
}
