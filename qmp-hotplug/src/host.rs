//! The host side of hotplug, handed to the executor: the few operations on this machine's
//! files and devices that a hot-add needs. The executor itself never opens a file or
//! looks at a descriptor; it asks its [`Host`].

use std::fmt;
use std::os::fd::BorrowedFd;
use std::path::Path;

use hostdev::image::{Access, Image};

/// What the executor asks of the machine it runs on. [`LocalHost`] does it with
/// [`hostdev`]; tests and callers with their own policy substitute another with
/// [`Hotplug::with_host`](crate::Hotplug::with_host).
///
/// A call may block (an image on a hung network file system): the executor runs
/// [`Host::open_image`] on a blocking thread, under a deadline, never on the async runtime's
/// threads. The vhost calls only open or `fstat` a character device and run inline.
pub trait Host: fmt::Debug + Send + Sync {
    /// Opens the image of a [`DiskSource::Path`](crate::DiskSource::Path): read-only for a
    /// read-only disk. Anything but a regular file or a block device must be refused
    /// without blocking ([`hostdev::Error::NotAnImage`]).
    ///
    /// # Errors
    /// Why the image cannot be used.
    fn open_image(&self, path: &Path, access: Access) -> Result<Image, hostdev::Error>;

    /// Checks that a caller's vhost descriptor is an open `/dev/vhost-net`: QEMU 7.2 aborts
    /// on one that is not.
    ///
    /// # Errors
    /// What the descriptor is instead.
    fn check_vhost_fd(&self, fd: BorrowedFd<'_>) -> Result<(), hostdev::Error>;

    /// Whether QEMU can open `/dev/vhost-net` itself (for `"vhost": true`).
    ///
    /// # Errors
    /// Why not.
    fn vhost_net_usable(&self) -> Result<(), hostdev::Error>;
}

/// This machine, through [`hostdev`]: [`hostdev::image::open_image`],
/// [`hostdev::vhost::check_vhost_net`] and [`hostdev::vhost::vhost_net_usable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalHost;

impl Host for LocalHost {
    fn open_image(&self, path: &Path, access: Access) -> Result<Image, hostdev::Error> {
        hostdev::image::open_image(path, access)
    }

    fn check_vhost_fd(&self, fd: BorrowedFd<'_>) -> Result<(), hostdev::Error> {
        hostdev::vhost::check_vhost_net(fd)
    }

    fn vhost_net_usable(&self) -> Result<(), hostdev::Error> {
        hostdev::vhost::vhost_net_usable()
    }
}
