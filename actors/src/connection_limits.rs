//! Connection limits per user and per source address, on this node (`[connection_limits]`).
//!
//! A tenant's `max_connections` quota bounds a whole tenant; these bound one caller: one
//! verified user of one tenant, and one source IP address. A WebSocket upgrade takes a
//! [`ConnectionSlot`] before it starts a connection and the connection holds it for its lifetime, so
//! the count is released exactly when the connection ends, however it ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::identity::Identity;
use crate::ids::{TenantKey, UserId};

/// Why a connection was refused; [`LimitError::label`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "user {user} already has {limit} connections on this node (connection_limits.max_per_user)"
    )]
    PerUser { user: UserId, limit: usize },
    #[error("{ip} already has {limit} connections on this node (connection_limits.max_per_ip)")]
    PerIp { ip: IpAddr, limit: usize },
}

impl LimitError {
    pub fn label(&self) -> &'static str {
        match self {
            LimitError::PerUser { .. } => "per_user",
            LimitError::PerIp { .. } => "per_ip",
        }
    }
}

/// A user is counted within its tenant: the same `sub` in two tenants is two users.
type UserKey = (Option<TenantKey>, UserId);

/// Open connections by key, refusing past a limit (`0` = no limit).
#[derive(Debug)]
struct Counts<K> {
    limit: usize,
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Counts<K> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        // Each operation is one insert or decrement: a poisoned map is still consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more connection for `key`; false (nothing counted) at the limit.
    fn take(&self, key: &K) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut open = self.lock();
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, key: &K) {
        if self.limit == 0 {
            return;
        }
        let mut open = self.lock();
        if let Some(n) = open.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                open.remove(key);
            }
        }
    }

    fn count(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }
}

/// The node's connection counts per user and per source address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    users: Counts<UserKey>,
    ips: Counts<IpAddr>,
}

impl ConnectionLimiter {
    /// Limits of `max_per_user` connections per user of a tenant and `max_per_ip` per source
    /// address; `0` turns either off.
    pub fn new(max_per_user: usize, max_per_ip: usize) -> Self {
        Self {
            users: Counts::new(max_per_user),
            ips: Counts::new(max_per_ip),
        }
    }

    /// No limits (nodes built without configuration, unit tests).
    pub fn unlimited() -> Self {
        Self::new(0, 0)
    }

    /// Takes a slot for a connection of `identity` from `ip` (unknown for non-IP transports),
    /// or says which limit refuses it; a refusal counts nothing.
    pub fn acquire(
        self: &Arc<Self>,
        identity: &Identity,
        ip: Option<IpAddr>,
    ) -> Result<ConnectionSlot, LimitError> {
        let user = (identity.tenant.clone(), identity.user_id.clone());
        if let Some(ip) = ip {
            if !self.ips.take(&ip) {
                return Err(LimitError::PerIp {
                    ip,
                    limit: self.ips.limit,
                });
            }
        }
        if !self.users.take(&user) {
            if let Some(ip) = ip {
                self.ips.give_back(&ip);
            }
            return Err(LimitError::PerUser {
                user: identity.user_id.clone(),
                limit: self.users.limit,
            });
        }
        Ok(ConnectionSlot {
            limiter: self.clone(),
            user,
            ip,
        })
    }

    /// Connections counted for a user of a tenant (0 when per-user limits are off).
    pub fn user_connections(&self, tenant: Option<&TenantKey>, user: &UserId) -> usize {
        self.users.count(&(tenant.cloned(), user.clone()))
    }
}

/// One counted connection; dropping it gives the count back.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    user: UserKey,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.users.give_back(&self.user);
        if let Some(ip) = &self.ip {
            self.limiter.ips.give_back(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    fn user(tenant: &str, sub: &str) -> Identity {
        Identity {
            user_id: UserId::parse(sub).unwrap(),
            tenant: Some(TenantKey::parse(tenant).unwrap()),
            role: Role::Customer,
            session_id: None,
            expires_at: None,
            issuer: None,
        }
    }

    #[test]
    fn a_user_is_limited_within_its_tenant_and_slots_give_back_on_drop() {
        let limiter = Arc::new(ConnectionLimiter::new(2, 0));
        let alice = user("acme", "alice");
        let a1 = limiter.acquire(&alice, None).unwrap();
        let _a2 = limiter.acquire(&alice, None).unwrap();
        assert_eq!(
            limiter.acquire(&alice, None).unwrap_err().label(),
            "per_user"
        );
        // The same sub in another tenant is another user.
        assert!(limiter.acquire(&user("globex", "alice"), None).is_ok());
        drop(a1);
        assert!(limiter.acquire(&alice, None).is_ok());
    }

    #[test]
    fn an_address_is_limited_across_users_and_a_refusal_counts_nothing() {
        let limiter = Arc::new(ConnectionLimiter::new(1, 2));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let _a = limiter.acquire(&user("acme", "a"), Some(ip)).unwrap();
        // Refused by the user limit: the address count must not keep the refused attempt.
        assert!(limiter.acquire(&user("acme", "a"), Some(ip)).is_err());
        let _b = limiter.acquire(&user("acme", "b"), Some(ip)).unwrap();
        assert_eq!(
            limiter
                .acquire(&user("acme", "c"), Some(ip))
                .unwrap_err()
                .label(),
            "per_ip"
        );
        assert_eq!(
            limiter.user_connections(None, &UserId::parse("c").unwrap()),
            0
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = Arc::new(ConnectionLimiter::unlimited());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let slots: Vec<_> = (0..1000)
            .map(|_| limiter.acquire(&user("acme", "a"), Some(ip)).unwrap())
            .collect();
        assert_eq!(slots.len(), 1000);
    }
}
