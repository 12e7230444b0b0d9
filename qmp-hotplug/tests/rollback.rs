//! Rollback, retry, adoption, removal checks, races, deadlines and crash recovery against
//! the model of QEMU in `common`: faults QEMU cannot be made to produce on demand (a
//! refusal at any step, a lost reply, a hang-up, a frozen monitor, another manager taking
//! a slot at the worst moment). Host I/O: a FIFO image is refused without blocking, the
//! executor asks the host it was handed, and a slow host times out.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{FakeQemu, Fault, GuestUnplug, Squat};
use hostdev::FileKind;
use hostdev::image::{Access, Image};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use qmp_client::Client;
use qmp_hotplug::{
    DiskFormat, DiskSource, DiskSpec, Error, Host, Hotplug, LeftoverPart, LocalHost, NicSpec,
    Outcome, RemoveOptions, RunState, Vhost,
};

/// Descriptors that are not taps: the fake QEMU does not look.
fn pipe_fds(n: usize) -> Vec<OwnedFd> {
    (0..n).map(|_| std::os::unix::net::UnixStream::pair().unwrap().0.into()).collect()
}

const NO_FDS: &[OwnedFd] = &[];

/// How long the tests' client waits for a reply: long enough that a loaded machine does
/// not turn a slow reply into a lost one, short enough for the lost-reply tests.
const LOST_REPLY: Duration = Duration::from_secs(1);

fn remove() -> RemoveOptions {
    RemoveOptions::new(Duration::from_secs(5))
}

async fn hotplug(fake: &FakeQemu) -> Hotplug {
    let client = Client::builder()
        .default_command_timeout(Some(LOST_REPLY))
        .connect(fake.server.path())
        .await
        .unwrap();
    Hotplug::new(client)
}

fn nic(queues: usize) -> NicSpec {
    NicSpec { queues, ..NicSpec::new("n1") }
}

fn image(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn disk(dir: &tempfile::TempDir) -> DiskSpec {
    DiskSpec::new("d1", DiskSource::Path(image(dir, "disk.img", &[0; 4096])))
}

/// Runs `add` against a fake that refuses its N-th change, for every N the operation has,
/// and checks the error names that step and QEMU is left clean.
async fn refuse_each_step<F, Fut, T>(changes: usize, add: F)
where
    F: Fn(Hotplug) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
    T: std::fmt::Debug,
{
    for n in 0..changes {
        let fake = FakeQemu::start(Some((n, Fault::Refuse)));
        let error = add(hotplug(&fake).await).await.unwrap_err();
        let state = fake.state();
        let failed = state.log[n].clone();
        assert!(
            error.failed_step().is_some_and(|step| step.starts_with(&failed)),
            "step {n}: {error} should name {failed}"
        );
        assert_eq!(error.qmp_error().map(|(_, desc)| desc), Some("injected failure"));
        assert!(state.is_clean(), "refusing step {n} ({failed}) left {state:?}");
        assert!(!error.to_string().contains("rollback incomplete"), "{error}");
    }
}

#[tokio::test]
async fn a_refused_step_of_a_nic_add_leaves_nothing() {
    for queues in [1, 3] {
        // object-add, getfd per queue, netdev_add, device_add (object-del is a tidy-up)
        refuse_each_step(queues + 3, |hotplug| async move {
            hotplug.add_nic(&nic(queues), &pipe_fds(queues), NO_FDS).await
        })
        .await;
    }
}

/// Deleting the intent marker is the last step: when QEMU refuses it, the NIC is added,
/// and the report lists the marker as left behind; `leftovers()` finds it, and the clean-up
/// removes it.
#[tokio::test]
async fn a_refused_tidy_up_is_reported_as_left_behind() {
    let fake = FakeQemu::start(Some((4, Fault::Refuse)));
    let hotplug = hotplug(&fake).await;
    let report = hotplug.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap();
    assert_eq!(report.outcome, Outcome::Added);
    assert_eq!(fake.state().log.last().map(String::as_str), Some("object-del"));
    assert_eq!(report.left_behind.len(), 1, "{report:?}");
    assert!(matches!(report.left_behind[0].part, LeftoverPart::NicIntent { .. }));
    let leftovers = hotplug.leftovers().await.unwrap();
    assert_eq!(leftovers.items, report.left_behind);
    let cleaned = hotplug.clean_leftovers(&leftovers).await.unwrap();
    assert_eq!(cleaned.removed.len(), 1, "{cleaned:?}");
    assert!(fake.state().objects.is_empty());
    assert_eq!(fake.state().devices.len(), 1, "the NIC stays");
}

#[tokio::test]
async fn a_refused_step_of_a_disk_add_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = disk(&dir);
    // add-fd, blockdev-add, device_add
    refuse_each_step(3, |hotplug| {
        let spec = spec.clone();
        async move { hotplug.add_disk(&spec, None).await }
    })
    .await;
}

#[tokio::test]
async fn add_then_del_leaves_nothing_and_a_second_del_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let nic = hotplug.add_nic(&nic(2), &pipe_fds(2), NO_FDS).await.unwrap();
    let disk = hotplug.add_disk(&disk(&dir), None).await.unwrap();
    assert_eq!((nic.id.slot(), disk.id.slot()), (2, 3));
    assert_eq!((nic.outcome, disk.outcome), (Outcome::Added, Outcome::Added));
    assert_eq!(nic.queues.len(), 2, "{nic:?}");
    assert_eq!((disk.format.as_str(), disk.protocol.as_str()), ("raw", "file"));
    {
        let state = fake.state();
        assert!(state.fd_names.is_empty(), "netdev_add consumed the tap names");
        assert!(state.objects.is_empty(), "the intent marker is gone");
        let set = &state.fdsets[&disk.fdset_id.unwrap()];
        assert_eq!(set.len(), 1, "the image stays in its fdset");
        let opaque = set[0].opaque.as_deref().unwrap();
        assert!(opaque.starts_with("qmp-rs:disk-d1-pci-3:file="), "{opaque}");
    }
    assert_eq!(hotplug.del_nic(&nic.id.to_string(), &remove()).await.unwrap(), Outcome::Removed);
    assert_eq!(hotplug.del_disk(&disk.id.to_string(), &remove()).await.unwrap(), Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state());
    let changes = fake.state().changes;
    let again = hotplug.del_nic(&nic.id.to_string(), &remove()).await.unwrap_err();
    assert!(matches!(&again, Error::NotFound { id } if *id == nic.id.to_string()), "{again}");
    let absent = hotplug.del_nic(&nic.id.to_string(), &remove().missing_ok(true)).await;
    assert_eq!(absent.unwrap(), Outcome::Absent);
    assert_eq!(fake.state().changes, changes, "nothing was sent");
}

/// QEMU did the step but the reply never came: the call fails with an unknown outcome,
/// the rollback cleans up (an fdset whose id the lost reply would have given is found by
/// its opaque), and a retry adds the disk.
#[tokio::test]
async fn a_lost_reply_is_rolled_back_and_a_retry_completes() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3 {
        let fake = FakeQemu::start(Some((n, Fault::DoButStaySilent)));
        let hotplug = hotplug(&fake).await;
        let spec = disk(&dir);
        let error = hotplug.add_disk(&spec, None).await.unwrap_err();
        assert!(error.to_string().contains("outcome is unknown"), "{error}");
        assert!(fake.state().is_clean(), "lost reply at {n}: {:?}", fake.state());
        let report = hotplug.add_disk(&spec, None).await.unwrap();
        assert_eq!(fake.state().devices.len(), 1);
        hotplug.del_disk(&report.id.to_string(), &remove()).await.unwrap();
        assert!(fake.state().is_clean());
    }
}

#[tokio::test]
async fn wrong_descriptor_counts_bad_names_and_fake_vhost_fds_are_refused_before_sending() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let error = hotplug.add_nic(&nic(2), &pipe_fds(1), NO_FDS).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    for queues in [0, 100_000] {
        let error = hotplug.add_nic(&nic(queues), &pipe_fds(1), NO_FDS).await.unwrap_err();
        assert!(matches!(error, Error::InvalidSpec(_)), "{queues}: {error}");
    }
    let bad_name = NicSpec::new("has-dash");
    let error = hotplug.add_nic(&bad_name, &pipe_fds(1), NO_FDS).await.unwrap_err();
    assert!(matches!(error, Error::InvalidName { .. }), "{error}");
    let spec = NicSpec { vhost: Vhost::Fds, ..nic(1) };
    let error = hotplug.add_nic(&spec, &pipe_fds(1), &pipe_fds(1)).await.unwrap_err();
    assert!(error.to_string().contains("not /dev/vhost-net"), "{error}");
    let missing = DiskSpec::new("m", DiskSource::Path("/nonexistent/disk.img".into()));
    assert!(matches!(hotplug.add_disk(&missing, None).await, Err(Error::Open { .. })));
    assert_eq!(fake.state().changes, 0, "nothing reached QEMU");
    assert!(fake.server.received_names().iter().all(|name| name != "query-pci"), "not even read");
}

#[tokio::test]
async fn a_caller_descriptor_goes_into_the_fdset_and_mismatches_are_refused() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let image = tempfile::tempfile().unwrap();
    let spec = DiskSpec::new("fd", DiskSource::Fd);
    let report = hotplug.add_disk(&spec, Some(image.as_fd())).await.unwrap();
    assert_eq!(fake.state().log, ["add-fd", "blockdev-add", "device_add"]);
    hotplug.del_disk(&report.id.to_string(), &remove()).await.unwrap();
    assert!(fake.state().is_clean(), "{:?}", fake.state());

    let changes = fake.state().changes;
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    let error = hotplug
        .add_disk(&disk(&tempfile::tempdir().unwrap()), Some(image.as_fd()))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    // A caller's FIFO descriptor is refused too, without reading from it.
    let (read_end, _write_end) = nix::unistd::pipe().unwrap();
    let error = hotplug.add_disk(&spec, Some(read_end.as_fd())).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSource { path: None, kind: FileKind::Fifo }), "{error}");
    assert_eq!(fake.state().changes, changes, "nothing reached QEMU");
}

/// Opening a FIFO for reading blocks until a writer comes. `add_disk --read-only` of one
/// used to do that on a runtime thread and hang there for good; now the FIFO is refused
/// at once, both ways, with a typed error, and nothing reaches QEMU. The test bounds the
/// wait itself, so a regression fails instead of hanging the suite.
#[test]
fn a_fifo_image_is_refused_at_once_and_nothing_reaches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("image.fifo");
    nix::unistd::mkfifo(&fifo, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    let (done, outcome) = mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let fake = FakeQemu::start(None);
            let hotplug = hotplug(&fake).await;
            let mut results = Vec::new();
            for read_only in [true, false] {
                let source = DiskSource::Path(path.clone());
                let spec = DiskSpec { read_only, ..DiskSpec::new("fifo", source) };
                results.push(hotplug.add_disk(&spec, None).await);
            }
            let _ = done.send((results, fake.state().changes));
        });
    });
    let Ok((results, changes)) = outcome.recv_timeout(Duration::from_secs(20)) else {
        // Let a reader stuck in open(2) go, so its thread can end, then fail.
        drop(nix::fcntl::open(&fifo, OFlag::O_WRONLY | OFlag::O_NONBLOCK, Mode::empty()));
        panic!("add_disk of a FIFO did not return within 20 s");
    };
    for result in results {
        match result {
            Err(error @ Error::InvalidSource { kind: FileKind::Fifo, .. }) => {
                let text = error.to_string();
                assert!(text.contains("FIFO") && text.contains("image.fifo"), "{text}");
            }
            other => panic!("expected the FIFO to be refused, got {other:?}"),
        }
    }
    assert_eq!(changes, 0, "nothing reached QEMU");
}

/// The header check: raw declared on a qcow2 header, qcow2 declared on raw data, both
/// refused before QEMU hears of them, with how to override; the override is honoured.
#[tokio::test]
async fn a_header_contradicting_the_format_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let mut qcow2_header = b"QFI\xfb\0\0\0\x03".to_vec();
    qcow2_header.resize(4096, 0);
    let qcow2 = image(&dir, "q.img", &qcow2_header);
    let spec = DiskSpec::new("q", DiskSource::Path(qcow2));
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert!(matches!(error, Error::FormatMismatch { declared: DiskFormat::Raw, found: Some(_) }));
    let text = error.to_string();
    assert!(text.contains("says qcow2") && text.contains("allow_format_mismatch"), "{text}");
    let raw_as_qcow2 = DiskSpec { format: DiskFormat::Qcow2, ..disk(&dir) };
    let error = hotplug.add_disk(&raw_as_qcow2, None).await.unwrap_err();
    assert!(matches!(error, Error::FormatMismatch { found: None, .. }), "{error}");
    assert_eq!(fake.state().changes, 0, "nothing reached QEMU");
    let allowed = DiskSpec { allow_format_mismatch: true, ..spec };
    let report = hotplug.add_disk(&allowed, None).await.unwrap();
    assert_eq!(report.format, "raw", "the declared format, as asked");
}

/// The same name again: the same spec is `AlreadyPresent` (nothing sent, descriptors not
/// used); any difference is a `Conflict` naming it, and QEMU is unchanged.
#[tokio::test]
async fn a_same_name_add_is_adopted_only_when_equal() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let spec = NicSpec { mac: Some("52:54:00:00:00:01".into()), ..nic(2) };
    let first = hotplug.add_nic(&spec, &pipe_fds(2), NO_FDS).await.unwrap();
    let changes = fake.state().changes;
    let again = hotplug.add_nic(&spec, &pipe_fds(2), NO_FDS).await.unwrap();
    assert_eq!((again.outcome, &again.id), (Outcome::AlreadyPresent, &first.id));
    for (different, field) in [
        (NicSpec { mac: Some("52:54:00:00:00:02".into()), ..spec.clone() }, "mac"),
        (NicSpec { queues: 1, ..spec.clone() }, "queues"),
        (NicSpec { model: "e1000".into(), queues: 1, ..spec.clone() }, "model"),
    ] {
        let taps = pipe_fds(different.queues);
        match hotplug.add_nic(&different, &taps, NO_FDS).await {
            Err(Error::Conflict { id, differences }) => {
                assert_eq!(id, first.id.to_string());
                assert_eq!(differences[0].field, field, "{differences:?}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(fake.state().changes, changes, "adoption and conflicts send nothing");

    let spec = disk(&dir);
    let added = hotplug.add_disk(&spec, None).await.unwrap();
    let again = hotplug.add_disk(&spec, None).await.unwrap();
    assert_eq!((again.outcome, again.fdset_id), (Outcome::AlreadyPresent, added.fdset_id));
    let other_image =
        DiskSpec { source: DiskSource::Path(image(&dir, "other.img", &[0; 4096])), ..spec.clone() };
    match hotplug.add_disk(&other_image, None).await {
        Err(Error::Conflict { differences, .. }) => assert_eq!(differences[0].field, "image"),
        other => panic!("{other:?}"),
    }
    let read_only = DiskSpec { read_only: true, ..spec };
    assert!(matches!(hotplug.add_disk(&read_only, None).await, Err(Error::Conflict { .. })));
}

/// Paused VM: a failed disk add's fdset stays listed (and usable) after `remove-fd`; the
/// next add of the same name, for another image, must attach that other image. It removes
/// the earlier try's set again and passes its own image in a new one.
#[tokio::test]
async fn a_paused_vms_listed_fdset_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    hotplug.client().execute("stop", ()).await.unwrap();
    let first = DiskSpec {
        format: DiskFormat::Qcow2,
        allow_format_mismatch: true,
        ..DiskSpec::new("d1", DiskSource::Path(image(&dir, "a.img", &[b'A'; 4096])))
    };
    // QEMU refuses a qcow2 node on raw data; the model does not look, so refuse it here.
    let blockdev_add = fake.state().changes + 1;
    fake.state().fault = Some((blockdev_add, Fault::Refuse));
    hotplug.add_disk(&first, None).await.unwrap_err();
    let a_identity = {
        let state = fake.state();
        assert_eq!(state.fdsets.len(), 1, "removed, but listed while paused");
        state.fdsets.values().next().unwrap()[0].identity
    };
    let leftovers = hotplug.leftovers().await.unwrap();
    assert_eq!(leftovers.run_state, RunState::Paused);
    assert!(leftovers.items.iter().all(|item| item.closes_when_running), "{leftovers:?}");

    let b = image(&dir, "b.img", &[b'B'; 4096]);
    let b_identity =
        Some(hostdev::image::open_image(&b, Access::ReadOnly).unwrap().identity().unwrap());
    let report = hotplug.add_disk(&DiskSpec::new("d1", DiskSource::Path(b)), None).await.unwrap();
    let state = fake.state();
    let node = &state.nodes[&report.node];
    assert_eq!(node.image, b_identity, "the node holds B");
    assert_ne!(node.image, a_identity);
}

/// Removal checks, none of which sends anything: the kind of the id, the kind of the
/// device under it, a missing id.
#[tokio::test]
async fn removals_check_kind_and_existence_before_sending() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let nic = hotplug.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap();
    let changes = fake.state().changes;
    let error = hotplug.del_disk(&nic.id.to_string(), &remove()).await.unwrap_err();
    assert!(matches!(error, Error::WrongKind { .. }), "{error}");
    let error = hotplug.del_nic("disk-x-pci-5", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::WrongKind { .. }), "{error}");
    let error = hotplug.del_nic("nic-never-pci-9", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error}");
    let error = hotplug.del_nic("not-ours", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidName { .. }), "{error}");
    assert_eq!(fake.state().changes, changes, "nothing was sent");
    // A NIC device hiding under a disk id: its properties give it away.
    let client = hotplug.client();
    client.execute("netdev_add", serde_json::json!({"type": "user", "id": "u1"})).await.unwrap();
    let odd = serde_json::json!({"driver": "virtio-net-pci", "id": "disk-odd-pci-7",
                                 "netdev": "u1", "addr": "0x7"});
    client.execute("device_add", odd).await.unwrap();
    let changes = fake.state().changes;
    let error = hotplug.del_disk("disk-odd-pci-7", &remove()).await.unwrap_err();
    assert!(matches!(error, Error::WrongKind { .. }), "{error}");
    assert!(error.to_string().contains("has no drive"), "{error}");
    assert_eq!(fake.state().changes, changes, "nothing was sent");
}

/// Run state: in prelaunch nothing is sent (QEMU 7.2 would wedge the device); when paused,
/// `device_del` is sent and `UnplugPending` comes back at once; after `cont` the guest lets
/// go and running the removal again finishes it.
#[tokio::test]
async fn removals_respect_the_run_state() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let nic = hotplug.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap();
    let id = nic.id.to_string();
    fake.state().status = "prelaunch";
    let changes = fake.state().changes;
    let error = hotplug.del_nic(&id, &remove()).await.unwrap_err();
    assert!(matches!(&error, Error::NotRunning { state: RunState::Prelaunch, .. }), "{error}");
    assert!(error.to_string().contains("wedges"), "{error}");
    assert_eq!(fake.state().changes, changes, "nothing sent");

    fake.state().status = "paused";
    let start = Instant::now();
    let error = hotplug.del_nic(&id, &remove()).await.unwrap_err();
    assert!(matches!(error, Error::UnplugPending { .. }), "{error}");
    assert!(start.elapsed() < Duration::from_secs(2), "returned at once");
    assert!(fake.state().netdevs.contains_key(&nic.netdev), "the backend stays");
    hotplug.client().execute("cont", ()).await.unwrap();
    assert_eq!(hotplug.del_nic(&id, &remove()).await.unwrap(), Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state());
}

/// Another manager takes the planned slot right before `device_add`: the add rolls back,
/// reads QEMU again and lands in the next slot. When it happens every time, the add gives
/// up after `MAX_ATTEMPTS` with a typed error and nothing of its own left.
#[tokio::test]
async fn a_slot_taken_meanwhile_leads_to_a_new_plan() {
    let fake = FakeQemu::start(None);
    fake.state().squat = Some(Squat::FirstDeviceAdd);
    let first = hotplug(&fake).await;
    let report = first.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap();
    assert_eq!(report.id.slot(), 3, "slot 2 was taken during the first attempt");
    assert_eq!(fake.state().devices.len(), 2);

    let fake = FakeQemu::start(None);
    fake.state().squat = Some(Squat::EveryDeviceAdd);
    let raced = hotplug(&fake).await;
    let error = raced.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap_err();
    assert!(matches!(error, Error::Raced { attempts: 3, .. }), "{error}");
    let state = fake.state();
    assert!(state.devices.keys().all(|id| id.starts_with("squatter")), "{state:?}");
    assert!(state.netdevs.is_empty() && state.fd_names.is_empty() && state.objects.is_empty());
}

/// A frozen QEMU: the add gives up when its time is over, the rollback within its own
/// budget, and the error says what it could not undo.
#[tokio::test]
async fn a_frozen_qemu_cannot_hold_the_caller_past_the_deadline() {
    let fake = FakeQemu::start(Some((2, Fault::Freeze)));
    let client = Client::connect(fake.server.path()).await.unwrap();
    let hotplug = Hotplug::new(client)
        .with_operation_timeout(Duration::from_millis(400))
        .with_rollback_budget(Duration::from_millis(300));
    let start = Instant::now();
    let error = hotplug.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(error.failed_step(), Some("netdev_add nic-n1-pci-2"), "{error}");
    let text = error.to_string();
    assert!(text.contains("outcome is unknown") && text.contains("rollback incomplete"), "{text}");
}

/// The manager's connection dies in the middle of a NIC add, after QEMU took a tap
/// descriptor by name. A new manager finds the descriptor name through the intent marker,
/// with the rest, and removes it all; nothing of ours remains.
#[tokio::test]
async fn a_crash_mid_add_leaves_parts_that_leftovers_finds_and_clean_removes() {
    for n in 0..4 {
        let fake = FakeQemu::start(Some((n, Fault::DoThenDisconnect)));
        let first = hotplug(&fake).await;
        first.add_nic(&nic(2), &pipe_fds(2), NO_FDS).await.unwrap_err();
        drop(first);
        let second = hotplug(&fake).await;
        let leftovers = second.leftovers().await.unwrap();
        {
            let state = fake.state();
            assert!(!state.objects.is_empty(), "{n}: the marker survives the disconnect");
            let names: Vec<String> = leftovers
                .items
                .iter()
                .filter_map(|item| match &item.part {
                    LeftoverPart::NicIntent { fd_names, .. } => Some(fd_names.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            for held in state.fd_names.keys() {
                assert!(names.contains(held), "{n}: {held} is findable");
            }
        }
        let cleaned = second.clean_leftovers(&leftovers).await.unwrap();
        assert!(cleaned.is_complete(), "{cleaned:?}");
        assert!(fake.state().is_clean(), "{n}: {:?}", fake.state());
        assert!(second.leftovers().await.unwrap().is_empty());
    }
}

/// A host that opens one prepared file whatever path it is asked for, accepts every
/// vhost descriptor, and records what it was asked.
#[derive(Debug, Default)]
struct RecordingHost {
    asked: Arc<Mutex<Vec<String>>>,
}

impl Host for RecordingHost {
    fn open_image(&self, path: &Path, access: Access) -> Result<Image, hostdev::Error> {
        self.asked.lock().unwrap().push(format!("open {} {access:?}", path.display()));
        Image::from_fd(tempfile::tempfile().unwrap())
    }

    fn check_vhost_fd(&self, _fd: BorrowedFd<'_>) -> Result<(), hostdev::Error> {
        self.asked.lock().unwrap().push("check vhost fd".into());
        Ok(())
    }

    fn vhost_net_usable(&self) -> Result<(), hostdev::Error> {
        self.asked.lock().unwrap().push("vhost usable".into());
        Ok(())
    }
}

/// The executor does no host I/O of its own: with another host, a path that does not
/// exist here opens, and pipes pass as vhost descriptors.
#[tokio::test]
async fn the_executor_asks_its_host_not_the_file_system() {
    let fake = FakeQemu::start(None);
    let host = RecordingHost::default();
    let asked = Arc::clone(&host.asked);
    let hotplug = hotplug(&fake).await.with_host(host);

    let missing = DiskSpec {
        read_only: true,
        ..DiskSpec::new("m", DiskSource::Path("/nonexistent/disk.img".into()))
    };
    let disk = hotplug.add_disk(&missing, None).await.unwrap();
    let spec = NicSpec { vhost: Vhost::Fds, ..nic(2) };
    hotplug.check_nic_support(&NicSpec { vhost: Vhost::Open, ..nic(1) }).await.unwrap();
    let nic = hotplug.add_nic(&spec, &pipe_fds(2), &pipe_fds(2)).await.unwrap();
    assert_eq!(
        *asked.lock().unwrap(),
        ["open /nonexistent/disk.img ReadOnly", "vhost usable", "check vhost fd", "check vhost fd"]
    );
    assert_eq!(fake.state().devices.len(), 2, "{} and {} reached QEMU", disk.id, nic.id);
}

/// A host that takes 3 s to open an image.
#[derive(Debug)]
struct SlowHost;

impl Host for SlowHost {
    fn open_image(&self, path: &Path, access: Access) -> Result<Image, hostdev::Error> {
        std::thread::sleep(Duration::from_secs(3));
        LocalHost.open_image(path, access)
    }

    fn check_vhost_fd(&self, fd: BorrowedFd<'_>) -> Result<(), hostdev::Error> {
        LocalHost.check_vhost_fd(fd)
    }

    fn vhost_net_usable(&self) -> Result<(), hostdev::Error> {
        LocalHost.vhost_net_usable()
    }
}

/// The image is opened off the runtime's threads under a deadline: on this
/// single-threaded runtime the timeout could not fire if the open ran inline. The
/// operation's own time bounds it too.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_host_times_out_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug =
        hotplug(&fake).await.with_host(SlowHost).with_host_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let error = hotplug.add_disk(&disk(&dir), None).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(2500), "took {:?}", start.elapsed());
    match &error {
        Error::HostTimeout { operation, timeout } => {
            assert!(operation.contains("disk.img"), "{operation}");
            assert_eq!(*timeout, Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("nothing was sent"), "{error}");
    assert_eq!(fake.state().changes, 0);

    let bounded = hotplug
        .with_host_timeout(Duration::from_secs(60))
        .with_operation_timeout(Duration::from_millis(300));
    let error = bounded.add_disk(&disk(&dir), None).await.unwrap_err();
    assert!(
        matches!(error, Error::HostTimeout { timeout, .. } if timeout <= Duration::from_millis(300))
    );
}

/// A paused VM, and `device_add`'s reply lost: the rollback's `device_del` cannot
/// complete until the VM runs, so the netdev it would delete next stays (the device still
/// uses it), and the error says so. (Found by the property test in `model.rs`.)
#[tokio::test]
async fn a_rollback_never_takes_the_backend_of_a_device_it_could_not_remove() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    hotplug.client().execute("stop", ()).await.unwrap();
    let device_add = fake.state().changes + 3; // object-add, getfd, netdev_add, device_add
    fake.state().fault = Some((device_add, Fault::DoButStaySilent));
    let error = hotplug.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("not attempted: device_del nic-n1-pci-2 did not complete"), "{text}");
    {
        let state = fake.state();
        assert!(state.devices["nic-n1-pci-2"].unplug_pending);
        assert!(state.netdevs.contains_key("nic-n1-pci-2"), "the NIC keeps its backend");
    }
    hotplug.client().execute("cont", ()).await.unwrap();
    let leftovers = hotplug.leftovers().await.unwrap();
    assert!(hotplug.clean_leftovers(&leftovers).await.unwrap().is_complete());
    assert!(fake.state().is_clean(), "{:?}", fake.state());
}

/// Two operations on clones of one `Hotplug` run one at a time: the second reads QEMU
/// after the first is done, so neither races the other for a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_hotplug_run_one_at_a_time() {
    let fake = FakeQemu::start(None);
    let first = hotplug(&fake).await;
    let second = first.clone();
    let (spec_a, spec_b) = (NicSpec::new("a"), NicSpec::new("b"));
    let (taps_a, taps_b) = (pipe_fds(1), pipe_fds(1));
    let (a, b) = tokio::join!(
        first.add_nic(&spec_a, &taps_a, NO_FDS),
        second.add_nic(&spec_b, &taps_b, NO_FDS),
    );
    let mut slots = [a.unwrap().id.slot(), b.unwrap().id.slot()];
    slots.sort_unstable();
    assert_eq!(slots, [2, 3]);
    let one_add = ["object-add", "getfd", "netdev_add", "device_add", "object-del"];
    assert_eq!(fake.state().log, [one_add, one_add].concat(), "not interleaved");
}

/// The same race on q35: another manager fills the planned root port right before
/// `device_add`; the add rolls back and lands in the next empty port. With the last port
/// taken too, it is refused with `NoFreePlace` and nothing of its own left. A failure in
/// any step of a disk add into a root port is undone like one on bus 0.
#[tokio::test]
async fn on_q35_a_root_port_taken_meanwhile_leads_to_the_next_port() {
    let fake = FakeQemu::start(None);
    fake.state().q35(&["rp1", "rp2"]);
    fake.state().squat = Some(Squat::FirstDeviceAdd);
    let first = hotplug(&fake).await;
    let report = first.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap();
    assert_eq!(report.id.to_string(), "nic-n1-rp2-0", "rp1 was taken during the first attempt");
    assert_eq!(fake.state().devices["squatter0"].bus, "rp1");
    let error = first.add_nic(&NicSpec::new("n2"), &pipe_fds(1), NO_FDS).await.unwrap_err();
    assert!(matches!(error, Error::NoFreePlace(_)), "{error}");
    assert!(error.to_string().contains("rp2: a root port holding nic-n1-rp2-0 at 00.0"), "{error}");
    assert_eq!(fake.state().devices.len(), 2, "nothing of n2: {:?}", fake.state());
    assert!(fake.state().netdevs.len() == 1 && fake.state().objects.is_empty());

    let dir = tempfile::tempdir().unwrap();
    for step in 0..3 {
        let fake = FakeQemu::start(Some((step, Fault::Refuse)));
        fake.state().q35(&["rp1"]);
        let hotplug = hotplug(&fake).await;
        let error = hotplug.add_disk(&disk(&dir), None).await.unwrap_err();
        assert!(matches!(error, Error::Step { .. }), "step {step}: {error}");
        assert!(fake.state().is_clean(), "step {step}: {:?}", fake.state());
    }
}

/// A NIC added with its link down: `set_link` follows `device_add`; refused, it is undone
/// with everything before it.
#[tokio::test]
async fn a_link_down_nic_is_set_after_device_add_and_undone_on_failure() {
    let spec = NicSpec { link_up: false, ..nic(1) };
    let fake = FakeQemu::start(None);
    let report = hotplug(&fake).await.add_nic(&spec, &pipe_fds(1), NO_FDS).await.unwrap();
    assert!(!fake.state().devices[&report.id.to_string()].link_up);
    assert_eq!(fake.state().log[4], "set_link");

    let fake = FakeQemu::start(Some((4, Fault::Refuse)));
    let error = hotplug(&fake).await.add_nic(&spec, &pipe_fds(1), NO_FDS).await.unwrap_err();
    assert_eq!(error.failed_step(), Some("set_link nic-n1-pci-2"), "{error}");
    assert!(fake.state().is_clean(), "{:?}", fake.state());
}

/// Found by the chaos soak (seed 20261129, step 581): a manager killed while its removal
/// waited for the guest leaves the unplug requested; the guest acknowledges it between the
/// next removal's `qom-list` and its `qom-get`. The device was listed but had no properties,
/// which read as "a virtio-blk-pci device, which has no drive" (`WrongKind`), and the disk's
/// node and fdset stayed behind. Now the inventory is read again.
#[tokio::test]
async fn a_device_that_goes_away_while_it_is_read_is_not_the_wrong_kind() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let dir = tempfile::tempdir().unwrap();
    let first = hotplug.add_disk(&disk(&dir), None).await.unwrap();
    let id = first.id.to_string();
    fake.state().vanishes_on_qom_get = Some(id.clone());
    let removed = hotplug.del_disk(&id, &remove().missing_ok(true)).await.unwrap();
    assert_eq!(removed, Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state().log);

    // Gone from QOM, but not finalized: its drive holds the node a little longer (the
    // soak's second finding, seed 20261129, step 455: `Node ... is in use`).
    let second = hotplug.add_disk(&disk(&dir), None).await.unwrap();
    let id = second.id.to_string();
    fake.state().vanishes_on_qom_get = Some(id.clone());
    fake.state().node_busy = 3;
    let removed = hotplug.del_disk(&id, &remove().missing_ok(true)).await.unwrap();
    assert_eq!(removed, Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state().log);

    let nic = hotplug.add_nic(&nic(1), &pipe_fds(1), NO_FDS).await.unwrap();
    let id = nic.id.to_string();
    fake.state().vanishes_on_qom_get = Some(id.clone());
    let removed = hotplug.del_nic(&id, &remove().missing_ok(true)).await.unwrap();
    assert_eq!(removed, Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state().log);
}

/// The guest's unplug error or a step that wraps it.
fn unplug_error(error: &Error) -> &Error {
    match error {
        Error::Step { source, .. } => source,
        other => other,
    }
}

/// `DEVICE_UNPLUG_GUEST_ERROR` (QEMU cannot be made to send it with this guest): the removal
/// fails naming the refusal, the disk and its node stay, and a later removal completes.
#[tokio::test]
async fn a_guest_that_refuses_an_unplug_keeps_the_disk_until_it_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let added = hotplug.add_disk(&disk(&dir), None).await.unwrap();
    let id = added.id.to_string();
    fake.state().guest_unplug = GuestUnplug::Refuses;
    let refused = hotplug.del_disk(&id, &remove()).await.unwrap_err();
    assert!(
        matches!(unplug_error(&refused), Error::UnplugRefused { id: refused_id } if *refused_id == id),
        "{refused:?}"
    );
    assert!(fake.state().devices.contains_key(&id));
    assert!(fake.state().nodes.contains_key(&added.node), "the block node stays");
    fake.state().guest_unplug = GuestUnplug::Releases;
    assert_eq!(hotplug.del_disk(&id, &remove()).await.unwrap(), Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state());
}

/// A guest slower than the first removal's deadline: the retry's `device_del` is refused
/// with "already in the process of unplug", which means "keep waiting", and it completes.
#[tokio::test]
async fn a_retry_while_the_guest_still_unplugs_waits_for_the_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let id = hotplug.add_disk(&disk(&dir), None).await.unwrap().id.to_string();
    fake.state().guest_unplug = GuestUnplug::Slow;
    let short = RemoveOptions::new(Duration::from_millis(300));
    let late = hotplug.del_disk(&id, &short).await.unwrap_err();
    assert!(matches!(unplug_error(&late), Error::UnplugTimeout { .. }), "{late:?}");
    assert!(fake.state().devices[&id].unplug_pending);
    assert_eq!(hotplug.del_disk(&id, &remove()).await.unwrap(), Outcome::Removed);
    assert!(fake.state().is_clean(), "{:?}", fake.state());
}
