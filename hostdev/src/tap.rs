//! Tap interfaces from `/dev/net/tun`, whose descriptors are passed to QEMU.
//!
//! A [`Tap`] holds one descriptor per queue of one tap interface. Pass them with `getfd`
//! (the `fdpass` crate sends a descriptor with the command's bytes), then name them in
//! `netdev_add`: `{"type": "tap", "id": "n0", "fd": "t0"}` for one queue, or
//! `{"type": "tap", "id": "n1", "fds": "t0:t1"}` for several.
//!
//! Every queue is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (Ethernet frames, no
//! packet-information prefix, a virtio-net header QEMU can use for offloads), plus
//! `IFF_MULTI_QUEUE` when there is more than one queue. The interface is not persistent:
//! the kernel removes it when the last descriptor of it closes, in this process or in
//! QEMU, so nothing is left behind on the host. Creating an interface needs
//! `CAP_NET_ADMIN`.
//!
//! Before asking QEMU for `"vhost": true`, see [`crate::vhost`]: QEMU 7.2 aborts (the
//! whole process, not the command) when a tap netdev wants vhost and vhost cannot start.
//!
//! The one `unsafe` block of the crate is the `TUNSETIFF` ioctl, sent only to a descriptor
//! checked to be the tun driver's; the request structure is defined here, in safe code, and
//! checked at compile time against libc's `struct ifreq`.

use std::fs::File;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::libc::{self, c_char, c_int, c_short};

use crate::{DeviceNumber, Error, FileKind, classify_fd, open_read_write};

/// The most queues one [`Tap`] takes: the kernel's `MAX_TAP_QUEUES` (`drivers/net/tun.c`),
/// the most descriptors one multi-queue tap interface can have attached.
pub const MAX_TAP_QUEUES: usize = 256;

/// The longest interface name, in bytes: the kernel's `IFNAMSIZ` less its terminating NUL.
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// The tun/tap clone device, character device [`DeviceNumber::TUN`].
const TUN_PATH: &str = "/dev/net/tun";

/// An `IFF_*` flag of `linux/if_tun.h` as the `c_short` of `ifr_flags`.
const fn tun_flag(flag: c_int) -> c_short {
    assert!(flag > 0 && flag <= c_short::MAX as c_int, "a TUNSETIFF flag fits ifr_flags");
    #[allow(clippy::cast_possible_truncation)] // in range: checked just above
    let flag = flag as c_short;
    flag
}

/// The flags of every queue.
const TAP_FLAGS: c_short =
    tun_flag(libc::IFF_TAP) | tun_flag(libc::IFF_NO_PI) | tun_flag(libc::IFF_VNET_HDR);
/// Added when there is more than one queue.
const MULTI_QUEUE: c_short = tun_flag(libc::IFF_MULTI_QUEUE);

/// `struct ifreq` as `TUNSETIFF` reads and writes it: the name, then `ifr_flags` at the
/// start of the union, then the rest of the union, unused here.
///
/// The kernel copies `sizeof(struct ifreq)` bytes in, and the same number back out (with
/// the interface name filled in), so the size must match exactly; the assertions below
/// hold it to libc's definition on every target this builds for.
#[repr(C)]
struct IfReq {
    name: [c_char; libc::IFNAMSIZ],
    flags: c_short,
    rest: [u8; IFREQ_REST],
}

/// The bytes of `struct ifreq` after `ifr_flags`.
const IFREQ_REST: usize = size_of::<libc::ifreq>() - libc::IFNAMSIZ - size_of::<c_short>();

const _: () = {
    assert!(size_of::<IfReq>() == size_of::<libc::ifreq>());
    assert!(offset_of!(IfReq, name) == offset_of!(libc::ifreq, ifr_name));
    assert!(offset_of!(IfReq, flags) == offset_of!(libc::ifreq, ifr_ifru));
};

impl IfReq {
    /// A request for the interface `name` (already checked by [`check_name`]).
    fn new(name: &str, flags: c_short) -> Self {
        let mut request = Self { name: [0; libc::IFNAMSIZ], flags, rest: [0; IFREQ_REST] };
        // `check_name` keeps the name shorter than the array, so the last byte stays NUL.
        for (slot, byte) in request.name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
            *slot = c_char::from_ne_bytes([byte]);
        }
        request
    }

    /// The name the kernel wrote back: up to the first NUL.
    fn name(&self) -> String {
        let bytes: Vec<u8> =
            self.name.iter().map(|c| c.to_ne_bytes()[0]).take_while(|&byte| byte != 0).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// One tap interface of the host and a descriptor for each of its queues.
///
/// Dropping it closes the descriptors; once QEMU's copies are closed too (or were never
/// made), the kernel removes the interface.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<OwnedFd>,
}

impl Tap {
    /// Opens the tap interface `name` with `queues` queues, creating it if it does not
    /// exist.
    ///
    /// `name` may be a template such as `"qmptap%d"`: the kernel puts the lowest free number
    /// in place of `%d`, and [`Tap::name`] tells which. It is checked before any system call:
    /// 1 to [`MAX_NAME_LEN`] bytes of printable ASCII other than `/` and `:`, not `.` or
    /// `..`, with at most one `%`, which must start `%d`. `queues` must be 1 to
    /// [`MAX_TAP_QUEUES`].
    ///
    /// Each queue is its own open of `/dev/net/tun` (`O_RDWR | O_CLOEXEC`) and its own
    /// `TUNSETIFF`; the queues after the first name the interface the first one got. With
    /// more than one queue the interface is multi-queue (`IFF_MULTI_QUEUE`); QEMU then
    /// takes all of them in one `netdev_add` (`"fds": "t0:t1:..."`).
    ///
    /// If an interface of that name exists already, the queues are attached to it: that
    /// works for a tap interface made persistent beforehand (`ip tuntap add ...`) with the
    /// same multi-queue setting and no queue attached (single-queue) or free queue slots.
    ///
    /// # Errors
    /// - [`Error::TapName`] or [`Error::TapQueues`] for arguments out of range, before any
    ///   system call.
    /// - [`Error::TapOpen`] when opening `/dev/net/tun` or the `TUNSETIFF` fails, for
    ///   example `EPERM` without `CAP_NET_ADMIN`, `EBUSY` for a single-queue interface that
    ///   is in use, `EINVAL` for a name that is not a tap interface. The queues opened
    ///   before the failure are closed, so an interface this call created is gone again.
    pub fn open(name: &str, queues: usize) -> Result<Self, Error> {
        check_name(name)?;
        if !(1..=MAX_TAP_QUEUES).contains(&queues) {
            return Err(Error::TapQueues { requested: queues, max: MAX_TAP_QUEUES });
        }
        let flags = if queues > 1 { TAP_FLAGS | MULTI_QUEUE } else { TAP_FLAGS };
        let mut tap = Self { name: name.to_owned(), queues: Vec::with_capacity(queues) };
        for queue in 0..queues {
            let (fd, name) = open_queue(&tap.name, flags).map_err(|source| Error::TapOpen {
                name: tap.name.clone(),
                queue,
                source,
            })?;
            tap.name = name;
            tap.queues.push(fd);
        }
        Ok(tap)
    }

    /// The interface name the kernel gave, e.g. `qmptap0` for the template `qmptap%d`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One descriptor per queue, in queue order; pass them to QEMU with `getfd`.
    pub fn queues(&self) -> &[OwnedFd] {
        &self.queues
    }

    /// How many queues there are (at least one).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The descriptors, one per queue in queue order; the interface lives as long as any
    /// of them (or a copy passed to QEMU) is open.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.queues
    }
}

/// The tap interface that process `pid` holds open as its descriptor `fd`: the `iff:` line
/// the kernel writes into `/proc/<pid>/fdinfo/<fd>` for a tun/tap descriptor. `None` when
/// the descriptor is open but is not an attached tap (no such line).
///
/// Reading another process's `fdinfo` needs the same user or `CAP_SYS_PTRACE`. This is how
/// a VM manager can name the tap that carries each queue of a QEMU netdev, given the
/// descriptor numbers QEMU reports (HMP `info network`, `fd=N`).
///
/// # Errors
/// [`Error::ProcRead`] when the file cannot be read (no such process or descriptor, no
/// permission).
pub fn interface_of_process_fd(pid: u32, fd: i32) -> Result<Option<String>, Error> {
    let path = Path::new("/proc").join(pid.to_string()).join("fdinfo").join(fd.to_string());
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ProcRead { path, source })?;
    Ok(interface_in_fdinfo(&text).map(str::to_owned))
}

/// The interface name of the `iff:` line of an `fdinfo` text, if it has one (a tun/tap
/// descriptor attached to an interface).
///
/// ```
/// let fdinfo = "pos:\t0\nflags:\t0104002\nmnt_id:\t25\nino:\t1053\niff:\tqmptap0\n";
/// assert_eq!(hostdev::tap::interface_in_fdinfo(fdinfo), Some("qmptap0"));
/// assert_eq!(hostdev::tap::interface_in_fdinfo("pos:\t0\n"), None);
/// ```
pub fn interface_in_fdinfo(fdinfo: &str) -> Option<&str> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("iff:"))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// Opens `/dev/net/tun` and attaches the descriptor to the interface `name`; returns it and
/// the interface's name as the kernel wrote it back.
fn open_queue(name: &str, flags: c_short) -> io::Result<(OwnedFd, String)> {
    let tun = open_read_write(Path::new(TUN_PATH))?;
    let mut request = IfReq::new(name, flags);
    tun_set_iff(&tun, &mut request)?;
    Ok((OwnedFd::from(tun), request.name()))
}

/// `ioctl(TUNSETIFF)`: attaches the tun descriptor `tun` to the interface that `request`
/// names, creating it if need be, and writes the interface's name back into `request`.
///
/// First checks that `tun` is the tun driver's (character device 10:200): another driver
/// could read that request number differently. The check is an `fstat` of the open
/// descriptor itself, so a device node swapped after the `open` does not matter.
#[allow(unsafe_code)]
fn tun_set_iff(tun: &File, request: &mut IfReq) -> io::Result<()> {
    let kind = classify_fd(tun).map_err(io::Error::from)?;
    if kind != FileKind::CharDevice(DeviceNumber::TUN) {
        let what = format!("{TUN_PATH} is {kind}, not the tun device (character device 10:200)");
        return Err(io::Error::new(io::ErrorKind::InvalidData, what));
    }
    let request: *mut IfReq = request;
    // SAFETY: `tun` is an open descriptor of the tun driver (checked just above on the
    // descriptor itself), borrowed for the call. TUNSETIFF there reads a `struct ifreq`
    // from the pointer and, on success, writes one back (`__tun_chr_ioctl`:
    // `copy_from_user`, then `copy_to_user`, each of `sizeof(struct ifreq)` bytes).
    // `request` comes from a `&mut IfReq`, so it is valid for reads and writes of
    // `size_of::<IfReq>()` bytes, which the assertions above hold equal to
    // `size_of::<libc::ifreq>()`, and no other reference to it exists during the call.
    // Every field is plain bytes or integers, so whatever the kernel writes is a valid
    // `IfReq`. The call neither takes nor closes the descriptor.
    let result = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, request) };
    Errno::result(result).map(drop).map_err(io::Error::from)
}

/// Checks `name` the way the kernel's `dev_valid_name` and `dev_alloc_name` would, a bit
/// more strictly (printable ASCII only), so a bad name is a typed error, not `EINVAL`.
fn check_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty (a template such as \"tap%d\" lets the kernel pick a number)")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 15 bytes (IFNAMSIZ is 16, with the NUL)")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not interface names")
    } else if !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':') {
        Some("it may only hold printable ASCII without spaces, '/' or ':'")
    } else if name.match_indices('%').any(|(at, _)| !name[at..].starts_with("%d"))
        || name.matches('%').count() > 1
    {
        Some("a '%' must start the one \"%d\" of a template")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::TapName { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let request = IfReq::new("qmptap%d", TAP_FLAGS);
        assert_eq!(request.name(), "qmptap%d");
        assert_eq!(size_of::<IfReq>(), 40, "x86_64 and aarch64 struct ifreq");
        let full = IfReq::new("abcdefghijklmno", TAP_FLAGS);
        assert_eq!(full.name(), "abcdefghijklmno");
        assert_eq!(full.name[MAX_NAME_LEN], 0);
        assert_eq!(TAP_FLAGS, 0x5002);
        assert_eq!(MULTI_QUEUE, 0x0100);
        // TUNSETIFF is _IOW('T', 202, int): fixed by the kernel ABI.
        assert_eq!(libc::TUNSETIFF, 0x4004_54ca);
    }

    /// TUNSETIFF only ever goes to the tun driver: other files are refused before the ioctl.
    #[test]
    fn tunsetiff_refuses_other_files() {
        let exe = std::env::current_exe().unwrap();
        for file in [open_read_write(Path::new("/dev/null")).unwrap(), File::open(exe).unwrap()] {
            let mut request = IfReq::new("qmpnot%d", TAP_FLAGS);
            let error = tun_set_iff(&file, &mut request).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
            assert_eq!(request.name(), "qmpnot%d", "untouched");
        }
    }

    #[test]
    fn names() {
        for good in ["t", "qmptap%d", "%d", "abcdefghijklmno", "a.b-c_d", ".a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "abcdefghijklmnop";
        for bad in ["", long, ".", "..", "a b", "a/b", "a:b", "a\0b", "é", "a%", "a%s", "%d%d"] {
            let err = check_name(bad).unwrap_err();
            assert!(matches!(err, Error::TapName { ref name, .. } if name == bad), "{bad}");
        }
    }
}
