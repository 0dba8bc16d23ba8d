//! The checks a client's publish passes before the node's publish path, in one order for every
//! entry point (REST `POST /api/v1/publish`, a WebSocket `publish`, a SignalR `Publish`): the
//! channel rules first (with the authorizer for stored-data channels), then the tenant's publish
//! quota. A publish the rules refuse never spends quota; one function so the entry points cannot
//! drift apart again.

use std::sync::Arc;

use crate::authorizer::Action;
use crate::channel::ChannelName;
use crate::identity::Identity;
use crate::node::Node;
use crate::quotas::PublishQuotaExceeded;
use crate::rules::{self, Decision};

/// Why a caller may not publish an event now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefused {
    /// The channel rules refuse this caller; the message names the rule.
    #[error("{0}")]
    Forbidden(String),
    /// The tenant's publish quota is spent for now.
    #[error(transparent)]
    Quota(#[from] PublishQuotaExceeded),
}

/// Admits `who`'s publish on `channel`: the rules, then one publish from the quota of the
/// channel's tenant (or the caller's).
pub async fn admit_publish(
    node: Arc<Node>,
    who: Arc<Identity>,
    channel: ChannelName,
) -> Result<(), PublishRefused> {
    match rules::can_publish(&who, channel.kind()) {
        Decision::Allow => {}
        Decision::Deny(v) => return Err(PublishRefused::Forbidden(v.rule)),
        Decision::Lookup => node
            .authorizer
            .authorize(who.clone(), channel.clone(), Action::Publish)
            .await
            .map_err(|v| PublishRefused::Forbidden(v.rule))?,
    }
    if let Some(tenant) = channel.tenant().or(who.tenant.as_ref()) {
        node.quotas.take_publish(tenant)?;
    }
    Ok(())
}
