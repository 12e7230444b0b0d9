//! Captures what a real QEMU sends on its QMP socket, byte for byte, for the codec's test
//! data and benchmark:
//!
//! ```text
//! cargo run -p qmp-codec --example capture_transcript > qmp-codec/tests/data/qemu-transcript.qmp
//! ```
//!
//! It starts `qemu-system-x86_64` (see `qemu-launcher`), sends a fixed script of
//! commands covering every message kind (greeting, large and small returns, error replies,
//! events, HMP text) and writes every byte read from the socket to stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

/// The script: command name and arguments. Chosen to cover the message kinds and the largest
/// real replies (`query-qmp-schema`, `qom-list-types`, HMP `info qtree`).
fn script() -> Vec<(&'static str, Value)> {
    vec![
        ("qmp_capabilities", json!({})),
        ("query-version", json!({})),
        ("query-status", json!({})),
        ("query-commands", json!({})),
        ("query-pci", json!({})),
        ("query-qmp-schema", json!({})),
        ("qom-list-types", json!({})),
        ("query-cpus-fast", json!({})),
        ("query-block", json!({})),
        ("query-chardev", json!({})),
        ("query-fdsets", json!({})),
        ("stop", json!({})),
        ("query-status", json!({})),
        ("cont", json!({})),
        ("no-such-command", json!({})),
        ("query-pci", json!({"bogus": 1})),
        ("netdev_add", json!({"type": "user", "id": "n1"})),
        (
            "device_add",
            json!({"driver": "virtio-net-pci", "netdev": "n1", "id": "nic1", "addr": "0x5"}),
        ),
        (
            "device_add",
            json!({"driver": "virtio-net-pci", "netdev": "n1", "id": "nic2", "addr": "0x5"}),
        ),
        ("query-pci", json!({})),
        ("device_del", json!({"id": "nope"})),
        ("human-monitor-command", json!({"command-line": "info version"})),
        ("human-monitor-command", json!({"command-line": "info pci"})),
        ("human-monitor-command", json!({"command-line": "info qtree"})),
        ("human-monitor-command", json!({"command-line": "info mtree"})),
        ("human-monitor-command", json!({"command-line": "no_such_hmp"})),
        ("stop", json!({})),
        ("cont", json!({})),
        ("query-status", json!({})),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let qemu = qemu_launcher::Qemu::start()?;
    let stream = UnixStream::connect(qemu.qmp_path())?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(Recorder { inner: stream, recorded: Vec::new() });

    let mut line = String::new();
    reader.read_line(&mut line)?;
    assert!(line.starts_with("{\"QMP\""), "expected the greeting, got {line}");

    for (id, (name, arguments)) in script().into_iter().enumerate() {
        let command = json!({"execute": name, "arguments": arguments, "id": id});
        writer.write_all(format!("{command}\r\n").as_bytes())?;
        // Read until this command's reply; events may come first.
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(format!("QEMU closed the socket while running {name}").into());
            }
            let message: Value = serde_json::from_str(&line)?;
            if message.get("id") == Some(&json!(id)) {
                break;
            }
        }
    }
    // Nothing is left half-read: BufReader only ever requests whole lines' worth from the
    // socket it has already been given, and every reply above was consumed to its newline.
    assert!(reader.buffer().is_empty(), "unread bytes after the last reply");
    std::io::stdout().write_all(&reader.into_inner().recorded)?;
    Ok(())
}

/// Keeps a copy of every byte read from the socket.
struct Recorder {
    inner: UnixStream,
    recorded: Vec<u8>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.recorded.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
