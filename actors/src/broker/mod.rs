//! The broker: maps channel names to subscriber addresses and fans events out.
//!
//! The node runs N [`BrokerShard`] actors, each on its own thread, and a channel always lives on
//! the shard its name hashes to, so there is no lock on the fan-out path and N cores share the
//! work. [`BrokerHandle`] is the cheap, cloneable front door that routes by hash.
//!
//! Messages (who sends them, what they reply):
//! - [`Subscribe`]: session → shard; registers the session's recipient for a channel and replies
//!   with the channel's current offset and epoch (and the events to replay when recovering).
//! - [`Unsubscribe`]: session → shard, fire-and-forget; removes the session from channels.
//! - [`Publish`]: publisher (REST, session, scheduler, …) → shard; assigns the next offset, keeps it in
//!   history, fans out, replies with a [`PublishAck`].
//! - fan-out: shard → session's [`Outbox`] (one shared envelope appended within the session's
//!   bounds), plus a [`Wake`] sent with `try_send` when the session has none outstanding.
//! - [`Relay`]: Redis bridge → shard (cluster mode); one envelope from Redis to fan out.
//! - [`ReadHistory`]: history API → shard (embedded mode); replies with retained events.
//! - [`ChannelStats`]: admin → shard; replies with channel and subscriber counts.
//!
//! Engines: with no Redis, a shard keeps each channel's offsets and history itself. In cluster
//! mode, publishing is one atomic step in Redis ([`crate::cluster`]) and events come back through
//! the [`RedisBridge`] as [`Relay`]s; shards tell the bridge when a channel gains its first or
//! loses its last local subscriber. If Redis stays unreachable after the retries, the event is
//! still delivered to this node's subscribers (under the shard's local epoch, so clients see the
//! history break) and the publisher gets [`BrokerError::Unavailable`].

mod shard;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

pub use shard::BrokerShard;

use crate::channel::ChannelName;
use crate::cluster::Cluster;
use crate::envelope::{Draft, Envelope, StreamPosition};
use crate::history::{HistoryLimits, Recovery};
use crate::ids::{ConnId, NodeId};
use crate::mailbox::ActorLimits;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Wake};
use crate::redis_bridge::{RedisBridge, WhenListening};
use crate::shutdown::ShutdownController;

/// A session as the broker sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    /// Woken when its outbox goes from idle to holding events.
    pub wake: Recipient<Wake>,
    pub outbox: Arc<Outbox>,
}

/// Sent by a session to the shard of `channel`; replies with [`Subscribed`].
#[derive(Message)]
#[rtype(result = "Subscribed")]
pub struct Subscribe {
    pub channel: ChannelName,
    pub subscriber: Subscriber,
    /// Where the client says it left off, to recover what it missed.
    pub since: Option<StreamPosition>,
}

/// The channel's position at the moment the subscriber was registered.
#[derive(Debug)]
pub struct Subscribed {
    /// Offset of the channel's last event (0 if none).
    pub offset: u64,
    pub epoch: Arc<str>,
    /// Present when the subscribe carried `since`.
    pub recovery: Option<Recovery>,
}

/// Sent by a session to a shard when it leaves channels (or closes); no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub conn: ConnId,
    pub channels: Vec<ChannelName>,
}

/// Sent by any publisher to the shard of the draft's channel; replies with the ack.
#[derive(Message)]
#[rtype(result = "PublishAck")]
pub struct Publish {
    pub draft: Draft,
}

/// A published event's identity and place in its channel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PublishAck {
    pub id: Arc<str>,
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// Sent by the Redis bridge to the shard of the envelope's channel: fan it out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Relay {
    pub env: Arc<Envelope>,
}

/// Sent by the history API to a shard (embedded mode); replies with retained events.
#[derive(Message)]
#[rtype(result = "HistoryPage")]
pub struct ReadHistory {
    pub channel: ChannelName,
    pub since: Option<StreamPosition>,
    pub limit: usize,
}

/// A channel's position and retained events (oldest first).
#[derive(Debug, serde::Serialize)]
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

/// Sent by the admin API to every shard; replies with that shard's figures.
#[derive(Message)]
#[rtype(result = "ShardStats")]
pub struct ChannelStats {
    /// Only channels whose name starts with this prefix (e.g. `tenant:acme:`).
    pub prefix: String,
}

/// One shard's channels with their subscriber counts.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub channels: Vec<(String, usize)>,
}

/// Why the broker could not take a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker's mailbox stayed full for {0:?}; retry later")]
    Busy(Duration),
    #[error("the broker has stopped")]
    Stopped,
    /// Cluster mode: Redis stayed unreachable; delivered to this node's subscribers only.
    #[error("the cluster is unreachable ({0}); the event reached this node's subscribers only and was not relayed to other nodes")]
    Unavailable(String),
}

impl BrokerError {
    /// The wire error code a client gets for this (a refused subscribe or publish).
    pub fn code(&self) -> crate::codes::ErrorCode {
        use crate::codes::ErrorCode;
        match self {
            BrokerError::Busy(_) => ErrorCode::Busy,
            BrokerError::Stopped => ErrorCode::Internal,
            BrokerError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// What every shard is configured with.
#[derive(Clone)]
pub struct BrokerConfig {
    pub shards: usize,
    pub history: HistoryLimits,
    /// How long a publisher or subscriber waits for room in a full shard mailbox.
    pub request_timeout: Duration,
    pub origin: NodeId,
    /// Cluster mode: the bridge shards report channel interest to.
    pub bridge: Option<Addr<RedisBridge>>,
    /// Where shards report deliveries per tenant (the activity recorder), never waiting.
    pub activity: crate::activity::ActivitySink,
}

/// Cluster mode's engine: Redis commands and the bridge.
#[derive(Clone)]
pub struct ClusterLink {
    pub cluster: Cluster,
    pub bridge: Addr<RedisBridge>,
}

/// Routes broker requests to the shard that owns each channel.
#[derive(Clone)]
pub struct BrokerHandle {
    shards: Arc<[Addr<BrokerShard>]>,
    hasher: RandomState,
    request_timeout: Duration,
    history: HistoryLimits,
    cluster: Option<ClusterLink>,
}

impl BrokerHandle {
    /// Starts `config.shards` shards, each on a thread of its own (owned by the node's
    /// shutdown, which stops them last).
    pub fn start(
        config: BrokerConfig,
        cluster: Option<ClusterLink>,
        limits: Arc<ActorLimits>,
        metrics: Arc<Metrics>,
        threads: &ShutdownController,
    ) -> Self {
        let n = config.shards.max(1);
        let mut shards = Vec::with_capacity(n);
        for index in 0..n {
            let thread = threads.spawn_thread(format!("broker shard {index}"));
            let (cfg, limits, metrics) = (config.clone(), limits.clone(), metrics.clone());
            let addr = BrokerShard::start_in_arbiter(&thread, move |_| {
                BrokerShard::new(index, cfg, limits, metrics)
            });
            shards.push(addr);
        }
        Self {
            shards: shards.into(),
            hasher: RandomState::new(),
            request_timeout: config.request_timeout,
            history: config.history,
            cluster,
        }
    }

    fn index_of(&self, channel: &ChannelName) -> usize {
        (self.hasher.hash_one(channel.as_str()) % self.shards.len() as u64) as usize
    }

    /// The shard that owns `channel`. Each call returns a fresh address clone: actix parks a
    /// sender handle whose message hit a full mailbox, so concurrent requests must not share one.
    pub fn shard_for(&self, channel: &ChannelName) -> Addr<BrokerShard> {
        self.shards[self.index_of(channel)].clone()
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The cluster engine, in cluster mode.
    pub fn cluster(&self) -> Option<&ClusterLink> {
        self.cluster.as_ref()
    }

    /// Publishes: in Redis (cluster mode), else through the owning shard. Waits at most the
    /// request timeout for mailbox room.
    pub async fn publish(&self, draft: Draft) -> Result<PublishAck, BrokerError> {
        let Some(link) = &self.cluster else {
            let shard = self.shard_for(&draft.channel);
            return self.request(shard, Publish { draft }).await;
        };
        match link.cluster.publish(&draft).await {
            Ok(ack) => Ok(ack),
            Err(e) => {
                // Local delivery goes on; the publisher learns it was not relayed.
                link.cluster.metrics().unrelayed.inc();
                log::warn!(
                    "publish to {} not relayed: {e}; delivering locally",
                    draft.channel
                );
                let shard = self.shard_for(&draft.channel);
                self.request(shard, Publish { draft }).await?;
                Err(BrokerError::Unavailable(e.to_string()))
            }
        }
    }

    /// Registers a subscriber with the owning shard, then (cluster mode) waits for the Redis
    /// subscription and reads the channel's position — in that order, so every event after the
    /// position arrives live, and overlaps are removed by offset.
    pub async fn subscribe(&self, msg: Subscribe) -> Result<Subscribed, BrokerError> {
        let channel = msg.channel.clone();
        let since = msg.since.clone();
        let shard = self.shard_for(&msg.channel);
        let local = self.request(shard, msg).await?;
        let Some(link) = &self.cluster else {
            return Ok(local);
        };
        let listening = link
            .bridge
            .send(WhenListening(channel.clone()))
            .timeout(self.request_timeout)
            .await
            .unwrap_or(false);
        if !listening {
            // Redis unreachable: serve locally; the subscription resumes when Redis returns.
            return Ok(local);
        }
        match link
            .cluster
            .position(&channel, since.as_ref(), self.history.size)
            .await
        {
            Ok(p) => Ok(Subscribed {
                offset: p.offset,
                epoch: p.epoch,
                recovery: p.recovery,
            }),
            Err(e) => {
                log::warn!("position of {channel} unavailable: {e}; serving locally");
                Ok(local)
            }
        }
    }

    /// A channel's retained events after `since` (or the latest `limit` ones).
    pub async fn history(
        &self,
        channel: &ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let Some(link) = &self.cluster else {
            let shard = self.shard_for(channel);
            return self
                .request(
                    shard,
                    ReadHistory {
                        channel: channel.clone(),
                        since,
                        limit,
                    },
                )
                .await;
        };
        let unavailable = |e: crate::cluster::ClusterError| BrokerError::Unavailable(e.to_string());
        let asked = since.is_some();
        let since = match since {
            Some(s) => s,
            None => {
                let now = link
                    .cluster
                    .position(channel, None, 1)
                    .await
                    .map_err(unavailable)?;
                StreamPosition {
                    offset: now.offset.saturating_sub(limit as u64),
                    epoch: now.epoch.to_string(),
                }
            }
        };
        let p = link
            .cluster
            .position(channel, Some(&since), limit)
            .await
            .map_err(unavailable)?;
        let recovery = p.recovery.unwrap_or(Recovery {
            recovered: false,
            replay: Vec::new(),
        });
        Ok(HistoryPage {
            offset: p.offset,
            epoch: p.epoch,
            recovered: asked.then_some(recovery.recovered),
            events: recovery.replay,
        })
    }

    async fn request<M>(&self, shard: Addr<BrokerShard>, msg: M) -> Result<M::Result, BrokerError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        BrokerShard: Handler<M>,
    {
        match shard.send(msg).timeout(self.request_timeout).await {
            Ok(r) => Ok(r),
            Err(MailboxError::Timeout) => Err(BrokerError::Busy(self.request_timeout)),
            Err(MailboxError::Closed) => Err(BrokerError::Stopped),
        }
    }

    /// Removes `conn` from `channels`, one message per shard involved.
    pub fn unsubscribe(&self, conn: ConnId, channels: impl IntoIterator<Item = ChannelName>) {
        let mut by_shard: HashMap<usize, Vec<ChannelName>> = HashMap::new();
        for c in channels {
            by_shard.entry(self.index_of(&c)).or_default().push(c);
        }
        for (i, channels) in by_shard {
            // do_send: bookkeeping must not be lost to a full mailbox; it is bounded by the
            // number of sessions, not by traffic.
            self.shards[i].do_send(Unsubscribe { conn, channels });
        }
    }

    /// Channel and subscriber counts across all shards.
    pub async fn channel_stats(&self, prefix: &str) -> Result<Vec<(String, usize)>, BrokerError> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let stats = self
                .request(
                    shard.clone(),
                    ChannelStats {
                        prefix: prefix.to_owned(),
                    },
                )
                .await?;
            all.extend(stats.channels);
        }
        all.sort();
        Ok(all)
    }
}
