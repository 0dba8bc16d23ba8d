//! The HTTP surface: WebSocket upgrades, the REST API, health, metrics and development helpers.
//! Each file owns one group of routes; [`configure`] mounts them all.

pub mod dev;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod tenants;
pub mod ws;

use actix_web::web;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(ws::native))
        .route("/api/v1/publish", web::post().to(publish::publish))
        .route(
            "/api/v1/tenants/{tenant}/connections",
            web::get().to(tenants::connections),
        )
        .route(
            "/api/v1/tenants/{tenant}/users/{user}/online",
            web::get().to(tenants::user_online),
        )
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/dev/token", web::post().to(dev::token));
}
