//! Boots QEMU, prints its QMP greeting and a `query-status`, and lets drop clean up.
//!
//! ```text
//! cargo run -p qemu-launcher --example start                 # a bare, paused pc machine
//! cargo run -p qemu-launcher --example start -- --guest      # the test guest, booted
//! cargo run -p qemu-launcher --example start -- --machine q35 --binary qemu-system-x86_64
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use qemu_launcher::{GUEST_READY_TIMEOUT, GuestImage, QemuBuilder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = QemuBuilder::new();
    let mut guest = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--guest" => guest = true,
            "--machine" => builder = builder.machine(args.next().ok_or("--machine needs a type")?),
            "--binary" => builder = builder.binary(args.next().ok_or("--binary needs a path")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if guest {
        builder = builder.guest(&GuestImage::locate()?);
    } else {
        builder = builder.paused(true);
    }

    let start = Instant::now();
    let qemu = builder.start()?;
    println!(
        "QEMU pid {} up in {:?}, QMP at {}",
        qemu.pid().unwrap_or(0),
        start.elapsed(),
        qemu.qmp_path().display()
    );
    if guest {
        let ready = qemu.wait_guest_ready(GUEST_READY_TIMEOUT)?;
        println!("guest: {} ({:?} after start)", ready.line, start.elapsed());
    }

    let mut stream = UnixStream::connect(qemu.qmp_path())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    print!("greeting: {line}");
    stream.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")?;
    stream.write_all(b"{\"execute\": \"query-status\"}\n")?;
    for _ in 0..2 {
        line.clear();
        reader.read_line(&mut line)?;
    }
    print!("query-status: {line}");

    let dir = qemu.dir().to_owned();
    drop(qemu);
    println!("dropped: QEMU killed and reaped, {} removed: {}", dir.display(), !dir.exists());
    Ok(())
}
