//! vhost-net: whether QEMU can use it here, opening it, and checking a descriptor said to
//! be it.
//!
//! QEMU 7.2 does not fail a `netdev_add` of a tap with `"vhost": true` when vhost cannot
//! start: it aborts the whole process (an assertion in `net_client_init1`), both when it
//! cannot open `/dev/vhost-net` itself and when a `vhostfd` is not a vhost-net device. So
//! ask [`vhost_net_usable`] before `"vhost": true`, and [`check_vhost_net`] before passing
//! a caller's descriptor as `vhostfd`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use crate::{DeviceNumber, Error, FileKind, classify_fd, open_read_write};

/// The vhost-net device, character device [`DeviceNumber::VHOST_NET`].
const VHOST_NET_PATH: &str = "/dev/vhost-net";

/// Opens `/dev/vhost-net` (`O_RDWR | O_CLOEXEC`), for QEMU's `vhostfd` or `vhostfds`.
///
/// # Errors
/// [`Error::VhostNetUnavailable`], with the reason: see [`vhost_net_usable`].
pub fn open_vhost_net() -> Result<OwnedFd, Error> {
    open_vhost_net_at(Path::new(VHOST_NET_PATH))
}

/// Whether vhost-net can be used here, i.e. `/dev/vhost-net` opens for reading and writing.
///
/// Call it before a `netdev_add` of a tap with `"vhost": true`: QEMU 7.2 does not fail that
/// command when vhost cannot start, it aborts the whole process. When this returns `Err`,
/// leave vhost off (QEMU then moves the packets itself, more slowly).
///
/// The probe only opens the device, as QEMU does first; it does not start a vhost worker.
///
/// # Errors
/// [`Error::VhostNetUnavailable`], whose reason tells the common cases apart: no device
/// node (`ENOENT`), a node but no driver behind it (`ENODEV`/`ENXIO`: the `vhost_net`
/// module is not loaded or not built), no permission (`EACCES`/`EPERM`); its source is
/// the OS error.
pub fn vhost_net_usable() -> Result<(), Error> {
    open_vhost_net().map(drop)
}

/// Checks that `fd` is an open vhost-net device (character device 10:238), by `fstat` of
/// the descriptor itself.
///
/// # Errors
/// [`Error::NotVhostNet`] saying what it is instead, or [`Error::Fstat`] when it is not an
/// open descriptor.
pub fn check_vhost_net(fd: impl AsFd) -> Result<(), Error> {
    match classify_fd(fd)? {
        FileKind::CharDevice(DeviceNumber::VHOST_NET) => Ok(()),
        kind => Err(Error::NotVhostNet { kind }),
    }
}

/// [`open_vhost_net`] of the node at `path`.
fn open_vhost_net_at(path: &Path) -> Result<OwnedFd, Error> {
    open_read_write(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::VhostNetUnavailable { reason: vhost_reason(&source), source })
}

/// Why opening `/dev/vhost-net` failed, in words.
fn vhost_reason(error: &io::Error) -> &'static str {
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT) => "/dev/vhost-net does not exist (vhost_net module not loaded?)",
        Some(Errno::ENODEV | Errno::ENXIO) => {
            "/dev/vhost-net exists but no driver serves it (vhost_net not loaded or not built)"
        }
        Some(Errno::EACCES | Errno::EPERM) => "no permission to open /dev/vhost-net read-write",
        _ => "/dev/vhost-net cannot be opened",
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use nix::sys::stat::{Mode, SFlag, mknod};

    use super::*;

    #[test]
    fn vhost_reasons() {
        let reason = |errno: Errno| vhost_reason(&io::Error::from(errno));
        assert!(reason(Errno::ENOENT).contains("does not exist"));
        assert!(reason(Errno::ENODEV).contains("no driver"));
        assert!(reason(Errno::ENXIO).contains("no driver"));
        assert!(reason(Errno::EACCES).contains("permission"));
        assert!(reason(Errno::EBUSY).contains("cannot be opened"));
    }

    /// A node made like the one a container runtime makes (misc 10:238) gives `ENODEV`
    /// when no vhost-net driver is loaded; the probe must agree with a plain open.
    #[test]
    fn vhost_probe_of_a_node_without_driver() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("vhost-net");
        let mode = Mode::from_bits_truncate(0o600);
        if let Err(errno) = mknod(&node, SFlag::S_IFCHR, mode, DeviceNumber::VHOST_NET.rdev()) {
            eprintln!("SKIPPED: cannot mknod a device node here: {errno}");
            return;
        }
        let independent = OpenOptions::new().read(true).write(true).open(&node);
        let probed = open_vhost_net_at(&node);
        match (independent, probed) {
            (Ok(_), Ok(_)) => {}
            (Err(plain), Err(Error::VhostNetUnavailable { reason, source })) => {
                assert_eq!(plain.raw_os_error(), source.raw_os_error());
                if source.raw_os_error() == Some(Errno::ENODEV as i32) {
                    assert!(reason.contains("no driver"), "{reason}");
                }
            }
            (plain, probed) => panic!("plain open {plain:?} but probe {probed:?}"),
        }
    }

    /// The check reads the descriptor's own device number: a node of 10:238 passes
    /// whatever its name, and anything else is refused, saying what it is.
    #[test]
    fn only_a_vhost_net_device_passes_the_check() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let error = check_vhost_net(&null).unwrap_err();
        assert!(
            matches!(error, Error::NotVhostNet { kind: FileKind::CharDevice(d) } if d == DeviceNumber::new(1, 3)),
            "{error:?}"
        );
        assert!(error.to_string().contains("character device 1:3"), "{error}");
        let (pipe, _) = nix::unistd::pipe().unwrap();
        assert!(matches!(check_vhost_net(&pipe), Err(Error::NotVhostNet { kind: FileKind::Fifo })));

        // An opened node of the right number passes; opening needs the driver, which
        // machines without vhost lack: then open it with O_PATH, which needs none.
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("renamed-vhost");
        let mode = Mode::from_bits_truncate(0o600);
        if let Err(errno) = mknod(&node, SFlag::S_IFCHR, mode, DeviceNumber::VHOST_NET.rdev()) {
            eprintln!("SKIPPED the positive case: cannot mknod a device node here: {errno}");
            return;
        }
        let fd = nix::fcntl::open(&node, nix::fcntl::OFlag::O_PATH, Mode::empty()).unwrap();
        check_vhost_net(&fd).unwrap();
    }
}
