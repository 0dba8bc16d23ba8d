//! The Azure SignalR Service–compatible data-plane REST API (version `2022-06-01`), so that a back
//! end written against `IHubContext` through Azure's REST API (or its Management SDK in transient
//! mode) switches to Switchyard by configuration (`docs/signalr.md`, "Moving from Azure SignalR
//! Service"):
//!
//! | route | maps to |
//! | --- | --- |
//! | `POST /api/hubs/{hub}/:send` | publish on `tenant:{t}:broadcast` |
//! | `POST /api/hubs/{hub}/groups/{group}/:send` | publish on the channel `{group}` |
//! | `POST /api/hubs/{hub}/users/{user}/:send` | publish on `tenant:{t}:user:{user}` (`user:{user}` for a token of no tenant) |
//! | `POST /api/hubs/{hub}/connections/{id}/:send` | publish on `connection:{id}` |
//! | `PUT`/`DELETE /api/hubs/{hub}/groups/{group}/connections/{id}` | the hub command `$addToGroup`/`$removeFromGroup` on `connection:{id}` |
//! | `DELETE /api/hubs/{hub}/connections/{id}/groups` | `$removeFromAllGroups` on `connection:{id}` |
//! | `DELETE /api/hubs/{hub}/connections/{id}` | `$close` on `connection:{id}` |
//! | `HEAD /api/hubs/{hub}/connections/{id}`, `…/groups/{group}`, `…/users/{user}` | does the channel have a subscriber on any node |
//! | `POST /api/hubs/{hub}/:closeConnections`, `…/groups/{group}/…`, `…/users/{user}/…` | `$close` on the hub's, group's or user's channel |
//! | `PUT`/`DELETE /api/hubs/{hub}/users/{user}/groups/{group}`, `DELETE …/users/{user}/groups` | `$addToGroup`/`$removeFromGroup`/`$removeFromAllGroups` on the user's channel (the connections it has now) |
//! | `HEAD /api/hubs/{hub}/users/{user}/groups/{group}` | `501`: not supported |
//!
//! Every send and command is a publish: admitted by the one policy
//! ([`policy::data_plane`] for the caller and what it may address, then
//! [`policy::publish::admit`]) and carried by the node's one publish path, so it reaches a
//! connection on whichever node it is. A send's `{"target","arguments"}` becomes the event name
//! and its explicit SignalR argument list ([`HubArguments::List`]): a hub client's
//! `connection.on(target, (...args) => …)` receives exactly `arguments`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use switchyard_actors::channel::{Channel, ChannelName};
use switchyard_actors::envelope::{Draft, EventName};
use switchyard_actors::hub_arguments::HubArguments;
use switchyard_actors::hub_commands::HubCommand;
use switchyard_actors::identity::Identity;
use switchyard_actors::payload::Payload;
use switchyard_actors::policy::{data_plane, publish};

use crate::caller::DataPlaneCaller;
use crate::problem::ApiError;
use crate::state::AppState;

/// The REST API version these routes implement (`?api-version=`, optional).
pub const API_VERSION: &str = "2022-06-01";

/// `switchyard_published_total{source}` and `switchyard_bad_payloads_total{source}` of these routes.
const SOURCE: &str = "azure";

/// The header Azure's data plane names a 404's reason in (the Management SDK reads it).
const ERROR_CODE_HEADER: &str = "x-ms-error-code";
const CONNECTION_NOT_EXISTED: &str = "Error.Connection.NotExisted";
const WARNING_CONNECTION_NOT_EXISTED: &str = "Warning.Connection.NotExisted";
const WARNING_GROUP_NOT_EXISTED: &str = "Warning.Group.NotExisted";
const WARNING_USER_NOT_EXISTED: &str = "Warning.User.NotExisted";

/// Mounts the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    const H: &str = "/api/hubs/{hub}";
    cfg.route(&format!("{H}/:send"), web::post().to(send_to_hub))
        .route(
            &format!("{H}/groups/{{group}}/:send"),
            web::post().to(send_to_group),
        )
        .route(
            &format!("{H}/users/{{user}}/:send"),
            web::post().to(send_to_user),
        )
        .route(
            &format!("{H}/connections/{{connection}}/:send"),
            web::post().to(send_to_connection),
        )
        .route(
            &format!("{H}/groups/{{group}}/connections/{{connection}}"),
            web::put().to(add_to_group),
        )
        .route(
            &format!("{H}/groups/{{group}}/connections/{{connection}}"),
            web::delete().to(remove_from_group),
        )
        .route(
            &format!("{H}/connections/{{connection}}/groups"),
            web::delete().to(remove_from_all_groups),
        )
        .route(
            &format!("{H}/connections/{{connection}}"),
            web::head().to(connection_exists),
        )
        .route(
            &format!("{H}/connections/{{connection}}"),
            web::delete().to(close_connection),
        )
        .route(
            &format!("{H}/groups/{{group}}"),
            web::head().to(group_exists),
        )
        .route(&format!("{H}/users/{{user}}"), web::head().to(user_exists))
        .route(&format!("{H}/:closeConnections"), web::post().to(close_hub))
        .route(
            &format!("{H}/groups/{{group}}/:closeConnections"),
            web::post().to(close_group),
        )
        .route(
            &format!("{H}/users/{{user}}/:closeConnections"),
            web::post().to(close_user),
        )
        .route(
            &format!("{H}/users/{{user}}/groups/{{group}}"),
            web::put().to(add_user_to_group),
        )
        .route(
            &format!("{H}/users/{{user}}/groups/{{group}}"),
            web::delete().to(remove_user_from_group),
        )
        .route(
            &format!("{H}/users/{{user}}/groups/{{group}}"),
            web::head().to(user_in_group),
        )
        .route(
            &format!("{H}/users/{{user}}/groups"),
            web::delete().to(remove_user_from_all_groups),
        );
}

/// A send's body, `PayloadMessage`: `target` and `arguments` (the Management SDK writes them
/// `Target`, `Arguments`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[serde(alias = "Target")]
    target: String,
    /// Raw JSON text: its depth and size are the payload check's to judge.
    #[serde(alias = "Arguments")]
    arguments: Option<Box<RawValue>>,
}

/// The query: `api-version` (every route), `reason` and `excluded` (the closing routes), `ttl`
/// (adding a user to a group).
#[derive(Debug, Default)]
struct Query {
    reason: Option<String>,
    excluded: Vec<String>,
}

/// Which query parameters beyond `api-version` a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// `reason` and `excluded`.
    Close,
    /// `ttl`, which must be 0: the user's current connections join, later ones do not.
    Ttl,
}

/// Reads and checks the query: `api-version` may be absent or `2022-06-01`; the parameters the
/// route takes; `application`, `excluded` on a send and a `ttl` other than 0 are refused (not
/// supported: said rather than ignored).
fn read_query(req: &HttpRequest, takes: Takes) -> Result<Query, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let mut query = Query::default();
    for (key, value) in pairs {
        match key.as_str() {
            "api-version" if value == API_VERSION => {}
            "api-version" => {
                return Err(ApiError::BadRequest(format!(
                    "api-version {value} is not supported; this server implements {API_VERSION}"
                )))
            }
            "reason" if takes == Takes::Close => query.reason = Some(value),
            "excluded" if takes == Takes::Close => query.excluded.push(value),
            "ttl" if takes == Takes::Ttl && value == "0" => {}
            "ttl" if takes == Takes::Ttl => {
                return Err(ApiError::BadRequest(format!(
                    "ttl={value} is not supported: only ttl=0 (the user's current connections join the group; later ones do not)"
                )))
            }
            "application" | "excluded" => return Err(ApiError::BadRequest(format!(
                "the query parameter {key} is not supported on this route (see docs/signalr.md, \"Moving from Azure SignalR Service\")"
            ))),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {key}"
                )))
            }
        }
    }
    Ok(query)
}

/// The checks every route begins with: a `Service` caller, the query, a configured hub.
fn begin(
    req: &HttpRequest,
    state: &AppState,
    who: &Identity,
    hub: &str,
    takes: Takes,
) -> Result<Query, ApiError> {
    data_plane::caller(who)?;
    let query = read_query(req, takes)?;
    let known = state.settings.signalr.hub_paths.iter().any(|path| {
        path.rsplit('/')
            .next()
            .is_some_and(|last| last.eq_ignore_ascii_case(hub))
    });
    if !known {
        return Err(ApiError::NotFound(format!(
            "no hub {hub}: a hub is the last segment of a path in signalr.hub_paths"
        )));
    }
    Ok(query)
}

fn group_channel(who: &Identity, group: &str) -> Result<ChannelName, ApiError> {
    let channel = ChannelName::parse(group).map_err(|e| {
        ApiError::BadRequest(format!(
            "group: a group is a channel name ({e}); see docs/signalr.md"
        ))
    })?;
    data_plane::group(who, &channel)?;
    Ok(channel)
}

fn connection_channel(id: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(&Channel::Connection { id: id.to_owned() }.to_name())
        .map_err(|e| ApiError::BadRequest(format!("connectionId: {e}")))
}

fn user_channel(who: &Identity, user: &str) -> Result<ChannelName, ApiError> {
    data_plane::user_channel(who, user).map_err(|e| ApiError::BadRequest(format!("user: {e}")))
}

/// A 404 naming its reason in `x-ms-error-code`, as Azure answers it.
fn not_existed(error_code: &'static str, detail: String) -> HttpResponse {
    let mut res = ApiError::NotFound(detail).error_response();
    res.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static(ERROR_CODE_HEADER),
        actix_web::http::header::HeaderValue::from_static(error_code),
    );
    res
}

/// Publishes `draft` as `who`: admission by the one policy, then the one publish path.
async fn publish_as(state: &AppState, who: Arc<Identity>, draft: Draft) -> Result<(), ApiError> {
    publish::admit(
        &state.node.authorizer,
        &state.node.quotas,
        who.clone(),
        draft.channel.clone(),
    )
    .await?;
    let channel = draft.channel.clone();
    let event = draft.event.clone();
    let ack = state.node.publish(draft, SOURCE).await?;
    log::debug!(
        "azure api: {event} on {channel} by {} (tenant {}) at offset {}",
        who.user_id,
        who.tenant.as_ref().map(|t| t.as_str()).unwrap_or("-"),
        ack.offset
    );
    Ok(())
}

/// A send: `target` is the event, `arguments` the explicit argument list (and the event's data,
/// which native clients of the channel receive).
async fn send(
    state: &AppState,
    who: Arc<Identity>,
    channel: ChannelName,
    body: SendBody,
) -> Result<HttpResponse, ApiError> {
    let event =
        EventName::parse(&body.target).map_err(|e| ApiError::BadRequest(format!("target: {e}")))?;
    let raw = match body.arguments {
        Some(raw) => {
            if !raw.get().trim_start().starts_with('[') {
                return Err(ApiError::BadRequest(
                    "arguments must be an array (the invocation's arguments)".into(),
                ));
            }
            raw
        }
        None => RawValue::from_string("[]".into()).expect("valid JSON"),
    };
    let data: Payload = state
        .node
        .check_payload(raw, SOURCE)
        .map_err(ApiError::BadPayload)
        .inspect_err(|e| log::info!("azure api send to {channel} by {}: {e}", who.user_id))?;
    let arguments = HubArguments::List(data.clone().into_raw());
    let draft = Draft::new(channel, event, data).with_arguments(Some(arguments));
    publish_as(state, who, draft).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /api/hubs/{hub}/:send`: every connection of the hub in the caller's tenant.
pub async fn send_to_hub(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    begin(&req, &state, &who, &path, Takes::Nothing)?;
    let channel = data_plane::hub_channel(&who).ok_or_else(|| {
        ApiError::BadRequest(
            "a hub-wide send needs a Service token with tenantKey: the hub's connections are a tenant's (tenant:{t}:broadcast)".into(),
        )
    })?;
    send(&state, who, channel, body.into_inner()).await
}

/// `POST /api/hubs/{hub}/groups/{group}/:send`: the channel `{group}`.
pub async fn send_to_group(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = group_channel(&who, &group)?;
    send(&state, who, channel, body.into_inner()).await
}

/// `POST /api/hubs/{hub}/users/{user}/:send`: every connection of the user.
pub async fn send_to_user(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let (hub, user) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = user_channel(&who, &user)?;
    send(&state, who, channel, body.into_inner()).await
}

/// `POST /api/hubs/{hub}/connections/{connectionId}/:send`: one connection, on any node.
pub async fn send_to_connection(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let (hub, id) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = connection_channel(&id)?;
    send(&state, who, channel, body.into_inner()).await
}

/// Sends `cmd` to the connection `id` if it exists anywhere: `200`, or `404` with `not_found`
/// as its `x-ms-error-code`.
async fn command(
    state: &AppState,
    who: Arc<Identity>,
    id: &str,
    cmd: HubCommand,
    not_found: &'static str,
) -> Result<HttpResponse, ApiError> {
    let channel = connection_channel(id)?;
    if !state.node.broker.has_subscribers(&channel).await? {
        return Ok(not_existed(
            not_found,
            format!("no connection {id} is connected to this cluster"),
        ));
    }
    broadcast_command(state, who, channel, cmd).await?;
    Ok(HttpResponse::Ok().finish())
}

/// `PUT /api/hubs/{hub}/groups/{group}/connections/{connectionId}`.
pub async fn add_to_group(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group, id) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let group = group_channel(&who, &group)?;
    let cmd = HubCommand::AddToGroup(group);
    command(&state, who, &id, cmd, CONNECTION_NOT_EXISTED).await
}

/// `DELETE /api/hubs/{hub}/groups/{group}/connections/{connectionId}`.
pub async fn remove_from_group(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group, id) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let group = group_channel(&who, &group)?;
    let cmd = HubCommand::RemoveFromGroup(group);
    command(&state, who, &id, cmd, CONNECTION_NOT_EXISTED).await
}

/// `DELETE /api/hubs/{hub}/connections/{connectionId}/groups`.
pub async fn remove_from_all_groups(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, id) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let cmd = HubCommand::RemoveFromAllGroups;
    command(&state, who, &id, cmd, WARNING_CONNECTION_NOT_EXISTED).await
}

/// `DELETE /api/hubs/{hub}/connections/{connectionId}[?reason=…]`: closes the connection.
pub async fn close_connection(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, id) = path.into_inner();
    let query = begin(&req, &state, &who, &hub, Takes::Close)?;
    let cmd = close_command(query);
    command(&state, who, &id, cmd, WARNING_CONNECTION_NOT_EXISTED).await
}

/// `200` if `channel` has a subscriber on any node, else `404` with `not_found`.
async fn exists(
    state: &AppState,
    channel: &ChannelName,
    not_found: &'static str,
) -> Result<HttpResponse, ApiError> {
    if state.node.broker.has_subscribers(channel).await? {
        Ok(HttpResponse::build(StatusCode::OK).finish())
    } else {
        Ok(not_existed(
            not_found,
            format!("{channel} has no connection"),
        ))
    }
}

/// `HEAD /api/hubs/{hub}/connections/{connectionId}`.
pub async fn connection_exists(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, id) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = connection_channel(&id)?;
    exists(&state, &channel, WARNING_CONNECTION_NOT_EXISTED).await
}

/// `HEAD /api/hubs/{hub}/groups/{group}`.
pub async fn group_exists(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = group_channel(&who, &group)?;
    exists(&state, &channel, WARNING_GROUP_NOT_EXISTED).await
}

/// `HEAD /api/hubs/{hub}/users/{user}`.
pub async fn user_exists(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, user) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = user_channel(&who, &user)?;
    exists(&state, &channel, WARNING_USER_NOT_EXISTED).await
}

/// Publishes `cmd` on `channel` for every hub connection there (no existence check: a user or
/// group with no connection is simply reached by nobody, as on Azure).
async fn broadcast_command(
    state: &AppState,
    who: Arc<Identity>,
    channel: ChannelName,
    cmd: HubCommand,
) -> Result<(), ApiError> {
    let data = Payload::built(&cmd.data());
    let draft = Draft::new(channel, EventName::of_command(&cmd), data);
    publish_as(state, who, draft).await
}

/// The close command a `reason`/`excluded` query asks for.
fn close_command(query: Query) -> HubCommand {
    HubCommand::Close {
        reason: query.reason,
        excluded: query.excluded,
    }
}

/// `POST /api/hubs/{hub}/:closeConnections[?reason=…&excluded=…]`: every hub connection of the
/// caller's tenant.
pub async fn close_hub(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let query = begin(&req, &state, &who, &path, Takes::Close)?;
    let channel = data_plane::hub_channel(&who).ok_or_else(|| {
        ApiError::BadRequest(
            "closing a hub's connections needs a Service token with tenantKey: the hub's connections are a tenant's (tenant:{t}:broadcast)".into(),
        )
    })?;
    broadcast_command(&state, who, channel, close_command(query)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/hubs/{hub}/groups/{group}/:closeConnections`.
pub async fn close_group(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group) = path.into_inner();
    let query = begin(&req, &state, &who, &hub, Takes::Close)?;
    let channel = group_channel(&who, &group)?;
    broadcast_command(&state, who, channel, close_command(query)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/hubs/{hub}/users/{user}/:closeConnections`.
pub async fn close_user(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, user) = path.into_inner();
    let query = begin(&req, &state, &who, &hub, Takes::Close)?;
    let channel = user_channel(&who, &user)?;
    broadcast_command(&state, who, channel, close_command(query)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /api/hubs/{hub}/users/{user}/groups/{group}[?ttl=0]`: the user's connections now join
/// the group (Azure's `ttl=0`); a later connection of the user does not (see `docs/signalr.md`).
pub async fn add_user_to_group(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, user, group) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Ttl)?;
    let channel = user_channel(&who, &user)?;
    let group = group_channel(&who, &group)?;
    broadcast_command(&state, who, channel, HubCommand::AddToGroup(group)).await?;
    Ok(HttpResponse::Ok().finish())
}

/// `DELETE /api/hubs/{hub}/users/{user}/groups/{group}`: the user's connections leave the group.
pub async fn remove_user_from_group(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, user, group) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = user_channel(&who, &user)?;
    let group = group_channel(&who, &group)?;
    broadcast_command(&state, who, channel, HubCommand::RemoveFromGroup(group)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /api/hubs/{hub}/users/{user}/groups`: the user's connections leave every group (the
/// channels they joined on connect stay).
pub async fn remove_user_from_all_groups(
    req: HttpRequest,
    DataPlaneCaller(who): DataPlaneCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, user) = path.into_inner();
    begin(&req, &state, &who, &hub, Takes::Nothing)?;
    let channel = user_channel(&who, &user)?;
    broadcast_command(&state, who, channel, HubCommand::RemoveFromAllGroups).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `HEAD /api/hubs/{hub}/users/{user}/groups/{group}`: not supported (whether some connection of
/// a user is in a group is known only on the connections' nodes); `501`, so that a client does
/// not read an answer into a `404`.
pub async fn user_in_group(
    DataPlaneCaller(who): DataPlaneCaller,
) -> Result<HttpResponse, ApiError> {
    data_plane::caller(&who)?;
    Err(ApiError::Http {
        status: StatusCode::NOT_IMPLEMENTED,
        detail: "checking whether a user is in a group is not supported by this server (see docs/signalr.md)".into(),
    })
}
