//! Device ids: `<kind>-<name>-pci-<slot>`, deterministic, parseable, within QEMU's rules.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::pci::PCI_SLOTS;

/// Longest `name` part of an id. QEMU keeps block node names in a 32-byte buffer (31
/// characters), and the longest name derived from an id is a disk's file node,
/// `disk-<name>-pci-31-file`.
pub const MAX_NAME_LEN: usize = 14;

/// What kind of device an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A network interface (netdev + NIC device).
    Nic,
    /// A disk (block node + block device).
    Disk,
}

impl DeviceKind {
    /// The id prefix: `nic` or `disk`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Nic => "nic",
            Self::Disk => "disk",
        }
    }
}

/// The id of a hot-plugged device, and every QEMU name derived from it.
///
/// The scheme is Ganeti's (`<kind>-<name>-pci-<slot>`): the caller's name, usually the
/// first group of its UUID, and the PCI slot, so the same device always gets the same id
/// and an id found in QEMU tells which of ours it is and where it sits.
///
/// ```
/// use qmp_hotplug::{DeviceId, DeviceKind};
/// let id = DeviceId::from_uuid(DeviceKind::Nic, "6f2a1c3e-0d4b-4d5e-9a8f-001122334455", 5)?;
/// assert_eq!(id.to_string(), "nic-6f2a1c3e-pci-5");
/// assert_eq!("nic-6f2a1c3e-pci-5".parse::<DeviceId>()?, id);
/// assert_eq!(id.tap_fd_name(1), "nic-6f2a1c3e-pci-5-tap1");
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    kind: DeviceKind,
    name: String,
    slot: u8,
}

impl DeviceId {
    /// The id of device `name` of `kind` in `slot`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] unless `name` is 1 to [`MAX_NAME_LEN`] ASCII letters, digits
    /// or `_`, or [`Error::InvalidSpec`] when `slot` is not below 32.
    pub fn new(kind: DeviceKind, name: &str, slot: u8) -> Result<Self, Error> {
        check_name(name)?;
        if slot >= PCI_SLOTS {
            return Err(Error::InvalidSpec(format!("PCI slot {slot} is not below {PCI_SLOTS}")));
        }
        Ok(Self { kind, name: name.to_owned(), slot })
    }

    /// The id Ganeti would give: the UUID's first group, lower-cased, as the name.
    ///
    /// # Errors
    /// As [`DeviceId::new`].
    pub fn from_uuid(kind: DeviceKind, uuid: &str, slot: u8) -> Result<Self, Error> {
        let first_group = uuid.split('-').next().unwrap_or_default().to_ascii_lowercase();
        Self::new(kind, &first_group, slot)
    }

    /// The kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The caller's name part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PCI slot on bus 0.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The `addr` property for `device_add`.
    pub fn pci_addr(&self) -> String {
        format!("0x{:x}", self.slot)
    }

    /// The netdev's id (netdevs have their own namespace, so it is the device id, as in Ganeti).
    pub fn netdev_id(&self) -> String {
        self.to_string()
    }

    /// The format node's name for `blockdev-add` (the node namespace is separate from
    /// qdev ids; block backends made by `-drive` are the only clash and use other names).
    pub fn node_name(&self) -> String {
        self.to_string()
    }

    /// The protocol (file, nbd) node under [`DeviceId::node_name`].
    pub fn file_node_name(&self) -> String {
        format!("{self}-file")
    }

    /// The `getfd` name of tap queue `queue`.
    pub fn tap_fd_name(&self, queue: usize) -> String {
        format!("{self}-tap{queue}")
    }

    /// The `getfd` name of vhost queue `queue`.
    pub fn vhost_fd_name(&self, queue: usize) -> String {
        format!("{self}-vhost{queue}")
    }

    /// The `opaque` text of the fdset holding a disk's image, so a retry can find it in
    /// `query-fdsets`.
    pub fn fdset_opaque(&self) -> String {
        self.to_string()
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("it is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return invalid(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return invalid(format!("{bad:?} is not an ASCII letter, digit or '_'"));
    }
    Ok(())
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-pci-{}", self.kind.prefix(), self.name, self.slot)
    }
}

impl FromStr for DeviceId {
    type Err = Error;

    /// Parses an id made by [`DeviceId`]'s `Display`, and nothing else: `nic-a-pci-05`
    /// (a leading zero) is not one of ours.
    fn from_str(id: &str) -> Result<Self, Error> {
        let not_ours = || Error::InvalidName {
            name: id.to_owned(),
            reason: "not an id of the form <nic|disk>-<name>-pci-<slot>".into(),
        };
        let (kind, rest) = [DeviceKind::Nic, DeviceKind::Disk]
            .into_iter()
            .find_map(|kind| {
                id.strip_prefix(kind.prefix())?.strip_prefix('-').map(|rest| (kind, rest))
            })
            .ok_or_else(not_ours)?;
        let (name, slot) = rest.rsplit_once("-pci-").ok_or_else(not_ours)?;
        let slot: u8 = slot.parse().map_err(|_| not_ours())?;
        let parsed = Self::new(kind, name, slot)?;
        if parsed.to_string() == id { Ok(parsed) } else { Err(not_ours()) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn derived_names_fit_qemu_limits() {
        let id = DeviceId::new(DeviceKind::Disk, &"x".repeat(MAX_NAME_LEN), 31).unwrap();
        assert_eq!(id.file_node_name().len(), 31, "QEMU's node-name limit is 31 characters");
        assert!(id.node_name().starts_with(|c: char| c.is_ascii_alphabetic()));
        assert_eq!(id.pci_addr(), "0x1f");
    }

    #[test]
    fn bad_names_and_slots_are_refused() {
        for name in ["", "has-dash", "has space", "ünï", &"x".repeat(MAX_NAME_LEN + 1)] {
            let error = DeviceId::new(DeviceKind::Nic, name, 3).unwrap_err();
            assert!(matches!(error, Error::InvalidName { .. }), "{name:?}: {error:?}");
        }
        assert!(matches!(DeviceId::new(DeviceKind::Nic, "a", 32), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn foreign_ids_do_not_parse() {
        for id in ["nic0", "nic-a-pci-", "nic-a-pci-x", "nic-a-pci-05", "hd-a-pci-1", "nic--pci-1"]
        {
            assert!(id.parse::<DeviceId>().is_err(), "{id} parsed");
        }
    }

    proptest! {
        #[test]
        fn ids_parse_back(name in "[A-Za-z0-9_]{1,14}", slot in 0u8..32, disk: bool) {
            let kind = if disk { DeviceKind::Disk } else { DeviceKind::Nic };
            let id = DeviceId::new(kind, &name, slot).unwrap();
            prop_assert_eq!(id.to_string().parse::<DeviceId>().unwrap(), id);
        }

        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,40}") {
            if let Ok(id) = text.parse::<DeviceId>() {
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }
}
