//! `qmp hmp COMMAND...`: HMP passthrough.

use crate::cli::{GlobalArgs, HmpArgs};
use crate::exit::{Failure, Status, one_line};
use crate::output;

/// How HMP answers a command it does not have (as a *successful* reply).
const UNKNOWN_COMMAND: &str = "unknown command:";

/// Runs the HMP command line and prints its text, escaped for the terminal but for its
/// line ends and tabs ([`output::escape_text_for_terminal`]).
///
/// # Errors
/// Status 1 when HMP answers `unknown command: ...`; else as [`Failure::from_client`].
pub(crate) async fn run(global: &GlobalArgs, args: &HmpArgs) -> Result<(), Failure> {
    let command_line = args.words.join(" ");
    let client = crate::connect::connect(global).await?;
    let text = client.human_monitor_command(&command_line).await?;
    if let Some(failure) = rejection(&text) {
        return Err(failure);
    }
    output::print_raw(&output::escape_text_for_terminal(&text))
}

/// HMP's text, when it says the command does not exist, as a status-1 failure.
///
/// Other HMP errors (`Device 'x' not found`, ...) are indistinguishable from output and are
/// printed as such.
pub(crate) fn rejection(text: &str) -> Option<Failure> {
    text.starts_with(UNKNOWN_COMMAND)
        .then(|| Failure::new(Status::CommandFailed, format!("HMP: {}", one_line(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_commands_are_failures() {
        let failure = rejection("unknown command: 'nonsense'\r\n").unwrap();
        assert_eq!(failure.status, Status::CommandFailed);
        assert_eq!(failure.message.unwrap(), "qmp: HMP: unknown command: 'nonsense'");
        assert!(rejection("Device 'nope' not found\r\n").is_none());
        assert!(rejection("  Bus  0, device   0, function 0:\r\n").is_none());
        assert!(rejection("").is_none());
    }
}
