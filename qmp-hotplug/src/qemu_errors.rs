//! QEMU's error texts that hotplug must recognise, in one table, each with the QEMU
//! version it was seen on.
//!
//! Where QEMU gives an error its own class (`DeviceNotFound` for `device_del` and
//! `netdev_del` of a missing id), match the class instead. These are the cases where it
//! does not: QMP replies of class `GenericError` that only the description tells apart,
//! and HMP's error texts whose subject matters (which drive `drive_del` did not find);
//! whether HMP's text is an error at all, the client's checked
//! [`Client::hmp`](qmp_client::Client::hmp) says. Texts change between
//! QEMU versions, so each entry records where it was seen; a newer QEMU that words one
//! differently needs a new entry here, nowhere else.
//!
//! ```
//! use qmp_codec::ErrorClass;
//! use qmp_hotplug::qemu_errors::UNPLUG_IN_PROGRESS;
//! let desc = "Device nic1 is already in the process of unplug";
//! assert!(UNPLUG_IN_PROGRESS.matches(&ErrorClass::GenericError, desc));
//! assert_eq!(UNPLUG_IN_PROGRESS.subject(desc), Some("nic1"));
//! ```

use qmp_codec::ErrorClass;

/// One recognised QEMU error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownError {
    /// A short name for logs.
    pub name: &'static str,
    /// The command that gives it (for HMP, the HMP command).
    pub command: &'static str,
    /// Whether QEMU says it as a QMP error (class `GenericError`) or as HMP text.
    pub channel: Channel,
    /// The QEMU version the text was seen on.
    pub seen_on: &'static str,
    /// The exact text seen, with a sample subject.
    pub sample: &'static str,
    /// The text before the subject (an id, a name, a node name).
    before: &'static str,
    /// The text right after the subject; QEMU may add more after it.
    after: &'static str,
}

/// How QEMU reports an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Channel {
    /// A QMP error reply of class `GenericError`.
    GenericError,
    /// The text of a successful `human-monitor-command` reply.
    Hmp,
}

/// `netdev_add` of an id a netdev already has. (Older QEMUs add ` for netdev`.)
pub const DUPLICATE_NETDEV_ID: KnownError = KnownError {
    name: "duplicate-netdev-id",
    command: "netdev_add",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Duplicate ID 'n1'",
    before: "Duplicate ID '",
    after: "'",
};

/// `device_del` of a device whose unplug the guest has not finished (or, after an unplug
/// request in prelaunch, never will).
pub const UNPLUG_IN_PROGRESS: KnownError = KnownError {
    name: "unplug-in-progress",
    command: "device_del",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Device nic1 is already in the process of unplug",
    before: "Device ",
    after: " is already in the process of unplug",
};

/// `closefd` of a name QEMU does not hold (never passed, or consumed by `netdev_add`).
pub const FD_NAME_NOT_FOUND: KnownError = KnownError {
    name: "fd-name-not-found",
    command: "closefd",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "File descriptor named 'nope' not found",
    before: "File descriptor named '",
    after: "' not found",
};

/// `remove-fd` of an fdset QEMU does not have.
pub const FDSET_NOT_FOUND: KnownError = KnownError {
    name: "fdset-not-found",
    command: "remove-fd",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "File descriptor named 'fdset-id:42' not found",
    before: "File descriptor named 'fdset-id:",
    after: "' not found",
};

/// `blockdev-del` of a node QEMU does not have.
pub const NODE_NOT_FOUND: KnownError = KnownError {
    name: "node-not-found",
    command: "blockdev-del",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Failed to find node with node-name='nope'",
    before: "Failed to find node with node-name='",
    after: "'",
};

/// HMP `drive_del` of a drive QEMU does not have (or deleted with its device already).
pub const HMP_DEVICE_NOT_FOUND: KnownError = KnownError {
    name: "hmp-device-not-found",
    command: "drive_del",
    channel: Channel::Hmp,
    seen_on: "7.2.22",
    sample: "Device 'nope' not found",
    before: "Device '",
    after: "' not found",
};

/// `device_add` into a slot another device took (a race with another manager).
pub const SLOT_NOT_AVAILABLE: KnownError = KnownError {
    name: "slot-not-available",
    command: "device_add",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "PCI: slot 5 function 0 not available for virtio-net-pci, in use by virtio-net-pci,id=nic1",
    before: "PCI: slot ",
    after: " function 0 not available",
};

/// `device_add` of an id a device already has.
pub const DUPLICATE_DEVICE_ID: KnownError = KnownError {
    name: "duplicate-device-id",
    command: "device_add",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Duplicate device ID 'nic1'",
    before: "Duplicate device ID '",
    after: "'",
};

/// `blockdev-add` of a node name QEMU already has.
pub const DUPLICATE_NODE_NAME: KnownError = KnownError {
    name: "duplicate-node-name",
    command: "blockdev-add",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Duplicate nodes with node-name='disk0'",
    before: "Duplicate nodes with node-name='",
    after: "'",
};

/// `object-add` of an id an object already has.
pub const DUPLICATE_OBJECT_ID: KnownError = KnownError {
    name: "duplicate-object-id",
    command: "object-add",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "attempt to add duplicate property 'm1' to object (type 'container')",
    before: "attempt to add duplicate property '",
    after: "' to object",
};

/// `netdev_add` naming a descriptor QEMU does not hold (another manager's clean-up
/// closed it, or a `getfd` was lost).
pub const FD_NAME_NOT_HELD: KnownError = KnownError {
    name: "fd-name-not-held",
    command: "netdev_add",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "File descriptor named 'nofd' has not been found",
    before: "File descriptor named '",
    after: "' has not been found",
};

/// `object-del` of an object QEMU does not have.
pub const OBJECT_NOT_FOUND: KnownError = KnownError {
    name: "object-not-found",
    command: "object-del",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "object 'm1' not found",
    before: "object '",
    after: "' not found",
};

/// `qom-get` of a property the device does not have (a NIC's `drive`, a disk's `netdev`).
pub const PROPERTY_NOT_FOUND: KnownError = KnownError {
    name: "property-not-found",
    command: "qom-get",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Property 'e1000.drive' not found",
    before: "Property '",
    after: "' not found",
};

/// `blockdev-del` of a node a block backend still holds: right after a device left QOM
/// (`qom-get` says `DeviceNotFound`) and before QEMU finalized it and released its drive,
/// which a removal finishing an unplug requested earlier can run into.
pub const NODE_IN_USE: KnownError = KnownError {
    name: "node-in-use",
    command: "blockdev-del",
    channel: Channel::GenericError,
    seen_on: "7.2.22",
    sample: "Node disk-d237-pci-5 is in use",
    before: "Node ",
    after: " is in use",
};

/// Every entry.
pub const ALL: [KnownError; 14] = [
    DUPLICATE_NETDEV_ID,
    UNPLUG_IN_PROGRESS,
    FD_NAME_NOT_FOUND,
    FDSET_NOT_FOUND,
    NODE_NOT_FOUND,
    HMP_DEVICE_NOT_FOUND,
    SLOT_NOT_AVAILABLE,
    DUPLICATE_DEVICE_ID,
    DUPLICATE_NODE_NAME,
    DUPLICATE_OBJECT_ID,
    FD_NAME_NOT_HELD,
    OBJECT_NOT_FOUND,
    PROPERTY_NOT_FOUND,
    NODE_IN_USE,
];

/// The QMP errors that mean another manager took what this plan was about to use (a
/// slot, a device id, a node name, a netdev or object id, a descriptor name): worth a
/// fresh snapshot and a new plan.
pub const RACES: [KnownError; 6] = [
    SLOT_NOT_AVAILABLE,
    DUPLICATE_DEVICE_ID,
    DUPLICATE_NODE_NAME,
    DUPLICATE_NETDEV_ID,
    DUPLICATE_OBJECT_ID,
    FD_NAME_NOT_HELD,
];

impl KnownError {
    /// The subject of `text` (the id, name or node in it) if `text` is this error: it
    /// starts with the text before the subject, and the text after it follows.
    pub fn subject<'a>(&self, text: &'a str) -> Option<&'a str> {
        let rest = text.strip_prefix(self.before)?;
        // An empty `after`: the subject runs to the end.
        let end = if self.after.is_empty() { rest.len() } else { rest.find(self.after)? };
        Some(&rest[..end]).filter(|subject| !subject.is_empty())
    }

    /// The fixed texts around the subject: what a matching text starts with, and what
    /// follows its subject.
    pub fn around_subject(&self) -> (&'static str, &'static str) {
        (self.before, self.after)
    }

    /// Whether a QMP error of `class` with description `desc` is this one. Always `false`
    /// for an HMP entry.
    pub fn matches(&self, class: &ErrorClass, desc: &str) -> bool {
        self.channel == Channel::GenericError
            && *class == ErrorClass::GenericError
            && self.subject(desc).is_some()
    }

    /// [`KnownError::matches`] of QEMU's class and description as an error type's
    /// `qmp_error()` gives them; `false` for an error that did not come from QEMU.
    pub fn matches_reply(&self, qmp_error: Option<(&ErrorClass, &str)>) -> bool {
        qmp_error.is_some_and(|(class, desc)| self.matches(class, desc))
    }

    /// Whether HMP's `output` (trimmed) is this error about `subject`, exactly. Always
    /// `false` for a QMP entry.
    pub fn is_hmp_about(&self, output: &str, subject: &str) -> bool {
        self.channel == Channel::Hmp
            && output
                .trim()
                .strip_prefix(self.before)
                .and_then(|rest| rest.strip_suffix(self.after))
                == Some(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry recognises its own sample, as QEMU 7.2.22 wrote it, with the subject
    /// where QEMU puts it; and no other entry's sample.
    #[test]
    fn every_entry_recognises_exactly_its_own_sample() {
        for entry in ALL {
            let subject = entry.subject(entry.sample);
            assert!(subject.is_some(), "{}: {:?}", entry.name, entry.sample);
            assert_eq!(entry.seen_on, "7.2.22");
            for other in ALL.iter().filter(|other| other.name != entry.name) {
                // HMP's generic `Error: ` shape is about any text starting so; no sample
                // of another entry does.
                let text = other.sample;
                let confused = match entry.channel {
                    Channel::GenericError => entry.matches(&ErrorClass::GenericError, text),
                    Channel::Hmp => entry.is_hmp_about(text, other.subject(text).unwrap()),
                };
                // The two "not found" fd texts share a shape; the fdset one is narrower.
                let shared_shape =
                    entry.name == "fd-name-not-found" && other.name == "fdset-not-found";
                assert!(
                    !confused || shared_shape,
                    "{} matches {}'s {text:?}",
                    entry.name,
                    other.name
                );
            }
        }
    }

    #[test]
    fn races_are_recognised_by_their_words() {
        let race = |desc: &str| RACES.iter().any(|e| e.matches(&ErrorClass::GenericError, desc));
        assert!(race(
            "PCI: slot 2 function 0 not available for virtio-net-pci, in use by virtio-net-pci,id=nic-b-pci-2"
        ));
        assert!(race("Duplicate device ID 'nic-a-pci-2'"));
        assert!(race("File descriptor named 'nic-a-pci-2-tap0' has not been found"));
        assert!(!race("Property 'virtio-net-pci.mac' doesn't take value 'x'"));
        assert_eq!(SLOT_NOT_AVAILABLE.subject(SLOT_NOT_AVAILABLE.sample), Some("5"));
    }

    /// The HMP entries are for telling which error it is (`drive_del`'s subject); that it
    /// is an error at all is the client's checked `hmp` to say, and it does.
    #[test]
    fn hmp_entries_are_errors_to_the_client() {
        for entry in ALL.iter().filter(|entry| entry.channel == Channel::Hmp) {
            let output = format!("{}\r\n", entry.sample);
            assert!(qmp_client::hmp::error_shape(&output).is_some(), "{}", entry.name);
        }
    }

    #[test]
    fn duplicate_netdev_id() {
        let desc = "Duplicate ID 'n1'";
        assert!(DUPLICATE_NETDEV_ID.matches(&ErrorClass::GenericError, desc));
        assert_eq!(DUPLICATE_NETDEV_ID.subject(desc), Some("n1"));
        assert!(
            DUPLICATE_NETDEV_ID.matches(&ErrorClass::GenericError, "Duplicate ID 'n1' for netdev")
        );
        // device_add's own wording is another error, and so is another class.
        assert!(
            !DUPLICATE_NETDEV_ID.matches(&ErrorClass::GenericError, "Duplicate device ID 'nic1'")
        );
        assert!(!DUPLICATE_NETDEV_ID.matches(&ErrorClass::DeviceNotFound, desc));
    }

    #[test]
    fn unplug_in_progress() {
        let desc = "Device nic1 is already in the process of unplug";
        assert!(UNPLUG_IN_PROGRESS.matches(&ErrorClass::GenericError, desc));
        assert_eq!(UNPLUG_IN_PROGRESS.subject(desc), Some("nic1"));
        assert!(!UNPLUG_IN_PROGRESS.matches(&ErrorClass::GenericError, "Device 'nic1' not found"));
    }

    #[test]
    fn fd_name_not_found() {
        let desc = "File descriptor named 'nope' not found";
        assert!(FD_NAME_NOT_FOUND.matches(&ErrorClass::GenericError, desc));
        assert_eq!(FD_NAME_NOT_FOUND.subject(desc), Some("nope"));
        // netdev_add's "has not been found" for an unknown name is not a removal's answer.
        let netdev = "File descriptor named 'nofd' has not been found";
        assert!(!FD_NAME_NOT_FOUND.matches(&ErrorClass::GenericError, netdev));
    }

    #[test]
    fn fdset_not_found() {
        let desc = "File descriptor named 'fdset-id:42' not found";
        assert!(FDSET_NOT_FOUND.matches(&ErrorClass::GenericError, desc));
        assert_eq!(FDSET_NOT_FOUND.subject(desc), Some("42"));
        assert!(
            !FDSET_NOT_FOUND
                .matches(&ErrorClass::GenericError, "File descriptor named 'x' not found")
        );
    }

    #[test]
    fn node_not_found() {
        let desc = "Failed to find node with node-name='nope'";
        assert!(NODE_NOT_FOUND.matches(&ErrorClass::GenericError, desc));
        assert_eq!(NODE_NOT_FOUND.subject(desc), Some("nope"));
        assert!(!NODE_NOT_FOUND.matches(&ErrorClass::GenericError, "Node disk0 is in use"));
    }

    #[test]
    fn hmp_device_not_found() {
        // HMP ends its text with CRLF.
        let output = "Device 'nope' not found\r\n";
        assert!(HMP_DEVICE_NOT_FOUND.is_hmp_about(output, "nope"));
        assert!(!HMP_DEVICE_NOT_FOUND.is_hmp_about(output, "nop"), "exactly that drive");
        assert!(!HMP_DEVICE_NOT_FOUND.is_hmp_about("Node disk0 is in use\r\n", "disk0"));
        // An HMP entry is never a QMP error, and the reverse.
        assert!(!HMP_DEVICE_NOT_FOUND.matches(&ErrorClass::GenericError, output.trim()));
        assert!(!FD_NAME_NOT_FOUND.is_hmp_about("File descriptor named 'x' not found", "x"));
    }
}
