//! Rollback and retry against a fake QEMU: a failure at every step of every operation
//! leaves nothing behind, and a retry after a lost reply completes the operation. Host
//! I/O: a FIFO image is refused without blocking, the executor asks the host it was
//! handed, and a slow host times out.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{FakeQemu, Fault};
use hostdev::FileKind;
use hostdev::image::{Access, Image};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use qmp_client::Client;
use qmp_hotplug::{DiskSource, DiskSpec, Error, Host, Hotplug, LocalHost, NicSpec, Vhost};

/// Descriptors that are not taps: the fake QEMU does not look.
fn pipe_fds(n: usize) -> Vec<OwnedFd> {
    (0..n).map(|_| std::os::unix::net::UnixStream::pair().unwrap().0.into()).collect()
}

async fn hotplug(fake: &FakeQemu) -> Hotplug {
    let client = Client::builder()
        .default_command_timeout(Some(Duration::from_millis(300)))
        .connect(fake.server.path())
        .await
        .unwrap();
    Hotplug::new(client)
}

fn nic(queues: usize) -> NicSpec {
    NicSpec { queues, ..NicSpec::new("n1") }
}

fn disk(dir: &tempfile::TempDir) -> DiskSpec {
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    DiskSpec::new("d1", DiskSource::Path(path))
}

/// Runs `add` against a fake that refuses its N-th change, for every N the operation has,
/// and checks the error names that step and QEMU is left clean.
async fn refuse_each_step<F, Fut>(changes: usize, add: F)
where
    F: Fn(Hotplug) -> Fut,
    Fut: std::future::Future<Output = Result<qmp_hotplug::DeviceId, Error>>,
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
        // getfd per queue, netdev_add, device_add
        refuse_each_step(queues + 2, |hotplug| async move {
            hotplug.add_nic(&nic(queues), &pipe_fds(queues), &[] as &[OwnedFd]).await
        })
        .await;
    }
}

#[tokio::test]
async fn a_refused_step_of_a_disk_add_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = disk(&dir);
    // add-fd, blockdev-add, remove-fd, device_add
    refuse_each_step(4, |hotplug| {
        let spec = spec.clone();
        async move { hotplug.add_disk(&spec, None).await }
    })
    .await;
}

#[tokio::test]
async fn add_then_del_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let nic_id = hotplug.add_nic(&nic(2), &pipe_fds(2), &[] as &[OwnedFd]).await.unwrap();
    let disk_id = hotplug.add_disk(&disk(&dir), None).await.unwrap();
    assert_eq!((nic_id.slot(), disk_id.slot()), (2, 3));
    {
        let state = fake.state();
        assert!(state.fd_names.is_empty(), "netdev_add consumed the tap names");
        assert_eq!(state.fdsets.get(&0).map(|set| set.0.len()), Some(0), "released to the node");
    }
    hotplug.del_nic(&nic_id.to_string(), Duration::from_secs(5)).await.unwrap();
    hotplug.del_disk(&disk_id.to_string(), Duration::from_secs(5)).await.unwrap();
    assert!(fake.state().is_clean(), "{:?}", fake.state());
    // Deleting again is a no-op, not an error.
    hotplug.del_nic(&nic_id.to_string(), Duration::from_secs(5)).await.unwrap();
}

/// QEMU did the step but the reply never came: the call fails with an unknown outcome,
/// and either the rollback cleaned up, or a retry completes the add — never a duplicate.
#[tokio::test]
async fn a_lost_reply_is_rolled_back_and_a_retry_completes() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..4 {
        let fake = FakeQemu::start(Some((n, Fault::DoButStaySilent)));
        let hotplug = hotplug(&fake).await;
        let spec = disk(&dir);
        let error = hotplug.add_disk(&spec, None).await.unwrap_err();
        assert!(error.to_string().contains("outcome is unknown"), "{error}");
        assert!(fake.state().is_clean(), "lost reply at {n}: {:?}", fake.state());
        let id = hotplug.add_disk(&spec, None).await.unwrap();
        assert_eq!(fake.state().devices.len(), 1);
        hotplug.del_disk(&id.to_string(), Duration::from_secs(5)).await.unwrap();
        assert!(fake.state().is_clean());
    }
}

#[tokio::test]
async fn wrong_descriptor_counts_and_fake_vhost_fds_are_refused_before_sending() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let error = hotplug.add_nic(&nic(2), &pipe_fds(1), &[] as &[OwnedFd]).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    let spec = NicSpec { vhost: Vhost::Fds, ..nic(1) };
    let error = hotplug.add_nic(&spec, &pipe_fds(1), &pipe_fds(1)).await.unwrap_err();
    assert!(error.to_string().contains("not /dev/vhost-net"), "{error}");
    let missing = DiskSpec::new("m", DiskSource::Path("/nonexistent/disk.img".into()));
    assert!(matches!(hotplug.add_disk(&missing, None).await, Err(Error::Open { .. })));
    assert_eq!(fake.state().changes, 0, "nothing reached QEMU");
}

#[tokio::test]
async fn a_caller_descriptor_goes_into_the_fdset_and_mismatches_are_refused() {
    let fake = FakeQemu::start(None);
    let hotplug = hotplug(&fake).await;
    let image = tempfile::tempfile().unwrap();
    let spec = DiskSpec::new("fd", DiskSource::Fd);
    let id = hotplug.add_disk(&spec, Some(image.as_fd())).await.unwrap();
    assert_eq!(fake.state().log, ["add-fd", "blockdev-add", "remove-fd", "device_add"]);
    hotplug.del_disk(&id.to_string(), Duration::from_secs(5)).await.unwrap();
    assert!(fake.state().is_clean());

    let changes = fake.state().changes;
    let error = hotplug.add_disk(&spec, None).await.unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    let error = hotplug
        .add_disk(&disk(&tempfile::tempdir().unwrap()), Some(image.as_fd()))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
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
            Err(error @ Error::Open(hostdev::Error::NotAnImage { kind: FileKind::Fifo, .. })) => {
                let text = error.to_string();
                assert!(text.contains("FIFO") && text.contains("image.fifo"), "{text}");
            }
            other => panic!("expected the FIFO to be refused, got {other:?}"),
        }
    }
    assert_eq!(changes, 0, "nothing reached QEMU");
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
    hotplug.check_nic_support(&NicSpec { vhost: Vhost::Open, ..nic(1) }).unwrap();
    let nic = hotplug.add_nic(&spec, &pipe_fds(2), &pipe_fds(2)).await.unwrap();
    assert_eq!(
        *asked.lock().unwrap(),
        ["open /nonexistent/disk.img ReadOnly", "vhost usable", "check vhost fd", "check vhost fd"]
    );
    assert_eq!(fake.state().devices.len(), 2, "{disk} and {nic} reached QEMU");
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
/// single-threaded runtime the timeout could not fire if the open ran inline.
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
}
