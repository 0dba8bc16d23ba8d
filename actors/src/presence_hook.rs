//! The seam through which presence announcements reach code outside the actors crate.
//!
//! `UserOnline` / `UserOffline` are decided in one place per mode (the [`crate::tenant_group`]
//! registry, and in cluster mode the [`crate::redis_bridge`] sweep for offline), once per user
//! change cluster-wide, and published on `tenant:{t}:admins`. A [`PresenceObserver`] is told about
//! each announcement at that same point, so it can relay it where else it is needed (the chat
//! service tells the user's conversation partners) exactly once.
//!
//! [`PresenceHook`] is the slot both announcers share. It is created empty at start-up, handed to
//! them, and filled once the observer exists (it needs the node, which needs the registry).

use std::sync::{Arc, OnceLock};

use crate::identity::Role;
use crate::ids::{TenantKey, UserId};

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
