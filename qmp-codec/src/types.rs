//! Typed shapes of QMP return values that more than one layer reads (the client returns
//! them, the hotplug planner plans over them). They are plain serde types with no I/O.

use serde::{Deserialize, Serialize};

/// What `add-fd` returns: where QEMU put the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddFdInfo {
    /// The fdset; usable as `/dev/fdset/<fdset_id>` in file names.
    #[serde(rename = "fdset-id")]
    pub fdset_id: u64,
    /// The descriptor's number inside QEMU.
    pub fd: i64,
}

/// One fdset from `query-fdsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdsetInfo {
    /// Its id.
    #[serde(rename = "fdset-id")]
    pub fdset_id: u64,
    /// The descriptors in it (empty once removed while still in use by a block node).
    pub fds: Vec<FdsetFdInfo>,
}

/// One descriptor of an fdset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdsetFdInfo {
    /// The descriptor's number inside QEMU.
    pub fd: i64,
    /// The free-form text given to `add-fd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}
