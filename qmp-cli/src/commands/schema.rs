//! `qmp schema COMMAND|EVENT|TYPE-PATH`: what the server's schema says about a name.

use crate::cli::{GlobalArgs, SchemaArgs};
use crate::exit::{Failure, Status};
use crate::output::{self, Style};

/// Prints the description of `args.target` from the server's schema: indented text, or
/// one JSON object with `--json`.
///
/// # Errors
/// Status 1 for a name or path the schema does not have (with a close match), a malformed
/// path, or a server without a usable schema; else as [`Failure::from_client`].
pub(crate) async fn run(global: &GlobalArgs, args: &SchemaArgs) -> Result<(), Failure> {
    let client = crate::connect::connect(global).await?;
    let Some(schema) = client.schema().await? else {
        return Err(Failure::new(
            Status::CommandFailed,
            "the server has no usable schema (query-qmp-schema is missing, refused or \
             unreadable)",
        ));
    };
    let description = schema
        .describe(&args.target)
        .map_err(|error| Failure::new(Status::CommandFailed, error.to_string()))?;
    if global.json {
        let value = serde_json::to_value(&description).map_err(|e| {
            Failure::new(Status::CommandFailed, format!("cannot render the description: {e}"))
        })?;
        output::print_line(&Style { pretty: false }.render(&value))
    } else {
        // Names come from the server: escaped, line ends kept.
        output::print_raw(&output::escape_text_for_terminal(&description.to_string()))
    }
}
