//! Reliability campaigns for qmp-rs against a real QEMU: `soak` (random hotplug under
//! injected faults, checked after every step by [`invariants`]) and `leak-soak` (descriptors,
//! RSS and threads of the client over long runs, [`sample`]). Not shipped; run through
//! `scripts/soak` and `scripts/leak-soak` (see RELIABILITY.md).
//!
//! ```
//! let mut rng = soak::Rng::new(7);
//! let roll = rng.below(6);
//! assert!(roll < 6);
//! assert_eq!(soak::Rng::new(7).below(6), roll, "a seed replays its choices");
//! ```
#![forbid(unsafe_code)]

pub mod invariants;
pub mod sample;

/// A small deterministic generator (`SplitMix64`): the soak's choices replay from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// `true` with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a slice.
    ///
    /// # Panics
    /// When `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let len = u64::try_from(items.len()).expect("a slice length fits in u64");
        &items[usize::try_from(self.below(len)).expect("an index below a length fits")]
    }
}
