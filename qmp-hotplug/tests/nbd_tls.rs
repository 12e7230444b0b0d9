//! An NBD disk over TLS against a real QEMU 7.2 with the test guest: certificates made here
//! with openssl (a CA, a server certificate for 127.0.0.1 and localhost, a client
//! certificate), `qemu-nbd --tls-creds` on 127.0.0.1. The add creates the `tls-creds-x509`
//! object before the node; the guest sees the disk with the export's size (learned in the
//! TLS-protected handshake; the guest's kernel then reads the partition table through it;
//! HMP `qemu-io` prints to QEMU's stdout, not the monitor, so it proves nothing here); the same spec is adopted and one with another directory is a
//! conflict; credentials of an interrupted add are a leftover that `clean_leftovers`
//! removes; a wrong CA is refused and leaves no object; the removal deletes the object.
//! With `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails the test.

mod qemu_nbd;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qemu_launcher::guest_or_skip;
use qmp_client::Client;
use qmp_hotplug::{
    DiskSource, DiskSpec, Error, Hotplug, LeftoverPart, NbdExport, NbdTls, Outcome, RemoveOptions,
    tls_object_id,
};
use serde_json::{Value, json};

const STEP: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/install-deps installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA in `dir` (`ca-cert.pem`, `ca-key.pem`).
fn make_ca(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca-cert.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `<role>-cert.pem` and `<role>-key.pem` in `into`, signed by the CA in `ca`, with
/// `ca-cert.pem` beside them as QEMU's `dir` expects.
fn make_cert(ca: &Path, into: &Path, role: &str, usage: &str) {
    std::fs::create_dir_all(into).unwrap();
    let extensions = into.join(format!("{role}.ext"));
    let mut file = std::fs::File::create(&extensions).unwrap();
    writeln!(file, "basicConstraints=critical,CA:FALSE").unwrap();
    writeln!(file, "keyUsage=critical,digitalSignature,keyEncipherment").unwrap();
    writeln!(file, "extendedKeyUsage={usage}").unwrap();
    writeln!(file, "subjectAltName=IP:127.0.0.1,DNS:localhost").unwrap();
    drop(file);
    let key = into.join(format!("{role}-key.pem"));
    let request = into.join(format!("{role}.csr"));
    let cert = into.join(format!("{role}-cert.pem"));
    let text = |path: &Path| path.to_str().unwrap().to_owned();
    openssl(
        into,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &text(&key),
            "-out",
            &text(&request),
        ],
    );
    openssl(
        ca,
        &[
            "x509",
            "-req",
            "-in",
            &text(&request),
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &text(&cert),
            "-extfile",
            &text(&extensions),
        ],
    );
    std::fs::copy(ca.join("ca-cert.pem"), into.join("ca-cert.pem")).unwrap();
}

async fn objects(client: &Client) -> Vec<String> {
    let list = client.execute("qom-list", json!({"path": "/objects"})).await.unwrap();
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|object| object["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nbd_disk_over_tls_brings_and_takes_its_credentials() {
    let qemu = guest_or_skip!();
    let pki = qemu.dir().join("pki");
    let (ca, wrong_ca) = (pki.join("ca"), pki.join("wrong-ca"));
    make_ca(&ca, "qmp-rs test CA");
    make_ca(&wrong_ca, "another CA");
    let (server, client_dir, wrong) = (pki.join("server"), pki.join("client"), pki.join("wrong"));
    make_cert(&ca, &server, "server", "serverAuth");
    make_cert(&ca, &client_dir, "client", "clientAuth");
    make_cert(&wrong_ca, &wrong, "client", "clientAuth");

    let image = qemu.dir().join("tls.raw");
    std::fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let tls_object = format!("tls-creds-x509,id=tls0,dir={},endpoint=server", server.display());
    let nbd = qemu_nbd::QemuNbd::serve(
        &image,
        "secure",
        &["--object", &tls_object, "--tls-creds", "tls0"],
    );
    let uri = format!("nbd://127.0.0.1:{}/secure", nbd.port());
    let spec_with = |dir: &Path| {
        let export = NbdExport::parse_uri(&uri).unwrap().with_tls(NbdTls::new(dir));
        DiskSpec::new("tls", DiskSource::Nbd(export))
    };

    let hotplug = Hotplug::new(Client::connect(qemu.qmp_path()).await.unwrap());
    let client = hotplug.client().clone();
    let before = objects(&client).await;

    // A CA that did not sign the server's certificate: refused, nothing left.
    let refused = hotplug.add_disk(&spec_with(&wrong), None).await.unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, Error::Step { .. }), "{refused:?}");
    assert!(message.contains("blockdev-add") && message.contains("ertificate"), "{message}");
    assert_eq!(objects(&client).await, before, "the refused add left an object");
    assert!(hotplug.leftovers().await.unwrap().is_empty());

    let start = qemu.serial_len();
    let spec = spec_with(&client_dir);
    let report = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!((report.outcome, report.protocol.as_str()), (Outcome::Added, "nbd"));
    let object = tls_object_id(&report.id);
    assert!(objects(&client).await.contains(&object));
    qemu.wait_for_serial_after(start, "BLOCK vda sectors=16384 media=1", STEP).unwrap();
    // The same spec is adopted; another certificate directory is a conflict.
    assert_eq!(hotplug.add_disk(&spec, None).await.unwrap().outcome, Outcome::AlreadyPresent);
    match hotplug.add_disk(&spec_with(&wrong), None).await {
        Err(Error::Conflict { differences, .. }) => {
            let fields: Vec<&str> = differences.iter().map(|d| d.field).collect();
            assert_eq!(fields, ["tls dir"], "{differences:?}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The disk asked for without TLS is a conflict too.
    let plain = DiskSpec::new("tls", DiskSource::Nbd(NbdExport::parse_uri(&uri).unwrap()));
    assert!(matches!(hotplug.add_disk(&plain, None).await, Err(Error::Conflict { .. })));

    // Credentials of an interrupted add (no node) are a leftover, and go.
    let orphan = "qmp-rs-tls.disk-gone-pci-30";
    let dir = client_dir.to_str().unwrap();
    client
        .execute(
            "object-add",
            json!({"qom-type": "tls-creds-x509", "id": orphan, "dir": dir, "endpoint": "client"}),
        )
        .await
        .unwrap();
    let leftovers = hotplug.leftovers().await.unwrap();
    let parts: Vec<&LeftoverPart> = leftovers.items.iter().map(|item| &item.part).collect();
    assert_eq!(parts, [&LeftoverPart::TlsCreds { object: orphan.into() }]);
    let cleaned = hotplug.clean_leftovers(&leftovers).await.unwrap();
    assert_eq!(cleaned.removed.len(), 1, "{cleaned:?}");
    assert!(!objects(&client).await.contains(&orphan.to_owned()));

    let removed = hotplug.del_disk(&report.id.to_string(), &RemoveOptions::new(STEP)).await;
    assert_eq!(removed.unwrap(), Outcome::Removed);
    qemu.wait_for_serial_after(start, "GUEST: -vda", STEP).unwrap();
    assert_eq!(objects(&client).await, before, "the removal left the credentials");
    let nodes: Value = client.execute("query-named-block-nodes", json!({})).await.unwrap();
    assert_eq!(nodes, json!([]));
}
