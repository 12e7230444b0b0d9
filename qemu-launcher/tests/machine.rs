//! Machine options against a real QEMU: q35 with the most root ports the builder allows.
//! With `QMP_REQUIRE_QEMU=1` a missing QEMU fails this test.
//!
//! QMP is spoken by hand (a unix socket and JSON lines): this crate sits below qmp-client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use qemu_launcher::{MAX_ROOT_PORTS, QemuBuilder, qemu_or_skip};
use serde_json::Value;

/// Sends one command and returns its `return`, skipping events.
fn execute(writer: &mut UnixStream, reader: &mut BufReader<UnixStream>, command: &str) -> Value {
    writeln!(writer, r#"{{"execute": "{command}"}}"#).unwrap();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "QEMU closed the socket");
        let message: Value = serde_json::from_str(&line).unwrap();
        if message.get("event").is_none() {
            return message
                .get("return")
                .cloned()
                .unwrap_or_else(|| panic!("{command}: {message}"));
        }
    }
}

#[test]
fn q35_starts_with_every_root_port_the_builder_allows_each_where_its_id_says() {
    // QEMU exits at start if a port's slot is taken, which is what would make
    // MAX_ROOT_PORTS wrong (pcie.0's 1f holds the ICH9 functions).
    let qemu =
        qemu_or_skip!(QemuBuilder::new().machine("q35").paused(true).root_ports(MAX_ROOT_PORTS));
    let mut writer = UnixStream::connect(qemu.qmp_path()).unwrap();
    writer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.contains("\"QMP\""), "{greeting}");
    execute(&mut writer, &mut reader, "qmp_capabilities");
    let buses = execute(&mut writer, &mut reader, "query-pci");
    let root_ports: Vec<(String, u64)> = buses[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|device| device["qdev_id"].as_str().is_some_and(|id| id.starts_with("rp")))
        .map(|device| {
            (device["qdev_id"].as_str().unwrap().to_owned(), device["slot"].as_u64().unwrap())
        })
        .collect();
    let expected: Vec<(String, u64)> =
        (1..=MAX_ROOT_PORTS).map(|port| (format!("rp{port}"), u64::from(port) + 1)).collect();
    assert_eq!(root_ports, expected);
}

#[test]
fn an_empty_cdrom_beside_root_ports_that_reach_its_slot_still_starts() {
    // Root ports 1-3 take slots 02-04: the CD-ROM's controller moves to 05.
    let mut qemu = qemu_or_skip!(
        QemuBuilder::new().machine("q35").paused(true).root_ports(3).empty_scsi_cdrom()
    );
    assert!(qemu.is_running());
}
