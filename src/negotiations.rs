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
    /// The `connectionId` the client was given (its `connection.connectionId`): the name of its
    /// own channel, `connection:{connectionId}`, where the Azure-compatible REST API reaches it.
    connection_id: String,
}

/// A connection token's first WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub struct Claimed {
    pub stateful: bool,
    pub connection_id: String,
}

/// What negotiate hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The token the client opens its WebSocket with (`?id=`).
    pub token: String,
    /// The connection's public id (negotiate's `connectionId`).
    pub connection_id: String,
}

/// A fresh id: 32 hex characters, URL-safe as clients put it in the URL without encoding.
pub fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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

    /// Issues a connection token for `identity`, and the connection's public id: a separate one,
    /// or (`separate_id` false: negotiate version 0, whose clients use the id as the token) the
    /// token itself.
    pub fn issue(&self, identity: Arc<Identity>, stateful: bool, separate_id: bool) -> Issued {
        let token = fresh_id();
        let connection_id = if separate_id {
            fresh_id()
        } else {
            token.clone()
        };
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
                connection_id: connection_id.clone(),
            },
        );
        Issued {
            token,
            connection_id,
        }
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
                    connection_id: n.connection_id.clone(),
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
        let Issued {
            token: t,
            connection_id,
        } = n.issue(alice.clone(), true, true);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(t, connection_id);
        assert_eq!(
            n.claim(&t, &alice),
            Ok(Claimed {
                stateful: true,
                connection_id
            })
        );
        assert_eq!(n.claim(&t, &alice), Err(ClaimError::InUse));
        assert_eq!(n.claim("nope", &alice), Err(ClaimError::Unknown));
        let late = n.issue(alice.clone(), false, false).token;
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(n.claim(&late, &alice), Err(ClaimError::Unknown));
    }

    #[test]
    fn a_refused_claim_by_another_principal_leaves_the_token_to_its_owner() {
        let n = Negotiations::new(Duration::from_secs(60));
        let owner = who("acme", Role::Admin);
        let t = n.issue(owner.clone(), false, false).token;
        assert_eq!(
            n.claim(&t, &who("globex", Role::Customer)),
            Err(ClaimError::NotTheirs)
        );
        assert_eq!(
            n.claim(&t, &who("acme", Role::Customer)),
            Err(ClaimError::NotTheirs)
        );
        // Version 0: the token is the connection id.
        assert_eq!(
            n.claim(&t, &owner),
            Ok(Claimed {
                stateful: false,
                connection_id: t.clone()
            })
        );
    }
}
