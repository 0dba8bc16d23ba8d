//! The authenticated caller of a request: its token (see [`crate::auth::token_of`]) verified
//! with the node's verifier, refusals counted by reason. Kept apart from `auth.rs`, which verifies
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
