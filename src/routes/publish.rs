//! `POST /api/v1/publish`: publish one event to one channel, for back ends.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_actors::broker::BrokerError;
use switchyard_actors::channel::ChannelName;
use switchyard_actors::envelope::{Draft, EventName};
use switchyard_actors::identity::Identity;
use switchyard_actors::node::PublishError;
use switchyard_actors::rules::{self, Decision};

use crate::auth::Caller;
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
    match rules::can_publish(&who, channel.kind()) {
        Decision::Allow => {}
        Decision::Deny(v) => return Err(ApiError::Forbidden(v.rule)),
        Decision::Lookup => {
            state
                .node
                .authorizer
                .authorize(
                    who.clone(),
                    channel.clone(),
                    switchyard_actors::authorizer::Action::Publish,
                )
                .await
                .map_err(|v| ApiError::Forbidden(v.rule))?;
        }
    }
    let data = state
        .node
        .check_payload(body.data, PAYLOAD_SOURCE)
        .inspect_err(|e| log::info!("publish to {channel} by {}: {e}", who.user_id))?;
    take_publish_quota(&state, &who, &channel)?;
    let draft = Draft::new(channel, event, data);
    let ack = state
        .node
        .publish(draft, "rest")
        .await
        .map_err(publish_error)?;
    Ok(HttpResponse::Accepted().json(ack))
}

/// Takes one publish from the quota of the channel's tenant (or the caller's): 429 when spent.
pub fn take_publish_quota(
    state: &AppState,
    who: &Identity,
    channel: &ChannelName,
) -> Result<(), ApiError> {
    match channel.tenant().or(who.tenant.as_ref()) {
        Some(tenant) => state
            .node
            .quotas
            .take_publish(tenant)
            .map_err(|e| ApiError::TooManyRequests(e.to_string())),
        None => Ok(()),
    }
}

/// Maps a refused publish onto HTTP.
pub fn publish_error(e: PublishError) -> ApiError {
    match e {
        PublishError::Broker(BrokerError::Busy(_)) => ApiError::Busy(e.to_string()),
        PublishError::Broker(BrokerError::Stopped | BrokerError::Unavailable(_)) => {
            ApiError::Unavailable(e.to_string())
        }
    }
}
