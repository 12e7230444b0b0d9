//! Event fan-out for the async client: every subscriber has its own bounded queue, so a
//! slow one never blocks the connection, never grows memory, and is told how much it missed.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use qmp_codec::Event;
use tokio::sync::Notify;

use crate::error::{DisconnectReason, Error};
use crate::session::EventItem;

type Predicate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Which events a subscriber wants: all, some names, and optionally a predicate.
#[derive(Clone, Default)]
pub struct EventFilter {
    /// Sorted and without duplicates: a filter names a handful of events, where a binary
    /// search beats hashing the name of every event that arrives.
    names: Option<Box<[String]>>,
    predicate: Option<Predicate>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events with one of these names.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        names.sort_unstable();
        names.dedup();
        Self { names: Some(names.into_boxed_slice()), predicate: None }
    }

    /// Also require `predicate` to hold, e.g. `|e| e.data.as_ref().is_some_and(|d| d["device"] == "nic0")`.
    #[must_use]
    pub fn matching(mut self, predicate: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        self.names.as_ref().is_none_or(|names| {
            names.binary_search_by(|name| name.as_str().cmp(&event.event)).is_ok()
        }) && self.predicate.as_ref().is_none_or(|predicate| predicate(event))
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFilter")
            .field("names", &self.names)
            .field("predicate", &self.predicate.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// Default queue length of one subscription.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 256;

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<EventItem>,
    events: usize,
    missed: u64,
    closed: Option<DisconnectReason>,
}

#[derive(Debug)]
struct Shared {
    filter: EventFilter,
    capacity: usize,
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        crate::lock(&self.queue)
    }

    /// Queues `item`; `true` when the queue is now at least half full.
    fn push(&self, item: EventItem) -> bool {
        let mut queue = self.lock();
        if queue.closed.is_some() {
            return false;
        }
        if matches!(item, EventItem::Event(_)) {
            if queue.events >= self.capacity {
                // Drop the oldest event (markers are kept): the receiver learns it from
                // `Lagged` before anything that is still queued.
                if let Some(at) = queue.items.iter().position(|i| matches!(i, EventItem::Event(_)))
                {
                    queue.items.remove(at);
                    queue.events -= 1;
                    queue.missed += 1;
                }
            }
            queue.events += 1;
        }
        queue.items.push_back(item);
        let backed_up = queue.events * 2 >= self.capacity;
        drop(queue);
        self.notify.notify_one();
        backed_up
    }

    fn close(&self, reason: DisconnectReason) {
        self.lock().closed.get_or_insert(reason);
        self.notify.notify_one();
    }
}

/// The subscribers of one client (shared across reconnections by a
/// [`ReconnectingClient`](crate::ReconnectingClient)).
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    state: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    /// Every live subscription's queue. The hub holds one reference and the
    /// [`Subscription`] the other, so a count of one means the subscription was dropped.
    subscribers: Vec<Arc<Shared>>,
    /// Set once the hub is closed: later subscriptions end at once instead of waiting forever.
    closed: Option<DisconnectReason>,
}

impl EventHub {
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        filter: EventFilter,
        capacity: usize,
    ) -> Subscription {
        let shared = Arc::new(Shared {
            filter,
            capacity: capacity.max(1),
            queue: Mutex::default(),
            notify: Notify::new(),
        });
        let mut state = self.lock();
        match &state.closed {
            Some(reason) => shared.close(reason.clone()),
            None => state.subscribers.push(Arc::clone(&shared)),
        }
        Subscription { shared }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        crate::lock(&self.state)
    }

    /// Hands `item` to every subscriber it passes (the last one gets it without a copy);
    /// `true` when some subscriber's queue is at least half full, so the reader can let
    /// consumers run before it reads on.
    pub(crate) fn publish(&self, item: EventItem) -> bool {
        self.publish_each(item, || None)
    }

    /// [`EventHub::publish`] for `first` and every item `next` gives, under one lock of
    /// the hub.
    pub(crate) fn publish_each(
        &self,
        first: EventItem,
        mut next: impl FnMut() -> Option<EventItem>,
    ) -> bool {
        let mut state = self.lock();
        state.subscribers.retain(|subscriber| Arc::strong_count(subscriber) > 1);
        let mut backed_up = false;
        let mut item = Some(first);
        while let Some(item) = item.take().or_else(&mut next) {
            let mut previous: Option<&Shared> = None;
            for subscriber in &state.subscribers {
                let wanted = match &item {
                    EventItem::Event(event) => subscriber.filter.matches(event),
                    EventItem::Lagged(_) | EventItem::Gap(_) => true,
                };
                if wanted {
                    if let Some(previous) = previous.replace(subscriber) {
                        backed_up |= previous.push(item.clone());
                    }
                }
            }
            if let Some(last) = previous {
                backed_up |= last.push(item);
            }
        }
        backed_up
    }

    /// The connection ended for good: subscribers get what is queued, then the end.
    pub(crate) fn close(&self, reason: &DisconnectReason) {
        let subscribers = {
            let mut state = self.lock();
            state.closed.get_or_insert_with(|| reason.clone());
            std::mem::take(&mut state.subscribers)
        };
        for subscriber in subscribers {
            subscriber.close(reason.clone());
        }
    }
}

/// A bounded stream of events, from [`Client::subscribe`](crate::Client::subscribe).
///
/// Each subscription has its own queue of `capacity` events. When the consumer falls
/// behind, the oldest events are dropped and the next item is [`EventItem::Lagged`] with
/// how many; the connection is never slowed down. [`Subscription::recv`] returns `None`
/// once the connection has ended and everything queued was taken.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
}

impl Subscription {
    /// The next item, waiting for one; `None` once the connection is gone for good.
    pub async fn recv(&mut self) -> Option<EventItem> {
        loop {
            {
                let mut queue = self.shared.lock();
                if queue.missed > 0 {
                    return Some(EventItem::Lagged(std::mem::take(&mut queue.missed)));
                }
                if let Some(item) = queue.items.pop_front() {
                    if matches!(item, EventItem::Event(_)) {
                        queue.events -= 1;
                    }
                    return Some(item);
                }
                if queue.closed.is_some() {
                    return None;
                }
            }
            // `notify_one` leaves a permit when nobody waits, so a push between the check
            // above and this await is not missed.
            self.shared.notify.notified().await;
        }
    }

    /// Waits for the next event that passes the subscription's filter.
    ///
    /// # Errors
    /// [`Error::EventTimeout`] after `timeout`; [`Error::EventsLost`] if events were
    /// dropped meanwhile (the awaited one may have been among them); [`Error::Disconnected`]
    /// if the connection was lost (the awaited event may have been missed).
    pub async fn wait(&mut self, timeout: Duration) -> Result<Event, Error> {
        let next = async {
            match self.recv().await {
                Some(EventItem::Event(event)) => Ok(event),
                Some(EventItem::Lagged(n)) => Err(Error::EventsLost(n)),
                Some(EventItem::Gap(reason)) => Err(Error::Disconnected(reason)),
                None => Err(Error::Disconnected(
                    self.shared.lock().closed.clone().unwrap_or(DisconnectReason::Closed),
                )),
            }
        };
        tokio::time::timeout(timeout, next).await.map_err(|_| Error::EventTimeout(timeout))?
    }

    /// Takes an item if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<EventItem> {
        futures::FutureExt::now_or_never(self.recv()).flatten()
    }

    /// The subscription as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = EventItem> + Send + 'static {
        futures::stream::unfold(self, |mut subscription| async move {
            subscription.recv().await.map(|item| (item, subscription))
        })
    }
}
