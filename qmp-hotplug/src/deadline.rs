//! One deadline per operation: every command, wait and host call gets what is left of it.

use std::time::{Duration, Instant};

/// When an operation must be over, and how long it had.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    budget: Duration,
}

/// A far-away instant for budgets too large to add to `now` (a century).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Deadline {
    /// `budget` from now; a budget too large for the clock saturates.
    pub(crate) fn after(budget: Duration) -> Self {
        let now = Instant::now();
        let at = now.checked_add(budget).or_else(|| now.checked_add(FOREVER)).unwrap_or(now);
        Self { at, budget }
    }

    /// What is left (zero once it has passed).
    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The whole budget.
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_shrinks_and_saturates() {
        let deadline = Deadline::after(Duration::from_secs(60));
        assert!(deadline.remaining() <= Duration::from_secs(60));
        assert!(deadline.remaining() > Duration::from_secs(59));
        assert_eq!(Deadline::after(Duration::ZERO).remaining(), Duration::ZERO);
        let huge = Deadline::after(Duration::MAX);
        assert!(huge.remaining() > Duration::from_secs(365 * 24 * 3600), "no overflow panic");
        assert_eq!(huge.budget(), Duration::MAX);
    }
}
