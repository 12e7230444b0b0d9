//! QEMU's QMP schema, as the running QEMU reports it through `query-qmp-schema`: check a
//! command's arguments before sending them, probe for features the way libvirt does, and
//! describe what a command takes.
//!
//! * [`Schema`] parses the reply once ([`Schema::from_slice`] or [`Schema::from_value`]) and
//!   indexes it: every type reference is resolved to an index; members, enum values and
//!   union variants are found by binary search (the members of small objects by a scan of
//!   at most 16 names). Hold one per connection (it is `Send + Sync`).
//! * [`Schema::check`] (or [`Schema::check_map`] for arguments held as a map) validates a
//!   command's `arguments` as QEMU's input visitor would and returns a [`Report`]: a
//!   [`Verdict`] ([`Valid`](Verdict::Valid), [`Invalid`](Verdict::Invalid) with every
//!   [`Problem`] up to [`MAX_PROBLEMS`], each with its path, what was expected, what was
//!   found and a close-match suggestion, or [`NotChecked`](Verdict::NotChecked) where the
//!   schema cannot tell) and [`Warning`]s for deprecated or unstable use.
//! * [`Schema::has`] answers feature probes in libvirt's path syntax,
//!   `"blockdev-add/arg-type/+file/aio"`.
//! * [`Schema::describe`] returns a [`Description`] of a command, event or type path;
//!   [`Schema::complete_member`] and [`Schema::complete_value`] give completion candidates.
//!
//! QEMU masks every type name but the built-in ones as a number; this crate never shows one
//! where a command, member or path can be named.
//!
//! The crate does no I/O: bytes or [`serde_json::Value`]s in, data out.
//!
//! ```
//! use qmp_schema::{Schema, Verdict};
//! use serde_json::json;
//!
//! // The reply of QEMU 7.2's `query-qmp-schema`, as a client receives it.
//! let schema = Schema::from_slice(include_bytes!("../tests/data/qemu-7.2-schema.json"))?;
//!
//! let good = json!({"driver": "raw", "node-name": "disk0",
//!                   "file": {"driver": "file", "filename": "/dev/fdset/0"}});
//! assert_eq!(schema.check("blockdev-add", Some(&good)).verdict, Verdict::Valid);
//!
//! let typo = json!({"driver": "raw", "node-name": "disk0",
//!                   "file": {"driver": "file", "filenme": "/dev/fdset/0"}});
//! let report = schema.check("blockdev-add", Some(&typo));
//! let problems: Vec<String> = report.problems().iter().map(|p| p.to_string()).collect();
//! assert_eq!(problems, [
//!     "arguments.file.filenme: unexpected member (did you mean \"filename\"?)",
//!     "arguments.file.filename: missing (required for driver \"file\"), expected str",
//! ]);
//!
//! assert!(schema.has("blockdev-add/arg-type/+file/aio")?);
//! assert!(schema.has("query-status/ret-type/running")?);
//! assert!(!schema.has("blockdev-add/arg-type/+file/no-such-member")?);
//! # Ok::<(), qmp_schema::Error>(())
//! ```
#![forbid(unsafe_code)]

mod check;
mod describe;
mod error;
mod known;
mod path;
mod schema;
mod text;

pub use check::{
    Feature, MAX_DEPTH, MAX_PROBLEMS, Problem, ProblemKind, Report, Subject, Unchecked,
    UncheckedReason, Verdict, Warning,
};
pub use describe::{Description, MemberShape, Named, Shape, Union, UnionVariant};
pub use error::Error;
pub use schema::Schema;
