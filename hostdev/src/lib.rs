//! Host devices for QEMU: the files and devices of this machine whose descriptors a VM
//! manager hands to QEMU, opened and checked here. It knows nothing of QMP; passing the
//! descriptors is `fdpass`'s job, and using them `qmp-hotplug`'s.
//!
//! - [`tap`]: [`Tap::open`](tap::Tap::open) opens a tap interface from `/dev/net/tun`
//!   with one descriptor per queue (`IFF_VNET_HDR`, and `IFF_MULTI_QUEUE` for more than
//!   one), for `getfd` and then `netdev_add` with `"fd"` or `"fds"`;
//!   [`interface_of_process_fd`](tap::interface_of_process_fd) names the tap a process
//!   (QEMU) holds as a given descriptor, from `/proc/<pid>/fdinfo`.
//! - [`vhost`]: [`vhost_net_usable`](vhost::vhost_net_usable) says whether `"vhost": true`
//!   is safe to ask for (QEMU 7.2 aborts when it is not),
//!   [`open_vhost_net`](vhost::open_vhost_net) opens the device, and
//!   [`check_vhost_net`](vhost::check_vhost_net) checks a caller's descriptor.
//! - [`image`]: [`open_image`](image::open_image) opens a disk image read-only or
//!   read-write, refusing a FIFO, directory, character device or socket *before* opening
//!   it, so it never blocks on a FIFO; [`Image::from_fd`](image::Image::from_fd) checks a
//!   descriptor the same way; [`ImageIdentity`](image::ImageIdentity) says which file an
//!   open image is (device and inode, or a block device's number).
//! - [`format`](mod@format): [`ImageFormat::sniff`](format::ImageFormat::sniff) says which format an
//!   image's first bytes look like (qcow2, vmdk, vdi, vhdx, luks, ...): facts, no choice.
//! - [`classify_path`], [`classify_fd`] and [`FileKind`]: what a path or descriptor is;
//!   [`DeviceNumber`]: `major:minor` from `st_rdev`, decoded in this one place.
//! - [`Error`]: the one error type.
//!
//! Paths follow symbolic links, as `open(2)` does. Every descriptor is opened with
//! `O_CLOEXEC`, so none leaks into a child process; an `Err` never leaves one open.
//!
//! The crate's one `unsafe` block is the `TUNSETIFF` ioctl, sent only to a descriptor that
//! `fstat` shows to be the tun device (10:200).
//!
//! Linux only.
//!
//! # Example
//!
//! Open an image, refuse a FIFO without blocking on it, and read what a header says:
//!
//! ```
//! use hostdev::format::ImageFormat;
//! use hostdev::image::{Access, open_image};
//! use hostdev::{Error, FileKind};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("disk.qcow2");
//! std::fs::write(&path, b"QFI\xfb\0\0\0\x03")?;
//! let image = open_image(&path, Access::ReadOnly)?;
//! assert_eq!(image.kind(), FileKind::Regular);
//! assert_eq!(image.sniff_format()?, Some(ImageFormat::Qcow2 { version: 3 }));
//!
//! // Opening a FIFO for reading would wait for a writer; it is refused at once instead.
//! let fifo = dir.path().join("pipe");
//! nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)?;
//! match open_image(&fifo, Access::ReadOnly) {
//!     Err(Error::NotAnImage { kind: FileKind::Fifo, .. }) => {}
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(target_os = "linux"))]
compile_error!("hostdev supports Linux only (tun/tap, vhost-net and its device numbers)");

mod error;
pub mod format;
pub mod image;
mod kind;
pub mod tap;
pub mod vhost;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use crate::error::Error;
pub use crate::kind::{DeviceNumber, FileKind, classify_fd, classify_path};

/// `open(path, O_RDWR | O_CLOEXEC)` of a device node. The standard library sets
/// `O_CLOEXEC` anyway; it is spelled out because these descriptors must reach QEMU only
/// through `SCM_RIGHTS`.
fn open_read_write(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_CLOEXEC).open(path)
}
