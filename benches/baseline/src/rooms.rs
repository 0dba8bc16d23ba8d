//! Rooms: channel name → subscribers, each channel's offset counter, and the fan-out of one
//! published event to every subscriber's outbound queue.
//!
//! Publishes to one channel are serialized by that room's lock, so offsets reach every subscriber in
//! order. Each frame is encoded once per wire format and shared by reference count (`Utf8Bytes` is
//! a `Bytes`). A publish never waits: it offers the frame to each queue with `try_send`, and a
//! subscriber whose queue is full is dropped on the spot (counted, and its connection closed), the
//! way Switchyard's `disconnect` slow-consumer policy does. The lock is a plain mutex held only for
//! the offers, never across an `.await`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use crate::frames::{self, Notification, ServerIdentity};

/// Number of independently locked shards of the channel map.
const CHANNEL_MAP_SHARDS: usize = 64;

/// Which wire format a subscriber receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Native,
    SignalR,
    SignalRMsgpack,
}

/// One connection's membership in a room.
pub struct Subscriber {
    pub connection_id: u64,
    pub protocol: Protocol,
    pub outbox: mpsc::Sender<Message>,
    /// Told when the connection is dropped as a slow consumer: its writer closes the socket.
    pub kick: Arc<Notify>,
}

#[derive(Default)]
struct RoomState {
    offset: u64,
    subscribers: Vec<Subscriber>,
}

#[derive(Default)]
struct Room {
    state: Mutex<RoomState>,
}

impl Room {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a publish returns to the caller (HTTP response or `published` frame).
pub struct Published {
    pub id: String,
    pub offset: u64,
}

/// What offering one frame to one subscriber's queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Queued,
    /// The connection is gone (its writer ended).
    Gone,
    /// The queue is full: a slow consumer, dropped.
    Full,
}

fn offer(outbox: &mpsc::Sender<Message>, frame: Message) -> Offer {
    match outbox.try_send(frame) {
        Ok(()) => Offer::Queued,
        Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
    }
}

/// The channel registry of the whole server.
pub struct Rooms {
    shards: Vec<Mutex<HashMap<Box<str>, Arc<Room>>>>,
    /// Subscribers removed because their queue was full when an event was offered.
    slow_consumers_dropped: AtomicU64,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

impl Rooms {
    pub fn new() -> Self {
        Self {
            shards: (0..CHANNEL_MAP_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
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
    /// no notification can overtake the confirmation. A full queue at this point is a slow
    /// consumer like any other.
    pub fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        make_reply: impl FnOnce(u64) -> Message,
    ) {
        let room = self.room(channel);
        let mut state = room.lock();
        let reply = make_reply(state.offset);
        match offer(&subscriber.outbox, reply) {
            Offer::Queued => state.subscribers.push(subscriber),
            Offer::Gone => {}
            Offer::Full => self.drop_slow(&subscriber),
        }
    }

    pub fn unsubscribe(&self, channel: &str, connection_id: u64) {
        let room = self.room(channel);
        room.lock()
            .subscribers
            .retain(|s| s.connection_id != connection_id);
    }

    fn drop_slow(&self, subscriber: &Subscriber) {
        self.slow_consumers_dropped.fetch_add(1, Ordering::Relaxed);
        subscriber.kick.notify_one();
    }

    /// Assigns the channel's next offset and offers the event to every subscriber, without ever
    /// waiting for one.
    pub fn publish(
        &self,
        identity: &ServerIdentity,
        channel: &str,
        event: &str,
        data: &RawValue,
    ) -> Published {
        let room = self.room(channel);
        let mut state = room.lock();
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
        let mut signalr_msgpack: Option<Bytes> = None;
        let mut index = 0;
        while index < state.subscribers.len() {
            let subscriber = &state.subscribers[index];
            let frame = match subscriber.protocol {
                Protocol::Native => Message::Text(
                    native
                        .get_or_insert_with(|| frames::native_notification(&notification))
                        .clone(),
                ),
                Protocol::SignalR => Message::Text(
                    signalr
                        .get_or_insert_with(|| frames::signalr_notification(&notification))
                        .clone(),
                ),
                Protocol::SignalRMsgpack => Message::Binary(
                    signalr_msgpack
                        .get_or_insert_with(|| frames::signalr_msgpack_notification(&notification))
                        .clone(),
                ),
            };
            match offer(&subscriber.outbox, frame) {
                Offer::Queued => index += 1,
                Offer::Gone => {
                    state.subscribers.swap_remove(index);
                }
                Offer::Full => {
                    self.drop_slow(subscriber);
                    state.subscribers.swap_remove(index);
                }
            }
        }
        Published { id, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(id: u64, capacity: usize) -> (Subscriber, mpsc::Receiver<Message>) {
        let (outbox, inbox) = mpsc::channel(capacity);
        let subscriber = Subscriber {
            connection_id: id,
            protocol: Protocol::Native,
            outbox,
            kick: Arc::new(Notify::new()),
        };
        (subscriber, inbox)
    }

    fn data() -> Box<RawValue> {
        RawValue::from_string(r#"{"seq":1}"#.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_drops_that_subscriber_only_and_never_blocks() {
        let rooms = Rooms::new();
        let identity = ServerIdentity::new();
        let (fast, mut fast_inbox) = subscriber(1, 16);
        let (slow, _slow_inbox) = subscriber(2, 2);
        let slow_kick = Arc::clone(&slow.kick);
        rooms.subscribe("c", fast, |_| Message::text("ok"));
        rooms.subscribe("c", slow, |_| Message::text("ok"));
        for _ in 0..3 {
            rooms.publish(&identity, "c", "E", &data());
        }
        assert_eq!(rooms.slow_consumers_dropped(), 1);
        // The slow one was told to close; the kick is stored until its writer waits for it.
        tokio::time::timeout(std::time::Duration::from_secs(1), slow_kick.notified())
            .await
            .expect("slow subscriber kicked");
        let mut received = 0;
        while fast_inbox.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 4, "the confirmation and three notifications");
        let published = rooms.publish(&identity, "c", "E", &data());
        assert_eq!(published.offset, 4);
        assert_eq!(rooms.slow_consumers_dropped(), 1, "dropped once, then gone");
    }

    #[tokio::test]
    async fn gone_subscribers_are_removed_without_counting_as_slow() {
        let rooms = Rooms::new();
        let identity = ServerIdentity::new();
        let (gone, inbox) = subscriber(1, 4);
        rooms.subscribe("c", gone, |_| Message::text("ok"));
        drop(inbox);
        rooms.publish(&identity, "c", "E", &data());
        assert_eq!(rooms.slow_consumers_dropped(), 0);
        assert!(rooms.room("c").lock().subscribers.is_empty());
    }
}
