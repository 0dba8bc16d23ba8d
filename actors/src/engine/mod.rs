//! The engine seam, as centrifuge has it (`broker.go` + `broker_memory.go` + `broker_redis.go`):
//! what the broker asks of whatever keeps channels' offsets and history and carries events between
//! nodes, with one implementation per mode, chosen once at start-up ([`Engine`]).
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the traits ([`BrokerEngine`], [`Shards`]), the values they exchange, [`Interest`] |
//! | `embedded.rs` | one node: [`embedded::EmbeddedEngine`] (the broker shards keep offsets and history) and [`embedded::EmbeddedPresence`] |
//! | `redis/` | cluster mode over one Redis or a Redis Cluster (sharded pub/sub): [`redis::RedisEngine`] (Redis keeps offsets and history, pub/sub carries events between nodes), [`redis::RedisPresence`] (cluster-wide presence), their commands, the [`redis::bridge::RedisBridge`] actor and the ingest stream |
//!
//! Which way each side knows the other: the broker holds an `Arc<dyn BrokerEngine>` and tells the
//! engine about channel interest by sending [`Interest`] to a recipient it was given; an engine
//! holds the node's shards as an `Arc<dyn Shards>` (implemented by the broker). Neither names the
//! other's types, so a new engine plugs in here without touching the broker (the Redis Cluster
//! engine is the Redis engine over a cluster connection: `redis/connection.rs`).
//!
//! Presence has its own seam ([`crate::presence::PresenceEngine`]); each engine here implements
//! it too, so a mode is one directory.

pub mod embedded;
pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::channel::ChannelName;
use crate::envelope::{Draft, Envelope, StreamPosition};
use crate::history::Recovery;
pub use crate::publish_path::{BrokerError, PublishAck};

/// A channel's position at the moment a subscriber was registered.
#[derive(Debug)]
pub struct Subscribed {
    /// Offset of the channel's last event (0 if none).
    pub offset: u64,
    pub epoch: Arc<str>,
    /// Present when the subscribe carried `since`.
    pub recovery: Option<Recovery>,
}

/// A channel's position and retained events (oldest first).
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub offset: u64,
    pub epoch: Arc<str>,
    /// With `since`: whether every event after it is in `events` (up to the limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(serialize_with = "serialize_events")]
    pub events: Vec<Arc<Envelope>>,
}

fn serialize_events<S: serde::Serializer>(
    events: &[Arc<Envelope>],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(events.len()))?;
    for e in events {
        seq.serialize_element(&**e)?;
    }
    seq.end()
}

/// Sent by a broker shard to the engine's interest recipient when a channel gains its first
/// (`listening: true`) or loses its last (`false`) subscriber on this node; no reply. An engine
/// that carries events between nodes subscribes to exactly these channels.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Interest {
    pub channel: ChannelName,
    pub listening: bool,
}

/// What handing an event to this node's shards came to.
pub enum Delivery {
    /// Queued for its channel's shard.
    Queued,
    /// The shard's mailbox is full: the future resolves once it took the event. The caller waits
    /// for it before handing over more (backpressure), so channel order holds.
    Full(BoxFuture<'static, ()>),
    /// The broker has stopped.
    Stopped,
}

/// This node's broker shards, as an engine uses them. Implemented by the broker.
pub trait Shards: Send + Sync + 'static {
    /// Gives `draft` the next offset in its channel's local history and fans it out here (the
    /// embedded engine's publish; in cluster mode, the local delivery of an event Redis refused).
    fn append(&self, draft: Draft) -> BoxFuture<'static, Result<PublishAck, BrokerError>>;
    /// [`append`](Self::append) for drafts of any channels, each channel's in their order: one
    /// message to each shard involved; one answer per draft, in the order given.
    fn append_run(
        &self,
        drafts: Vec<Draft>,
    ) -> BoxFuture<'static, Vec<Result<PublishAck, BrokerError>>>;
    /// Fans out an event that already has its offset (carried from Redis).
    fn deliver(&self, env: Arc<Envelope>) -> Delivery;
    /// The local history of `channel` after `since` (or its latest `limit` events).
    fn read_history(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'static, Result<HistoryPage, BrokerError>>;
}

/// The engine's connection state, for `/health/ready` and the admin API.
#[derive(Clone, Debug)]
pub struct EngineStatus {
    /// `embedded` or `cluster` (the `mode` of `/health/ready`).
    pub mode: &'static str,
    /// Whether the engine can carry events now (always true for the embedded engine).
    pub connected: bool,
    /// The engine's own figures (the Redis bridge's state), `null` for the embedded engine.
    pub detail: serde_json::Value,
}

/// Answers gathered in groups, each with its place among `count` requests, put back in the order
/// the requests were given.
pub fn in_given_order<T>(count: usize, groups: Vec<Vec<(usize, T)>>) -> Vec<T> {
    let mut placed: Vec<(usize, T)> = groups.into_iter().flatten().collect();
    debug_assert_eq!(placed.len(), count, "one answer per request");
    placed.sort_unstable_by_key(|(place, _)| *place);
    placed.into_iter().map(|(_, answer)| answer).collect()
}

/// What keeps channels' offsets and history and carries events to every node's subscribers.
pub trait BrokerEngine: Send + Sync + 'static {
    /// Gives `draft` its offset, keeps it in history and delivers it to the subscribers of every
    /// node (this one included).
    fn publish(&self, draft: Draft) -> BoxFuture<'static, Result<PublishAck, BrokerError>>;
    /// Publishes `drafts`, of any channels, keeping each channel's drafts in their order (each
    /// offset after the one before it); one answer per draft, in the order given. What a
    /// connection's pipelined publishes and a `publish/batch` come to (`connection/publish_lanes.rs`).
    /// By default each channel's drafts one after another, each answered before the next starts,
    /// and different channels' side by side: [`publish`](Self::publish)'s futures do nothing
    /// until polled, so creating them up front starts none of them early.
    fn publish_run(
        &self,
        drafts: Vec<Draft>,
    ) -> BoxFuture<'static, Vec<Result<PublishAck, BrokerError>>> {
        let count = drafts.len();
        // Each channel's publishes, in order, with their places in `drafts`.
        let mut chains: Vec<Vec<(usize, BoxFuture<'static, _>)>> = Vec::new();
        let mut chain_of: HashMap<ChannelName, usize> = HashMap::new();
        for (place, draft) in drafts.into_iter().enumerate() {
            let chain = *chain_of.entry(draft.channel.clone()).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[chain].push((place, self.publish(draft)));
        }
        Box::pin(async move {
            let chains = chains.into_iter().map(|chain| async move {
                let mut answers = Vec::with_capacity(chain.len());
                for (place, publish) in chain {
                    answers.push((place, publish.await));
                }
                answers
            });
            in_given_order(count, futures_util::future::join_all(chains).await)
        })
    }
    /// Where a subscriber that this node's shard just registered (`local`: the shard's view)
    /// starts, and with `since`, what it missed. Every event after the returned position reaches
    /// the subscriber live.
    fn subscribed(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        local: Subscribed,
    ) -> BoxFuture<'static, Subscribed>;
    /// A channel's retained events after `since` (or its latest `limit` events).
    fn history(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'static, Result<HistoryPage, BrokerError>>;
    /// The engine's state.
    fn status(&self) -> BoxFuture<'static, EngineStatus>;
    /// Whether another node has a subscriber of `channel` (asked once this node's shard has
    /// none). The embedded engine has no other node.
    fn listened_elsewhere(
        &self,
        channel: ChannelName,
    ) -> BoxFuture<'static, Result<bool, BrokerError>> {
        let _ = channel;
        Box::pin(async { Ok(false) })
    }
}
