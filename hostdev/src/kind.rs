//! What a path or a descriptor is (regular file, block device, FIFO, ...), and device
//! numbers: the one place that reads `st_mode` and `st_rdev`.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::stat::{self, FileStat, SFlag};

use crate::Error;

/// A device number, `major:minor`, as the kernel names a block or character device.
///
/// Built from `st_rdev` by [`DeviceNumber::from_rdev`], which decodes it with the C
/// library's `major()`/`minor()` (through nix), so no bit layout is spelled out here.
///
/// ```
/// use hostdev::DeviceNumber;
/// let null = DeviceNumber::new(1, 3);
/// assert_eq!(DeviceNumber::from_rdev(null.rdev()), null);
/// assert_eq!(DeviceNumber::TUN.to_string(), "10:200");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceNumber {
    major: u64,
    minor: u64,
}

impl DeviceNumber {
    /// The tun/tap clone device `/dev/net/tun`: misc 10:200 (`TUN_MINOR`).
    pub const TUN: Self = Self::new(10, 200);
    /// The vhost-net device `/dev/vhost-net`: misc 10:238 (`VHOST_NET_MINOR`).
    pub const VHOST_NET: Self = Self::new(10, 238);

    /// The device `major:minor`.
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    /// Decodes `st_rdev` (or `st_dev`) as the kernel encodes it.
    pub const fn from_rdev(rdev: u64) -> Self {
        Self::new(stat::major(rdev), stat::minor(rdev))
    }

    /// The major number: which driver.
    pub const fn major(self) -> u64 {
        self.major
    }

    /// The minor number: which device of that driver.
    pub const fn minor(self) -> u64 {
        self.minor
    }

    /// Encodes it the way `st_rdev` holds it (`makedev`), e.g. for `mknod`.
    pub const fn rdev(self) -> u64 {
        stat::makedev(self.major, self.minor)
    }
}

impl fmt::Display for DeviceNumber {
    /// `major:minor`, as `ls -l` and `/proc/devices` write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What kind of file a path or descriptor is, with the device number of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file: can be a disk image.
    Regular,
    /// A block device: can be a disk image (QEMU's `host_device` driver reads it).
    BlockDevice(DeviceNumber),
    /// A character device, such as `/dev/null`, `/dev/net/tun` or `/dev/vhost-net`.
    CharDevice(DeviceNumber),
    /// A FIFO (named pipe): opening one for reading blocks until a writer comes.
    Fifo,
    /// A directory.
    Directory,
    /// A unix socket.
    Socket,
    /// A symbolic link itself: only a descriptor opened with `O_PATH | O_NOFOLLOW` on a
    /// link is one, since [`classify_path`] follows links.
    Symlink,
}

impl FileKind {
    /// `true` for the kinds that can hold a disk image: a regular file or a block device.
    pub fn is_image(self) -> bool {
        matches!(self, Self::Regular | Self::BlockDevice(_))
    }

    /// The kind `stat` reports, from its `st_mode` and `st_rdev`.
    fn from_stat(stat: &FileStat) -> Result<Self, Error> {
        let device = DeviceNumber::from_rdev(stat.st_rdev);
        let kind = match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Self::Regular,
            SFlag::S_IFBLK => Self::BlockDevice(device),
            SFlag::S_IFCHR => Self::CharDevice(device),
            SFlag::S_IFIFO => Self::Fifo,
            SFlag::S_IFDIR => Self::Directory,
            SFlag::S_IFSOCK => Self::Socket,
            SFlag::S_IFLNK => Self::Symlink,
            _ => return Err(Error::UnknownFileType { mode: stat.st_mode }),
        };
        Ok(kind)
    }
}

impl fmt::Display for FileKind {
    /// A phrase for messages: `a regular file`, `block device 7:0`, `a FIFO`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Regular => f.write_str("a regular file"),
            Self::BlockDevice(device) => write!(f, "block device {device}"),
            Self::CharDevice(device) => write!(f, "character device {device}"),
            Self::Fifo => f.write_str("a FIFO (named pipe)"),
            Self::Directory => f.write_str("a directory"),
            Self::Socket => f.write_str("a unix socket"),
            Self::Symlink => f.write_str("a symbolic link"),
        }
    }
}

/// What `path` is, by `stat(2)`: symbolic links are followed, as `open(2)` would, so a
/// link to a disk (`/dev/disk/by-id/...`) is the block device it points to.
///
/// Nothing is opened, so a FIFO or a device is looked at without side effects.
///
/// # Errors
/// [`Error::Stat`] when `stat` fails (a missing path, a dangling link, no permission).
pub fn classify_path(path: &Path) -> Result<FileKind, Error> {
    let stat = stat::stat(path)
        .map_err(|errno| Error::Stat { path: path.to_owned(), source: io::Error::from(errno) })?;
    FileKind::from_stat(&stat)
}

/// What the open descriptor `fd` is, by `fstat(2)`: the file itself, whatever name it was
/// opened by, so a path swapped after the open does not matter.
///
/// # Errors
/// [`Error::Fstat`] when `fstat` fails.
pub fn classify_fd(fd: impl AsFd) -> Result<FileKind, Error> {
    let stat = stat::fstat(fd.as_fd()).map_err(|errno| Error::Fstat(io::Error::from(errno)))?;
    FileKind::from_stat(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_through_rdev() {
        // Linux's encoding: the minor's low byte, the major from bit 8, then the high bits
        // of both above bit 32; the libc decoder must agree with the kernel's numbers.
        for (major, minor) in [(1, 3), (7, 0), (10, 200), (10, 238), (259, 65_536), (4095, 255)] {
            let device = DeviceNumber::new(major, minor);
            assert_eq!(DeviceNumber::from_rdev(device.rdev()), device);
        }
        assert_eq!(DeviceNumber::TUN.rdev(), 0x0a_c8, "new_encode_dev(10, 200)");
        assert_eq!(DeviceNumber::VHOST_NET.rdev(), 0x0a_ee);
        assert_eq!(DeviceNumber::from_rdev(0x0a_ee), DeviceNumber::new(10, 238));
    }

    #[test]
    fn only_regular_files_and_block_devices_are_images() {
        let device = DeviceNumber::new(7, 0);
        assert!(FileKind::Regular.is_image());
        assert!(FileKind::BlockDevice(device).is_image());
        for kind in [
            FileKind::CharDevice(device),
            FileKind::Fifo,
            FileKind::Directory,
            FileKind::Socket,
            FileKind::Symlink,
        ] {
            assert!(!kind.is_image(), "{kind}");
        }
        assert_eq!(FileKind::BlockDevice(device).to_string(), "block device 7:0");
    }

    #[test]
    fn dev_null_is_a_character_device_by_path_and_by_descriptor() {
        let expected = FileKind::CharDevice(DeviceNumber::new(1, 3));
        assert_eq!(classify_path(Path::new("/dev/null")).unwrap(), expected);
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(classify_fd(&null).unwrap(), expected);
    }

    #[test]
    fn a_missing_path_is_a_stat_error_naming_it() {
        let error = classify_path(Path::new("/nonexistent/hostdev")).unwrap_err();
        assert!(
            matches!(&error, Error::Stat { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(error.to_string().contains("/nonexistent/hostdev"), "{error}");
    }
}
