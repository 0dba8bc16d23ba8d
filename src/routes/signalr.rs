//! The SignalR-compatible hub: `POST {hub}/negotiate` and the WebSockets transport at `{hub}`
//! (with `?id={connectionToken}` after negotiate, or without for `skipNegotiation` clients).
//! A hub connection is an ordinary [`Connection`](switchyard_actors::connection::Connection) with the
//! SignalR codec; broker, auth and channel rules are shared with `/ws`.
//!
//! Wire facts followed here (see `docs/signalr.md`): negotiate answers 200 (a refused token is
//! `{"error": …}` so `start()` fails with that message); v1 returns a URL-safe `connectionToken`,
//! v0 only a `connectionId`; only the WebSockets transport is offered, Text listed first; an
//! unknown `id` is 404 and a second socket on one `id` is 409.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::codec::signalr::SignalRCodec;
use switchyard_actors::connection::resume::TakeError;
use switchyard_actors::identity::Identity;

use std::sync::Arc;

use super::ws::{check_origin, check_upgrade, resume, upgrade};
use crate::auth::authenticate;
use crate::problem::ApiError;
use crate::state::AppState;

/// The highest negotiate protocol version this server speaks.
const NEGOTIATE_VERSION: u32 = 1;

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

#[derive(Deserialize)]
pub struct NegotiateQuery {
    #[serde(rename = "negotiateVersion")]
    negotiate_version: Option<u32>,
    #[serde(rename = "useStatefulReconnect")]
    use_stateful_reconnect: Option<bool>,
}

/// `POST {hub}/negotiate?negotiateVersion=1`.
pub async fn negotiate(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<NegotiateQuery>,
) -> HttpResponse {
    let version = query.negotiate_version.unwrap_or(0).min(NEGOTIATE_VERSION);
    let identity = match authenticate(&req, &state) {
        Ok(id) => id,
        Err(e) => return HttpResponse::Ok().json(json!({ "error": e.to_string() })),
    };
    // Offered only when asked: clients that did not ask refuse a server that offers it.
    let stateful =
        query.use_stateful_reconnect == Some(true) && state.settings.signalr.stateful_reconnect;
    let token = state.negotiations.issue(identity, stateful);
    let transports = json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]);
    let body = if version >= 1 {
        let mut body = json!({
            "connectionId": uuid::Uuid::new_v4().simple().to_string(),
            "connectionToken": token,
            "negotiateVersion": version,
            "availableTransports": transports,
        });
        if stateful {
            body["useStatefulReconnect"] = true.into();
        }
        body
    } else {
        // Version 0 clients use the connectionId as the token.
        json!({
            "connectionId": token,
            "negotiateVersion": 0,
            "availableTransports": transports,
        })
    };
    HttpResponse::Ok().json(body)
}

#[derive(Deserialize)]
pub struct HubQuery {
    id: Option<String>,
}

/// `GET {hub}[?id=…]`: the WebSockets transport.
pub async fn hub(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<HubQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state)?;
    // Before anything is claimed: a request that cannot become a WebSocket must not use up
    // a connection id.
    check_upgrade(&req)?;
    let identity = authenticate(&req, &state).map_err(ApiError::from)?;
    let mut resume_token = None;
    if let Some(id) = query.id.as_deref() {
        // A parked connection (stateful reconnect): the same connection on a new socket, for the
        // same principal only; a refused attempt leaves it parked for its owner.
        match state
            .node
            .parked
            .take_for(id, |parked| parked.identity.same_principal(&identity))
        {
            Ok(mut parked) => {
                // The same principal, perhaps with a refreshed token: its expiry now applies.
                parked.identity = identity;
                return resume(&req, payload, &state, Arc::from(id), parked);
            }
            Err(TakeError::NotTheirs) => {
                refused_takeover(&state, &identity, "resume a parked connection");
                return Err(ApiError::Forbidden(ClaimError::NotTheirs.to_string()).into());
            }
            Err(TakeError::Missing) => {}
        }
        let claimed = state
            .negotiations
            .claim(id, &identity)
            .map_err(|e| match e {
                ClaimError::Unknown => ApiError::NotFound(e.to_string()),
                ClaimError::InUse => ApiError::Conflict(e.to_string()),
                ClaimError::NotTheirs => {
                    refused_takeover(&state, &identity, "use a negotiated connection id");
                    ApiError::Forbidden(e.to_string())
                }
            })?;
        if claimed.stateful {
            resume_token = Some(Arc::<str>::from(id));
        }
    }
    let codec = SignalRCodec::new(identity.clone(), state.node.sessions.max_frame_bytes);
    upgrade(
        &req,
        payload,
        &state,
        identity,
        Box::new(codec),
        resume_token,
    )
}

/// Counts and logs a caller presenting a connection id that is not theirs (never the id or token).
fn refused_takeover(state: &AppState, caller: &Identity, what: &str) {
    state
        .node
        .metrics
        .auth_failures
        .with_label_values(&["not_connection_owner"])
        .inc();
    log::warn!(
        "refused an attempt to {what} of another identity: tenant={} user={} role={}",
        caller.tenant.as_ref().map(|t| t.as_str()).unwrap_or("-"),
        caller.user_id,
        caller.role
    );
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
