//! The checker, probes and descriptions over the real schema of QEMU 7.2.22
//! (`tests/data/qemu-7.2-schema.json`, captured as `tests/data/README.md` says).

use qmp_schema::{Description, ProblemKind, Report, Schema, UncheckedReason, Verdict};
use serde_json::{Value, json};

const SCHEMA: &[u8] = include_bytes!("data/qemu-7.2-schema.json");
const COMMANDS: &[u8] = include_bytes!("data/qemu-7.2-commands.json");

fn schema() -> Schema {
    Schema::from_slice(SCHEMA).expect("QEMU 7.2's schema parses")
}

fn check(schema: &Schema, command: &str, arguments: &Value) -> Report {
    schema.check(command, Some(arguments))
}

#[test]
fn every_command_qemu_lists_resolves_and_no_other() {
    let schema = schema();
    let reply: Value = serde_json::from_slice(COMMANDS).unwrap();
    let mut listed: Vec<&str> =
        reply["return"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    listed.sort_unstable();
    assert_eq!(listed.len(), 216);
    let in_schema: Vec<&str> = schema.commands().collect();
    assert_eq!(in_schema, listed);
    assert_eq!(schema.events().count(), 52);
    for command in listed {
        assert!(schema.has_command(command));
        assert!(schema.has(&format!("{command}/arg-type")).unwrap(), "{command}");
        assert!(schema.has(&format!("{command}/ret-type")).unwrap(), "{command}");
    }
}

#[test]
fn from_value_and_from_slice_agree() {
    let reply: Value = serde_json::from_slice(SCHEMA).unwrap();
    let from_value = Schema::from_value(&reply).unwrap();
    let from_bare_array = Schema::from_value(&reply["return"]).unwrap();
    let from_slice = schema();
    for s in [&from_value, &from_bare_array] {
        assert!(s.commands().eq(from_slice.commands()));
        assert_eq!(
            s.describe("blockdev-add").unwrap(),
            from_slice.describe("blockdev-add").unwrap()
        );
    }
}

/// Arguments as the hotplug crate sends them today (qmp-hotplug/src/planner.rs and plan.rs:
/// NIC and disk add/del, the snapshot queries, HMP `drive_del`), and the commands the
/// other crates and their tests send.
fn known_good() -> Vec<(&'static str, Option<Value>)> {
    vec![
        // qmp-client
        ("qmp_capabilities", None),
        ("qmp_capabilities", Some(json!({"enable": ["oob"]}))),
        ("query-commands", None),
        ("query-version", None),
        ("query-status", None),
        ("query-status", Some(json!({}))),
        ("getfd", Some(json!({"fdname": "nic-a1-pci-2-tap0"}))),
        ("closefd", Some(json!({"fdname": "nic-a1-pci-2-tap0"}))),
        ("add-fd", Some(json!({"fdset-id": 3, "opaque": "disk-a-pci-4"}))),
        ("add-fd", Some(json!({"opaque": "disk0.raw"}))),
        ("remove-fd", Some(json!({"fdset-id": 3}))),
        ("remove-fd", Some(json!({"fdset-id": 0, "fd": 16}))),
        ("query-fdsets", None),
        ("human-monitor-command", Some(json!({"command-line": "info pci"}))),
        ("human-monitor-command", Some(json!({"command-line": "drive_del drv0"}))),
        // qmp-hotplug snapshot
        ("query-pci", None),
        ("qom-list", Some(json!({"path": "/machine/peripheral"}))),
        ("query-named-block-nodes", Some(json!({"flat": true}))),
        // qmp-hotplug NIC
        (
            "netdev_add",
            Some(json!({"type": "tap", "id": "nic-a1-pci-2", "fd": "nic-a1-pci-2-tap0"})),
        ),
        (
            "netdev_add",
            Some(json!({"type": "tap", "id": "nic-mq-pci-9",
                        "fds": "nic-mq-pci-9-tap0:nic-mq-pci-9-tap1", "vhost": true,
                        "vhostfds": "nic-mq-pci-9-vhost0:nic-mq-pci-9-vhost1"})),
        ),
        (
            "netdev_add",
            Some(json!({"type": "tap", "id": "nic-v-pci-2", "fd": "nic-v-pci-2-tap0",
                        "vhost": true, "vhostfd": "nic-v-pci-2-vhost0"})),
        ),
        ("netdev_add", Some(json!({"type": "user", "id": "n1"}))),
        ("netdev_del", Some(json!({"id": "nic-a1-pci-2"}))),
        ("device_del", Some(json!({"id": "nic-a1-pci-2"}))),
        // qmp-hotplug disk: raw and qcow2 through an fdset, NBD over unix and TCP
        (
            "blockdev-add",
            Some(json!({"driver": "raw", "node-name": "disk-d1-pci-2", "read-only": false,
                        "file": {"driver": "file", "node-name": "disk-d1-pci-2-file",
                                 "filename": "/dev/fdset/0", "read-only": false}})),
        ),
        (
            "blockdev-add",
            Some(json!({"driver": "qcow2", "node-name": "disk-d1-pci-2", "read-only": true,
                        "file": {"driver": "file", "node-name": "disk-d1-pci-2-file",
                                 "filename": "/dev/fdset/1", "read-only": true}})),
        ),
        (
            "blockdev-add",
            Some(json!({"driver": "raw", "node-name": "disk-n-pci-2", "read-only": false,
                        "file": {"driver": "nbd", "node-name": "disk-n-pci-2-file",
                                 "server": {"type": "unix", "path": "/run/nbd.sock"},
                                 "export": "exp0"}})),
        ),
        (
            "blockdev-add",
            Some(json!({"driver": "raw", "node-name": "disk-t-pci-3", "read-only": false,
                        "file": {"driver": "nbd", "node-name": "disk-t-pci-3-file",
                                 "server": {"type": "inet", "host": "::1", "port": "10809"}}})),
        ),
        ("blockdev-add", Some(json!({"driver": "null-co", "node-name": "n0", "size": 1_048_576}))),
        ("blockdev-del", Some(json!({"node-name": "disk-d1-pci-2"}))),
    ]
}

/// Other commands in common use, with typical arguments.
fn other_known_good() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("stop", None),
        ("cont", None),
        ("system_reset", None),
        ("query-block", None),
        ("query-chardev", None),
        ("query-cpus-fast", None),
        ("query-hotpluggable-cpus", None),
        ("qom-get", Some(json!({"path": "/machine", "property": "type"}))),
        ("qom-list-types", Some(json!({"implements": "device", "abstract": false}))),
        ("device-list-properties", Some(json!({"typename": "virtio-net-pci"}))),
        ("object-add", Some(json!({"qom-type": "iothread", "id": "io1", "poll-max-ns": 32768}))),
        (
            "object-add",
            Some(json!({"qom-type": "memory-backend-ram", "id": "m0", "size": 1_048_576})),
        ),
        ("object-del", Some(json!({"id": "io1"}))),
        ("chardev-add", Some(json!({"id": "c0", "backend": {"type": "null", "data": {}}}))),
        ("chardev-remove", Some(json!({"id": "c0"}))),
        ("set_link", Some(json!({"name": "nic0", "up": false}))),
        (
            "send-key",
            Some(
                json!({"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "number", "data": 56}]}),
            ),
        ),
        (
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "xbzrle", "state": true}]})),
        ),
        ("migrate-set-parameters", Some(json!({"tls-creds": null, "max-bandwidth": 1_000_000}))),
        ("migrate", Some(json!({"uri": "exec:cat > /dev/null"}))),
        ("query-cpu-model-expansion", Some(json!({"type": "static", "model": {"name": "qemu64"}}))),
        ("trace-event-get-state", Some(json!({"name": "qmp*"}))),
        ("balloon", Some(json!({"value": 1_073_741_824}))),
        ("watchdog-set-action", Some(json!({"action": "pause"}))),
        ("screendump", Some(json!({"filename": "/tmp/screen.ppm"}))),
        (
            "transaction",
            Some(json!({"actions": [{"type": "block-dirty-bitmap-add",
                                     "data": {"node": "n0", "name": "b0", "persistent": false}}]})),
        ),
    ]
}

#[test]
fn known_good_arguments_pass() {
    let schema = schema();
    let cases: Vec<_> = known_good().into_iter().chain(other_known_good()).collect();
    assert!(cases.len() >= 50);
    for (command, arguments) in cases {
        let report = schema.check(command, arguments.as_ref());
        assert_eq!(report.verdict, Verdict::Valid, "{command} {arguments:?}");
        assert!(report.warnings.is_empty(), "{command}: {:?}", report.warnings);
    }
}

#[test]
fn device_add_and_any_values_are_reported_not_checked() {
    let schema = schema();
    // As qmp-hotplug sends them: NIC, multiqueue NIC, disk.
    for arguments in [
        json!({"driver": "virtio-net-pci", "id": "nic-a1-pci-2", "bus": "pci.0", "addr": "0x2",
               "netdev": "nic-a1-pci-2", "mac": "52:54:00:12:34:56"}),
        json!({"driver": "virtio-net-pci", "id": "nic-mq-pci-9", "bus": "pci.0", "addr": "0x9",
               "netdev": "nic-mq-pci-9", "mq": true, "vectors": 6}),
        json!({"driver": "virtio-blk-pci", "id": "disk-d1-pci-2", "bus": "pci.0", "addr": "0x2",
               "drive": "disk-d1-pci-2"}),
    ] {
        let report = check(&schema, "device_add", &arguments);
        let Verdict::NotChecked(unchecked) = report.verdict else { panic!("{arguments}") };
        assert!(matches!(unchecked.reason, UncheckedReason::FreeForm(_)));
    }
    let report =
        check(&schema, "qom-set", &json!({"path": "/machine", "property": "x", "value": 1}));
    assert!(matches!(report.verdict, Verdict::NotChecked(ref u) if u.path == "arguments.value"));
    let report = check(
        &schema,
        "query-cpu-model-expansion",
        &json!({"type": "full", "model": {"name": "qemu64", "props": {"vmx": false}}}),
    );
    assert!(
        matches!(report.verdict, Verdict::NotChecked(ref u) if u.path == "arguments.model.props")
    );
}

/// The only problem QEMU 7.2's schema finds in `arguments`, as a sentence.
fn the_problem(
    schema: &Schema,
    command: &str,
    arguments: &Value,
) -> (ProblemKind, String, Option<String>, String) {
    let report = check(schema, command, arguments);
    let [problem] = report.problems() else { panic!("{command} {arguments}: {report:?}") };
    (problem.kind, problem.path.clone(), problem.suggestion.clone(), problem.to_string())
}

/// (command, arguments, the problem's kind, path, suggestion and text; "" for "not compared").
type BadCase = (&'static str, Value, ProblemKind, &'static str, Option<&'static str>, &'static str);

#[allow(clippy::too_many_lines)] // a table
fn known_bad() -> Vec<BadCase> {
    vec![
        (
            "blockdev-add",
            json!({"driver": "raw", "node-name": "d0", "file": {"driver": "file"}}),
            ProblemKind::Missing,
            "arguments.file.filename",
            None,
            "arguments.file.filename: missing (required for driver \"file\"), expected str",
        ),
        (
            "blockdev-add",
            json!({"driver": "file", "node-name": "d0", "filename": "/x", "aio": "nativ"}),
            ProblemKind::BadValue,
            "arguments.aio",
            Some("native"),
            "arguments.aio: expected one of \"threads\", \"native\", \"io_uring\", found string \"nativ\" (did you mean \"native\"?)",
        ),
        (
            "blockdev-add",
            json!({"driver": "raw", "node-name": "d0", "filename": "/x", "file": "n0"}),
            ProblemKind::Unexpected,
            "arguments.filename",
            None,
            "arguments.filename: unexpected member (only for driver \"file\", \"host_cdrom\", \"host_device\")",
        ),
        (
            "blockdev-add",
            json!({"driver": "raw", "node-name": "d0", "file": {"driver": "file", "filename": "/x", "read_only": true}}),
            ProblemKind::Unexpected,
            "arguments.file.read_only",
            Some("read-only"),
            "arguments.file.read_only: unexpected member (did you mean \"read-only\"?)",
        ),
        (
            "blockdev-add",
            json!({"driver": "raw", "node-name": "d0", "file": 5}),
            ProblemKind::WrongType,
            "arguments.file",
            None,
            "arguments.file: expected object or str, found number 5",
        ),
        (
            "netdev_add",
            json!({"type": "tap", "id": "n0", "fd": "t0", "vhostforse": true}),
            ProblemKind::Unexpected,
            "arguments.vhostforse",
            Some("vhostforce"),
            "arguments.vhostforse: unexpected member (did you mean \"vhostforce\"?)",
        ),
        (
            "netdev_add",
            json!({"type": "tapp", "id": "n0"}),
            ProblemKind::BadValue,
            "arguments.type",
            Some("tap"),
            "arguments.type: expected one of \"none\", \"nic\", \"user\", \"tap\", \"l2tpv3\", \"socket\", \"stream\", \"dgram\", ... (14 in all), found string \"tapp\" (did you mean \"tap\"?)",
        ),
        (
            "object-add",
            json!({"qom-type": "iothred", "id": "io1"}),
            ProblemKind::BadValue,
            "arguments.qom-type",
            Some("iothread"),
            "",
        ),
        (
            "query-named-block-nodes",
            json!({"flat": "yes"}),
            ProblemKind::WrongType,
            "arguments.flat",
            None,
            "arguments.flat: expected bool, found string \"yes\"",
        ),
        (
            "add-fd",
            json!({"fdset-id": "3", "opaque": "d"}),
            ProblemKind::WrongType,
            "arguments.fdset-id",
            None,
            "arguments.fdset-id: expected int, found string \"3\"",
        ),
        (
            "send-key",
            json!({"keys": [{"type": "number", "data": "a"}]}),
            ProblemKind::WrongType,
            "arguments.keys[0].data",
            None,
            "arguments.keys[0].data: expected int, found string \"a\"",
        ),
        (
            "qom-list",
            json!({}),
            ProblemKind::Missing,
            "arguments.path",
            None,
            "arguments.path: missing (required), expected str",
        ),
        (
            "migrate-set-parameters",
            json!({"tls-creds": 5}),
            ProblemKind::WrongType,
            "arguments.tls-creds",
            None,
            "arguments.tls-creds: expected str or null, found number 5",
        ),
        (
            "query-pci",
            json!({"bogus": 1}),
            ProblemKind::Unexpected,
            "arguments.bogus",
            None,
            "arguments.bogus: unexpected member (the command takes no arguments)",
        ),
        (
            "query-status",
            json!(null),
            ProblemKind::WrongType,
            "arguments",
            None,
            "arguments: expected empty object, found null",
        ),
    ]
}

#[test]
fn known_bad_arguments_are_refused_with_path_and_suggestion() {
    let schema = schema();
    for (command, arguments, kind, path, suggestion, text) in known_bad() {
        let found = the_problem(&schema, command, &arguments);
        assert_eq!(
            (found.0, found.1.as_str(), found.2.as_deref()),
            (kind, path, suggestion),
            "{command} {arguments}"
        );
        if !text.is_empty() {
            assert_eq!(found.3, text);
        }
    }
    let (kind, path, suggestion, text) = the_problem(&schema, "query-statsu", &json!({}));
    assert_eq!(
        (kind, path.as_str(), suggestion.as_deref()),
        (ProblemKind::UnknownCommand, "execute", Some("query-status"))
    );
    assert_eq!(text, "no command \"query-statsu\" in the schema (did you mean \"query-status\"?)");
}

#[test]
fn deprecated_and_unstable_use_is_warned_about() {
    let schema = schema();
    let report =
        check(&schema, "drive-backup", &json!({"device": "d", "target": "/t", "sync": "full"}));
    assert_eq!(report.verdict, Verdict::Valid);
    let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings, ["execute: command \"drive-backup\" is deprecated"]);
    let report = schema.check("x-query-roms", None);
    assert_eq!(report.warnings[0].to_string(), "execute: command \"x-query-roms\" is unstable");
}

#[test]
fn libvirt_style_probes() {
    let schema = schema();
    for present in [
        "blockdev-add",
        "blockdev-add/arg-type/+file/aio",
        "blockdev-add/arg-type/+file/aio/^io_uring",
        "blockdev-add/arg-type/+file/drop-cache",
        "blockdev-add/arg-type/+file/$dynamic-auto-read-only",
        "blockdev-add/arg-type/+qcow2/encrypt/+luks/key-secret",
        "blockdev-add/arg-type/+raw/file/+file/filename",
        "netdev_add/arg-type/+tap/vhostforce",
        "netdev_add/arg-type/+stream/addr/+unix/path",
        "netdev_add/arg-type/type/^vhost-vdpa",
        "object-add/arg-type/+iothread/poll-max-ns",
        "query-status/ret-type/running",
        "query-status/ret-type/status/^prelaunch",
        "query-pci/ret-type/devices/qdev_id",
        "query-named-block-nodes/arg-type/*flat",
        "human-monitor-command/$savevm-monitor-nodes",
        "device_add/$json-cli-hotplug",
        "drive-backup/$deprecated",
        "x-query-roms/$unstable",
        "DEVICE_DELETED/arg-type/device",
        "migrate-set-parameters/arg-type/tls-creds/!null",
        "migrate-set-parameters/arg-type/tls-creds/!string",
        "send-key/arg-type/keys/+qcode/data/^ctrl",
    ] {
        assert_eq!(schema.has(present).ok(), Some(true), "{present}");
    }
    for absent in [
        "no-such-command",
        "blockdev-add/arg-type/+file/no-such-member",
        "blockdev-add/arg-type/+nope",
        "blockdev-add/arg-type/+raw/aio",
        "blockdev-add/arg-type/+file/aio/^nope",
        "blockdev-add/arg-type/*driver",
        "netdev_add/arg-type/+tap/no-such",
        "query-status/ret-type/nope",
        "query-status/$deprecated",
        "migrate-set-parameters/arg-type/tls-creds/!int",
        "DEVICE_DELETED/ret-type",
    ] {
        assert_eq!(schema.has(absent).ok(), Some(false), "{absent}");
    }
}

/// Every string in a description's JSON that is only digits must be an enum value QEMU
/// really has (`QKeyCode`'s "0" to "9"), never a masked type name.
#[test]
fn every_command_and_event_describes_without_masked_names() {
    let schema = schema();
    let names: Vec<String> = schema.commands().chain(schema.events()).map(Into::into).collect();
    let mut total_lines = 0;
    for name in &names {
        let description = schema.describe(name).unwrap();
        assert!(matches!(description, Description::Command { .. } | Description::Event { .. }));
        let json = serde_json::to_value(&description).unwrap();
        let mut found = Vec::new();
        strings(&json, &mut found);
        for digits in
            found.iter().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        {
            assert!(
                schema.has(&format!("send-key/arg-type/keys/+qcode/data/^{digits}")).unwrap(),
                "{name}: {digits}"
            );
        }
        let text = description.to_string();
        assert!(text.starts_with(&format!(
            "{} {name}",
            if schema.has_command(name) { "command" } else { "event" }
        )));
        total_lines += text.lines().count();
    }
    // Each object is shown once per description, so even blockdev-add stays readable.
    let blockdev_add = schema.describe("blockdev-add").unwrap().to_string().lines().count();
    assert!(blockdev_add < 400, "{blockdev_add} lines");
    assert!(total_lines > names.len() * 2);
}

fn strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

#[test]
fn completion_over_the_real_schema() {
    let schema = schema();
    let file = json!({"driver": "file"});
    assert_eq!(schema.complete_member("blockdev-add", Some(&file), "fil"), ["filename"]);
    assert_eq!(schema.complete_member("blockdev-add", None, "node"), ["node-name"]);
    assert_eq!(schema.complete_value("netdev_add", None, "type", "ta"), ["tap"]);
    assert_eq!(
        schema.complete_value("blockdev-add", Some(&file), "aio", ""),
        ["threads", "native", "io_uring"]
    );
    let raw = json!({"driver": "raw", "file": {"driver": "nbd"}});
    assert_eq!(schema.complete_member("blockdev-add", Some(&raw), "file.serv"), ["file.server"]);
    assert_eq!(
        schema.complete_value("blockdev-add", Some(&raw), "file.server.type", ""),
        ["inet", "unix", "vsock", "fd"]
    );
    assert_eq!(schema.complete_value("migrate-set-parameters", None, "tls-creds", ""), ["null"]);
    assert!(schema.complete_member("query-status", None, "").is_empty());
}
