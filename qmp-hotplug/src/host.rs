//! The host side of hotplug, handed to the executor: the few operations on this machine's
//! files and devices that a hot-add needs. The executor itself never opens a file or
//! looks at a descriptor; it asks its [`Host`].

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use hostdev::format::ImageFormat;
use hostdev::image::{Access, Image, ImageIdentity};

/// What the executor learns about a disk image before it touches QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageFacts {
    /// Which file it is (kept in the fdset's opaque as the proof of what QEMU holds).
    pub identity: ImageIdentity,
    /// The format its header shows, if any (never used to choose a driver).
    pub format: Option<ImageFormat>,
}

impl ImageFacts {
    /// Facts about an image.
    pub fn new(identity: ImageIdentity, format: Option<ImageFormat>) -> Self {
        Self { identity, format }
    }
}

/// What the executor asks of the machine it runs on. [`LocalHost`] does it with
/// [`hostdev`]; tests and callers with their own policy substitute another with
/// [`Hotplug::with_host`](crate::Hotplug::with_host).
///
/// A call may block (an image on a hung network file system, a slow `/proc`): the
/// executor runs the image and `/proc` calls on a blocking thread, under the operation's
/// deadline, never on the async runtime's threads. The vhost calls only open or `fstat` a
/// character device and run inline.
///
/// The provided methods do what [`LocalHost`] does, through [`hostdev`].
pub trait Host: fmt::Debug + Send + Sync {
    /// Opens the image of a [`DiskSource::Path`](crate::DiskSource::Path): read-only for a
    /// read-only disk. Anything but a regular file or a block device must be refused
    /// without blocking ([`hostdev::Error::NotAnImage`]).
    ///
    /// # Errors
    /// Why the image cannot be used.
    fn open_image(&self, path: &Path, access: Access) -> Result<Image, hostdev::Error>;

    /// Takes a caller's image descriptor (a duplicate of it), refusing anything but a
    /// regular file or a block device ([`hostdev::Error::NotAnImage`]).
    ///
    /// # Errors
    /// Why the descriptor cannot be used.
    fn adopt_image_fd(&self, fd: OwnedFd) -> Result<Image, hostdev::Error> {
        Image::from_fd(fd)
    }

    /// Which file `image` is, and what its header says.
    ///
    /// # Errors
    /// Why it cannot be looked at.
    fn inspect_image(&self, image: &Image) -> Result<ImageFacts, hostdev::Error> {
        Ok(ImageFacts::new(image.identity()?, image.sniff_format()?))
    }

    /// The tap interface that process `pid` (QEMU) holds as descriptor `fd`; `None` when
    /// it is not a tap ([`hostdev::tap::interface_of_process_fd`]).
    ///
    /// # Errors
    /// Why it cannot be read.
    fn tap_interface(&self, pid: u32, fd: i32) -> Result<Option<String>, hostdev::Error> {
        hostdev::tap::interface_of_process_fd(pid, fd)
    }

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
/// [`hostdev::vhost::check_vhost_net`], [`hostdev::vhost::vhost_net_usable`], and the
/// provided methods of [`Host`].
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
