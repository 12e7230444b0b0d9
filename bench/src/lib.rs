//! Shared pieces of the side-by-side benchmark run by `bench/run`: the standalone mock QMP
//! server (`mock-qmp`), the raw blocking socket loop that is the baseline, and the
//! `/proc/self/status` and `RLIMIT_NOFILE` helpers of the idle-connection measurement.
//!
//! The drivers are the binaries `qmp-bench` (Rust clients and the raw loop) and
//! `mock-qmp`; `bench/python/` holds the Python driver and the orchestrator.
#![forbid(unsafe_code)]

pub mod mock;
pub mod raw;

use std::io;

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
