//! One node, no Redis: the embedded engines.
//!
//! - [`EmbeddedEngine`]: the broker shards are the whole engine; each keeps its channels' offsets
//!   and history, and a publish is delivered by the shard that owns the channel.
//! - [`EmbeddedPresence`]: "first" and "last" connection are this node's (the registry says
//!   which), a user's `UserOffline` waits out the grace period and is cancelled by a return within
//!   it, and queries are answered by this node's tenant groups.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{self, BoxFuture};
use futures_util::FutureExt;

use super::{BrokerEngine, BrokerError, EngineStatus, HistoryPage, PublishAck, Shards, Subscribed};
use crate::channel::ChannelName;
use crate::envelope::{Draft, StreamPosition};
use crate::identity::Role;
use crate::ids::{ConnId, TenantKey, UserId};
use crate::presence::{
    Announcer, LocalTenants, PresenceChange, PresenceEngine, TenantError, TenantSnapshot,
};

/// The embedded broker engine (see the module docs).
pub struct EmbeddedEngine {
    shards: Arc<dyn Shards>,
}

impl EmbeddedEngine {
    pub fn new(shards: Arc<dyn Shards>) -> Self {
        Self { shards }
    }
}

impl BrokerEngine for EmbeddedEngine {
    fn publish(&self, draft: Draft) -> BoxFuture<'static, Result<PublishAck, BrokerError>> {
        self.shards.append(draft)
    }

    fn publish_run(
        &self,
        drafts: Vec<Draft>,
    ) -> BoxFuture<'static, Vec<Result<PublishAck, BrokerError>>> {
        self.shards.append_run(drafts)
    }

    fn subscribed(
        &self,
        _: ChannelName,
        _: Option<StreamPosition>,
        local: Subscribed,
    ) -> BoxFuture<'static, Subscribed> {
        // The shard that registered the subscriber holds the channel's log: its view is the truth.
        future::ready(local).boxed()
    }

    fn history(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'static, Result<HistoryPage, BrokerError>> {
        self.shards.read_history(channel, since, limit)
    }

    fn status(&self) -> BoxFuture<'static, EngineStatus> {
        future::ready(EngineStatus {
            mode: "embedded",
            connected: true,
            detail: serde_json::Value::Null,
        })
        .boxed()
    }
}

/// Presence of a node that is the whole cluster (see the module docs).
pub struct EmbeddedPresence {
    local: Arc<dyn LocalTenants>,
    announcer: Announcer,
    offline_grace: Duration,
    /// Users whose UserOffline waits out the grace period.
    pending_offline: Arc<Mutex<HashSet<(TenantKey, UserId)>>>,
}

impl EmbeddedPresence {
    pub fn new(
        local: Arc<dyn LocalTenants>,
        announcer: Announcer,
        offline_grace: Duration,
    ) -> Self {
        Self {
            local,
            announcer,
            offline_grace,
            pending_offline: Arc::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PresenceEngine for EmbeddedPresence {
    fn joined(&self, tenant: &TenantKey, _: ConnId, user: &UserId, role: Role, first_here: bool) {
        // A return within the grace period cancels the pending UserOffline: no flapping.
        let returned =
            first_here && lock(&self.pending_offline).remove(&(tenant.clone(), user.clone()));
        if first_here && !returned {
            self.announcer.announce(PresenceChange {
                tenant: tenant.clone(),
                user: user.clone(),
                online: true,
                role: Some(role),
            });
        }
    }

    fn left(&self, tenant: &TenantKey, _: ConnId, user: &UserId, last_here: bool) {
        if !last_here {
            return;
        }
        let key = (tenant.clone(), user.clone());
        lock(&self.pending_offline).insert(key.clone());
        let (pending, announcer, grace) = (
            self.pending_offline.clone(),
            self.announcer.clone(),
            self.offline_grace,
        );
        actix::spawn(async move {
            tokio::time::sleep(grace).await;
            if lock(&pending).remove(&key) {
                let (tenant, user) = key;
                announcer.announce(PresenceChange {
                    tenant,
                    user,
                    online: false,
                    role: None,
                });
            }
        });
    }

    fn snapshot(
        &self,
        tenant: &TenantKey,
    ) -> BoxFuture<'static, Result<TenantSnapshot, TenantError>> {
        self.local.snapshot(tenant)
    }

    fn tenant_keys(&self) -> BoxFuture<'static, Result<Vec<TenantKey>, TenantError>> {
        future::ready(Ok(self.local.tenant_keys())).boxed()
    }

    fn node_stopping(&self) -> BoxFuture<'static, ()> {
        future::ready(()).boxed()
    }
}
