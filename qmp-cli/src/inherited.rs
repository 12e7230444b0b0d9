//! Descriptors inherited by number (`--tap-fd`, `--vhost-fd`), owned before anything else
//! runs. The one `unsafe` of the `qmp` binary is here.

use std::collections::BTreeSet;
use std::os::fd::{OwnedFd, RawFd};

use crate::cli::{Command, HotplugCommand, NicCommand};
use crate::exit::Failure;

/// Tap and vhost descriptors from `--tap-fd` / `--vhost-fd` (empty for other commands).
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    pub(crate) taps: Vec<OwnedFd>,
    pub(crate) vhost: Vec<OwnedFd>,
}

/// Takes ownership of the descriptors `--tap-fd` and `--vhost-fd` name.
///
/// `main` calls this first, before the process opens any descriptor of its own (the tokio
/// runtime's epoll and eventfd among them): a number given on the command line is then one
/// inherited from the parent, or not open at all.
///
/// # Errors
/// A usage failure for a number given twice, or one that is not an open descriptor.
pub(crate) fn adopt(command: &Command) -> Result<Inherited, Failure> {
    let Command::Hotplug(HotplugCommand::Nic(NicCommand::Add(args))) = command else {
        return Ok(Inherited::default());
    };
    let mut claimed = BTreeSet::new();
    let mut take = |numbers: &[RawFd]| -> Result<Vec<OwnedFd>, Failure> {
        numbers
            .iter()
            .map(|&fd| {
                if !claimed.insert(fd) {
                    return Err(Failure::usage(format!("descriptor {fd} is given twice")));
                }
                adopt_one(fd)
            })
            .collect()
    };
    Ok(Inherited { taps: take(&args.tap_fd)?, vhost: take(&args.vhost_fd)? })
}

/// Owns descriptor `fd`; only [`adopt`] calls it, once per number.
#[allow(unsafe_code)]
fn adopt_one(fd: RawFd) -> Result<OwnedFd, Failure> {
    // SAFETY: `adopt_inherited_fd` requires that nothing else in the process owns `fd`.
    // `main` calls `adopt` before it builds the runtime or opens anything, so every open
    // descriptor above stderr was inherited from the parent and is owned by no Rust value;
    // `adopt` passes each number here at most once (the `claimed` set), so no two
    // `OwnedFd`s share one. Numbers 0-2 are refused by `adopt_inherited_fd` itself.
    unsafe { fdpass::adopt_inherited_fd(fd) }.map_err(|e| Failure::usage(e.to_string()))
}
