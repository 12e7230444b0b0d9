//! Operations on a disk that is already there: `block_resize` ([`Hotplug::resize_disk`]),
//! and a CD drive's medium ([`Hotplug::change_medium`], [`Hotplug::eject`]). Each checks
//! first that the device is what the operation needs, and changes nothing otherwise.
//!
//! CD drives are `scsi-cd` (on a virtio-scsi controller), given at VM start: with `ide-cd`
//! the `pc` machine's `ata_piix` controller broke NIC unplug in the test guest in 2 of 2
//! runs, so the tests use `scsi-cd` (an `ide-cd` is accepted all the same). A medium is
//! passed like a disk image: opened here off the async threads (regular file or block
//! device, classified by `hostdev`), into a new fdset whose opaque is
//! `qmp-rs-cd:<drive id>`, read by `blockdev-change-medium` from `/dev/fdset/N`. A
//! failed change removes that fdset; a successful one, and an eject, remove the fdsets of
//! the media before.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde_json::json;
use tracing::{Instrument, debug, info_span};

use hostdev::image::Access;

use crate::Error;
use crate::deadline::Deadline;
use crate::executor::{Hotplug, check_own_node, our_id};
use crate::ids::DeviceKind;
use crate::snapshot::Focus;
use crate::spec::DiskFormat;

/// Disk sizes are whole 512-byte sectors: virtio-blk tells the guest its capacity in them.
pub const SECTOR_SIZE: u64 = 512;

/// The device drivers that are CD drives.
pub const CD_DRIVERS: [&str; 2] = ["scsi-cd", "ide-cd"];

/// The prefix of the fdset `opaque` of a CD medium passed by this crate.
const CD_OPAQUE_PREFIX: &str = "qmp-rs-cd:";

/// What [`Hotplug::resize_disk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resized {
    /// The size before, in bytes, as QEMU reported it.
    pub old_size: u64,
    /// The size now, in bytes.
    pub new_size: u64,
}

impl Resized {
    /// `false` when the disk already had the size asked for (nothing was sent).
    pub fn changed(&self) -> bool {
        self.old_size != self.new_size
    }
}

impl Hotplug {
    /// Resizes disk `id` to `new_size` bytes (`block_resize` of the node QEMU reports for
    /// its device); the guest sees the new capacity at once. Shrinking loses the data past
    /// the new end and is refused unless `allow_shrink`.
    ///
    /// Checked before anything is sent: `new_size` is a positive multiple of
    /// [`SECTOR_SIZE`], `id` is a disk id of ours, QEMU has the device and it uses its own
    /// node (as [`Hotplug::del_disk`] checks), and the node is writable. The same size
    /// again sends nothing.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`], [`Error::InvalidName`], [`Error::WrongKind`],
    /// [`Error::NotFound`], [`Error::DriveMismatch`], [`Error::ReadOnly`],
    /// [`Error::Shrink`], or QEMU's refusal of `block_resize`.
    pub async fn resize_disk(
        &self,
        id: &str,
        new_size: u64,
        allow_shrink: bool,
    ) -> Result<Resized, Error> {
        if new_size == 0 || new_size % SECTOR_SIZE != 0 {
            return Err(Error::InvalidSpec(format!(
                "a disk size is a positive multiple of {SECTOR_SIZE} bytes, not {new_size}"
            )));
        }
        let device = our_id(id, DeviceKind::Disk)?;
        let deadline = Deadline::after(self.operation_timeout);
        let _serial = self.serialise(&deadline).await?;
        let span = info_span!("resize_disk", id, new_size);
        let focus = Focus::Device(id.to_owned(), DeviceKind::Disk);
        let snapshot = self.inventory(&focus, &deadline).instrument(span.clone()).await?;
        let Some(driver) = snapshot.peripherals.get(id) else {
            return Err(Error::NotFound { id: id.into() });
        };
        check_own_node(&snapshot, id, &device, driver, false)?;
        let node = device.node_name();
        if snapshot.block_nodes.get(&node).is_some_and(|node| node.read_only) {
            return Err(Error::ReadOnly { id: id.into() });
        }
        let old_size = self.node_size(&node, &deadline).await?;
        if new_size < old_size && !allow_shrink {
            return Err(Error::Shrink { id: id.into(), current: old_size, requested: new_size });
        }
        if new_size != old_size {
            let resize =
                self.client().execute("block_resize", json!({"node-name": node, "size": new_size}));
            self.call(&deadline, "block_resize", resize).instrument(span).await?;
            debug!(id, old_size, new_size, "resized");
        }
        Ok(Resized { old_size, new_size })
    }

    /// The virtual size of node `node`, from `query-named-block-nodes`.
    async fn node_size(&self, node: &str, deadline: &Deadline) -> Result<u64, Error> {
        let query = self.client().execute("query-named-block-nodes", json!({"flat": true}));
        let nodes = self.call(deadline, "query-named-block-nodes", query).await?;
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["node-name"] == node)
            .and_then(|entry| entry["image"]["virtual-size"].as_u64())
            .ok_or_else(|| Error::NotFound { id: node.into() })
    }
}

impl Hotplug {
    /// Puts the medium `image` (a regular file or block device, opened here, read-only when
    /// `read_only`) into CD drive `id` with `blockdev-change-medium`, in `format` (never
    /// probed: a header that contradicts it is refused). The guest sees the new medium
    /// (a closed tray, media present). The fdsets of earlier media passed by this crate
    /// are removed afterwards; on failure, the new fdset is.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::WrongKind`] (not a CD drive), [`Error::Open`],
    /// [`Error::InvalidSource`], [`Error::HostTimeout`], [`Error::FormatMismatch`] before
    /// anything is sent; [`Error::Step`] naming the failed command, after the undo.
    pub async fn change_medium(
        &self,
        id: &str,
        image: &Path,
        format: DiskFormat,
        read_only: bool,
    ) -> Result<(), Error> {
        let deadline = Deadline::after(self.operation_timeout);
        let path: PathBuf = image.to_owned();
        let access = Access::from_read_only(read_only);
        let what = format!("opening CD medium {}", path.display());
        let (image, facts) = self
            .host_io(what, &deadline, move |host| {
                let image = host.open_image(&path, access)?;
                let facts = host.inspect_image(&image)?;
                Ok((image, facts))
            })
            .await?;
        if !format.fits(facts.format) {
            return Err(Error::FormatMismatch { declared: format, found: facts.format });
        }
        let _serial = self.serialise(&deadline).await?;
        self.check_cd(id, &deadline).await?;
        let before = self.cd_fdsets(id, &deadline).await?;
        let opaque = format!("{CD_OPAQUE_PREFIX}{id}");
        let added = self.client().add_fd(image.as_fd(), None, Some(&opaque));
        let fdset = self.call(&deadline, "add-fd", added).await?.fdset_id;
        let arguments = json!({
            "id": id,
            "filename": format!("/dev/fdset/{fdset}"),
            "format": format.driver(),
            "read-only-mode": if read_only { "read-only" } else { "read-write" },
        });
        let change = self.client().execute("blockdev-change-medium", arguments);
        if let Err(error) = self.call(&deadline, "blockdev-change-medium", change).await {
            let undo = Deadline::after(self.rollback_budget());
            let mut rollback = crate::RollbackFailures::default();
            if let Err(undo_error) =
                self.call(&undo, "remove-fd", self.client().remove_fd(fdset, None)).await
            {
                rollback.0.push((format!("remove-fd fdset {fdset}"), undo_error.to_string()));
            }
            return Err(Error::Step {
                step: format!("blockdev-change-medium {id}"),
                source: Box::new(error),
                rollback,
            });
        }
        debug!(id, fdset, "medium changed");
        self.remove_fdsets(&before, &deadline).await
    }

    /// Opens CD drive `id`'s tray and removes its medium (`eject`); `force` ejects even when
    /// the guest has locked the tray. The fdsets of media this crate passed are removed.
    ///
    /// QEMU 7.2 answers an `eject` of a locked tray without `force` with an error and asks
    /// the guest to open it; the guest may do so later (`DEVICE_TRAY_MOVED`), so try again
    /// or use `force`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::WrongKind`] before anything is sent; QEMU's refusal
    /// (for a locked tray without `force`, QEMU's own text: the device "is locked and force
    /// was not specified").
    pub async fn eject(&self, id: &str, force: bool) -> Result<(), Error> {
        let deadline = Deadline::after(self.operation_timeout);
        let _serial = self.serialise(&deadline).await?;
        self.check_cd(id, &deadline).await?;
        let before = self.cd_fdsets(id, &deadline).await?;
        let eject = self.client().execute("eject", json!({"id": id, "force": force}));
        self.call(&deadline, "eject", eject).await?;
        self.remove_fdsets(&before, &deadline).await
    }

    /// Checks that QEMU has device `id` and that it is a CD drive.
    async fn check_cd(&self, id: &str, deadline: &Deadline) -> Result<(), Error> {
        let list = self.client().execute("qom-list", json!({"path": "/machine/peripheral"}));
        let devices = self.call(deadline, "qom-list", list).await?;
        let child = devices
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"] == id)
            .and_then(|entry| entry["type"].as_str().map(str::to_owned));
        let Some(child) = child else { return Err(Error::NotFound { id: id.into() }) };
        let driver =
            child.strip_prefix("child<").and_then(|t| t.strip_suffix('>')).unwrap_or(&child);
        if CD_DRIVERS.contains(&driver) {
            Ok(())
        } else {
            Err(Error::WrongKind {
                id: id.into(),
                expected: crate::DeviceKind::Disk,
                found: format!("a {driver} device, not a CD drive ({})", CD_DRIVERS.join(", ")),
            })
        }
    }

    /// The fdsets of media this crate passed to CD drive `id`.
    async fn cd_fdsets(&self, id: &str, deadline: &Deadline) -> Result<Vec<u64>, Error> {
        let opaque = format!("{CD_OPAQUE_PREFIX}{id}");
        let sets = self.call(deadline, "query-fdsets", self.client().query_fdsets()).await?;
        Ok(sets
            .into_iter()
            .filter(|set| set.fds.iter().any(|fd| fd.opaque.as_deref() == Some(opaque.as_str())))
            .map(|set| set.fdset_id)
            .collect())
    }

    /// `remove-fd` of each set (QEMU closes the descriptor once no node uses it).
    async fn remove_fdsets(&self, sets: &[u64], deadline: &Deadline) -> Result<(), Error> {
        for &set in sets {
            self.call(deadline, "remove-fd", self.client().remove_fd(set, None)).await?;
        }
        Ok(())
    }
}

/// Parses a size such as `64M`, `1G`, `512` or `10240K`: a whole number of bytes with an
/// optional binary suffix `K`, `M`, `G` or `T` (powers of 1024), as `qemu-img` writes
/// them.
///
/// ```
/// use qmp_hotplug::parse_size;
/// assert_eq!(parse_size("64M"), Ok(64 << 20));
/// assert_eq!(parse_size("1G"), Ok(1 << 30));
/// assert!(parse_size("1.5G").is_err());
/// ```
///
/// # Errors
/// Why the text is not a size.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((at, suffix)) if suffix.is_ascii_alphabetic() => {
            let shift = match suffix.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("'{text}': the unit is K, M, G or T")),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("'{text}' is not a size such as 64M or 1G"));
    }
    let number: u64 = digits.parse().map_err(|_| format!("'{text}' is too large"))?;
    number.checked_mul(1 << shift).ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_nothing_else() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10240K"), Ok(10 << 20));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        for bad in ["", "M", "-1M", "1.5G", "1 G", "1P", "64MB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("17000000T").unwrap_err().contains("too large"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,12}") {
            let _ = parse_size(&text);
        }
    }
}
