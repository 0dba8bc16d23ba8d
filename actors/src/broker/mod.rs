//! The broker: maps channel names to subscriber addresses and fans events out.
//!
//! The node runs N [`BrokerShard`] actors, each on its own thread, and a channel always lives on
//! the shard its name hashes to, so there is no lock on the fan-out path and N cores share the
//! work. [`BrokerHandle`] is the cheap, cloneable front door that routes by hash.
//!
//! Messages (who sends them, what they reply):
//! - [`Subscribe`]: connection → shard; registers the connection's recipient for a channel and replies
//!   with the channel's current offset and epoch (and the events to replay when recovering).
//! - [`Unsubscribe`]: connection → shard, fire-and-forget; removes the connection from channels.
//! - [`Publish`]: publisher (REST, connection, scheduler, …) → shard; assigns the next offset, keeps it in
//!   history, fans out, replies with a [`PublishAck`].
//! - [`PublishRun`]: the same for several drafts in order (a connection's pipelined publishes, a
//!   batch's events), one message per shard involved; replies with an ack per draft.
//! - fan-out: shard → connection's [`Outbox`] (one shared envelope appended within the connection's
//!   bounds), plus a wake of the connection's task ([`Outbox::wake`]) when none is outstanding.
//! - [`Relay`]: Redis bridge → shard (cluster mode); one envelope from Redis to fan out.
//! - [`ReadHistory`]: history API → shard (embedded mode); replies with retained events.
//! - [`ChannelStats`]: admin → shard; replies with channel and subscriber counts.
//!
//! Engines ([`crate::engine`]): the broker holds one `Arc<dyn BrokerEngine>`, chosen at start-up.
//! The embedded engine publishes through the owning shard, which keeps the channel's offsets and
//! history; the Redis engine publishes in Redis and hands events back through [`Shards::deliver`].
//! Shards tell the engine when a channel gains its first or loses its last local subscriber
//! ([`Interest`]). [`Publisher`] (`publisher.rs`) is the node's one publish path on top.

mod publisher;
mod shard;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

pub use publisher::Publisher;
pub use shard::BrokerShard;

use crate::channel::ChannelName;
use crate::engine::{in_given_order, BrokerEngine, Delivery, EngineStatus, Interest, Shards};
pub use crate::engine::{BrokerError, HistoryPage, PublishAck, Subscribed};
use crate::envelope::{Draft, Envelope, StreamPosition};
use crate::history::HistoryLimits;
use crate::ids::{ConnId, NodeId};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metered::Metered;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::shutdown::ShutdownController;

/// A connection as the broker sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    /// Its events, and its wake when the outbox goes from idle to holding events.
    pub outbox: Arc<Outbox>,
}

/// Sent by a connection to the shard of `channel`; replies with [`Subscribed`].
#[derive(Message)]
#[rtype(result = "Subscribed")]
pub struct Subscribe {
    pub channel: ChannelName,
    pub subscriber: Subscriber,
    /// Where the client says it left off, to recover what it missed.
    pub since: Option<StreamPosition>,
}

/// Sent by a connection to a shard when it leaves channels (or closes); no reply.
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

/// [`Publish`] for several drafts of this shard's channels, published in the order given (a
/// connection's pipelined publishes, a batch): one message and one reply for all of them; replies
/// with an ack per draft, in order.
#[derive(Message)]
#[rtype(result = "Vec<PublishAck>")]
pub struct PublishRun {
    pub drafts: Vec<Draft>,
}

/// Sent to the shard of the envelope's channel when the engine carried it here: fan it out.
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

/// Sent by the admin API to every shard; replies with that shard's figures.
#[derive(Message)]
#[rtype(result = "ShardStats")]
pub struct ChannelStats {
    /// Only channels whose name starts with this prefix (e.g. `tenant:acme:`).
    pub prefix: String,
}

/// Sent to the shard of `channel`; replies with its number of subscribers on this node.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Listeners {
    pub channel: ChannelName,
}

/// One shard's channels with their subscriber counts.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub channels: Vec<(String, usize)>,
}

/// What every shard is configured with.
#[derive(Clone)]
pub struct BrokerConfig {
    pub shards: usize,
    pub history: HistoryLimits,
    /// How long a publisher or subscriber waits for room in a full shard mailbox.
    pub request_timeout: Duration,
    pub origin: NodeId,
    /// Where shards report channel interest (the engine's, when it carries events between
    /// nodes); `None` for the embedded engine.
    pub interest: Option<crate::metered::MeteredRecipient<Interest>>,
    /// Where shards report deliveries per tenant (the activity recorder), never waiting.
    pub activity: crate::activity::ActivitySink,
}

/// This node's shards, routed by channel hash. The engine sees them as [`Shards`].
struct ShardRouter {
    /// Every send to a shard is measured (`crate::metered`), per shard.
    shards: Arc<[Metered<BrokerShard>]>,
    hasher: RandomState,
    request_timeout: Duration,
}

impl ShardRouter {
    fn index_of(&self, channel: &ChannelName) -> usize {
        (self.hasher.hash_one(channel.as_str()) % self.shards.len() as u64) as usize
    }

    /// Each call returns a fresh address clone: actix parks a sender handle whose message hit a
    /// full mailbox, so concurrent requests must not share one.
    fn shard_for(&self, channel: &ChannelName) -> Metered<BrokerShard> {
        self.shards[self.index_of(channel)].clone()
    }

    /// Sends `msg` to `shard`, waiting at most the request timeout for mailbox room.
    fn request<M>(
        &self,
        shard: Metered<BrokerShard>,
        msg: M,
    ) -> impl std::future::Future<Output = Result<M::Result, BrokerError>> + Send + 'static
    where
        M: Message + Send + 'static,
        M::Result: Send,
        BrokerShard: Handler<M>,
    {
        let timeout = self.request_timeout;
        async move {
            match shard.send(msg).timeout(timeout).await {
                Ok(r) => Ok(r),
                Err(MailboxError::Timeout) => Err(BrokerError::Busy(timeout)),
                Err(MailboxError::Closed) => Err(BrokerError::Stopped),
            }
        }
    }
}

impl Shards for ShardRouter {
    fn append(&self, draft: Draft) -> BoxFuture<'static, Result<PublishAck, BrokerError>> {
        let shard = self.shard_for(&draft.channel);
        self.request(shard, Publish { draft }).boxed()
    }

    fn append_run(
        &self,
        drafts: Vec<Draft>,
    ) -> BoxFuture<'static, Vec<Result<PublishAck, BrokerError>>> {
        let count = drafts.len();
        // Each shard's drafts, in order, with their places in `drafts`.
        let mut runs: Vec<(Vec<usize>, Vec<Draft>)> =
            vec![(Vec::new(), Vec::new()); self.shards.len()];
        for (place, draft) in drafts.into_iter().enumerate() {
            let (places, drafts) = &mut runs[self.index_of(&draft.channel)];
            places.push(place);
            drafts.push(draft);
        }
        let requests: Vec<_> = runs
            .into_iter()
            .enumerate()
            .filter(|(_, (places, _))| !places.is_empty())
            .map(|(shard, (places, drafts))| {
                let run = self.request(self.shards[shard].clone(), PublishRun { drafts });
                async move {
                    match run.await {
                        Ok(acks) => places.into_iter().zip(acks.into_iter().map(Ok)).collect(),
                        Err(e) => places.into_iter().map(|p| (p, Err(e.clone()))).collect(),
                    }
                }
            })
            .collect();
        async move { in_given_order(count, futures_util::future::join_all(requests).await) }.boxed()
    }

    fn deliver(&self, env: Arc<Envelope>) -> Delivery {
        let shard = self.shard_for(&env.channel);
        match shard.try_send(Relay { env }) {
            Ok(()) => Delivery::Queued,
            Err(SendError::Full(msg)) => Delivery::Full(
                async move {
                    let _ = shard.send(msg).await;
                }
                .boxed(),
            ),
            Err(SendError::Closed(_)) => Delivery::Stopped,
        }
    }

    fn read_history(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'static, Result<HistoryPage, BrokerError>> {
        let shard = self.shard_for(&channel);
        self.request(
            shard,
            ReadHistory {
                channel,
                since,
                limit,
            },
        )
        .boxed()
    }
}

/// The broker's front door: routes to the shard that owns each channel, publishes through the
/// engine. Cheap to clone.
#[derive(Clone)]
pub struct BrokerHandle {
    router: Arc<ShardRouter>,
    engine: Arc<dyn BrokerEngine>,
}

impl BrokerHandle {
    /// Starts `config.shards` shards, each on a thread of its own (owned by the node's shutdown,
    /// which stops them last), and the engine `engine` makes over them.
    pub fn start(
        config: BrokerConfig,
        limits: Arc<ActorLimits>,
        metrics: Arc<Metrics>,
        threads: &ShutdownController,
        engine: impl FnOnce(Arc<dyn Shards>) -> Arc<dyn BrokerEngine>,
    ) -> Self {
        let n = config.shards.max(1);
        let mut shards = Vec::with_capacity(n);
        for index in 0..n {
            let thread = threads.spawn_thread(format!("broker shard {index}"));
            let meter = metrics.meter(ActorKind::Broker, &index.to_string(), Some(limits.clone()));
            let (cfg, limits, metrics) = (config.clone(), limits.clone(), metrics.clone());
            let addr = BrokerShard::start_in_arbiter(&thread, move |_| {
                BrokerShard::new(index, cfg, limits, metrics)
            });
            shards.push(Metered::new(addr, meter));
        }
        let router = Arc::new(ShardRouter {
            shards: shards.into(),
            hasher: RandomState::new(),
            request_timeout: config.request_timeout,
        });
        let engine = engine(router.clone());
        Self { router, engine }
    }

    /// The shard that owns `channel` (a fresh address clone each call).
    pub fn shard_for(&self, channel: &ChannelName) -> Addr<BrokerShard> {
        self.router.shard_for(channel).addr().clone()
    }

    pub fn shard_count(&self) -> usize {
        self.router.shards.len()
    }

    /// The engine's state (`/health/ready`).
    pub async fn engine_status(&self) -> EngineStatus {
        self.engine.status().await
    }

    /// Publishes through the engine. Waits at most the request timeout for mailbox room.
    pub async fn publish(&self, draft: Draft) -> Result<PublishAck, BrokerError> {
        self.engine.publish(draft).await
    }

    /// Publishes drafts keeping each channel's in order ([`BrokerEngine::publish_run`]).
    pub async fn publish_run(&self, drafts: Vec<Draft>) -> Vec<Result<PublishAck, BrokerError>> {
        let count = drafts.len();
        let mut answers = self.engine.publish_run(drafts).await;
        // One answer per draft, whatever the engine: a missing one is an error, not a shift.
        debug_assert_eq!(answers.len(), count, "the engine answers every draft");
        answers.resize_with(count, || Err(BrokerError::Stopped));
        answers
    }

    /// Registers a subscriber with the owning shard, then asks the engine where it starts — in
    /// that order, so every event after the position arrives live, and overlaps are removed by
    /// offset.
    pub async fn subscribe(&self, msg: Subscribe) -> Result<Subscribed, BrokerError> {
        let channel = msg.channel.clone();
        let since = msg.since.clone();
        let shard = self.router.shard_for(&msg.channel);
        let local = self.router.request(shard, msg).await?;
        Ok(self.engine.subscribed(channel, since, local).await)
    }

    /// A channel's retained events after `since` (or the latest `limit` ones).
    pub async fn history(
        &self,
        channel: &ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        self.engine.history(channel.clone(), since, limit).await
    }

    /// Removes `conn` from `channels`, one message per shard involved.
    pub fn unsubscribe(&self, conn: ConnId, channels: impl IntoIterator<Item = ChannelName>) {
        let mut by_shard: HashMap<usize, Vec<ChannelName>> = HashMap::new();
        for c in channels {
            by_shard
                .entry(self.router.index_of(&c))
                .or_default()
                .push(c);
        }
        for (i, channels) in by_shard {
            // do_send: bookkeeping must not be lost to a full mailbox; it is bounded by the
            // number of connections, not by traffic.
            self.router.shards[i].do_send(Unsubscribe { conn, channels });
        }
    }

    /// Whether `channel` has a subscriber on any node: this node's shard first, then the engine
    /// (the Redis engine asks Redis which nodes listen). What the Azure-compatible API's existence
    /// checks ask (a connection, a group, a user).
    pub async fn has_subscribers(&self, channel: &ChannelName) -> Result<bool, BrokerError> {
        let shard = self.router.shard_for(channel);
        let here = Listeners {
            channel: channel.clone(),
        };
        if self.router.request(shard, here).await? > 0 {
            return Ok(true);
        }
        self.engine.listened_elsewhere(channel.clone()).await
    }

    /// Channel and subscriber counts across all shards.
    pub async fn channel_stats(&self, prefix: &str) -> Result<Vec<(String, usize)>, BrokerError> {
        let mut all = Vec::new();
        for shard in self.router.shards.iter() {
            let stats = self
                .router
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
