//! The command line: global options and one variant per subcommand.
//!
//! A new subcommand is a variant of [`Command`] with its own `Args` struct, and a module in
//! `commands/` whose `run` [`crate::commands::run`] dispatches to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Default timeout for connecting (greeting and negotiation included) and for each command.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const ABOUT: &str = "Talk to a QEMU monitor over QMP (the QEMU Monitor Protocol)";

const LONG_ABOUT: &str = "\
Talk to a QEMU monitor over QMP (the QEMU Monitor Protocol).

Connects to the QMP unix socket given by --socket (or $QMP_SOCKET), negotiates \
capabilities, and runs one subcommand. Commands the server does not list in \
query-commands are refused before anything is sent.";

const AFTER_HELP: &str = "\
Exit status:
  0  success; `events` also ends with 0 on Ctrl-C, or when --timeout passes without --count
  1  the server answered with an error (printed as `error: <Class>: <desc>`), the command is
     not in the server's query-commands, HMP rejected the command line (`unknown command:`),
     or the output could not be written; `hotplug`: QEMU refused a step (the steps before it
     were undone), the guest refused an unplug, a tap or image could not be opened
  2  usage error: bad options, malformed ARGS_JSON or one that is not an object, no socket,
     a hotplug name or descriptor that cannot be used
  3  connection: cannot connect, not a QMP monitor (bad greeting), protocol violation,
     the server hung up, or a timeout (the command's outcome is then unknown); `events`
     also when --count events did not come within --timeout; `hotplug ... del` also when
     the guest did not acknowledge the unplug within --wait

Errors are one line on stderr, starting `qmp: ` (or `error: ` for the server's own errors).

Examples:
  qmp --socket /run/vm.sock exec query-status
  qmp --socket /run/vm.sock --timeout 2 exec qom-list '{\"path\": \"/machine\"}'
  qmp hmp info pci
  qmp events --filter STOP --filter RESUME --count 1
  qmp pci
  qmp hotplug nic add --name web1 --queues 2
  qmp hotplug disk add --name data1 --image /var/lib/vm/data1.qcow2 --format qcow2
  qmp hotplug nic del nic-web1-pci-2 --wait 10
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

    /// Seconds allowed to connect (greeting and negotiation included) and for each command,
    /// 10 by default; for `events` also how long to listen in all
    #[arg(long, short = 't', value_name = "SECS", value_parser = parse_timeout, global = true)]
    pub(crate) timeout: Option<Duration>,

    /// Print JSON results on one line even when stdout is a terminal (they are always
    /// compact when stdout is not a terminal)
    #[arg(long, global = true)]
    pub(crate) json: bool,
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

ARGS_JSON, when given, must be a JSON object; `-` reads it from stdin.")]
    Exec(ExecArgs),

    /// Run a human monitor (HMP) command line and print its text
    #[command(long_about = "\
Run a human monitor (HMP) command line through `human-monitor-command` and print its text as \
QEMU returned it. The words are joined with spaces: `qmp hmp info pci` is `qmp hmp 'info pci'`.

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
~/.local/state/qmp/history), tab completion of command names, and events printed as they \
arrive (`[event] NAME {data}`); Ctrl-C abandons the command being waited for.

When stdin is not a terminal, lines are read from it and each result is printed on one line of \
stdout; events go to stderr. The status is then 0 when every command succeeded, else that of \
the first failed line (1 server error, 2 malformed line, 3 timeout); a lost connection ends \
the shell at once with 3.")]
    Shell(ShellArgs),

    /// Show PCI bus 0 as a table: each slot, the device id in it, or free
    #[command(long_about = "\
Show PCI bus 0 (from query-pci) as a table: one line per function of each used slot with the \
device's qdev id (`-` for devices the machine made), and the free slots hotplug can use. \
Slot 0 is the host bridge's. With --json: one object per slot.")]
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
it did and how long it took. Needs neither --socket nor --timeout; needs root for the tap.")]
    Demo(DemoArgs),
}

/// `qmp hotplug`.
#[derive(Debug, Subcommand)]
pub(crate) enum HotplugCommand {
    /// Say whether NIC and disk hot-add can work with this QEMU and connection
    #[command(long_about = "\
Say whether NIC and disk hot-add can work here, as JSON: QEMU has the commands, the \
connection can pass file descriptors (a unix socket), and, with --vhost, /dev/vhost-net can be \
opened. Status 0 when everything is supported, 1 otherwise.")]
    Check(CheckArgs),
    /// NICs: a tap netdev and a virtio-net device
    #[command(subcommand)]
    Nic(NicCommand),
    /// Disks: a block node and a virtio-blk device
    #[command(subcommand)]
    Disk(DiskCommand),
}

/// `qmp hotplug check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Also check that vhost-net can be used
    #[arg(long)]
    pub(crate) vhost: bool,
}

/// `qmp hotplug nic`.
#[derive(Debug, Subcommand)]
pub(crate) enum NicCommand {
    /// Hot-add a NIC; prints its device id, slot, netdev and tap as JSON
    #[command(long_about = "\
Hot-add a NIC: pass the tap's descriptors with getfd, netdev_add, then device_add in the first \
free slot (or --slot). The device id is nic-NAME-pci-SLOT. Without --tap-fd a tap device is \
opened here (--tap NAME, default qmptap%d: the kernel picks the number), with --queues queues; \
it lives as long as QEMU uses it. If a step fails, the steps before it are undone. Running the \
same add again after a timeout completes it.")]
    Add(NicAddArgs),
    /// Hot-remove a NIC: `device_del`, wait for the guest, `netdev_del`
    Del(DelArgs),
}

/// `qmp hotplug nic add`.
#[derive(Debug, Args)]
pub(crate) struct NicAddArgs {
    /// The NIC's name: 1 to 14 letters, digits or `_` (e.g. the first group of its UUID)
    #[arg(long)]
    pub(crate) name: String,
    /// Tap interface to open or create (a `%d` in it is numbered by the kernel)
    #[arg(long, conflicts_with = "tap_fd")]
    pub(crate) tap: Option<String>,
    /// Tap descriptors inherited from the caller, one per queue (e.g. `--tap-fd 3 3<>...`)
    #[arg(long = "tap-fd", value_name = "FD", value_delimiter = ',')]
    pub(crate) tap_fd: Vec<i32>,
    /// Queues of the tap opened here (more than one makes the NIC multiqueue)
    #[arg(long, default_value_t = 1, conflicts_with = "tap_fd")]
    pub(crate) queues: usize,
    /// Use vhost-net, opened by QEMU (refused unless /dev/vhost-net works here)
    #[arg(long)]
    pub(crate) vhost: bool,
    /// Open /dev/vhost-net descriptors inherited from the caller, one per queue
    #[arg(long = "vhost-fd", value_name = "FD", value_delimiter = ',')]
    pub(crate) vhost_fd: Vec<i32>,
    /// The guest-visible MAC address
    #[arg(long)]
    pub(crate) mac: Option<String>,
    /// The device model
    #[arg(long, default_value = "virtio-net-pci")]
    pub(crate) model: String,
    /// PCI slot on bus 0 instead of the first free one
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..32))]
    pub(crate) slot: Option<u8>,
}

/// Removing a device.
#[derive(Debug, Args)]
pub(crate) struct DelArgs {
    /// The device id (as printed by `add`)
    pub(crate) id: String,
    /// Seconds to wait for the guest to let go of the device (`DEVICE_DELETED`)
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, default_value = "30")]
    pub(crate) wait: Duration,
}

/// `qmp hotplug disk`.
#[derive(Debug, Subcommand)]
pub(crate) enum DiskCommand {
    /// Hot-add a disk; prints its device id, slot and block node as JSON
    #[command(long_about = "\
Hot-add a disk. An --image is opened here (read-only with --read-only) and passed in an fdset \
(add-fd), then blockdev-add reads /dev/fdset/N, remove-fd hands the descriptor over to the \
node, and device_add plugs a virtio-blk device into the first free slot (or --slot). A --uri \
(nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH) is reached by QEMU itself and \
passes no descriptor. If a step fails, the steps before it are undone.")]
    Add(DiskAddArgs),
    /// Hot-remove a disk: `device_del`, wait for the guest, then `blockdev-del` (or `drive_del`)
    Del(DiskDelArgs),
}

/// Image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Raw bytes.
    Raw,
    /// qcow2.
    Qcow2,
}

impl From<Format> for qmp_hotplug::DiskFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Raw => Self::Raw,
            Format::Qcow2 => Self::Qcow2,
        }
    }
}

/// `qmp hotplug disk add`.
#[derive(Debug, Args)]
pub(crate) struct DiskAddArgs {
    /// The disk's name: 1 to 14 letters, digits or `_`
    #[arg(long)]
    pub(crate) name: String,
    /// An image file or block device, passed to QEMU as a descriptor
    #[arg(long, value_name = "PATH", required_unless_present = "uri", conflicts_with = "uri")]
    pub(crate) image: Option<PathBuf>,
    /// An NBD URI QEMU connects to itself
    #[arg(long, value_name = "URI")]
    pub(crate) uri: Option<String>,
    /// The image format
    #[arg(long, value_enum, default_value = "raw")]
    pub(crate) format: Format,
    /// Open and present the disk read-only
    #[arg(long)]
    pub(crate) read_only: bool,
    /// The device model
    #[arg(long, default_value = "virtio-blk-pci")]
    pub(crate) model: String,
    /// PCI slot on bus 0 instead of the first free one
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..32))]
    pub(crate) slot: Option<u8>,
}

/// `qmp hotplug disk del`.
#[derive(Debug, Args)]
pub(crate) struct DiskDelArgs {
    #[command(flatten)]
    pub(crate) del: DelArgs,
    /// The disk's drive came from `-drive` or `drive_add`: remove it with HMP `drive_del`
    /// instead of `blockdev-del`
    #[arg(long, value_name = "DRIVE")]
    pub(crate) drive: Option<String>,
}

/// `qmp demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Run without the test guest (hot-remove is then skipped: nothing would acknowledge it)
    #[arg(long)]
    pub(crate) no_guest: bool,
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

/// Parses `--timeout`: a positive, finite number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 =
        text.trim().parse().map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(format!("the timeout must be more than 0 seconds, not {text}"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("nan").is_err());
        assert!(parse_timeout("inf").is_err());
        assert!(parse_timeout("soon").is_err());
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
