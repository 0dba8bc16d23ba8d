//! The SignalR-compatible hub: `POST {hub}/negotiate` and the WebSockets transport at `{hub}`
//! (with `?id={connectionToken}` after negotiate, or without for `skipNegotiation` clients).
//! A hub connection is an ordinary [`Session`](switchyard_actors::session::Session) with the
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
use switchyard_actors::ids::UserId;

use super::ws::{check_origin, upgrade};
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
}

struct Negotiated {
    user: UserId,
    issued: Instant,
    used: bool,
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

    /// Issues a connection token for `user`.
    pub fn issue(&self, user: UserId) -> String {
        // Hex: URL-safe as the client puts it in the URL without encoding.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.ttl;
        pending.retain(|_, n| n.issued.elapsed() < ttl);
        pending.insert(
            token.clone(),
            Negotiated {
                user,
                issued: Instant::now(),
                used: false,
            },
        );
        token
    }

    /// Claims a token for its one WebSocket; returns the user it was issued to.
    pub fn claim(&self, token: &str) -> Result<UserId, ClaimError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(token) {
            Some(n) if n.issued.elapsed() < self.ttl => {
                if n.used {
                    return Err(ClaimError::InUse);
                }
                n.used = true;
                Ok(n.user.clone())
            }
            _ => Err(ClaimError::Unknown),
        }
    }
}

#[derive(Deserialize)]
pub struct NegotiateQuery {
    #[serde(rename = "negotiateVersion")]
    negotiate_version: Option<u32>,
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
    let token = state.negotiations.issue(identity.user_id.clone());
    let transports = json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]);
    let body = if version >= 1 {
        json!({
            "connectionId": uuid::Uuid::new_v4().simple().to_string(),
            "connectionToken": token,
            "negotiateVersion": version,
            "availableTransports": transports,
        })
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
    let identity = authenticate(&req, &state).map_err(ApiError::from)?;
    if let Some(id) = query.id.as_deref() {
        let negotiated_for = state.negotiations.claim(id).map_err(|e| match e {
            ClaimError::Unknown => ApiError::NotFound(e.to_string()),
            ClaimError::InUse => ApiError::Conflict(e.to_string()),
        })?;
        if negotiated_for != identity.user_id {
            return Err(ApiError::Forbidden(
                "the token's user is not the one that negotiated this connection".into(),
            )
            .into());
        }
    }
    let codec = SignalRCodec::new(identity.clone(), state.node.sessions.max_frame_bytes);
    upgrade(&req, payload, &state, identity, Box::new(codec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_url_safe_and_expire() {
        let n = Negotiations::new(Duration::from_millis(50));
        let user = UserId::parse("u").unwrap();
        let t = n.issue(user.clone());
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(n.claim(&t), Ok(user.clone()));
        assert_eq!(n.claim(&t), Err(ClaimError::InUse));
        assert_eq!(n.claim("nope"), Err(ClaimError::Unknown));
        let late = n.issue(user);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(n.claim(&late), Err(ClaimError::Unknown));
    }
}
