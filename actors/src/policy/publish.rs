//! Publish admission: the checks a client's publish passes before the node's publish path, in one
//! order for every entry point (REST `POST /api/v1/publish`, a WebSocket `publish`, a SignalR
//! `Publish`): access first (the rules, with the authorizer for stored-data channels), then the
//! tenant's publish quota. A publish the rules refuse never spends quota.

use std::sync::Arc;

use crate::channel::ChannelName;
use crate::identity::Identity;
use crate::quotas::QuotaBook;

use super::access::{self, Action};
use super::authorizer::ChannelAuthorizer;
use super::refusal::Refusal;

/// Admits `who`'s publish on `channel`: access, then one publish from the quota of the channel's
/// tenant (or the caller's).
pub async fn admit(
    authorizer: &Arc<dyn ChannelAuthorizer>,
    quotas: &QuotaBook,
    who: Arc<Identity>,
    channel: ChannelName,
) -> Result<(), Refusal> {
    let tenant = channel.tenant().or(who.tenant.as_ref()).cloned();
    access::check(authorizer, who, channel, Action::Publish).await?;
    if let Some(tenant) = tenant {
        quotas.take_publish(&tenant)?;
    }
    Ok(())
}
