//! The SignalR-compatible hub: `POST {hub}/negotiate` and the WebSockets transport at `{hub}`
//! (with `?id={connectionToken}` after negotiate, or without for `skipNegotiation` clients).
//! A hub connection is an ordinary [`Connection`](switchyard_actors::connection::Connection) with the
//! SignalR codec; broker, auth and channel rules are shared with `/ws`.
//!
//! Wire facts followed here (see `docs/signalr.md`): negotiate answers 200 (a refused token is
//! `{"error": …}` so `start()` fails with that message); v1 returns a URL-safe `connectionToken`,
//! v0 only a `connectionId`; only the WebSockets transport is offered, Text listed first; an
//! unknown `id` is 404 and a second socket on one `id` is 409.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::channel::{Channel, ChannelName};
use switchyard_actors::codec::signalr::SignalRCodec;
use switchyard_actors::connection::resume::TakeError;
use switchyard_actors::identity::Identity;

use std::sync::Arc;

use super::ws::{check_origin, check_upgrade, resume, upgrade};
// Start-up builds the pending tokens through this path.
use crate::caller::authenticate;
use crate::negotiations::ClaimError;
pub use crate::negotiations::Negotiations;
use crate::problem::ApiError;
use crate::state::AppState;

/// The highest negotiate protocol version this server speaks.
const NEGOTIATE_VERSION: u32 = 1;

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
    let issued = state.negotiations.issue(identity, stateful, version >= 1);
    let token = issued.token;
    let transports = json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]);
    let body = if version >= 1 {
        let mut body = json!({
            "connectionId": issued.connection_id,
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
    // `skipNegotiation` clients were given no id: the connection gets one all the same.
    let mut connection_id = None;
    if let Some(id) = query.id.as_deref() {
        // A parked connection (stateful reconnect): the same connection on a new socket, for the
        // same principal only; a refused attempt leaves it parked for its owner.
        match state
            .connections
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
        connection_id = Some(claimed.connection_id);
    }
    let connection_id = connection_id.unwrap_or_else(crate::negotiations::fresh_id);
    let own_channel = ChannelName::from_channel(Channel::Connection { id: connection_id });
    // The route's pattern is the hub path as configured.
    let default = req
        .match_pattern()
        .and_then(|path| state.hub_arguments.get(&path).copied())
        .unwrap_or_default();
    let codec = SignalRCodec::new(identity.clone(), state.connections.settings.max_frame_bytes)
        .with_arguments_default(default);
    upgrade(
        &req,
        payload,
        &state,
        identity,
        Box::new(codec),
        resume_token,
        Some(own_channel),
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
