//! Tenant figures: connection counts and "is this user online".

use actix_web::{web, HttpResponse};
use serde_json::json;
use switchyard_actors::ids::{TenantKey, UserId};
use switchyard_actors::tenant_group::{TenantError, TenantSnapshot};

use crate::caller::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

fn tenant_for(who: &Caller, raw: &str) -> Result<TenantKey, ApiError> {
    let tenant =
        TenantKey::parse(raw).map_err(|e| ApiError::BadRequest(format!("tenant key {e}")))?;
    if !who.0.may_watch_tenant(&tenant) {
        return Err(ApiError::Forbidden(format!(
            "tenant {tenant}: Admin or Staff of the tenant, Service or Operator only"
        )));
    }
    Ok(tenant)
}

/// A tenant query's failure as HTTP: Redis unreachable is 503 unavailable, a slow group busy.
pub(crate) fn tenant_error(e: TenantError) -> ApiError {
    match e {
        TenantError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
        _ => ApiError::Busy(e.to_string()),
    }
}

/// The tenant's connections and online users (cluster-wide in cluster mode).
pub(crate) async fn snapshot(
    state: &AppState,
    tenant: &TenantKey,
) -> Result<TenantSnapshot, ApiError> {
    state
        .node
        .tenants
        .snapshot(tenant)
        .await
        .map_err(tenant_error)
}

/// `GET /api/v1/tenants/{t}/connections` → `{"tenantKey","connections"}`.
pub async fn connections(
    who: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_for(&who, &path)?;
    let snap = snapshot(&state, &tenant).await?;
    Ok(HttpResponse::Ok().json(json!({
        "tenantKey": tenant,
        "connections": snap.connections,
        "users": snap.users.len(),
    })))
}

/// `GET /api/v1/tenants/{t}/presence` → `{"connections": N, "users": [{"userId","role","connections"}]}`,
/// cluster-wide in cluster mode.
pub async fn presence(
    who: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_for(&who, &path)?;
    Ok(HttpResponse::Ok().json(snapshot(&state, &tenant).await?))
}

/// `GET /api/v1/tenants/{t}/users/{u}/online` → `{"tenantKey","userId","online"}`.
pub async fn user_online(
    who: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, raw_user) = path.into_inner();
    let tenant = tenant_for(&who, &raw_tenant)?;
    let user =
        UserId::parse(&raw_user).map_err(|e| ApiError::BadRequest(format!("user id {e}")))?;
    let online = state
        .node
        .tenants
        .is_online(&tenant, &user)
        .await
        .map_err(|e| ApiError::Busy(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({
        "tenantKey": tenant,
        "userId": user,
        "online": online,
    })))
}
