//! `/health/live` (the process answers) and `/health/ready` (it can take traffic: not shutting
//! down, every broker shard answering, and in cluster mode the Redis pub/sub connection up).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let node = &state.node;
    let broker_ok = node.broker.channel_stats("\u{0}").await.is_ok();
    let shutting_down = node.shutdown.has_begun();
    let engine = node.broker.engine_status().await;
    let (mode, redis, redis_ok) = (engine.mode, engine.detail, engine.connected);
    let ready = broker_ok && redis_ok && !shutting_down;
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "node": node.id,
        "mode": mode,
        "shuttingDown": shutting_down,
        "broker": {"ok": broker_ok, "shards": node.broker.shard_count()},
        "redis": redis,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
