//! The HTTP surface: WebSocket upgrades, the REST API, health, metrics and development helpers.
//! Each file owns one group of routes; [`configure`] mounts them all.

pub mod admin;
pub mod admin_console;
pub mod azure;
pub mod channels;
pub mod conversations;
pub mod dev;
pub mod dining_sessions;
pub mod domain_events;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod signalr;
pub mod tenants;
pub mod ws;

use actix_web::web;

/// Mounts every route; `hub_paths` are the SignalR hub endpoints.
pub fn configure(cfg: &mut web::ServiceConfig, hub_paths: &[String], batch_body_bytes: usize) {
    for path in hub_paths {
        cfg.route(path, web::get().to(signalr::hub))
            .route(path, web::post().to(signalr::send))
            .route(path, web::delete().to(signalr::delete))
            .route(
                &format!("{path}/negotiate"),
                web::post().to(signalr::negotiate),
            );
    }
    cfg.route("/ws", web::get().to(ws::native))
        .route("/admin", web::get().to(admin_console::index))
        .route("/admin/", web::get().to(admin_console::index))
        .route("/admin/{file}", web::get().to(admin_console::asset))
        .route("/api/v1/publish", web::post().to(publish::publish))
        .service(
            web::resource("/api/v1/publish/batch")
                // A batch may be larger than the other JSON bodies (`publish.max_batch_bytes`).
                .app_data(publish::batch_json_config(batch_body_bytes))
                .route(web::post().to(publish::publish_batch)),
        )
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
        .configure(azure::configure)
        .configure(admin_routes)
        .configure(dining_session_routes)
        .configure(conversation_routes)
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/dev/token", web::post().to(dev::token));
}

/// The operators' and admin consoles' API (issue 7, `docs/admin.md`).
fn admin_routes(cfg: &mut web::ServiceConfig) {
    const A: &str = "/api/v1/admin";
    cfg.route(&format!("{A}/actors"), web::get().to(admin::actors))
        .route(
            &format!("{A}/actors/{{kind}}"),
            web::put().to(admin::put_actor),
        )
        .route(
            &format!("{A}/actors/{{kind}}"),
            web::delete().to(admin::reset_actor),
        )
        .route(&format!("{A}/samples"), web::get().to(admin::samples))
        .route(&format!("{A}/tenants"), web::get().to(admin::tenants))
        .route(
            &format!("{A}/tenants/{{tenant}}"),
            web::get().to(admin::tenant),
        )
        .route(
            &format!("{A}/tenants/{{tenant}}/quotas"),
            web::get().to(admin::get_quotas),
        )
        .route(
            &format!("{A}/tenants/{{tenant}}/quotas"),
            web::put().to(admin::put_quotas),
        )
        .route(
            &format!("{A}/tenants/{{tenant}}/quotas"),
            web::delete().to(admin::delete_quotas),
        );
}

/// Dining sessions, tenant timeouts and the typed domain notifications (issue 5).
fn dining_session_routes(cfg: &mut web::ServiceConfig) {
    use dining_sessions as ds;
    use domain_events as de;
    const T: &str = "/api/v1/tenants/{tenant}";
    cfg.route(T, web::get().to(ds::get_tenant))
        .route(T, web::put().to(ds::put_tenant))
        .route(&format!("{T}/sessions"), web::post().to(ds::open))
        .route(&format!("{T}/sessions"), web::get().to(ds::list))
        .route(&format!("{T}/sessions/{{id}}"), web::get().to(ds::get))
        .route(&format!("{T}/sessions/{{id}}"), web::delete().to(ds::close))
        .route(
            &format!("{T}/sessions/{{id}}/activity"),
            web::post().to(ds::activity),
        )
        .route(
            &format!("{T}/sessions/{{id}}/cart"),
            web::post().to(de::cart),
        )
        .route(&format!("{T}/orders"), web::post().to(de::new_order))
        .route(
            &format!("{T}/orders/{{order}}/status"),
            web::post().to(de::order_status),
        )
        .route(
            &format!("{T}/tables/{{table}}/status"),
            web::post().to(de::table_status),
        )
        .route(&format!("{T}/broadcast"), web::post().to(de::broadcast))
        .route(
            &format!("{T}/roles/{{role}}/broadcast"),
            web::post().to(de::role_broadcast),
        );
}

/// Chat conversations (issue 8, `docs/chat.md`).
fn conversation_routes(cfg: &mut web::ServiceConfig) {
    use conversations as c;
    const C: &str = "/api/v1/conversations";
    cfg.route(C, web::post().to(c::create))
        .route(C, web::get().to(c::list))
        .route(&format!("{C}/{{id}}"), web::get().to(c::get))
        .route(&format!("{C}/{{id}}/messages"), web::get().to(c::messages));
}
