//! Says what each path is and, for a disk image, what its header looks like; refuses a
//! FIFO, directory or device the way a hotplug would, without opening it.
//!
//! `cargo run -p hostdev --example inspect_image -- PATH...`, e.g.
//! `-- disk.qcow2 /dev/loop0 /dev/null /tmp`.

use hostdev::classify_path;
use hostdev::image::{Access, open_image};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<_> = std::env::args_os().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: inspect_image PATH...".into());
    }
    for path in paths.iter().map(std::path::Path::new) {
        let kind = match classify_path(path) {
            Ok(kind) => kind,
            Err(error) => {
                println!("{error}");
                continue;
            }
        };
        println!("{}: {kind}", path.display());
        match open_image(path, Access::ReadOnly) {
            Ok(image) => match image.sniff_format()? {
                Some(format) => println!("  header says {format:?} (driver {:?})", format.driver()),
                None => println!("  no known header: raw data or an unknown format"),
            },
            Err(error) => println!("  {error}"),
        }
    }
    Ok(())
}
