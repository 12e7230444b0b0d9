//! `qmp`: a command-line client for the QEMU Monitor Protocol.
//!
//! `qmp exec`, `hmp`, `events`, `shell`, `pci`, `hotplug` and `demo` over [`qmp_client`] and
//! [`qmp_hotplug`]; see `qmp --help`.
//! The exit statuses are in [`exit`]: 0 success, 1 the server refused the command, 2 usage,
//! 3 connection (cannot connect, not QMP, busy, disconnect, timeout), 130 / 143 `demo`
//! ended by SIGINT / SIGTERM.
//!
//! Layout: [`cli`] is the command line (options and their value parsers), [`commands`] one
//! module per subcommand, and what commands share sits here: [`connect`] (reaching the
//! monitor), [`exit`] (statuses and error lines), [`output`] (printing, progress, terminal
//! escaping) and [`inherited`] (descriptors passed by number). The pure parsers (a shell
//! line, `ARGS_JSON`) are in the library, [`qmp_cli`], so the fuzz crate can reach them.
// `deny`, not `forbid`: adopting descriptors inherited by number (`--tap-fd`) is the one
// reviewed `#[allow(unsafe_code)]` of this crate, `inherited::adopt_one`.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod connect;
mod exit;
mod inherited;
mod output;

use std::process::ExitCode;

use crate::exit::Failure;

fn main() -> ExitCode {
    // Usage errors exit here with status 2; --help and --version with 0.
    let cli = match cli::Cli::from_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Before anything opens a descriptor of its own, the runtime included.
    let inherited = match inherited::adopt(&cli.command) {
        Ok(inherited) => inherited,
        Err(failure) => return failure.report(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return Failure::connection(format!("cannot start the runtime: {e}")).report(),
    };
    match runtime.block_on(commands::run(cli, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
