//! An async QEMU Monitor Protocol (QMP) client, with a blocking facade and a mock server.
//!
//! * [`Client`]: connect to a QMP unix socket (or run over any byte stream), read the
//!   greeting, negotiate capabilities (`oob` when offered), and run any number of commands
//!   concurrently from any number of tasks; replies are matched by id. Per-command
//!   timeouts, a command-capability cache (`query-commands`), `getfd`/`add-fd`/`remove-fd`
//!   with the descriptor in the command's own `sendmsg`, HMP, and bounded event
//!   [`Subscription`]s that report lag instead of blocking or growing.
//! * [`ReconnectingClient`]: connects lazily and reconnects after the monitor came back.
//! * [`blocking::Client`]: the same operations without an async runtime.
//! * [`session::Session`]: the protocol core with no I/O and no clock, which both clients
//!   drive; usable from any event loop.
//! * `mock` (cargo feature `mock`): a scriptable mock QMP server for tests.
//!
//! One error type, [`Error`], keeps the server's error replies ([`Error::Qmp`]) apart from
//! transport failures ([`Error::Disconnected`], [`Error::Timeout`], ...) and caller
//! mistakes ([`Error::InvalidRequest`], [`Error::CommandNotSupported`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), qmp_client::Error> {
//! # let server = qmp_client::mock::MockServer::builder().start();
//! # let socket = server.path();
//! use std::time::Duration;
//! use qmp_client::{Client, EventFilter};
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
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod blocking;
mod client;
mod error;
mod events;
#[cfg(feature = "mock")]
pub mod mock;
mod reconnect;
mod requests;
pub mod session;

pub use client::{Client, ClientBuilder};
pub use error::{DisconnectReason, Error};
pub use events::{DEFAULT_SUBSCRIPTION_CAPACITY, EventFilter, Subscription};
pub use qmp_codec::{self, Capability, ErrorClass, Event, Greeting, QemuVersion, Timestamp};
pub use qmp_codec::{AddFdInfo, FdsetFdInfo, FdsetInfo};
pub use reconnect::ReconnectingClient;
pub use requests::CallOptions;
pub use session::{EventItem, Stats};

/// Locks `mutex`, going on after a panic elsewhere: every critical section in this crate
/// leaves its data consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
