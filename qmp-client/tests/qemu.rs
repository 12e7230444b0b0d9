//! The client against a real `qemu-system-x86_64`. With `QMP_REQUIRE_QEMU=1` a missing
//! QEMU fails these tests instead of skipping them.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use qemu_launcher::{Qemu, QemuBuilder, qemu_or_skip};
use qmp_client::{
    Client, DisconnectReason, Error, ErrorClass, EventFilter, EventItem, QemuVersion,
    ReconnectingClient, Request,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(10);

async fn connect(qemu: &Qemu) -> Client {
    Client::connect(qemu.qmp_path()).await.expect("connect to QEMU")
}

#[tokio::test]
async fn connects_negotiates_and_caches_the_commands() {
    #[derive(serde::Deserialize)]
    struct Status {
        status: String,
        running: bool,
    }
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;
    let greeting = client.greeting();
    assert!(greeting.version.qemu >= QemuVersion::new(7, 0, 0), "{:?}", greeting.version);
    assert!(client.oob_enabled(), "QEMU offers oob on a unix socket and the client takes it");
    assert_eq!(client.peer_pid(), qemu.pid(), "SO_PEERCRED names QEMU");
    let status: Status = client.execute_as("query-status", ()).await.unwrap();
    assert_eq!((status.status.as_str(), status.running), ("running", true));

    let listed: Vec<String> = client
        .execute("query-commands", ())
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(client.commands(), listed_sorted, "the cache is exactly query-commands");
    assert!(client.supports("device_add") && client.supports("human-monitor-command"));
    assert!(!client.supports("no-such-command"));
    client.refresh_commands().await.unwrap();
    assert_eq!(client.commands().len(), listed.len());
}

#[tokio::test]
async fn real_error_replies_are_typed() {
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;
    let error = client.execute("qmp_capabilities", ()).await.unwrap_err();
    assert_eq!(
        error.qmp_error(),
        Some((
            &ErrorClass::CommandNotFound,
            "Capabilities negotiation is already complete, command ignored"
        ))
    );
    // QEMU's own words for arguments it refuses: sent unchecked (with checking on, the
    // client refuses them first: tests/schema_checking.rs). QEMU serves one client at a
    // time, so this one leaves first.
    drop(client);
    let client = Client::builder().check_arguments(false).connect(qemu.qmp_path()).await.unwrap();
    let error = client.execute("query-pci", json!({"bogus": 1})).await.unwrap_err();
    assert_eq!(
        error.qmp_error(),
        Some((&ErrorClass::GenericError, "Parameter 'bogus' is unexpected"))
    );
    let error = client.execute("device_del", json!({"id": "nope"})).await.unwrap_err();
    assert_eq!(error.qmp_error(), Some((&ErrorClass::DeviceNotFound, "Device 'nope' not found")));
    assert!(matches!(&error, Error::Qmp { command, .. } if command == "device_del"));
    // The unsupported check happens before QEMU is asked.
    let error = client.execute("no-such-command", ()).await.unwrap_err();
    assert!(matches!(error, Error::CommandNotSupported { .. }), "{error}");
}

/// Checks that `value` is the reply to `command` (each has a distinct shape).
fn check_reply(command: &str, value: &Value) {
    let ok = match command {
        "query-status" => value["status"] == "running",
        "query-version" => value["qemu"]["major"].as_u64().is_some_and(|m| m >= 7),
        "query-pci" => value[0]["devices"][0]["class_info"]["desc"] == "Host bridge",
        "query-name" => value.as_object().is_some_and(|o| o.get("name").is_none()),
        "query-kvm" => value["enabled"] == false && value["present"].is_boolean(),
        "query-uuid" => value["UUID"].is_string(),
        "query-fdsets" => value.as_array().is_some_and(Vec::is_empty),
        "query-cpus-fast" => value[0]["cpu-index"] == 0,
        "query-chardev" => value[0]["label"].is_string(),
        "query-target" => value["arch"] == "x86_64",
        _ => false,
    };
    assert!(ok, "wrong reply for {command}: {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_commands_from_twenty_tasks() {
    const COMMANDS: [&str; 10] = [
        "query-status",
        "query-version",
        "query-pci",
        "query-name",
        "query-kvm",
        "query-uuid",
        "query-fdsets",
        "query-cpus-fast",
        "query-chardev",
        "query-target",
    ];
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;
    let tasks: Vec<_> = (0..20)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                let calls = (0..10).map(|n| {
                    let command = COMMANDS[(task + n) % COMMANDS.len()];
                    let client = client.clone();
                    async move { (command, client.execute(command, ()).await) }
                });
                // All ten of this task's commands in flight at once.
                for (command, result) in futures::future::join_all(calls).await {
                    check_reply(command, &result.unwrap());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = client.stats();
    assert_eq!((stats.unmatched_replies, stats.late_replies, stats.bad_frames), (0, 0, 0));
}

#[tokio::test]
async fn stop_and_cont_events_reach_two_subscribers() {
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;
    let mut everything = client.subscribe(EventFilter::all());
    let mut resumes = client.subscribe(EventFilter::names(["RESUME"]));
    client.execute("stop", ()).await.unwrap();
    client.execute("cont", ()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(PATIENCE, everything.recv()).await.unwrap() {
            Some(EventItem::Event(event)) => seen.push(event.event),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["STOP", "RESUME"]);
    let resume = resumes.wait(PATIENCE).await.unwrap();
    assert_eq!(resume.event, "RESUME");
    assert!(
        resume.timestamp.seconds > 1_600_000_000,
        "a real host timestamp: {:?}",
        resume.timestamp
    );
    assert!(resumes.try_recv().is_none(), "the STOP was filtered out");
}

/// Reads what is in the pipe now: `Some(bytes)`, `None` if the read would block (a
/// writer still holds the pipe), or `Some(empty)` at EOF (every write end is closed).
fn read_now(pipe: &std::fs::File) -> Option<Vec<u8>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut buf = Vec::new();
    match (&*pipe).read_to_end(&mut buf) {
        Ok(_) => Some(buf),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn descriptors_go_to_qemu_and_come_back_out() {
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;

    // getfd: QEMU holds the write end after we close ours, until closefd.
    let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
    let pipe_read = std::fs::File::from(pipe_read);
    client.get_fd("fd0", &pipe_write).await.unwrap();
    drop(pipe_write);
    assert_eq!(read_now(&pipe_read), None, "QEMU holds the passed write end");
    client.close_fd("fd0").await.unwrap();
    assert_eq!(read_now(&pipe_read), Some(Vec::new()), "closefd closed QEMU's copy");
    let error = client.close_fd("fd0").await.unwrap_err();
    assert_eq!(error.qmp_error().map(|(c, _)| c), Some(&ErrorClass::GenericError));

    // add-fd: a new fdset, visible in query-fdsets, gone after remove-fd (the VM runs).
    let (_read, write) = nix::unistd::pipe().unwrap();
    let added = client.add_fd(write.as_fd(), None, Some("disk0.raw")).await.unwrap();
    let sets = client.query_fdsets().await.unwrap();
    let set = sets.iter().find(|s| s.fdset_id == added.fdset_id).expect("the new fdset is listed");
    assert_eq!(set.fds.len(), 1);
    assert_eq!((set.fds[0].fd, set.fds[0].opaque.as_deref()), (added.fd, Some("disk0.raw")));
    let second = client.add_fd(write.as_fd(), Some(added.fdset_id), None).await.unwrap();
    assert_eq!(second.fdset_id, added.fdset_id);
    assert_eq!(client.query_fdsets().await.unwrap()[0].fds.len(), 2);
    client.remove_fd(added.fdset_id, Some(second.fd)).await.unwrap();
    assert_eq!(client.query_fdsets().await.unwrap()[0].fds.len(), 1);
    client.remove_fd(added.fdset_id, None).await.unwrap();
    assert!(client.query_fdsets().await.unwrap().is_empty(), "remove-fd emptied the fdset");
    let error = client.remove_fd(42, None).await.unwrap_err();
    assert!(error.qmp_error().is_some_and(|(_, desc)| desc.contains("fdset-id:42")), "{error}");

    // QEMU's own error when the descriptor is missing, seen through a plain execute.
    let error = client.execute("getfd", json!({"fdname": "nofd"})).await.unwrap_err();
    assert_eq!(
        error.qmp_error().map(|(_, d)| d),
        Some("No file descriptor supplied via SCM_RIGHTS")
    );
}

#[tokio::test]
async fn human_monitor_commands() {
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;
    let version = client.human_monitor_command("info version").await.unwrap();
    assert!(version.starts_with(&client.greeting().version.qemu.to_string()), "{version:?}");
    let pci = client.human_monitor_command("info pci").await.unwrap();
    assert!(pci.contains("Host bridge"), "{pci}");
    // HMP errors are text in a successful reply.
    let error = client.human_monitor_command("no_such_hmp").await.unwrap();
    assert_eq!(error, "unknown command: 'no_such_hmp'\r\n");
}

#[tokio::test]
async fn exec_oob_reaches_qemus_out_of_band_dispatcher() {
    let qemu = qemu_or_skip!();
    let client = connect(&qemu).await;
    // migrate-pause is allowed out-of-band; QEMU accepts it as such and then refuses it
    // for the migration state, which proves the exec-oob path end to end.
    let error = client.execute_oob("migrate-pause", ()).await.unwrap_err();
    assert!(error.qmp_error().is_some_and(|(_, d)| d.contains("postcopy-active")), "{error}");
    let error = client.execute_oob("query-status", ()).await.unwrap_err();
    assert_eq!(
        error.qmp_error().map(|(_, d)| d),
        Some("The command query-status does not support OOB")
    );
}

#[tokio::test]
async fn a_timeout_against_a_frozen_qemu_leaves_the_connection_in_sync() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let client = connect(&qemu).await;
    // Loaded before the freeze, so a checked first command does not wait for it.
    client.schema().await.unwrap();
    qemu.freeze().unwrap();
    let request = Request::new("query-status").timeout(Duration::from_millis(200));
    let error = client.call(request).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    qemu.resume().unwrap();
    // QEMU answers the timed-out command late; that reply must not be taken for this one.
    let version = client.execute("query-version", ()).await.unwrap();
    assert!(version["qemu"]["major"].is_u64(), "{version}");
    assert_eq!(client.stats().late_replies, 1);
}

#[tokio::test]
async fn killing_qemu_fails_ten_commands_in_flight_within_a_second() {
    let mut qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let client = connect(&qemu).await;
    // Loaded before the freeze, so checked commands do not wait for it.
    client.schema().await.unwrap();
    qemu.freeze().unwrap();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.execute("query-status", ()).await })
        })
        .collect();
    while client.in_flight() < 10 {
        tokio::task::yield_now().await;
    }
    qemu.kill().unwrap();
    let all = futures::future::join_all(calls);
    let results = tokio::time::timeout(Duration::from_secs(1), all)
        .await
        .expect("commands in flight must fail within a second of QEMU's death");
    for result in results {
        let error = result.unwrap().unwrap_err();
        assert!(error.is_disconnected(), "{error}");
    }
    assert!(client.execute("query-status", ()).await.unwrap_err().is_disconnected());
}

#[tokio::test]
async fn reconnects_after_the_monitor_went_away_and_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.qmp");
    let mut first = qemu_or_skip!(QemuBuilder::new().paused(true).qmp_path(&path));
    let vm = ReconnectingClient::new(&path, Client::builder());
    let mut events = vm.subscribe(EventFilter::all());
    vm.execute("cont", ()).await.unwrap();
    assert!(matches!(events.recv().await, Some(EventItem::Event(e)) if e.event == "RESUME"));

    first.kill().unwrap();
    let gap = tokio::time::timeout(PATIENCE, events.recv()).await.unwrap();
    assert!(
        matches!(gap, Some(EventItem::Gap(DisconnectReason::Eof | DisconnectReason::Io { .. }))),
        "{gap:?}"
    );
    // While nothing listens, a call fails at once instead of hanging.
    assert!(matches!(vm.execute("query-status", ()).await, Err(Error::Io(_))));

    let _second =
        Qemu::start_or_skip_with(QemuBuilder::new().paused(true).qmp_path(&path)).unwrap();
    let status = vm.execute("query-status", ()).await.unwrap();
    assert_eq!(status["status"], "prelaunch", "the new QEMU answers");
    assert_eq!(vm.connections(), 2);
    assert!(vm.client().await.unwrap().supports("device_add"), "a fresh capability cache");
    vm.execute("cont", ()).await.unwrap();
    assert!(matches!(events.recv().await, Some(EventItem::Event(e)) if e.event == "RESUME"));
}

#[test]
fn the_blocking_facade_end_to_end() {
    let qemu = qemu_or_skip!();
    let mut qmp = qmp_client::blocking::Client::connect(qemu.qmp_path()).unwrap();
    assert!(qmp.greeting().version.qemu >= QemuVersion::new(7, 0, 0));
    assert!(qmp.oob_enabled() && qmp.supports("getfd"));
    assert_eq!(qmp.execute("query-status", ()).unwrap()["status"], "running");

    qmp.execute("stop", ()).unwrap();
    qmp.execute("cont", ()).unwrap();
    let resume = qmp.wait_for_event(&EventFilter::names(["RESUME"]), PATIENCE).unwrap();
    assert_eq!(resume.event, "RESUME");
    let stop = qmp.wait_for_event(&EventFilter::names(["STOP"]), PATIENCE).unwrap();
    assert_eq!(stop.event, "STOP", "an event skipped by an earlier wait is still there");

    let error = qmp.execute("device_del", json!({"id": "nope"})).unwrap_err();
    assert_eq!(error.qmp_error().map(|(c, _)| c), Some(&ErrorClass::DeviceNotFound));
    assert!(qmp.human_monitor_command("info version").unwrap().starts_with("7."));

    let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
    let pipe_read = std::fs::File::from(pipe_read);
    qmp.get_fd("fd0", &pipe_write).unwrap();
    drop(pipe_write);
    assert_eq!(read_now(&pipe_read), None);
    qmp.close_fd("fd0").unwrap();
    assert_eq!(read_now(&pipe_read), Some(Vec::new()));

    let (_r, w) = nix::unistd::pipe().unwrap();
    let added = qmp.add_fd(&w, None, Some("blocking")).unwrap();
    assert_eq!(qmp.query_fdsets().unwrap()[0].fdset_id, added.fdset_id);
    qmp.remove_fd(added.fdset_id, None).unwrap();
    assert!(qmp.query_fdsets().unwrap().is_empty());
    qmp.refresh_commands().unwrap();
    qmp.close();
}

/// A frozen QEMU reads nothing: big commands fill the socket, then the client's bounded
/// queue. A command whose deadline passes while it waits in the queue, or for room in
/// it, fails with `NotSent` and never reaches QEMU (no reply without a caller arrives
/// once QEMU runs again), and the connection stays in sync.
#[tokio::test]
async fn against_a_frozen_qemu_commands_not_written_in_time_are_never_sent() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    // Unchecked: the fillers carry an argument QEMU refuses, to be seen arriving whole.
    let client = Client::builder()
        .max_queued_commands(3)
        .check_arguments(false)
        .connect(qemu.qmp_path())
        .await
        .unwrap();
    qemu.freeze().unwrap();
    let big = json!({"blob": "x".repeat(256 * 1024)});
    let filler = || {
        let (client, big) = (client.clone(), big.clone());
        tokio::spawn(async move { client.execute("query-status", big).await })
    };
    let until_queued = |count: usize| {
        let client = client.clone();
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while client.queued() < count {
                assert!(tokio::time::Instant::now() < deadline, "never {count} queued");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // The first is written in part (the socket is full), the second waits whole.
    let mut fillers = vec![filler(), filler()];
    until_queued(2).await;

    // Queued in the last free place, then timed out before it could be written.
    let queued = Request::new("query-version").timeout(Duration::from_millis(200));
    let error = client.call(queued).await.unwrap_err();
    assert!(matches!(error, Error::NotSent { .. }), "{error}");
    assert!(!error.outcome_unknown());
    assert_eq!(client.stats().withdrawn, 1);

    // With the queue full a call waits for room, and gives up the same way.
    fillers.push(filler());
    until_queued(3).await;
    let waiting = Request::new("query-version").timeout(Duration::from_millis(200));
    assert!(matches!(client.call(waiting).await, Err(Error::NotSent { .. })));
    assert_eq!((client.queued(), client.stats().withdrawn), (3, 1), "never queued");

    qemu.resume().unwrap();
    for filler in fillers {
        let error = filler.await.unwrap().unwrap_err();
        assert_eq!(
            error.qmp_error(),
            Some((&ErrorClass::GenericError, "Parameter 'blob' is unexpected")),
            "QEMU got each filler whole"
        );
    }
    let version = client.execute("query-version", ()).await.unwrap();
    assert!(version["qemu"]["major"].is_u64(), "{version}");
    let stats = client.stats();
    assert_eq!(
        (stats.unmatched_replies, stats.late_replies),
        (0, 0),
        "QEMU answered nothing that was not waited for: the withdrawn commands never reached it"
    );
}

/// `query-status` with `{"a": <depth - 2 nested arrays>}`: `depth` levels in all.
fn nested_arguments(depth: usize) -> Value {
    let mut value = json!(0);
    for _ in 0..depth - 2 {
        value = json!([value]);
    }
    json!({ "a": value })
}

/// At QEMU's parser limits a command reaches QEMU (which answers it, with its id); one
/// over them it is refused by the client and never sent, so QEMU emits none of the
/// id-less errors that would otherwise desynchronise the connection.
#[tokio::test]
async fn commands_over_qemus_parser_limits_are_refused_unsent_and_at_them_answered() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    // Unchecked: the argument is one QEMU refuses, so that its answer shows it parsed it.
    let client = Client::builder().check_arguments(false).connect(qemu.qmp_path()).await.unwrap();
    let answered_by_qemu = |error: &Error| {
        matches!(error, Error::Qmp { class: ErrorClass::GenericError, desc, .. }
            if desc.contains("'a'"))
    };

    let error = client.execute("query-status", nested_arguments(1024)).await.unwrap_err();
    assert!(answered_by_qemu(&error), "the deepest command QEMU parses: {error}");
    let error = client.execute("query-status", nested_arguments(1025)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::ExceedsParserLimit {
                limit: qmp_client::ParserLimit::NestingDepth,
                found: 1025,
                ..
            }
        ),
        "{error}"
    );

    // Two tokens per element: about 2.0 million tokens pass, 2.2 million do not.
    let under = json!({ "a": vec![0; 1_000_000] });
    let error = client.execute("query-status", under).await.unwrap_err();
    assert!(answered_by_qemu(&error), "under the token limit: {error}");
    let over = json!({ "a": vec![0; 1_100_000] });
    let error = client.execute("query-status", over).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::ExceedsParserLimit { limit: qmp_client::ParserLimit::TokenCount, .. }
        ),
        "{error}"
    );
    let huge = json!({ "a": "x".repeat(64 << 20) });
    let error = client.execute("query-status", huge).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::ExceedsParserLimit { limit: qmp_client::ParserLimit::TokenBytes, .. }
        ),
        "{error}"
    );

    // In sync: nothing QEMU could not parse ever reached it.
    assert_eq!(client.execute("query-status", ()).await.unwrap()["status"], "prelaunch");
    let stats = client.stats();
    assert_eq!((stats.parse_errors, stats.unmatched_replies, stats.late_replies), (0, 0, 0));
}

/// Every HMP error text `qmp_client::hmp` recognises is produced here on a real QEMU, and
/// `Client::hmp` turns each into `Error::Hmp`; successful output stays `Ok`.
#[tokio::test]
async fn every_hmp_error_shape_is_what_qemu_prints() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let client = connect(&qemu).await;
    let image = qemu.dir().join("image.raw");
    std::fs::write(&image, vec![0_u8; 1 << 20]).unwrap();
    let image = image.display();
    // A node a device uses, for "is in use".
    client.execute("blockdev-add", json!({"driver": "null-co", "node-name": "n1"})).await.unwrap();
    client
        .execute("device_add", json!({"driver": "virtio-blk-pci", "drive": "n1", "id": "d1"}))
        .await
        .unwrap();
    // A drive id taken, for the duplicate error.
    client.hmp(&format!("drive_add 0 if=none,id=drv0,file={image},format=raw")).await.unwrap();

    let lines = [
        "no_such_hmp".to_owned(),
        "device_del nope".to_owned(),
        "drive_del nope".to_owned(),
        "drive_del n1".to_owned(),
        "drive_add 0 if=none,id=x,file=/nonexistent".to_owned(),
        "boot_set x".to_owned(),
        format!("drive_add 0 if=none,id=drv0,file={image},format=raw,read-only=on"),
        format!("drive_add 0 if=none,id=x,file={image},format=nosuch"),
        "drive_add 0 if=none,id=q,format=raw".to_owned(),
        "drive_add 0 id=r2".to_owned(),
        "stop x".to_owned(),
    ];
    let mut seen = Vec::new();
    for line in &lines {
        let text = client.human_monitor_command(line).await.unwrap();
        let shape = qmp_client::hmp::error_shape(&text)
            .unwrap_or_else(|| panic!("{line:?} printed {text:?}, which no shape recognises"));
        seen.push(shape.example);
        match client.hmp(line).await {
            Err(Error::Hmp { command, message }) => {
                assert_eq!(command, *line);
                assert_eq!(message, text.trim_end().replace("\r\n", "\n"), "{line}");
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }
    // The image-lock error needs another process holding the image's write lock in a way
    // this machine's filesystems did not reproduce (a second QEMU with the image on a
    // virtio-blk device, or qemu-nbd, left drive_add "OK"); its text is unit-tested only.
    let not_reproduced = ["Failed to get \"write\" lock"];
    for shape in qmp_client::hmp::ERROR_SHAPES {
        let produced = seen.contains(&shape.example) || not_reproduced.contains(&shape.example);
        assert!(produced, "never produced: {:?}", shape.example);
    }
    let fine = client.hmp("info status").await.unwrap();
    assert_eq!(fine, "VM status: paused (prelaunch)\r\n");
}

/// With checking on, a misspelt member is refused with its path before sending, QEMU
/// refuses the same command when it is sent unchecked, and a correct command goes through.
#[tokio::test]
async fn checked_arguments_name_the_path_qemu_would_refuse() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let checked = Client::builder().check_arguments(true).connect(qemu.qmp_path()).await.unwrap();
    let misspelt = json!({"driver": "file", "node-name": "f0", "filenme": "/dev/null"});
    match checked.execute("blockdev-add", misspelt.clone()).await {
        Err(Error::InvalidArguments { command, path, problems, .. }) => {
            assert_eq!(command, "blockdev-add");
            assert!(
                problems.iter().any(|p| p.suggestion.as_deref() == Some("filename")),
                "{problems:?}"
            );
            assert!(path.starts_with("arguments."), "{path}");
        }
        other => panic!("{other:?}"),
    }
    let bad_enum =
        json!({"driver": "file", "node-name": "f0", "filename": "/dev/null", "aio": "nativ"});
    match checked.execute("blockdev-add", bad_enum).await {
        Err(Error::InvalidArguments { path, .. }) => assert_eq!(path, "arguments.aio"),
        other => panic!("{other:?}"),
    }
    let good = json!({"driver": "null-co", "node-name": "n0"});
    checked.execute("blockdev-add", good).await.unwrap();
    assert!(checked.schema().await.unwrap().is_some());
    drop(checked);

    let unchecked = Client::builder().check_arguments(false).connect(qemu.qmp_path()).await;
    let error = unchecked.unwrap().execute("blockdev-add", misspelt).await.unwrap_err();
    assert_eq!(error.qmp_error().map(|(c, _)| c), Some(&ErrorClass::GenericError), "{error}");
}

#[test]
fn the_blocking_client_checks_arguments_too() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let mut qmp =
        Client::builder().check_arguments(true).connect_blocking(qemu.qmp_path()).unwrap();
    let error = qmp.execute("query-cpus-fast", json!({"verbose": true})).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArguments { path, .. } if path == "arguments.verbose"),
        "{error}"
    );
    assert!(qmp.execute("query-status", ()).is_ok());
}

/// QEMU serves one client per socket; with the backlog full, connecting fails as busy
/// when the handshake timeout passes (and not sooner: it is retried).
#[tokio::test]
async fn a_full_monitor_backlog_is_retried_then_named_busy() {
    let qemu = qemu_or_skip!(QemuBuilder::new().paused(true));
    let path = qemu.qmp_path();
    let _holder = connect(&qemu).await;
    let _queued = [
        std::os::unix::net::UnixStream::connect(path).unwrap(),
        std::os::unix::net::UnixStream::connect(path).unwrap(),
    ];
    let timeout = Duration::from_millis(600);
    let error = Client::builder().handshake_timeout(timeout).connect(path).await.unwrap_err();
    match error {
        Error::MonitorBusy { waited, .. } => assert!(waited >= timeout / 2, "{waited:?}"),
        other => panic!("{other:?}"),
    }
}
