//! `POST /api/v1/publish`: publish one event to one channel, for back ends. The optional
//! `arguments` chooses what SignalR clients receive (`"message"`, `"data"` or an array;
//! [`switchyard_actors::hub_arguments`]).
//!
//! `POST /api/v1/publish/batch`: many events in one request (`{"events":[…]}`, each as the single
//! publish takes it), through the same checks, handed to the broker in runs (each channel's events
//! in the batch's order), with a result per event: the single publish's `202` answer or its
//! problem document, each with its `status`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchyard_actors::channel::ChannelName;
use switchyard_actors::envelope::{Draft, EventName};
use switchyard_actors::hub_arguments::{BadArguments, HubArguments};
use switchyard_actors::identity::Identity;
use switchyard_actors::policy::publish;
use switchyard_actors::publish_path::PublishAck;

use crate::caller::Caller;
use crate::problem::{bad_request, ApiError};
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
    let ack = publish_one(&state, who, body.into_inner()).await?;
    Ok(HttpResponse::Accepted().json(ack))
}

/// `POST /api/v1/publish/batch`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub events: Vec<PublishRequest>,
}

/// The JSON body limit of the batch route (`publish.max_batch_bytes`).
pub fn batch_json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|e, _| bad_request(format_args!("request body: {e}")))
}

/// `publish/batch`'s answer.
#[derive(Serialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

/// One event's result in a batch: written as it is, with no value tree per event.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchResult {
    /// The single publish's `202` answer with its `status`; fields in name order, as the
    /// problem documents beside it print theirs.
    Accepted {
        epoch: Arc<str>,
        id: Arc<str>,
        offset: u64,
        status: u16,
    },
    /// The event's problem document.
    Refused(serde_json::Value),
}

/// Publishes each event as the single publish does (a channel's events in their order) and answers
/// `200 {"results":[…]}`: per event `{"status":202,"id","offset","epoch"}` or its problem document.
/// A refused event does not stop the ones after it.
pub async fn publish_batch(
    Caller(who): Caller,
    state: web::Data<AppState>,
    body: web::Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let events = body.into_inner().events;
    let most = state.settings.publish.max_batch_events;
    if events.is_empty() || events.len() > most {
        return Err(ApiError::BadRequest(format!(
            "events: {} given; a batch holds 1 to {most} (publish.max_batch_events)",
            events.len()
        )));
    }
    // The batch goes to the broker in runs of up to `session.max_publishes_in_flight` events,
    // one run after another (as a WebSocket's pipelined publishes): a run's events are checked
    // and admitted side by side, then the admitted ones go to the broker together
    // ([`switchyard_actors::node::Node::publish_run`]: one message per broker shard; in Redis
    // each channel's one after another, different channels' side by side), so each channel's
    // events are published in the batch's order. Results keep the request's order.
    let count = events.len();
    let run_size = state.settings.session.max_publishes_in_flight.max(1);
    let mut done: Vec<(usize, BatchResult)> = Vec::with_capacity(count);
    let mut events = events.into_iter().enumerate().peekable();
    while events.peek().is_some() {
        let run: Vec<(usize, PublishRequest)> = events.by_ref().take(run_size).collect();
        let checked = futures_util::future::join_all(run.into_iter().map(|(index, event)| {
            let (state, who) = (&state, who.clone());
            async move { (index, admit_one(state, who, event).await) }
        }))
        .await;
        let (mut admitted, mut drafts) = (Vec::new(), Vec::new());
        for (index, checked) in checked {
            match checked {
                Ok(draft) => {
                    admitted.push(index);
                    drafts.push(draft);
                }
                Err(e) => done.push((index, BatchResult::Refused(e.problem_value()))),
            }
        }
        let published = state.node.publish_run(drafts, "rest").await;
        for (index, answer) in admitted.into_iter().zip(published) {
            done.push((index, batch_result(answer.map_err(ApiError::from))));
        }
    }
    done.sort_unstable_by_key(|(index, _)| *index);
    debug_assert_eq!(done.len(), count, "every event has its result");
    let results = done.into_iter().map(|(_, result)| result).collect();
    Ok(HttpResponse::Ok().json(BatchAnswer { results }))
}

fn batch_result(published: Result<PublishAck, ApiError>) -> BatchResult {
    match published {
        Ok(ack) => BatchResult::Accepted {
            epoch: ack.epoch,
            id: ack.id,
            offset: ack.offset,
            status: actix_web::http::StatusCode::ACCEPTED.as_u16(),
        },
        Err(e) => BatchResult::Refused(e.problem_value()),
    }
}

/// One event through the steps every REST publish takes: [`admit_one`], then the node's one
/// publish path.
async fn publish_one(
    state: &AppState,
    who: Arc<Identity>,
    body: PublishRequest,
) -> Result<PublishAck, ApiError> {
    let draft = admit_one(state, who, body).await?;
    Ok(state.node.publish(draft, "rest").await?)
}

/// The checks every REST publish takes before it is published: the names, the payload check,
/// the SignalR arguments, admission (rules, authorizer, quota).
async fn admit_one(
    state: &AppState,
    who: Arc<Identity>,
    body: PublishRequest,
) -> Result<Draft, ApiError> {
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
    Ok(Draft::new(channel, event, data).with_arguments(arguments))
}
