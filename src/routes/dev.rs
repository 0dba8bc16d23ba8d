//! `POST /dev/token`: mints a token with the server's own HS256 key, so a newcomer can try the
//! server without an identity provider. Only in the development environment with
//! `auth.dev_tokens = true`; everywhere else it answers 404.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::identity::Role;

use crate::auth::MintClaims;
use crate::problem::ApiError;
use crate::state::AppState;

/// Lifetime of a dev token unless the request says otherwise.
const DEFAULT_TTL_SECS: u64 = 3600;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    sub: String,
    tenant_key: Option<String>,
    role: String,
    session_id: Option<String>,
    ttl_secs: Option<u64>,
}

pub async fn token(
    state: web::Data<AppState>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let s = &state.settings;
    if !(s.is_development() && s.auth.dev_tokens) {
        return Err(ApiError::NotFound(
            "dev tokens are only served in the development environment".into(),
        ));
    }
    let body = body.into_inner();
    body.role
        .parse::<Role>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: body.sub,
        tenant_key: body.tenant_key,
        role: body.role,
        session_id: body.session_id,
        exp: now + body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
        iat: now,
    };
    let token = state.verifier.mint(&claims).ok_or_else(|| {
        ApiError::NotFound("this server verifies RS256 tokens and cannot mint them".into())
    })?;
    // Check the minted claims are usable, so a bad request fails here and not at connect.
    state
        .verifier
        .verify(&token)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({"token": token, "expiresAt": claims.exp})))
}
