//! The node: everything the actors and the server's routes share — the broker, the tenant
//! registry, metrics, live limits, the policy's authorizer and the shutdown
//! ([`crate::shutdown`]). What only connections share is in [`crate::connection::Connections`].
//! Built once by the server at start-up and passed around as `Arc<Node>` (no process-wide
//! registries, so two nodes can run in one test process).

use std::sync::Arc;

use crate::activity::{ActivityRecorder, ActivitySink};
use crate::broker::{BrokerHandle, PublishAck, Publisher};
use crate::envelope::Draft;
use crate::hub_methods::HubMethods;
use crate::ids::NodeId;
use crate::mailbox::ActorLimits;
use crate::metered::Metered;
use crate::metrics::Metrics;
use crate::payload::{Payload, PayloadError, PayloadLimits};
use crate::policy::ChannelAuthorizer;
use crate::quotas::QuotaBook;
use crate::shutdown::ShutdownController;
use crate::tenant_group::TenantRegistry;

pub use crate::publish_path::PublishError;

/// Shared state of one Switchyard node.
pub struct Node {
    pub id: NodeId,
    pub broker: BrokerHandle,
    /// The one publish path (broker, metrics, activity record).
    pub publisher: Publisher,
    pub tenants: TenantRegistry,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<ActorLimits>,
    pub authorizer: Arc<dyn ChannelAuthorizer>,
    /// Hub methods the connection does not map itself (the server's chat service), if any.
    pub hub_methods: Option<Arc<dyn HubMethods>>,
    /// Per-tenant quotas (connections, publishes per second, subscriptions per connection).
    pub quotas: Arc<QuotaBook>,
    /// The one validation of every event's data (`[payload]`).
    pub payload: PayloadLimits,
    /// Where connections and the publish path report tenant activity (never waits).
    pub activity: ActivitySink,
    /// The activity recorder, for the admin API's queries (absent in bare test nodes).
    pub activity_recorder: Option<Metered<ActivityRecorder>>,
    /// The shutdown signal every long-lived task listens to, the tasks it waits for, and the
    /// node's own threads.
    pub shutdown: ShutdownController,
}

impl Node {
    // Every field a node cannot run without; built once, at start-up.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        broker: BrokerHandle,
        publisher: Publisher,
        tenants: TenantRegistry,
        metrics: Arc<Metrics>,
        limits: Arc<ActorLimits>,
        authorizer: Arc<dyn ChannelAuthorizer>,
        quotas: Arc<QuotaBook>,
        payload: PayloadLimits,
        shutdown: ShutdownController,
    ) -> Self {
        Self {
            quotas,
            payload,
            activity: ActivitySink::default(),
            activity_recorder: None,
            id,
            broker,
            publisher,
            tenants,
            metrics,
            limits,
            authorizer,
            hub_methods: None,
            shutdown,
        }
    }

    /// The node with `methods` answering the hub methods connections do not know.
    pub fn with_hub_methods(mut self, methods: Arc<dyn HubMethods>) -> Self {
        self.hub_methods = Some(methods);
        self
    }

    /// The node reporting tenant activity to `recorder` through `sink`.
    pub fn with_activity(
        mut self,
        recorder: Metered<ActivityRecorder>,
        sink: ActivitySink,
    ) -> Self {
        self.activity = sink;
        self.activity_recorder = Some(recorder);
        self
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

    /// The one publish path for every source (REST, connections, scheduler, change feed, Redis).
    /// `source` labels the `switchyard_published_total` metric.
    pub async fn publish(
        &self,
        draft: Draft,
        source: &'static str,
    ) -> Result<PublishAck, PublishError> {
        self.publisher.publish(draft, source).await
    }

    /// [`publish`](Self::publish) for several drafts, each channel's published in their order: one
    /// answer per draft, in order (a connection's pipelined publishes, a batch).
    pub async fn publish_run(
        &self,
        drafts: Vec<Draft>,
        source: &'static str,
    ) -> Vec<Result<PublishAck, PublishError>> {
        self.publisher.publish_run(drafts, source).await
    }
}
