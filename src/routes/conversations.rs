//! Chat conversations over REST (`docs/chat.md`):
//!
//! | route | does |
//! | --- | --- |
//! | `POST /api/v1/conversations` | `{"participants": […], "tenantKey"?}`: a group conversation → 201 |
//! | `GET /api/v1/conversations?limit=100` | the caller's conversations, most recently active first |
//! | `GET /api/v1/conversations/{id}` | one conversation of the caller's |
//! | `GET /api/v1/conversations/{id}/messages?before={messageId}&limit=50` | a page of history, oldest first |
//!
//! Callers: members of a tenant (Admin, Staff, Customer), within their tenant; `Service` may
//! create a conversation in a tenant it names. A conversation of another tenant is 404; one of the
//! caller's tenant that the caller is not in is 403.

use actix_web::{http::header, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_actors::identity::Role;
use switchyard_actors::ids::{TenantKey, UserId};

use crate::caller::Caller;
use crate::chat::payload;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::store::{Participation, Store};

/// Conversations listed when the request names no limit, and the most it may ask for.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;
/// Fewest participants a conversation has (the creator included).
const MIN_PARTICIPANTS: usize = 2;

fn now() -> i64 {
    i64::try_from(switchyard_actors::envelope::now_millis()).unwrap_or(i64::MAX)
}

/// The caller as a chat member: tenant and user.
fn member(who: &Caller) -> Result<(TenantKey, UserId), ApiError> {
    match (&who.0.tenant, who.0.role.is_tenant_bound()) {
        (Some(t), true) => Ok((t.clone(), who.0.user_id.clone())),
        _ => Err(ApiError::Forbidden(
            "conversations: members of a tenant only (Admin, Staff or Customer)".into(),
        )),
    }
}

/// The caller's conversation `id`: 404 when the tenant has none, 403 when the caller is not in it.
async fn participant_of(store: &Store, who: &Caller, id: &str) -> Result<TenantKey, ApiError> {
    let (tenant, user) = member(who)?;
    match store.participation(&tenant, id, &user).await? {
        Participation::Participant => Ok(tenant),
        Participation::Outsider => Err(ApiError::Forbidden(format!(
            "conversation {id}: participants only"
        ))),
        Participation::NoConversation => Err(ApiError::NotFound(format!(
            "no conversation {id} in tenant {tenant}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewConversation {
    participants: Vec<String>,
    tenant_key: Option<String>,
}

/// `POST /api/v1/conversations` → 201 with the conversation.
pub async fn create(
    who: Caller,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    body: web::Json<NewConversation>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let named = body
        .tenant_key
        .as_deref()
        .map(TenantKey::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("tenantKey {e}")))?;
    let (tenant, creator) = if who.0.role == Role::Service {
        let tenant = named.ok_or_else(|| {
            ApiError::BadRequest("tenantKey is required when Service creates a conversation".into())
        })?;
        (tenant, None)
    } else {
        let (tenant, user) = member(&who)?;
        if named.is_some_and(|n| n != tenant) {
            return Err(ApiError::Forbidden(format!(
                "conversations: members of tenant {tenant} create conversations in it only"
            )));
        }
        (tenant, Some(user))
    };
    let mut participants: Vec<UserId> = creator.iter().cloned().collect();
    for raw in &body.participants {
        let user = UserId::parse(raw)
            .map_err(|e| ApiError::BadRequest(format!("participants: {raw:?}: {e}")))?;
        if !participants.contains(&user) {
            participants.push(user);
        }
    }
    let max = state.settings.chat.max_participants;
    if !(MIN_PARTICIPANTS..=max).contains(&participants.len()) {
        return Err(ApiError::BadRequest(format!(
            "participants: a conversation has {MIN_PARTICIPANTS}-{max} distinct participants \
             (the creator included), got {}",
            participants.len()
        )));
    }
    let created_by = who.0.user_id.as_str();
    let c = store
        .create_group(&tenant, created_by, &participants, now())
        .await?;
    log::info!(
        "tenant {tenant}: conversation {} created by {created_by} with {} participants",
        c.id,
        c.participants.len()
    );
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/conversations/{}", c.id)))
        .json(payload::conversation(&c, false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/conversations` → `{"conversations": […]}`.
pub async fn list(
    who: Caller,
    store: web::Data<Store>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = member(&who)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}"
        )));
    }
    let conversations = store.conversations_of(&tenant, &user, limit).await?;
    let list: Vec<Value> = conversations
        .iter()
        .map(|c| payload::conversation(c, true))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "conversations": list })))
}

/// `GET /api/v1/conversations/{id}`.
pub async fn get(
    who: Caller,
    path: web::Path<String>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let tenant = participant_of(&store, &who, &id).await?;
    let c = store
        .conversation(&tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation {id} in tenant {tenant}")))?;
    Ok(HttpResponse::Ok().json(payload::conversation(&c, false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    before: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/conversations/{id}/messages?before=…&limit=…` →
/// `{"messages": […], "hasMore", "nextBefore"}` (`nextBefore`: the `before` of the next older
/// page, `null` at the start of the conversation).
pub async fn messages(
    who: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let cfg = &state.settings.chat;
    let limit = query.limit.unwrap_or(cfg.history_page_size);
    if !(1..=cfg.history_max_page_size).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {}",
            cfg.history_max_page_size
        )));
    }
    participant_of(&store, &who, &id).await?;
    let page = store
        .history(&id, query.before.as_deref(), limit)
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "before: no message {:?} in conversation {id}",
                query.before.as_deref().unwrap_or_default()
            ))
        })?;
    let next_before = page
        .messages
        .first()
        .filter(|_| page.has_more)
        .map(|m| m.id.clone());
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(payload::message_with_state)
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "messages": messages,
        "hasMore": page.has_more,
        "nextBefore": next_before,
    })))
}
