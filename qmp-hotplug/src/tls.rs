//! NBD over TLS: the `tls-creds-x509` object a TLS disk's `nbd` node names in `tls-creds`.
//!
//! The object is made for one disk and named after it (`qmp-rs-tls.<disk id>`), so its id
//! parses back to the disk and two disks never share one. An add creates it right before
//! `blockdev-add` (its undo deletes it); a removal deletes it after the node. QEMU shows
//! the object's `dir` and `endpoint` (`qom-get`), so an adopted disk is compared on those;
//! it does not show a node's `tls-hostname`, which is therefore not compared.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::Error;
use crate::adopt::Difference;
use crate::ids::{DeviceId, DeviceKind};
use crate::plan::{PlannedStep, Step};
use crate::snapshot::Snapshot;

/// The prefix of every TLS credentials object id this crate makes.
const TLS_OBJECT_PREFIX: &str = "qmp-rs-tls.";

/// The QOM type of the credentials: X.509 certificates from a directory.
pub(crate) const TLS_QOM_TYPE: &str = "tls-creds-x509";

/// The endpoint QEMU's NBD client needs (`qemu-nbd --tls-creds` takes a `server` one).
pub(crate) const CLIENT_ENDPOINT: &str = "client";

/// TLS for an NBD export: QEMU's `tls-creds-x509` reads the directory as its `dir`, which
/// must hold `ca-cert.pem` (the CA that signed the server's certificate) and may hold
/// `client-cert.pem` and `client-key.pem` (for a server that checks clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdTls {
    /// The certificate directory, absolute (QEMU would resolve a relative one against its
    /// own working directory).
    pub dir: PathBuf,
    /// The name the server's certificate must carry, when not the host of the URI
    /// (`tls-hostname`; a unix socket has no host, so it is needed there).
    pub hostname: Option<String>,
}

impl NbdTls {
    /// TLS with the certificates in `dir`, the server checked against the URI's host.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), hostname: None }
    }

    /// Checks what QEMU need not be asked about: an absolute UTF-8 directory (QMP strings
    /// are UTF-8) without NUL, and a host name of letters, digits, `-`, `.` and `:`.
    ///
    /// ```
    /// use qmp_hotplug::NbdTls;
    /// assert!(NbdTls::new("/etc/pki/qemu").check().is_ok());
    /// assert!(NbdTls::new("pki").check().is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] saying what is wrong.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |why: String| Err(Error::InvalidSpec(why));
        let Some(dir) = self.dir.to_str() else {
            return invalid(format!("the TLS directory {} is not UTF-8", self.dir.display()));
        };
        if !self.dir.is_absolute() {
            return invalid(format!(
                "the TLS directory {dir} is relative; QEMU would read it from its own \
                 working directory"
            ));
        }
        if dir.contains('\0') {
            return invalid("the TLS directory contains a NUL byte".into());
        }
        if let Some(host) = &self.hostname {
            let host_like =
                |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_');
            if host.is_empty() || !host.chars().all(host_like) {
                return invalid(format!("tls-hostname {host:?} is not a host name or address"));
            }
        }
        Ok(())
    }
}

/// The id of the TLS credentials object of disk `disk`.
///
/// ```
/// use qmp_hotplug::{DeviceId, DeviceKind, tls_object_disk, tls_object_id};
/// let disk = DeviceId::new(DeviceKind::Disk, "d1", 4)?;
/// assert_eq!(tls_object_id(&disk), "qmp-rs-tls.disk-d1-pci-4");
/// assert_eq!(tls_object_disk("qmp-rs-tls.disk-d1-pci-4"), Some(disk));
/// assert_eq!(tls_object_disk("tls0"), None);
/// # Ok::<(), qmp_hotplug::Error>(())
/// ```
pub fn tls_object_id(disk: &DeviceId) -> String {
    format!("{TLS_OBJECT_PREFIX}{disk}")
}

/// The disk a TLS credentials object id of ours was made for; `None` for any other id.
pub fn tls_object_disk(object_id: &str) -> Option<DeviceId> {
    let disk = object_id.strip_prefix(TLS_OBJECT_PREFIX)?.parse::<DeviceId>().ok()?;
    (disk.kind() == DeviceKind::Disk).then_some(disk)
}

/// The step that creates disk `disk`'s credentials, undone by deleting them.
pub(crate) fn object_add_step(disk: &DeviceId, tls: &NbdTls) -> PlannedStep {
    let id = tls_object_id(disk);
    let mut arguments = Map::new();
    arguments.insert("qom-type".into(), TLS_QOM_TYPE.into());
    arguments.insert("id".into(), id.clone().into());
    arguments.insert("dir".into(), tls.dir.to_string_lossy().into_owned().into());
    arguments.insert("endpoint".into(), CLIENT_ENDPOINT.into());
    arguments.insert("verify-peer".into(), true.into());
    PlannedStep::new(Step::ObjectAdd { id: id.clone(), arguments }, Some(Step::ObjectDel { id }))
}

/// Adds `tls-creds` (and `tls-hostname`) to an `nbd` node's options.
pub(crate) fn nbd_options(file: &mut Value, disk: &DeviceId, tls: &NbdTls) {
    file["tls-creds"] = tls_object_id(disk).into();
    if let Some(host) = &tls.hostname {
        file["tls-hostname"] = host.clone().into();
    }
}

/// The step that deletes disk `disk`'s credentials, if QEMU has them.
pub(crate) fn removal_step(disk: &DeviceId, snapshot: &Snapshot) -> Option<PlannedStep> {
    let id = tls_object_id(disk);
    snapshot.objects.contains(&id).then(|| PlannedStep::new(Step::ObjectDel { id }, None))
}

/// What QEMU shows of a credentials object: its `dir` and `endpoint` (`qom-get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsObject {
    pub(crate) dir: String,
    pub(crate) endpoint: String,
}

impl TlsObject {
    /// The `qom-get` properties read.
    pub(crate) const PROPERTIES: [&'static str; 2] = ["dir", "endpoint"];

    /// From the `qom-get` replies of [`Self::PROPERTIES`], in order.
    pub(crate) fn from_replies(dir: &Value, endpoint: &Value) -> Self {
        let text = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        Self { dir: text(dir), endpoint: text(endpoint) }
    }
}

/// How disk `disk`'s credentials in QEMU (`found`, `None` when it has none) differ from
/// what `wanted` would create.
pub(crate) fn differences(
    wanted: Option<&NbdTls>,
    disk: &DeviceId,
    found: Option<&TlsObject>,
) -> Vec<Difference> {
    let id = tls_object_id(disk);
    match (wanted, found) {
        (None, None) => Vec::new(),
        (Some(_), None) => vec![Difference::new("tls", format!("object {id}"), "none")],
        (None, Some(_)) => vec![Difference::new("tls", "none", format!("object {id}"))],
        (Some(tls), Some(object)) => {
            let mut differences = Vec::new();
            let dir = tls.dir.to_string_lossy();
            if object.dir != dir {
                differences.push(Difference::new("tls dir", dir, &object.dir));
            }
            if object.endpoint != CLIENT_ENDPOINT {
                differences.push(Difference::new(
                    "tls endpoint",
                    CLIENT_ENDPOINT,
                    &object.endpoint,
                ));
            }
            differences
        }
    }
}

/// The arguments of a `qom-get` of property `property` of object `object_id`.
pub(crate) fn qom_get_arguments(object_id: &str, property: &str) -> Value {
    json!({"path": format!("/objects/{object_id}"), "property": property})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> DeviceId {
        DeviceId::new(DeviceKind::Disk, "d1", 4).unwrap()
    }

    #[test]
    fn object_ids_parse_back_only_for_disks_of_ours() {
        assert_eq!(tls_object_disk(&tls_object_id(&disk())), Some(disk()));
        let nic = DeviceId::new(DeviceKind::Nic, "n1", 4).unwrap();
        assert_eq!(tls_object_disk(&tls_object_id(&nic)), None);
        for other in ["qmp-rs-tls.", "qmp-rs-tls.disk-d1-pci-04", "tls0", "qmp-rs-tls.x"] {
            assert_eq!(tls_object_disk(other), None, "{other}");
        }
    }

    #[test]
    fn the_object_is_a_verifying_client_undone_by_deleting_it() {
        let step = object_add_step(&disk(), &NbdTls::new("/pki"));
        assert_eq!(
            step.step.arguments(),
            json!({"qom-type": "tls-creds-x509", "id": "qmp-rs-tls.disk-d1-pci-4",
                   "dir": "/pki", "endpoint": "client", "verify-peer": true})
        );
        assert_eq!(step.undo.unwrap().to_string(), "object-del qmp-rs-tls.disk-d1-pci-4");
        let mut file = json!({"driver": "nbd"});
        let tls = NbdTls { hostname: Some("nbd.example".into()), ..NbdTls::new("/pki") };
        nbd_options(&mut file, &disk(), &tls);
        assert_eq!(
            file,
            json!({"driver": "nbd", "tls-creds": "qmp-rs-tls.disk-d1-pci-4",
                   "tls-hostname": "nbd.example"})
        );
    }

    #[test]
    fn bad_directories_and_host_names_are_refused() {
        for (tls, why) in [
            (NbdTls::new("certs"), "relative"),
            (NbdTls::new("/a\0b"), "NUL"),
            (NbdTls { hostname: Some(String::new()), ..NbdTls::new("/p") }, "not a host"),
            (NbdTls { hostname: Some("a b".into()), ..NbdTls::new("/p") }, "not a host"),
        ] {
            let message = tls.check().unwrap_err().to_string();
            assert!(message.contains(why), "{tls:?}: {message}");
        }
        let good = NbdTls { hostname: Some("127.0.0.1".into()), ..NbdTls::new("/p") };
        assert!(good.check().is_ok());
    }

    #[test]
    fn adoption_compares_presence_dir_and_endpoint() {
        let tls = NbdTls::new("/pki");
        let object =
            |dir: &str, endpoint: &str| TlsObject { dir: dir.into(), endpoint: endpoint.into() };
        let fields = |wanted, found: Option<TlsObject>| -> Vec<&'static str> {
            differences(wanted, &disk(), found.as_ref()).iter().map(|d| d.field).collect()
        };
        assert!(fields(Some(&tls), Some(object("/pki", "client"))).is_empty());
        assert!(fields(None, None).is_empty());
        assert_eq!(fields(Some(&tls), None), ["tls"]);
        assert_eq!(fields(None, Some(object("/pki", "client"))), ["tls"]);
        assert_eq!(
            fields(Some(&tls), Some(object("/other", "server"))),
            ["tls dir", "tls endpoint"]
        );
    }
}
