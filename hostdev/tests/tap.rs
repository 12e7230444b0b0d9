//! `hostdev::tap` and `hostdev::vhost` on the host: tap interfaces appear in `/sys/class/net` with the flags asked
//! for and vanish with their last descriptor; bad arguments are typed errors; the vhost-net
//! probe agrees with a plain open. Then against a real QEMU: tap descriptors passed with
//! `getfd` (through the project's blocking QMP client) make working `netdev_add` backends,
//! single- and multi-queue (skipped when QEMU is missing, unless `QMP_REQUIRE_QEMU=1`).
//!
//! Creating tap interfaces needs `CAP_NET_ADMIN` and `/dev/net/tun`; these tests expect both.
//! Each test uses its own name prefix, so tests running in parallel never share an interface.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostdev::Error;
use hostdev::tap::{MAX_TAP_QUEUES, Tap, interface_of_process_fd};
use hostdev::vhost::{open_vhost_net, vhost_net_usable};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use qmp_client::blocking::Client;
use serde_json::json;

/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, as `tun_flags` in sysfs shows them.
const TAP_FLAGS: u32 = 0x0002 | 0x1000 | 0x4000;
/// `IFF_MULTI_QUEUE`.
const MULTI_QUEUE: u32 = 0x0100;

fn sys_net(name: &str) -> PathBuf {
    PathBuf::from("/sys/class/net").join(name)
}

/// The interfaces whose names start with `prefix`.
fn interfaces(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("read /sys/class/net")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// `/sys/class/net/<name>/tun_flags`, e.g. `0x5002`.
fn tun_flags(name: &str) -> u32 {
    let text = std::fs::read_to_string(sys_net(name).join("tun_flags")).expect("read tun_flags");
    let hex = text.trim().trim_start_matches("0x");
    u32::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("tun_flags {text:?}"))
}

/// How many transmit queues the interface has: one per attached tap queue.
fn tx_queues(name: &str) -> usize {
    std::fs::read_dir(sys_net(name).join("queues"))
        .expect("read the queues directory")
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with("tx-"))
        .count()
}

/// Waits until the interface is gone. The kernel removes it when its last descriptor
/// closes; a child process another test forks inherits our descriptors for the moment
/// before its `exec` closes them (`O_CLOEXEC`), so allow a little time.
fn wait_gone(name: &str) {
    let start = Instant::now();
    while sys_net(name).exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "{name} is still there");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap()).contains(FdFlag::FD_CLOEXEC)
}

fn errno(error: &io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(error.raw_os_error().expect("an OS error"))
}

#[test]
fn single_queue_tap_lives_as_long_as_its_descriptor() {
    let before = interfaces("qmpsq");
    let tap = Tap::open("qmpsq%d", 1).expect("open a tap (needs CAP_NET_ADMIN)");
    let name = tap.name().to_owned();
    assert!(name.starts_with("qmpsq") && !name.contains('%'), "{name}");
    assert!(!before.contains(&name));
    assert_eq!(tap.queue_count(), 1);
    assert_eq!(tap.queues().len(), 1);
    assert!(is_cloexec(tap.queues()[0].as_fd()));

    assert!(sys_net(&name).exists(), "no /sys/class/net/{name}");
    assert_eq!(tun_flags(&name), TAP_FLAGS, "{name}: tap, no packet info, vnet header");
    // ARPHRD_ETHER: a tap, not a tun.
    assert_eq!(std::fs::read_to_string(sys_net(&name).join("type")).unwrap().trim(), "1");

    drop(tap);
    wait_gone(&name);
}

#[test]
fn multi_queue_tap_is_one_interface_with_a_descriptor_per_queue() {
    let before = interfaces("qmpmq");
    let tap = Tap::open("qmpmq%d", 4).expect("open a multi-queue tap");
    let name = tap.name().to_owned();
    let created: BTreeSet<String> = interfaces("qmpmq").difference(&before).cloned().collect();
    assert_eq!(created, BTreeSet::from([name.clone()]), "exactly one new interface");

    assert_eq!(tap.queue_count(), 4);
    let numbers: BTreeSet<i32> = tap.queues().iter().map(AsRawFd::as_raw_fd).collect();
    assert_eq!(numbers.len(), 4, "distinct descriptors: {numbers:?}");
    assert!(tap.queues().iter().all(|fd| is_cloexec(fd.as_fd())));
    assert_eq!(tun_flags(&name), TAP_FLAGS | MULTI_QUEUE);
    assert_eq!(tx_queues(&name), 4, "every queue attached to the same interface");

    // The interface lives while any queue is open.
    let mut fds = tap.into_fds();
    assert_eq!(fds.len(), 4);
    fds.truncate(1);
    let start = Instant::now();
    while tx_queues(&name) != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "{} queues", tx_queues(&name));
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(fds);
    wait_gone(&name);
}

#[test]
fn a_fixed_name_is_kept_and_a_busy_interface_is_a_typed_error() {
    // Unique per process, so parallel runs of this suite do not collide; at most 15 bytes.
    let wanted = format!("qmpfx{}", std::process::id() % 10_000_000);
    let tap = Tap::open(&wanted, 1).expect("open a tap by name");
    assert_eq!(tap.name(), wanted);

    // A single-queue tap takes one descriptor: a second open is EBUSY.
    let busy = Tap::open(&wanted, 1).unwrap_err();
    match &busy {
        Error::TapOpen { name, queue: 0, source } => {
            assert_eq!(name, &wanted);
            assert_eq!(errno(source), nix::errno::Errno::EBUSY, "{busy}");
        }
        other => panic!("expected TapOpen, got {other:?}"),
    }
    // Asking for queues on it is a mismatch of IFF_MULTI_QUEUE: EINVAL.
    let mismatch = Tap::open(&wanted, 2).unwrap_err();
    assert!(
        matches!(&mismatch, Error::TapOpen { queue: 0, source, .. }
            if errno(source) == nix::errno::Errno::EINVAL),
        "{mismatch:?}"
    );
    // The failed opens did not disturb the interface, nor did they leave anything behind.
    assert_eq!(tun_flags(&wanted), TAP_FLAGS);
    assert_eq!(interfaces(&wanted), BTreeSet::from([wanted.clone()]));
    for error in [busy, mismatch] {
        let text = error.to_string();
        assert!(text.contains(&wanted) && !text.contains('\n'), "{text}");
        assert!(std::error::Error::source(&error).is_some());
    }

    drop(tap);
    wait_gone(&wanted);
}

/// A tap descriptor's fdinfo names its interface; other descriptors have no name, and a
/// descriptor that is not open is an error naming the file.
#[test]
fn fdinfo_names_the_interface_of_a_tap_descriptor() {
    let tap = Tap::open("qmpfi%d", 2).unwrap();
    let pid = std::process::id();
    for queue in tap.queues() {
        let name = interface_of_process_fd(pid, queue.as_raw_fd()).unwrap();
        assert_eq!(name.as_deref(), Some(tap.name()));
    }
    let file = tempfile::tempfile().unwrap();
    assert_eq!(interface_of_process_fd(pid, file.as_raw_fd()).unwrap(), None);
    let closed = file.as_raw_fd();
    drop(file);
    match interface_of_process_fd(pid, closed) {
        Err(error @ Error::ProcRead { .. }) => {
            assert!(error.to_string().contains(&format!("fdinfo/{closed}")), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    for name in ["", "a-name-of-16-byt", "with space", "a/b", "a:b", "nul\0", "..", "x%s", "%d%d"] {
        match Tap::open(name, 1) {
            Err(error @ Error::TapName { .. }) => {
                let text = error.to_string();
                assert!(text.starts_with("invalid tap interface name"), "{text}");
                assert!(!text.contains('\n'), "{text}");
                assert_eq!(io::Error::from(error).kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("{name:?}: expected TapName, got {other:?}"),
        }
    }
    assert_eq!(MAX_TAP_QUEUES, 256);
    for queues in [0, MAX_TAP_QUEUES + 1, usize::MAX] {
        match Tap::open("qmpbad%d", queues) {
            Err(error @ Error::TapQueues { requested, max }) => {
                assert_eq!((requested, max), (queues, MAX_TAP_QUEUES));
                assert!(!error.to_string().contains('\n'));
                assert_eq!(io::Error::from(error).kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("{queues} queues: expected TapQueues, got {other:?}"),
        }
    }
    assert!(interfaces("qmpbad").is_empty(), "a rejected call created an interface");
}

/// Not a hard-coded answer: the probe must say what an independent open of the device
/// says, and give a reason when it fails.
#[test]
fn vhost_probe_agrees_with_a_plain_open() {
    let plain = std::fs::OpenOptions::new().read(true).write(true).open("/dev/vhost-net");
    let probed = vhost_net_usable();
    let opened = open_vhost_net();
    eprintln!("/dev/vhost-net: plain open {plain:?}; probe {probed:?}");
    match (plain, probed, opened) {
        (Ok(_), Ok(()), Ok(fd)) => assert!(is_cloexec(fd.as_fd())),
        (Err(plain), Err(error @ Error::VhostNetUnavailable { .. }), Err(again)) => {
            assert!(matches!(again, Error::VhostNetUnavailable { .. }), "{again:?}");
            let Error::VhostNetUnavailable { reason, source } = &error else { unreachable!() };
            assert_eq!(source.raw_os_error(), plain.raw_os_error(), "{error}");
            match errno(&plain) {
                nix::errno::Errno::ENOENT => assert!(reason.contains("does not exist"), "{reason}"),
                nix::errno::Errno::ENODEV | nix::errno::Errno::ENXIO => {
                    assert!(reason.contains("no driver"), "{reason}");
                }
                _ => {}
            }
            let text = error.to_string();
            assert!(text.contains("QEMU aborts") && !text.contains('\n'), "{text}");
            assert_eq!(io::Error::from(error).kind(), plain.kind());
        }
        (plain, probed, opened) => {
            panic!("plain open {plain:?}, but vhost_net_usable {probed:?}, open {opened:?}")
        }
    }
}

/// `getfd` each tap queue descriptor under the matching name of `names`.
fn pass_queues(client: &mut Client, tap: &Tap, names: &[&str]) {
    assert_eq!(tap.queue_count(), names.len());
    for (fd, name) in tap.queues().iter().zip(names) {
        client.get_fd(name, fd).unwrap_or_else(|error| panic!("getfd {name}: {error}"));
    }
}

#[test]
fn qemu_takes_passed_tap_descriptors_as_netdevs() {
    let qemu = qemu_launcher::qemu_or_skip!(qemu_launcher::QemuBuilder::new().paused(true));
    let mut client = Client::connect(qemu.qmp_path()).expect("connect to QEMU");
    let netdev_add = |client: &mut Client, arguments| {
        let reply = client.execute("netdev_add", arguments);
        assert_eq!(reply.unwrap_or_else(|e| panic!("{e}: {}", qemu.stderr())), json!({}));
    };

    // One queue: "fd".
    let tap = Tap::open("qmpq%d", 1).expect("open a tap");
    let single = tap.name().to_owned();
    pass_queues(&mut client, &tap, &["tap0"]);
    netdev_add(&mut client, json!({"type": "tap", "id": "n0", "fd": "tap0"}));

    // Two queues: "fds", colon-separated.
    let tap_mq = Tap::open("qmpq%d", 2).expect("open a multi-queue tap");
    let multi = tap_mq.name().to_owned();
    assert_ne!(single, multi);
    pass_queues(&mut client, &tap_mq, &["t0", "t1"]);
    netdev_add(&mut client, json!({"type": "tap", "id": "n1", "fds": "t0:t1"}));

    let text = client.human_monitor_command("info network").unwrap();
    assert!(text.contains("n0: ") && text.contains("n1: "), "{text}");
    // QEMU's descriptor numbers (`fd=N`, one line per queue) name our interfaces in its
    // /proc fdinfo.
    let pid = qemu.pid().expect("QEMU runs");
    let carried: Vec<(String, Option<String>)> = text
        .lines()
        .filter_map(|line| {
            let (netdev, rest) = line.trim_start_matches(" \\ ").split_once(": ")?;
            let fd: i32 = rest.split(',').find_map(|f| f.strip_prefix("fd="))?.parse().ok()?;
            Some((netdev.to_owned(), interface_of_process_fd(pid, fd).unwrap()))
        })
        .collect();
    let expected = [("n0", &single), ("n1", &multi), ("n1", &multi)]
        .map(|(netdev, tap)| (netdev.to_owned(), Some(tap.clone())));
    assert_eq!(carried, expected, "{text}");

    // QEMU holds its own copies now: closing ours leaves both interfaces up...
    drop(tap);
    drop(tap_mq);
    std::thread::sleep(Duration::from_millis(100));
    assert!(sys_net(&single).exists() && sys_net(&multi).exists());
    assert_eq!(tx_queues(&multi), 2);

    // ...until netdev_del makes QEMU close them.
    for id in ["n0", "n1"] {
        assert_eq!(client.execute("netdev_del", json!({"id": id})).unwrap(), json!({}), "{id}");
    }
    wait_gone(&single);
    wait_gone(&multi);
    assert!(qemu.stderr().is_empty(), "QEMU stderr: {}", qemu.stderr());
}
