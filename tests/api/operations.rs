//! Operations: health, metrics, tenant connection figures, dev tokens.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn health_endpoints_answer() {
    let app = spawn_app().await;
    let (status, live) = app.get("/health/live", None).await;
    assert_eq!((status, live["status"].as_str()), (200, Some("live")));
    let (status, ready) = app.get("/health/ready", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["broker"]["ok"], true);
}

#[actix_web::test]
async fn metrics_cover_connections_traffic_and_latency() {
    let app = spawn_app().await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    ws.subscribed("tenant:acme:broadcast").await;
    app.publish(&service(), "tenant:acme:broadcast", "E", json!(1))
        .await;
    ws.recv().await;
    let m = app.metrics().await;
    let session_capacity = format!(
        "switchyard_mailbox_capacity{{actor=\"session\"}} {}",
        app.settings.actors.session.mailbox
    );
    for name in [
        "switchyard_connections{protocol=\"native\"} 1",
        "switchyard_subscriptions 1",
        "switchyard_published_total{source=\"rest\"} 1",
        "switchyard_delivered_total 1",
        session_capacity.as_str(),
        "switchyard_mailbox_capacity{actor=\"broker\"}",
        "switchyard_actors{actor=\"session\"} 1",
        "switchyard_actors{actor=\"tenant_group\"} 1",
        "switchyard_delivery_latency_seconds_bucket",
        "switchyard_dropped_total",
        "switchyard_slow_consumer_disconnects_total 0",
    ] {
        assert!(m.contains(name), "/metrics lacks {name:?}:\n{m}");
    }
    drop(ws);
    // The connection gauge falls back when the client goes away.
    for _ in 0..100 {
        if app
            .metric("switchyard_connections{protocol=\"native\"}")
            .await
            == 0.0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("connection gauge did not return to 0");
}

#[actix_web::test]
async fn tenant_connections_and_online_users() {
    let app = spawn_app().await;
    let _a1 = app.connect(&customer("acme", "u1", None)).await;
    let _a2 = app.connect(&customer("acme", "u1", None)).await;
    let mut a3 = app.connect(&staff("acme")).await;
    let _b1 = app.connect(&customer("other", "u9", None)).await;
    a3.ping().await;

    let admin_t = token(&admin("acme"));
    let (status, body) = app
        .get("/api/v1/tenants/acme/connections", Some(&admin_t))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenantKey"], "acme");
    assert_eq!(body["connections"], 3);
    assert_eq!(body["users"], 2);

    let (_, on) = app
        .get("/api/v1/tenants/acme/users/u1/online", Some(&admin_t))
        .await;
    assert_eq!(on["online"], true);
    let (_, off) = app
        .get("/api/v1/tenants/acme/users/u9/online", Some(&admin_t))
        .await;
    assert_eq!(off["online"], false, "u9 is online in another tenant only");

    for (who, expected) in [
        (service(), 200),
        (operator(), 200),
        (staff("acme"), 200),
        (admin("other"), 403),
        (customer("acme", "u1", None), 403),
    ] {
        let (status, _) = app
            .get("/api/v1/tenants/acme/connections", Some(&token(&who)))
            .await;
        assert_eq!(status, expected, "{who:?}");
    }
    let (status, _) = app.get("/api/v1/tenants/acme/connections", None).await;
    assert_eq!(status, 401);
    let (status, _) = app
        .get(
            "/api/v1/tenants/ac%20me/connections",
            Some(&token(&service())),
        )
        .await;
    assert_eq!(status, 400);

    drop(a3);
    for _ in 0..100 {
        let (_, body) = app
            .get("/api/v1/tenants/acme/connections", Some(&admin_t))
            .await;
        if body["connections"] == 2 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the closed connection was not removed from its tenant group");
}

#[actix_web::test]
async fn dev_tokens_only_in_development() {
    let app = spawn_app().await;
    let (status, _) = app
        .post_json(
            "/dev/token",
            None,
            &json!({"sub":"a","tenantKey":"t","role":"Admin"}),
        )
        .await;
    assert_eq!(status, 404, "the test environment serves no dev tokens");

    let dev = spawn_app_with(|s| {
        s.environment = "development".into();
        s.auth.dev_tokens = true;
    })
    .await;
    let (status, body) = dev
        .post_json(
            "/dev/token",
            None,
            &json!({"sub":"a","tenantKey":"t","role":"Admin"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let t = body["token"].as_str().unwrap();
    let mut ws = dev.connect_token(t).await.expect("a dev token works");
    ws.subscribed("tenant:t:admins").await;
    let (status, _) = dev
        .post_json(
            "/dev/token",
            None,
            &json!({"sub":"a","tenantKey":"t","role":"Emperor"}),
        )
        .await;
    assert_eq!(status, 400);
}
