//! Disk images: a regular file or a block device, opened for QEMU without ever blocking on
//! something that is not an image.
//!
//! [`open_image`] looks at the path first (`stat`, following links) and refuses anything
//! but a regular file or a block device before opening it: opening a FIFO for reading
//! blocks until a writer comes, and opening a character device can have side effects (a
//! tape rewinds, a terminal becomes the controlling one). It then opens with `O_NONBLOCK`,
//! so a path swapped for a FIFO in between cannot block either, checks the opened file
//! again with `fstat` (what counts is the file QEMU will get), and clears `O_NONBLOCK`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;

use nix::sys::stat::fstat;

use crate::format::{HEADER_LEN, ImageFormat, read_header};
use crate::{DeviceNumber, Error, FileKind, classify_fd, classify_path};

/// How a disk image is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// `O_RDONLY`: for a read-only disk (`"read-only": true` in `blockdev-add`).
    ReadOnly,
    /// `O_RDWR`.
    ReadWrite,
}

impl Access {
    /// [`Access::ReadOnly`] when `read_only`, else [`Access::ReadWrite`].
    pub fn from_read_only(read_only: bool) -> Self {
        if read_only { Self::ReadOnly } else { Self::ReadWrite }
    }
}

/// Which image a descriptor is, as the kernel tells files apart: a regular file by its file
/// system's device and its inode number, a block device by its device number. Two opens of
/// the same file (through any path or link) have the same identity; a file replaced under
/// the same name has another.
///
/// A caller that hands an image to QEMU can record this beside it (qmp-hotplug puts it in
/// the fdset's `opaque`) and later prove which image QEMU holds.
///
/// ```
/// use hostdev::image::{Access, ImageIdentity, open_image};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("disk.img");
/// std::fs::write(&path, [0u8; 512])?;
/// let first = open_image(&path, Access::ReadOnly)?.identity()?;
/// let again = open_image(&path, Access::ReadWrite)?.identity()?;
/// assert_eq!(first, again);
/// assert!(matches!(first, ImageIdentity::File { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageIdentity {
    /// A regular file: `st_dev` and `st_ino`.
    File {
        /// The device of the file system holding it.
        device: DeviceNumber,
        /// Its inode number there.
        inode: u64,
    },
    /// A block device: its `st_rdev`.
    BlockDevice(DeviceNumber),
}

/// The identity of the image open as `fd`, by `fstat(2)`.
///
/// # Errors
/// [`Error::Fstat`], or [`Error::NotAnImage`] when `fd` is neither a regular file nor a
/// block device.
pub fn identify(fd: impl AsFd) -> Result<ImageIdentity, Error> {
    let stat = fstat(fd.as_fd()).map_err(|errno| Error::Fstat(io::Error::from(errno)))?;
    match classify_fd(fd)? {
        FileKind::Regular => Ok(ImageIdentity::File {
            device: DeviceNumber::from_rdev(stat.st_dev),
            inode: stat.st_ino,
        }),
        FileKind::BlockDevice(device) => Ok(ImageIdentity::BlockDevice(device)),
        kind => Err(Error::NotAnImage { path: None, kind }),
    }
}

/// An open disk image: a regular file or a block device, never anything else.
///
/// Pass its descriptor to QEMU (e.g. with `add-fd`); a block device needs QEMU's
/// `host_device` driver, a regular file the `file` driver, which [`Image::kind`] tells.
#[derive(Debug)]
pub struct Image {
    file: File,
    kind: FileKind,
    path: Option<PathBuf>,
}

/// Opens the disk image at `path`, read-only or read-write, with `O_CLOEXEC` and
/// `O_NOCTTY`; see the [module docs](self) for the order of checks.
///
/// # Errors
/// - [`Error::NotAnImage`] when `path` is (or, at the open, had become) a FIFO, a
///   directory, a character device or a socket; a path found to be one at the `stat` is
///   never opened.
/// - [`Error::ImageOpen`] when `stat`, `open` or clearing `O_NONBLOCK` fails (a missing
///   file, no permission, a read-only file system for [`Access::ReadWrite`], ...).
/// - [`Error::Fstat`] when the opened descriptor cannot be looked at.
pub fn open_image(path: &Path, access: Access) -> Result<Image, Error> {
    let open_error = |source| Error::ImageOpen { path: path.to_owned(), source };
    let refuse = |kind| Error::NotAnImage { path: Some(path.to_owned()), kind };
    let kind = classify_path(path).map_err(|error| match error {
        Error::Stat { source, .. } => open_error(source),
        other => other,
    })?;
    if !kind.is_image() {
        return Err(refuse(kind));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(access == Access::ReadWrite)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(open_error)?;
    let kind = classify_fd(&file)?;
    if !kind.is_image() {
        return Err(refuse(kind));
    }
    clear_nonblocking(&file).map_err(open_error)?;
    Ok(Image { file, kind, path: Some(path.to_owned()) })
}

impl Image {
    /// The same as [`open_image`].
    ///
    /// # Errors
    /// As [`open_image`].
    pub fn open(path: &Path, access: Access) -> Result<Self, Error> {
        open_image(path, access)
    }

    /// An image from a descriptor the caller opened, after checking with `fstat` that it
    /// is a regular file or a block device. Its access mode is left as it is.
    ///
    /// # Errors
    /// [`Error::NotAnImage`] (the descriptor is closed), or [`Error::Fstat`].
    pub fn from_fd(fd: impl Into<OwnedFd>) -> Result<Self, Error> {
        let file = File::from(fd.into());
        match classify_fd(&file)? {
            kind if kind.is_image() => Ok(Self { file, kind, path: None }),
            kind => Err(Error::NotAnImage { path: None, kind }),
        }
    }

    /// [`FileKind::Regular`] or [`FileKind::BlockDevice`].
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// `true` for a block device (QEMU's `host_device` driver), `false` for a regular file
    /// (the `file` driver).
    pub fn is_block_device(&self) -> bool {
        matches!(self.kind, FileKind::BlockDevice(_))
    }

    /// Which image this is ([`identify`]): the same for every open of the same file.
    ///
    /// # Errors
    /// [`Error::Fstat`].
    pub fn identity(&self) -> Result<ImageIdentity, Error> {
        identify(&self.file)
    }

    /// The path it was opened by; `None` for [`Image::from_fd`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The format its first bytes look like ([`ImageFormat::sniff`]); `None` for raw data
    /// or a format not known here. A fact about the bytes, not a choice of driver: a guest
    /// can write any header into a raw disk.
    ///
    /// Reads with `pread`, so the file offset QEMU sees stays where it was.
    ///
    /// # Errors
    /// [`Error::ReadHeader`].
    pub fn sniff_format(&self) -> Result<Option<ImageFormat>, Error> {
        let mut header = [0; HEADER_LEN];
        let len = read_header(&self.file, &mut header).map_err(Error::ReadHeader)?;
        Ok(ImageFormat::sniff(&header[..len]))
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The descriptor, to keep or pass on.
    pub fn into_fd(self) -> OwnedFd {
        self.file.into()
    }
}

impl AsFd for Image {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Clears `O_NONBLOCK`, which only served to make the `open` itself safe.
fn clear_nonblocking(file: &File) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)))?;
    Ok(())
}
