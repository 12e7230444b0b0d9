//! A minimal QMP line client for the tests against a real QEMU: commands go out through
//! fdpass, with descriptors attached, and replies come back as lines.

use std::io::{BufRead, BufReader};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;

use fdpass::send_all_with_fds;
use serde_json::{Value, json};

/// A minimal QMP line client: commands go out through fdpass, replies come back as lines.
pub(crate) struct Monitor {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Monitor {
    pub(crate) fn connect(qemu: &qemu_launcher::Qemu) -> Self {
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
    pub(crate) fn read_message(&mut self) -> Value {
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
    pub(crate) fn execute(&mut self, command: &Value, fds: &[BorrowedFd<'_>]) -> Value {
        let mut bytes = serde_json::to_vec(command).unwrap();
        bytes.extend_from_slice(b"\r\n");
        send_all_with_fds(&self.stream, &bytes, fds).expect("send the command");
        self.read_message()
    }
}

/// The `error.class` of a QMP error reply; panics on anything else.
pub(crate) fn error_class(reply: &Value) -> &str {
    reply["error"]["class"].as_str().unwrap_or_else(|| panic!("not an error reply: {reply}"))
}
