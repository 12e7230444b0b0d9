//! `qmp hotplug ...`: its subcommands and options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use qmp_hotplug::{Aio, DetectZeroes, Discard, DiskSettings, NbdExport, PCI_SLOTS};

use super::values::{
    parse_device_name, parse_disk_size, parse_mac, parse_qemu_id, parse_queues, parse_seconds,
    parse_tls_dir,
};

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
    /// CD drives (scsi-cd, ide-cd): change or eject the medium
    #[command(subcommand)]
    Cdrom(CdromCommand),
    /// List (--dry-run) or remove what interrupted hotplug operations left in QEMU
    #[command(long_about = "\
List, as JSON, the parts of ours that interrupted hotplug operations left in QEMU (an intent \
marker and the tap descriptor names it implies, netdevs without their NIC, block nodes \
without their disk, fdsets no node reads), then remove each after checking again that it is \
still a leftover. Only objects named by this tool's id scheme are ever touched. On a paused \
VM, QEMU keeps removed fdsets listed until it runs: those are reported as pending. Status 0 \
when everything listed was removed (or is pending), 1 otherwise. Another manager's add in \
progress looks like an interrupted one: run gc when no add is under way.")]
    Gc(GcArgs),
}

/// `qmp hotplug cdrom`.
#[derive(Debug, Subcommand)]
pub(crate) enum CdromCommand {
    /// Put a medium into a CD drive (`blockdev-change-medium`)
    #[command(long_about = "\
Put a medium into CD drive ID (a scsi-cd or ide-cd device; checked first): the --image is \
opened here (read-only unless --read-write; a FIFO, directory or device node is refused \
unopened), passed in a new fdset, and blockdev-change-medium reads it from /dev/fdset/N in \
--format (never probed: an image whose header says otherwise is refused). The fdsets of \
earlier media passed by this tool are removed; if the change fails, the new one is.")]
    Change(CdromChangeArgs),
    /// Open a CD drive's tray and remove its medium (`eject`)
    #[command(long_about = "\
Open CD drive ID's tray and remove its medium (eject). A tray the guest has locked is refused \
by QEMU (status 1), which asks the guest to open it: try again later, or --force. The fdsets \
of media this tool passed are removed.")]
    Eject(CdromEjectArgs),
}

/// `qmp hotplug cdrom change`.
#[derive(Debug, Args)]
pub(crate) struct CdromChangeArgs {
    /// The CD drive's device id
    pub(crate) id: String,
    /// The medium: an image file or block device
    #[arg(long, value_name = "PATH")]
    pub(crate) image: PathBuf,
    /// The image format
    #[arg(long, value_enum, default_value = "raw")]
    pub(crate) format: Format,
    /// Open and present the medium read-write (CD drives are read-only to the guest anyway)
    #[arg(long)]
    pub(crate) read_write: bool,
}

/// `qmp hotplug cdrom eject`.
#[derive(Debug, Args)]
pub(crate) struct CdromEjectArgs {
    /// The CD drive's device id
    pub(crate) id: String,
    /// Eject even if the guest has locked the tray
    #[arg(long)]
    pub(crate) force: bool,
}

/// `qmp hotplug gc`.
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Only list what would be removed
    #[arg(long)]
    pub(crate) dry_run: bool,
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
Hot-add a NIC: create an intent marker, pass the tap's descriptors with getfd, netdev_add, \
then device_add in the first free place (or --bus/--slot), and delete the marker: pc's bus 0, \
then empty q35 root ports, then bridges (see `qmp pci`). The device id is nic-NAME-pci-SLOT \
on pc's bus 0 and nic-NAME-BUS-SLOT elsewhere. Without --tap-fd a tap device is opened here (--tap NAME, default \
qmptap%d: the kernel picks the number), with --queues queues; it lives as long as QEMU uses \
it. If a step fails, the steps before it are undone. Prints what QEMU has afterwards as JSON, \
with the tap carrying each queue (read from QEMU's /proc, `unknown` when it cannot be read). \
Running the same add again is `already-present` (the tap opened for it is not used and goes \
away); a NIC of that name with another MAC, model or queue count is status 1 naming each \
difference. What an interrupted earlier add left is removed first (see `hotplug gc`).")]
    Add(Box<NicAddArgs>),
    /// Hot-remove a NIC: `device_del`, wait for the guest, `netdev_del`
    #[command(long_about = "\
Hot-remove a NIC: device_del, wait for the guest's DEVICE_DELETED, then netdev_del; prints \
the outcome as JSON. Checked first, nothing sent otherwise: the id is a NIC's (nic-...), the \
device exists (or parts of it are left, which are removed; a missing id is status 1 unless \
--if-exists), and the VM is running. In prelaunch (-S, before the first cont) nothing is \
sent, since QEMU 7.2 wedges a device unplugged then; on a paused VM device_del is sent and \
the command ends at once with status 4: run it again after cont to delete the netdev.")]
    Del(DelArgs),
}

/// `qmp hotplug nic add`.
#[derive(Debug, Args)]
pub(crate) struct NicAddArgs {
    /// The NIC's name: 1 to 14 letters, digits or `_` (e.g. the first group of its UUID)
    #[arg(long, value_parser = parse_device_name)]
    pub(crate) name: String,
    /// Tap interface to open or create (a `%d` in it is numbered by the kernel)
    #[arg(long, conflicts_with = "tap_fd")]
    pub(crate) tap: Option<String>,
    /// Tap descriptors inherited from the caller, one per queue (e.g. `--tap-fd 3 3<>...`)
    #[arg(long = "tap-fd", value_name = "FD", value_delimiter = ',')]
    pub(crate) tap_fd: Vec<i32>,
    /// Queues of the tap opened here, 1 to 256 (more than one makes the NIC multiqueue)
    #[arg(long, default_value = "1", value_parser = parse_queues, conflicts_with = "tap_fd")]
    pub(crate) queues: usize,
    /// Use vhost-net, opened by QEMU (refused unless /dev/vhost-net works here)
    #[arg(long)]
    pub(crate) vhost: bool,
    /// Open /dev/vhost-net descriptors inherited from the caller, one per queue
    #[arg(long = "vhost-fd", value_name = "FD", value_delimiter = ',')]
    pub(crate) vhost_fd: Vec<i32>,
    /// The guest-visible MAC address, a unicast one such as 52:54:00:12:34:56
    #[arg(long, value_parser = parse_mac)]
    pub(crate) mac: Option<String>,
    /// The device model: virtio-net-pci, e1000 or rtl8139 (Ganeti's NIC models), or
    /// another QEMU NIC
    #[arg(long, default_value = "virtio-net-pci")]
    pub(crate) model: String,
    /// The MTU offered to the guest (virtio only), 68 to 65535
    #[arg(long, value_name = "MTU", value_parser = clap::value_parser!(u16).range(68..))]
    pub(crate) host_mtu: Option<u16>,
    /// virtio's receive queue size: 256, 512 or 1024
    #[arg(long, value_name = "SIZE", value_parser = ["256", "512", "1024"])]
    pub(crate) rx_queue_size: Option<String>,
    /// virtio's transmit queue size: 256, 512 or 1024
    #[arg(long, value_name = "SIZE", value_parser = ["256", "512", "1024"])]
    pub(crate) tx_queue_size: Option<String>,
    /// Boot order, 0 first
    #[arg(long, value_name = "N")]
    pub(crate) bootindex: Option<u16>,
    /// The option ROM file; an empty value for none (no PXE ROM)
    #[arg(long, value_name = "FILE")]
    pub(crate) romfile: Option<String>,
    /// Bring the link down right after the add, like an unplugged cable
    #[arg(long)]
    pub(crate) link_down: bool,
    /// Another device property (Ganeti's features), NAME=VALUE; VALUE is JSON when it parses
    /// as a boolean or integer, else a string; repeatable
    #[arg(long = "feature", value_name = "NAME=VALUE", value_parser = parse_feature)]
    pub(crate) features: Vec<(String, serde_json::Value)>,
    /// PCI slot instead of the first free one: on --bus, else on bus 0
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..i64::from(PCI_SLOTS)))]
    pub(crate) slot: Option<u8>,
    /// The bus: pci.0, or the id of a pci-bridge, pcie-pci-bridge or q35 pcie-root-port
    /// (see `qmp pci`); default: the first with room
    #[arg(long, value_name = "BUS")]
    pub(crate) bus: Option<String>,
}

/// Removing a device.
#[derive(Debug, Args)]
pub(crate) struct DelArgs {
    /// The device id (as printed by `add`)
    pub(crate) id: String,
    /// Seconds to wait for the guest to let go of the device (`DEVICE_DELETED`)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, default_value = "30")]
    pub(crate) wait: Duration,
    /// Succeed (status 0, outcome `absent`) when nothing of the device exists
    #[arg(long)]
    pub(crate) if_exists: bool,
}

/// `qmp hotplug disk`.
#[derive(Debug, Subcommand)]
pub(crate) enum DiskCommand {
    /// Hot-add a disk; prints its device id, slot and block node as JSON
    #[command(long_about = "\
Hot-add a disk. An --image (a regular file or a block device; a FIFO, directory or device \
node is refused unopened) is opened here (read-only with --read-only) and passed in a new \
fdset (add-fd) that keeps it for the disk's life, with the image's device and inode as its \
opaque; blockdev-add reads /dev/fdset/N (driver file, or host_device for a block device), \
and device_add plugs a virtio-blk device into the first free place (or --pci-bus/--slot), as for NICs. The format is \
never probed: an image whose header contradicts --format (raw by default) is refused unless \
--allow-format-mismatch. A --uri (nbd://HOST[:PORT]/EXPORT or \
nbd+unix:///EXPORT?socket=PATH) is reached by QEMU itself and passes no descriptor. If a \
step fails, the steps before it are undone. Prints what QEMU has afterwards as JSON; a disk \
of that name that QEMU already has exactly so is `already-present` (and this image was not \
passed), one that differs is status 1 naming each difference.")]
    Add(Box<DiskAddArgs>),
    /// Hot-remove a disk: `device_del`, wait for the guest, then `blockdev-del` (or `drive_del`)
    #[command(long_about = "\
Hot-remove a disk: device_del, wait for the guest's DEVICE_DELETED, then blockdev-del and \
remove-fd of its image's fdset (or, with --drive, HMP drive_del of that -drive backend); \
prints the outcome as JSON. Checked first, nothing sent otherwise: the id is a disk's \
(disk-..., any id with --drive), the device exists and is a block device, and --drive is the \
drive it uses (query-block). Missing ids, prelaunch and paused VMs as for `nic del`.")]
    Del(DiskDelArgs),
    /// Resize a disk of ours (`block_resize`); prints the old and new size as JSON
    #[command(long_about = "\
Resize a disk of ours with block_resize of the node its device uses; the guest sees the new \
capacity at once. SIZE is bytes with an optional K, M, G or T (powers of 1024) and a whole \
number of 512-byte sectors. Checked first, nothing sent otherwise: the id is a disk's \
(disk-...), QEMU has the device and it uses its own node, the node is writable, and the disk \
does not shrink unless --allow-shrink (the data past the new end is lost).")]
    Resize(DiskResizeArgs),
}

/// `qmp hotplug disk resize`.
#[derive(Debug, Args)]
pub(crate) struct DiskResizeArgs {
    /// The disk's device id (as printed by `add`)
    pub(crate) id: String,
    /// The new size: bytes, or with K, M, G or T (e.g. 64M, 1G)
    #[arg(value_parser = parse_disk_size)]
    pub(crate) size: u64,
    /// Allow making the disk smaller (the guest's data past the new end is lost)
    #[arg(long)]
    pub(crate) allow_shrink: bool,
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
    #[arg(long, value_parser = parse_device_name)]
    pub(crate) name: String,
    /// An image file or block device, passed to QEMU as a descriptor
    #[arg(long, value_name = "PATH", required_unless_present = "uri", conflicts_with = "uri")]
    pub(crate) image: Option<PathBuf>,
    /// An NBD URI QEMU connects to itself, read as QEMU reads it: `nbd://HOST[:PORT]/EXPORT`
    /// (an IPv6 HOST in brackets, %-escapes decoded) or `nbd+unix:///EXPORT?socket=PATH`
    #[arg(long, value_name = "URI", value_parser = NbdExport::parse_uri)]
    pub(crate) uri: Option<NbdExport>,
    /// With --uri: reach the export over TLS with the certificates in DIR (`ca-cert.pem`,
    /// and `client-cert.pem`/`client-key.pem` for a server that checks clients), as QEMU's
    /// tls-creds-x509 reads them
    #[arg(long, value_name = "DIR", requires = "uri", value_parser = parse_tls_dir)]
    pub(crate) tls_dir: Option<PathBuf>,
    /// With --tls-dir: the name the server's certificate must carry, when not the URI's host
    #[arg(long, value_name = "HOST", requires = "tls_dir")]
    pub(crate) tls_hostname: Option<String>,
    /// The image format (never probed: an image whose header says otherwise is refused)
    #[arg(long, value_enum, default_value = "raw")]
    pub(crate) format: Format,
    /// Use --format even though the image's header says another format (e.g. a raw disk
    /// whose guest wrote a qcow2 signature into it)
    #[arg(long)]
    pub(crate) allow_format_mismatch: bool,
    /// Open and present the disk read-only
    #[arg(long)]
    pub(crate) read_only: bool,
    /// The bus: a PCI device of its own (`virtio`), or a LUN on a virtio-scsi controller
    /// (`scsi`: --scsi-controller, else this tool's own, hot-added the first time)
    #[arg(long, value_enum, default_value = "virtio")]
    pub(crate) bus: DiskBusArg,
    /// With --bus scsi: the id of the virtio-scsi-pci controller to put the LUN on
    #[arg(long, value_name = "ID", value_parser = parse_qemu_id)]
    pub(crate) scsi_controller: Option<String>,
    /// The device model [default: virtio-blk-pci, scsi-hd with --bus scsi]
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// PCI slot instead of the first free one: on --pci-bus, else on bus 0 (with --bus
    /// scsi: of a controller this tool hot-adds)
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..i64::from(PCI_SLOTS)))]
    pub(crate) slot: Option<u8>,
    /// The PCI bus: pci.0, or the id of a pci-bridge, pcie-pci-bridge or q35
    /// pcie-root-port (see `qmp pci`); default: the first with room
    #[arg(long, value_name = "BUS")]
    pub(crate) pci_bus: Option<String>,
    #[command(flatten)]
    pub(crate) cache: CacheArgs,
    /// How QEMU issues I/O (`native` needs --cache-direct; not for --uri)
    #[arg(long, value_enum)]
    pub(crate) aio: Option<AioMode>,
    /// What QEMU does with the guest's discards
    #[arg(long, value_enum)]
    pub(crate) discard: Option<DiscardMode>,
    /// Whether QEMU looks for writes of zeroes (`unmap` needs --discard unmap)
    #[arg(long, value_enum)]
    pub(crate) detect_zeroes: Option<DetectZeroesMode>,
    /// The serial number the guest sees (1 to 20 printable ASCII characters, no ',')
    #[arg(long)]
    pub(crate) serial: Option<String>,
    /// The disk's place in the boot order
    #[arg(long)]
    pub(crate) bootindex: Option<u16>,
    /// The device's write cache as the guest sees it (QEMU's `auto` when not given)
    #[arg(long, value_enum)]
    pub(crate) write_cache: Option<OnOff>,
}

/// `disk add --bus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DiskBusArg {
    /// A virtio-blk PCI device.
    Virtio,
    /// A SCSI LUN on a virtio-scsi controller.
    Scsi,
}

/// `disk add`'s cache mode.
#[derive(Debug, Args)]
pub(crate) struct CacheArgs {
    /// Bypass the host page cache (`cache.direct`)
    #[arg(long)]
    pub(crate) cache_direct: bool,
    /// Ignore the guest's flushes (`cache.no-flush`; unsafe if the host crashes)
    #[arg(long)]
    pub(crate) cache_no_flush: bool,
}

/// `--aio` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AioMode {
    /// A thread pool.
    Threads,
    /// Linux native AIO.
    Native,
    /// `io_uring` (where this QEMU has it).
    #[value(name = "io_uring")]
    IoUring,
}

/// `--discard` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DiscardMode {
    /// Dropped.
    Ignore,
    /// Passed down.
    Unmap,
}

/// `--detect-zeroes` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DetectZeroesMode {
    /// No.
    Off,
    /// Zero writes become write-zeroes.
    On,
    /// And are unmapped.
    Unmap,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

impl DiskAddArgs {
    /// The settings these options ask for.
    pub(crate) fn settings(&self) -> DiskSettings {
        DiskSettings {
            cache_direct: self.cache.cache_direct,
            cache_no_flush: self.cache.cache_no_flush,
            aio: self.aio.map(|aio| match aio {
                AioMode::Threads => Aio::Threads,
                AioMode::Native => Aio::Native,
                AioMode::IoUring => Aio::IoUring,
            }),
            discard: self.discard.map(|discard| match discard {
                DiscardMode::Ignore => Discard::Ignore,
                DiscardMode::Unmap => Discard::Unmap,
            }),
            detect_zeroes: self.detect_zeroes.map(|zeroes| match zeroes {
                DetectZeroesMode::Off => DetectZeroes::Off,
                DetectZeroesMode::On => DetectZeroes::On,
                DetectZeroesMode::Unmap => DetectZeroes::Unmap,
            }),
            serial: self.serial.clone(),
            bootindex: self.bootindex,
            write_cache: self.write_cache.map(|on_off| on_off == OnOff::On),
        }
    }
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

/// Parses `--feature NAME=VALUE`: `true`, `false` and integers as JSON, anything else as a
/// string (qmp-hotplug checks the name and the value's kind).
fn parse_feature(text: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) =
        text.split_once('=').ok_or_else(|| format!("'{text}' is not NAME=VALUE"))?;
    let value = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(parsed) if parsed.is_boolean() || parsed.is_i64() || parsed.is_u64() => parsed,
        _ => value.into(),
    };
    Ok((name.to_owned(), value))
}
