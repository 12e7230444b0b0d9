//! How QEMU's own state proves what is ours: the texts this crate writes into QEMU
//! objects and reads back. Pure formatting and parsing, no I/O.
//!
//! - A disk's image descriptor stays in its fdset for the disk's life, with an `opaque`
//!   that names the device and fingerprints the image ([`disk_opaque`]):
//!   `qmp-rs:disk-d1-pci-2:file=8.1:131074` (a regular file: its file system's device and
//!   its inode) or `qmp-rs:disk-d1-pci-2:blk=7.0` (a block device's number). `query-fdsets`
//!   then shows which image a node holds. Settings QEMU 7.2 shows nowhere (`aio`,
//!   `discard`) follow when they are not QEMU's defaults ([`disk_opaque_with`]:
//!   `...:file=8.1:131074;aio=native;discard=unmap`), so a retry can compare them too.
//! - A NIC add first creates an intent marker ([`IntentMarker`]), a QOM object whose id
//!   names the device and how many descriptors it passes with `getfd`
//!   (`qmp-rs-intent.nic-n1-pci-3.t2.v0`), and deletes it last. QEMU has no way to list
//!   named descriptors, so after an interruption the marker is what finds them. It is an
//!   object (a `secret`), not an fdset: QEMU closes an unused fdset when the last monitor
//!   client disconnects while the VM runs (measured on 7.2.22), which would lose the
//!   marker exactly when a manager crashes; objects stay until deleted.

use hostdev::DeviceNumber;
use hostdev::image::ImageIdentity;

use crate::disk_settings::{Aio, Discard, DiskSettings};
use crate::ids::{DeviceId, DeviceKind};
use crate::spec::MAX_NIC_QUEUES;

/// The prefix of every disk fdset `opaque` this crate writes.
const DISK_OPAQUE_PREFIX: &str = "qmp-rs:";

/// The prefix of every intent marker's object id.
const MARKER_PREFIX: &str = "qmp-rs-intent.";

/// The QOM type of intent markers: a `secret` holds a few bytes and does nothing else.
pub(crate) const MARKER_QOM_TYPE: &str = "secret";

/// The `opaque` of the fdset that holds disk `id`'s image.
///
/// ```
/// use hostdev::DeviceNumber;
/// use hostdev::image::ImageIdentity;
/// use qmp_hotplug::{DeviceId, DeviceKind, DiskFdset, disk_opaque};
/// let id = DeviceId::new(DeviceKind::Disk, "d1", 2)?;
/// let image = ImageIdentity::BlockDevice(DeviceNumber::new(7, 0));
/// let opaque = disk_opaque(&id, &image);
/// assert_eq!(opaque, "qmp-rs:disk-d1-pci-2:blk=7.0");
/// let unseen = Default::default();
/// assert_eq!(DiskFdset::parse(&opaque), Some(DiskFdset { device: id, image: Some(image), unseen }));
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
pub fn disk_opaque(id: &DeviceId, image: &ImageIdentity) -> String {
    disk_opaque_with(id, image, Unseen::default())
}

/// The disk settings QEMU 7.2 shows nowhere (not in `query-named-block-nodes`, not in
/// QOM), kept in the fdset's opaque instead. `None` is QEMU's default (`threads`,
/// `ignore`): a spec that names the default records the same as one that leaves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unseen {
    /// `aio`, unless `threads`.
    pub aio: Option<Aio>,
    /// `discard`, unless `ignore`.
    pub discard: Option<Discard>,
}

impl Unseen {
    /// What `settings` asks for, defaults folded to `None`.
    pub fn of(settings: &DiskSettings) -> Self {
        Self {
            aio: settings.aio.filter(|aio| *aio != Aio::Threads),
            discard: settings.discard.filter(|discard| *discard != Discard::Ignore),
        }
    }

    fn text(self) -> String {
        let mut text = String::new();
        if let Some(aio) = self.aio {
            text.push_str(";aio=");
            text.push_str(aio.as_str());
        }
        if let Some(discard) = self.discard {
            text.push_str(";discard=");
            text.push_str(discard.as_str());
        }
        text
    }

    fn parse(text: &str) -> Option<Self> {
        let mut unseen = Self::default();
        for part in text.split(';').filter(|part| !part.is_empty()) {
            match part.split_once('=')? {
                ("aio", value) => {
                    unseen.aio =
                        [Aio::Native, Aio::IoUring].into_iter().find(|a| a.as_str() == value);
                    unseen.aio?;
                }
                ("discard", "unmap") => unseen.discard = Some(Discard::Unmap),
                _ => return None,
            }
        }
        Some(unseen)
    }
}

/// [`disk_opaque`] with the settings QEMU does not show appended.
///
/// ```
/// use hostdev::DeviceNumber;
/// use hostdev::image::ImageIdentity;
/// use qmp_hotplug::{Aio, DeviceId, DeviceKind, DiskFdset, Unseen, disk_opaque_with};
/// let id = DeviceId::new(DeviceKind::Disk, "d1", 2)?;
/// let image = ImageIdentity::BlockDevice(DeviceNumber::new(7, 0));
/// let unseen = Unseen { aio: Some(Aio::Native), discard: None };
/// let opaque = disk_opaque_with(&id, &image, unseen);
/// assert_eq!(opaque, "qmp-rs:disk-d1-pci-2:blk=7.0;aio=native");
/// assert_eq!(DiskFdset::parse(&opaque).map(|set| set.unseen), Some(unseen));
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
pub fn disk_opaque_with(id: &DeviceId, image: &ImageIdentity, unseen: Unseen) -> String {
    format!("{DISK_OPAQUE_PREFIX}{id}:{}{}", identity_text(image), unseen.text())
}

fn identity_text(image: &ImageIdentity) -> String {
    let number = |device: &DeviceNumber| format!("{}.{}", device.major(), device.minor());
    match image {
        ImageIdentity::BlockDevice(device) => format!("blk={}", number(device)),
        ImageIdentity::File { device, inode } => format!("file={}:{inode}", number(device)),
        // A new kind of identity hostdev may add: a text no parser here accepts, so an
        // image of that kind is never proven (and never adopted).
        other => format!("unknown={other:?}"),
    }
}

fn parse_identity(text: &str) -> Option<ImageIdentity> {
    let number = |text: &str| {
        let (major, minor) = text.split_once('.')?;
        Some(DeviceNumber::new(major.parse().ok()?, minor.parse().ok()?))
    };
    if let Some(device) = text.strip_prefix("blk=") {
        return Some(ImageIdentity::BlockDevice(number(device)?));
    }
    let (device, inode) = text.strip_prefix("file=")?.split_once(':')?;
    Some(ImageIdentity::File { device: number(device)?, inode: inode.parse().ok()? })
}

/// A disk fdset of ours, as its `opaque` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFdset {
    /// The disk it was made for.
    pub device: DeviceId,
    /// The image's fingerprint; `None` for an fdset whose opaque is the bare device id (as
    /// qmp-hotplug wrote before fingerprints): ours, but it proves no image.
    pub image: Option<ImageIdentity>,
    /// The settings recorded after the fingerprint (all defaults when none are).
    pub unseen: Unseen,
}

impl DiskFdset {
    /// The fdset an `opaque` describes, if it is one of ours (a disk id, with or without
    /// the fingerprint); `None` for anything else.
    pub fn parse(opaque: &str) -> Option<Self> {
        let Some(rest) = opaque.strip_prefix(DISK_OPAQUE_PREFIX) else {
            let device = opaque.parse::<DeviceId>().ok()?;
            return (device.kind() == DeviceKind::Disk).then_some(Self {
                device,
                image: None,
                unseen: Unseen::default(),
            });
        };
        let (id, identity) = rest.split_once(':')?;
        let device = id.parse::<DeviceId>().ok().filter(|id| id.kind() == DeviceKind::Disk)?;
        let (identity, unseen) = identity.split_once(';').map_or((identity, ""), |(i, u)| (i, u));
        let image = parse_identity(identity)?;
        let unseen = Unseen::parse(unseen)?;
        // Only the exact text this crate writes counts.
        (disk_opaque_with(&device, &image, unseen) == opaque).then_some(Self {
            device,
            image: Some(image),
            unseen,
        })
    }
}

/// The intent marker of a NIC add: which device, and how many tap and vhost descriptors
/// the add passes with `getfd` (so which names a crash can leave in QEMU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentMarker {
    /// The NIC being added.
    pub device: DeviceId,
    /// Tap descriptors passed (`<id>-tap0`, ...).
    pub taps: usize,
    /// vhost descriptors passed (`<id>-vhost0`, ...).
    pub vhosts: usize,
}

impl IntentMarker {
    /// The marker's QOM object id (letters, digits, `-`, `.` and `_`, as QEMU requires).
    ///
    /// ```
    /// use qmp_hotplug::{DeviceId, DeviceKind, IntentMarker};
    /// let marker =
    ///     IntentMarker { device: DeviceId::new(DeviceKind::Nic, "n1", 3)?, taps: 2, vhosts: 0 };
    /// assert_eq!(marker.object_id(), "qmp-rs-intent.nic-n1-pci-3.t2.v0");
    /// assert_eq!(IntentMarker::parse(&marker.object_id()), Some(marker));
    /// # Ok::<(), qmp_hotplug::Error>(())
    /// ```
    pub fn object_id(&self) -> String {
        format!("{MARKER_PREFIX}{}.t{}.v{}", self.device, self.taps, self.vhosts)
    }

    /// The marker an object id describes, if it is one: never one claiming more than
    /// [`MAX_NIC_QUEUES`] taps or vhost descriptors, which no add of ours passes.
    pub fn parse(object_id: &str) -> Option<Self> {
        let rest = object_id.strip_prefix(MARKER_PREFIX)?;
        let mut parts = rest.rsplitn(3, '.');
        let vhosts = parts.next()?.strip_prefix('v')?.parse().ok()?;
        let taps = parts.next()?.strip_prefix('t')?.parse().ok()?;
        let device = parts.next()?.parse::<DeviceId>().ok()?;
        if taps > MAX_NIC_QUEUES || vhosts > MAX_NIC_QUEUES {
            return None;
        }
        let marker = Self { device, taps, vhosts };
        (marker.device.kind() == DeviceKind::Nic && marker.object_id() == object_id)
            .then_some(marker)
    }

    /// The `getfd` names the add passes, taps first.
    pub fn fd_names(&self) -> Vec<String> {
        (0..self.taps)
            .map(|queue| self.device.tap_fd_name(queue))
            .chain((0..self.vhosts).map(|queue| self.device.vhost_fd_name(queue)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn disk(slot: u8) -> DeviceId {
        DeviceId::new(DeviceKind::Disk, "d1", slot).unwrap()
    }

    #[test]
    fn disk_opaques_round_trip_and_legacy_ones_prove_nothing() {
        let file = ImageIdentity::File { device: DeviceNumber::new(8, 1), inode: 131_074 };
        let opaque = disk_opaque(&disk(2), &file);
        assert_eq!(opaque, "qmp-rs:disk-d1-pci-2:file=8.1:131074");
        assert_eq!(DiskFdset::parse(&opaque).unwrap().image, Some(file));
        let legacy = DiskFdset::parse("disk-d1-pci-2").unwrap();
        assert_eq!((legacy.device, legacy.image), (disk(2), None));
        for foreign in [
            "disk0.raw",
            "nic-a-pci-2",
            "qmp-rs:nic-a-pci-2:blk=7.0",
            "qmp-rs:disk-d1-pci-2",
            "qmp-rs:disk-d1-pci-2:blk=7",
            "qmp-rs:disk-d1-pci-2:blk=7.0:x",
            "qmp-rs:disk-d1-pci-2:file=8.1:",
            "qmp-rs:disk-d1-pci-2:blk=07.0",
        ] {
            assert_eq!(DiskFdset::parse(foreign), None, "{foreign}");
        }
    }

    /// An object id claiming more descriptors than a NIC add passes is not a marker of ours:
    /// `leftovers` would list that many names (`t18446744073709551615` panicked with a
    /// capacity overflow; found by the `hotplug_snapshot` fuzz target).
    #[test]
    fn a_marker_claiming_more_queues_than_an_add_passes_is_not_ours() {
        let most = format!("qmp-rs-intent.nic-n1-pci-3.t{MAX_NIC_QUEUES}.v{MAX_NIC_QUEUES}");
        let marker = IntentMarker::parse(&most).unwrap();
        assert_eq!(marker.fd_names().len(), 2 * MAX_NIC_QUEUES);
        let over = MAX_NIC_QUEUES + 1;
        for foreign in [
            format!("qmp-rs-intent.nic-n1-pci-3.t{over}.v0"),
            format!("qmp-rs-intent.nic-n1-pci-3.t1.v{over}"),
            format!("qmp-rs-intent.nic-n1-pci-3.t{}.v0", usize::MAX),
        ] {
            assert_eq!(IntentMarker::parse(&foreign), None, "{foreign}");
        }
    }

    #[test]
    fn markers_name_their_descriptors() {
        let nic = DeviceId::new(DeviceKind::Nic, "n1", 3).unwrap();
        let marker = IntentMarker { device: nic, taps: 2, vhosts: 2 };
        assert_eq!(
            marker.fd_names(),
            [
                "nic-n1-pci-3-tap0",
                "nic-n1-pci-3-tap1",
                "nic-n1-pci-3-vhost0",
                "nic-n1-pci-3-vhost1"
            ]
        );
        for foreign in [
            "qmp-rs-intent.disk-d1-pci-3.t1.v0",
            "qmp-rs-intent.nic-n1-pci-3.t1",
            "qmp-rs-intent.nic-n1-pci-3.t01.v0",
            "pc.ram",
            "qmp-rs-intent.nic-n1-pci-3.v0.t1",
        ] {
            assert_eq!(IntentMarker::parse(foreign), None, "{foreign}");
        }
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics_and_round_trips(text in "\\PC{0,60}") {
            if let Some(set) = DiskFdset::parse(&text) {
                let written = set.image.as_ref().map_or_else(
                    || set.device.to_string(),
                    |image| disk_opaque_with(&set.device, image, set.unseen),
                );
                prop_assert_eq!(written, text.clone());
            }
            if let Some(marker) = IntentMarker::parse(&text) {
                prop_assert_eq!(marker.object_id(), text);
            }
        }

        #[test]
        fn every_identity_and_unseen_setting_round_trips(
            major in 0u64..4096, minor in 0u64..1 << 20, inode: u64, block: bool,
            slot in 0u8..32, aio in 0usize..4, discard in 0usize..3,
        ) {
            let device = DeviceNumber::new(major, minor);
            let image = if block {
                ImageIdentity::BlockDevice(device)
            } else {
                ImageIdentity::File { device, inode }
            };
            let settings = DiskSettings {
                aio: [None, Some(Aio::Threads), Some(Aio::Native), Some(Aio::IoUring)][aio],
                discard: [None, Some(Discard::Ignore), Some(Discard::Unmap)][discard],
                ..DiskSettings::default()
            };
            let unseen = Unseen::of(&settings);
            let parsed = DiskFdset::parse(&disk_opaque_with(&disk(slot), &image, unseen)).unwrap();
            prop_assert_eq!(parsed, DiskFdset { device: disk(slot), image: Some(image), unseen });
            // A default named or left out records the same.
            prop_assert_eq!(unseen.aio.is_none(), aio < 2);
            prop_assert_eq!(unseen.discard.is_none(), discard < 2);
        }
    }
}
