//! The settings a manager passes for a disk (cache mode, I/O backend, discard, zero
//! detection, and what the guest is told: serial, boot order, write cache), checked before
//! anything is sent to QEMU and turned into `blockdev-add` / `device_add` arguments.

use serde_json::{Map, Value, json};

use crate::Error;

/// The longest serial a virtio-blk disk shows the guest (`VIRTIO_BLK_ID_BYTES`); QEMU 7.2
/// cuts longer ones short without saying so.
pub const MAX_DISK_SERIAL_LEN: usize = 20;

/// How QEMU issues a disk's I/O (`aio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Aio {
    /// A thread pool (QEMU's default).
    Threads,
    /// Linux native AIO; QEMU requires `cache.direct`.
    Native,
    /// `io_uring`, where this QEMU was built with it (probe with
    /// [`Hotplug::check_disk_support`](crate::Hotplug::check_disk_support)).
    IoUring,
}

impl Aio {
    /// The QAPI name (`BlockdevAioOptions`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threads => "threads",
            Self::Native => "native",
            Self::IoUring => "io_uring",
        }
    }
}

/// What QEMU does with the guest's discard requests (`discard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Discard {
    /// Dropped (QEMU's default).
    Ignore,
    /// Passed down, freeing space in the image.
    Unmap,
}

impl Discard {
    /// The QAPI name (`BlockdevDiscardOptions`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::Unmap => "unmap",
        }
    }
}

/// Whether QEMU looks for writes of zeroes (`detect-zeroes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DetectZeroes {
    /// No (QEMU's default).
    Off,
    /// Writes of zeroes become write-zeroes requests.
    On,
    /// ... and are unmapped; needs [`Discard::Unmap`].
    Unmap,
}

impl DetectZeroes {
    /// The QAPI name (`BlockdevDetectZeroesOptions`), as `query-named-block-nodes` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Unmap => "unmap",
        }
    }
}

/// A disk's settings; every `None` or `false` leaves QEMU's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskSettings {
    /// `cache.direct`: bypass the host page cache (`O_DIRECT`).
    pub cache_direct: bool,
    /// `cache.no-flush`: ignore the guest's flushes (unsafe on a host crash).
    pub cache_no_flush: bool,
    /// `aio`: only for images passed as descriptors (NBD has none).
    pub aio: Option<Aio>,
    /// `discard`.
    pub discard: Option<Discard>,
    /// `detect-zeroes`.
    pub detect_zeroes: Option<DetectZeroes>,
    /// The serial number the guest sees: printable ASCII without `,`, at most
    /// [`MAX_DISK_SERIAL_LEN`] characters.
    pub serial: Option<String>,
    /// The device's place in the boot order.
    pub bootindex: Option<u16>,
    /// The device's `write-cache` (whether the guest is told to flush); QEMU's `auto` when `None`.
    pub write_cache: Option<bool>,
}

impl DiskSettings {
    /// Refuses combinations QEMU would refuse part way through an add, and values it would
    /// change silently. `nbd`: the disk is an NBD export.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the setting.
    pub fn check(&self, nbd: bool) -> Result<(), Error> {
        let bad = |why: String| Err(Error::InvalidSpec(why));
        if nbd && self.aio.is_some() {
            return bad("aio applies to image files and block devices, not to NBD exports".into());
        }
        if self.aio == Some(Aio::Native) && !self.cache_direct {
            return bad("aio=native needs cache.direct (QEMU refuses it otherwise)".into());
        }
        if self.detect_zeroes == Some(DetectZeroes::Unmap) && self.discard != Some(Discard::Unmap) {
            return bad(
                "detect-zeroes=unmap needs discard=unmap (QEMU refuses it otherwise)".into()
            );
        }
        if let Some(serial) = &self.serial {
            if serial.is_empty() || serial.len() > MAX_DISK_SERIAL_LEN {
                return bad(format!(
                    "a disk serial has 1 to {MAX_DISK_SERIAL_LEN} characters, not {}",
                    serial.len()
                ));
            }
            if !serial.bytes().all(|c| c.is_ascii_graphic() && c != b',') {
                return bad(format!("disk serial {serial:?} is not printable ASCII without ','"));
            }
        }
        Ok(())
    }

    /// The `blockdev-add` options of a node (format and protocol node alike).
    pub(crate) fn node_options(&self, node: &mut Map<String, Value>, protocol: bool) {
        if self.cache_direct || self.cache_no_flush {
            node.insert(
                "cache".into(),
                json!({"direct": self.cache_direct, "no-flush": self.cache_no_flush}),
            );
        }
        if let Some(discard) = self.discard {
            node.insert("discard".into(), discard.as_str().into());
        }
        if let Some(detect_zeroes) = self.detect_zeroes {
            node.insert("detect-zeroes".into(), detect_zeroes.as_str().into());
        }
        if let (true, Some(aio)) = (protocol, self.aio) {
            node.insert("aio".into(), aio.as_str().into());
        }
    }

    /// The `device_add` properties.
    pub(crate) fn device_options(&self, device: &mut Map<String, Value>) {
        if let Some(serial) = &self.serial {
            device.insert("serial".into(), serial.clone().into());
        }
        if let Some(bootindex) = self.bootindex {
            device.insert("bootindex".into(), bootindex.into());
        }
        if let Some(write_cache) = self.write_cache {
            device.insert("write-cache".into(), if write_cache { "on" } else { "off" }.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_qemu_refuses_are_refused_first() {
        let native = DiskSettings { aio: Some(Aio::Native), ..DiskSettings::default() };
        assert!(native.check(false).unwrap_err().to_string().contains("cache.direct"));
        let direct_native = DiskSettings { cache_direct: true, ..native.clone() };
        assert!(direct_native.check(false).is_ok());
        assert!(direct_native.check(true).unwrap_err().to_string().contains("not to NBD"));
        let zeroes =
            DiskSettings { detect_zeroes: Some(DetectZeroes::Unmap), ..DiskSettings::default() };
        assert!(zeroes.check(false).unwrap_err().to_string().contains("discard=unmap"));
        let with_discard = DiskSettings { discard: Some(Discard::Unmap), ..zeroes };
        assert!(with_discard.check(true).is_ok());
    }

    #[test]
    fn serials_fit_what_virtio_blk_shows() {
        let serial = |text: &str| DiskSettings { serial: Some(text.into()), ..Default::default() };
        assert!(serial("QM00001").check(false).is_ok());
        assert!(serial(&"x".repeat(MAX_DISK_SERIAL_LEN)).check(false).is_ok());
        for bad in ["", "a,b", "a b", "é", &"x".repeat(MAX_DISK_SERIAL_LEN + 1)] {
            assert!(serial(bad).check(false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_send_nothing() {
        let (mut node, mut device) = (Map::new(), Map::new());
        DiskSettings::default().node_options(&mut node, true);
        DiskSettings::default().device_options(&mut device);
        assert!(node.is_empty() && device.is_empty());
    }
}
