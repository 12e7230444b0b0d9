//! What the caller asks for: the NIC and disk specs, where a disk's data is, and NBD URIs.
//! Plain data: no client and no I/O (the planner turns it into QMP arguments).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hostdev::format::ImageFormat;

use crate::Error;

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
            model: "virtio-net-pci".into(),
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

/// An NBD export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdExport {
    /// The server.
    pub server: NbdServer,
    /// The export name (the server's default when `None`).
    pub export: Option<String>,
}

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NbdServer {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (10809 is NBD's).
        port: u16,
    },
}

impl NbdExport {
    /// Parses an NBD URI: `nbd://HOST[:PORT]/[EXPORT]` or `nbd+unix:///[EXPORT]?socket=PATH`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for anything else.
    pub fn parse_uri(uri: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidSpec(format!("bad NBD URI '{uri}': {why}"));
        let export = |path: &str| {
            let name = path.strip_prefix('/').unwrap_or(path);
            (!name.is_empty()).then(|| name.to_owned())
        };
        if let Some(rest) = uri.strip_prefix("nbd+unix://") {
            let (path, query) = rest.split_once('?').ok_or_else(|| bad("no ?socket=PATH"))?;
            if !path.is_empty() && !path.starts_with('/') {
                return Err(bad("nbd+unix takes no host"));
            }
            let socket = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("socket="))
                .filter(|socket| !socket.is_empty())
                .ok_or_else(|| bad("no socket= parameter"))?;
            return Ok(Self { server: NbdServer::Unix(socket.into()), export: export(path) });
        }
        let rest = uri.strip_prefix("nbd://").ok_or_else(|| bad("not nbd:// or nbd+unix://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                (host, port.parse().map_err(|_| bad("the port is not a number"))?)
            }
            _ => (authority, 10809),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self { server: NbdServer::Tcp { host: host.into(), port }, export: export(path) })
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
    /// A slot to use instead of the first free one (on [`bus`](Self::bus), or pc's bus 0).
    pub slot: Option<u8>,
    /// The bus to use (`pci.0`, a bridge's or root port's id) instead of the first with
    /// room; `None` searches every bus (see [`PciTree`](crate::PciTree)).
    pub bus: Option<String>,
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
            bus: None,
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
    fn nbd_uris_parse() {
        let tcp = NbdExport::parse_uri("nbd://10.0.0.1:10810/disk").unwrap();
        assert_eq!(tcp.server, NbdServer::Tcp { host: "10.0.0.1".into(), port: 10810 });
        assert_eq!(tcp.export.as_deref(), Some("disk"));
        let default_port = NbdExport::parse_uri("nbd://host").unwrap();
        assert_eq!(default_port.server, NbdServer::Tcp { host: "host".into(), port: 10809 });
        assert_eq!(default_port.export, None);
        let v6 = NbdExport::parse_uri("nbd://[::1]:99/e").unwrap();
        assert_eq!(v6.server, NbdServer::Tcp { host: "::1".into(), port: 99 });
        let unix = NbdExport::parse_uri("nbd+unix:///exp0?socket=/run/nbd.sock").unwrap();
        assert_eq!(unix.server, NbdServer::Unix("/run/nbd.sock".into()));
        assert_eq!(unix.export.as_deref(), Some("exp0"));
        for bad in
            ["http://x", "nbd://", "nbd://h:port/", "nbd+unix:///e", "nbd+unix://host/e?socket=/s"]
        {
            assert!(NbdExport::parse_uri(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn only_path_and_descriptor_sources_pass_a_descriptor() {
        assert!(DiskSource::Path("/img".into()).needs_fd());
        assert!(DiskSource::Fd.needs_fd());
        let nbd = NbdExport::parse_uri("nbd://host/e").unwrap();
        assert!(!DiskSource::Nbd(nbd).needs_fd());
    }
}
