//! The test guest against a real QEMU: it boots, and it sees NICs and disks hot-added and
//! hot-removed over QMP. With `QMP_REQUIRE_QEMU=1` a missing QEMU or guest fails these tests.
//!
//! QMP is spoken by hand here (a unix socket and JSON lines) so that this crate stays below
//! qmp-client in the dependency graph.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use qemu_launcher::{GUEST_READY, Qemu, QemuBuilder, SerialWaitEnd, StartError, guest_or_skip};
use serde_json::{Value, json};

const STEP: Duration = Duration::from_secs(20);

/// A minimal blocking QMP client: commands with ids, events kept until asked for.
struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// A line read only partly when a read timed out; completed by the next read.
    partial: String,
    events: VecDeque<Value>,
    next_id: u64,
}

impl Qmp {
    fn connect(qemu: &Qemu) -> Self {
        let writer = UnixStream::connect(qemu.qmp_path()).unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        let mut qmp =
            Self { writer, reader, partial: String::new(), events: VecDeque::new(), next_id: 0 };
        let greeting = qmp.read(Instant::now() + STEP).unwrap().expect("no QMP greeting");
        assert!(greeting.get("QMP").is_some(), "not a greeting: {greeting}");
        qmp.execute("qmp_capabilities", &json!({})).unwrap();
        qmp
    }

    /// The next message, or `None` at the deadline.
    fn read(&mut self, deadline: Instant) -> io::Result<Option<Value>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.reader.read_line(&mut self.partial) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) if self.partial.ends_with('\n') => {
                    let message = serde_json::from_str(&self.partial)
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    self.partial.clear();
                    return Ok(Some(message));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs one command: `Ok(return)` or `Err(error)`; events that arrive meanwhile are kept.
    fn execute(&mut self, command: &str, arguments: &Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = json!({"execute": command, "arguments": arguments, "id": id}).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).unwrap();
        let deadline = Instant::now() + STEP;
        loop {
            let message =
                self.read(deadline).unwrap().unwrap_or_else(|| panic!("no reply to {command}"));
            if message.get("event").is_some() {
                self.events.push_back(message);
            } else if message["id"] == id {
                return match message.get("return") {
                    Some(value) => Ok(value.clone()),
                    None => Err(message["error"].clone()),
                };
            } else {
                panic!("unexpected reply to {command}: {message}");
            }
        }
    }

    /// Runs a command that must succeed.
    #[track_caller]
    fn ok(&mut self, command: &str, arguments: &Value) -> Value {
        self.execute(command, arguments)
            .unwrap_or_else(|e| panic!("{command} {arguments} failed: {e}"))
    }

    /// Waits for the first event (kept or new) that `matches`; the others stay kept.
    fn wait_event(&mut self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.events.iter().position(&matches) {
            return self.events.remove(i).unwrap();
        }
        let deadline = Instant::now() + timeout;
        while let Some(message) = self.read(deadline).unwrap() {
            if matches(&message) {
                return message;
            }
            self.events.push_back(message);
        }
        panic!("no matching event within {timeout:?}; kept events: {:?}", self.events);
    }
}

/// Unwraps a serial wait, printing the whole explanation on failure.
#[track_caller]
fn expect_serial<T>(found: Result<T, StartError>) -> T {
    found.unwrap_or_else(|why| panic!("{why}"))
}

#[test]
fn guest_sees_nic_and_disk_hotplug() {
    let boot = Instant::now();
    let qemu = guest_or_skip!();
    let booted = boot.elapsed();
    // Ready already (start_guest waited): the marker line and where to look for what follows.
    let ready = qemu.wait_guest_ready(Duration::ZERO).unwrap();
    assert!(ready.line.starts_with(GUEST_READY), "{ready:?}");
    eprintln!("guest started in {booted:?} (image lookup included): {}", ready.line);
    let mut qmp = Qmp::connect(&qemu);

    // NIC in slot 5.
    let t = Instant::now();
    qmp.ok("netdev_add", &json!({"type": "user", "id": "n1"}));
    qmp.ok(
        "device_add",
        &json!({"driver": "virtio-net-pci", "netdev": "n1", "id": "nic1", "addr": "0x5"}),
    );
    let nic = expect_serial(qemu.wait_for_serial_after(ready.end, "GUEST: +eth0", STEP));
    assert_eq!(nic.line, "GUEST: +eth0 pci=0000:00:05.0");
    eprintln!("+eth0 seen {:?} after device_add", t.elapsed());

    // Disk in slot 6, on a 1 MiB raw file.
    let image = qemu.dir().join("disk0.raw");
    std::fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let t = Instant::now();
    qmp.ok(
        "blockdev-add",
        &json!({"driver": "raw", "node-name": "disk0",
               "file": {"driver": "file", "filename": image.to_str().unwrap()}}),
    );
    qmp.ok(
        "device_add",
        &json!({"driver": "virtio-blk-pci", "drive": "disk0", "id": "disk0dev", "addr": "0x6"}),
    );
    let disk = expect_serial(qemu.wait_for_serial_after(ready.end, "GUEST: +vda", STEP));
    assert_eq!(disk.line, "GUEST: +vda pci=0000:00:06.0");
    eprintln!("+vda seen {:?} after device_add", t.elapsed());

    // Unplug the NIC: QEMU reports the backend first (no `device`), then the device itself.
    let t = Instant::now();
    qmp.ok("device_del", &json!({"id": "nic1"}));
    let deleted =
        qmp.wait_event(STEP, |m| m["event"] == "DEVICE_DELETED" && m["data"]["device"] == "nic1");
    assert_eq!(deleted["data"]["path"], "/machine/peripheral/nic1", "{deleted}");
    eprintln!("DEVICE_DELETED nic1 {:?} after device_del", t.elapsed());
    let gone = expect_serial(qemu.wait_for_serial_after(nic.end, "GUEST: -eth0", STEP));
    assert_eq!(gone.line, "GUEST: -eth0 pci=0000:00:05.0", "the address remembered at add time");
    qmp.ok("netdev_del", &json!({"id": "n1"}));

    // A second NIC takes the name eth0 again: only lines after the removal count.
    qmp.ok("netdev_add", &json!({"type": "user", "id": "n2"}));
    qmp.ok(
        "device_add",
        &json!({"driver": "virtio-net-pci", "netdev": "n2", "id": "nic2", "addr": "0x7"}),
    );
    let again = expect_serial(qemu.wait_for_serial_after(gone.end, "GUEST: +eth0", STEP));
    assert_eq!(again.line, "GUEST: +eth0 pci=0000:00:07.0");

    // Unplug the disk, then its node can go too.
    qmp.ok("device_del", &json!({"id": "disk0dev"}));
    qmp.wait_event(STEP, |m| m["event"] == "DEVICE_DELETED" && m["data"]["device"] == "disk0dev");
    let gone = expect_serial(qemu.wait_for_serial_after(disk.end, "GUEST: -vda", STEP));
    assert_eq!(gone.line, "GUEST: -vda pci=0000:00:06.0");
    qmp.ok("blockdev-del", &json!({"node-name": "disk0"}));

    // Every change was one line, in order, and nothing else was reported.
    let log = qemu.serial_log();
    let reports: Vec<&str> =
        log.lines().map(|l| l.trim_end_matches('\r')).filter(|l| l.starts_with("GUEST")).collect();
    assert_eq!(
        reports[1..],
        [
            "GUEST: +eth0 pci=0000:00:05.0",
            "GUEST: +vda pci=0000:00:06.0",
            "GUEST: -eth0 pci=0000:00:05.0",
            "GUEST: +eth0 pci=0000:00:07.0",
            "GUEST: -vda pci=0000:00:06.0",
        ],
        "{log}"
    );

    // A line that never comes: the error carries the log and QEMU's stderr.
    let why = qemu
        .wait_for_serial_after(ready.end, "NO-SUCH-LINE", Duration::from_millis(100))
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("NO-SUCH-LINE") && why.contains("GUEST: -vda") && why.contains("QEMU stderr"),
        "{why}"
    );
}

#[test]
fn coldplugged_devices_are_reported_before_ready_and_a_dead_guest_is_an_error() {
    let builder = QemuBuilder::new().args([
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0,id=nic0,addr=0x4",
    ]);
    let mut qemu = guest_or_skip!(builder);
    let log = qemu.serial_log();
    let nic = log.find("GUEST: +eth0 pci=0000:00:04.0").unwrap_or_else(|| panic!("{log}"));
    assert!(nic < log.find(GUEST_READY).unwrap(), "{log}");

    // Once QEMU is gone a wait fails at once instead of running into its timeout.
    qemu.kill().unwrap();
    let t = Instant::now();
    let why = qemu.wait_for_serial("never printed", STEP).unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(why.contains("QEMU exited"), "{why}");
    let why = qemu.find_serial_after(0, "never printed").unwrap_err();
    assert!(matches!(why, StartError::NoSerialLine { end: SerialWaitEnd::Exited, .. }), "{why}");
    // What was printed before stays readable.
    let ready = qemu.wait_guest_ready(STEP).unwrap();
    assert!(ready.line.starts_with(GUEST_READY), "{ready:?}");
    let found = qemu.find_serial_after(0, GUEST_READY).unwrap().expect("printed before");
    assert_eq!(found, ready);
    // Nothing after it, and nothing more can come.
    assert!(qemu.find_serial_after(found.end, GUEST_READY).is_err());
}

#[test]
fn a_paused_guest_is_not_waited_for_and_not_ready() {
    // Paused: start_guest_with returns without waiting, and the CPUs never run.
    let qemu = guest_or_skip!(QemuBuilder::new().paused(true));
    let err = qemu.wait_guest_ready(Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, StartError::GuestNotReady { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("did not print GUEST-READY") && text.contains("serial log"), "{text}");
    // Not yet, and it can still come: no error.
    assert_eq!(qemu.find_serial_after(0, GUEST_READY).unwrap(), None);
}

/// The guest's view of its block devices (`BLOCK NAME sectors=N media=0|1` lines): a SCSI
/// LUN hot-added on a virtio-scsi controller, a virtio-blk disk grown with `block_resize`,
/// and a SCSI CD-ROM whose medium is inserted and ejected.
#[test]
fn guest_reports_block_devices_sizes_and_media() {
    let qemu = guest_or_skip!(QemuBuilder::new().empty_scsi_cdrom());
    let ready = qemu.wait_guest_ready(Duration::ZERO).unwrap();
    // The empty drive was reported before GUEST-READY.
    let log = qemu.serial_log();
    assert!(log.contains("GUEST: +sr0 pci=0000:00:04.0"), "{log}");
    assert!(log.lines().any(|l| l.starts_with("BLOCK sr0 ") && l.ends_with(" media=0")), "{log}");
    let mut qmp = Qmp::connect(&qemu);
    let image = |name: &str, size: u64| {
        let path = qemu.dir().join(name);
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let raw_node = |node: &str, path: &str| json!({"driver": "raw", "node-name": node, "file": {"driver": "file", "filename": path}});

    // A LUN on the controller: no PCI slot of its own, the guest names the controller.
    qmp.ok("blockdev-add", &raw_node("sd0", &image("sd0.raw", 8 << 20)));
    qmp.ok(
        "device_add",
        &json!({"driver": "scsi-hd", "drive": "sd0", "id": "lun3", "bus": "scsi0.0",
               "scsi-id": 0, "lun": 3}),
    );
    let sda = expect_serial(qemu.wait_for_serial_after(ready.end, "GUEST: +sda", STEP));
    assert_eq!(sda.line, "GUEST: +sda pci=0000:00:04.0");
    expect_serial(qemu.wait_for_serial_after(ready.end, "BLOCK sda sectors=16384 media=1", STEP));

    // virtio-blk tells the guest about a new size at once.
    qmp.ok("blockdev-add", &raw_node("vd0", &image("vd0.raw", 4 << 20)));
    qmp.ok("device_add", &json!({"driver": "virtio-blk-pci", "drive": "vd0", "id": "vd0dev"}));
    let vda = expect_serial(qemu.wait_for_serial_after(ready.end, "BLOCK vda sectors=8192", STEP));
    qmp.ok("block_resize", &json!({"node-name": "vd0", "size": 16 << 20}));
    let grown = expect_serial(qemu.wait_for_serial_after(vda.end, "BLOCK vda ", STEP));
    assert_eq!(grown.line, "BLOCK vda sectors=32768 media=1");

    // The CD-ROM: a 2 MiB medium goes in, then out.
    let iso = image("cd.iso", 2 << 20);
    qmp.ok("blockdev-change-medium", &json!({"id": "cd0", "filename": iso, "format": "raw"}));
    let inserted = expect_serial(qemu.wait_for_serial_after(ready.end, "BLOCK sr0 ", STEP));
    assert_eq!(inserted.line, "BLOCK sr0 sectors=4096 media=1");
    qmp.ok("eject", &json!({"id": "cd0"}));
    let ejected = expect_serial(qemu.wait_for_serial_after(inserted.end, "BLOCK sr0 ", STEP));
    assert_eq!(ejected.line, "BLOCK sr0 sectors=4096 media=0");

    // Unplugging the LUN is a device_del of the LUN itself.
    qmp.ok("device_del", &json!({"id": "lun3"}));
    qmp.wait_event(STEP, |m| m["event"] == "DEVICE_DELETED" && m["data"]["device"] == "lun3");
    let gone = expect_serial(qemu.wait_for_serial_after(sda.end, "GUEST: -sda", STEP));
    assert_eq!(gone.line, "GUEST: -sda pci=0000:00:04.0");
    qmp.ok("blockdev-del", &json!({"node-name": "sd0"}));
}
