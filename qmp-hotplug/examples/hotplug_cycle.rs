//! Hot-adds a disk (through an fdset) and a NIC (on a new tap) to a running QEMU, prints
//! bus 0, then hot-removes both. The guest must answer ACPI hotplug for the removal.
//!
//! `cargo run -p qmp-hotplug --example hotplug_cycle -- /path/to/qmp.sock` (as root, for the tap)

use std::os::fd::OwnedFd;
use std::time::Duration;

use hostdev::tap::Tap;
use qmp_client::Client;
use qmp_hotplug::{DiskSource, DiskSpec, Hotplug, NicSpec, RemoveOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::args().nth(1).ok_or("usage: hotplug_cycle QMP_SOCKET")?;
    let hotplug = Hotplug::new(Client::connect(&socket).await?);

    let image = tempfile::NamedTempFile::new()?;
    image.as_file().set_len(16 << 20)?;
    let disk_spec = DiskSpec::new("example", DiskSource::Path(image.path().to_owned()));
    hotplug.check_disk_support(&disk_spec).await?;
    let disk = hotplug.add_disk(&disk_spec, None).await?;
    println!("{} disk {} ({} over {})", disk.outcome, disk.id, disk.format, disk.file);

    let tap = Tap::open("qmpex%d", 1)?;
    let nic = hotplug.add_nic(&NicSpec::new("example"), tap.queues(), &[] as &[OwnedFd]).await?;
    let carried_by = nic.queues[0].tap.as_deref().unwrap_or("an unknown tap");
    println!("{} NIC {} on {carried_by}", nic.outcome, nic.id);

    print!("{}", hotplug.pci_slots().await?);

    let options = RemoveOptions::new(Duration::from_secs(10));
    for id in [disk.id.to_string(), nic.id.to_string()] {
        let removed = if id.starts_with("disk") {
            hotplug.del_disk(&id, &options).await
        } else {
            hotplug.del_nic(&id, &options).await
        };
        match removed {
            Ok(outcome) => println!("{outcome} {id}"),
            Err(error) => println!("{id} is still there: {error}"),
        }
    }
    Ok(())
}
