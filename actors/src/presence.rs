//! Presence: who of a tenant is connected, and the `UserOnline` / `UserOffline` announcements on
//! `tenant:{t}:admins` (once per user change, cluster-wide, a quick reconnect announcing nothing).
//!
//! This file is the seam ([`PresenceEngine`]), the values it answers with, the [`Announcer`] and
//! the [`PresenceHook`]. The implementations are the engines': `engine/embedded.rs`
//! ([`crate::engine::embedded::EmbeddedPresence`]: this node's tenant groups are the whole
//! picture) and `engine/redis/presence.rs` ([`crate::engine::redis::RedisPresence`]: cluster-wide,
//! with the heartbeat, the dead-node janitor and the offline sweep).
//!
//! The [`crate::tenant_group::TenantRegistry`] tells the node's presence engine about every
//! connection that opens or closes; the engine decides when a user came online or went offline
//! and has the [`Announcer`] publish it (through the node's one publish path, source `presence`)
//! and tell the [`PresenceObserver`] (the chat service relays it to conversation partners).
//! [`PresenceHook`] is the observer's slot: created empty at start-up, filled once the observer
//! exists (it needs the node, which needs the registry).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::channel::{Channel, ChannelName};
use crate::envelope::{Draft, EventName};
use crate::identity::Role;
use crate::ids::{ConnId, TenantKey, UserId};
use crate::payload::Payload;
use crate::publish_path::PublishPath;

/// The event announcing that a user's first connection in a tenant arrived.
pub const USER_ONLINE: &str = "UserOnline";
/// The event announcing that a user's last connection in a tenant left (after the grace).
pub const USER_OFFLINE: &str = "UserOffline";

/// A presence change, as announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceChange {
    pub tenant: TenantKey,
    pub user: UserId,
    /// `true` for `UserOnline`, `false` for `UserOffline`.
    pub online: bool,
    /// The user's role (known for `UserOnline` only).
    pub role: Option<Role>,
}

impl PresenceChange {
    /// The event name: `UserOnline` or `UserOffline`.
    pub fn event(&self) -> &'static str {
        if self.online {
            USER_ONLINE
        } else {
            USER_OFFLINE
        }
    }
}

/// Told about every presence announcement this node makes.
pub trait PresenceObserver: Send + Sync + 'static {
    /// Called once per announcement; must not block (spawn any work).
    fn announced(&self, change: PresenceChange);
}

/// The shared slot for the node's observer (empty until set; set at most once).
#[derive(Clone, Default)]
pub struct PresenceHook(Arc<OnceLock<Arc<dyn PresenceObserver>>>);

impl PresenceHook {
    /// Installs the observer; false if one was already installed.
    pub fn set(&self, observer: Arc<dyn PresenceObserver>) -> bool {
        self.0.set(observer).is_ok()
    }

    /// Tells the observer, if there is one.
    pub fn announce(&self, change: PresenceChange) {
        if let Some(o) = self.0.get() {
            o.announced(change);
        }
    }
}

/// The label of presence events in `switchyard_published_total`.
pub const PUBLISH_SOURCE: &str = "presence";

/// One user's presence in a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub user_id: String,
    pub role: Role,
    pub connections: usize,
}

/// A tenant's connections and online users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TenantSnapshot {
    pub connections: usize,
    pub users: Vec<UserPresence>,
}

/// Why a tenant query (or join) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("the tenant group did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the tenant group stopped")]
    Stopped,
    #[error("cluster presence is unavailable: {0}")]
    Unavailable(String),
    #[error("tenant {tenant} has reached its limit of {limit} connections")]
    Quota { tenant: TenantKey, limit: usize },
}

/// What this node's tenant groups know (implemented by the tenant registry): the embedded
/// presence engine answers from it.
pub trait LocalTenants: Send + Sync + 'static {
    /// This node's connections and online users of `tenant`.
    fn snapshot(
        &self,
        tenant: &TenantKey,
    ) -> BoxFuture<'static, Result<TenantSnapshot, TenantError>>;
    /// Every tenant with connections on this node.
    fn tenant_keys(&self) -> Vec<TenantKey>;
}

/// Decides and answers presence (see the module docs). `joined` and `left` are called by the
/// registry under its lock, in the order connections opened and closed, and never block.
pub trait PresenceEngine: Send + Sync + 'static {
    /// A connection of `user` opened; `first_here` when it is the user's first on this node.
    /// Announces `UserOnline` when it is the user's first anywhere.
    fn joined(&self, tenant: &TenantKey, conn: ConnId, user: &UserId, role: Role, first_here: bool);
    /// A connection of `user` closed; `last_here` when it was the user's last on this node.
    /// Announces `UserOffline` once the user's last connection anywhere stayed closed for the
    /// grace period.
    fn left(&self, tenant: &TenantKey, conn: ConnId, user: &UserId, last_here: bool);
    /// The tenant's connections and online users (cluster-wide in cluster mode).
    fn snapshot(
        &self,
        tenant: &TenantKey,
    ) -> BoxFuture<'static, Result<TenantSnapshot, TenantError>>;
    /// Every tenant with connections (cluster-wide in cluster mode).
    fn tenant_keys(&self) -> BoxFuture<'static, Result<Vec<TenantKey>, TenantError>>;
    /// The node is shutting down: its connections leave presence at once rather than when its
    /// heartbeat expires.
    fn node_stopping(&self) -> BoxFuture<'static, ()>;
}

/// Publishes each presence change on `tenant:{t}:admins` and tells the hook's observer. Cheap
/// to clone.
#[derive(Clone)]
pub struct Announcer {
    publisher: Arc<dyn PublishPath>,
    hook: PresenceHook,
}

impl Announcer {
    pub fn new(publisher: Arc<dyn PublishPath>, hook: PresenceHook) -> Self {
        Self { publisher, hook }
    }

    /// Announces `change` (the publish runs in the background; a refusal is logged).
    pub fn announce(&self, change: PresenceChange) {
        let draft = presence_event(&change);
        let event = change.event();
        self.hook.announce(change);
        let publisher = self.publisher.clone();
        actix::spawn(async move {
            if let Err(e) = publisher.publish(draft, PUBLISH_SOURCE).await {
                log::warn!("{event} not published: {e}");
            }
        });
    }
}

/// The `UserOnline` / `UserOffline` event for a tenant's admins.
pub fn presence_event(change: &PresenceChange) -> Draft {
    let role = change.role.map(Role::as_str);
    let data = serde_json::json!({"userId": change.user.as_str(), "role": role, "tenantKey": change.tenant});
    Draft::new(
        ChannelName::from_channel(Channel::TenantAdmins {
            tenant: change.tenant.clone(),
        }),
        EventName::parse(change.event()).expect("presence event names are valid"),
        Payload::built(&data),
    )
}
