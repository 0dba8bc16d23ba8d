//! The authenticated caller of a request: its token (see [`crate::auth::token_of`]) verified
//! with the node's verifier, refusals counted by reason; for the Azure-compatible REST API, also
//! an Azure access-key token ([`DataPlaneCaller`], `azure_auth.rs`). Kept apart from `auth.rs`, which verifies
//! tokens and knows nothing of the application state.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use switchyard_actors::identity::Identity;

use crate::auth::{token_of, AuthError};
use crate::problem::ApiError;
use crate::state::AppState;

/// Verifies the request's token, counting failures by reason.
pub fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Arc<Identity>, AuthError> {
    let result = token_of(req)
        .ok_or(AuthError::Missing)
        .and_then(|t| state.verifier.verify(&t));
    counted(req, state, result)
}

/// Counts and logs a refused token, by reason.
fn counted(
    req: &HttpRequest,
    state: &AppState,
    result: Result<Identity, AuthError>,
) -> Result<Arc<Identity>, AuthError> {
    match result {
        Ok(id) => Ok(Arc::new(id)),
        Err(e) => {
            state
                .node
                .metrics
                .auth_failures
                .with_label_values(&[e.label()])
                .inc();
            log::debug!("refused token ({}): {e} path={}", e.label(), req.path());
            Err(e)
        }
    }
}

/// An authenticated caller, as a handler argument.
pub struct Caller(pub Arc<Identity>);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered at start-up");
        std::future::ready(authenticate(req, state).map(Caller).map_err(ApiError::from))
    }
}

/// The caller of an Azure-compatible route: a Switchyard token, or (when `azure.access_key` is
/// set) an access-key token for this request's URL. Refusals are counted like any refused token
/// (`switchyard_auth_failures_total{reason}`), once.
pub struct DataPlaneCaller(pub Arc<Identity>);

impl FromRequest for DataPlaneCaller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered at start-up");
        // A token signed with the access key is judged by it (its audience, its expiry); any
        // other token by the node's verifier.
        let by_key = state.azure_keys.as_ref().and_then(|keys| {
            let token = token_of(req)?;
            match keys.verify(&token, req.path()) {
                Err(AuthError::BadSignature | AuthError::Malformed(_)) => None,
                judged => Some(judged),
            }
        });
        let caller = match by_key {
            Some(judged) => counted(req, state, judged),
            None => authenticate(req, state),
        };
        std::future::ready(caller.map(DataPlaneCaller).map_err(ApiError::from))
    }
}
