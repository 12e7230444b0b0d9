//! Text QEMU (or a hostile server) controls, through the hotplug crate's pure parsers:
//! HMP `info network`, fdset opaques and object ids as intent markers. No panic; what
//! parses as ours prints back exactly as it was read. (HMP's error check moved to
//! qmp-client's `hmp` module.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{DiskFdset, IntentMarker, NetworkInfo, disk_opaque_with};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let info = NetworkInfo::parse(text);
    for netdev in info.netdevs.values() {
        assert!(!netdev.queues.is_empty());
    }
    for line in text.lines() {
        if let Some(set) = DiskFdset::parse(line) {
            let written = set.image.as_ref().map_or_else(
                || set.device.to_string(),
                |image| disk_opaque_with(&set.device, image, set.unseen),
            );
            assert_eq!(written, line);
        }
        if let Some(marker) = IntentMarker::parse(line) {
            assert_eq!(marker.object_id(), line);
        }
    }
});
