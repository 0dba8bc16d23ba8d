//! `GET /metrics`: the Prometheus text exposition.

use actix_web::{web, HttpResponse};

use crate::state::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::admin_samples::refresh_sessions(&state.node.metrics, &state.connections);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.node.metrics.render())
}
