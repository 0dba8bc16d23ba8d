//! Rooms: channel name → subscribers, each channel's offset counter, and the fan-out of one
//! published event to every subscriber's outbound queue.
//!
//! Publishes to one channel are serialized by that room's lock, so offsets reach every subscriber in
//! order. Each frame is encoded once per wire format and shared by reference count.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::frames::{self, Notification, ServerIdentity};

/// Number of independently locked shards of the channel map.
const CHANNEL_MAP_SHARDS: usize = 64;

/// Which wire format a subscriber receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Native,
    SignalR,
}

/// One connection's membership in a room.
pub struct Subscriber {
    pub connection_id: u64,
    pub protocol: Protocol,
    pub outbox: mpsc::Sender<Message>,
}

#[derive(Default)]
struct RoomState {
    offset: u64,
    subscribers: Vec<Subscriber>,
}

#[derive(Default)]
struct Room {
    state: tokio::sync::Mutex<RoomState>,
}

/// What a publish returns to the HTTP caller.
pub struct Published {
    pub id: String,
    pub offset: u64,
}

/// The channel registry of the whole server.
pub struct Rooms {
    shards: Vec<Mutex<HashMap<Box<str>, Arc<Room>>>>,
    /// How long a publish waits on one subscriber's full queue before dropping that subscriber.
    slow_consumer_grace: Duration,
    /// Subscribers removed because their queue stayed full past the grace period.
    slow_consumers_dropped: AtomicU64,
}

impl Rooms {
    pub fn new(slow_consumer_grace: Duration) -> Self {
        Self {
            shards: (0..CHANNEL_MAP_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            slow_consumer_grace,
            slow_consumers_dropped: AtomicU64::new(0),
        }
    }

    pub fn slow_consumers_dropped(&self) -> u64 {
        self.slow_consumers_dropped.load(Ordering::Relaxed)
    }

    fn room(&self, channel: &str) -> Arc<Room> {
        let mut hasher = DefaultHasher::new();
        channel.hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() as usize) % self.shards.len()];
        let mut map = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(room) = map.get(channel) {
            return Arc::clone(room);
        }
        let room = Arc::new(Room::default());
        map.insert(channel.into(), Arc::clone(&room));
        room
    }

    /// Adds the subscriber and, under the same lock, queues the reply `make_reply(offset)` so that
    /// no notification can overtake the confirmation.
    pub async fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        make_reply: impl FnOnce(u64) -> Utf8Bytes,
    ) {
        let room = self.room(channel);
        let mut state = room.state.lock().await;
        let reply = make_reply(state.offset);
        // The queue is fresh or lightly used at subscribe time; a failure means the peer is gone.
        if subscriber.outbox.send(Message::Text(reply)).await.is_ok() {
            state.subscribers.push(subscriber);
        }
    }

    pub async fn unsubscribe(&self, channel: &str, connection_id: u64) {
        let room = self.room(channel);
        let mut state = room.state.lock().await;
        state
            .subscribers
            .retain(|s| s.connection_id != connection_id);
    }

    /// Assigns the channel's next offset and queues the event to every subscriber.
    pub async fn publish(
        &self,
        identity: &ServerIdentity,
        channel: &str,
        event: &str,
        data: &RawValue,
    ) -> Published {
        let room = self.room(channel);
        let mut state = room.state.lock().await;
        state.offset += 1;
        let offset = state.offset;
        let id = identity.next_message_id();
        let timestamp = frames::rfc3339_now();
        let notification = Notification {
            id: &id,
            channel,
            event,
            data,
            offset,
            epoch: identity.epoch(),
            timestamp: &timestamp,
        };
        let mut native: Option<Utf8Bytes> = None;
        let mut signalr: Option<Utf8Bytes> = None;
        let mut gone: Vec<usize> = Vec::new();
        for (index, subscriber) in state.subscribers.iter().enumerate() {
            let frame = match subscriber.protocol {
                Protocol::Native => native
                    .get_or_insert_with(|| frames::native_notification(&notification))
                    .clone(),
                Protocol::SignalR => signalr
                    .get_or_insert_with(|| frames::signalr_notification(&notification))
                    .clone(),
            };
            match subscriber.outbox.try_send(Message::Text(frame)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(index),
                Err(mpsc::error::TrySendError::Full(message)) => {
                    // Backpressure: wait for this consumer, but not forever.
                    let sent = tokio::time::timeout(
                        self.slow_consumer_grace,
                        subscriber.outbox.send(message),
                    )
                    .await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => gone.push(index),
                        Err(_) => {
                            self.slow_consumers_dropped.fetch_add(1, Ordering::Relaxed);
                            gone.push(index);
                        }
                    }
                }
            }
        }
        // Remove from the back so earlier indices stay valid.
        for index in gone.into_iter().rev() {
            state.subscribers.swap_remove(index);
        }
        Published { id, offset }
    }
}
