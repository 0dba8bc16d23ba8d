//! `POST /api/v1/publish`: publish one event to one channel, for back ends. The optional
//! `arguments` chooses what SignalR clients receive (`"message"`, `"data"` or an array;
//! [`switchyard_actors::hub_arguments`]).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_actors::channel::ChannelName;
use switchyard_actors::envelope::{Draft, EventName};
use switchyard_actors::hub_arguments::{BadArguments, HubArguments};
use switchyard_actors::policy::publish;

use crate::caller::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

/// `switchyard_bad_payloads_total{source}` of this route.
const PAYLOAD_SOURCE: &str = "rest";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: String,
    pub event: String,
    /// Read as raw text, which has no nesting limit: the payload check decides, not the parser.
    pub data: Box<RawValue>,
    /// The SignalR argument list; absent: the hub's default. Raw, like `data`.
    pub arguments: Option<Box<RawValue>>,
}

/// Publishes through the node's one publish path and answers `202 {"id","offset","epoch"}`.
pub async fn publish(
    Caller(who): Caller,
    state: web::Data<AppState>,
    body: web::Json<PublishRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let channel = ChannelName::parse(&body.channel)
        .map_err(|e| ApiError::BadRequest(format!("channel: {e}")))?;
    let event =
        EventName::parse(&body.event).map_err(|e| ApiError::BadRequest(format!("event: {e}")))?;
    let data = state
        .node
        .check_payload(body.data, PAYLOAD_SOURCE)
        .inspect_err(|e| log::info!("publish to {channel} by {}: {e}", who.user_id))?;
    let node = &state.node;
    let arguments = body
        .arguments
        .map(|raw| HubArguments::read(raw, |list| node.check_payload(list, PAYLOAD_SOURCE)))
        .transpose()
        .map_err(|e| match e {
            BadArguments::Payload(p) => ApiError::from(p),
            shape => ApiError::BadRequest(shape.to_string()),
        })
        .inspect_err(|e| log::info!("publish to {channel} by {}: {e}", who.user_id))?;
    publish::admit(&node.authorizer, &node.quotas, who, channel.clone()).await?;
    let draft = Draft::new(channel, event, data).with_arguments(arguments);
    let ack = node.publish(draft, "rest").await?;
    Ok(HttpResponse::Accepted().json(ack))
}
