//! Connect → execute → events, against a real QEMU.
//!
//! ```text
//! cargo run -p qmp-client --example tour                 # starts a QEMU of its own
//! cargo run -p qmp-client --example tour -- /path/to/qmp.sock
//! ```

use std::time::Duration;

use qmp_client::{Client, EventFilter, EventItem};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Our own QEMU unless a socket is given; it is killed when `_qemu` drops.
    let (_qemu, socket): (_, std::path::PathBuf) = if let Some(path) = std::env::args_os().nth(1) {
        (None, path.into())
    } else {
        let qemu = qemu_launcher::Qemu::start()?;
        let path = qemu.qmp_path().to_owned();
        (Some(qemu), path)
    };

    let client = Client::connect(&socket).await?;
    let greeting = client.greeting();
    println!("connected to QEMU {} ({})", greeting.version.qemu, greeting.version.package);
    println!(
        "oob negotiated: {}; {} commands available",
        client.oob_enabled(),
        client.commands().len()
    );

    // PCI slots on bus 0, the way a hotplug planner sees them.
    let buses = client.execute("query-pci", ()).await?;
    let mut used: Vec<u64> = buses[0]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|device| device["slot"].as_u64())
        .collect();
    used.dedup();
    println!("PCI bus 0: slots in use {used:?}, {} free", 32 - used.len());

    // Subscribe first, then act: nothing emitted in between can be missed.
    let mut events = client.subscribe(EventFilter::names(["STOP", "RESUME"]));
    client.execute("stop", ()).await?;
    client.execute("cont", ()).await?;
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await? {
            Some(EventItem::Event(event)) => {
                println!(
                    "event {} at {}.{:06}",
                    event.event, event.timestamp.seconds, event.timestamp.microseconds
                );
            }
            other => println!("subscription: {other:?}"),
        }
    }

    print!("HMP info version: {}", client.human_monitor_command("info version").await?);

    // A descriptor travels with its command; QEMU keeps it under a name until closefd.
    let (_read, write) = nix::unistd::pipe()?;
    client.get_fd("demo-fd", &write).await?;
    client.close_fd("demo-fd").await?;
    println!("passed a pipe to QEMU as 'demo-fd' and closed it again");

    match client.execute("device_del", serde_json::json!({"id": "nope"})).await {
        Err(error) => println!("a typed error: {error}"),
        Ok(value) => println!("unexpected success: {value}"),
    }
    client.close().await;
    Ok(())
}
