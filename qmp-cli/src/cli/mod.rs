//! The command line: global options and one variant per subcommand.
//!
//! A new subcommand is a variant of [`Command`] with its own `Args` struct, and a module in
//! `commands/` whose `run` [`crate::commands::run`] dispatches to. `hotplug`'s options live
//! in [`hotplug`]. Option values are checked by the parsers in [`values`] while clap reads
//! the command line, so a bad value exits 2 before anything is connected or opened.

mod hotplug;
mod values;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::exit::Failure;

pub(crate) use self::hotplug::{
    CdromCommand, DiskAddArgs, DiskBusArg, DiskCommand, HotplugCommand, NicAddArgs, NicCommand,
};
use self::values::parse_seconds;

/// Default timeout for connecting (greeting and negotiation included) and for each command.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const ABOUT: &str = "Talk to a QEMU monitor over QMP (the QEMU Monitor Protocol)";

const LONG_ABOUT: &str = "\
Talk to a QEMU monitor over QMP (the QEMU Monitor Protocol).

Connects to the QMP unix socket given by --socket (or $QMP_SOCKET), negotiates \
capabilities, and runs one subcommand. Commands the server does not list in \
query-commands are refused before anything is sent, and so are arguments the server's own \
schema (query-qmp-schema) refuses, unless --no-check is given.";

const AFTER_HELP: &str = "\
Exit status:
  0  success; `events` also ends with 0 on Ctrl-C, or when --timeout passes without --count
  1  the server answered with an error (printed as `error: <Class>: <desc>`), the command is
     not in the server's query-commands, the server's schema refuses the arguments (nothing
     sent; each problem named with its path; without --no-check), `schema` of an unknown
     name or without a usable schema, HMP rejected the command line (`unknown command:`),
     or the output could not be written; `hotplug`: QEMU refused a step (the steps before it
     were undone), the guest refused an unplug, a tap or image could not be opened, an
     --image that is not a regular file or block device, an image whose header contradicts
     --format (without --allow-format-mismatch), a device of that name exists and differs
     (each difference named), `del` of an id of which nothing exists (without
     --if-exists), a NIC's id given to `disk del` (or the reverse), a --drive that is not
     the device's, another manager kept taking the slot, `gc` could not remove a part
  2  usage error, found before anything is connected or opened: an unknown option, a bad
     option value (a --name outside the id rules, --queues outside 1..256, --slot outside
     1..31, a malformed or multicast --mac, a --timeout/--wait that is not a positive
     number, a bad --uri or --tap name), malformed ARGS_JSON or one that is not an object,
     no socket, descriptors that cannot be used
  3  connection: cannot connect, not a QMP monitor (bad greeting), a monitor held by another
     client (connecting is retried until --timeout), protocol violation, the server hung
     up, or a timeout (the command's outcome is then unknown); `events` also when
     --count events did not come within --timeout; `hotplug ... del` also when the guest
     did not acknowledge the unplug within --wait
  4  `hotplug ... del` cannot complete now: the VM is in prelaunch (nothing was sent: QEMU
     7.2 wedges a device unplugged before the guest first ran; `cont` first) or paused
     (device_del was sent; run the removal again after `cont`)
  130, 143  `demo` ended by SIGINT or SIGTERM, after undoing what it made

Errors are one line on stderr, starting `qmp: ` (or `error: ` for the server's own errors).
Durations (--timeout, --wait) take fractions; more than a year counts as a year.

Examples:
  qmp --socket /run/vm.sock exec query-status
  qmp --socket /run/vm.sock --timeout 2 exec qom-list '{\"path\": \"/machine\"}'
  qmp exec --check-only blockdev-add '{\"driver\": \"file\", \"node-name\": \"d0\", \"filename\": \"/tmp/x\"}'
  qmp schema blockdev-add/arg-type/+file
  qmp hmp info pci
  qmp events --filter STOP --filter RESUME --count 1
  qmp pci
  qmp hotplug nic add --name web1 --queues 2
  qmp hotplug disk add --name data1 --image /var/lib/vm/data1.qcow2 --format qcow2
  qmp hotplug nic del nic-web1-pci-2 --wait 10 --if-exists
  qmp hotplug gc --dry-run
  echo 'qom-list path=/machine' | qmp shell";

/// `qmp`: a command-line QMP client.
#[derive(Debug, Parser)]
#[command(
    name = "qmp",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every subcommand takes; accepted before or after the subcommand's name.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The QMP unix socket (QEMU's `-qmp unix:PATH,server=on,wait=off`)
    #[arg(long, short = 's', env = "QMP_SOCKET", value_name = "PATH", global = true)]
    pub(crate) socket: Option<PathBuf>,

    /// Seconds allowed to connect (greeting and negotiation included, retrying while the
    /// monitor is busy) and for each command, 10 by default; for `events` also how long to
    /// listen in all. Fractions are allowed; more than a year counts as a year
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_seconds, global = true)]
    pub(crate) timeout: Option<Duration>,

    /// Print JSON results on one line even when stdout is a terminal (they are always
    /// compact when stdout is not a terminal)
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Send commands without checking their arguments against the server's schema
    /// (`query-qmp-schema`) first; by default a command the schema refuses is not sent
    #[arg(long, global = true)]
    pub(crate) no_check: bool,
}

impl Cli {
    /// Reads the process's command line. `--help` and `--version` (and `qmp` alone, which
    /// shows the help) end here as clap prints them; any other refusal ends with status 2
    /// and one line on stderr, like every other error.
    ///
    /// # Errors
    /// The exit code to end with, after printing.
    pub(crate) fn from_command_line() -> Result<Self, ExitCode> {
        Self::try_parse().map_err(|error| match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                // Nothing sensible is left to do if the terminal itself is gone.
                let _ = error.print();
                ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
            }
            _ => Failure::usage(usage_line(&error.render().to_string())).report(),
        })
    }
}

/// clap's error text as one line: its message lines joined, without the usage block and
/// the "For more information" line that follow it.
fn usage_line(rendered: &str) -> String {
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect();
    let message = lines.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see --help)")
}

impl GlobalArgs {
    /// The timeout for connecting and for each command.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one QMP command and print its `return` value as JSON
    #[command(long_about = "\
Run one QMP command and print its `return` value as JSON on stdout: indented when stdout is \
a terminal, on one line with --json or when stdout is not a terminal.

ARGS_JSON, when given, must be a JSON object; `-` reads it from stdin.

The arguments are first checked against the server's own schema (query-qmp-schema): \
arguments QEMU would refuse are not sent, and every problem is named with its path, what \
the schema expects there, what was found and a close match (status 1). --no-check sends \
them unchecked. With --check-only nothing is sent: `valid`, or `not checked: WHY` for what \
the schema cannot judge (device_add's device properties), is printed with status 0, a \
refusal is status 1.")]
    Exec(ExecArgs),

    /// Show what a command takes and returns, an event's data, or a type, from the schema
    #[command(long_about = "\
Show, from the server's own schema (query-qmp-schema), what a command takes and returns \
(members with their types, optional members, enum values, the variants of flat unions by \
discriminator value, and features such as deprecated and unstable), what an event carries, \
or the type a path leads to in libvirt's probe syntax: `blockdev-add/arg-type/+file` (the \
variant for driver \"file\"), `blockdev-add/arg-type/+file/aio`, `query-status/ret-type`; \
a path ending in `^VALUE` (enum value), `!JSON-TYPE` or `$FEATURE` prints `PATH: yes` when \
the schema has it. QEMU names most types by number in its schema: those numbers are never shown.

With --json: the description as one JSON object. A name or path the schema does not have is \
status 1 (with a close match when there is one); a server without a usable schema is status \
1 too.")]
    Schema(SchemaArgs),

    /// Run a human monitor (HMP) command line and print its text
    #[command(long_about = "\
Run a human monitor (HMP) command line through `human-monitor-command` and print its text as \
QEMU returned it, except that control characters other than line ends and tabs are shown \
escaped (`\\u{1b}`), so the text cannot act on the terminal. The words are joined with \
spaces: `qmp hmp info pci` is `qmp hmp 'info pci'`.

HMP reports most errors as ordinary text, which is printed as-is with status 0; only a reply \
starting with `unknown command:` (QEMU's answer to a command HMP does not have) goes to \
stderr with status 1.")]
    Hmp(HmpArgs),

    /// Print events as they arrive, one JSON object per line
    #[command(long_about = "\
Print QMP events as they arrive, one JSON object per line, each flushed at once: \
{\"event\": NAME, \"data\": {...}, \"timestamp\": {\"seconds\": S, \"microseconds\": U}} \
(`data` is left out when QEMU sends none, as for STOP).

Ends after --count events (status 0); when --timeout SECS passes in total (status 0 without \
--count, 3 when fewer than --count events came); on Ctrl-C (status 0); or when the connection \
is lost (status 3). When the output cannot keep up, dropped events are reported on stderr as \
`qmp: lagged: N events dropped`, and memory stays bounded.

QEMU serves one client at a time on each QMP socket: to watch events while another tool sends \
commands, give QEMU a second `-qmp` socket for one of them.")]
    Events(EventsArgs),

    /// Interactive QMP shell (reads commands from stdin when it is not a terminal)
    #[command(long_about = "\
An interactive QMP shell. Each line is one command:

  NAME                     no arguments
  NAME {\"key\": value}      arguments as a JSON object
  NAME key=value ...       each value is taken as JSON if it parses (numbers, true, false,
                           null, \"quoted strings\", objects, arrays), else as a string;
                           'single quotes' always give a string

Blank lines and lines starting with # are ignored; `quit`, `exit` or end of input ends the \
shell; `help` lists the server's commands. Results are printed as JSON; errors are printed and \
the shell goes on.

On a terminal: line editing, history (in $XDG_STATE_HOME/qmp/history, else \
~/.local/state/qmp/history), tab completion of command names and, from the server's schema, \
of argument names and values in the key=value form (following the variant typed so far: \
`blockdev-add driver=file a<Tab>` offers aio=, aio-max-batch=, auto-read-only=), and events \
printed as they arrive (`[event] NAME {data}`); Ctrl-C abandons the command being waited for.

When stdin is not a terminal, lines are read from it and each result is printed on one line of \
stdout; events go to stderr. The status is then 0 when every command succeeded, else that of \
the first failed line (1 server error, 2 malformed line, 3 timeout); a lost connection ends \
the shell at once with 3.")]
    Shell(ShellArgs),

    /// Show the PCI tree: every bus, the devices on it, and where hotplug has room
    #[command(long_about = "\
Show the PCI tree (query-pci, the machine type, and where QOM puts each device): each bus by \
the name device_add takes (pci.0 on pc, pcie.0 on q35, else the id of its bridge or root \
port), one line per function with its qdev id (`-` for devices the machine made), and per bus \
its free slots or why hotplug cannot use it (q35's pcie.0 takes no hotplug; a root port takes \
one device). With --json: {machine, machine_type, buses: [{name, functions, free, reserved, \
unusable, ...}]}.")]
    Pci,

    /// Hot-add and hot-remove NICs and disks, or check that this QEMU can
    #[command(subcommand)]
    Hotplug(HotplugCommand),

    /// Start a QEMU of its own and walk through hotplug end to end
    #[command(long_about = "\
Start a QEMU of its own (TCG, with the project's test guest when it can be built, so that \
hot-unplug completes), then: show the greeting, hot-add a disk through an fdset and a NIC on \
a new tap device, print the PCI table, hot-remove both waiting for DEVICE_DELETED, print the \
table again, and shut QEMU down, checking that nothing is left behind. Each step prints what \
it did and how long it took. Needs neither --socket nor --timeout; needs root for the tap.

Ctrl-C (SIGINT) or SIGTERM at any moment ends it with everything undone: QEMU killed and \
reaped, its temporary directory (socket, logs, disk image) removed, the tap gone; the status \
is then 130 or 143.")]
    Demo(DemoArgs),
}

/// `qmp demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Run without the test guest (hot-remove is then skipped: nothing would acknowledge it)
    #[arg(long)]
    pub(crate) no_guest: bool,
    /// The machine: pc, or q35 (started with 4 empty pcie-root-ports, rp1 to rp4, into which
    /// the disk and the NIC are hot-plugged)
    #[arg(long, default_value = "pc", value_parser = ["pc", "q35"])]
    pub(crate) machine: String,
}

/// `qmp exec`.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The QMP command, e.g. `query-status`
    #[arg(value_name = "NAME")]
    pub(crate) name: String,

    /// The command's arguments: a JSON object, or `-` to read it from stdin
    #[arg(value_name = "ARGS_JSON")]
    pub(crate) arguments: Option<String>,

    /// Check the arguments against the server's schema and send nothing (--no-check does
    /// not apply)
    #[arg(long)]
    pub(crate) check_only: bool,
}

/// `qmp schema`.
#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    /// A command (`blockdev-add`), an event (`DEVICE_DELETED`) or a probe path
    /// (`blockdev-add/arg-type/+file`)
    #[arg(value_name = "COMMAND|EVENT|TYPE-PATH")]
    pub(crate) target: String,
}

/// `qmp hmp`.
#[derive(Debug, Args)]
pub(crate) struct HmpArgs {
    /// The HMP command line, e.g. `info pci`
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., allow_hyphen_values = true)]
    pub(crate) words: Vec<String>,
}

/// `qmp events`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only events with this name (repeatable, or comma-separated)
    #[arg(long, short = 'f', value_name = "NAME", value_delimiter = ',')]
    pub(crate) filter: Vec<String>,

    /// Stop after this many events
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
}

/// `qmp shell`.
#[derive(Debug, Args)]
pub(crate) struct ShellArgs {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "qmp",
            "--socket",
            "/run/vm.sock",
            "--timeout",
            "2",
            "exec",
            "query-status",
        ])
        .unwrap();
        assert_eq!(cli.global.socket.as_deref(), Some(std::path::Path::new("/run/vm.sock")));
        assert_eq!(cli.global.command_timeout(), Duration::from_secs(2));
        let cli =
            Cli::try_parse_from(["qmp", "exec", "query-status", "--json", "-s", "/x"]).unwrap();
        assert!(cli.global.json);
        let Command::Exec(exec) = cli.command else { panic!("not exec") };
        assert_eq!((exec.name.as_str(), exec.arguments), ("query-status", None));
    }

    #[test]
    fn clap_errors_become_one_line() {
        let error = Cli::try_parse_from(["qmp", "hotplug", "nic", "add"]).unwrap_err();
        let line = usage_line(&error.render().to_string());
        assert_eq!(
            line,
            "the following required arguments were not provided: --name <NAME> (see --help)"
        );
        let error = Cli::try_parse_from(["qmp", "exec", "x", "--bogus"]).unwrap_err();
        let line = usage_line(&error.render().to_string());
        assert!(line.starts_with("unexpected argument '--bogus' found"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn nic_settings_and_features_parse() {
        let cli = Cli::try_parse_from([
            "qmp",
            "hotplug",
            "nic",
            "add",
            "--name",
            "a",
            "--bus",
            "rp1",
            "--slot",
            "0",
            "--host-mtu",
            "9000",
            "--rx-queue-size",
            "1024",
            "--romfile",
            "",
            "--link-down",
            "--feature",
            "csum=false",
            "--feature",
            "x-txburst=256",
            "--feature",
            "s=on",
        ])
        .unwrap();
        let Command::Hotplug(hotplug::HotplugCommand::Nic(hotplug::NicCommand::Add(add))) =
            cli.command
        else {
            panic!("not nic add")
        };
        assert_eq!(
            (add.bus.as_deref(), add.slot, add.host_mtu),
            (Some("rp1"), Some(0), Some(9000))
        );
        assert_eq!((add.romfile.as_deref(), add.link_down), (Some(""), true));
        assert_eq!(
            add.features,
            [
                ("csum".to_owned(), serde_json::json!(false)),
                ("x-txburst".to_owned(), serde_json::json!(256)),
                ("s".to_owned(), serde_json::json!("on")),
            ]
        );
        for bad in [["--rx-queue-size", "300"], ["--host-mtu", "60"], ["--feature", "novalue"]] {
            let args = ["qmp", "hotplug", "nic", "add", "--name", "a", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hmp_joins_its_words_and_events_split_filters() {
        let cli = Cli::try_parse_from(["qmp", "hmp", "info", "pci"]).unwrap();
        let Command::Hmp(hmp) = cli.command else { panic!("not hmp") };
        assert_eq!(hmp.words, ["info", "pci"]);
        let cli =
            Cli::try_parse_from(["qmp", "events", "-f", "STOP,RESUME", "--filter", "SHUTDOWN"])
                .unwrap();
        let Command::Events(events) = cli.command else { panic!("not events") };
        assert_eq!(events.filter, ["STOP", "RESUME", "SHUTDOWN"]);
        assert!(Cli::try_parse_from(["qmp", "events", "--count", "0"]).is_err());
    }
}
