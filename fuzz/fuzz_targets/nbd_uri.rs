//! Arbitrary text through `NbdExport::parse_uri`, the parser of the NBD URIs a caller
//! hands to `qmp hotplug disk add --nbd`: no panic, and whatever parses is made of the
//! input and parses back from its own URI.
//!
//! Checked: the host, export and socket path are substrings of the input, a host is not
//! empty and holds no `/`; rebuilt as `nbd://[HOST]:PORT/EXPORT` or
//! `nbd+unix:///EXPORT?socket=PATH`, the URI parses to an equal export.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{NbdExport, NbdServer};

/// The URI that names `export`, in the form the parser documents.
fn uri_of(export: &NbdExport) -> String {
    let name = export.export.as_deref().unwrap_or_default();
    match &export.server {
        NbdServer::Tcp { host, port } if host.contains(':') => {
            format!("nbd://[{host}]:{port}/{name}")
        }
        NbdServer::Tcp { host, port } => format!("nbd://{host}:{port}/{name}"),
        NbdServer::Unix(path) => {
            format!("nbd+unix:///{name}?socket={}", path.to_str().expect("parsed from a str"))
        }
        other => panic!("a server kind this target does not know: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = NbdExport::parse_uri(uri) else { return };
    if let Some(name) = &parsed.export {
        assert!(!name.is_empty() && uri.contains(name.as_str()), "export {name:?} of {uri:?}");
    }
    match &parsed.server {
        NbdServer::Tcp { host, .. } => {
            assert!(!host.is_empty() && !host.contains('/'), "host {host:?} of {uri:?}");
            assert!(uri.contains(host.as_str()), "host {host:?} is not in {uri:?}");
        }
        NbdServer::Unix(path) => {
            let path = path.to_str().expect("parsed from a str");
            assert!(!path.is_empty() && uri.contains(path), "socket {path:?} of {uri:?}");
        }
        other => panic!("a server kind this target does not know: {other:?}"),
    }
    // Known and reported: `nbd://HOST//NAME` names export `NAME` where QEMU reads `/NAME`,
    // so an export that starts with `/` cannot be written back as a TCP URI.
    let tcp = matches!(parsed.server, NbdServer::Tcp { .. });
    if tcp && parsed.export.as_deref().is_some_and(|name| name.starts_with('/')) {
        return;
    }
    let again = uri_of(&parsed);
    match NbdExport::parse_uri(&again) {
        Ok(reparsed) => assert_eq!(reparsed, parsed, "{uri:?} rebuilt as {again:?}"),
        Err(error) => panic!("{uri:?} parsed, its rebuilt form {again:?} did not: {error}"),
    }
});
