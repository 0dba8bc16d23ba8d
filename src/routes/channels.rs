//! `GET /api/v1/channels/{channel}/history?since=&epoch=&limit=`: a channel's retained events,
//! for callers allowed to subscribe to it (embedded: this node's memory; cluster: Redis).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use switchyard_actors::broker::HistoryPage;
use switchyard_actors::channel::ChannelName;
use switchyard_actors::envelope::StreamPosition;
use switchyard_actors::policy::access::{self, Action};

use crate::caller::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

/// Events returned when the request names no limit.
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Return events after this offset.
    since: Option<u64>,
    /// The epoch `since` belongs to; omitted = the channel's current epoch.
    epoch: Option<String>,
    limit: Option<usize>,
}

/// The answer: the page with its channel. Serialized straight to the response, so every event's
/// data goes out as the JSON text it was stored as and is never parsed (a value tree of a payload
/// stored before the payload limits existed could exceed the parser's nesting limit).
#[derive(Serialize)]
struct HistoryBody<'a> {
    channel: &'a str,
    #[serde(flatten)]
    page: &'a HistoryPage,
}

pub async fn history(
    Caller(who): Caller,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel =
        ChannelName::parse(&path).map_err(|e| ApiError::BadRequest(format!("channel: {e}")))?;
    // Reading a channel's history is reading the channel: the subscribe rule decides.
    access::check(
        &state.node.authorizer,
        who,
        channel.clone(),
        Action::Subscribe,
    )
    .await?;
    let max = state.settings.history.size.max(1);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > max {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        )));
    }
    let broker = &state.node.broker;
    let since = match (query.since, query.epoch.clone()) {
        (None, None) => None,
        (None, Some(_)) => return Err(ApiError::BadRequest("epoch needs since".into())),
        (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
        (Some(offset), None) => {
            let now = broker.history(&channel, None, 1).await?;
            Some(StreamPosition {
                offset,
                epoch: now.epoch.to_string(),
            })
        }
    };
    let page = broker.history(&channel, since, limit).await?;
    Ok(HttpResponse::Ok().json(HistoryBody {
        channel: channel.as_str(),
        page: &page,
    }))
}
