//! The node's Prometheus metrics, in a registry of its own (two nodes in one test process never
//! share counters). Labels are bounded: protocol, reason, code, actor kind — never user or channel.
//!
//! Hot-path figures are kept cheap: the broker adds a whole fan-out to `delivered` at once, and
//! each connection keeps a local latency histogram that it flushes on its heartbeat.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use std::sync::Arc;

use crate::codes::{CloseCode, StallReason};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metered::{MailboxMeters, Meter};

/// Buckets for delivery latency, in seconds: sub-millisecond to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The ways in whose event data is checked (`switchyard_bad_payloads_total{source}`).
pub const PAYLOAD_SOURCES: [&str; 6] = [
    "rest",
    "domain",
    "native",
    "signalr",
    "ingest",
    "change_feed",
];

/// `switchyard_history_skipped_total{reason}` of an entry that is not a readable envelope.
pub const HISTORY_UNDECODABLE: &str = "undecodable";

/// Every metric the actors and routes update.
pub struct Metrics {
    pub registry: Registry,
    /// Open connections by protocol (`native`, `signalr`).
    pub connections: IntGaugeVec,
    /// Connections accepted since start, by protocol.
    pub connections_opened: IntCounterVec,
    /// SignalR connections started since start, by transport (`WebSockets`, `ServerSentEvents`,
    /// `LongPolling`).
    pub signalr_transports: IntCounterVec,
    /// Connections closed by the server, by reason (close-code label).
    pub disconnects: IntCounterVec,
    /// Live subscriptions on this node.
    pub subscriptions: IntGauge,
    /// Refused subscriptions, by error code.
    pub subscription_errors: IntCounterVec,
    /// Events accepted for publishing, by source (`rest`, `ws`, `redis`, `scheduler`, …).
    pub published: IntCounterVec,
    /// Events handed to a connection's mailbox.
    pub delivered: IntCounter,
    /// Events not delivered to a connection, by reason (`slow_consumer`, …).
    pub dropped: IntCounterVec,
    /// Connections closed under the `disconnect` slow-consumer policy (with 4000, or reset by the
    /// connection watchdog when their socket took nothing).
    pub slow_consumer_disconnects: IntCounter,
    /// Connections reset because their client took nothing, by when: `stalled` (the connection
    /// could not run; the reason is in `disconnects`) or `closing` (the connection had ended but
    /// its connection still held data the client had not taken after the write timeout).
    pub connection_resets: IntCounterVec,
    /// Messages refused by a full mailbox, by actor kind.
    pub mailbox_full: IntCounterVec,
    /// The most outbound bytes any one connection has had queued (bounded by `max_queued_bytes`
    /// plus one message).
    pub session_queued_bytes_peak: IntGauge,
    /// The most events any one connection has had waiting in its outbox (bounded by its mailbox).
    pub session_queue_depth_peak: IntGauge,
    /// Configured mailbox capacity, by actor kind.
    pub mailbox_capacity: IntGaugeVec,
    /// Live actors, by kind.
    pub actors: IntGaugeVec,
    /// Refused tokens, by reason (`missing`, `invalid`, `expired`, …).
    pub auth_failures: IntCounterVec,
    /// Frames the server could not act on, by error code.
    pub bad_frames: IntCounterVec,
    /// Frames refused by the per-connection rate limit.
    pub rate_limited: IntCounter,
    /// Event data refused by the payload limits, by way in (`rest`, `domain`, `native`,
    /// `signalr`, `ingest`, `change_feed`) and limit (`depth`, `size`).
    pub bad_payloads: IntCounterVec,
    /// Stored history entries left out of a history page or a recovery because they could not be
    /// decoded, by reason.
    pub history_skipped: IntCounterVec,
    /// Publish time to socket write, in seconds.
    pub delivery_latency: Histogram,
    /// Cluster mode: 1 while the Redis pub/sub connection is up.
    pub redis_bridge_up: IntGauge,
    /// Cluster mode: envelopes relayed from Redis into this node.
    pub relayed: IntCounter,
    /// Cluster mode: publishes that could not be relayed through Redis (delivered locally only).
    pub unrelayed: IntCounter,
    /// Cluster mode: publish attempts retried.
    pub redis_retries: IntCounter,
    /// Cluster mode: channels that caught up from history after a reconnect or a gap.
    pub redis_catchups: IntCounter,
    /// HTTP API errors answered with problem JSON, by status.
    pub http_errors: IntCounterVec,
    /// Requests refused by a tenant quota, by tenant and quota (`connections`, `publishes`,
    /// `subscriptions`). Tenants are a bounded, operator-chosen set; users never label a metric.
    pub quota_exceeded: IntCounterVec,
    /// WebSocket upgrades refused by a connection limit (`per_user`, `per_ip`).
    pub connections_refused: IntCounterVec,
    /// Activity-stream summaries held back by `activity.max_events_per_second`.
    pub activity_suppressed: IntCounter,
    /// Mailbox limits changed through the admin API, by actor kind.
    pub limit_changes: IntCounterVec,
    /// Every measured mailbox: depth, peak, handled, full, time per message
    /// (`crate::metered`).
    pub mailboxes: MailboxMeters,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry
                .register(c)
                .expect("metric names are unique by construction");
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_delivery_latency_seconds",
                "Time from publish to the socket write, per delivery",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        reg(Box::new(delivery_latency.clone()));
        let mailboxes = MailboxMeters::new(&registry);

        Self {
            mailboxes,
            connections: gauge_vec(
                "switchyard_connections",
                "Open WebSocket connections",
                &["protocol"],
            ),
            connections_opened: counter_vec(
                "switchyard_connections_opened_total",
                "WebSocket connections accepted",
                &["protocol"],
            ),
            signalr_transports: counter_vec(
                "switchyard_signalr_connections_total",
                "SignalR connections started, by transport",
                &["transport"],
            ),
            disconnects: counter_vec(
                "switchyard_disconnects_total",
                "WebSocket connections closed by the server, by reason",
                &["reason"],
            ),
            subscriptions: gauge("switchyard_subscriptions", "Live channel subscriptions"),
            subscription_errors: counter_vec(
                "switchyard_subscription_errors_total",
                "Refused subscriptions, by error code",
                &["code"],
            ),
            published: counter_vec(
                "switchyard_published_total",
                "Events accepted for publishing, by source",
                &["source"],
            ),
            delivered: counter(
                "switchyard_delivered_total",
                "Events handed to a session's outbound queue",
            ),
            dropped: counter_vec(
                "switchyard_dropped_total",
                "Events not delivered to a session, by reason",
                &["reason"],
            ),
            slow_consumer_disconnects: counter(
                "switchyard_slow_consumer_disconnects_total",
                "Sessions closed because their outbound queue was full (policy disconnect)",
            ),
            connection_resets: counter_vec(
                "switchyard_connection_resets_total",
                "Connections reset because their client took nothing, by when",
                &["when"],
            ),
            mailbox_full: counter_vec(
                "switchyard_mailbox_full_total",
                "Messages refused by a full mailbox, by actor kind",
                &["actor"],
            ),
            session_queued_bytes_peak: gauge(
                "switchyard_session_queued_bytes_peak",
                "Most outbound bytes any one session has had queued since start",
            ),
            session_queue_depth_peak: gauge(
                "switchyard_session_queue_depth_peak",
                "Most events any one session has had waiting in its outbox since start",
            ),
            mailbox_capacity: gauge_vec(
                "switchyard_mailbox_capacity",
                "Configured mailbox capacity, by actor kind",
                &["actor"],
            ),
            actors: gauge_vec("switchyard_actors", "Live actors, by kind", &["actor"]),
            auth_failures: counter_vec(
                "switchyard_auth_failures_total",
                "Refused tokens, by reason",
                &["reason"],
            ),
            bad_frames: counter_vec(
                "switchyard_bad_frames_total",
                "Client frames the server could not act on, by error code",
                &["code"],
            ),
            rate_limited: counter(
                "switchyard_rate_limited_total",
                "Client frames refused by the per-connection rate limit",
            ),
            bad_payloads: counter_vec(
                "switchyard_bad_payloads_total",
                "Event data refused by payload.max_depth or payload.max_bytes, by way in and limit",
                &["source", "reason"],
            ),
            history_skipped: counter_vec(
                "switchyard_history_skipped_total",
                "Stored history entries that could not be decoded and were left out, by reason",
                &["reason"],
            ),
            delivery_latency,
            redis_bridge_up: gauge(
                "switchyard_redis_bridge_up",
                "1 while the Redis pub/sub connection is up (cluster mode)",
            ),
            relayed: counter(
                "switchyard_redis_relayed_total",
                "Envelopes relayed from Redis into this node",
            ),
            unrelayed: counter(
                "switchyard_redis_unrelayed_total",
                "Publishes not relayed through Redis (delivered to this node only)",
            ),
            redis_retries: counter(
                "switchyard_redis_publish_retries_total",
                "Publish attempts retried against Redis",
            ),
            redis_catchups: counter(
                "switchyard_redis_catchups_total",
                "Channels that caught up from Redis history after a reconnect or gap",
            ),
            http_errors: counter_vec(
                "switchyard_http_errors_total",
                "HTTP API requests answered with an error, by status",
                &["status"],
            ),
            quota_exceeded: counter_vec(
                "switchyard_quota_exceeded_total",
                "Requests refused by a tenant quota, by tenant and quota",
                &["tenant", "quota"],
            ),
            connections_refused: counter_vec(
                "switchyard_connections_refused_total",
                "WebSocket upgrades refused by a per-user or per-address connection limit",
                &["limit"],
            ),
            activity_suppressed: counter(
                "switchyard_activity_suppressed_total",
                "Activity-stream summaries held back by the per-tenant rate limit",
            ),
            limit_changes: counter_vec(
                "switchyard_limit_changes_total",
                "Mailbox limits changed at run time through the admin API, by actor kind",
                &["actor"],
            ),
            registry,
        }
        .with_known_labels()
    }

    /// Creates the label values every dashboard expects, so they read 0 rather than missing.
    fn with_known_labels(self) -> Self {
        for kind in ActorKind::ALL {
            self.mailbox_full.with_label_values(&[kind.as_str()]);
            self.actors.with_label_values(&[kind.as_str()]);
            self.limit_changes.with_label_values(&[kind.as_str()]);
        }
        {
            let reason = "slow_consumer";
            self.dropped.with_label_values(&[reason]);
        }
        for close in CloseCode::ALL {
            self.disconnects.with_label_values(&[close.label()]);
        }
        for source in PAYLOAD_SOURCES {
            for reason in ["depth", "size"] {
                self.bad_payloads.with_label_values(&[source, reason]);
            }
        }
        self.history_skipped
            .with_label_values(&[HISTORY_UNDECODABLE]);
        for stall in StallReason::ALL {
            self.disconnects.with_label_values(&[stall.label()]);
        }
        for when in ["stalled", "closing"] {
            self.connection_resets.with_label_values(&[when]);
        }
        for protocol in ["native", "signalr"] {
            self.connections.with_label_values(&[protocol]);
            self.connections_opened.with_label_values(&[protocol]);
        }
        for transport in ["WebSockets", "ServerSentEvents", "LongPolling"] {
            self.signalr_transports.with_label_values(&[transport]);
        }
        self
    }

    /// The meter of one actor of `kind` (`instance`: its shard number, or
    /// [`crate::metered::SINGLE_INSTANCE`]); a mailbox counts as full at `limits`' capacity.
    pub fn meter(
        &self,
        kind: ActorKind,
        instance: &str,
        limits: Option<Arc<ActorLimits>>,
    ) -> Arc<Meter> {
        self.mailboxes.meter(
            kind,
            instance,
            limits,
            self.mailbox_full.with_label_values(&[kind.as_str()]),
        )
    }

    /// The sessions' meter: depth summed from outboxes on heartbeats, peak the deepest outbox.
    pub fn sessions_meter(&self) -> Arc<Meter> {
        self.meter(
            ActorKind::Connection,
            crate::metered::SESSIONS_INSTANCE,
            None,
        )
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        self.sessions_meter()
            .observe_peak(self.session_queue_depth_peak.get());
        self.mailboxes.export();
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
