//! The seam for channel rules that need stored data (conversation participants, an entity row's
//! tenant). The server implements [`ChannelAuthorizer`] over its database; this crate never sees SQL.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::channel::ChannelName;
use crate::identity::Identity;

use super::refusal::Refusal;
use super::rules::{Action, RuleViolation};

/// Decides the channels whose rule is [`super::rules::Decision::Lookup`]; asked only by
/// [`super::access::check`].
pub trait ChannelAuthorizer: Send + Sync + 'static {
    fn authorize(
        &self,
        who: Arc<Identity>,
        channel: ChannelName,
        action: Action,
    ) -> BoxFuture<'static, Result<(), Refusal>>;
}

/// For nodes without the stores these channels need: refuses, saying why.
pub struct NoLookups;

impl ChannelAuthorizer for NoLookups {
    fn authorize(
        &self,
        _: Arc<Identity>,
        channel: ChannelName,
        _: Action,
    ) -> BoxFuture<'static, Result<(), Refusal>> {
        Box::pin(async move {
            Err(RuleViolation {
                rule: format!("{channel}: this channel is checked against stored data, which this node does not have"),
            }
            .into())
        })
    }
}
