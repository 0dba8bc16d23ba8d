//! The Python `signalrcore` client (PyPI, pinned in `tests/py/requirements.txt`), unmodified,
//! with the JSON and the MessagePack hub protocols: it connects, completes an invocation,
//! receives a REST publish, joins a group and receives its events. Over WebSockets (both
//! protocols) and Server-Sent Events (JSON; SSE is text only). Not over Long Polling:
//! signalrcore 1.0.2 sends no `Authorization` on its polls (and its handshake before the first
//! poll), so it cannot use Long Polling against an authenticated hub, ASP.NET Core's included.

use serde_json::json;

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};

async fn exercise(app: &TestApp, transport: &'static str, messagepack: bool) {
    let what = format!(
        "signalrcore {} over {transport}",
        if messagepack { "MessagePack" } else { "JSON" }
    );
    let mut hub = HubClient::start_python(
        app,
        &token(&customer("acme", "c1", None)),
        HubOptions {
            messagepack,
            transport: Some(transport),
            events: vec!["TenantUpdated", "OrderStatusChanged"],
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    assert_eq!(
        hub.invoke("Ping", json!([])).await,
        Ok(json!(true)),
        "{what}"
    );
    let (status, ack) = app
        .publish(
            &service(),
            "tenant:acme:broadcast",
            "TenantUpdated",
            json!({"name": "Acme"}),
        )
        .await;
    assert_eq!(status, 202, "{ack}");
    let msg = hub.event("TenantUpdated").await;
    assert_eq!(msg["data"], json!({"name": "Acme"}), "{what}");
    assert_eq!(msg["id"], ack["id"], "{what}");
    let order = format!("o-{transport}-{messagepack}");
    hub.invoke("JoinOrderChannel", json!([order]))
        .await
        .unwrap_or_else(|e| panic!("{what} joins: {e}"));
    let channel = format!("tenant:acme:order:{order}");
    app.publish(
        &service(),
        &channel,
        "OrderStatusChanged",
        json!({"status": "Ready"}),
    )
    .await;
    let msg = hub.event("OrderStatusChanged").await;
    assert_eq!(msg["data"]["status"], "Ready", "{what}");
    // A refused invocation completes with its error.
    let refused = hub.invoke("NoSuchMethod", json!([])).await;
    assert!(refused.is_err(), "{what}: {refused:?}");
    hub.stop().await;
    // The transport asked for is the one the client used (no silent fallback); each test has a
    // node of its own.
    assert_eq!(
        app.metric(&format!(
            "switchyard_signalr_connections_total{{transport=\"{transport}\"}}"
        ))
        .await,
        1.0,
        "{what}"
    );
}

#[actix_web::test]
async fn signalrcore_json_over_websockets() {
    exercise(&spawn_app().await, "WebSockets", false).await;
}

#[actix_web::test]
async fn signalrcore_messagepack_over_websockets() {
    exercise(&spawn_app().await, "WebSockets", true).await;
}

#[actix_web::test]
async fn signalrcore_json_over_server_sent_events() {
    exercise(&spawn_app().await, "ServerSentEvents", false).await;
}
