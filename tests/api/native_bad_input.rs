//! Bad input on the native protocol: each gets a specific error (or close code), is counted, and
//! never harms the connection (unless it must close) or any other connection.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn malformed_frames_get_error_frames_and_the_connection_lives() {
    let app = spawn_app().await;
    let mut bystander = app.connect(&customer("acme", "c2", None)).await;
    bystander.subscribed("tenant:acme:broadcast").await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    ws.subscribed("tenant:acme:broadcast").await;

    let cases = [
        ("{not json", "bad_json"),
        ("[1,2,3]", "bad_json"),
        ("\"just a string\"", "bad_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"data":{}}"#, "bad_request"),
        (r#"{"type":"subscribe","data":{}}"#, "bad_request"),
        (
            r#"{"type":"subscribe","data":{"channel":42}}"#,
            "bad_request",
        ),
        (
            r#"{"type":"publish","data":{"channel":"tenant:acme:broadcast"}}"#,
            "bad_request",
        ),
        (r#"{"type":"unsubscribe"}"#, "bad_request"),
        (r#"{"type":"ping","id":[1]}"#, "bad_request"),
    ];
    for (frame, code) in cases {
        ws.send_text(frame).await;
        let err = ws.recv().await;
        assert_eq!(err["type"], "error", "{frame} → {err}");
        assert_eq!(err["data"]["code"], code, "{frame} → {err}");
        assert!(err["data"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(ws.recv().await["data"]["code"], "unsupported_frame");

    // Unknown channels and bad event names are errors, not new channels.
    let reply = ws.subscribe("orders:everything").await;
    assert_eq!(reply["type"], "subscription_error");
    assert_eq!(reply["data"]["code"], "bad_channel");
    ws.send_json(json!({"type":"publish","data":{"channel":"tenant:acme:broadcast","event":"bad event!","data":1}}))
        .await;
    assert_eq!(ws.recv().await["data"]["code"], "bad_event");
    assert_eq!(
        ws.subscribe("tenant:acme:broadcast").await["data"]["code"],
        "already_subscribed"
    );

    // Still alive, still subscribed, and the bystander saw nothing of it.
    ws.ping().await;
    app.publish(&service(), "tenant:acme:broadcast", "After", json!(1))
        .await;
    assert_eq!(ws.recv().await["data"]["event"], "After");
    assert_eq!(bystander.recv().await["data"]["event"], "After");
    assert!(
        app.metric("switchyard_bad_frames_total{code=\"bad_json\"}")
            .await
            >= 3.0
    );
    assert!(
        app.metric("switchyard_bad_frames_total{code=\"unknown_type\"}")
            .await
            >= 1.0
    );
}

#[actix_web::test]
async fn oversized_frames_close_with_1009() {
    let app = spawn_app_with(|s| s.session.max_frame_bytes = 4096).await;
    let mut bystander = app.connect(&customer("acme", "c2", None)).await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(5000));
    ws.send_text(&big).await;
    assert_eq!(ws.closed().await, 1009);
    bystander.ping().await;
    assert_eq!(
        app.metric("switchyard_disconnects_total{reason=\"message_too_big\"}")
            .await,
        1.0
    );
}

#[actix_web::test]
async fn too_many_subscriptions_are_refused_at_the_configured_limit() {
    let app = spawn_app_with(|s| s.session.max_subscriptions = 3).await;
    let mut ws = app.connect(&admin("acme")).await;
    for c in [
        "tenant:acme:broadcast",
        "tenant:acme:admins",
        "tenant:acme:admins:orders",
    ] {
        ws.subscribed(c).await;
    }
    let reply = ws.subscribe("tenant:acme:admins:sessions").await;
    assert_eq!(reply["type"], "subscription_error");
    assert_eq!(reply["data"]["code"], "too_many_subscriptions");
    assert!(reply["data"]["reason"].as_str().unwrap().contains('3'));
    // Leaving one makes room again.
    ws.send_json(json!({"type":"unsubscribe","data":{"channel":"tenant:acme:admins"}}))
        .await;
    assert_eq!(ws.recv().await["type"], "unsubscribed");
    ws.subscribed("tenant:acme:admins:sessions").await;
}

#[actix_web::test]
async fn flooding_gets_rate_limited_then_closed() {
    let app = spawn_app_with(|s| {
        s.rate_limit.messages_per_second = 5;
        s.rate_limit.burst = 5;
        s.rate_limit.max_violations = 3;
    })
    .await;
    let mut bystander = app.connect(&customer("acme", "c2", None)).await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    for i in 0..40 {
        ws.send_json(json!({"type":"ping","id":i})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws.ws))
            .await
            .expect("server answers")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("pong") => pongs += 1,
                    Some("error") => {
                        assert_eq!(v["data"]["code"], "rate_limited");
                        limited += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                break u16::from(f.code)
            }
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(pongs >= 5, "the burst is served ({pongs})");
    assert!(limited >= 1, "errors come before the close ({limited})");
    assert_eq!(code, 4429);
    assert!(app.metric("switchyard_rate_limited_total").await >= 4.0);
    bystander.ping().await;
}

#[actix_web::test]
async fn a_service_publisher_pipelining_over_ws_is_not_rate_limited() {
    let app = spawn_app_with(|s| {
        s.rate_limit.messages_per_second = 5;
        s.rate_limit.burst = 5;
        s.rate_limit.max_violations = 3;
    })
    .await;
    assert_eq!(
        app.settings.rate_limit.exempt_roles,
        vec![switchyard_actors::identity::Role::Service],
        "the shipped default"
    );
    let mut publisher = app.connect(&service()).await;
    const PUBLISHES: u64 = 200;
    for i in 0..PUBLISHES {
        publisher
            .send_json(json!({"type":"publish","id":i,"data":{
                "channel":"tenant:acme:broadcast","event":"Tick","data":{"i":i}}}))
            .await;
    }
    for i in 0..PUBLISHES {
        let reply = publisher.recv().await;
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(reply["id"], i, "in request order");
    }
    assert_eq!(app.metric("switchyard_rate_limited_total").await, 0.0);
}

#[actix_web::test]
async fn a_silent_client_is_dropped_and_heartbeats_flow() {
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app_with(|s| {
        s.session.heartbeat_interval_ms = 100;
        s.session.client_timeout_ms = 400;
    })
    .await;
    let mut attentive = app.connect(&customer("acme", "c2", None)).await;
    let mut silent = RawSilentClient::connect(&app, &token(&customer("acme", "c1", None))).await;
    // The attentive client keeps reading (tungstenite answers pings while reading); the silent
    // one reads nothing, so never pongs, for three times the client timeout.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1200);
    while let Ok(next) =
        tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut attentive.ws)).await
    {
        match next {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(f))) => panic!("the attentive client was closed: {f:?}"),
            Some(Ok(_)) => {}
            other => panic!("attentive client: {other:?}"),
        }
    }
    assert!(pings >= 3, "server heartbeat pings arrive ({pings})");
    assert_eq!(silent.close_code().await, Some(4001));
    attentive.ping().await;
    assert!(
        app.metric("switchyard_disconnects_total{reason=\"heartbeat_timeout\"}")
            .await
            >= 1.0
    );
}

/// A WebSocket client that upgrades and then never writes a byte (not even pongs), reading
/// the server's frames raw.
struct RawSilentClient {
    stream: tokio::net::TcpStream,
}

impl RawSilentClient {
    async fn connect(app: &TestApp, token: &str) -> Self {
        Self {
            stream: raw_ws_upgrade(app, token).await,
        }
    }

    /// Reads frames until a close frame; returns its code.
    async fn close_code(&mut self) -> Option<u16> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        close_frame_in(&buf).map(|(code, _)| code)
    }
}
