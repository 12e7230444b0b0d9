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

/// Whether a series stayed flat. The first quarter of the samples (at least one) is warm-up:
/// allocator arenas of each runtime thread, the blocking pool and per-connection caches grow
/// once, in steps, before a loop settles; a leak keeps growing after. The baseline is the
/// highest reading of the warm-up; every later sample must have no more descriptors, threads
/// within `thread_tolerance` (a runtime's blocking pool comes and goes) and RSS within
/// `rss_tolerance_kib` of it. Returns what grew.
pub fn growth(samples: &[Sample], rss_tolerance_kib: u64, thread_tolerance: u64) -> Vec<String> {
    let mut grew = Vec::new();
    let warm_up = (samples.len() / 4).max(1).min(samples.len());
    let Some(base) = samples[..warm_up].iter().copied().reduce(|a, b| Sample {
        fds: a.fds.max(b.fds),
        rss_kib: a.rss_kib.max(b.rss_kib),
        threads: a.threads.max(b.threads),
    }) else {
        return grew;
    };
    for (index, sample) in samples.iter().enumerate().skip(warm_up) {
        if sample.fds > base.fds {
            grew.push(format!("sample {index}: {} fds, {} after warm-up", sample.fds, base.fds));
        }
        if sample.threads > base.threads + thread_tolerance {
            grew.push(format!(
                "sample {index}: {} threads, {} after warm-up",
                sample.threads, base.threads
            ));
        }
        if sample.rss_kib > base.rss_kib + rss_tolerance_kib {
            grew.push(format!(
                "sample {index}: RSS {} KiB, {} KiB after warm-up (tolerance {rss_tolerance_kib} KiB)",
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
    fn a_step_during_warm_up_passes_but_growth_after_it_fails() {
        // The CI run that failed on this: RSS 13,072 KiB at the first sample, 17,444 at the
        // second (a runtime thread's allocator arena), then flat.
        let mut series = vec![at(10, 13_072, 4), at(10, 17_444, 4), at(10, 17_444, 4)];
        series.extend((0..12).map(|i| at(10, 17_756 + 8 * i, 4)));
        assert!(growth(&series, 4096, 2).is_empty());
        // The same warm-up followed by a steady leak of 512 KiB per sample.
        let mut leaking = series[..3].to_vec();
        leaking.extend((0..12).map(|i| at(10, 17_444 + 512 * i, 4)));
        let grew = growth(&leaking, 4096, 2);
        assert!(!grew.is_empty() && grew.iter().all(|g| g.contains("RSS")), "{grew:?}");
        // A descriptor leaked after warm-up fails, however small.
        let mut fd_leak = series.clone();
        fd_leak.last_mut().unwrap().fds = 11;
        assert_eq!(growth(&fd_leak, 4096, 2).len(), 1);
    }

    #[test]
    fn reads_this_process() {
        let sample = Sample::of_self().unwrap();
        assert!(sample.fds >= 3 && sample.rss_kib > 0 && sample.threads >= 1, "{sample}");
    }
}
