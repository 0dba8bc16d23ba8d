//! SignalR negotiate's connection tokens: issued to one identity, claimed once by that principal's
//! first WebSocket, expired after a while. Part of the application state (`state.rs`), used by the
//! hub routes (`routes/signalr.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_actors::identity::Identity;

/// Why a `?id=` could not be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("no negotiated connection has this id (it may have expired); negotiate again")]
    Unknown,
    #[error("this connection id already has a WebSocket")]
    InUse,
    /// Presented by a caller other than the one that negotiated it; the id stays usable.
    #[error("this connection was negotiated by another identity (user, tenant, role and issuer must match)")]
    NotTheirs,
}

struct Negotiated {
    identity: Arc<Identity>,
    issued: Instant,
    used: bool,
    /// The client asked for stateful reconnect and the server agreed.
    stateful: bool,
}

/// A connection token's first WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub struct Claimed {
    pub stateful: bool,
}

/// Connection tokens issued by negotiate and not yet expired.
pub struct Negotiations {
    pending: Mutex<HashMap<String, Negotiated>>,
    ttl: Duration,
}

impl Negotiations {
    pub fn new(ttl: Duration) -> Self {
        Self {
            pending: Mutex::default(),
            ttl,
        }
    }

    /// Issues a connection token for `identity`.
    pub fn issue(&self, identity: Arc<Identity>, stateful: bool) -> String {
        // Hex: URL-safe as the client puts it in the URL without encoding.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.ttl;
        pending.retain(|_, n| n.issued.elapsed() < ttl);
        pending.insert(
            token.clone(),
            Negotiated {
                identity,
                issued: Instant::now(),
                used: false,
                stateful,
            },
        );
        token
    }

    /// Claims a token for its first WebSocket, for the principal it was issued to only; a
    /// refused claim leaves the token as it was, so its owner can still use it.
    pub fn claim(&self, token: &str, caller: &Identity) -> Result<Claimed, ClaimError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(token) {
            Some(n) if n.issued.elapsed() < self.ttl => {
                if !n.identity.same_principal(caller) {
                    return Err(ClaimError::NotTheirs);
                }
                if n.used {
                    return Err(ClaimError::InUse);
                }
                n.used = true;
                Ok(Claimed {
                    stateful: n.stateful,
                })
            }
            _ => Err(ClaimError::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_actors::identity::Role;
    use switchyard_actors::ids::{TenantKey, UserId};

    fn who(tenant: &str, role: Role) -> Arc<Identity> {
        Arc::new(Identity {
            user_id: UserId::parse("alice").unwrap(),
            tenant: Some(TenantKey::parse(tenant).unwrap()),
            role,
            session_id: None,
            expires_at: None,
            issuer: None,
        })
    }

    #[test]
    fn tokens_are_single_use_url_safe_and_expire() {
        let n = Negotiations::new(Duration::from_millis(50));
        let alice = who("acme", Role::Admin);
        let t = n.issue(alice.clone(), true);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(n.claim(&t, &alice), Ok(Claimed { stateful: true }));
        assert_eq!(n.claim(&t, &alice), Err(ClaimError::InUse));
        assert_eq!(n.claim("nope", &alice), Err(ClaimError::Unknown));
        let late = n.issue(alice.clone(), false);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(n.claim(&late, &alice), Err(ClaimError::Unknown));
    }

    #[test]
    fn a_refused_claim_by_another_principal_leaves_the_token_to_its_owner() {
        let n = Negotiations::new(Duration::from_secs(60));
        let owner = who("acme", Role::Admin);
        let t = n.issue(owner.clone(), false);
        assert_eq!(
            n.claim(&t, &who("globex", Role::Customer)),
            Err(ClaimError::NotTheirs)
        );
        assert_eq!(
            n.claim(&t, &who("acme", Role::Customer)),
            Err(ClaimError::NotTheirs)
        );
        assert_eq!(n.claim(&t, &owner), Ok(Claimed { stateful: false }));
    }
}
