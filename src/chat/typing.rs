//! Typing indicators on this node: who is typing in which conversation, and since which
//! `StartTyping` (a generation number), so an expiry timer only ends the indicator it was started
//! for. `UserStartedTyping` is announced on every `StartTyping`, as seed 003's hub does (a
//! participant who joined while the user was already typing learns it from the next one);
//! `UserStoppedTyping` when they stop, or when `typing_timeout_ms` passes without a refresh.
//!
//! The state is per node: a connection's StartTyping and StopTyping reach the node it is on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use switchyard_actors::ids::{TenantKey, UserId};

type Key = (TenantKey, String, UserId);

/// Who is typing where (see the module docs).
#[derive(Default)]
pub struct Typing {
    state: Mutex<HashMap<Key, u64>>,
    next: AtomicU64,
}

impl Typing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(tenant: &TenantKey, conversation: &str, user: &UserId) -> Key {
        (tenant.clone(), conversation.to_owned(), user.clone())
    }

    /// Records a StartTyping (a start or a refresh). Returns the generation the expiry timer
    /// must present.
    pub fn start(&self, tenant: &TenantKey, conversation: &str, user: &UserId) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert(Self::key(tenant, conversation, user), generation);
        generation
    }

    /// Ends the indicator if it is still the one of `generation` (no refresh since). Returns
    /// whether it ended (announce UserStoppedTyping).
    pub fn expire(
        &self,
        tenant: &TenantKey,
        conversation: &str,
        user: &UserId,
        generation: u64,
    ) -> bool {
        let mut state = self.lock();
        let key = Self::key(tenant, conversation, user);
        if state.get(&key) == Some(&generation) {
            state.remove(&key);
            true
        } else {
            false
        }
    }

    /// Records a StopTyping. Returns whether the user was typing (announce it).
    pub fn stop(&self, tenant: &TenantKey, conversation: &str, user: &UserId) -> bool {
        self.lock()
            .remove(&Self::key(tenant, conversation, user))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_refresh_expire_stop() {
        let t = Typing::default();
        let (tenant, user) = (TenantKey::parse("a").unwrap(), UserId::parse("u").unwrap());
        let g1 = t.start(&tenant, "c", &user);
        let g2 = t.start(&tenant, "c", &user);
        assert!(
            !t.expire(&tenant, "c", &user, g1),
            "the refresh outlives the old timer"
        );
        assert!(t.expire(&tenant, "c", &user, g2));
        assert!(!t.stop(&tenant, "c", &user), "already ended");
        t.start(&tenant, "c", &user);
        assert!(t.stop(&tenant, "c", &user));
    }
}
