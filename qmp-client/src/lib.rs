//! An async QEMU Monitor Protocol (QMP) client, with a blocking facade and a mock server.
//!
//! * [`Client`]: connect to a QMP unix socket (or run over any byte stream), read the
//!   greeting, negotiate capabilities (`oob` when offered), and run any number of commands
//!   concurrently from any number of tasks; replies are matched by id. Per-command
//!   timeouts, a command-capability cache (`query-commands`), `getfd`/`add-fd`/`remove-fd`
//!   with the descriptor in the command's own `sendmsg`, HMP, and bounded event
//!   [`Subscription`]s that report lag instead of blocking or growing.
//! * [`Request`]: a command with its options (arguments, timeout, `exec-oob`,
//!   descriptors), for [`Client::call`].
//! * [`ReconnectingClient`]: connects lazily and reconnects after the monitor came back.
//! * [`blocking::Client`]: the same operations without an async runtime.
//! * [`session::Session`]: the protocol core with no I/O and no clock, which both clients
//!   drive; usable from any event loop.
//! * `mock` (cargo feature `mock`): a scriptable mock QMP server for tests and benchmarks.
//!
//! One error type, [`Error`], keeps the server's error replies ([`Error::Qmp`]) apart from
//! transport failures ([`Error::Disconnected`], [`Error::Timeout`], ...) and caller
//! mistakes ([`Error::InvalidRequest`], [`Error::CommandNotSupported`]).
//!
//! # Which file owns what
//!
//! | file | owns |
//! | --- | --- |
//! | `session.rs` | the sans-IO protocol core: negotiation, ids, the outgoing queue and the bytes in it, deadlines, the capability cache, the event queue |
//! | `request.rs` | [`Request`], and the requests of the typed helpers (`getfd`, HMP, ...) |
//! | `client.rs` | the async handle: [`ClientBuilder`], [`Client`] (public API only) |
//! | `driver.rs` | the async glue: the one task per connection that reads, writes (the only writer) and runs timers; the socket registration; callers waiting for queue room |
//! | `socket.rs` | the one function both clients write with (`sendmsg` with descriptors, `send` without), the shared read buffer |
//! | `blocking.rs` | [`blocking::Client`]: the same session driven by blocking calls, one write path |
//! | `events.rs` | [`Subscription`]s and their fan-out |
//! | `reconnect.rs` | [`ReconnectingClient`] |
//! | `error.rs` | [`Error`], [`DisconnectReason`] |
//! | `mock.rs` | the mock QMP server (feature `mock`) |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), qmp_client::Error> {
//! # let server = qmp_client::mock::MockServer::builder().start();
//! # let socket = server.path();
//! use std::time::Duration;
//! use qmp_client::{Client, EventFilter, Request};
//!
//! let client = Client::connect(socket).await?;
//! println!("QEMU {}", client.greeting().version.qemu);
//! assert!(client.supports("stop"));
//!
//! let mut resumed = client.subscribe(EventFilter::names(["RESUME"]));
//! client.execute("cont", ()).await?;
//! # server.accepted().await.event("RESUME", None);
//! let event = resumed.wait(Duration::from_secs(5)).await?;
//! assert_eq!(event.event, "RESUME");
//!
//! let status = client.call(Request::new("query-status").timeout(Duration::from_secs(1))).await?;
//! # let _ = status;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// `Error::InvalidArguments` carries its first problem's path, expected, found and
// suggestion beside the full list, as callers match on them; errors are off the hot path
// (a reply is `Ok`), so their size is not boxed away.
#![allow(clippy::result_large_err)]

pub mod blocking;
mod client;
mod driver;
mod error;
mod events;
pub mod hmp;
mod limits;
#[cfg(feature = "mock")]
pub mod mock;
mod reconnect;
mod request;
pub mod session;
mod socket;

pub use client::{CHECK_ARGUMENTS_ENV, Client, ClientBuilder};
pub use error::{DisconnectReason, Error};
pub use events::{DEFAULT_SUBSCRIPTION_CAPACITY, EventFilter, Subscription};
pub use limits::ParserLimit;
pub use qmp_codec::{self, Capability, ErrorClass, Event, Greeting, QemuVersion, Timestamp};
pub use qmp_codec::{AddFdInfo, FdsetFdInfo, FdsetInfo};
pub use qmp_schema::{self, Schema};
pub use reconnect::ReconnectingClient;
pub use request::Request;
pub use session::{EventItem, Stats};

/// Locks `mutex`, going on after a panic elsewhere: every critical section in this crate
/// leaves its data consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
