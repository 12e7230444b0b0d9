//! The test policy (feature `test-support`): a test that needs QEMU skips, with a printed
//! reason, when QEMU or the guest is missing, unless `QMP_REQUIRE_QEMU=1` makes that a
//! failure, so CI cannot count a skip as a pass. A QEMU that is installed but fails to start
//! always fails the test.

use crate::{Qemu, QemuBuilder, StartError, find_qemu};

/// Environment variable that turns a missing QEMU from a skip into a failure when set to `1`.
pub const REQUIRE_QEMU_ENV: &str = "QMP_REQUIRE_QEMU";

/// Whether `QMP_REQUIRE_QEMU=1` is set, i.e. a missing QEMU must fail the test.
pub fn qemu_required() -> bool {
    std::env::var_os(REQUIRE_QEMU_ENV).is_some_and(|v| v == "1")
}

/// `true` when QEMU is installed; otherwise prints why `what` is skipped and returns `false`.
///
/// # Panics
/// When QEMU is missing and `QMP_REQUIRE_QEMU=1`.
pub fn qemu_available_or_skip(what: &str) -> bool {
    match find_qemu() {
        Ok(_) => true,
        Err(why) => {
            skip_or_fail(what, &why);
            false
        }
    }
}

/// Prints why `what` is skipped, or panics when `QMP_REQUIRE_QEMU=1`.
fn skip_or_fail(what: &str, why: &StartError) {
    assert!(!qemu_required(), "{REQUIRE_QEMU_ENV}=1, but {what} cannot run: {why}");
    eprintln!("SKIPPED {what}: {why}; set {REQUIRE_QEMU_ENV}=1 to make this a failure");
}

impl Qemu {
    /// Starts the default machine for a test: `None` (with a printed reason) when QEMU is
    /// not installed and `QMP_REQUIRE_QEMU` is not `1`.
    ///
    /// # Panics
    /// When QEMU is missing and `QMP_REQUIRE_QEMU=1`, or when QEMU is installed but fails
    /// to start: a broken QEMU is a test failure, never a skip.
    pub fn start_or_skip() -> Option<Self> {
        Self::start_or_skip_with(QemuBuilder::new())
    }

    /// [`Qemu::start_or_skip`] with a custom builder.
    ///
    /// # Panics
    /// As [`Qemu::start_or_skip`].
    pub fn start_or_skip_with(builder: QemuBuilder) -> Option<Self> {
        match builder.start() {
            Ok(qemu) => Some(qemu),
            Err(why @ StartError::NotInstalled(_)) => {
                skip_or_fail("this test", &why);
                None
            }
            Err(e) => panic!("cannot start QEMU ({REQUIRE_QEMU_ENV}={}): {e}", qemu_required()),
        }
    }

    /// Starts the test guest for a test (see [`Qemu::start_guest`]): `None` (with a printed
    /// reason) when QEMU is not installed or the guest image cannot be had, and
    /// `QMP_REQUIRE_QEMU` is not `1`.
    ///
    /// # Panics
    /// When QEMU or the guest image is missing and `QMP_REQUIRE_QEMU=1`, and whenever QEMU
    /// or the guest fails to start: a broken guest is a test failure, never a skip.
    pub fn start_guest_or_skip() -> Option<Self> {
        Self::start_guest_or_skip_with(QemuBuilder::new())
    }

    /// [`Qemu::start_guest_or_skip`] with a custom builder.
    ///
    /// # Panics
    /// As [`Qemu::start_guest_or_skip`].
    pub fn start_guest_or_skip_with(builder: QemuBuilder) -> Option<Self> {
        match Self::start_guest_with(builder) {
            Ok(qemu) => Some(qemu),
            Err(why @ (StartError::NotInstalled(_) | StartError::Guest(_))) => {
                skip_or_fail("this test", &why);
                None
            }
            Err(e) => {
                panic!("cannot start the test guest ({REQUIRE_QEMU_ENV}={}): {e}", qemu_required())
            }
        }
    }
}

/// Starts QEMU or returns from the calling test (see [`Qemu::start_or_skip`]).
///
/// `qemu_or_skip!()` uses the default machine; `qemu_or_skip!(builder)` a custom one.
#[macro_export]
macro_rules! qemu_or_skip {
    () => {
        $crate::qemu_or_skip!($crate::QemuBuilder::new())
    };
    ($builder:expr) => {
        match $crate::Qemu::start_or_skip_with($builder) {
            Some(qemu) => qemu,
            None => return,
        }
    };
}

/// Starts the test guest or returns from the calling test (see
/// [`Qemu::start_guest_or_skip`]).
///
/// `guest_or_skip!()` boots the default guest machine; `guest_or_skip!(builder)` adds the
/// guest to a custom builder.
#[macro_export]
macro_rules! guest_or_skip {
    () => {
        $crate::guest_or_skip!($crate::QemuBuilder::new())
    };
    ($builder:expr) => {
        match $crate::Qemu::start_guest_or_skip_with($builder) {
            Some(qemu) => qemu,
            None => return,
        }
    };
}
