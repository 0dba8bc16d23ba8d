//! Dining sessions over REST (`docs/dining-sessions.md`), and the per-tenant timeouts:
//!
//! | route | does |
//! | --- | --- |
//! | `POST /api/v1/tenants/{t}/sessions` | open a session `{"tableNumber", "sessionId"?}` → 201 |
//! | `GET /api/v1/tenants/{t}/sessions/{id}` | one session |
//! | `GET /api/v1/tenants/{t}/sessions?status=Active&limit=100` | the tenant's sessions, newest first |
//! | `POST /api/v1/tenants/{t}/sessions/{id}/activity` | `{"hasOrders"?, "allServed"?}`: activity, moves the deadline |
//! | `DELETE /api/v1/tenants/{t}/sessions/{id}` | closed by staff: no expiry announcement |
//! | `GET`, `PUT /api/v1/tenants/{t}` | the tenant's timeouts `{"inactiveTimeoutSecs"?, "servedOrderTimeoutSecs"?, "warnBeforeSecs"?}` |
//!
//! Callers: `Service`, or Admin/Staff of the tenant. Another tenant's session is 404.

use actix_web::{http::header, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_actors::codec::rfc3339_millis;
use switchyard_actors::envelope::now_millis;
use switchyard_actors::identity::Role;
use switchyard_actors::ids::{SessionKey, TenantKey};

use crate::caller::Caller;
use crate::problem::ApiError;
use crate::store::{
    Activity, DiningSession, SessionStatus, Store, StoreError, TenantTimeouts, TimeoutOverrides,
};

/// Sessions listed when the request names no limit, and the most it may ask for.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;
/// Longest table label.
const MAX_TABLE_LABEL: usize = 64;
/// Longest timeout a tenant may set (30 days).
const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SessionNotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::SessionExists(_) | StoreError::SessionNotActive { .. } => {
                ApiError::Conflict(e.to_string())
            }
            e if e.is_unavailable() => {
                log::warn!("database unavailable: {e}");
                ApiError::Unavailable("the database is unavailable; retry later".into())
            }
            e => {
                log::error!("database error: {e}");
                ApiError::Internal("a database operation failed".into())
            }
        }
    }
}

/// The path's tenant, if the caller is `Service` or Admin/Staff of it.
pub fn staff_tenant(who: &Caller, raw: &str) -> Result<TenantKey, ApiError> {
    let tenant =
        TenantKey::parse(raw).map_err(|e| ApiError::BadRequest(format!("tenant key {e}")))?;
    if who.0.role == Role::Service || who.0.is_staff_of(&tenant) {
        Ok(tenant)
    } else {
        Err(ApiError::Forbidden(format!(
            "tenant {tenant}: Service, or Admin/Staff of the tenant only"
        )))
    }
}

fn time(ms: i64) -> String {
    rfc3339_millis(u64::try_from(ms).unwrap_or(0))
}

/// A session as JSON (camelCase, RFC 3339 times).
pub fn session_json(s: &DiningSession) -> Value {
    let mut v = json!({
        "sessionId": s.session_id,
        "tenantKey": s.tenant_key,
        "tableNumber": s.table_number,
        "status": s.status,
        "openedAt": time(s.opened_at_ms),
        "lastActivityAt": time(s.last_activity_ms),
        "hasOrders": s.has_orders,
        "allServed": s.all_served,
        "expiresAt": time(s.expires_at_ms),
    });
    match (s.status, s.ended_at_ms) {
        (SessionStatus::Expired, Some(at)) => {
            v["expiredAt"] = time(at).into();
            v["expiryReason"] = s.expiry_reason.map(|r| r.as_str()).into();
        }
        (SessionStatus::Closed, Some(at)) => v["closedAt"] = time(at).into(),
        _ => {}
    }
    v
}

fn now() -> i64 {
    i64::try_from(now_millis()).unwrap_or(i64::MAX)
}

fn table_number(v: &Value) -> Result<Value, ApiError> {
    let ok = match v {
        Value::Number(n) => n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
        Value::String(s) => {
            !s.trim().is_empty()
                && s.chars().count() <= MAX_TABLE_LABEL
                && !s.chars().any(char::is_control)
        }
        _ => false,
    };
    if ok {
        Ok(v.clone())
    } else {
        Err(ApiError::BadRequest(format!(
            "tableNumber must be a non-negative integer or a label of 1-{MAX_TABLE_LABEL} characters, got {v}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenSession {
    table_number: Value,
    session_id: Option<String>,
}

/// `POST /api/v1/tenants/{t}/sessions` → 201 with the session.
pub async fn open(
    who: Caller,
    path: web::Path<String>,
    store: web::Data<Store>,
    body: web::Json<OpenSession>,
) -> Result<HttpResponse, ApiError> {
    let tenant = staff_tenant(&who, &path)?;
    let body = body.into_inner();
    let table = table_number(&body.table_number)?;
    let id = match body.session_id {
        Some(raw) => {
            SessionKey::parse(&raw).map_err(|e| ApiError::BadRequest(format!("sessionId {e}")))?
        }
        None => SessionKey::parse(&uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a valid session id"),
    };
    let s = store.open_session(&tenant, &id, &table, now()).await?;
    log::info!("tenant {tenant}: session {id} opened at table {table}");
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/tenants/{tenant}/sessions/{id}"),
        ))
        .json(session_json(&s)))
}

/// `GET /api/v1/tenants/{t}/sessions/{id}`.
pub async fn get(
    who: Caller,
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, id) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let s = store.session(&tenant, &id).await?;
    Ok(HttpResponse::Ok().json(session_json(&s)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/tenants/{t}/sessions?status=Active&limit=100` → `{"sessions": […]}`.
pub async fn list(
    who: Caller,
    path: web::Path<String>,
    store: web::Data<Store>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = staff_tenant(&who, &path)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<SessionStatus>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}"
        )));
    }
    let sessions = store.sessions(&tenant, status, limit).await?;
    Ok(HttpResponse::Ok().json(json!({
        "tenantKey": tenant,
        "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActivityBody {
    has_orders: Option<bool>,
    all_served: Option<bool>,
}

/// `POST /api/v1/tenants/{t}/sessions/{id}/activity` (an empty body is plain activity).
pub async fn activity(
    who: Caller,
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, id) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let body: ActivityBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActivityBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?
    };
    let s = store
        .record_activity(
            &tenant,
            &id,
            Activity {
                has_orders: body.has_orders,
                all_served: body.all_served,
            },
            now(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(session_json(&s)))
}

/// `DELETE /api/v1/tenants/{t}/sessions/{id}`: closed by staff, never announced.
pub async fn close(
    who: Caller,
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, id) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let s = store.close_session(&tenant, &id, now()).await?;
    log::info!("tenant {tenant}: session {id} closed by {}", who.0.user_id);
    Ok(HttpResponse::Ok().json(session_json(&s)))
}

fn timeouts_json(tenant: &TenantKey, t: &TenantTimeouts) -> Value {
    json!({
        "tenantKey": tenant,
        "inactiveTimeoutSecs": t.inactive_timeout_secs,
        "servedOrderTimeoutSecs": t.served_order_timeout_secs,
        "warnBeforeSecs": t.warn_before_secs,
        "overrides": {
            "inactiveTimeoutSecs": t.overrides.inactive_timeout_secs,
            "servedOrderTimeoutSecs": t.overrides.served_order_timeout_secs,
            "warnBeforeSecs": t.overrides.warn_before_secs,
        },
    })
}

/// The tenant's own timeouts; an omitted (or null) field means "the configured default".
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutsBody {
    inactive_timeout_secs: Option<u64>,
    served_order_timeout_secs: Option<u64>,
    warn_before_secs: Option<u64>,
}

/// `PUT /api/v1/tenants/{t}`: replaces the tenant's timeouts; Active sessions are rescheduled.
pub async fn put_tenant(
    who: Caller,
    path: web::Path<String>,
    store: web::Data<Store>,
    body: web::Json<TimeoutsBody>,
) -> Result<HttpResponse, ApiError> {
    let tenant = staff_tenant(&who, &path)?;
    let b = body.into_inner();
    for (name, v, min) in [
        ("inactiveTimeoutSecs", b.inactive_timeout_secs, 1),
        ("servedOrderTimeoutSecs", b.served_order_timeout_secs, 1),
        ("warnBeforeSecs", b.warn_before_secs, 0),
    ] {
        if let Some(v) = v {
            if !(min..=MAX_TIMEOUT_SECS).contains(&v) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be between {min} and {MAX_TIMEOUT_SECS} seconds, got {v}"
                )));
            }
        }
    }
    let overrides = TimeoutOverrides {
        inactive_timeout_secs: b.inactive_timeout_secs,
        served_order_timeout_secs: b.served_order_timeout_secs,
        warn_before_secs: b.warn_before_secs,
    };
    let t = store.set_tenant_timeouts(&tenant, overrides, now()).await?;
    Ok(HttpResponse::Ok().json(timeouts_json(&tenant, &t)))
}

/// `GET /api/v1/tenants/{t}`: the timeouts in force.
pub async fn get_tenant(
    who: Caller,
    path: web::Path<String>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let tenant = staff_tenant(&who, &path)?;
    let t = store.tenant_timeouts(&tenant).await?;
    Ok(HttpResponse::Ok().json(timeouts_json(&tenant, &t)))
}
