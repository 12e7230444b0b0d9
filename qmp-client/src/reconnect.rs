//! A handle that connects lazily and reconnects on demand, like Ganeti's
//! `@_ensure_connection`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{Client, ClientBuilder};
use crate::error::{DisconnectReason, Error};
use crate::events::{DEFAULT_SUBSCRIPTION_CAPACITY, EventFilter, EventHub, Subscription};

/// Connects on first use, and again on the next call after the monitor went away and came
/// back (QEMU's QMP socket accepts a new client once the old one has closed): new greeting,
/// new negotiation, fresh capability cache.
///
/// A call that was in flight when the connection dropped fails with
/// [`Error::Disconnected`]: its outcome is unknown, so it is never retried behind the
/// caller's back. Subscriptions made here survive reconnections; events the server emitted
/// while no connection was up are reported as an [`EventItem::Gap`](crate::EventItem::Gap).
///
/// ```no_run
/// # async fn example() -> Result<(), qmp_client::Error> {
/// let vm = qmp_client::ReconnectingClient::new("/run/vm/qmp.sock", qmp_client::Client::builder());
/// vm.execute("stop", ()).await?; // connects now
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReconnectingClient {
    path: PathBuf,
    builder: ClientBuilder,
    hub: Arc<EventHub>,
    current: tokio::sync::Mutex<Option<Client>>,
    connections: std::sync::atomic::AtomicU64,
}

impl ReconnectingClient {
    /// A handle for the socket at `path`; nothing is connected yet.
    pub fn new(path: impl AsRef<Path>, builder: ClientBuilder) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            builder,
            hub: Arc::default(),
            current: tokio::sync::Mutex::new(None),
            connections: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The live connection, connecting first if there is none or the last one ended.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub async fn client(&self) -> Result<Client, Error> {
        let mut current = self.current.lock().await;
        if let Some(client) = current.as_ref().filter(|client| !client.is_closed()) {
            return Ok(client.clone());
        }
        // Drop the dead connection first so its socket is closed before the new one opens.
        current.take();
        let client =
            self.builder.clone().shared_hub(Arc::clone(&self.hub)).connect(&self.path).await?;
        self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some(client.clone());
        Ok(client)
    }

    /// How many connections were made so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`Client::execute`] on the live connection.
    ///
    /// # Errors
    /// As [`ReconnectingClient::client`] and [`Client::execute`].
    pub async fn execute(&self, command: &str, arguments: impl Serialize) -> Result<Value, Error> {
        self.client().await?.execute(command, arguments).await
    }

    /// [`Client::execute_as`] on the live connection.
    ///
    /// # Errors
    /// As [`ReconnectingClient::client`] and [`Client::execute_as`].
    pub async fn execute_as<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: impl Serialize,
    ) -> Result<T, Error> {
        self.client().await?.execute_as(command, arguments).await
    }

    /// Events that pass `filter`, across reconnections.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        self.hub.subscribe(filter, DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// Closes the current connection, if any; the next call connects again.
    pub async fn close(&self) {
        if let Some(client) = self.current.lock().await.take() {
            client.close().await;
        }
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        self.hub.close(&DisconnectReason::Closed);
    }
}
