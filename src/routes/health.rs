//! `/health/live` (the process answers) and `/health/ready` (it can take traffic: not shutting
//! down, every broker shard answering, and in cluster mode the Redis pub/sub connection up).

use actix_web::{web, HttpResponse};
use serde_json::json;
use switchyard_actors::redis_bridge::BridgeStatus;

use crate::state::AppState;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let node = &state.node;
    let broker_ok = node.broker.channel_stats("\u{0}").await.is_ok();
    let shutting_down = node.shutdown.has_begun();
    let (mode, redis, redis_ok) = match node.broker.cluster() {
        None => ("embedded", serde_json::Value::Null, true),
        Some(link) => {
            let status = link
                .bridge
                .send(BridgeStatus)
                .timeout(state.settings.publish_timeout())
                .await;
            match status {
                Ok(s) => (
                    "cluster",
                    serde_json::to_value(&s).unwrap_or_default(),
                    s.connected,
                ),
                Err(e) => (
                    "cluster",
                    json!({"connected": false, "lastError": e.to_string()}),
                    false,
                ),
            }
        }
    };
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
