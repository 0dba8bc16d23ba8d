//! One broker shard: the channels whose names hash to it, their subscribers and their history.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use indexmap::IndexMap;

use super::{
    BrokerConfig, ChannelStats, HistoryPage, Listeners, Publish, PublishAck, PublishRun,
    ReadHistory, Relay, ShardStats, Subscribe, Subscribed, Subscriber, Unsubscribe,
};
use crate::activity::Observe;
use crate::channel::{Channel, ChannelName};
use crate::engine::Interest;
use crate::envelope::StreamPosition;
use crate::envelope::{Draft, Envelope};
use crate::history::ChannelLog;
use crate::ids::ConnId;
use crate::mailbox::{ActorKind, ActorLimits, Offer, SlowConsumerPolicy};
use crate::metrics::Metrics;
use crate::outbox::Push;

/// A channel on this shard: who listens, and what was said.
#[derive(Default)]
struct ChannelState {
    /// Insertion-ordered for cheap iteration, removable by connection in O(1).
    subscribers: IndexMap<ConnId, Subscriber>,
    log: ChannelLog,
}

/// Owns a share of the node's channels (see the module docs of [`crate::broker`]).
pub struct BrokerShard {
    index: usize,
    config: BrokerConfig,
    channels: HashMap<ChannelName, ChannelState>,
    limits: Arc<ActorLimits>,
    metrics: Arc<Metrics>,
    mailbox_generation: u64,
    /// The most bytes and events one connection's outbox has held, as this shard saw them.
    peak: OutboxPeak,
}

impl BrokerShard {
    pub fn new(
        index: usize,
        config: BrokerConfig,
        limits: Arc<ActorLimits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            index,
            config,
            channels: HashMap::new(),
            limits,
            metrics,
            mailbox_generation: u64::MAX,
            peak: OutboxPeak::default(),
        }
    }

    fn apply_mailbox_limit(&mut self, ctx: &mut Context<Self>) {
        let limits = self.limits.get(ActorKind::Broker);
        let generation = limits.generation();
        if generation != self.mailbox_generation {
            self.mailbox_generation = generation;
            ctx.set_mailbox_capacity(limits.mailbox());
        }
    }

    /// Offers `env` to every subscriber of its channel, applies the slow-consumer policy, and
    /// tells the activity recorder how many got it.
    fn fan_out(&mut self, env: &Arc<Envelope>) {
        let delivered = self.offer_all(env);
        self.observe_delivered(&env.channel, delivered);
    }

    /// Tells the activity recorder that `count` connections got an event of `channel` (a
    /// tenant's own channel; not its activity stream, which would describe itself).
    fn observe_delivered(&self, channel: &ChannelName, count: u64) {
        if count == 0 || !self.config.activity.is_active() {
            return;
        }
        if let Some(tenant) = channel.tenant() {
            if !matches!(channel.kind(), Channel::TenantActivity { .. }) {
                self.config.activity.observe(Observe::Delivered {
                    tenant: tenant.clone(),
                    count,
                });
            }
        }
    }

    /// Offers `env` to every subscriber of its channel and applies the slow-consumer policy;
    /// returns how many took it.
    fn offer_all(&mut self, env: &Arc<Envelope>) -> u64 {
        let Some(state) = self.channels.get_mut(&env.channel) else {
            return 0;
        };
        let limits = self.limits.get(ActorKind::Connection);
        let bounds = Bounds {
            max_len: limits.mailbox(),
            max_bytes: limits.max_queued_bytes(),
            policy: limits.policy(),
        };
        let size = env.queued_size();
        let (mut delivered, mut dropped, mut evicted, mut removed) = (0u64, 0u64, 0u64, 0i64);
        let mut peak = self.peak;
        state
            .subscribers
            .retain(|_, sub| match offer(sub, env, size, &bounds, &mut peak) {
                Offer::Accepted => {
                    delivered += 1;
                    true
                }
                Offer::Dropped => {
                    dropped += 1;
                    true
                }
                Offer::Evicted => {
                    evicted += 1;
                    removed += 1;
                    false
                }
                Offer::Closed => {
                    removed += 1;
                    false
                }
            });
        let m = &self.metrics;
        if peak != self.peak {
            self.peak = peak;
            if peak.bytes as i64 > m.session_queued_bytes_peak.get() {
                m.session_queued_bytes_peak.set(peak.bytes as i64);
            }
            if peak.events as i64 > m.session_queue_depth_peak.get() {
                m.session_queue_depth_peak.set(peak.events as i64);
            }
        }
        m.delivered.inc_by(delivered);
        if dropped + evicted > 0 {
            m.mailbox_full
                .with_label_values(&[ActorKind::Connection.as_str()])
                .inc_by(dropped + evicted);
            m.dropped
                .with_label_values(&["slow_consumer"])
                .inc_by(dropped + evicted);
        }
        m.subscriptions.sub(removed);
        if removed > 0 && state.subscribers.is_empty() {
            tell_interest(&self.config.interest, &env.channel, false);
        }
        delivered
    }

    /// Forgets channels nobody listens to whose history has expired.
    fn sweep(&mut self) {
        let ttl = self.config.history.ttl;
        self.channels.retain(|_, state| {
            state.log.expire(ttl);
            !(state.subscribers.is_empty() && state.log.is_stale(ttl))
        });
    }
}

/// Whether the activity recorder counts deliveries of `a` and `b` as the same tenant's.
fn same_activity(a: &ChannelName, b: &ChannelName) -> bool {
    let is_stream = |c: &ChannelName| matches!(c.kind(), Channel::TenantActivity { .. });
    a.tenant() == b.tenant() && is_stream(a) == is_stream(b)
}

/// Tells the engine (if it wants to know) that `channel` gained its first or lost its last
/// local subscriber.
fn tell_interest(
    to: &Option<crate::metered::MeteredRecipient<Interest>>,
    channel: &ChannelName,
    listening: bool,
) {
    if let Some(interest) = to {
        interest.do_send(Interest {
            channel: channel.clone(),
            listening,
        });
    }
}

/// The fullest any one connection's outbox has been.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OutboxPeak {
    bytes: usize,
    events: usize,
}

/// A connection outbox's live limits, read once per fan-out.
struct Bounds {
    max_len: usize,
    max_bytes: usize,
    policy: SlowConsumerPolicy,
}

/// Offers one event to one subscriber's outbox within its length and byte bounds, waking the
/// connection if no wake is outstanding.
fn offer(
    sub: &Subscriber,
    env: &Arc<Envelope>,
    size: usize,
    bounds: &Bounds,
    peak: &mut OutboxPeak,
) -> Offer {
    if sub.outbox.is_evicted() {
        return Offer::Evicted;
    }
    match sub.outbox.push(env, size, bounds.max_len, bounds.max_bytes) {
        Push::Queued {
            wake,
            queued,
            queued_bytes,
        } => {
            peak.bytes = peak.bytes.max(queued_bytes);
            peak.events = peak.events.max(queued);
            if wake {
                sub.outbox.wake();
            }
            Offer::Accepted
        }
        Push::Full => match bounds.policy {
            SlowConsumerPolicy::Drop => Offer::Dropped,
            SlowConsumerPolicy::Disconnect => {
                sub.outbox.evict();
                Offer::Evicted
            }
        },
        Push::Closed => Offer::Closed,
    }
}

impl Actor for BrokerShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.apply_mailbox_limit(ctx);
        self.metrics
            .actors
            .with_label_values(&[ActorKind::Broker.as_str()])
            .inc();
        let every = (self.config.history.ttl / 2).max(std::time::Duration::from_secs(1));
        ctx.run_interval(every, |shard, ctx| {
            shard.apply_mailbox_limit(ctx);
            shard.sweep();
        });
        log::debug!("broker shard {} started", self.index);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics
            .actors
            .with_label_values(&[ActorKind::Broker.as_str()])
            .dec();
    }
}

crate::metered_actor!(BrokerShard);

impl Handler<Subscribe> for BrokerShard {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        self.apply_mailbox_limit(ctx);
        let history = self.config.history;
        let state = self.channels.entry(msg.channel.clone()).or_default();
        if state
            .subscribers
            .insert(msg.subscriber.conn, msg.subscriber)
            .is_none()
        {
            self.metrics.subscriptions.inc();
            if state.subscribers.len() == 1 {
                tell_interest(&self.config.interest, &msg.channel, true);
            }
        }
        let recovery = msg.since.map(|since| state.log.recover(&since, history));
        MessageResult(Subscribed {
            offset: state.log.offset(),
            epoch: state.log.epoch().clone(),
            recovery,
        })
    }
}

impl Handler<Unsubscribe> for BrokerShard {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        for channel in msg.channels {
            if let Some(state) = self.channels.get_mut(&channel) {
                if state.subscribers.swap_remove(&msg.conn).is_some() {
                    self.metrics.subscriptions.dec();
                    if state.subscribers.is_empty() {
                        tell_interest(&self.config.interest, &channel, false);
                    }
                }
            }
        }
    }
}

impl BrokerShard {
    /// Gives `draft` the next offset of its channel, keeps it in history and offers it to the
    /// channel's subscribers; returns the ack and how many took it.
    fn append(&mut self, draft: Draft) -> (PublishAck, u64) {
        let state = self.channels.entry(draft.channel.clone()).or_default();
        let env = state
            .log
            .append(draft, &self.config.origin, self.config.history);
        let delivered = self.offer_all(&env);
        let ack = PublishAck {
            id: env.id.clone(),
            offset: env.offset,
            epoch: env.epoch.clone(),
        };
        (ack, delivered)
    }
}

impl Handler<Publish> for BrokerShard {
    type Result = MessageResult<Publish>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        let channel = msg.draft.channel.clone();
        let (ack, delivered) = self.append(msg.draft);
        self.observe_delivered(&channel, delivered);
        MessageResult(ack)
    }
}

impl Handler<PublishRun> for BrokerShard {
    type Result = MessageResult<PublishRun>;

    fn handle(&mut self, msg: PublishRun, _: &mut Self::Context) -> Self::Result {
        // One observation per stretch of a tenant's events (a run is usually one tenant's), not
        // one per event: the recorder adds the counts up anyway.
        let mut acks = Vec::with_capacity(msg.drafts.len());
        let mut stretch: Option<(ChannelName, u64)> = None;
        for draft in msg.drafts {
            let channel = draft.channel.clone();
            let (ack, delivered) = self.append(draft);
            acks.push(ack);
            match &mut stretch {
                Some((seen, count)) if same_activity(seen, &channel) => {
                    *count += delivered;
                }
                _ => {
                    if let Some((seen, count)) = stretch.replace((channel, delivered)) {
                        self.observe_delivered(&seen, count);
                    }
                }
            }
        }
        if let Some((seen, count)) = stretch {
            self.observe_delivered(&seen, count);
        }
        MessageResult(acks)
    }
}

impl Handler<Relay> for BrokerShard {
    type Result = ();

    fn handle(&mut self, Relay { env }: Relay, _: &mut Self::Context) {
        // In cluster mode the local log holds only events delivered here while Redis was
        // unreachable (the publisher was answered 503). Redis may have run such a publish all the
        // same, its reply lost; its copy then comes back through the bridge, and this node's
        // subscribers already have the event.
        if let Some(state) = self.channels.get(&env.channel) {
            if state.log.holds(&env.id) {
                log::info!(
                    "event {} on {} was delivered here while Redis was unreachable; its Redis copy is not delivered again",
                    env.id,
                    env.channel
                );
                return;
            }
        }
        self.fan_out(&env);
    }
}

impl Handler<ReadHistory> for BrokerShard {
    type Result = MessageResult<ReadHistory>;

    fn handle(&mut self, msg: ReadHistory, _: &mut Self::Context) -> Self::Result {
        let history = self.config.history;
        let state = self.channels.entry(msg.channel).or_default();
        let (recovered, mut events) = match &msg.since {
            Some(since) => {
                let r = state.log.recover(since, history);
                (Some(r.recovered), r.replay)
            }
            None => {
                let from = StreamPosition {
                    offset: state.log.offset().saturating_sub(msg.limit as u64),
                    epoch: state.log.epoch().to_string(),
                };
                (None, state.log.recover(&from, history).replay)
            }
        };
        events.truncate(msg.limit);
        MessageResult(HistoryPage {
            offset: state.log.offset(),
            epoch: state.log.epoch().clone(),
            recovered,
            events,
        })
    }
}

impl Handler<Listeners> for BrokerShard {
    type Result = usize;

    fn handle(&mut self, msg: Listeners, _: &mut Self::Context) -> usize {
        self.channels
            .get(&msg.channel)
            .map_or(0, |s| s.subscribers.len())
    }
}

impl Handler<ChannelStats> for BrokerShard {
    type Result = MessageResult<ChannelStats>;

    fn handle(&mut self, msg: ChannelStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(ShardStats {
            channels: self
                .channels
                .iter()
                .filter(|(name, s)| {
                    name.as_str().starts_with(&msg.prefix) && !s.subscribers.is_empty()
                })
                .map(|(name, s)| (name.to_string(), s.subscribers.len()))
                .collect(),
        })
    }
}
