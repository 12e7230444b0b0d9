//! Arbitrary text through `NbdExport::parse_uri`, the parser of the NBD URIs a caller
//! hands to `qmp hotplug disk add --uri`: no panic, and whatever parses is written back by
//! `Display` as a URI that parses to an equal export.
//!
//! Checked: a host is a non-empty DNS name or address (no `/`, no brackets), a socket path
//! and an export are not empty and hold no NUL (QEMU's C strings would end there), and the
//! written URI reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{NbdExport, NbdServer};

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = NbdExport::parse_uri(uri) else { return };
    if let Some(name) = &parsed.export {
        assert!(!name.is_empty() && !name.contains('\0'), "export {name:?} of {uri:?}");
    }
    match &parsed.server {
        NbdServer::Tcp { host, port } => {
            assert!(!host.is_empty() && *port != 0, "host {host:?}:{port} of {uri:?}");
            assert!(!host.contains(['/', '[', ']', '\0']), "host {host:?} of {uri:?}");
        }
        NbdServer::Unix(path) => {
            let path = path.as_os_str().as_encoded_bytes();
            assert!(!path.is_empty() && !path.contains(&0), "socket {path:?} of {uri:?}");
        }
        other => panic!("a server kind this target does not know: {other:?}"),
    }
    let again = parsed.to_string();
    match NbdExport::parse_uri(&again) {
        Ok(reparsed) => assert_eq!(reparsed, parsed, "{uri:?} written as {again:?}"),
        Err(error) => panic!("{uri:?} parsed, its written form {again:?} did not: {error}"),
    }
});
