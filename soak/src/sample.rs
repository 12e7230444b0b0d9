//! Descriptors, resident memory and threads of a process, read from `/proc`.

use std::fmt;
use std::io;

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Open descriptors (`/proc/PID/fd` entries).
    pub fds: usize,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Threads (`Threads`).
    pub threads: u64,
}

impl Sample {
    /// Reads this process.
    ///
    /// # Errors
    /// When `/proc/self` cannot be read.
    pub fn of_self() -> io::Result<Self> {
        Self::of("self")
    }

    /// Reads process `pid` (`"self"` or a number).
    ///
    /// # Errors
    /// When its `/proc` entries cannot be read.
    pub fn of(pid: &str) -> io::Result<Self> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
        };
        Ok(Self { fds, rss_kib: field("VmRSS:")?, threads: field("Threads:")? })
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>5} {:>9} {:>7}", self.fds, self.rss_kib, self.threads)
    }
}

/// Whether a series stayed flat: descriptors never above the first sample (take it after
/// a warm-up), threads within `thread_tolerance` of it (a runtime's blocking pool comes and
/// goes), RSS within `rss_tolerance_kib`. Returns what grew.
pub fn growth(samples: &[Sample], rss_tolerance_kib: u64, thread_tolerance: u64) -> Vec<String> {
    let mut grew = Vec::new();
    let Some(base) = samples.first() else { return grew };
    for (index, sample) in samples.iter().enumerate().skip(1) {
        if sample.fds > base.fds {
            grew.push(format!("sample {index}: {} fds, {} at the start", sample.fds, base.fds));
        }
        if sample.threads > base.threads + thread_tolerance {
            grew.push(format!(
                "sample {index}: {} threads, {} at the start",
                sample.threads, base.threads
            ));
        }
        if sample.rss_kib > base.rss_kib + rss_tolerance_kib {
            grew.push(format!(
                "sample {index}: RSS {} KiB, {} KiB at the start (tolerance {rss_tolerance_kib} KiB)",
                sample.rss_kib, base.rss_kib
            ));
        }
    }
    grew
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(fds: usize, rss_kib: u64, threads: u64) -> Sample {
        Sample { fds, rss_kib, threads }
    }

    #[test]
    fn flat_series_passes_and_each_growth_is_named() {
        assert!(growth(&[at(9, 1000, 3), at(9, 1200, 4), at(8, 900, 2)], 256, 1).is_empty());
        let grew = growth(&[at(9, 1000, 3), at(10, 1300, 5)], 256, 1);
        assert_eq!(grew.len(), 3, "{grew:?}");
    }

    #[test]
    fn reads_this_process() {
        let sample = Sample::of_self().unwrap();
        assert!(sample.fds >= 3 && sample.rss_kib > 0 && sample.threads >= 1, "{sample}");
    }
}
