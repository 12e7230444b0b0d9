//! Against a real QEMU: `getfd`, `closefd`, `add-fd`, `query-fdsets` and `remove-fd` with
//! descriptors sent by `send_all_with_fds`. Skipped when QEMU is missing, unless
//! `QMP_REQUIRE_QEMU=1`.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use fdpass::send_all_with_fds;
use serde_json::{Value, json};

/// A minimal QMP line client: commands go out through fdpass, replies come back as lines.
struct Monitor {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Monitor {
    fn connect(qemu: &qmp_test_support::Qemu) -> Self {
        let stream = UnixStream::connect(qemu.qmp_path()).expect("connect to QMP");
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut monitor = Self { stream, reader };
        let greeting = monitor.read_message();
        assert!(greeting.get("QMP").is_some(), "no greeting: {greeting}");
        assert_eq!(
            monitor.execute(&json!({"execute": "qmp_capabilities"}), &[]),
            json!({"return": {}})
        );
        monitor
    }

    /// The next message that is not an event.
    fn read_message(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read from QMP");
            assert!(n > 0, "QEMU closed the monitor");
            let message: Value = serde_json::from_str(&line).expect("QMP sent JSON");
            if message.get("event").is_none() {
                return message;
            }
        }
    }

    /// Sends `command` (CRLF-terminated) with `fds` in the same `sendmsg`; returns the reply.
    fn execute(&mut self, command: &Value, fds: &[BorrowedFd<'_>]) -> Value {
        let mut bytes = serde_json::to_vec(command).unwrap();
        bytes.extend_from_slice(b"\r\n");
        send_all_with_fds(&self.stream, &bytes, fds).expect("send the command");
        self.read_message()
    }
}

fn error_class(reply: &Value) -> &str {
    reply["error"]["class"].as_str().unwrap_or_else(|| panic!("not an error reply: {reply}"))
}

#[test]
fn getfd_closefd_add_fd_and_remove_fd() {
    // Running, not paused: QEMU 7.2 closes a removed fdset member only while the VM runs
    // (`monitor_fdset_cleanup` checks `runstate_is_running()`), so with `-S` the set stays.
    let qemu = qmp_test_support::qemu_or_skip!();
    let mut monitor = Monitor::connect(&qemu);
    let (_read_end, write_end) = nix::unistd::pipe().unwrap();

    // getfd with the descriptor attached to the command's own bytes.
    let getfd = json!({"execute": "getfd", "arguments": {"fdname": "fd0"}, "id": 1});
    assert_eq!(monitor.execute(&getfd, &[write_end.as_fd()]), json!({"return": {}, "id": 1}));

    let closefd = json!({"execute": "closefd", "arguments": {"fdname": "fd0"}, "id": 2});
    assert_eq!(monitor.execute(&closefd, &[]), json!({"return": {}, "id": 2}));
    let again = monitor.execute(&closefd, &[]);
    assert_eq!(error_class(&again), "GenericError", "{again}");
    assert_eq!(again["id"], 2);

    // Without a descriptor QEMU says so: proof that the one above really arrived.
    let bare = monitor.execute(&json!({"execute": "getfd", "arguments": {"fdname": "fd1"}}), &[]);
    assert_eq!(error_class(&bare), "GenericError", "{bare}");
    assert_eq!(bare["error"]["desc"], "No file descriptor supplied via SCM_RIGHTS");

    // add-fd puts it in an fdset.
    let add = json!({"execute": "add-fd", "arguments": {"opaque": "pipe"}, "id": 3});
    let added = monitor.execute(&add, &[write_end.as_fd()]);
    let fd = added["return"]["fd"].as_i64().unwrap_or_else(|| panic!("{added}"));
    let set = added["return"]["fdset-id"].as_i64().unwrap_or_else(|| panic!("{added}"));
    assert_eq!(added["id"], 3);

    let listed = monitor.execute(&json!({"execute": "query-fdsets"}), &[]);
    let expected = json!({"fdset-id": set, "fds": [{"fd": fd, "opaque": "pipe"}]});
    assert!(listed["return"].as_array().unwrap().contains(&expected), "{listed} lacks {expected}");

    let remove = json!({"execute": "remove-fd", "arguments": {"fdset-id": set, "fd": fd}});
    assert_eq!(monitor.execute(&remove, &[]), json!({"return": {}}));
    let listed = monitor.execute(&json!({"execute": "query-fdsets"}), &[]);
    assert_eq!(listed, json!({"return": []}), "the fdset is still listed");

    let add_bare = monitor.execute(&json!({"execute": "add-fd"}), &[]);
    assert_eq!(add_bare["error"]["desc"], "No file descriptor supplied via SCM_RIGHTS");
}
