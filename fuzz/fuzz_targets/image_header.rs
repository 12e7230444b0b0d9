//! Arbitrary first bytes of a disk image (a guest can write any) through the format
//! sniffer: no panic, only the first `HEADER_LEN` bytes count, and a verdict on a prefix
//! holds for every longer input that starts with it.
#![no_main]

use hostdev::format::{HEADER_LEN, ImageFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verdict = ImageFormat::sniff(data);
    assert_eq!(verdict, ImageFormat::sniff(&data[..data.len().min(HEADER_LEN)]));
    if let Some(format) = verdict {
        assert!(!format.driver().is_empty());
    }
    for cut in 0..data.len().min(HEADER_LEN) {
        if let Some(format) = ImageFormat::sniff(&data[..cut]) {
            assert_eq!(verdict, Some(format), "the first {cut} bytes said {format:?}");
        }
    }
});
