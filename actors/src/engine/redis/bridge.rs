//! The Redis bridge: one actor per node in cluster mode. It owns the node's pub/sub connection
//! (on one Redis: one connection, a `SUBSCRIBE` per channel; on a Redis Cluster: the crate's
//! cluster connection, one connection per node, an `SSUBSCRIBE` per partition), subscribes in
//! Redis only to what channels with local subscribers need (on the first, unsubscribing after the
//! last), and relays every envelope it receives into the broker shard that owns the channel — the
//! origin node's own events included, so every node delivers each channel in one order.
//! Envelopes of channels without local subscribers (a partition carries many) are dropped here.
//!
//! Pub/sub alone is at-most-once, so the bridge keeps the last relayed (epoch, offset) per channel.
//! After a reconnect (or a gap in offsets) it buffers the channel's live envelopes, replays the
//! missed ones from the channel's history, then releases the buffer, skipping duplicates. When the
//! epoch changed meanwhile (Redis lost the channel's state: a restart without persistence,
//! eviction, expiry), the missed ones are the new epoch from its first offset: a new epoch is
//! replayed, never skipped, and subscribers see the epoch change on the events themselves. A
//! channel first subscribed here while Redis was unreachable (its subscribers were served locally)
//! has no relayed position; when Redis returns it gets what Redis accepted for it since then (by
//! the events' publish time). Redis down: the bridge retries with back-off and resubscribes every
//! channel by itself; nothing here panics. On a Redis Cluster, losing any node's connection (a
//! master killed, then its replica promoted) or a subscription the server ended (its slot moved
//! to another master) counts as losing the connection: the bridge builds a new one from the seed
//! nodes (fresh slot map), resubscribes and catches up as above, so failovers and resharding
//! lose nothing that history still holds.
//!
//! On a Redis Cluster the bridge also keeps this node's listener marks (see `listeners.rs`):
//! marked on a channel's first local subscriber, unmarked after its last, and marked again for
//! every channel after each (re)connection, so existence checks on other nodes see this node's
//! channels even though sharded subscriptions are invisible to `PUBSUB NUMSUB`. A channel's
//! subscription counts as confirmed ([`WhenListening`]) once its mark is in Redis too.
//!
//! Messages (who sends them, what they reply):
//! - [`Interest`]: broker shard → bridge when a channel gains its first / loses its last local
//!   subscriber; no reply.
//! - [`WhenListening`]: the Redis engine → bridge; replies true once the Redis subscription is
//!   confirmed (false at once while Redis is unreachable).
//! - [`AttachShards`]: start-up → bridge; the shards to relay into.
//! - [`BridgeStatus`]: the Redis engine's status (health/admin) → bridge; replies with the
//!   connection state.
//! - [`Marked`]: the listener-marks writer → bridge when a channel's mark is in Redis; no reply.
//! - The bridge also runs the ingest stream's reader ([`super::ingest`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::oneshot;

use super::connection::{PushEvent, Subscriber};
use super::listeners::ListenerMarks;
use super::Cluster;
use crate::channel::ChannelName;
use crate::engine::{Delivery, Interest, Shards};
use crate::envelope::{now_millis, Envelope, StreamPosition};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metered::Counted;

/// Asks whether the channel's Redis subscription is confirmed (waits for it if in flight).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WhenListening(pub ChannelName);

/// Gives the bridge the shards it relays into.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachShards(pub Arc<dyn Shards>);

/// Tells the bridge that this node's listener mark of the channel is in Redis (Redis Cluster).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Marked(pub ChannelName);

/// Asks for the bridge's state.
#[derive(Message)]
#[rtype(result = "BridgeState")]
pub struct BridgeStatus;

/// The bridge's state, for `/health/ready` and the admin API.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeState {
    /// The pub/sub connection is up.
    pub connected: bool,
    /// Channels with local subscribers.
    pub channels: usize,
    /// Of those, channels whose Redis subscription is confirmed.
    pub subscribed: usize,
    /// Confirmed Redis subscriptions: one per channel on one Redis, one per partition
    /// (`SSUBSCRIBE`) on a Redis Cluster, however many channels it carries.
    pub subscriptions: usize,
    pub last_error: Option<String>,
    /// Envelopes relayed from Redis since start.
    pub relayed: u64,
    /// Events that could not be relayed to other nodes (Redis unreachable), since start.
    pub unrelayed: u64,
}

struct ChannelRelay {
    confirmed: bool,
    /// This node's listener mark is in Redis (always true on a single Redis, which has none).
    marked: bool,
    waiters: Vec<oneshot::Sender<bool>>,
    /// Last relayed (epoch, offset).
    last: Option<(Arc<str>, u64)>,
    /// Live envelopes held while missed ones are fetched from history.
    catch_up: Option<Vec<Arc<Envelope>>>,
    /// When the channel gained its first local subscriber (ms since the Unix epoch).
    listened_at: u64,
    /// Nothing relayed yet while Redis may have accepted events this node's subscribers are owed
    /// (they subscribed while Redis was unreachable, or the connection dropped before the first
    /// relay): the next confirmed subscription replays from `listened_at`.
    unanchored: bool,
}

impl ChannelRelay {
    fn new(unanchored: bool, marked: bool) -> Self {
        Self {
            confirmed: false,
            marked,
            waiters: Vec::new(),
            last: None,
            catch_up: None,
            listened_at: now_millis(),
            unanchored,
        }
    }
}

/// Where a catch-up starts.
#[derive(Clone)]
enum CatchUpFrom {
    /// After the last relayed position (in a newer epoch: from that epoch's first offset).
    After(StreamPosition),
    /// Events of the current epoch published since this time (ms), for a channel with no relayed
    /// position ([`ChannelRelay::unanchored`]).
    PublishedSince(u64),
}

/// Items of the pub/sub stream, tagged with the connection they came from.
struct PubSubItem {
    generation: u64,
    event: PushEvent,
}

/// One Redis subscription (a channel on one Redis, a partition on a Redis Cluster).
#[derive(Default)]
struct Topic {
    /// The server confirmed it on the current connection.
    confirmed: bool,
    /// Asked for on the current connection, not yet confirmed.
    asked: bool,
    /// Channels with local subscribers carried by it.
    channels: std::collections::HashSet<ChannelName>,
}

impl Message for PubSubItem {
    type Result = ();
}

/// Relays between Redis and this node's broker (see the module docs).
pub struct RedisBridge {
    cluster: Cluster,
    shards: Option<Arc<dyn Shards>>,
    limits: Arc<ActorLimits>,
    sink: Option<Subscriber>,
    generation: u64,
    channels: HashMap<ChannelName, ChannelRelay>,
    topics: HashMap<String, Topic>,
    backoff: Duration,
    last_error: Option<String>,
    relayed: u64,
    disconnected_since: Option<Instant>,
    /// This node's listener marks (Redis Cluster layout only; set when the bridge starts).
    marks: Option<ListenerMarks>,
}

impl RedisBridge {
    pub fn new(cluster: Cluster, limits: Arc<ActorLimits>) -> Self {
        let backoff = cluster.config().reconnect_min;
        Self {
            cluster,
            shards: None,
            limits,
            sink: None,
            generation: 0,
            channels: HashMap::new(),
            topics: HashMap::new(),
            backoff,
            last_error: None,
            relayed: 0,
            disconnected_since: Some(Instant::now()),
            marks: None,
        }
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        self.cluster.metrics()
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let cluster = self.cluster.clone();
        let timeout = self.cluster.config().command_timeout;
        let fut = async move {
            tokio::time::timeout(timeout, cluster.target().subscriber())
                .await
                .map_err(|_| format!("no connection within {timeout:?}"))?
                .map_err(|e| e.to_string())
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((sink, events)) => act.on_connected(ctx, sink, events),
            Err(e) => act.on_disconnected(ctx, e),
        }));
    }

    fn on_connected(
        &mut self,
        ctx: &mut Context<Self>,
        sink: Subscriber,
        events: futures_util::stream::BoxStream<'static, PushEvent>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        self.sink = Some(sink);
        for topic in self.topics.values_mut() {
            topic.confirmed = false;
            topic.asked = false;
        }
        self.backoff = self.cluster.config().reconnect_min;
        if let Some(since) = self.disconnected_since.take() {
            log::info!("redis bridge connected (after {:?} down)", since.elapsed());
        }
        self.metrics().redis_bridge_up.set(1);
        // Each item is counted on the bridge's meter from the moment it is read.
        let meter = self.metrics().meter(
            ActorKind::RedisBridge,
            crate::metered::SINGLE_INSTANCE,
            Some(self.limits.clone()),
        );
        ctx.add_message_stream(
            events.map(move |event| Counted::new(PubSubItem { generation, event }, &meter)),
        );
        // Resubscribe everything; channels with a known position catch up from history. On a
        // Redis Cluster, mark them all again too: a failover may have lost marks.
        let names: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for name in names {
            self.mark(&name, true);
            self.subscribe(ctx, name);
        }
    }

    fn on_disconnected(&mut self, ctx: &mut Context<Self>, error: String) {
        // Whatever the old connection still delivers is ignored from here on.
        self.generation += 1;
        for topic in self.topics.values_mut() {
            topic.confirmed = false;
            topic.asked = false;
        }
        if self.disconnected_since.is_none() {
            log::warn!("redis bridge disconnected: {error}");
            self.disconnected_since = Some(Instant::now());
        } else {
            log::debug!("redis bridge still disconnected: {error}");
        }
        self.metrics().redis_bridge_up.set(0);
        self.last_error = Some(error);
        self.sink = None;
        for state in self.channels.values_mut() {
            state.confirmed = false;
            state.unanchored |= state.last.is_none();
            for w in state.waiters.drain(..) {
                let _ = w.send(false);
            }
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cluster.config().reconnect_max);
        ctx.run_later(delay, |act, ctx| {
            if act.sink.is_none() {
                act.connect(ctx)
            }
        });
    }

    fn subscribe(&mut self, ctx: &mut Context<Self>, name: ChannelName) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let Some(state) = self.channels.get_mut(&name) else {
            return;
        };
        if state.last.is_some() || state.unanchored {
            // Hold live envelopes until what was missed has been replayed.
            state.catch_up.get_or_insert_with(Vec::new);
        }
        let pubsub = self.cluster.keys().pubsub(name.as_str());
        let topic = self.topics.entry(pubsub.clone()).or_default();
        topic.channels.insert(name.clone());
        if topic.confirmed {
            // Another channel of the partition already subscribed it.
            return self.on_subscribed(ctx, name);
        }
        if topic.asked {
            return;
        }
        topic.asked = true;
        let generation = self.generation;
        let timeout = self.cluster.config().command_timeout;
        let subscribing = pubsub.clone();
        let fut = async move {
            let mut sink = sink;
            match tokio::time::timeout(timeout, sink.subscribe(subscribing)).await {
                Ok(res) => res.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no confirmation within {timeout:?}")),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation {
                return;
            }
            match res {
                Ok(()) => {
                    let Some(topic) = act.topics.get_mut(&pubsub) else {
                        return;
                    };
                    topic.confirmed = true;
                    let names: Vec<ChannelName> = topic.channels.iter().cloned().collect();
                    for name in names {
                        act.on_subscribed(ctx, name);
                    }
                }
                Err(e) => {
                    // A connection that cannot subscribe is as good as lost (on a cluster: the
                    // slot's master is gone and the slot map is stale): start over.
                    log::warn!("redis subscribe {pubsub} failed: {e}");
                    act.on_disconnected(ctx, format!("subscribe {pubsub}: {e}"));
                }
            }
        }));
    }

    fn on_subscribed(&mut self, ctx: &mut Context<Self>, name: ChannelName) {
        let Some(state) = self.channels.get_mut(&name) else {
            return;
        };
        state.confirmed = true;
        if state.marked {
            for w in state.waiters.drain(..) {
                let _ = w.send(true);
            }
        }
        let from = match (&state.last, state.unanchored) {
            (Some((epoch, offset)), _) => CatchUpFrom::After(StreamPosition {
                offset: *offset,
                epoch: epoch.to_string(),
            }),
            (None, true) => CatchUpFrom::PublishedSince(state.listened_at),
            // Subscribed while connected: the engine reads each subscriber's position after this.
            (None, false) => return,
        };
        self.catch_up(ctx, name, from);
    }

    /// Replays what the channel missed (see [`CatchUpFrom`]), then releases held live envelopes.
    fn catch_up(&mut self, ctx: &mut Context<Self>, name: ChannelName, from: CatchUpFrom) {
        let cluster = self.cluster.clone();
        let limit = cluster.config().history.size;
        let channel = name.clone();
        let generation = self.generation;
        let after = match &from {
            CatchUpFrom::After(position) => Some(position.clone()),
            CatchUpFrom::PublishedSince(_) => None,
        };
        let fut = async move { cluster.unrelayed(&channel, after.as_ref(), limit).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation {
                // The connection was replaced; its resubscription catches up (held stay held).
                return;
            }
            let pos = match res {
                Ok(pos) => pos,
                Err(e) => {
                    // Held envelopes stay held: relaying them now would skip what is missing.
                    log::warn!("redis bridge: catch-up of {name} failed: {e}; retrying");
                    let retry = act.cluster.config().reconnect_min;
                    ctx.run_later(retry, move |act, ctx| {
                        let waiting = act
                            .channels
                            .get(&name)
                            .is_some_and(|s| s.catch_up.is_some());
                        if act.generation == generation && waiting {
                            act.catch_up(ctx, name, from);
                        }
                    });
                    return;
                }
            };
            let Some(missed) = act.resume_point(&name, &from, pos) else {
                return;
            };
            let held = act
                .channels
                .get_mut(&name)
                .and_then(|s| s.catch_up.take())
                .unwrap_or_default();
            for env in missed.into_iter().chain(held) {
                act.relay(ctx, env);
            }
        }));
    }

    /// Reads a catch-up's answer: sets where relaying resumes (just before the first event still
    /// to relay, so what Redis no longer holds is not waited for) and returns the events to
    /// replay. `None` if the channel is gone.
    fn resume_point(
        &mut self,
        name: &ChannelName,
        from: &CatchUpFrom,
        pos: super::Position,
    ) -> Option<Vec<Arc<Envelope>>> {
        let recovery = pos.recovery.unwrap_or(crate::history::Recovery {
            recovered: false,
            replay: Vec::new(),
        });
        let mut missed = recovery.replay;
        // History reaching back before the listen time holds everything owed since then.
        let complete = recovery.recovered
            || matches!(from, CatchUpFrom::PublishedSince(since)
                if missed.first().is_some_and(|e| e.ts < *since));
        match from {
            CatchUpFrom::After(last) if *last.epoch != *pos.epoch => log::info!(
                "redis bridge: {name} has a new epoch {} (Redis lost its state after {}:{}); \
                 relaying it from its first offset",
                pos.epoch,
                last.epoch,
                last.offset
            ),
            CatchUpFrom::After(_) => {}
            CatchUpFrom::PublishedSince(since) => missed.retain(|e| e.ts >= *since),
        }
        if !complete {
            log::warn!("redis bridge: {name} could not be fully recovered from history");
            self.metrics()
                .dropped
                .with_label_values(&["history_gap"])
                .inc();
        } else if !missed.is_empty() {
            self.metrics().redis_catchups.inc();
        }
        let state = self.channels.get_mut(name)?;
        let first = missed
            .first()
            .or_else(|| state.catch_up.as_ref().and_then(|held| held.first()))
            .filter(|e| *e.epoch == *pos.epoch);
        let mut resume = first.map_or(pos.offset, |e| e.offset - 1);
        if let Some((epoch, offset)) = &state.last {
            if **epoch == *pos.epoch {
                resume = resume.max(*offset);
            }
        }
        state.last = Some((pos.epoch.clone(), resume));
        state.unanchored = false;
        Some(missed)
    }

    /// Forwards one envelope to its shard, once, in order.
    fn relay(&mut self, ctx: &mut Context<Self>, env: Arc<Envelope>) {
        let Some(state) = self.channels.get_mut(&env.channel) else {
            return;
        };
        if let Some(held) = state.catch_up.as_mut() {
            held.push(env);
            return;
        }
        if let Some((epoch, offset)) = &state.last {
            let same_epoch = **epoch == *env.epoch;
            if same_epoch && env.offset <= *offset {
                return;
            }
            // Next comes the following offset, or a new epoch's first: anything else is a gap
            // (a new epoch's start included), fetched before going on.
            let next = if same_epoch { offset + 1 } else { 1 };
            if env.offset != next {
                let since = StreamPosition {
                    offset: *offset,
                    epoch: epoch.to_string(),
                };
                state.catch_up = Some(vec![env.clone()]);
                let name = env.channel.clone();
                return self.catch_up(ctx, name, CatchUpFrom::After(since));
            }
        }
        state.last = Some((env.epoch.clone(), env.offset));
        state.unanchored = false;
        self.relayed += 1;
        self.metrics().relayed.inc();
        let Some(shards) = &self.shards else { return };
        match shards.deliver(env) {
            Delivery::Queued | Delivery::Stopped => {}
            Delivery::Full(room) => {
                // Backpressure: stop reading pub/sub until the shard has room (the shard's
                // meter counted the full mailbox).
                ctx.wait(room.into_actor(self));
            }
        }
    }
}

impl Actor for RedisBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.get(ActorKind::RedisBridge).mailbox());
        self.metrics()
            .actors
            .with_label_values(&[ActorKind::RedisBridge.as_str()])
            .inc();
        if self.cluster.keys().sharded() {
            let bridge = ctx.address();
            let (marks, writer) =
                ListenerMarks::start(self.cluster.clone(), move |c| bridge.do_send(Marked(c)));
            self.marks = Some(marks);
            ctx.spawn(actix::fut::wrap_future(writer));
        }
        self.connect(ctx);
        ctx.spawn(actix::fut::wrap_future(self.cluster.clone().run_ingest()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics()
            .actors
            .with_label_values(&[ActorKind::RedisBridge.as_str()])
            .dec();
    }
}

crate::metered_actor!(RedisBridge);

impl Handler<PubSubItem> for RedisBridge {
    type Result = ();

    fn handle(&mut self, item: PubSubItem, ctx: &mut Self::Context) {
        if item.generation != self.generation {
            return;
        }
        let (topic, payload) = match item.event {
            PushEvent::Message { topic, payload } => (topic, payload),
            PushEvent::Unreadable(e) => {
                log::warn!("redis bridge: unreadable pub/sub payload: {e}");
                return;
            }
            PushEvent::Lost(why) => return self.on_disconnected(ctx, why),
            PushEvent::Unsubscribed(topic) => {
                // Ours to keep (not an unsubscribe of our own): its slot moved.
                if self.topics.get(&topic).is_some_and(|t| t.confirmed) {
                    return self.on_disconnected(
                        ctx,
                        format!("the server ended the subscription {topic} (slot moved)"),
                    );
                }
                return;
            }
        };
        match Envelope::from_json(&payload) {
            Ok(env) => self.relay(ctx, Arc::new(env)),
            Err(e) => {
                // Someone wrote to our channel without the publish step; never crash on it.
                log::warn!("redis bridge: refused envelope on {topic}: {e}");
                self.metrics()
                    .bad_frames
                    .with_label_values(&["redis_envelope"])
                    .inc();
            }
        }
    }
}

impl Handler<Interest> for RedisBridge {
    type Result = ();
    fn handle(&mut self, Interest { channel, listening }: Interest, ctx: &mut Self::Context) {
        if listening {
            self.listen(ctx, channel);
        } else {
            self.unlisten(ctx, channel);
        }
    }
}

impl RedisBridge {
    /// Queues this node's listener mark of `name` (Redis Cluster layout only).
    fn mark(&self, name: &ChannelName, listening: bool) {
        if let Some(marks) = &self.marks {
            marks.set(name.clone(), listening);
        }
    }

    /// The channel got its first local subscriber: subscribe in Redis.
    fn listen(&mut self, ctx: &mut Context<Self>, name: ChannelName) {
        if self.channels.contains_key(&name) {
            return;
        }
        self.mark(&name, true);
        // Subscribers arriving while Redis is unreachable are served locally; see `unanchored`.
        let unanchored = self.sink.is_none();
        let marked = self.marks.is_none();
        self.channels
            .insert(name.clone(), ChannelRelay::new(unanchored, marked));
        self.subscribe(ctx, name);
    }

    /// The channel lost its last local subscriber: unsubscribe in Redis.
    fn unlisten(&mut self, ctx: &mut Context<Self>, name: ChannelName) {
        let Some(mut state) = self.channels.remove(&name) else {
            return;
        };
        self.mark(&name, false);
        for w in state.waiters.drain(..) {
            let _ = w.send(false);
        }
        let pubsub = self.cluster.keys().pubsub(name.as_str());
        let Some(topic) = self.topics.get_mut(&pubsub) else {
            return;
        };
        topic.channels.remove(&name);
        if !topic.channels.is_empty() {
            return;
        }
        self.topics.remove(&pubsub);
        if let Some(sink) = self.sink.clone() {
            ctx.spawn(
                async move {
                    let mut sink = sink;
                    let _ = sink.unsubscribe(pubsub).await;
                }
                .into_actor(self),
            );
        }
    }
}

impl Handler<WhenListening> for RedisBridge {
    type Result = ResponseFuture<bool>;
    fn handle(
        &mut self,
        WhenListening(name): WhenListening,
        _: &mut Self::Context,
    ) -> Self::Result {
        let connected = self.sink.is_some();
        let Some(state) = self.channels.get_mut(&name) else {
            return Box::pin(async { false });
        };
        if state.confirmed && state.marked {
            return Box::pin(async { true });
        }
        if !connected {
            return Box::pin(async { false });
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or(false) })
    }
}

impl Handler<Marked> for RedisBridge {
    type Result = ();
    fn handle(&mut self, Marked(name): Marked, _: &mut Self::Context) {
        let Some(state) = self.channels.get_mut(&name) else {
            return;
        };
        state.marked = true;
        if state.confirmed {
            for w in state.waiters.drain(..) {
                let _ = w.send(true);
            }
        }
    }
}

impl Handler<AttachShards> for RedisBridge {
    type Result = ();
    fn handle(&mut self, AttachShards(shards): AttachShards, _: &mut Self::Context) {
        self.shards = Some(shards);
    }
}

impl Handler<BridgeStatus> for RedisBridge {
    type Result = MessageResult<BridgeStatus>;
    fn handle(&mut self, _: BridgeStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(BridgeState {
            connected: self.sink.is_some(),
            channels: self.channels.len(),
            subscribed: self.channels.values().filter(|c| c.confirmed).count(),
            subscriptions: self.topics.values().filter(|t| t.confirmed).count(),
            last_error: self.last_error.clone(),
            relayed: self.relayed,
            unrelayed: self.metrics().unrelayed.get(),
        })
    }
}
