//! The node: everything the actors and the server's routes share — the broker, the tenant
//! registry, metrics, live limits, session settings and the shutdown signal. Built once by the
//! server at start-up and passed around as `Arc<Node>` (no process-wide registries, so two nodes can
//! run in one test process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::authorizer::ChannelAuthorizer;
use crate::broker::{BrokerError, BrokerHandle, PublishAck};
use crate::envelope::Draft;
use crate::hub_methods::HubMethods;
use crate::ids::{ConnId, NodeId};
use crate::mailbox::ActorLimits;
use crate::metrics::Metrics;
use crate::session::resume::ParkedSessions;
use crate::session::SessionSettings;
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
    pub sessions: SessionSettings,
    pub authorizer: Arc<dyn ChannelAuthorizer>,
    /// Resumable connections whose socket dropped, waiting for their client.
    pub parked: ParkedSessions,
    /// Hub methods the session does not map itself (the server's chat service), if any.
    pub hub_methods: Option<Arc<dyn HubMethods>>,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
}

impl Node {
    pub fn new(
        id: NodeId,
        broker: BrokerHandle,
        tenants: TenantRegistry,
        metrics: Arc<Metrics>,
        limits: Arc<ActorLimits>,
        sessions: SessionSettings,
        authorizer: Arc<dyn ChannelAuthorizer>,
        resume_grace: std::time::Duration,
    ) -> Self {
        Self {
            parked: ParkedSessions::new(resume_grace),
            id,
            broker,
            tenants,
            metrics,
            limits,
            sessions,
            authorizer,
            hub_methods: None,
            shutdown: watch::channel(false).0,
            next_conn: AtomicU64::new(1),
        }
    }

    /// The node with `methods` answering the hub methods sessions do not know.
    pub fn with_hub_methods(mut self, methods: Arc<dyn HubMethods>) -> Self {
        self.hub_methods = Some(methods);
        self
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// The one publish path for every source (REST, sessions, scheduler, change feed, Redis).
    /// `source` labels the `switchyard_published_total` metric.
    pub async fn publish(
        &self,
        draft: Draft,
        source: &'static str,
    ) -> Result<PublishAck, PublishError> {
        let ack = self.broker.publish(draft).await?;
        self.metrics.published.with_label_values(&[source]).inc();
        Ok(ack)
    }

    /// A receiver that changes to `true` when the node starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every session to close with "server restarting, reconnect".
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
