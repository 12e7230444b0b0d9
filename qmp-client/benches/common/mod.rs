//! Shared by the QEMU benches: a paused QEMU (or a printed skip) and a raw QMP connection,
//! the baseline every client figure is divided by.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use qemu_launcher::{Qemu, REQUIRE_QEMU_ENV, find_qemu, qemu_required};

/// A paused (`-S`) QEMU, so the guest costs no CPU; `None`, with a printed reason, when QEMU
/// is not installed and `QMP_REQUIRE_QEMU` is not `1`.
///
/// QEMU is killed when the returned value is dropped, which the benches do before
/// returning; `setpriv --pdeathsig` covers a bench process killed before that.
///
/// # Panics
/// When QEMU is missing and `QMP_REQUIRE_QEMU=1`, or when it is installed but fails to start.
pub(crate) fn paused_qemu_or_skip(groups: &str) -> Option<Qemu> {
    if let Err(why) = find_qemu() {
        assert!(
            !qemu_required(),
            "{REQUIRE_QEMU_ENV}=1 but QEMU is missing, so {groups} cannot run: {why}"
        );
        eprintln!("SKIPPED {groups}: {why}; set {REQUIRE_QEMU_ENV}=1 to make this a failure");
        return None;
    }
    match Qemu::builder().paused(true).start() {
        Ok(qemu) => Some(qemu),
        Err(e) => panic!("cannot start QEMU for {groups}: {e}"),
    }
}

/// A minimal blocking QMP connection on a raw unix socket: no JSON parsing, a reply is the
/// next line with a `"return"` key (QEMU and the mock server both put it first).
pub(crate) struct RawQmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
    out: Vec<u8>,
    next_id: u64,
}

impl RawQmp {
    /// Connects, reads the greeting and sends `qmp_capabilities`, asking for `oob` if `oob`.
    ///
    /// # Panics
    /// On any I/O error, or if negotiation is refused.
    pub(crate) fn connect(path: &Path, oob: bool) -> Self {
        let stream = UnixStream::connect(path).expect("connect to the QMP socket");
        let reader = BufReader::new(stream.try_clone().expect("clone the QMP socket"));
        let mut raw = Self { stream, reader, line: String::new(), out: Vec::new(), next_id: 0 };
        raw.reader.read_line(&mut raw.line).expect("read the QMP greeting");
        assert!(raw.line.starts_with("{\"QMP\""), "not a QMP greeting: {:?}", raw.line);
        let capabilities: &[u8] = if oob {
            b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\r\n"
        } else {
            b"{\"execute\":\"qmp_capabilities\"}\r\n"
        };
        raw.stream.write_all(capabilities).expect("send qmp_capabilities");
        raw.read_reply();
        raw
    }

    /// Appends `{"execute":"query-status","id":N}\r\n` to the output buffer.
    pub(crate) fn queue_query_status(&mut self) {
        self.next_id += 1;
        // Formatted into a buffer first: `write!` on the socket would be one syscall per piece.
        write!(self.out, "{{\"execute\":\"query-status\",\"id\":{}}}\r\n", self.next_id)
            .expect("format into a Vec");
    }

    /// Writes everything queued in one `write_all`.
    pub(crate) fn flush(&mut self) {
        self.stream.write_all(&self.out).expect("write to the QMP socket");
        self.out.clear();
    }

    /// Reads lines until a reply (skipping events); panics on an error reply or EOF.
    pub(crate) fn read_reply(&mut self) {
        loop {
            self.line.clear();
            let n = self.reader.read_line(&mut self.line).expect("read from the QMP socket");
            assert!(n > 0, "QEMU closed the QMP socket");
            if self.line.contains("\"return\"") {
                return;
            }
            assert!(
                self.line.starts_with("{\"timestamp\"") || self.line.contains("\"event\""),
                "unexpected QMP message: {:?}",
                self.line
            );
        }
    }
}
