//! The HTTP surface: WebSocket upgrades, the REST API, health, metrics and development helpers.
//! Each file owns one group of routes; [`configure`] mounts them all.

pub mod channels;
pub mod dev;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod signalr;
pub mod tenants;
pub mod ws;

use actix_web::web;

/// Mounts every route; `hub_paths` are the SignalR hub endpoints.
pub fn configure(cfg: &mut web::ServiceConfig, hub_paths: &[String]) {
    for path in hub_paths {
        cfg.route(path, web::get().to(signalr::hub)).route(
            &format!("{path}/negotiate"),
            web::post().to(signalr::negotiate),
        );
    }
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
        .route(
            "/api/v1/tenants/{tenant}/presence",
            web::get().to(tenants::presence),
        )
        .route(
            "/api/v1/channels/{channel}/history",
            web::get().to(channels::history),
        )
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/dev/token", web::post().to(dev::token));
}
