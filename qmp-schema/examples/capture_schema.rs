//! Captures a real QEMU's `query-qmp-schema` and `query-commands` replies, byte for byte as
//! QEMU sent them (one line each, `\r\n` dropped), for this crate's tests and benchmarks:
//!
//! ```text
//! cargo run -p qmp-schema --example capture_schema -- qmp-schema/tests/data
//! ```
//!
//! It starts `qemu-system-x86_64 -machine pc -nodefaults -S` through `qemu-launcher` (set
//! `QMP_QEMU` for another binary) and writes `qemu-<major>.<minor>-schema.json` and
//! `qemu-<major>.<minor>-commands.json` into the directory given (default: the current one).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let qemu = qemu_launcher::Qemu::builder().paused(true).start()?;
    let stream = UnixStream::connect(qemu.qmp_path())?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);

    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    let greeting: Value = serde_json::from_str(&greeting)?;
    let version = &greeting["QMP"]["version"]["qemu"];
    let prefix = format!("qemu-{}.{}", version["major"], version["minor"]);

    let mut run = |name: &str| -> Result<String, Box<dyn std::error::Error>> {
        // No id, so the stored reply is exactly what any client gets; one command is in
        // flight at a time, so the first non-event message is its reply.
        writer.write_all(format!("{}\r\n", json!({"execute": name})).as_bytes())?;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(format!("QEMU closed the socket during {name}").into());
            }
            let message: Value = serde_json::from_str(&line)?;
            if message.get("event").is_none() {
                if message.get("return").is_none() {
                    return Err(format!("{name} failed: {line}").into());
                }
                return Ok(line.trim_end().to_owned());
            }
        }
    };
    run("qmp_capabilities")?;
    for (command, file) in [("query-qmp-schema", "schema"), ("query-commands", "commands")] {
        let reply = run(command)?;
        let path = dir.join(format!("{prefix}-{file}.json"));
        std::fs::write(&path, reply.as_bytes())?;
        eprintln!("{command}: {} bytes -> {}", reply.len(), path.display());
    }
    Ok(())
}
