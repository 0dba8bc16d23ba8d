//! The one publish path every source takes once its publish was admitted (REST, `/ws`, hub
//! methods, chat, the scheduler, the change feed, the Redis ingest stream, presence and activity
//! events): the broker engine, then `switchyard_published_total{source}` and the activity record.
//!
//! This file holds the interface and its values (shared with the engines), so that the actors that publish their own events (the activity
//! recorder, the presence announcer) depend on it and not on the broker; the broker implements it
//! ([`crate::broker::Publisher`]). Admission (channel rules, authorizer, quota) comes before, in
//! [`crate::policy::publish`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::envelope::Draft;

/// A published event's identity and place in its channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishAck {
    pub id: Arc<str>,
    pub offset: u64,
    pub epoch: Arc<str>,
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

/// Why a publish was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl PublishError {
    /// The wire error code a client's refused publish carries (native and SignalR).
    pub fn code(&self) -> crate::codes::ErrorCode {
        match self {
            PublishError::Broker(b) => b.code(),
        }
    }
}

/// The node's publish path (see the module docs).
pub trait PublishPath: Send + Sync + 'static {
    /// Publishes `draft`; `source` labels `switchyard_published_total`.
    fn publish(
        &self,
        draft: Draft,
        source: &'static str,
    ) -> BoxFuture<'static, Result<PublishAck, PublishError>>;
}
