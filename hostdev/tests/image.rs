//! `hostdev::image` and classification on real files of every kind: a regular file, a
//! loop block device (needs root and `losetup`), a FIFO, a directory, `/dev/null`, a unix
//! socket and symbolic links. Only the first two can be images; the others are refused
//! before they are opened, so a FIFO never blocks the caller.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use hostdev::format::ImageFormat;
use hostdev::image::{Access, Image, ImageIdentity, identify, open_image};
use hostdev::{DeviceNumber, Error, FileKind, classify_fd, classify_path};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::stat::Mode;

/// How long an open may take before the test calls it hung (it takes microseconds).
const HANG: Duration = Duration::from_secs(10);

fn status_flags(fd: impl AsFd) -> OFlag {
    OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL).unwrap())
}

fn is_cloexec(fd: impl AsFd) -> bool {
    FdFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFD).unwrap())
        .contains(FdFlag::FD_CLOEXEC)
}

/// Checks an opened image's descriptor: the access mode asked for, close-on-exec, and
/// `O_NONBLOCK` cleared again.
fn assert_descriptor(image: &Image, access: Access) {
    let flags = status_flags(image);
    let mode = flags & OFlag::O_ACCMODE;
    let expected = if access == Access::ReadOnly { OFlag::O_RDONLY } else { OFlag::O_RDWR };
    assert_eq!(mode, expected, "{access:?}");
    assert!(!flags.contains(OFlag::O_NONBLOCK), "O_NONBLOCK left set: {flags:?}");
    assert!(is_cloexec(image));
}

/// `open_image(path, access)` on another thread, failing the test instead of hanging when
/// it does not return within [`HANG`]; a hung open of a FIFO is then released by opening
/// the FIFO's other end, so the thread ends too.
fn open_bounded(path: &Path, access: Access) -> Result<Image, Error> {
    let (done, result) = mpsc::channel();
    let owned = path.to_owned();
    let thread = std::thread::spawn(move || {
        let _ = done.send(open_image(&owned, access));
    });
    let Ok(opened) = result.recv_timeout(HANG) else {
        let writer = nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK, Mode::empty());
        drop(writer);
        panic!("open_image({}, {access:?}) blocked for {HANG:?}", path.display());
    };
    thread.join().unwrap();
    opened
}

fn assert_refused(path: &Path, expected: FileKind) {
    assert_eq!(classify_path(path).unwrap(), expected, "{}", path.display());
    for access in [Access::ReadOnly, Access::ReadWrite] {
        match open_bounded(path, access) {
            Err(error @ Error::NotAnImage { .. }) => {
                let Error::NotAnImage { path: Some(refused), kind } = &error else {
                    panic!("{error:?}")
                };
                assert_eq!((refused.as_path(), *kind), (path, expected));
                let text = error.to_string();
                assert!(text.contains(&expected.to_string()), "{text}");
                assert!(text.contains(&path.display().to_string()), "{text}");
                let io = std::io::Error::from(error);
                assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
            }
            other => panic!("{} ({expected}) {access:?}: {other:?}", path.display()),
        }
    }
}

#[test]
fn a_regular_file_opens_both_ways_and_its_header_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.qcow2");
    let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
    header.resize(1 << 16, 0);
    std::fs::write(&path, &header).unwrap();
    assert_eq!(classify_path(&path).unwrap(), FileKind::Regular);
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let image = open_image(&path, access).unwrap();
        assert_eq!(image.kind(), FileKind::Regular);
        assert!(!image.is_block_device());
        assert_eq!(image.path(), Some(path.as_path()));
        assert_descriptor(&image, access);
        assert_eq!(image.sniff_format().unwrap(), Some(ImageFormat::Qcow2 { version: 3 }));
        assert_eq!(classify_fd(&image).unwrap(), FileKind::Regular);
    }
    assert_eq!(Access::from_read_only(true), Access::ReadOnly);
    assert_eq!(Access::from_read_only(false), Access::ReadWrite);
}

/// The regression this crate exists for: opening a FIFO for reading blocks until a writer
/// comes (`disk add --image FIFO --read-only` hung QEMU's monitor with it). Both modes are
/// refused at once, by `stat`, before any open.
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    assert_refused(&fifo, FileKind::Fifo);
}

#[test]
fn a_directory_a_character_device_and_a_socket_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(dir.path(), FileKind::Directory);
    assert_refused(Path::new("/dev/null"), FileKind::CharDevice(DeviceNumber::new(1, 3)));
    let socket = dir.path().join("sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    assert_refused(&socket, FileKind::Socket);
}

/// A path follows its links, as `open(2)` does; a descriptor of the link itself
/// (`O_PATH | O_NOFOLLOW`) is a link; a dangling link cannot be opened.
#[test]
fn symbolic_links_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("disk.raw");
    std::fs::write(&target, [0; 512]).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(classify_path(&link).unwrap(), FileKind::Regular);
    let image = open_image(&link, Access::ReadWrite).unwrap();
    assert_eq!(image.sniff_format().unwrap(), None, "zeros: raw");

    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
    let link_itself = nix::fcntl::open(&link, flags, Mode::empty()).unwrap();
    assert_eq!(classify_fd(&link_itself).unwrap(), FileKind::Symlink);

    let to_a_fifo = dir.path().join("to-fifo");
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    std::os::unix::fs::symlink(&fifo, &to_a_fifo).unwrap();
    assert_refused(&to_a_fifo, FileKind::Fifo);

    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
    match open_image(&dangling, Access::ReadOnly) {
        Err(error @ Error::ImageOpen { .. }) => {
            let text = error.to_string();
            assert!(
                text.starts_with("cannot open disk image") && text.contains("dangling"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A caller's descriptor is checked by `fstat`: a pipe is refused, a file is taken.
#[test]
fn descriptors_are_classified_by_fstat() {
    let (read_end, _write_end) = nix::unistd::pipe().unwrap();
    match Image::from_fd(read_end) {
        Err(Error::NotAnImage { path: None, kind: FileKind::Fifo }) => {}
        other => panic!("{other:?}"),
    }
    let file = tempfile::tempfile().unwrap();
    let image = Image::from_fd(file).unwrap();
    assert_eq!((image.kind(), image.path()), (FileKind::Regular, None));
    let fd: OwnedFd = image.into_fd();
    assert_eq!(classify_fd(&fd).unwrap(), FileKind::Regular);
}

/// A loop device over a file, detached (`losetup -d`) when dropped.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(backing: &Path) -> Self {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .expect("run losetup (util-linux); loop devices need root");
        assert!(output.status.success(), "losetup: {}", String::from_utf8_lossy(&output.stderr));
        Self(PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn a_loop_block_device_is_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    let mut bytes = b"QFI\xfb\0\0\0\x02".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&backing, &bytes).unwrap();
    let device = LoopDevice::attach(&backing);

    let kind = classify_path(&device.0).unwrap();
    let FileKind::BlockDevice(number) = kind else { panic!("{}: {kind}", device.0.display()) };
    assert_eq!(number.major(), 7, "the loop driver's major");
    let expected_minor: u64 =
        device.0.to_str().unwrap().trim_start_matches("/dev/loop").parse().unwrap();
    assert_eq!(number.minor(), expected_minor);
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let image = open_image(&device.0, access).unwrap();
        assert_eq!(image.kind(), kind);
        assert!(image.is_block_device());
        assert_descriptor(&image, access);
        assert_eq!(image.sniff_format().unwrap(), Some(ImageFormat::Qcow2 { version: 2 }));
        assert_eq!(image.identity().unwrap(), ImageIdentity::BlockDevice(number));
    }
}

/// The identity tells files apart by what they are, not by name: two opens of one file
/// through a link agree, a copy differs, and a file replaced under the same name differs.
#[test]
fn identities_follow_the_file_not_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.img");
    std::fs::write(&path, [0; 512]).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let first = open_image(&path, Access::ReadOnly).unwrap().identity().unwrap();
    let via_link = open_image(&link, Access::ReadWrite).unwrap().identity().unwrap();
    assert_eq!(first, via_link);
    let ImageIdentity::File { device, inode } = first else { panic!("{first:?}") };
    let stat = nix::sys::stat::stat(&path).unwrap();
    assert_eq!((device.rdev(), inode), (stat.st_dev, stat.st_ino));

    let copy = dir.path().join("b.img");
    std::fs::copy(&path, &copy).unwrap();
    assert_ne!(open_image(&copy, Access::ReadOnly).unwrap().identity().unwrap(), first);
    let kept_open = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, [0; 512]).unwrap();
    assert_ne!(open_image(&path, Access::ReadOnly).unwrap().identity().unwrap(), first);
    assert_eq!(identify(&kept_open).unwrap(), first, "a descriptor keeps its file");

    let (read_end, _write_end) = nix::unistd::pipe().unwrap();
    assert!(matches!(
        identify(&read_end),
        Err(Error::NotAnImage { path: None, kind: FileKind::Fifo })
    ));
}
