//! Opens a tap interface, prints its name and descriptors and whether vhost-net is usable,
//! then keeps it until Enter is pressed (or 30 seconds pass): look at it meanwhile with
//! `ip link show`. The interface disappears when the program exits.
//!
//! Run as root (or with `CAP_NET_ADMIN`):
//! `cargo run -p hostdev --example open_tap -- [NAME_OR_TEMPLATE [QUEUES]]`,
//! e.g. `-- qmptap%d 4`. The default is `qmptap%d` with one queue.

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use hostdev::tap::Tap;
use hostdev::vhost::vhost_net_usable;

const WAIT: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "qmptap%d".to_owned());
    let queues = args.next().map_or(Ok(1), |text| text.parse::<usize>())?;

    let tap = Tap::open(&name, queues)?;
    let fds: Vec<_> = tap.queues().iter().map(AsRawFd::as_raw_fd).collect();
    println!("opened tap interface {} with {} queue(s), fds {fds:?}", tap.name(), queues);
    match vhost_net_usable() {
        Ok(()) => println!("vhost-net is usable: \"vhost\": true is safe to ask QEMU for"),
        Err(why) => println!("{why}"),
    }

    // Enter (or end of input) on another thread; whichever comes first ends the wait.
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_line(&mut String::new());
        let _ = done.send(());
    });
    println!("press Enter to close it (or wait {} s)", WAIT.as_secs());
    let _ = wait.recv_timeout(WAIT);

    let name = tap.name().to_owned();
    drop(tap);
    println!("closed {name}; the kernel removes it with its last descriptor");
    Ok(())
}
