//! Support checks probe QEMU's schema for what an add would send: against QEMU 7.2's
//! captured schema every probe holds, and a server whose schema lacks a member is told
//! apart from one that has it (the mock serves a schema of our own).

use qmp_client::mock::{DEFAULT_COMMANDS, MockServer};
use qmp_client::{Client, Schema};
use qmp_hotplug::{
    DiskFormat, DiskSource, DiskSpec, Error, Hotplug, NbdExport, NbdTls, NicSpec, Vhost,
    disk_probes, nic_probes,
};
use serde_json::{Value, json};

fn nic(queues: usize, vhost: Vhost) -> NicSpec {
    NicSpec { queues, vhost, ..NicSpec::new("a") }
}

#[test]
fn every_probe_holds_on_qemu_7_2() {
    let schema =
        Schema::from_slice(include_bytes!("../../qmp-schema/tests/data/qemu-7.2-schema.json"))
            .unwrap();
    let nbd = NbdExport::parse_uri("nbd://localhost/exp0").unwrap();
    let mut probes = Vec::new();
    for (queues, vhost) in [(1, Vhost::Off), (4, Vhost::Open), (1, Vhost::Fds), (4, Vhost::Fds)] {
        probes.extend(nic_probes(&nic(queues, vhost)));
    }
    let tls = NbdTls { hostname: Some("nbd.example".into()), ..NbdTls::new("/pki") };
    let nbd_tls = nbd.clone().with_tls(tls);
    for source in [DiskSource::Fd, DiskSource::Nbd(nbd), DiskSource::Nbd(nbd_tls)] {
        for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
            probes.extend(disk_probes(&DiskSpec { format, ..DiskSpec::new("d", source.clone()) }));
        }
    }
    let paths: Vec<&str> = probes.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "netdev_add/arg-type/+tap/fd",
        "netdev_add/arg-type/+tap/fds",
        "netdev_add/arg-type/+tap/vhost",
        "netdev_add/arg-type/+tap/vhostfd",
        "netdev_add/arg-type/+tap/vhostfds",
        "object-add/arg-type/+secret/data",
        "blockdev-add/arg-type/+qcow2",
        "blockdev-add/arg-type/+nbd/export",
        "blockdev-add/arg-type/+host_device/filename",
        "add-fd/arg-type/opaque",
        "blockdev-add/arg-type/+nbd/tls-creds",
        "blockdev-add/arg-type/+nbd/tls-hostname",
        "object-add/arg-type/+tls-creds-x509/dir",
    ] {
        assert!(paths.contains(&expected), "{expected} not probed: {paths:?}");
    }
    for probe in &probes {
        assert!(schema.has(&probe.path).unwrap(), "{}", probe.path);
    }
}

/// A schema in QEMU's shape whose tap netdev has `fd` but not `fds`.
fn schema_without_multiqueue_taps() -> Value {
    json!([
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {"name": "0", "meta-type": "object", "members": []},
        {"name": "1", "meta-type": "enum", "values": ["tap"]},
        {"name": "2", "meta-type": "object", "tag": "type",
         "members": [{"name": "type", "type": "1"}, {"name": "id", "type": "str"}],
         "variants": [{"case": "tap", "type": "3"}]},
        {"name": "3", "meta-type": "object", "members": [{"name": "fd", "type": "str", "default": null}]},
        {"name": "4", "meta-type": "enum", "values": ["secret"]},
        {"name": "5", "meta-type": "object", "tag": "qom-type",
         "members": [{"name": "qom-type", "type": "4"}, {"name": "id", "type": "str"}],
         "variants": [{"case": "secret", "type": "6"}]},
        {"name": "6", "meta-type": "object", "members": [{"name": "data", "type": "str"}]},
        {"name": "netdev_add", "meta-type": "command", "arg-type": "2", "ret-type": "0"},
        {"name": "object-add", "meta-type": "command", "arg-type": "5", "ret-type": "0"},
    ])
}

async fn hotplug_over(schema: Option<Value>) -> (MockServer, Hotplug) {
    let mut commands: Vec<&str> = DEFAULT_COMMANDS.to_vec();
    commands.extend(["netdev_add", "netdev_del", "device_add", "device_del", "object-add"]);
    commands.extend(["object-del", "blockdev-add", "blockdev-del"]);
    if schema.is_some() {
        commands.push("query-qmp-schema");
    }
    let server = MockServer::builder()
        .commands(commands)
        .handler(move |conn, request| match request.command.name.as_str() {
            "query-qmp-schema" => conn.reply(&request.command, schema.clone().unwrap()),
            _ => conn.reply(&request.command, json!({})),
        })
        .start();
    let client = Client::connect(server.path()).await.unwrap();
    (server, Hotplug::new(client))
}

#[tokio::test]
async fn a_member_missing_from_the_schema_is_named() {
    let (server, hotplug) = hotplug_over(Some(schema_without_multiqueue_taps())).await;
    hotplug.check_nic_support(&nic(1, Vhost::Off)).await.unwrap();
    let error = hotplug.check_nic_support(&nic(2, Vhost::Off)).await.unwrap_err();
    let Error::Unsupported(why) = &error else { panic!("{error:?}") };
    assert_eq!(
        why,
        "QEMU's schema lacks netdev_add/arg-type/+tap/fds (one tap descriptor per queue)"
    );
    let error = hotplug.check_nic_support(&nic(1, Vhost::Open)).await.unwrap_err();
    assert!(error.to_string().contains("+tap/vhost (vhost)"), "{error}");
    let asked = server.received_names().iter().filter(|n| *n == "query-qmp-schema").count();
    assert_eq!(asked, 1, "the schema is fetched once per connection");

    // Without a usable schema, the command names decide, as before.
    let (_server, hotplug) = hotplug_over(None).await;
    hotplug.check_nic_support(&nic(2, Vhost::Off)).await.unwrap();
}
