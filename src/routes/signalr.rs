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

use std::sync::Arc;

use super::ws::{check_origin, resume, upgrade};
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
    /// The client asked for stateful reconnect and the server agreed.
    stateful: bool,
}

/// A connection token's first WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub struct Claimed {
    pub user: UserId,
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

    /// Issues a connection token for `user`.
    pub fn issue(&self, user: UserId, stateful: bool) -> String {
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
                stateful,
            },
        );
        token
    }

    /// Claims a token for its first WebSocket; returns who it was issued to and how.
    pub fn claim(&self, token: &str) -> Result<Claimed, ClaimError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(token) {
            Some(n) if n.issued.elapsed() < self.ttl => {
                if n.used {
                    return Err(ClaimError::InUse);
                }
                n.used = true;
                Ok(Claimed {
                    user: n.user.clone(),
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
    let token = state.negotiations.issue(identity.user_id.clone(), stateful);
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
    let identity = authenticate(&req, &state).map_err(ApiError::from)?;
    let not_theirs = || {
        ApiError::Forbidden(
            "the token's user is not the one that negotiated this connection".into(),
        )
    };
    let mut resume_token = None;
    if let Some(id) = query.id.as_deref() {
        // A parked connection (stateful reconnect): the same connection on a new socket.
        if let Some(parked) = state.node.parked.take(id) {
            if parked.identity.user_id != identity.user_id {
                state.node.parked.park(Arc::from(id), parked);
                return Err(not_theirs().into());
            }
            return resume(&req, payload, &state, Arc::from(id), parked);
        }
        let claimed = state.negotiations.claim(id).map_err(|e| match e {
            ClaimError::Unknown => ApiError::NotFound(e.to_string()),
            ClaimError::InUse => ApiError::Conflict(e.to_string()),
        })?;
        if claimed.user != identity.user_id {
            return Err(not_theirs().into());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_url_safe_and_expire() {
        let n = Negotiations::new(Duration::from_millis(50));
        let user = UserId::parse("u").unwrap();
        let t = n.issue(user.clone(), true);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            n.claim(&t),
            Ok(Claimed {
                user: user.clone(),
                stateful: true
            })
        );
        assert_eq!(n.claim(&t), Err(ClaimError::InUse));
        assert_eq!(n.claim("nope"), Err(ClaimError::Unknown));
        let late = n.issue(user, false);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(n.claim(&late), Err(ClaimError::Unknown));
    }
}
