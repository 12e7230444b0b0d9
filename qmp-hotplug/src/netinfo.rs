//! HMP `info network`, parsed: QEMU 7.2 has no `query-netdev`, so this text is the only
//! place that lists netdevs, their queues with QEMU's descriptor numbers, and which NIC
//! uses each. A pure parser ([`NetworkInfo::parse`]) over text QEMU controls: unknown
//! lines are skipped, nothing panics.
//!
//! QEMU 7.2.22 prints one entry per net client, `NAME: key=value,...`; a NIC's peer (its
//! netdev) follows on a line starting with ` \ `, and a netdev no NIC uses stands alone.
//! A multiqueue netdev has one entry per queue (`index=`), each with its own `fd=`:
//!
//! ```text
//! nic-m-pci-3: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56
//!  \ nic-m-pci-3: index=0,type=tap,fd=12
//! nic-m-pci-3: index=1,type=nic,
//!  \ nic-m-pci-3: index=1,type=tap,fd=13
//! nic-o-pci-4: index=0,type=tap,fd=14
//! ```

use std::collections::BTreeMap;

/// What `info network` says: the netdevs (by id) and the NICs (by qdev id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Netdevs: `netdev_add`'s objects, by id.
    pub netdevs: BTreeMap<String, Netdev>,
    /// NIC devices, by qdev id, with their MAC address as `info network` shows it.
    pub nics: BTreeMap<String, Option<String>>,
}

/// One netdev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netdev {
    /// Its type (`tap`, `user`, ...).
    pub kind: String,
    /// Its queues in `index` order: one for most netdevs, one per queue for multiqueue tap.
    pub queues: Vec<NetdevQueue>,
    /// The NIC using it, if any.
    pub nic: Option<String>,
}

/// One queue of a netdev.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetdevQueue {
    /// Its `index=`.
    pub index: u32,
    /// The descriptor number inside QEMU (`fd=`), for a tap opened from a passed descriptor.
    pub fd: Option<i32>,
}

/// One `NAME: key=value,...` entry.
struct Entry<'a> {
    name: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (name, rest) = line.split_once(": ")?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        let fields = rest.split(',').filter_map(|field| field.split_once('=')).collect();
        Some(Self { name, fields })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn is_nic(&self) -> bool {
        self.get("type") == Some("nic")
    }
}

impl NetworkInfo {
    /// Parses the text of HMP `info network`.
    ///
    /// ```
    /// use qmp_hotplug::NetworkInfo;
    /// let text = "nic-a-pci-2: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:ab:cd:01\r\n \
    ///             \\ nic-a-pci-2: index=0,type=tap,fd=11\r\nnic-o-pci-4: index=0,type=tap,fd=14\r\n";
    /// let info = NetworkInfo::parse(text);
    /// let used = &info.netdevs["nic-a-pci-2"];
    /// assert_eq!((used.nic.as_deref(), used.queues[0].fd), (Some("nic-a-pci-2"), Some(11)));
    /// assert_eq!(info.netdevs["nic-o-pci-4"].nic, None, "no NIC uses it");
    /// assert_eq!(info.nics["nic-a-pci-2"].as_deref(), Some("52:54:00:ab:cd:01"));
    /// ```
    pub fn parse(text: &str) -> Self {
        let mut info = Self::default();
        // The NIC entry the next ` \ ` line belongs to; reset by any other line.
        let mut current_nic: Option<String> = None;
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            if let Some(peer) = line.strip_prefix(" \\ ") {
                let Some(entry) = Entry::parse(peer) else { continue };
                if !entry.is_nic() {
                    info.add_queue(&entry, current_nic.clone());
                }
                continue;
            }
            current_nic = None;
            let Some(entry) = Entry::parse(line) else { continue };
            if entry.is_nic() {
                let mac = entry.get("macaddr").map(str::to_owned);
                let known = info.nics.entry(entry.name.to_owned()).or_default();
                if known.is_none() {
                    *known = mac;
                }
                current_nic = Some(entry.name.to_owned());
            } else {
                info.add_queue(&entry, None);
            }
        }
        for netdev in info.netdevs.values_mut() {
            netdev.queues.sort_by_key(|queue| queue.index);
        }
        info
    }

    fn add_queue(&mut self, entry: &Entry<'_>, nic: Option<String>) {
        let netdev = self.netdevs.entry(entry.name.to_owned()).or_default();
        if netdev.kind.is_empty() {
            entry.get("type").unwrap_or_default().clone_into(&mut netdev.kind);
        }
        if netdev.nic.is_none() {
            netdev.nic = nic;
        }
        netdev.queues.push(NetdevQueue {
            index: entry.get("index").and_then(|i| i.parse().ok()).unwrap_or_default(),
            fd: entry.get("fd").and_then(|fd| fd.parse().ok()),
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `info network` of QEMU 7.2.22 with a single-queue NIC, a two-queue NIC, a tap netdev
    /// without a NIC, a user netdev and a NIC without a netdev (captured, CRLF as sent).
    const CAPTURED: &str = "nic-a-pci-2: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:ab:cd:01\r\n \\ nic-a-pci-2: index=0,type=tap,fd=11\r\nnic-m-pci-3: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ nic-m-pci-3: index=0,type=tap,fd=12\r\nnic-m-pci-3: index=1,type=nic,\r\n \\ nic-m-pci-3: index=1,type=tap,fd=13\r\nnic-o-pci-4: index=0,type=tap,fd=14\r\nu1: index=0,type=user,net=10.0.2.0,restrict=off\r\nnic-e-pci-5: index=0,type=nic,model=e1000,macaddr=52:54:00:12:34:57\r\n";

    #[test]
    fn a_captured_listing_parses() {
        let info = NetworkInfo::parse(CAPTURED);
        let fds = |id: &str| info.netdevs[id].queues.iter().map(|q| q.fd).collect::<Vec<_>>();
        assert_eq!(fds("nic-a-pci-2"), [Some(11)]);
        assert_eq!(fds("nic-m-pci-3"), [Some(12), Some(13)]);
        assert_eq!(info.netdevs["nic-m-pci-3"].nic.as_deref(), Some("nic-m-pci-3"));
        assert_eq!(info.netdevs["nic-o-pci-4"].nic, None);
        assert_eq!(info.netdevs["u1"].kind, "user");
        assert_eq!(info.netdevs["u1"].queues[0].fd, None);
        assert_eq!(info.netdevs.len(), 4);
        assert_eq!(
            info.nics.keys().collect::<Vec<_>>(),
            ["nic-a-pci-2", "nic-e-pci-5", "nic-m-pci-3"]
        );
        assert_eq!(info.nics["nic-m-pci-3"].as_deref(), Some("52:54:00:12:34:56"));
        assert!(!info.netdevs.contains_key("nic-e-pci-5"), "a NIC is not a netdev");
    }

    #[test]
    fn a_peer_line_after_an_unknown_line_is_no_nics_peer() {
        let text = "hub 0\r\n \\ hub0port0: index=0,type=user,net=10.0.2.0\r\n";
        let info = NetworkInfo::parse(text);
        assert_eq!(info.netdevs["hub0port0"].nic, None);
        assert!(NetworkInfo::parse("").netdevs.is_empty());
    }

    proptest! {
        /// Whatever QEMU (or a hostile server) prints, parsing ends, and every queue it
        /// reports belongs to a netdev with a type line.
        #[test]
        fn any_text_parses_without_panicking(text in "(\\PC{0,30}(: |=|,| \\\\ |\r?\n)){0,12}") {
            let info = NetworkInfo::parse(&text);
            for netdev in info.netdevs.values() {
                prop_assert!(!netdev.queues.is_empty());
            }
        }
    }
}
