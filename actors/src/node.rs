//! The node: everything the actors and the server's routes share — the broker, the tenant
//! registry, metrics, live limits, session settings and the shutdown ([`crate::shutdown`]). Built
//! once by the server at start-up and passed around as `Arc<Node>` (no process-wide registries, so
//! two nodes can run in one test process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Addr;

use crate::activity::{ActivityRecorder, ActivitySink, Observe};
use crate::authorizer::ChannelAuthorizer;
use crate::broker::{BrokerError, BrokerHandle, PublishAck};
use crate::connection::resume::ParkedConnections;
use crate::connection::watchdog::ConnectionWatchdog;
use crate::connection::ConnectionSettings;
use crate::connection_limits::ConnectionLimiter;
use crate::envelope::Draft;
use crate::hub_methods::HubMethods;
use crate::ids::{ConnId, NodeId};
use crate::mailbox::ActorLimits;
use crate::metrics::Metrics;
use crate::payload::{Payload, PayloadError, PayloadLimits};
use crate::quotas::QuotaBook;
use crate::shutdown::ShutdownController;
use crate::tenant_group::TenantRegistry;

/// Why a publish was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Shared state of one Switchyard node.
pub struct Node {
    pub id: NodeId,
    pub broker: BrokerHandle,
    pub tenants: TenantRegistry,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<ActorLimits>,
    pub sessions: ConnectionSettings,
    pub authorizer: Arc<dyn ChannelAuthorizer>,
    /// Resumable connections whose socket dropped, waiting for their client.
    pub parked: ParkedConnections,
    /// Hub methods the session does not map itself (the server's chat service), if any.
    pub hub_methods: Option<Arc<dyn HubMethods>>,
    /// Per-tenant quotas (connections, publishes per second, subscriptions per connection).
    pub quotas: Arc<QuotaBook>,
    /// Connections per user and per source address on this node.
    pub connection_limits: Arc<ConnectionLimiter>,
    /// The one validation of every event's data (`[payload]`).
    pub payload: PayloadLimits,
    /// Where sessions and the publish path report tenant activity (never waits).
    pub activity: ActivitySink,
    /// The activity recorder, for the admin API's queries (absent in bare test nodes).
    pub activity_recorder: Option<Addr<ActivityRecorder>>,
    /// Resets the connections of sessions that cannot write (absent in bare test nodes).
    pub watchdog: Option<Addr<ConnectionWatchdog>>,
    /// The shutdown signal every long-lived task listens to, the tasks it waits for, and the
    /// node's own threads.
    pub shutdown: ShutdownController,
    next_conn: AtomicU64,
}

impl Node {
    // Every field a node cannot run without; built once, at start-up.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        broker: BrokerHandle,
        tenants: TenantRegistry,
        metrics: Arc<Metrics>,
        limits: Arc<ActorLimits>,
        sessions: ConnectionSettings,
        authorizer: Arc<dyn ChannelAuthorizer>,
        resume_grace: std::time::Duration,
        quotas: Arc<QuotaBook>,
        payload: PayloadLimits,
        shutdown: ShutdownController,
    ) -> Self {
        Self {
            quotas,
            connection_limits: Arc::new(ConnectionLimiter::unlimited()),
            payload,
            activity: ActivitySink::default(),
            activity_recorder: None,
            watchdog: None,
            parked: ParkedConnections::new(resume_grace),
            id,
            broker,
            tenants,
            metrics,
            limits,
            sessions,
            authorizer,
            hub_methods: None,
            shutdown,
            next_conn: AtomicU64::new(1),
        }
    }

    /// The node with `methods` answering the hub methods sessions do not know.
    pub fn with_hub_methods(mut self, methods: Arc<dyn HubMethods>) -> Self {
        self.hub_methods = Some(methods);
        self
    }

    /// The node limiting connections per user and per source address.
    pub fn with_connection_limits(mut self, limits: ConnectionLimiter) -> Self {
        self.connection_limits = Arc::new(limits);
        self
    }

    /// The node reporting tenant activity to `recorder`.
    pub fn with_activity(mut self, recorder: Addr<ActivityRecorder>) -> Self {
        self.activity = ActivitySink::new(recorder.clone().recipient(), self.metrics.clone());
        self.activity_recorder = Some(recorder);
        self
    }

    /// The node with `watchdog` watching its sessions.
    pub fn with_watchdog(mut self, watchdog: Addr<ConnectionWatchdog>) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Checks event data that came in through `source` (a `switchyard_bad_payloads_total` label)
    /// against the payload limits, counting a refusal. Callers log a refusal with their context.
    pub fn check_payload(
        &self,
        raw: impl Into<Arc<serde_json::value::RawValue>>,
        source: &'static str,
    ) -> Result<Payload, PayloadError> {
        self.payload.check_counted(raw, source, &self.metrics)
    }

    /// The one publish path for every source (REST, sessions, scheduler, change feed, Redis).
    /// `source` labels the `switchyard_published_total` metric.
    pub async fn publish(
        &self,
        draft: Draft,
        source: &'static str,
    ) -> Result<PublishAck, PublishError> {
        let seen = self
            .activity
            .is_active()
            .then(|| (draft.channel.clone(), draft.event.clone(), draft.ts));
        let ack = self.broker.publish(draft).await?;
        self.metrics.published.with_label_values(&[source]).inc();
        if let Some((channel, event, ts)) = seen {
            self.record_published(channel, event, ts, &ack);
        }
        Ok(ack)
    }

    /// Tells the activity recorder about an accepted event on a tenant channel (activity
    /// summaries themselves are not recorded: they would describe themselves).
    fn record_published(
        &self,
        channel: crate::channel::ChannelName,
        event: crate::envelope::EventName,
        ts: u64,
        ack: &PublishAck,
    ) {
        if matches!(
            channel.kind(),
            crate::channel::Channel::TenantActivity { .. }
        ) {
            return;
        }
        if let Some(tenant) = channel.tenant().cloned() {
            self.activity.observe(Observe::Published {
                tenant,
                channel,
                event,
                id: ack.id.clone(),
                offset: ack.offset,
                ts,
            });
        }
    }
}
