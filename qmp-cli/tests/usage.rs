//! The command-line contract: every bad option value ends with status 2 and one line on
//! stderr before anything is connected or opened, and no value makes `qmp` panic.
//!
//! Each case runs against a socket path that does not exist: had `qmp` tried to connect,
//! it would have ended with 3 ("cannot connect"), so a 2 proves it stopped before.

mod common;

use std::path::Path;

use common::{CONNECTION, USAGE, assert_status, one_error_line, qmp_at, run};

/// `(arguments, a piece of the error line)`.
const BAD_VALUES: &[(&[&str], &str)] = &[
    // Queue counts: 1 to 256 (a tap's limit, below a NIC's 1023).
    (&["hotplug", "nic", "add", "--name", "n", "--queues", "0"], "'0' is not a queue count"),
    (&["hotplug", "nic", "add", "--name", "n", "--queues", "100000"], "from 1 to 256"),
    (&["hotplug", "nic", "add", "--name", "n", "--queues", "257"], "from 1 to 256"),
    (&["hotplug", "nic", "add", "--name", "n", "--queues=-1"], "queue count"),
    // Names: qmp-hotplug's device id rules.
    (&["hotplug", "nic", "add", "--name", "bad-name"], "invalid device name 'bad-name'"),
    (&["hotplug", "nic", "add", "--name", ""], "it is empty"),
    (&["hotplug", "nic", "add", "--name", "fifteen_chars_x"], "longer than 14"),
    (&["hotplug", "disk", "add", "--name", "a b", "--image", "/x"], "invalid device name"),
    (&["hotplug", "disk", "add", "--name", "d\u{1b}[2J", "--image", "/x"], "invalid device name"),
    // Slots: 1 to 31 (0 is the host bridge's).
    (&["hotplug", "nic", "add", "--name", "n", "--slot", "x"], "--slot"),
    (&["hotplug", "nic", "add", "--name", "n", "--slot", "32"], "--slot"),
    (&["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--slot", "300"], "--slot"),
    (&["hotplug", "nic", "add", "--name", "n", "--slot=-1"], "--slot"),
    // MAC addresses: six hex pairs of a unicast address.
    (&["hotplug", "nic", "add", "--name", "n", "--mac", "zz"], "is not a MAC address"),
    (&["hotplug", "nic", "add", "--name", "n", "--mac", "52:54:00:12:34"], "not a MAC"),
    (&["hotplug", "nic", "add", "--name", "n", "--mac", "52:54:00:12:34:5g"], "not a MAC"),
    (&["hotplug", "nic", "add", "--name", "n", "--mac", "01:00:5e:00:00:01"], "multicast"),
    // Tap names: checked by the tap code before any system call.
    (&["hotplug", "nic", "add", "--name", "n", "--tap", "a/b"], "invalid tap interface name"),
    (&["hotplug", "nic", "add", "--name", "n", "--tap", "x%s"], "invalid tap interface name"),
    (&["hotplug", "nic", "add", "--name", "n", "--tap", "sixteen_chars_xx"], "longer than 15"),
    // Durations: positive and finite.
    (&["--timeout=-1", "exec", "query-status"], "more than 0"),
    (&["--timeout", "0", "exec", "query-status"], "more than 0"),
    (&["--timeout", "nan", "exec", "query-status"], "not a finite number"),
    (&["--timeout", "inf", "exec", "query-status"], "not a finite number"),
    (&["--timeout", "1e400", "events"], "not a finite number"),
    (&["--timeout", "soon", "shell"], "not a number of seconds"),
    (&["hotplug", "nic", "del", "nic-n-pci-2", "--wait=-5"], "more than 0"),
    (&["hotplug", "disk", "del", "disk-d-pci-2", "--wait", "NaN"], "not a finite number"),
    // NBD URIs.
    (&["hotplug", "disk", "add", "--name", "d", "--uri", "http://x/y"], "bad NBD URI"),
    (&["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://"], "no host"),
    (&["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://::1/exp"], "in brackets"),
    (&["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://h:port/x"], "port"),
    (&["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://h/e?x=1"], "no ?query"),
    (&["hotplug", "disk", "add", "--name", "d", "--uri", "nbds://h/e"], "no 'nbds' scheme"),
    // NBD over TLS: a directory with the CA's certificate, and an NBD URI to use it on.
    (
        &[
            "hotplug",
            "disk",
            "add",
            "--name",
            "d",
            "--uri",
            "nbd://h/e",
            "--tls-dir",
            "/nonexistent",
        ],
        "No such file",
    ),
    (
        &["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://h/e", "--tls-dir", "/"],
        "ca-cert.pem",
    ),
    (
        &["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://h/e", "--tls-hostname", "h"],
        "--tls-dir",
    ),
    // Disk sizes: whole 512-byte sectors, with K/M/G/T.
    (&["hotplug", "disk", "resize", "disk-d-pci-2", "0"], "positive multiple of 512"),
    (&["hotplug", "disk", "resize", "disk-d-pci-2", "1000"], "positive multiple of 512"),
    (&["hotplug", "disk", "resize", "disk-d-pci-2", "1.5G"], "not a size"),
    (&["hotplug", "disk", "resize", "disk-d-pci-2", "64MB"], "K, M, G or T"),
    (&["hotplug", "disk", "resize", "disk-d-pci-2", "1P"], "K, M, G or T"),
    (&["hotplug", "disk", "resize", "disk-d-pci-2", "99999999T"], "too large"),
    // Disk settings QEMU would refuse part way through an add.
    (
        &["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--aio", "native"],
        "cache.direct",
    ),
    (
        &["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://h/e", "--aio", "threads"],
        "not to NBD",
    ),
    (
        &["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--detect-zeroes", "unmap"],
        "discard=unmap",
    ),
    (&["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--serial", "a,b"], "serial"),
    (&["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--aio", "posix"], "--aio"),
    // Disk buses: virtio or scsi; a SCSI controller id is a QEMU id, and only with scsi.
    (&["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--bus", "ide"], "--bus"),
    (
        &["hotplug", "disk", "add", "--name", "d", "--image", "/x", "--scsi-controller", "s0"],
        "--scsi-controller needs --bus scsi",
    ),
    (
        &[
            "hotplug",
            "disk",
            "add",
            "--name",
            "d",
            "--image",
            "/x",
            "--bus",
            "scsi",
            "--scsi-controller",
            "0bad",
        ],
        "is not a QEMU id",
    ),
    // clap's own refusals, one line too.
    (&["hotplug", "nic", "add"], "required arguments were not provided"),
    (&["events", "--count", "0"], "--count"),
    (&["exec", "query-status", "--bogus"], "unexpected argument '--bogus'"),
];

fn missing_socket() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such.sock");
    (dir, path)
}

#[test]
fn every_bad_value_is_status_2_and_one_line_before_connecting() {
    let (_dir, socket) = missing_socket();
    let taps_before = taps_qmp_could_open();
    for (args, expected) in BAD_VALUES {
        let output = run(qmp_at(&socket, *args));
        assert_status(&output, USAGE);
        let line = one_error_line(&output, "qmp: ");
        assert!(line.contains(expected), "{args:?}: {expected:?} not in {line:?}");
        // What the user typed comes back escaped.
        assert!(!line.contains('\u{1b}'), "{args:?}: {line:?}");
    }
    assert!(!socket.exists());
    assert_eq!(taps_qmp_could_open(), taps_before, "a refused command opened a tap");
}

#[test]
fn values_that_saturate_or_need_care_are_accepted() {
    let (_dir, socket) = missing_socket();
    // Accepted: `qmp` gets as far as connecting, and says it cannot.
    for args in [
        &["--timeout", "1e19", "exec", "query-status"][..],
        &["--timeout", "18446744073709551616", "events"],
        &["--timeout", "1e-300", "shell"],
        &["hotplug", "nic", "del", "nic-n-pci-2", "--wait", "1e19"],
        &["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://[::1]/exp"],
        &["hotplug", "disk", "add", "--name", "d", "--uri", "nbd://[::1]:10809/exp"],
        &["hotplug", "disk", "add", "--name", "d", "--uri", "nbd+unix:///e?socket=/x"],
        &["hotplug", "nic", "add", "--name", "n_1", "--mac", "52-54-00-AB-CD-EF", "--slot", "31"],
    ] {
        let output = run(qmp_at(&socket, args));
        assert_status(&output, CONNECTION);
        one_error_line(&output, "qmp: cannot connect to ");
    }
}

#[test]
fn descriptor_counts_that_do_not_match_are_usage_errors() {
    let (_dir, socket) = missing_socket();
    // A shell hands `qmp` descriptors 3, 4 and 5 (of /dev/null) to stand in for a tap and
    // two vhost-net descriptors: the counts are refused before anything uses them.
    let qmp = qmp_at(&socket, ["hotplug", "nic", "add", "--name", "n"]);
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec "$0" "$@" --tap-fd 3 --vhost-fd 4,5 3</dev/null 4</dev/null 5</dev/null"#)
        .arg(qmp.get_program())
        .args(qmp.get_args())
        .env_remove("QMP_SOCKET")
        .stdin(std::process::Stdio::null());
    let output = run(command);
    assert_status(&output, USAGE);
    let line = one_error_line(&output, "qmp: --vhost-fd gives 2 descriptors for 1 tap queues");
    assert!(line.contains("one per queue"), "{line}");
}

/// The tap interfaces of this host that the commands of `BAD_VALUES` could have opened:
/// `qmp`'s default `qmptap<n>`, or a name (a pattern's prefix) given with `--tap`. Taps of
/// other programs on the host (a soak, another test binary) come and go and are not ours to
/// count.
fn taps_qmp_could_open() -> Vec<String> {
    let mut prefixes = vec!["qmptap".to_owned()];
    for (args, _) in BAD_VALUES {
        if let Some(at) = args.iter().position(|arg| *arg == "--tap")
            && let Some(name) = args.get(at + 1)
        {
            prefixes.push(name.split('%').next().unwrap_or(name).to_owned());
        }
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| Path::new("/sys/class/net").join(name).join("tun_flags").exists())
                .filter(|name| prefixes.iter().any(|prefix| name.starts_with(prefix.as_str())))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
