//! Descriptor exhaustion on the host (the process at its `RLIMIT_NOFILE`): connecting and
//! opening an image fail with typed errors naming `EMFILE`, nothing panics, and everything
//! works again once descriptors are free. Its own test binary: the limit is per process.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use qemu_launcher::Qemu;
use qmp_client::Client;

/// The descriptor number the next open gets: the lowest free one.
fn lowest_free_descriptor() -> u64 {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::open("/dev/null").unwrap();
    u64::try_from(probe.as_raw_fd()).unwrap()
}

#[test]
fn at_the_descriptor_limit_connect_and_image_open_fail_typed_then_recover() {
    let Some(qemu) = Qemu::start_or_skip() else { return };
    let image = tempfile::NamedTempFile::new().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // The kernel hands out the lowest free number, and none below the limit is free.
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free_descriptor(), hard).unwrap();

    let refused = runtime.block_on(Client::connect(qemu.qmp_path()));
    let opened = hostdev::image::open_image(image.path(), hostdev::image::Access::ReadWrite);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();

    let error = refused.map(|_| ()).expect_err("no descriptor for the socket");
    assert!(matches!(error, qmp_client::Error::Io(_)), "{error:?}");
    assert!(error.to_string().contains("Too many open files"), "{error}");
    let error = opened.map(|_| ()).expect_err("no descriptor for the image");
    assert!(matches!(error, hostdev::Error::ImageOpen { .. }), "{error:?}");
    assert!(error.to_string().contains("Too many open files"), "{error}");

    let status = runtime.block_on(async {
        let client = Client::connect(qemu.qmp_path()).await.unwrap();
        client.execute("query-status", ()).await.unwrap()
    });
    assert_eq!(status["status"], "running");
}
