//! The Redis bridge: one actor per node in cluster mode. It owns the node's one pub/sub
//! connection, subscribes in Redis only to channels that have local subscribers (on the first,
//! unsubscribing after the last), and relays every envelope it receives into the broker shard
//! that owns the channel — the origin node's own events included, so every node delivers each
//! channel in one order.
//!
//! Pub/sub alone is at-most-once, so the bridge keeps the last relayed offset per channel. After a
//! reconnect (or a gap in offsets) it buffers the channel's live envelopes, replays the missed ones
//! from the channel's history, then releases the buffer, skipping duplicates. Redis down: the
//! bridge retries with back-off and resubscribes every channel by itself; nothing here panics.
//!
//! Messages (who sends them, what they reply):
//! - [`Listen`] / [`Unlisten`]: broker shard → bridge when a channel gains its first / loses its
//!   last local subscriber; no reply.
//! - [`WhenListening`]: broker → bridge; replies true once the Redis subscription is confirmed
//!   (false at once while Redis is unreachable).
//! - [`AttachBroker`]: start-up → bridge; the shards to relay into.
//! - [`BridgeStatus`]: health/admin → bridge; replies with the connection state.
//! - Heartbeat and the dead-node janitor run on the bridge's timers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::broker::{BrokerHandle, Relay};
use crate::channel::{Channel, ChannelName};
use crate::cluster::Cluster;
use crate::envelope::{Draft, Envelope, EventName, StreamPosition};
use crate::ids::UserId;
use crate::mailbox::{ActorKind, ActorLimits};
use crate::presence_hook::{PresenceChange, PresenceHook, USER_OFFLINE};
use crate::shutdown::Shutdown;

/// Sent by a shard when a channel gets its first local subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Listen(pub ChannelName);

/// Sent by a shard when a channel loses its last local subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unlisten(pub ChannelName);

/// Asks whether the channel's Redis subscription is confirmed (waits for it if in flight).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WhenListening(pub ChannelName);

/// Gives the bridge the broker it relays into.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachBroker(pub BrokerHandle);

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
    pub last_error: Option<String>,
    /// Envelopes relayed from Redis since start.
    pub relayed: u64,
    /// Events that could not be relayed to other nodes (Redis unreachable), since start.
    pub unrelayed: u64,
}

#[derive(Default)]
struct ChannelRelay {
    confirmed: bool,
    waiters: Vec<oneshot::Sender<bool>>,
    /// Last relayed (epoch, offset).
    last: Option<(Arc<str>, u64)>,
    /// Live envelopes held while missed ones are fetched from history.
    catch_up: Option<Vec<Arc<Envelope>>>,
}

/// Items of the pub/sub stream, tagged with the connection they came from.
struct PubSubItem {
    generation: u64,
    msg: Option<redis::Msg>,
}

impl Message for PubSubItem {
    type Result = ();
}

/// Relays between Redis and this node's broker (see the module docs).
pub struct RedisBridge {
    cluster: Cluster,
    broker: Option<BrokerHandle>,
    limits: Arc<ActorLimits>,
    sink: Option<redis::aio::PubSubSink>,
    generation: u64,
    channels: HashMap<ChannelName, ChannelRelay>,
    backoff: Duration,
    last_error: Option<String>,
    relayed: u64,
    disconnected_since: Option<Instant>,
    /// Told about each UserOffline this bridge announces.
    presence_hook: PresenceHook,
    /// Heartbeats end when the node starts shutting down: one would put the node back in the
    /// cluster's node list after its shutdown took it out.
    shutdown: Shutdown,
}

impl RedisBridge {
    pub fn new(cluster: Cluster, limits: Arc<ActorLimits>, shutdown: Shutdown) -> Self {
        let backoff = cluster.config().reconnect_min;
        Self {
            cluster,
            broker: None,
            limits,
            sink: None,
            generation: 0,
            channels: HashMap::new(),
            backoff,
            last_error: None,
            relayed: 0,
            disconnected_since: Some(Instant::now()),
            presence_hook: PresenceHook::default(),
            shutdown,
        }
    }

    /// The bridge telling `hook` about each UserOffline it announces.
    pub fn with_presence_hook(mut self, hook: PresenceHook) -> Self {
        self.presence_hook = hook;
        self
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        self.cluster.metrics()
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let client = self.cluster.client().clone();
        let timeout = self.cluster.config().command_timeout;
        let fut = async move {
            tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| format!("no connection within {timeout:?}"))?
                .map_err(|e| e.to_string())
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(pubsub) => act.on_connected(ctx, pubsub),
            Err(e) => act.on_disconnected(ctx, e),
        }));
    }

    fn on_connected(&mut self, ctx: &mut Context<Self>, pubsub: redis::aio::PubSub) {
        self.generation += 1;
        let generation = self.generation;
        let (sink, stream) = pubsub.split();
        self.sink = Some(sink);
        self.backoff = self.cluster.config().reconnect_min;
        if let Some(since) = self.disconnected_since.take() {
            log::info!("redis bridge connected (after {:?} down)", since.elapsed());
        }
        self.metrics().redis_bridge_up.set(1);
        let tagged = stream
            .map(move |m| PubSubItem {
                generation,
                msg: Some(m),
            })
            .chain(futures_util::stream::once(async move {
                PubSubItem {
                    generation,
                    msg: None,
                }
            }));
        ctx.add_message_stream(tagged);
        // Resubscribe everything; channels with a known position catch up from history.
        let names: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for name in names {
            self.subscribe(ctx, name);
        }
    }

    fn on_disconnected(&mut self, ctx: &mut Context<Self>, error: String) {
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
        if state.last.is_some() {
            // Hold live envelopes until what was missed has been replayed.
            state.catch_up.get_or_insert_with(Vec::new);
        }
        let pubsub = self.cluster.keys().pubsub(name.as_str());
        let generation = self.generation;
        let fut = async move {
            let mut sink = sink;
            sink.subscribe(pubsub).await.map_err(|e| e.to_string())
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation {
                return;
            }
            match res {
                Ok(()) => act.on_subscribed(ctx, name),
                Err(e) => log::warn!("redis subscribe {name} failed: {e}"),
            }
        }));
    }

    fn on_subscribed(&mut self, ctx: &mut Context<Self>, name: ChannelName) {
        let Some(state) = self.channels.get_mut(&name) else {
            return;
        };
        state.confirmed = true;
        for w in state.waiters.drain(..) {
            let _ = w.send(true);
        }
        if let Some((epoch, offset)) = state.last.clone() {
            self.catch_up(
                ctx,
                name,
                StreamPosition {
                    offset,
                    epoch: epoch.to_string(),
                },
            );
        }
    }

    /// Replays what the channel missed after `since`, then releases held live envelopes.
    fn catch_up(&mut self, ctx: &mut Context<Self>, name: ChannelName, since: StreamPosition) {
        let cluster = self.cluster.clone();
        let limit = cluster.config().history.size;
        let channel = name.clone();
        let fut = async move { cluster.position(&channel, Some(&since), limit).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let missed = match res {
                Ok(pos) => {
                    let recovery = pos.recovery.unwrap_or(crate::history::Recovery {
                        recovered: false,
                        replay: Vec::new(),
                    });
                    if !recovery.recovered {
                        log::warn!(
                            "redis bridge: {name} could not be fully recovered from history"
                        );
                        act.metrics()
                            .dropped
                            .with_label_values(&["history_gap"])
                            .inc();
                    } else if !recovery.replay.is_empty() {
                        act.metrics().redis_catchups.inc();
                    }
                    recovery.replay
                }
                Err(e) => {
                    log::warn!("redis bridge: catch-up of {name} failed: {e}");
                    Vec::new()
                }
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
            if **epoch == *env.epoch {
                if env.offset <= *offset {
                    return;
                }
                if env.offset > offset + 1 {
                    // A gap: fetch what is missing before going on.
                    let since = StreamPosition {
                        offset: *offset,
                        epoch: epoch.to_string(),
                    };
                    state.catch_up = Some(vec![env.clone()]);
                    let name = env.channel.clone();
                    return self.catch_up(ctx, name, since);
                }
            }
        }
        state.last = Some((env.epoch.clone(), env.offset));
        self.relayed += 1;
        self.metrics().relayed.inc();
        let Some(broker) = &self.broker else { return };
        let shard = broker.shard_for(&env.channel);
        match shard.try_send(Relay { env }) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => {
                // Backpressure: stop reading pub/sub until the shard has room.
                self.metrics().mailbox_full(ActorKind::Broker);
                ctx.wait(shard.send(msg).into_actor(self).map(|_, _, _| ()));
            }
            Err(SendError::Closed(_)) => {}
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_shutdown() {
            return;
        }
        let cluster = self.cluster.clone();
        let fut = async move {
            cluster.heartbeat().await?;
            for node in cluster.dead_nodes().await? {
                let n = cluster.drop_node(&node).await?;
                log::info!(
                    "presence: node {node} missed its heartbeats; removed its {n} connections"
                );
            }
            Ok::<_, crate::cluster::ClusterError>(())
        };
        ctx.spawn(fut.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                log::debug!("presence heartbeat failed: {e}");
            }
        }));
    }

    /// Announces the UserOffline events that are due (one node takes each).
    fn announce_offline(&mut self, ctx: &mut Context<Self>) {
        let Some(broker) = self.broker.clone() else {
            return;
        };
        let cluster = self.cluster.clone();
        let hook = self.presence_hook.clone();
        let fut = async move {
            for (tenant, user) in cluster.presence_due().await? {
                if let Ok(id) = UserId::parse(&user) {
                    hook.announce(PresenceChange {
                        tenant: tenant.clone(),
                        user: id,
                        online: false,
                        role: None,
                    });
                }
                if let Err(e) = broker
                    .publish(presence_event(&tenant, USER_OFFLINE, &user, None))
                    .await
                {
                    log::warn!("UserOffline for {user} in {tenant} not published: {e}");
                }
            }
            Ok::<_, crate::cluster::ClusterError>(())
        };
        ctx.spawn(fut.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                log::debug!("presence sweep failed: {e}");
            }
        }));
    }
}

/// A `UserOnline` / `UserOffline` event for a tenant's admins.
pub fn presence_event(
    tenant: &crate::ids::TenantKey,
    event: &str,
    user: &str,
    role: Option<&str>,
) -> Draft {
    let data = serde_json::json!({"userId": user, "role": role, "tenantKey": tenant});
    Draft::new(
        ChannelName::from_channel(Channel::TenantAdmins {
            tenant: tenant.clone(),
        }),
        EventName::parse(event).expect("presence event names are valid"),
        crate::payload::Payload::built(&data),
    )
}

impl Actor for RedisBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.get(ActorKind::RedisBridge).mailbox());
        self.metrics()
            .actors
            .with_label_values(&[ActorKind::RedisBridge.as_str()])
            .inc();
        self.connect(ctx);
        let beat = self.cluster.config().heartbeat;
        self.heartbeat(ctx);
        ctx.run_interval(beat, |act, ctx| act.heartbeat(ctx));
        let sweep = (self.cluster.config().offline_grace / 2).max(Duration::from_millis(50));
        ctx.run_interval(sweep, |act, ctx| act.announce_offline(ctx));
        ctx.spawn(actix::fut::wrap_future(self.cluster.clone().run_ingest()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics()
            .actors
            .with_label_values(&[ActorKind::RedisBridge.as_str()])
            .dec();
    }
}

impl Handler<PubSubItem> for RedisBridge {
    type Result = ();

    fn handle(&mut self, item: PubSubItem, ctx: &mut Self::Context) {
        if item.generation != self.generation {
            return;
        }
        let Some(msg) = item.msg else {
            return self.on_disconnected(ctx, "pub/sub connection closed".into());
        };
        let payload: String = match msg.get_payload() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("redis bridge: unreadable pub/sub payload: {e}");
                return;
            }
        };
        match Envelope::from_json(&payload) {
            Ok(env) => self.relay(ctx, Arc::new(env)),
            Err(e) => {
                // Someone wrote to our channel without the publish step; never crash on it.
                log::warn!(
                    "redis bridge: refused envelope on {}: {e}",
                    msg.get_channel_name()
                );
                self.metrics()
                    .bad_frames
                    .with_label_values(&["redis_envelope"])
                    .inc();
            }
        }
    }
}

impl Handler<Listen> for RedisBridge {
    type Result = ();
    fn handle(&mut self, Listen(name): Listen, ctx: &mut Self::Context) {
        if self.channels.contains_key(&name) {
            return;
        }
        self.channels.insert(name.clone(), ChannelRelay::default());
        self.subscribe(ctx, name);
    }
}

impl Handler<Unlisten> for RedisBridge {
    type Result = ();
    fn handle(&mut self, Unlisten(name): Unlisten, ctx: &mut Self::Context) {
        let Some(mut state) = self.channels.remove(&name) else {
            return;
        };
        for w in state.waiters.drain(..) {
            let _ = w.send(false);
        }
        if let Some(sink) = self.sink.clone() {
            let pubsub = self.cluster.keys().pubsub(name.as_str());
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
        if state.confirmed {
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

impl Handler<AttachBroker> for RedisBridge {
    type Result = ();
    fn handle(&mut self, AttachBroker(broker): AttachBroker, _: &mut Self::Context) {
        self.broker = Some(broker);
    }
}

impl Handler<BridgeStatus> for RedisBridge {
    type Result = MessageResult<BridgeStatus>;
    fn handle(&mut self, _: BridgeStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(BridgeState {
            connected: self.sink.is_some(),
            channels: self.channels.len(),
            subscribed: self.channels.values().filter(|c| c.confirmed).count(),
            last_error: self.last_error.clone(),
            relayed: self.relayed,
            unrelayed: self.metrics().unrelayed.get(),
        })
    }
}
