//! Joining and leaving channels: the one path for a `subscribe` request (native, SignalR
//! `Subscribe` and `JoinOrderChannel`), a join a hub method asks for (`JoinConversation`), the
//! default channels after a handshake and a resumed connection's channels. Whatever asked, the
//! same checks apply in the same order — the tenant's subscription quota, the connection's limit,
//! the channel rules (and the authorizer) — and the activity recorder sees every join and leave.

use std::sync::Arc;

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;

use super::subscriptions::BeginError;
use super::Connection;
use crate::broker::{Subscribe, Subscribed, Subscriber};
use crate::channel::ChannelName;
use crate::codes::ErrorCode;
use crate::envelope::{Envelope, StreamPosition};
use crate::policy::access::{self, Action};
use crate::policy::Refusal;
use crate::quotas::QuotaKind;

/// Why a channel could not be joined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(super) struct JoinRefused {
    pub code: ErrorCode,
    pub reason: String,
}

impl JoinRefused {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl From<Refusal> for JoinRefused {
    fn from(refused: Refusal) -> Self {
        Self::new(refused.code(), refused.to_string())
    }
}

/// A subscription the broker registered, now active.
pub(super) struct Joined {
    pub id: u64,
    pub offset: u64,
    pub epoch: Arc<str>,
    /// `Some` when the join asked to recover from a position.
    pub recovered: Option<bool>,
    /// Replayed and buffered events to write after the reply, in order.
    pub ready: Vec<Arc<Envelope>>,
}

impl Connection {
    /// Joins `channel`: resolves once the broker registered it and the subscription is active,
    /// or with the reason it was refused (already subscribed included). Registration comes
    /// first, then the replay, then live events (see `subscriptions`).
    pub(super) fn join_channel(
        &mut self,
        channel: ChannelName,
        since: Option<StreamPosition>,
    ) -> LocalBoxActorFuture<Self, Result<Joined, JoinRefused>> {
        if let Err(refused) = self.begin_join(&channel) {
            return fut::ready(Err(refused)).boxed_local();
        }
        // The connection's own channel is its own: the rules refuse it to every request.
        let own = self.own_channel.as_ref() == Some(&channel);
        let access = (!own).then(|| {
            access::check(
                &self.node.authorizer,
                self.identity.clone(),
                channel.clone(),
                Action::Subscribe,
            )
        });
        let msg = Subscribe {
            channel: channel.clone(),
            subscriber: Subscriber {
                conn: self.conn,
                outbox: self.outbox.clone(),
            },
            since: since.clone(),
        };
        let broker = self.node.broker.clone();
        let registered = async move {
            if let Some(access) = access {
                access.await?;
            }
            broker
                .subscribe(msg)
                .await
                .map_err(|e| JoinRefused::new(e.code(), e.to_string()))
        };
        registered
            .into_actor(self)
            .map(move |res, act, _| act.activate_join(channel, since, res))
            .boxed_local()
    }

    /// The checks that need no lookup: the tenant's subscription quota, then the connection's
    /// own limit (or an existing subscription). On success the subscription is pending.
    fn begin_join(&mut self, channel: &ChannelName) -> Result<(), JoinRefused> {
        if let Some(tenant) = &self.tenant {
            let limit = self
                .node
                .quotas
                .get(tenant)
                .0
                .max_subscriptions_per_connection;
            if self.core.subs.len() >= limit && !self.core.subs.contains(channel) {
                self.node.quotas.exceeded(tenant, QuotaKind::Subscriptions);
                return Err(JoinRefused::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "tenant {tenant} allows at most {limit} subscriptions per connection (tenant quota)"
                    ),
                ));
            }
        }
        self.subs().begin(channel).map(|_| ()).map_err(|e| match e {
            BeginError::Already => {
                JoinRefused::new(ErrorCode::AlreadySubscribed, "already subscribed")
            }
            BeginError::TooMany => JoinRefused::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} subscriptions per connection",
                    self.shared.settings.max_subscriptions
                ),
            ),
        })
    }

    fn activate_join(
        &mut self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        res: Result<Subscribed, JoinRefused>,
    ) -> Result<Joined, JoinRefused> {
        let s = match res {
            Ok(s) => s,
            Err(refused) => {
                self.subs().cancel(&channel);
                return Err(refused);
            }
        };
        let (start_after, recovered, replay) = match (s.recovery, since) {
            (Some(r), Some(since)) if r.recovered => (since.offset, Some(true), r.replay),
            (Some(_), _) => (s.offset, Some(false), Vec::new()),
            (None, _) => (s.offset, None, Vec::new()),
        };
        // Hub commands are carried out when they arrive, not again from history: only the
        // connection's own channel replays them (a resume catching up; `hub_commands`).
        let mut replay = replay;
        if self.own_channel.as_ref() != Some(&channel) {
            replay.retain(|env| !env.event.is_command());
        }
        let Some((id, ready)) =
            self.subs()
                .activate(&channel, start_after, s.epoch.clone(), replay)
        else {
            // Left while the broker was answering (only a join outside the request order can
            // be, such as the hub methods' connect-time ones): undo the registration.
            self.node.broker.unsubscribe(self.conn, [channel]);
            return Err(JoinRefused::new(
                ErrorCode::NotSubscribed,
                "left before the subscription completed",
            ));
        };
        self.observe_subscription(&channel, true);
        Ok(Joined {
            id,
            offset: s.offset,
            epoch: s.epoch,
            recovered,
            ready,
        })
    }

    /// Leaves `channel`; false if the connection did not have it.
    pub(super) fn leave_channel(&mut self, channel: &ChannelName) -> bool {
        if !self.subs().remove(channel) {
            return false;
        }
        self.left_channel(channel);
        true
    }

    /// `channel` was removed from the subscriptions: tells the activity recorder and the broker.
    pub(super) fn left_channel(&mut self, channel: &ChannelName) {
        self.observe_subscription(channel, false);
        self.node.broker.unsubscribe(self.conn, [channel.clone()]);
    }

    /// Counts and logs a refused join.
    pub(super) fn note_refused(&self, channel: &str, refused: &JoinRefused) {
        self.node
            .metrics
            .subscription_errors
            .with_label_values(&[refused.code.as_str()])
            .inc();
        log::debug!(
            "{} subscription to {channel} refused: {refused}",
            self.log_ctx()
        );
    }
}
