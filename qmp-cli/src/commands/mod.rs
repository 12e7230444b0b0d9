//! The subcommands: one module each, [`run`] dispatches to them. What they share lives at
//! the crate root: [`crate::connect`], [`crate::exit`], [`crate::output`].

mod demo;
mod events;
mod exec;
mod hmp;
mod hotplug;
mod pci;
mod schema;
mod shell;

use crate::cli::{Cli, Command};
use crate::exit::Failure;
use crate::inherited::Inherited;

/// Runs the parsed command line.
///
/// # Errors
/// The [`Failure`] to report: its status and its line.
pub(crate) async fn run(cli: Cli, inherited: Inherited) -> Result<(), Failure> {
    let global = &cli.global;
    match &cli.command {
        Command::Exec(args) => exec::run(global, args).await,
        Command::Schema(args) => schema::run(global, args).await,
        Command::Hmp(args) => hmp::run(global, args).await,
        Command::Events(args) => events::run(global, args).await,
        Command::Shell(args) => shell::run(global, args).await,
        Command::Pci => pci::run(global).await,
        Command::Hotplug(command) => hotplug::run(global, command, inherited).await,
        Command::Demo(args) => demo::run(args).await,
    }
}
