//! Starts a QEMU of its own, reads the greeting and lists the PCI slots, using nothing but
//! a tokio `UnixStream` framed with `QmpCodec`.
//!
//! ```text
//! cargo run -p qmp-codec --example qemu_pci
//! ```

use futures::{SinkExt, StreamExt};
use qmp_codec::{Command, QmpCodec, ServerMessage};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Sends a command and waits for its reply, printing any event that arrives first.
async fn call(
    qmp: &mut Framed<UnixStream, QmpCodec>,
    command: Command,
) -> Result<serde_json::Value> {
    let name = command.name.clone();
    qmp.send(command).await?;
    while let Some(message) = qmp.next().await {
        match message?? {
            ServerMessage::Return(reply) => return Ok(reply.value),
            ServerMessage::Error(reply) => return Err(format!("{name}: {}", reply.error).into()),
            ServerMessage::Event(event) => println!("event: {}", event.event),
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    Err("QEMU closed the connection".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let qemu = qemu_launcher::Qemu::start()?;
    let mut qmp = Framed::new(UnixStream::connect(qemu.qmp_path()).await?, QmpCodec::new());

    let Some(Ok(Ok(ServerMessage::Greeting(greeting)))) = qmp.next().await else {
        return Err("no greeting".into());
    };
    println!("QEMU {} ({})", greeting.version.qemu, greeting.version.package);
    let caps: Vec<&str> = greeting.capabilities.iter().map(qmp_codec::Capability::as_str).collect();
    println!("offered capabilities: {caps:?}");

    call(&mut qmp, Command::new("qmp_capabilities").id(0)).await?;
    let buses = call(&mut qmp, Command::new("query-pci").id(1)).await?;
    for bus in buses.as_array().into_iter().flatten() {
        let mut used = [false; 32];
        for device in bus["devices"].as_array().into_iter().flatten() {
            let slot = device["slot"].as_u64().unwrap_or(0);
            println!(
                "bus {} slot {:2} fn {} {:04x}:{:04x} {}",
                bus["bus"],
                slot,
                device["function"],
                device["id"]["vendor"].as_u64().unwrap_or(0),
                device["id"]["device"].as_u64().unwrap_or(0),
                device["class_info"]["desc"].as_str().unwrap_or("?"),
            );
            if let Some(flag) = used.get_mut(usize::try_from(slot)?) {
                *flag = true;
            }
        }
        let free: Vec<usize> = (0..32).filter(|&s| !used[s]).collect();
        println!("bus {}: {} free slots: {free:?}", bus["bus"], free.len());
    }
    Ok(())
}
