//! The SignalR-compatible hub: `POST {hub}/negotiate` and the transports at `{hub}`: WebSockets
//! (with `?id={connectionToken}` after negotiate, or without for `skipNegotiation` clients),
//! Server-Sent Events (`GET` with `Accept: text/event-stream`) and Long Polling (other `GET`s
//! poll), both with `POST` for sends and Long Polling's `DELETE` to close (`hub_transports.rs`).
//! A hub connection is an ordinary [`Connection`](switchyard_actors::connection::Connection) with the
//! SignalR codec whatever the transport; broker, auth and channel rules are shared with `/ws`.
//!
//! Wire facts followed here (see `docs/signalr.md`): negotiate answers 200 (a refused token is
//! `{"error": …}` so `start()` fails with that message); v1 returns a URL-safe `connectionToken`,
//! v0 only a `connectionId`; the enabled transports (`signalr.transports`) are listed in ASP.NET
//! Core's order, Text first; an unknown `id` is 404 and a second socket on one `id` is 409. The
//! SSE and Long Polling status codes are ASP.NET Core's `HttpConnectionDispatcher`'s.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::channel::{Channel, ChannelName};
use switchyard_actors::codec::signalr::SignalRCodec;
use switchyard_actors::codec::WireCodec;
use switchyard_actors::connection::conn_socket::ConnSocket;
use switchyard_actors::connection::resume::TakeError;
use switchyard_actors::identity::Identity;

use std::sync::Arc;

use super::ws::{check_origin, check_upgrade, resume, stream, upgrade};
// Start-up builds the pending tokens through this path.
use crate::caller::authenticate;
use crate::hub_transports::{HttpSession, Transport};
use crate::negotiations::ClaimError;
pub use crate::negotiations::Negotiations;
use crate::problem::ApiError;
use crate::settings::HubTransport;
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
    let transports: Vec<_> = HubTransport::ALL
        .into_iter()
        .filter(|t| enabled(&state, *t))
        .map(|t| json!({"transport": t.name(), "transferFormats": t.transfer_formats()}))
        .collect();
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

/// Whether `signalr.transports` enables `transport`.
fn enabled(state: &AppState, transport: HubTransport) -> bool {
    state.settings.signalr.transports.contains(&transport)
}

/// ASP.NET Core's refusal of a transport the hub does not enable.
fn not_enabled(transport: HubTransport) -> ApiError {
    ApiError::NotFound(format!(
        "{} transport not supported by this end point type",
        transport.name()
    ))
}

/// Whether the request asks for Server-Sent Events.
fn wants_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// `GET {hub}[?id=…]`: a WebSocket, a Server-Sent Events stream or a long poll, told apart as
/// ASP.NET Core does (`Accept: text/event-stream`, then a WebSocket upgrade, else a poll).
pub async fn hub(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<HubQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state)?;
    if wants_event_stream(&req) {
        return http_transport(
            &req,
            &state,
            query.id.as_deref(),
            HubTransport::ServerSentEvents,
        )
        .await;
    }
    // Not a WebSocket upgrade: a poll (ASP.NET Core's rule). Before anything is claimed, so a
    // request that cannot become a WebSocket does not use up a connection id.
    if check_upgrade(&req).is_err() {
        return http_transport(&req, &state, query.id.as_deref(), HubTransport::LongPolling).await;
    }
    if !enabled(&state, HubTransport::WebSockets) {
        return Err(not_enabled(HubTransport::WebSockets).into());
    }
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
        if state.http_sessions.get(id).is_some() {
            return Err(ApiError::BadRequest(CANNOT_CHANGE.into()).into());
        }
        let claimed = claim(&state, id, &identity)?;
        if claimed.stateful {
            resume_token = Some(Arc::<str>::from(id));
        }
        connection_id = Some(claimed.connection_id);
    }
    let connection_id = connection_id.unwrap_or_else(crate::negotiations::fresh_id);
    let own_channel = ChannelName::from_channel(Channel::Connection { id: connection_id });
    let codec = hub_codec(&req, &state, &identity);
    let upgraded = upgrade(
        &req,
        payload,
        &state,
        identity,
        Box::new(codec),
        resume_token,
        Some(own_channel),
    );
    if upgraded.is_ok() {
        count_transport(&state, HubTransport::WebSockets);
    }
    upgraded
}

/// Counts a SignalR connection started over `transport` (resumes are not new connections).
fn count_transport(state: &AppState, transport: HubTransport) {
    state
        .node
        .metrics
        .signalr_transports
        .with_label_values(&[transport.name()])
        .inc();
}

/// ASP.NET Core's answer to a request for another transport than the connection's.
const CANNOT_CHANGE: &str = "Cannot change transports mid-connection";

/// Claims a negotiated connection token for its transport.
fn claim(
    state: &AppState,
    id: &str,
    identity: &Identity,
) -> Result<crate::negotiations::Claimed, ApiError> {
    state.negotiations.claim(id, identity).map_err(|e| match e {
        ClaimError::Unknown => ApiError::NotFound(e.to_string()),
        ClaimError::InUse => ApiError::Conflict(e.to_string()),
        ClaimError::NotTheirs => {
            refused_takeover(state, identity, "use a negotiated connection id");
            ApiError::Forbidden(e.to_string())
        }
    })
}

/// The SignalR codec for a connection on this hub path.
fn hub_codec(req: &HttpRequest, state: &AppState, identity: &Arc<Identity>) -> SignalRCodec {
    // The route's pattern is the hub path as configured.
    let default = req
        .match_pattern()
        .and_then(|path| state.hub_arguments.get(&path).copied())
        .unwrap_or_default();
    SignalRCodec::new(identity.clone(), state.connections.settings.max_frame_bytes)
        .with_arguments_default(default)
}

/// The connection an SSE or Long Polling request names, for its owner only.
fn session_of(
    req: &HttpRequest,
    state: &AppState,
    id: Option<&str>,
) -> Result<Arc<HttpSession>, ApiError> {
    let id = id.ok_or_else(|| ApiError::BadRequest("Connection ID required".into()))?;
    let identity = authenticate(req, state)?;
    let session = state
        .http_sessions
        .get(id)
        .ok_or_else(|| ApiError::NotFound("No Connection with that ID".into()))?;
    owned_by(state, &session, &identity)?;
    Ok(session)
}

/// Refuses (and counts) a caller using an SSE or Long Polling connection that is not theirs.
fn owned_by(state: &AppState, session: &HttpSession, caller: &Identity) -> Result<(), ApiError> {
    if session.identity.same_principal(caller) {
        return Ok(());
    }
    refused_takeover(state, caller, "use a connection");
    Err(ApiError::Forbidden(ClaimError::NotTheirs.to_string()))
}

/// `GET {hub}?id=…` for Server-Sent Events (the stream) or Long Polling (a poll; the first one
/// starts the connection and answers at once).
async fn http_transport(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    id: Option<&str>,
    transport: HubTransport,
) -> Result<HttpResponse, actix_web::Error> {
    let Some(id) = id else {
        return Err(ApiError::BadRequest("Connection ID required".into()).into());
    };
    let identity = authenticate(req, state).map_err(ApiError::from)?;
    if let Some(session) = state.http_sessions.get(id) {
        owned_by(state, &session, &identity)?;
        return match (&session.transport, transport) {
            (Transport::LongPolling(_), HubTransport::LongPolling) => {
                Ok(state.http_sessions.poll(id, &session).await)
            }
            (Transport::ServerSentEvents, HubTransport::ServerSentEvents) => {
                Err(ApiError::Conflict(ClaimError::InUse.to_string()).into())
            }
            _ => Err(ApiError::BadRequest(CANNOT_CHANGE.into()).into()),
        };
    }
    if !enabled(state, transport) {
        return Err(not_enabled(transport).into());
    }
    let claimed = claim(state, id, &identity).map_err(|e| match e {
        // Used by a connection that has ended (or by a WebSocket): ASP.NET Core has removed it.
        ApiError::Conflict(_) => ApiError::NotFound("No Connection with that ID".into()),
        other => other,
    })?;
    if claimed.stateful {
        // As in ASP.NET Core, stateful reconnect needs a WebSocket; clients only use it there.
        log::debug!(
            "stateful reconnect was negotiated but the client chose {}; the connection runs without it",
            transport.name()
        );
    }
    // Its own channel, as for a WebSocket: the Azure-compatible API addresses it there.
    let own_channel = ChannelName::from_channel(Channel::Connection {
        id: claimed.connection_id,
    });
    let codec = hub_codec(req, state, &identity);
    // SSE: text only, and a view of the keep-alive connection (no longer the actor's once the
    // stream ended). Long Polling: no socket of its own between polls, a stop signal instead.
    let (codec, socket, stop): (Box<dyn WireCodec>, _, _) = match transport {
        HubTransport::ServerSentEvents => (
            Box::new(codec.text_only()),
            ConnSocket::of(req).view(),
            None,
        ),
        _ => {
            let (socket, stop) = ConnSocket::detached();
            (Box::new(codec), socket, Some(stop))
        }
    };
    let streamed = stream(
        req,
        state,
        identity.clone(),
        codec,
        socket.clone(),
        Some(own_channel),
    )?;
    let sessions = &state.http_sessions;
    let started = match stop {
        None => sessions.start_sse(id, identity, socket, streamed),
        Some(stop) => sessions.start_long_polling(id, identity, socket, stop, streamed),
    };
    count_transport(state, transport);
    Ok(started)
}

/// `POST {hub}?id=…`: what an SSE or Long Polling client sends, in order.
pub async fn send(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<HubQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state)?;
    let session = session_of(&req, &state, query.id.as_deref())?;
    let max = state.connections.settings.max_frame_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::Http {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: format!("a send may carry at most {max} bytes (session.max_frame_bytes)"),
            }
            .into());
        }
        body.extend_from_slice(&chunk);
    }
    if !body.is_empty() && session.inbound.send(body.freeze()).await.is_err() {
        return Err(ApiError::NotFound("No Connection with that ID".into()).into());
    }
    Ok(HttpResponse::Ok().content_type("text/plain").finish())
}

/// `DELETE {hub}?id=…`: a Long Polling client closes its connection; the waiting poll then
/// answers 204.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<HubQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state)?;
    let session = session_of(&req, &state, query.id.as_deref())?;
    if !matches!(session.transport, Transport::LongPolling(_)) {
        return Err(ApiError::BadRequest(
            "Cannot terminate this connection using the DELETE endpoint.".into(),
        )
        .into());
    }
    // Already gone is as good as closed.
    let _ = session.inbound.close().await;
    Ok(HttpResponse::Accepted().content_type("text/plain").finish())
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
