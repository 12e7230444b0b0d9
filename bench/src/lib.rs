//! Shared pieces of the side-by-side benchmark run by `bench/run`: the mock QMP server's
//! configuration ([`mock_server`], served by `mock-qmp`), the raw blocking socket loop that
//! is the baseline, and the `/proc/self/status` and `RLIMIT_NOFILE` helpers of the
//! idle-connection measurement.
//!
//! The drivers are the binaries `qmp-bench` (Rust clients and the raw loop) and
//! `mock-qmp`; `bench/python/` holds the Python driver and the orchestrator.
#![forbid(unsafe_code)]

pub mod raw;

use std::io;

use qmp_client::mock::{MockServer, MockServerBuilder};
use serde_json::{Value, json};

/// The commands the benchmark's mock server has, as `query-commands` lists them.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-status",
    "query-version",
    "query-name",
    "stop",
    "cont",
    "system_reset",
    "migrate-pause",
    "x-bench-events",
];

/// The event name `x-bench-events` emits.
pub const BENCH_EVENT: &str = "BENCH";

/// Most events one `x-bench-events` may ask for.
pub const MAX_EVENTS: u64 = 100_000_000;

/// The mock QMP server the benchmark measures clients against: `qmp_client::mock` (which
/// answers like QEMU 7.2: greeting offering `oob`, `qmp_capabilities` first, ids echoed,
/// `exec-oob`, input read as a JSON stream, everything read at once answered in one
/// write) with
///
/// * `query-status` returning `{"status": "running", "singlestep": false, "running": true}`,
///   `query-version` QEMU 7.2.22's version,
/// * `x-bench-events {"count": N}` writing `N` events `BENCH` with data `{"n": k}` as fast
///   as the socket takes them ([`MockConnection::event_burst`]), then replying `{}`,
/// * every other command in [`COMMANDS`] returning `{}`,
///
/// and the list of received commands off, so a long run does not grow it.
///
/// [`MockConnection::event_burst`]: qmp_client::mock::MockConnection::event_burst
pub fn mock_server() -> MockServerBuilder {
    MockServer::builder().commands(COMMANDS.iter().copied()).record_commands(false).handler(
        |conn, request| {
            let command = &request.command;
            match command.name.as_str() {
                "query-status" => conn.reply(
                    command,
                    json!({"status": "running", "singlestep": false, "running": true}),
                ),
                "query-version" => conn.reply(
                    command,
                    json!({"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "qmp-rs mock"}),
                ),
                "x-bench-events" => {
                    let arguments = command.arguments.as_ref();
                    match arguments.and_then(|a| a.get("count")).and_then(Value::as_u64) {
                        Some(count) if count <= MAX_EVENTS => {
                            conn.event_burst(BENCH_EVENT, count);
                            conn.reply(command, json!({}));
                        }
                        _ => conn.error(
                            command,
                            "GenericError",
                            &format!("'count' must be an integer from 0 to {MAX_EVENTS}"),
                        ),
                    }
                }
                _ => conn.reply(command, json!({})),
            }
        },
    )
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
///
/// # Errors
/// The OS error from `getrlimit`/`setrlimit`.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// What `/proc/self/status` says about this process's memory and threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStatus {
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Number of threads (`Threads`).
    pub threads: u64,
}

impl ProcStatus {
    /// Reads `/proc/self/status`.
    ///
    /// # Errors
    /// When the file cannot be read or lacks `VmRSS` or `Threads`.
    pub fn read() -> io::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/status")?)
            .ok_or_else(|| io::Error::other("/proc/self/status without VmRSS or Threads"))
    }

    /// Parses the text of a `/proc/<pid>/status` file.
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        Some(Self { rss_kib: field("VmRSS")?, threads: field("Threads")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tx\nVmRSS:\t  1234 kB\nThreads:\t3\n";
        assert_eq!(ProcStatus::parse(text), Some(ProcStatus { rss_kib: 1234, threads: 3 }));
        assert_eq!(ProcStatus::parse("Threads:\t3\n"), None);
        let own = ProcStatus::read().unwrap();
        assert!(own.rss_kib > 0 && own.threads >= 1, "{own:?}");
    }
}
