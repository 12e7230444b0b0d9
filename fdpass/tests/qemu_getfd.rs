//! Against a real QEMU: `getfd`, `closefd`, `add-fd`, `query-fdsets` and `remove-fd` with
//! descriptors sent by `send_all_with_fds`. Skipped when QEMU is missing, unless
//! `QMP_REQUIRE_QEMU=1`.

mod common;

use std::os::fd::AsFd;

use common::monitor::{Monitor, error_class};
use serde_json::json;

#[test]
fn getfd_closefd_add_fd_and_remove_fd() {
    // Running, not paused: QEMU 7.2 closes a removed fdset member only while the VM runs
    // (`monitor_fdset_cleanup` checks `runstate_is_running()`), so with `-S` the set stays.
    let qemu = qemu_launcher::qemu_or_skip!();
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
