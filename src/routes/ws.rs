//! WebSocket upgrades: authenticate (401 problem JSON before any upgrade), join the tenant group
//! (except the admin console's own socket),
//! and hand the socket to a [`Connection`] with the protocol's codec.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use switchyard_actors::channel::ChannelName;
use switchyard_actors::codec::native::NativeCodec;
use switchyard_actors::codec::WireCodec;
use switchyard_actors::connection::conn_socket::ConnSocket;
use switchyard_actors::connection::resume::Parked;
use switchyard_actors::connection::streamed::{Inbound, Outbound};
use switchyard_actors::connection::{Connection, Connections};
use switchyard_actors::identity::{Identity, Role};
use switchyard_actors::ids::{ConnId, TenantKey};
use switchyard_actors::quotas::QuotaKind;
use switchyard_actors::tenant_group::{Member, TenantError};

use crate::caller::authenticate;
use crate::problem::ApiError;
use crate::state::AppState;

/// `GET /ws`: the native JSON protocol.
pub async fn native(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state)?;
    check_upgrade(&req)?;
    let identity = authenticate(&req, &state).map_err(ApiError::from)?;
    upgrade(
        &req,
        payload,
        &state,
        identity,
        Box::new(NativeCodec),
        None,
        None,
    )
}

/// Refuses a request that cannot become a WebSocket (no `Upgrade` header, wrong method or
/// version) with problem JSON, before anything is claimed for it.
pub fn check_upgrade(req: &HttpRequest) -> Result<(), ApiError> {
    Connection::verify_upgrade(req)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade request: {e}")))
}

/// Refuses WebSocket upgrades from browser origins not in `cors.allowed_origins` (an empty list
/// allows any). Requests without an `Origin` header are not from browsers and pass.
pub fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let allowed = &state.settings.cors.allowed_origins;
    let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.is_empty() || allowed.iter().any(|a| a == origin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin {origin:?} is not in cors.allowed_origins"
        )))
    }
}

/// Starts a session for an authenticated caller with the given codec.
pub fn upgrade(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    identity: Arc<Identity>,
    codec: Box<dyn WireCodec>,
    resume_token: Option<Arc<str>>,
    own_channel: Option<ChannelName>,
) -> Result<HttpResponse, actix_web::Error> {
    start(
        req,
        state,
        identity,
        |shared, conn, identity, tenant| {
            let mut session = Connection::new(shared, conn, identity, tenant, codec);
            if let Some(token) = resume_token {
                session = session.with_resume_token(token);
            }
            if let Some(own) = own_channel {
                session = session.with_own_channel(own);
            }
            session
        },
        |session| session.serve(req, payload),
    )
}

/// Starts a session for an authenticated caller without a WebSocket (SignalR's SSE and Long
/// Polling transports): the same admission, limits and tenant group as [`upgrade`].
pub fn stream(
    req: &HttpRequest,
    state: &AppState,
    identity: Arc<Identity>,
    codec: Box<dyn WireCodec>,
    socket: ConnSocket,
    own_channel: Option<ChannelName>,
) -> Result<(Inbound, Outbound), actix_web::Error> {
    let queue = state.settings.signalr.send_queue_frames;
    start(
        req,
        state,
        identity,
        |shared, conn, identity, tenant| {
            let session = Connection::new(shared, conn, identity, tenant, codec);
            match own_channel {
                Some(own) => session.with_own_channel(own),
                None => session,
            }
        },
        |session| Ok(session.serve_streamed(socket, queue)),
    )
}

/// Continues a parked (stateful reconnect) connection on this socket.
pub fn resume(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    token: Arc<str>,
    mut parked: Parked,
) -> Result<HttpResponse, actix_web::Error> {
    let identity = parked.identity.clone();
    // The parked connection's tenant membership is left only once this socket joined in its own
    // name, so the user never looks offline in between.
    let previous = parked.membership.take();
    let user = identity.user_id.clone();
    let started = start(
        req,
        state,
        identity,
        |shared, conn, _, tenant| Connection::resume(shared, conn, tenant, token, parked),
        |session| session.serve(req, payload),
    );
    if let Some(membership) = previous {
        membership.leave(&state.node.tenants, &user);
    }
    started
}

/// The query parameter by which the admin console marks its own WebSocket.
const CONSOLE_CLIENT: (&str, &str) = ("client", "console");

/// Whether this upgrade is the admin console's own socket (`?client=console`) of a caller who may
/// use the console (an Operator, or a tenant's Admin or Staff). Such a connection joins no tenant
/// group: it is not counted in the tenant's connections, users, presence, activity or connection
/// quota (the per-user and per-address limits still apply).
fn is_console(req: &HttpRequest, identity: &Identity) -> bool {
    let watcher = identity.role == Role::Operator || identity.role.is_tenant_staff();
    watcher
        && web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.get(CONSOLE_CLIENT.0).map(String::as_str) == Some(CONSOLE_CLIENT.1))
            .unwrap_or(false)
}

/// Joins the tenant group and starts the session `make` builds with `serve`.
fn start<R>(
    req: &HttpRequest,
    state: &AppState,
    identity: Arc<Identity>,
    make: impl FnOnce(Arc<Connections>, ConnId, Arc<Identity>, Option<TenantKey>) -> Connection,
    serve: impl FnOnce(Connection) -> Result<R, actix_web::Error>,
) -> Result<R, actix_web::Error> {
    let node = &state.node;
    if node.shutdown.has_begun() {
        return Err(
            ApiError::Busy("the server is restarting; reconnect to another node".into()).into(),
        );
    }
    let connections = &state.connections;
    let slot = connections
        .limits
        .acquire(&identity, req.peer_addr().map(|a| a.ip()))
        .map_err(|e| {
            node.metrics
                .connections_refused
                .with_label_values(&[e.label()])
                .inc();
            log::info!(
                "connection refused ({}): tenant={} user={}: {e}",
                e.label(),
                identity.tenant.as_ref().map(|t| t.as_str()).unwrap_or("-"),
                identity.user_id
            );
            ApiError::TooManyRequests(e.to_string())
        })?;
    let conn = connections.next_conn_id();
    // The console watches a tenant; it is not the tenant's activity: it joins no tenant group.
    let tenant = if is_console(req, &identity) {
        None
    } else {
        identity.tenant.clone()
    };
    if let Some(t) = &tenant {
        let member = Member {
            conn,
            user: identity.user_id.clone(),
            role: identity.role,
        };
        let limit = node.quotas.get(t).0.max_connections;
        node.tenants
            .join(t, member, Some(limit))
            .map_err(|e| match e {
                TenantError::Quota { .. } => {
                    node.quotas.exceeded(t, QuotaKind::Connections);
                    ApiError::TooManyRequests(e.to_string())
                }
                other => ApiError::Internal(other.to_string()),
            })?;
    }
    let user = identity.user_id.clone();
    let session = make(connections.clone(), conn, identity, tenant.clone()).with_slot(slot);
    let result = serve(session);
    if result.is_err() {
        // The actor never started, so its `stopped()` will not leave the group.
        if let Some(t) = &tenant {
            node.tenants.leave(t, conn, &user);
        }
    }
    result
}
