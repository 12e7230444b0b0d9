//! What the caller asks for: the NIC and disk specs and where a disk's data is.
//! Plain data: no client and no I/O (the planner turns it into QMP arguments).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hostdev::format::ImageFormat;

#[cfg(doc)]
use crate::Error;
use crate::disk_settings::DiskSettings;
pub(crate) use crate::nbd::{NbdExport, NbdServer};

/// Most queues a multiqueue NIC may have (QEMU's `MAX_QUEUE_NUM` for tap is 1024; virtio-net
/// needs two MSI-X vectors per queue, and PCI caps a function at 2048 vectors).
pub const MAX_NIC_QUEUES: usize = 1023;

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
    /// The guest-visible MAC address, if not QEMU's default.
    pub mac: Option<String>,
    /// The device model (`virtio-net-pci`, `e1000`, ...).
    pub model: String,
    /// A slot to use instead of the first free one.
    pub slot: Option<u8>,
}

impl NicSpec {
    /// A single-queue `virtio-net-pci` NIC without vhost.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queues: 1,
            vhost: Vhost::Off,
            mac: None,
            model: "virtio-net-pci".into(),
            slot: None,
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

/// A disk to hot-add: a block node and a virtio-blk (or other) PCI device.
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
    /// The device model (`virtio-blk-pci`, ...).
    pub model: String,
    /// A slot to use instead of the first free one.
    pub slot: Option<u8>,
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
            model: "virtio-blk-pci".into(),
            slot: None,
            settings: DiskSettings::default(),
        }
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
