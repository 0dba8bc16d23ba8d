//! The SignalR-compatible hub with the unmodified `@microsoft/signalr` client, plus raw checks
//! of negotiate, CORS and the Origin check.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};

fn listening(events: &[&'static str]) -> HubOptions {
    HubOptions {
        events: events.to_vec(),
        ..Default::default()
    }
}

#[actix_web::test]
async fn a_front_end_receives_new_order_and_pings() {
    let app = spawn_app().await;
    let mut hub = HubClient::start(&app, &token(&admin("acme")), listening(&["NewOrder"]))
        .await
        .expect("starts");
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
    // Admins join tenant:{t}:admins on connect, like the seeds' hub.
    let (status, ack) = app
        .publish(
            &service(),
            "tenant:acme:admins",
            "NewOrder",
            json!({"orderId": "o-1", "total": 12.5}),
        )
        .await;
    assert_eq!(status, 202);
    let msg = hub.event("NewOrder").await;
    assert_eq!(msg["type"], "NewOrder");
    assert_eq!(msg["tenantKey"], "acme");
    assert_eq!(msg["channel"], "tenant:acme:admins");
    assert_eq!(msg["data"], json!({"orderId": "o-1", "total": 12.5}));
    assert_eq!(msg["id"], ack["id"]);
    assert_eq!(msg["offset"], ack["offset"]);
    assert!(msg["timestamp"].as_str().is_some());
    // Tenant broadcast is joined too, and event names the seeds listen for work by name.
    for event in [
        "OrderStatusChanged",
        "TableStatusChanged",
        "TenantUpdated",
        "ReceiveNotification",
    ] {
        hub.listen(event).await;
        app.publish(&service(), "tenant:acme:broadcast", event, json!({"n": 1}))
            .await;
        assert_eq!(hub.event(event).await["type"], event);
    }
    hub.stop().await;
}

#[actix_web::test]
async fn join_and_leave_order_channel() {
    let app = spawn_app().await;
    let who = customer("acme", "c1", None);
    let mut hub = HubClient::start(
        &app,
        &token(&who),
        listening(&["OrderStatusChanged", "Marker"]),
    )
    .await
    .unwrap();
    hub.invoke("JoinOrderChannel", json!(["o-7"]))
        .await
        .expect("joined");
    app.publish(
        &service(),
        "tenant:acme:order:o-7",
        "OrderStatusChanged",
        json!({"status": "Ready"}),
    )
    .await;
    let msg = hub.event("OrderStatusChanged").await;
    assert_eq!(msg["data"]["status"], "Ready");
    assert_eq!(msg["channel"], "tenant:acme:order:o-7");

    hub.invoke("LeaveOrderChannel", json!(["o-7"]))
        .await
        .expect("left");
    app.publish(
        &service(),
        "tenant:acme:order:o-7",
        "OrderStatusChanged",
        json!({"status": "Served"}),
    )
    .await;
    app.publish(&service(), "tenant:acme:broadcast", "Marker", json!(null))
        .await;
    hub.event("Marker").await;
    let stray = hub.backlog_contains(|v| v["type"] == "event" && v["name"] == "OrderStatusChanged");
    assert!(!stray, "nothing arrives after LeaveOrderChannel");
}

#[actix_web::test]
async fn a_customer_joins_its_dining_session_channel() {
    let app = spawn_app().await;
    let who = customer("acme", "c1", Some("table-5-session"));
    let mut hub = HubClient::start(
        &app,
        &token(&who),
        listening(&["SessionExpired", "CustomerSessionExpiring"]),
    )
    .await
    .unwrap();
    hub.invoke("Ping", json!([])).await.unwrap();
    app.publish(
        &service(),
        "session:table-5-session",
        "CustomerSessionExpiring",
        json!({"secondsRemaining": 300}),
    )
    .await;
    assert_eq!(
        hub.event("CustomerSessionExpiring").await["data"]["secondsRemaining"],
        300
    );
    app.publish(
        &service(),
        "session:table-5-session",
        "SessionExpired",
        json!({"sessionId": "table-5-session"}),
    )
    .await;
    assert_eq!(
        hub.event("SessionExpired").await["channel"],
        "session:table-5-session"
    );
}

#[actix_web::test]
async fn unknown_methods_bad_arguments_and_forbidden_channels_get_errors() {
    let app = spawn_app().await;
    let mut hub = HubClient::start(
        &app,
        &token(&customer("acme", "c1", None)),
        HubOptions::default(),
    )
    .await
    .unwrap();
    let err = hub.invoke("LaunchRockets", json!([1])).await.unwrap_err();
    assert!(err.contains("LaunchRockets"), "{err}");
    let err = hub.invoke("JoinOrderChannel", json!([])).await.unwrap_err();
    assert!(err.contains("JoinOrderChannel"), "{err}");
    let err = hub
        .invoke("Subscribe", json!(["tenant:acme:admins"]))
        .await
        .unwrap_err();
    assert!(
        err.contains("tenant:{t}:admins"),
        "the error names the rule: {err}"
    );
    let err = hub
        .invoke("Subscribe", json!(["not-a-channel"]))
        .await
        .unwrap_err();
    assert!(err.contains("unknown channel pattern"), "{err}");
    // The connection lives on.
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
    let ok = hub
        .invoke("Subscribe", json!(["tenant:acme:order:o1"]))
        .await
        .unwrap();
    assert_eq!(ok["channel"], "tenant:acme:order:o1");
}

#[actix_web::test]
async fn refused_tokens_fail_start_with_the_reason() {
    let app = spawn_app().await;
    let expired = token_with_ttl(&admin("acme"), -300);
    let err = HubClient::start(&app, &expired, HubOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(err.contains("expired"), "{err}");
    let err = HubClient::start(&app, "forged.token.here", HubOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(err.contains("token"), "{err}");
    // skipNegotiation goes straight to the WebSocket, which refuses with 401.
    let skip = HubOptions {
        skip_negotiation: true,
        ..Default::default()
    };
    assert!(HubClient::start(&app, &expired, skip).await.is_err());
    assert!(
        app.metric("switchyard_auth_failures_total{reason=\"expired\"}")
            .await
            >= 2.0
    );
}

#[actix_web::test]
async fn skip_negotiation_clients_connect_directly() {
    let app = spawn_app().await;
    let opts = HubOptions {
        skip_negotiation: true,
        events: vec!["NewOrder"],
        ..Default::default()
    };
    let mut hub = HubClient::start(&app, &token(&staff("acme")), opts)
        .await
        .unwrap();
    app.publish(
        &service(),
        "tenant:acme:admins",
        "NewOrder",
        json!({"orderId": "x"}),
    )
    .await;
    assert_eq!(hub.event("NewOrder").await["data"]["orderId"], "x");
}

#[actix_web::test]
async fn messagepack_clients_work_both_ways() {
    let app = spawn_app().await;
    let opts = HubOptions {
        messagepack: true,
        events: vec!["NewOrder"],
        ..Default::default()
    };
    let mut hub = HubClient::start(&app, &token(&admin("acme")), opts)
        .await
        .unwrap();
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
    hub.invoke("JoinOrderChannel", json!(["o-9"]))
        .await
        .unwrap();
    app.publish(
        &service(),
        "tenant:acme:order:o-9",
        "NewOrder",
        json!({"items": [1, 2], "note": "ünïcode"}),
    )
    .await;
    let msg = hub.event("NewOrder").await;
    assert_eq!(msg["data"], json!({"items": [1, 2], "note": "ünïcode"}));
    assert_eq!(msg["channel"], "tenant:acme:order:o-9");
    let err = hub.invoke("Nope", json!([])).await.unwrap_err();
    assert!(err.contains("Nope"), "{err}");
}

#[actix_web::test]
async fn automatic_reconnect_after_the_server_restarts() {
    let app = spawn_app().await;
    let port = app.port;
    let opts = HubOptions {
        reconnect: true,
        events: vec!["NewOrder"],
        ..Default::default()
    };
    let mut hub = HubClient::start(&app, &token(&admin("acme")), opts)
        .await
        .unwrap();
    app.handle.shutdown().await;
    let r = hub.wait_for(|v| v["type"] == "reconnecting").await;
    assert!(
        r["error"].as_str().unwrap_or("").contains("restarting"),
        "{r}"
    );
    // A new node on the same address (a restart).
    let app2 = spawn_app_with(|s| s.server.port = port).await;
    hub.wait_for(|v| v["type"] == "reconnected").await;
    app2.publish(
        &service(),
        "tenant:acme:admins",
        "NewOrder",
        json!({"after": "restart"}),
    )
    .await;
    assert_eq!(hub.event("NewOrder").await["data"]["after"], "restart");
}

#[actix_web::test]
async fn negotiate_versions_and_connection_ids() {
    let app = spawn_app().await;
    let t = token(&admin("acme"));
    let (status, v1) = app
        .post_json(
            "/hubs/notifications/negotiate?negotiateVersion=1",
            Some(&t),
            &json!(null),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v1["negotiateVersion"], 1);
    let conn_token = v1["connectionToken"].as_str().unwrap().to_owned();
    assert!(
        conn_token.chars().all(|c| c.is_ascii_alphanumeric()),
        "URL-safe"
    );
    // All three transports by default, in ASP.NET Core's order (signalr_transports.rs).
    assert_eq!(
        v1["availableTransports"][0],
        json!({"transport":"WebSockets","transferFormats":["Text","Binary"]})
    );
    let (_, v0) = app
        .post_json("/hubs/notifications/negotiate", Some(&t), &json!(null))
        .await;
    assert_eq!(v0["negotiateVersion"], 0);
    assert!(v0.get("connectionToken").is_none());
    let (_, v9) = app
        .post_json(
            "/hubs/notifications/negotiate?negotiateVersion=9",
            Some(&t),
            &json!(null),
        )
        .await;
    assert_eq!(v9["negotiateVersion"], 1);
    let (status, refused) = app
        .post_json(
            "/hubs/notifications/negotiate?negotiateVersion=1",
            None,
            &json!(null),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        refused["error"].as_str().unwrap().contains("token"),
        "{refused}"
    );

    // The negotiated id takes one socket; unknown ids are 404, reuse is 409.
    let url = |id: &str| app.ws_url(&format!("/hubs/notifications?id={id}&access_token={t}"));
    let first = WsClient::open(url(&conn_token)).await;
    assert!(first.is_ok());
    assert_eq!(WsClient::open(url(&conn_token)).await.err().unwrap().0, 409);
    assert_eq!(WsClient::open(url("unknown")).await.err().unwrap().0, 404);
    // Someone else's token cannot take over a negotiated id.
    let (_, other) = app
        .post_json(
            "/hubs/notifications/negotiate?negotiateVersion=1",
            Some(&t),
            &json!(null),
        )
        .await;
    let other_id = other["connectionToken"].as_str().unwrap();
    let stranger = token(&staff("acme"));
    let res = WsClient::open(app.ws_url(&format!(
        "/hubs/notifications?id={other_id}&access_token={stranger}"
    )))
    .await;
    assert_eq!(res.err().unwrap().0, 403);
}

#[actix_web::test]
async fn raw_hub_protocol_handshake_and_framing() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app().await;
    // Handshake and two invocations in one frame; one reply frame per record is fine.
    let mut ws = raw_hub(
        &app,
        "/hubs/notifications",
        "{\"protocol\":\"json\",\"version\":1}\u{1e}{\"type\":1,\"invocationId\":\"1\",\"target\":\"Ping\",\"arguments\":[]}\u{1e}{\"type\":1,\"target\":\"Ping\",\"arguments\":[]}\u{1e}",
    )
    .await;
    let mut records: Vec<Value> = Vec::new();
    while records.len() < 2 {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!()
        };
        for r in t.split('\u{1e}').filter(|r| !r.is_empty()) {
            records.push(serde_json::from_str(r).unwrap());
        }
    }
    assert_eq!(records[0], json!({}), "the handshake reply has no type");
    assert_eq!(
        records[1],
        json!({"type":3,"invocationId":"1","result":true})
    );
    // A record split across frames is reassembled.
    ws.send(Message::text("{\"type\":1,\"invocationId\":\"2\",\"tar"))
        .await
        .unwrap();
    ws.send(Message::text("get\":\"Ping\",\"arguments\":[]}\u{1e}"))
        .await
        .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    assert_eq!(
        t.as_str(),
        "{\"type\":3,\"invocationId\":\"2\",\"result\":true}\u{1e}"
    );
    // Bad JSON in a record with no id gets no answer, and the connection lives.
    ws.send(Message::text(
        "{oops\u{1e}{\"type\":1,\"invocationId\":\"3\",\"target\":\"Ping\",\"arguments\":[]}\u{1e}",
    ))
    .await
    .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    assert!(t.contains("\"invocationId\":\"3\""), "{t}");
}

#[actix_web::test]
async fn an_unsupported_protocol_fails_the_handshake() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app().await;
    let mut ws = raw_hub(
        &app,
        "/hubs/notifications",
        "{\"protocol\":\"xml\",\"version\":1}\u{1e}",
    )
    .await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!()
    };
    assert_eq!(
        t.as_str(),
        "{\"error\":\"The protocol 'xml' is not supported.\"}\u{1e}"
    );
    let mut client = WsClient { ws };
    assert_eq!(client.closed().await, 1002);
}

#[actix_web::test]
async fn handshake_timeout_closes_silent_hub_connections() {
    let app = spawn_app_with(|s| s.session.handshake_timeout_ms = 300).await;
    let url = app.ws_url(&format!(
        "/hubs/notifications?access_token={}",
        token(&admin("acme"))
    ));
    let mut ws = WsClient::open(url).await.unwrap();
    assert_eq!(ws.closed().await, 4002);
}

#[actix_web::test]
async fn cors_preflight_and_origin_check() {
    let app = spawn_app_with(|s| s.cors.allowed_origins = vec!["https://app.example".into()]).await;
    let res = app
        .http
        .request(
            actix_web::http::Method::OPTIONS,
            app.url("/hubs/notifications/negotiate"),
        )
        .insert_header(("Origin", "https://app.example"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header((
            "Access-Control-Request-Headers",
            "x-signalr-user-agent, x-requested-with, authorization",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let h = |n: &str| res.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        h("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        h("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let allowed = h("access-control-allow-headers").unwrap().to_lowercase();
    assert!(
        allowed.contains("x-signalr-user-agent") && allowed.contains("authorization"),
        "{allowed}"
    );

    // WebSocket upgrades from other origins are refused; listed ones and non-browsers pass.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let t = token(&admin("acme"));
    for (origin, ok) in [
        (Some("https://evil.example"), false),
        (Some("https://app.example"), true),
        (None, true),
    ] {
        let mut req = app
            .ws_url(&format!("/hubs/notifications?access_token={t}"))
            .into_client_request()
            .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let res = tokio_tungstenite::connect_async(req).await;
        assert_eq!(res.is_ok(), ok, "{origin:?}");
    }
}

#[actix_web::test]
async fn rate_limited_invocations_get_a_completion_error() {
    let app = spawn_app_with(|s| {
        s.rate_limit.messages_per_second = 2;
        s.rate_limit.burst = 2;
        s.rate_limit.max_violations = 1000;
    })
    .await;
    let mut hub = HubClient::start(&app, &token(&admin("acme")), HubOptions::default())
        .await
        .unwrap();
    let mut errors = 0;
    for _ in 0..10 {
        if let Err(e) = hub.invoke("Ping", json!([])).await {
            assert!(e.contains("frames per second"), "{e}");
            errors += 1;
        }
    }
    assert!(
        errors >= 1,
        "some invocations were refused, each with its own completion"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        hub.invoke("Ping", json!([])).await,
        Ok(json!(true)),
        "and the connection lives"
    );
}

#[actix_web::test]
async fn subscribe_and_unsubscribe_any_channel_the_rules_allow() {
    let app = spawn_app().await;
    let channel = "tenant:acme:order:o-5";
    let mut hub = HubClient::start(
        &app,
        &token(&customer("acme", "c1", None)),
        listening(&["Tick"]),
    )
    .await
    .unwrap();
    let sub = hub.invoke("Subscribe", json!([channel])).await.unwrap();
    assert_eq!(sub["channel"], channel);
    assert_eq!(sub["offset"], 0);
    assert!(
        sub["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{sub}"
    );
    app.publish(&service(), channel, "Tick", json!({"n": 1}))
        .await;
    let tick = hub.event("Tick").await;
    assert_eq!(
        (tick["channel"].as_str(), tick["offset"].as_u64()),
        (Some(channel), Some(1))
    );

    hub.invoke("Unsubscribe", json!([channel]))
        .await
        .expect("unsubscribed");
    // Published while unsubscribed: never delivered (nothing is written after the completion).
    app.publish(&service(), channel, "Tick", json!({"n": 2}))
        .await;
    let again = hub.invoke("Subscribe", json!([channel])).await.unwrap();
    assert_eq!(again["offset"], 2);
    app.publish(&service(), channel, "Tick", json!({"n": 3}))
        .await;
    assert_eq!(
        hub.event("Tick").await["offset"],
        3,
        "offset 2, published between Unsubscribe and Subscribe, never arrived"
    );
    // Unsubscribing from a channel the connection does not hold is an error; it lives on.
    let err = hub
        .invoke("Unsubscribe", json!(["tenant:acme:order:never"]))
        .await
        .unwrap_err();
    assert!(err.contains("not subscribed"), "{err}");
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
}

#[actix_web::test]
async fn hub_keepalive_pings_flow_and_silent_clients_are_closed_with_allow_reconnect() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app_with(|s| {
        s.session.heartbeat_interval_ms = 100;
        s.session.client_timeout_ms = 500;
    })
    .await;
    let url = app.ws_url(&format!(
        "/hubs/notifications?access_token={}",
        token(&admin("acme"))
    ));
    let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    let (mut silent, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    let (mut lively, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    silent.send(Message::text(handshake)).await.unwrap();
    lively.send(Message::text(handshake)).await.unwrap();

    // The lively client sends a Ping record now and then (as the JS client does when idle) and
    // is kept; the silent one only reads, gets the server's Ping records, and is closed.
    let lively_task = actix_web::rt::spawn(async move {
        for _ in 0..12 {
            lively
                .send(Message::text("{\"type\":6}\u{1e}"))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        lively
            .send(Message::text(
                "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Ping\",\"arguments\":[]}\u{1e}",
            ))
            .await
            .unwrap();
        loop {
            match lively.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"invocationId\":\"1\"") => return t,
                Some(Ok(Message::Text(t))) => assert!(!t.contains("\"type\":7"), "{t}"),
                Some(Ok(Message::Close(f))) => panic!("the lively client was closed: {f:?}"),
                Some(Ok(_)) => {}
                other => panic!("lively client: {other:?}"),
            }
        }
    });

    let mut pings = 0;
    let mut close_record = None;
    let code = loop {
        let next = tokio::time::timeout(WAIT, silent.next())
            .await
            .expect("the silent client is closed");
        match next {
            Some(Ok(Message::Text(t))) => {
                for r in t.split('\u{1e}').filter(|r| !r.is_empty()) {
                    let v: Value = serde_json::from_str(r).unwrap();
                    match v["type"].as_u64() {
                        Some(6) => pings += 1,
                        Some(7) => close_record = Some(v),
                        _ => {}
                    }
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("silent client: {other:?}"),
        }
    };
    assert!(pings >= 3, "server Ping records every heartbeat ({pings})");
    assert_eq!(code, 4001);
    assert_eq!(
        close_record,
        Some(json!({"type":7,"error":"heartbeat timeout","allowReconnect":true}))
    );
    let reply = lively_task.await.unwrap();
    assert_eq!(
        reply, "{\"type\":3,\"invocationId\":\"1\",\"result\":true}\u{1e}",
        "the client that pinged is still served"
    );
}

#[actix_web::test]
async fn configured_hub_paths_all_work_and_shutdown_sends_close_with_allow_reconnect() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app_with(|s| {
        s.signalr.hub_paths = vec!["/hubs/notifications".into(), "/hubs/kitchen".into()];
    })
    .await;
    let url = format!("http://127.0.0.1:{}/hubs/kitchen", app.port);
    let mut hub = HubClient::start_url(&url, &token(&admin("acme")), listening(&["NewOrder"]))
        .await
        .expect("the second hub path negotiates and connects");
    app.publish(
        &service(),
        "tenant:acme:admins",
        "NewOrder",
        json!({"n": 1}),
    )
    .await;
    assert_eq!(hub.event("NewOrder").await["data"]["n"], 1);

    // A raw hub connection sees the Close record before the 1012 close on shutdown.
    let mut ws = raw_hub(
        &app,
        "/hubs/kitchen",
        "{\"protocol\":\"json\",\"version\":1}\u{1e}{\"type\":1,\"invocationId\":\"1\",\"target\":\"Ping\",\"arguments\":[]}\u{1e}",
    )
    .await;
    let mut seen = String::new();
    while !seen.contains("\"invocationId\":\"1\"") {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("handshake and completion expected")
        };
        seen.push_str(t.as_str());
    }
    let handle = app.handle.clone();
    actix_web::rt::spawn(async move { handle.shutdown().await });
    let (close_record, code) = close_record_and_code(&mut ws).await;
    assert_eq!(
        close_record,
        Some(json!({"type":7,"error":"server restarting, reconnect","allowReconnect":true}))
    );
    assert_eq!(code, 1012);
}

mod stateful_reconnect {
    use std::time::Duration;

    use serde_json::json;

    use crate::helpers::*;
    use crate::hub_client::{HubClient, HubOptions};
    use crate::tcp_proxy::Proxy;

    fn opts() -> HubOptions {
        HubOptions {
            stateful_reconnect: true,
            reconnect: true,
            events: vec!["NewOrder", "OrderStatusChanged"],
            ..Default::default()
        }
    }

    #[actix_web::test]
    async fn a_dropped_socket_resumes_with_nothing_lost_or_repeated() {
        let app = spawn_app().await;
        let proxy = Proxy::start(app.port).await;
        let url = format!("http://127.0.0.1:{}/hubs/notifications", proxy.port);
        let mut hub = HubClient::start_url(&url, &token(&admin("acme")), opts())
            .await
            .unwrap();
        hub.invoke("JoinOrderChannel", json!(["o-1"]))
            .await
            .unwrap();
        for n in 1..=3 {
            app.publish(
                &service(),
                "tenant:acme:admins",
                "NewOrder",
                json!({"n": n}),
            )
            .await;
        }
        for n in 1..=3 {
            assert_eq!(hub.event("NewOrder").await["data"]["n"], n);
        }
        // The socket drops (no close frame) within the client's ack interval, so some frames are
        // unacknowledged and get resent; the client must drop those duplicates.
        proxy.hold(true);
        proxy.sever();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in 4..=8 {
            app.publish(
                &service(),
                "tenant:acme:admins",
                "NewOrder",
                json!({"n": n}),
            )
            .await;
        }
        app.publish(
            &service(),
            "tenant:acme:order:o-1",
            "OrderStatusChanged",
            json!({"s": "Ready"}),
        )
        .await;
        proxy.hold(false);
        for n in 4..=8 {
            assert_eq!(
                hub.event("NewOrder").await["data"]["n"],
                n,
                "in order, once"
            );
        }
        assert_eq!(
            hub.event("OrderStatusChanged").await["data"]["s"],
            "Ready",
            "joined channels resume too"
        );
        app.publish(
            &service(),
            "tenant:acme:admins",
            "NewOrder",
            json!({"n": 9}),
        )
        .await;
        assert_eq!(hub.event("NewOrder").await["data"]["n"], 9, "then live");
        assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
        assert!(
            !hub.backlog_contains(|v| v["type"] == "event" && v["name"] == "NewOrder"),
            "no duplicate deliveries"
        );
        assert!(
            !hub.backlog_contains(|v| v["type"] == "reconnecting"),
            "a resume is invisible to the application"
        );
    }

    /// Issue 12, finding 1, with the real client as the owner: another identity presenting its
    /// parked connection's id is refused and the client's own resume still succeeds.
    #[actix_web::test]
    async fn another_identity_cannot_take_over_a_parked_connection_and_the_owner_resumes() {
        let app = spawn_app().await;
        let proxy = Proxy::start(app.port).await;
        let url = format!("http://127.0.0.1:{}/hubs/notifications", proxy.port);
        let alice = |tenant: &'static str, role: &'static str| As {
            role,
            tenant: Some(tenant),
            sub: "alice".into(),
            session: None,
        };
        let mut hub = HubClient::start_url(&url, &token(&alice("acme", "Admin")), opts())
            .await
            .unwrap();
        hub.invoke("Ping", json!([])).await.unwrap();
        let id = proxy
            .request_lines()
            .iter()
            .find_map(|line| {
                let (_, rest) = line.split_once("?id=")?;
                rest.split(['&', ' ']).next().map(str::to_owned)
            })
            .expect("the client's connection id in its request line");
        proxy.hold(true);
        proxy.sever();
        // Parked: the session has stopped.
        app.wait_metric_drops_to("switchyard_connections{protocol=\"signalr\"}", 0.0)
            .await;
        for intruder in [alice("globex", "Customer"), alice("acme", "Customer")] {
            let url = app.ws_url(&format!(
                "/hubs/notifications?id={id}&access_token={}",
                token(&intruder)
            ));
            let (status, body) = WsClient::open(url)
                .await
                .err()
                .expect("another identity is refused");
            assert_eq!(status, 403, "{intruder:?}: {body}");
        }
        proxy.hold(false);
        app.publish(
            &service(),
            "tenant:acme:admins",
            "NewOrder",
            json!({"n": 1}),
        )
        .await;
        assert_eq!(hub.event("NewOrder").await["data"]["n"], 1);
        assert!(
            !hub.backlog_contains(|v| v["type"] == "reconnecting"),
            "the owner resumed its own connection (no fresh reconnect)"
        );
    }

    /// Issue 14, finding 6: a connection parked for a stateful reconnect is still present; others
    /// see no UserOffline/UserOnline while its client resumes within the grace period, and a
    /// UserOffline once the grace period ends without it.
    #[actix_web::test]
    async fn a_parked_connection_stays_present_until_its_grace_period_ends() {
        let app = spawn_app_with(grace_settings).await;
        parked_presence(&app, &app).await;
    }

    #[actix_web::test]
    async fn a_parked_connection_stays_present_until_its_grace_period_ends_in_cluster_mode() {
        let redis = crate::redis_server::RedisServer::start().await;
        let prefix = unique_prefix();
        let a = spawn_cluster_node(&redis.url(), &prefix, grace_settings).await;
        let b = spawn_cluster_node(&redis.url(), &prefix, grace_settings).await;
        parked_presence(&a, &b).await;
    }

    fn grace_settings(s: &mut switchyard::settings::Settings) {
        s.presence.offline_grace_ms = 300;
        s.signalr.stateful_reconnect_grace_ms = 3000;
    }

    /// Alice's stateful connection on `app` drops and resumes, then drops for good, while a
    /// watcher on `watched_from` follows presence on `tenant:acme:admins`.
    async fn parked_presence(app: &TestApp, watched_from: &TestApp) {
        let mut watcher = watched_from.connect(&service()).await;
        watcher.subscribed("tenant:acme:admins").await;
        let proxy = Proxy::start(app.port).await;
        let url = format!("http://127.0.0.1:{}/hubs/notifications", proxy.port);
        let alice = As {
            sub: "alice".into(),
            ..staff("acme")
        };
        let mut hub = HubClient::start_url(&url, &token(&alice), opts())
            .await
            .unwrap();
        hub.invoke("Ping", json!([])).await.unwrap();
        let online = watcher.recv().await;
        assert_eq!(online["data"]["event"], "UserOnline", "{online}");
        // Dropped and resumed after well over the presence grace (300 ms), within the resume
        // grace (3 s).
        proxy.hold(true);
        proxy.sever();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        proxy.hold(false);
        assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
        // A marker on the watched channel: anything presence announced came before it.
        app.publish(&service(), "tenant:acme:admins", "Marker", json!({}))
            .await;
        let next = watcher.recv().await;
        assert_eq!(
            next["data"]["event"], "Marker",
            "no presence change while parked: {next}"
        );
        assert!(!hub.backlog_contains(|v| v["type"] == "reconnecting"));
        // Dropped for good: UserOffline once the resume grace has passed.
        proxy.hold(true);
        proxy.sever();
        let offline = watcher.recv().await;
        assert_eq!(offline["data"]["event"], "UserOffline", "{offline}");
        assert_eq!(offline["data"]["data"]["userId"], "alice");
    }

    /// Issue 14, finding 6: what a client buffered while its socket was down (at no more than the
    /// allowed rate) is flushed on resume without being refused by the inbound rate limit.
    #[actix_web::test]
    async fn a_resumed_clients_buffered_calls_are_not_rate_limited() {
        use crate::hardening_auth::{alice, negotiate, open_hub, park_a_connection, records, RS};
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        const BUFFERED: usize = 20;
        let app = spawn_app_with(|s| {
            s.rate_limit.messages_per_second = 10;
            s.rate_limit.burst = 10;
            s.rate_limit.max_violations = 1000;
        })
        .await;
        let owner = alice("acme", "Admin");
        let id = negotiate(&app, &owner).await;
        park_a_connection(&app, &id, &owner).await;
        // At 10 calls per second, a client can buffer 20 in a 2 s gap.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut ws = open_hub(&app, &id, &owner).await.expect("resumed");
        // The client resends from its second message (the first, a Ping, was answered).
        let mut frames = vec![format!("{}{RS}", json!({"type":9,"sequenceId":2}))];
        frames.extend((0..BUFFERED).map(|i| {
            format!(
                "{}{RS}",
                json!({"type":1,"invocationId":format!("r{i}"),"target":"Ping","arguments":[]})
            )
        }));
        for f in frames {
            ws.send(Message::text(f)).await.unwrap();
        }
        let mut completions = Vec::new();
        while completions.len() < BUFFERED {
            for r in records(&mut ws).await {
                if r["type"] == 3
                    && r["invocationId"]
                        .as_str()
                        .is_some_and(|i| i.starts_with('r'))
                {
                    completions.push(r);
                }
            }
        }
        let refused: Vec<_> = completions
            .iter()
            .filter(|c| c.get("error").is_some())
            .collect();
        assert!(refused.is_empty(), "rate-limited on resume: {refused:?}");
        assert_eq!(app.metric("switchyard_rate_limited_total").await, 0.0);
    }

    #[actix_web::test]
    async fn after_the_grace_period_the_client_reconnects_afresh() {
        let app = spawn_app_with(|s| s.signalr.stateful_reconnect_grace_ms = 200).await;
        let proxy = Proxy::start(app.port).await;
        let url = format!("http://127.0.0.1:{}/hubs/notifications", proxy.port);
        let mut hub = HubClient::start_url(&url, &token(&admin("acme")), opts())
            .await
            .unwrap();
        hub.invoke("Ping", json!([])).await.unwrap();
        proxy.hold(true);
        proxy.sever();
        tokio::time::sleep(Duration::from_millis(600)).await;
        proxy.hold(false);
        // The resume is refused (the parked state expired), so automatic reconnect takes over.
        hub.wait_for(|v| v["type"] == "reconnecting").await;
        hub.wait_for(|v| v["type"] == "reconnected").await;
        app.publish(
            &service(),
            "tenant:acme:admins",
            "NewOrder",
            json!({"n": 1}),
        )
        .await;
        assert_eq!(hub.event("NewOrder").await["data"]["n"], 1);
    }

    #[actix_web::test]
    async fn negotiate_offers_stateful_reconnect_only_when_asked() {
        let app = spawn_app().await;
        let t = token(&admin("acme"));
        let (_, asked) = app
            .post_json(
                "/hubs/notifications/negotiate?negotiateVersion=1&useStatefulReconnect=true",
                Some(&t),
                &json!(null),
            )
            .await;
        assert_eq!(asked["useStatefulReconnect"], true);
        let (_, plain) = app
            .post_json(
                "/hubs/notifications/negotiate?negotiateVersion=1",
                Some(&t),
                &json!(null),
            )
            .await;
        assert!(plain.get("useStatefulReconnect").is_none());
    }
}

/// Reads a raw hub connection until it closes: its last Close record and the close code.
async fn close_record_and_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (Option<Value>, u16) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut close_record = None;
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closed") {
            Some(Ok(Message::Text(t))) => {
                for r in t.split('\u{1e}').filter(|r| !r.is_empty()) {
                    let v: Value = serde_json::from_str(r).unwrap();
                    if v["type"] == 7 {
                        close_record = Some(v);
                    }
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    (close_record, code)
}

/// Issue 14, finding 6: a rate-limit close lets the client reconnect (it used to forbid it, so a
/// client that resumed with a burst of buffered calls never came back).
#[actix_web::test]
async fn a_rate_limit_close_allows_reconnecting() {
    let app = spawn_app_with(|s| {
        s.rate_limit.messages_per_second = 2;
        s.rate_limit.burst = 2;
        s.rate_limit.max_violations = 3;
    })
    .await;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = raw_hub(
        &app,
        "/hubs/notifications",
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    for i in 0..20 {
        let frame = format!(
            "{{\"type\":1,\"invocationId\":\"x{i}\",\"target\":\"Ping\",\"arguments\":[]}}\u{1e}"
        );
        futures_util::SinkExt::send(&mut ws, Message::text(frame))
            .await
            .unwrap();
    }
    let (close_record, code) = close_record_and_code(&mut ws).await;
    assert_eq!(code, 4429);
    assert_eq!(
        close_record,
        Some(json!({"type":7,"error":"rate limit exceeded","allowReconnect":true}))
    );
}

/// A raw WebSocket to `hub` as an acme admin (no SignalR client), after sending `first` (the
/// handshake, and records if any) as one text frame.
async fn raw_hub(
    app: &TestApp,
    hub: &str,
    first: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::SinkExt;
    let url = app.ws_url(&format!("{hub}?access_token={}", token(&admin("acme"))));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(first))
        .await
        .unwrap();
    ws
}
