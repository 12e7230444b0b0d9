//! What the caller asks for: the NIC and disk specs and where a disk's data is.
//! Plain data: no client and no I/O (the planner turns it into QMP arguments).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hostdev::format::ImageFormat;
use serde_json::Value;

use crate::Error;
use crate::disk_settings::DiskSettings;
pub(crate) use crate::nbd::{NbdExport, NbdServer};

/// Most queues a multiqueue NIC may have (QEMU's `MAX_QUEUE_NUM` for tap is 1024; virtio-net
/// needs two MSI-X vectors per queue, and PCI caps a function at 2048 vectors).
pub const MAX_NIC_QUEUES: usize = 1023;

/// The virtio NIC model.
pub const VIRTIO_NET: &str = "virtio-net-pci";
/// Intel's e1000 NIC model.
pub const E1000: &str = "e1000";
/// Realtek's RTL8139 NIC model.
pub const RTL8139: &str = "rtl8139";

/// Device properties the planner or [`NicSpec`]'s own fields set: not allowed in
/// [`NicSpec::features`].
const MANAGED_NIC_PROPERTIES: [&str; 13] = [
    "driver",
    "id",
    "bus",
    "addr",
    "netdev",
    "mac",
    "mq",
    "vectors",
    "host_mtu",
    "rx_queue_size",
    "tx_queue_size",
    "bootindex",
    "romfile",
];

impl NicSpec {
    /// Checks every setting that QEMU need not be asked about: the MAC, virtio-only
    /// settings on a virtio model, the ranges, and the feature map.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the setting.
    pub fn check_settings(&self) -> Result<(), Error> {
        let invalid = |why: String| Err(Error::InvalidSpec(why));
        if let Some(mac) = &self.mac {
            check_mac(mac).map_err(Error::InvalidSpec)?;
        }
        let virtio = self.model.starts_with("virtio-net");
        let virtio_only = [
            ("queues > 1", self.queues > 1),
            ("vhost", self.vhost != Vhost::Off),
            ("host_mtu", self.host_mtu.is_some()),
            ("rx_queue_size", self.rx_queue_size.is_some()),
            ("tx_queue_size", self.tx_queue_size.is_some()),
        ];
        if let Some((what, _)) = virtio_only.iter().find(|(_, set)| *set).filter(|_| !virtio) {
            return invalid(format!("{what} needs a virtio-net model, not {}", self.model));
        }
        if let Some(mtu) = self.host_mtu.filter(|mtu| *mtu < 68) {
            return invalid(format!("host_mtu {mtu} is below 68, IPv4's minimum"));
        }
        for (what, size) in
            [("rx_queue_size", self.rx_queue_size), ("tx_queue_size", self.tx_queue_size)]
        {
            if let Some(size) =
                size.filter(|size| !(size.is_power_of_two() && (256..=1024).contains(size)))
            {
                return invalid(format!("{what} {size} is not a power of two from 256 to 1024"));
            }
        }
        if self.romfile.as_deref().is_some_and(|file| file.contains('\0')) {
            return invalid("romfile contains a NUL byte".into());
        }
        for (name, value) in &self.features {
            let good_name = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')
                });
            if !good_name {
                return invalid(format!("feature {name:?} is not a property name"));
            }
            if MANAGED_NIC_PROPERTIES.contains(&name.as_str()) {
                return invalid(format!(
                    "feature {name} is set by the spec's own field or the planner"
                ));
            }
            if !(value.is_boolean() || value.is_i64() || value.is_u64() || value.is_string()) {
                return invalid(format!(
                    "feature {name} is {value}, not a boolean, integer or string"
                ));
            }
        }
        Ok(())
    }
}

/// Checks a MAC address: six `:`-separated pairs of hex digits, unicast (QEMU refuses a
/// multicast one at `device_add`, after the netdev exists).
///
/// # Errors
/// Why not.
pub fn check_mac(mac: &str) -> Result<(), String> {
    let octets: Vec<&str> = mac.split(':').collect();
    let valid = octets.len() == 6
        && octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid {
        return Err(format!("'{mac}' is not a MAC address like 52:54:00:12:34:56"));
    }
    if u8::from_str_radix(octets[0], 16).is_ok_and(|first| first & 1 == 1) {
        return Err(format!("'{mac}' is a multicast address; a NIC needs a unicast one"));
    }
    Ok(())
}

/// How a NIC uses vhost-net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Vhost {
    /// No vhost: QEMU moves packets itself.
    #[default]
    Off,
    /// QEMU opens `/dev/vhost-net` itself (`"vhost": true`).
    Open,
    /// The caller passes one open `/dev/vhost-net` descriptor per queue (`vhostfd(s)`).
    Fds,
}

/// A NIC to hot-add: a tap netdev and a virtio-net (or other) PCI device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// The name part of the device id (see [`DeviceId`](crate::DeviceId)), e.g. the NIC's UUID's first group.
    pub name: String,
    /// Tap queues; one tap descriptor each. More than one makes a multiqueue NIC.
    pub queues: usize,
    /// vhost-net use.
    pub vhost: Vhost,
    /// The guest-visible MAC address, if not QEMU's default: a unicast one such as
    /// `52:54:00:12:34:56`, checked before QEMU is asked anything.
    pub mac: Option<String>,
    /// The device model: `virtio-net-pci` (multiqueue, vhost and the virtio settings below),
    /// or Ganeti's other NIC models [`E1000`] and [`RTL8139`].
    pub model: String,
    /// The MTU offered to the guest (`host_mtu`, virtio only), 68 to 65535.
    pub host_mtu: Option<u16>,
    /// virtio-net's receive queue size (`rx_queue_size`): a power of two, 256 to 1024.
    pub rx_queue_size: Option<u16>,
    /// virtio-net's transmit queue size (`tx_queue_size`): a power of two, 256 to 1024.
    pub tx_queue_size: Option<u16>,
    /// Boot order (`bootindex`), 0 first.
    pub bootindex: Option<u16>,
    /// The option ROM (`romfile`): a file name QEMU finds, or `""` for none (no PXE ROM).
    pub romfile: Option<String>,
    /// `false` to bring the link down right after the add (`set_link`), as a VM whose
    /// cable is unplugged.
    pub link_up: bool,
    /// Other device properties (Ganeti's `features`), e.g. `{"csum": false}`: names of
    /// lower-case letters, digits, `-` and `_`, none of the properties the fields above or
    /// the planner set, values booleans, integers or strings. QEMU checks the rest at
    /// `device_add` (which the add then undoes).
    pub features: BTreeMap<String, Value>,
    /// A slot to use instead of the first free one (on [`bus`](Self::bus), or pc's bus 0).
    pub slot: Option<u8>,
    /// The bus to use (`pci.0`, a bridge's or root port's id) instead of the first with
    /// room; `None` searches every bus (see [`PciTree`](crate::PciTree)).
    pub bus: Option<String>,
}

impl NicSpec {
    /// A single-queue `virtio-net-pci` NIC without vhost.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queues: 1,
            vhost: Vhost::Off,
            mac: None,
            model: VIRTIO_NET.into(),
            host_mtu: None,
            rx_queue_size: None,
            tx_queue_size: None,
            bootindex: None,
            romfile: None,
            link_up: true,
            features: BTreeMap::new(),
            slot: None,
            bus: None,
        }
    }
}

/// Where a disk's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskSource {
    /// An image file or block device that this process opens and passes in an fdset.
    Path(PathBuf),
    /// A descriptor the caller opened, passed in an fdset.
    Fd,
    /// An export QEMU reaches itself in userspace (no descriptor is passed).
    Nbd(NbdExport),
}

impl DiskSource {
    /// `true` if the disk reaches QEMU as a passed descriptor.
    pub fn needs_fd(&self) -> bool {
        matches!(self, Self::Path(_) | Self::Fd)
    }
}

/// The disk image format QEMU reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DiskFormat {
    /// Raw bytes.
    #[default]
    Raw,
    /// qcow2.
    Qcow2,
}

impl DiskFormat {
    /// The `blockdev-add` driver name.
    pub fn driver(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }

    /// Whether an image whose header shows `found` (`None`: no known signature) fits
    /// this declared format: raw data has no known signature, qcow2 has its own.
    ///
    /// ```
    /// use hostdev::format::ImageFormat;
    /// use qmp_hotplug::DiskFormat;
    /// assert!(DiskFormat::Raw.fits(None));
    /// assert!(!DiskFormat::Raw.fits(Some(ImageFormat::Qcow2 { version: 3 })));
    /// assert!(DiskFormat::Qcow2.fits(Some(ImageFormat::Qcow2 { version: 3 })));
    /// assert!(!DiskFormat::Qcow2.fits(None));
    /// ```
    pub fn fits(self, found: Option<ImageFormat>) -> bool {
        match self {
            Self::Raw => found.is_none(),
            Self::Qcow2 => matches!(found, Some(ImageFormat::Qcow2 { .. })),
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.driver())
    }
}

/// Which bus a disk goes on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DiskBus {
    /// Its own PCI device (`virtio-blk-pci`), in a free slot.
    #[default]
    Virtio,
    /// A LUN (`scsi-hd`) on a `virtio-scsi-pci` controller: the one with this id (checked
    /// to exist and to be a virtio-scsi controller), or with `None` this library's own
    /// controller (`scsi-hba-<bus>-<slot>`), hot-added into a free PCI place the first time.
    Scsi {
        /// The controller's device id, or `None` for this library's own.
        controller: Option<String>,
    },
}

impl DiskBus {
    /// The device model a disk on this bus gets unless the spec says otherwise.
    pub fn default_model(&self) -> &'static str {
        match self {
            Self::Virtio => "virtio-blk-pci",
            Self::Scsi { .. } => "scsi-hd",
        }
    }
}

/// A disk to hot-add: a block node and a virtio-blk (or other) PCI device, or a SCSI LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The name part of the device id.
    pub name: String,
    /// Where the data is.
    pub source: DiskSource,
    /// The image format QEMU is told. Never probed: when the image's header contradicts
    /// it, the add is refused ([`Error::FormatMismatch`]) unless `allow_format_mismatch`.
    pub format: DiskFormat,
    /// Use `format` even when the image's header says otherwise (e.g. a raw disk whose
    /// guest wrote a qcow2 signature at its start).
    pub allow_format_mismatch: bool,
    /// Open and present the disk read-only.
    pub read_only: bool,
    /// The device model (`virtio-blk-pci`, `scsi-hd`, ...).
    pub model: String,
    /// The bus: a PCI device of its own, or a LUN on a SCSI controller; set it with
    /// [`DiskSpec::with_bus`], which picks the model to match.
    pub bus: DiskBus,
    /// A slot to use instead of the first free one (on [`pci_bus`](Self::pci_bus), or pc's
    /// bus 0); for a SCSI disk, the slot of the controller this library hot-adds.
    pub slot: Option<u8>,
    /// The PCI bus to use (`pci.0`, a bridge's or root port's id) instead of the first
    /// with room; `None` searches every bus (see [`PciTree`](crate::PciTree)). For a SCSI
    /// disk, where a controller this library hot-adds goes.
    pub pci_bus: Option<String>,
    /// Cache mode, I/O backend, discard, zero detection, serial, boot order, write cache.
    pub settings: DiskSettings,
}

impl DiskSpec {
    /// A read-write raw `virtio-blk-pci` disk.
    pub fn new(name: impl Into<String>, source: DiskSource) -> Self {
        Self {
            name: name.into(),
            source,
            format: DiskFormat::Raw,
            allow_format_mismatch: false,
            read_only: false,
            model: DiskBus::Virtio.default_model().into(),
            bus: DiskBus::Virtio,
            slot: None,
            pci_bus: None,
            settings: DiskSettings::default(),
        }
    }

    /// The same disk on `bus`, with that bus's default model (`scsi-hd` for SCSI).
    ///
    /// ```
    /// use qmp_hotplug::{DiskBus, DiskSource, DiskSpec};
    /// let spec = DiskSpec::new("data", DiskSource::Fd).with_bus(DiskBus::Scsi { controller: None });
    /// assert_eq!(spec.model, "scsi-hd");
    /// ```
    #[must_use]
    pub fn with_bus(mut self, bus: DiskBus) -> Self {
        self.model = bus.default_model().into();
        self.bus = bus;
        self
    }
}

/// How a removal behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoveOptions {
    /// The whole removal's time, the guest's acknowledgement included.
    pub timeout: Duration,
    /// Nothing of the device exists: [`Outcome::Absent`](crate::Outcome::Absent) instead of
    /// [`Error::NotFound`] (for callers that remove idempotently).
    pub missing_ok: bool,
}

impl RemoveOptions {
    /// Wait up to `timeout`; a missing device is an error.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, missing_ok: false }
    }

    /// Sets [`RemoveOptions::missing_ok`].
    #[must_use]
    pub fn missing_ok(mut self, missing_ok: bool) -> Self {
        self.missing_ok = missing_ok;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_path_and_descriptor_sources_pass_a_descriptor() {
        assert!(DiskSource::Path("/img".into()).needs_fd());
        assert!(DiskSource::Fd.needs_fd());
        let nbd = NbdExport::parse_uri("nbd://host/e").unwrap();
        assert!(!DiskSource::Nbd(nbd).needs_fd());
    }
}
