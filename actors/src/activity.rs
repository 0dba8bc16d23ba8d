//! The [`ActivityRecorder`]: one actor per node that watches each tenant's traffic for admin
//! consoles. It keeps, per tenant, the recent events (channel, event, offset — never payloads),
//! publish and delivery rates over a short window, and it publishes summaries of what happens
//! (connections, subscriptions, publishes) on the tenant's `tenant:{t}:activity` channel.
//!
//! Observations are offered with `try_send`: a full recorder mailbox drops the observation
//! (counted under `switchyard_mailbox_full_total{actor="activity"}`) and never slows a connection,
//! a publisher or a broker shard. The activity stream is rate-limited per tenant
//! (`activity.max_events_per_second`); summaries over the limit are counted and announced once a
//! second as `ActivitySuppressed {suppressed}`, so a busy tenant cannot flood its consoles.
//!
//! Figures are this node's view: in cluster mode each node records what its own clients
//! publish and what it delivers; the summaries travel through Redis like any event.
//!
//! Messages (who sends them, what they reply):
//! - [`Observe`]: connections, the node's publish path and broker shards → recorder; no reply.
//! - [`AttachPublisher`]: start-up → recorder, once the broker runs; no reply.
//! - [`TenantActivity`]: admin API → recorder; replies with an [`ActivityReport`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::channel::{Channel, ChannelName};
use crate::envelope::{now_millis, Draft, EventName};
use crate::identity::Role;
use crate::ids::{TenantKey, UserId};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metered::MeteredRecipient;
use crate::metrics::Metrics;
use crate::publish_path::PublishPath;

/// How the recorder is configured (`[activity]`).
#[derive(Clone, Debug)]
pub struct ActivityConfig {
    /// Recent events kept per tenant.
    pub recent_events: usize,
    /// Summaries per second published on one tenant's activity channel; 0 = no stream.
    pub max_events_per_second: u32,
    /// Seconds over which rates are averaged.
    pub rate_window_secs: u64,
    /// A tenant with no traffic for this long is forgotten.
    pub forget_after: Duration,
}

/// Something that happened in a tenant, as the recorder is told.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum Observe {
    ConnectionOpened {
        tenant: TenantKey,
        user: UserId,
        role: Role,
        protocol: &'static str,
    },
    ConnectionClosed {
        tenant: TenantKey,
        user: UserId,
        role: Role,
        protocol: &'static str,
    },
    Subscribed {
        tenant: TenantKey,
        user: UserId,
        channel: ChannelName,
    },
    Unsubscribed {
        tenant: TenantKey,
        user: UserId,
        channel: ChannelName,
    },
    /// An event accepted on one of the tenant's channels by this node's publish path.
    Published {
        tenant: TenantKey,
        channel: ChannelName,
        event: EventName,
        id: Arc<str>,
        offset: u64,
        ts: u64,
    },
    /// A fan-out on this node handed an event of the tenant to `count` connections.
    Delivered { tenant: TenantKey, count: u64 },
    /// Several observations in one message, handled in order: a run of published events
    /// (`connection/publish_lanes.rs`), so a back end's pipelined burst wakes the recorder once,
    /// not once per event.
    Batch(Vec<Observe>),
}

impl Observe {
    /// How many observations this is (a batch counts its parts).
    fn count(&self) -> u64 {
        match self {
            Observe::Batch(all) => all.iter().map(Observe::count).sum(),
            _ => 1,
        }
    }

    /// The tenant observed; none for a [`Observe::Batch`], whose parts each have their own.
    fn tenant(&self) -> Option<&TenantKey> {
        match self {
            Observe::ConnectionOpened { tenant, .. }
            | Observe::ConnectionClosed { tenant, .. }
            | Observe::Subscribed { tenant, .. }
            | Observe::Unsubscribed { tenant, .. }
            | Observe::Published { tenant, .. }
            | Observe::Delivered { tenant, .. } => Some(tenant),
            Observe::Batch(_) => None,
        }
    }
}

/// The label of activity summaries in `switchyard_published_total`.
pub const PUBLISH_SOURCE: &str = "activity";

/// Gives the recorder the node's publish path for its summaries (it starts before the broker).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachPublisher(pub Arc<dyn PublishPath>);

/// Asks for one tenant's recent events and rates.
#[derive(Message)]
#[rtype(result = "ActivityReport")]
pub struct TenantActivity(pub TenantKey);

/// One recent event of a tenant (no payload: consoles see what flowed, not what it said).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentEvent {
    pub id: Arc<str>,
    pub channel: String,
    pub event: String,
    pub offset: u64,
    /// RFC 3339, milliseconds, UTC.
    pub timestamp: String,
}

/// Publish and delivery rates, per second, averaged over the rate window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    pub published_per_second: f64,
    pub delivered_per_second: f64,
}

/// A tenant's activity as this node saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityReport {
    pub rates: Rates,
    /// Newest first.
    pub recent_events: Vec<RecentEvent>,
}

/// One second's counts.
#[derive(Clone, Copy, Default)]
struct Bucket {
    second: u64,
    published: u64,
    delivered: u64,
}

/// A recent event as kept: shared names and the time, made into a [`RecentEvent`] only when an
/// admin asks (a busy tenant records many more events than anyone reads).
#[derive(Clone, Debug)]
struct Recent {
    id: Arc<str>,
    channel: ChannelName,
    event: EventName,
    offset: u64,
    ts: u64,
}

impl Recent {
    fn report(&self) -> RecentEvent {
        RecentEvent {
            id: self.id.clone(),
            channel: self.channel.to_string(),
            event: self.event.as_str().to_owned(),
            offset: self.offset,
            timestamp: crate::codec::rfc3339_millis(self.ts),
        }
    }
}

#[derive(Default)]
struct TenantLog {
    recent: VecDeque<Recent>,
    buckets: VecDeque<Bucket>,
    /// Stream summaries allowed this second, and the second they count for.
    budget_second: u64,
    budget_used: u32,
    suppressed: u64,
    last_seen: Option<Instant>,
}

/// Watches tenants' traffic on this node (see the module docs).
pub struct ActivityRecorder {
    config: ActivityConfig,
    tenants: HashMap<TenantKey, TenantLog>,
    publisher: Option<Arc<dyn PublishPath>>,
    limits: Arc<ActorLimits>,
    metrics: Arc<Metrics>,
    mailbox_generation: u64,
}

impl ActivityRecorder {
    pub fn new(config: ActivityConfig, limits: Arc<ActorLimits>, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            tenants: HashMap::new(),
            publisher: None,
            limits,
            metrics,
            mailbox_generation: u64::MAX,
        }
    }

    fn apply_mailbox_limit(&mut self, ctx: &mut Context<Self>) {
        let limits = self.limits.get(ActorKind::Activity);
        let generation = limits.generation();
        if generation != self.mailbox_generation {
            self.mailbox_generation = generation;
            ctx.set_mailbox_capacity(limits.mailbox());
        }
    }

    fn bucket(log: &mut TenantLog, second: u64, window: u64) -> &mut Bucket {
        if log.buckets.back().map(|b| b.second) != Some(second) {
            log.buckets.push_back(Bucket {
                second,
                ..Bucket::default()
            });
            while log
                .buckets
                .front()
                .is_some_and(|b| b.second + window < second)
            {
                log.buckets.pop_front();
            }
        }
        log.buckets.back_mut().expect("pushed above")
    }

    /// Publishes one summary on the tenant's activity channel, within the tenant's budget. The
    /// summary is built only then: over the budget (a busy tenant) it costs a count.
    fn summarize(
        &mut self,
        tenant: &TenantKey,
        event: &'static str,
        data: impl FnOnce() -> serde_json::Value,
    ) {
        let max = self.config.max_events_per_second;
        if max == 0 || self.publisher.is_none() {
            return;
        }
        let second = now_millis() / 1000;
        let log = self.tenants.entry(tenant.clone()).or_default();
        if log.budget_second != second {
            log.budget_second = second;
            log.budget_used = 0;
        }
        if log.budget_used >= max {
            log.suppressed += 1;
            self.metrics.activity_suppressed.inc();
            return;
        }
        log.budget_used += 1;
        self.send_summary(tenant, event, data());
    }

    fn send_summary(&self, tenant: &TenantKey, event: &'static str, data: serde_json::Value) {
        let Some(publisher) = self.publisher.clone() else {
            return;
        };
        let draft = Draft::new(
            ChannelName::from_channel(Channel::TenantActivity {
                tenant: tenant.clone(),
            }),
            EventName::parse(event).expect("activity event names are valid"),
            crate::payload::Payload::built(&data),
        );
        actix::spawn(async move {
            if let Err(e) = publisher.publish(draft, PUBLISH_SOURCE).await {
                log::debug!("activity summary not published: {e}");
            }
        });
    }

    /// Once a second: announce suppressed summaries, forget idle tenants.
    fn tick(&mut self) {
        let now = Instant::now();
        let forget = self.config.forget_after;
        let mut announce = Vec::new();
        self.tenants.retain(|tenant, log| {
            if log.suppressed > 0 {
                announce.push((tenant.clone(), std::mem::take(&mut log.suppressed)));
            }
            log.last_seen
                .is_some_and(|seen| now.duration_since(seen) < forget)
        });
        for (tenant, suppressed) in announce {
            self.send_summary(
                &tenant,
                "ActivitySuppressed",
                json!({ "suppressed": suppressed }),
            );
        }
    }
}

impl Actor for ActivityRecorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.apply_mailbox_limit(ctx);
        self.metrics
            .actors
            .with_label_values(&[ActorKind::Activity.as_str()])
            .inc();
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.apply_mailbox_limit(ctx);
            act.tick();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics
            .actors
            .with_label_values(&[ActorKind::Activity.as_str()])
            .dec();
    }
}

crate::metered_actor!(ActivityRecorder);

impl Handler<AttachPublisher> for ActivityRecorder {
    type Result = ();
    fn handle(&mut self, AttachPublisher(publisher): AttachPublisher, _: &mut Self::Context) {
        self.publisher = Some(publisher);
    }
}

impl Handler<Observe> for ActivityRecorder {
    type Result = ();

    fn handle(&mut self, msg: Observe, _: &mut Self::Context) {
        self.observe(msg);
    }
}

impl ActivityRecorder {
    /// Records one observation (each part of a batch in turn).
    fn observe(&mut self, msg: Observe) {
        let Some(tenant) = msg.tenant().cloned() else {
            if let Observe::Batch(all) = msg {
                for one in all {
                    self.observe(one);
                }
            }
            return;
        };
        let second = now_millis() / 1000;
        let window = self.config.rate_window_secs;
        let keep = self.config.recent_events;
        let log = self.tenants.entry(tenant.clone()).or_default();
        log.last_seen = Some(Instant::now());
        match msg {
            Observe::Delivered { count, .. } => {
                Self::bucket(log, second, window).delivered += count;
            }
            Observe::Published {
                channel,
                event,
                id,
                offset,
                ts,
                ..
            } => {
                Self::bucket(log, second, window).published += 1;
                if keep > 0 {
                    if log.recent.len() >= keep {
                        log.recent.pop_back();
                    }
                    log.recent.push_front(Recent {
                        id: id.clone(),
                        channel: channel.clone(),
                        event: event.clone(),
                        offset,
                        ts,
                    });
                }
                self.summarize(&tenant, "Published", || {
                    json!({"channel": channel, "event": event.as_str(), "id": id, "offset": offset})
                });
            }
            Observe::ConnectionOpened {
                user,
                role,
                protocol,
                ..
            } => self.summarize(
                &tenant,
                "ConnectionOpened",
                || json!({"userId": user.as_str(), "role": role.as_str(), "protocol": protocol}),
            ),
            Observe::ConnectionClosed {
                user,
                role,
                protocol,
                ..
            } => self.summarize(
                &tenant,
                "ConnectionClosed",
                || json!({"userId": user.as_str(), "role": role.as_str(), "protocol": protocol}),
            ),
            Observe::Subscribed { user, channel, .. } => self.summarize(
                &tenant,
                "Subscribed",
                || json!({"userId": user.as_str(), "channel": channel}),
            ),
            Observe::Unsubscribed { user, channel, .. } => self.summarize(
                &tenant,
                "Unsubscribed",
                || json!({"userId": user.as_str(), "channel": channel}),
            ),
            // Taken apart above.
            Observe::Batch(_) => {}
        }
    }
}

impl Handler<TenantActivity> for ActivityRecorder {
    type Result = MessageResult<TenantActivity>;

    fn handle(
        &mut self,
        TenantActivity(tenant): TenantActivity,
        _: &mut Self::Context,
    ) -> Self::Result {
        let Some(log) = self.tenants.get(&tenant) else {
            return MessageResult(ActivityReport::default());
        };
        let now = now_millis() / 1000;
        let window = self.config.rate_window_secs.max(1);
        // Whole seconds only: the current one is still filling.
        let (published, delivered) = log
            .buckets
            .iter()
            .filter(|b| b.second < now && b.second + window >= now)
            .fold((0, 0), |(p, d), b| (p + b.published, d + b.delivered));
        MessageResult(ActivityReport {
            rates: Rates {
                published_per_second: published as f64 / window as f64,
                delivered_per_second: delivered as f64 / window as f64,
            },
            recent_events: log.recent.iter().map(Recent::report).collect(),
        })
    }
}

/// A cheap, cloneable way to tell the recorder something without ever waiting for it.
#[derive(Clone, Default)]
pub struct ActivitySink {
    recorder: Option<MeteredRecipient<Observe>>,
    metrics: Option<Arc<Metrics>>,
}

impl ActivitySink {
    pub fn new(recorder: MeteredRecipient<Observe>, metrics: Arc<Metrics>) -> Self {
        Self {
            recorder: Some(recorder),
            metrics: Some(metrics),
        }
    }

    /// Offers an observation; a full mailbox drops it (counted), a missing recorder ignores it.
    pub fn observe(&self, what: Observe) {
        let Some(r) = &self.recorder else {
            return;
        };
        // The recorder's meter counts the full mailbox (`crate::metered`).
        if let Err(SendError::Full(lost)) = r.try_send(what) {
            if let Some(m) = &self.metrics {
                m.dropped
                    .with_label_values(&["activity_full"])
                    .inc_by(lost.count());
            }
        }
    }

    /// Whether observations go anywhere (skip building them when not).
    pub fn is_active(&self) -> bool {
        self.recorder.is_some()
    }
}
