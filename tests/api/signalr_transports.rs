//! SignalR's three transports with the unmodified `@microsoft/signalr` client forced to each
//! (WebSockets, Server-Sent Events, Long Polling), in one node and across a cluster, plus raw
//! checks of the SSE and Long Polling wire (ASP.NET Core's status codes) and of their clean-up.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};
use crate::redis_server::RedisServer;

const TRANSPORTS: [&str; 3] = ["WebSockets", "ServerSentEvents", "LongPolling"];

fn forced(transport: &'static str, events: &[&'static str]) -> HubOptions {
    HubOptions {
        transport: Some(transport),
        events: events.to_vec(),
        ..Default::default()
    }
}

/// Connects, completes an invocation, receives a REST publish, joins a group and receives what
/// is published to it.
async fn exercise(publisher: &TestApp, hub: &mut HubClient, order: &str) {
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
    let (status, ack) = publisher
        .publish(
            &service(),
            "tenant:acme:broadcast",
            "TenantUpdated",
            json!({"name": "Acme"}),
        )
        .await;
    assert_eq!(status, 202, "{ack}");
    let msg = hub.event("TenantUpdated").await;
    assert_eq!(msg["data"], json!({"name": "Acme"}));
    assert_eq!(msg["id"], ack["id"]);
    hub.invoke("JoinOrderChannel", json!([order]))
        .await
        .expect("joined");
    let channel = format!("tenant:acme:order:{order}");
    publisher
        .publish(
            &service(),
            &channel,
            "OrderStatusChanged",
            json!({"status": "Ready"}),
        )
        .await;
    let msg = hub.event("OrderStatusChanged").await;
    assert_eq!(msg["data"]["status"], "Ready");
    assert_eq!(msg["channel"], channel.as_str());
}

#[actix_web::test]
async fn each_forced_transport_receives_events_completes_invocations_and_joins_groups() {
    let app = spawn_app().await;
    let who = customer("acme", "c1", None);
    for transport in TRANSPORTS {
        let mut hub = HubClient::start(
            &app,
            &token(&who),
            forced(transport, &["TenantUpdated", "OrderStatusChanged"]),
        )
        .await
        .unwrap_or_else(|e| panic!("{transport} starts: {e}"));
        exercise(&app, &mut hub, &format!("o-{transport}")).await;
        hub.stop().await;
        // The connection ended with its client's stop(): none is left in the tenant.
        let admin_t = token(&admin("acme"));
        eventually(&format!("the {transport} connection to end"), || async {
            let (_, body) = app
                .get("/api/v1/tenants/acme/connections", Some(&admin_t))
                .await;
            (body["connections"] == 0).then_some(())
        })
        .await;
        assert_eq!(
            app.metric(&format!(
                "switchyard_signalr_connections_total{{transport=\"{transport}\"}}"
            ))
            .await,
            1.0
        );
    }
}

#[actix_web::test]
async fn long_polling_carries_messagepack_both_ways() {
    let app = spawn_app().await;
    let mut hub = HubClient::start(
        &app,
        &token(&customer("acme", "c1", None)),
        HubOptions {
            messagepack: true,
            ..forced("LongPolling", &["TenantUpdated", "OrderStatusChanged"])
        },
    )
    .await
    .expect("starts");
    exercise(&app, &mut hub, "o-mp").await;
    hub.stop().await;
}

#[actix_web::test]
async fn sse_and_long_polling_clients_on_one_node_get_what_another_node_publishes() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    for transport in ["ServerSentEvents", "LongPolling"] {
        let mut hub = HubClient::start(
            &b,
            &token(&customer("acme", "c1", None)),
            forced(transport, &["TenantUpdated", "OrderStatusChanged"]),
        )
        .await
        .unwrap_or_else(|e| panic!("{transport} starts: {e}"));
        exercise(&a, &mut hub, &format!("o-{transport}")).await;
        hub.stop().await;
    }
}

#[actix_web::test]
async fn stateful_reconnect_is_not_used_over_long_polling_and_the_connection_still_works() {
    // A parked (resumable) connection would stay present for a minute; one that is not parked
    // ends once its client stops polling for the disconnect timeout. (A poll the dead client
    // left waiting is answered after the poll timeout: short here.)
    let app = spawn_app_with(|s| {
        s.signalr.stateful_reconnect_grace_ms = 60_000;
        s.signalr.long_polling_timeout_ms = 500;
        s.signalr.disconnect_timeout_ms = 300;
    })
    .await;
    let mut hub = HubClient::start(
        &app,
        &token(&customer("acme", "c1", None)),
        HubOptions {
            stateful_reconnect: true,
            ..forced("LongPolling", &["TenantUpdated", "OrderStatusChanged"])
        },
    )
    .await
    .expect("starts");
    exercise(&app, &mut hub, "o-stateful").await;
    // The client process dies without a goodbye: nothing parks the connection, so it ends.
    drop(hub);
    let admin_t = token(&admin("acme"));
    eventually(
        "the Long Polling connection to end, not be parked",
        || async {
            let (_, body) = app
                .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
                .await;
            (body["online"] == false).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn a_disabled_transport_is_not_offered_and_is_refused_as_aspnet_core_does() {
    let app = spawn_app_with(|s| {
        s.signalr.transports = vec![switchyard::settings::HubTransport::WebSockets];
    })
    .await;
    let t = token(&customer("acme", "c1", None));
    let (status, body) = negotiate(&app, &t).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["availableTransports"],
        json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}])
    );
    // The real client forcing a transport the server does not offer fails at start().
    for transport in ["ServerSentEvents", "LongPolling"] {
        let err = HubClient::start(&app, &t, forced(transport, &[]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{transport} must not start"));
        assert!(
            err.contains("Unable to connect to the server with any of the available transports"),
            "{transport}: {err}"
        );
    }
    // A request for it anyway: 404 with ASP.NET Core's message, and the id stays usable.
    let id = body["connectionToken"].as_str().unwrap().to_owned();
    let (status, text) = raw(
        &app,
        "GET",
        &format!("/hubs/notifications?id={id}"),
        &t,
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        text.contains("LongPolling transport not supported by this end point type"),
        "{text}"
    );
    let (status, text) = raw(
        &app,
        "GET",
        &format!("/hubs/notifications?id={id}"),
        &t,
        Some("text/event-stream"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        text.contains("ServerSentEvents transport not supported by this end point type"),
        "{text}"
    );
    // The default offers all three, in ASP.NET Core's order.
    let app = spawn_app().await;
    let (_, body) = negotiate(&app, &t).await;
    assert_eq!(
        body["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
}

#[actix_web::test]
async fn raw_long_polling_follows_aspnet_core_status_codes_and_delete_releases_the_connection() {
    let app = spawn_app().await;
    let who = customer("acme", "c1", None);
    let t = token(&who);
    let hub = "/hubs/notifications";
    // No id, unknown id.
    assert_eq!(raw(&app, "GET", hub, &t, None, None).await.0, 400);
    assert_eq!(
        raw(&app, "GET", &format!("{hub}?id=nope"), &t, None, None)
            .await
            .0,
        404
    );
    assert_eq!(
        raw(
            &app,
            "POST",
            &format!("{hub}?id=nope"),
            &t,
            None,
            Some(b"x")
        )
        .await
        .0,
        404
    );
    let (_, body) = negotiate(&app, &t).await;
    let id = body["connectionToken"].as_str().unwrap().to_owned();
    let at = format!("{hub}?id={id}");
    // The first poll starts the connection and answers at once, empty.
    let (status, first) = raw(&app, "GET", &at, &t, None, None).await;
    assert_eq!((status, first.as_str()), (200, ""));
    // Another principal cannot use it.
    let other = token(&customer("acme", "c2", None));
    assert_eq!(raw(&app, "GET", &at, &other, None, None).await.0, 403);
    assert_eq!(
        raw(&app, "POST", &at, &other, None, Some(b"x")).await.0,
        403
    );
    // Nor can another transport.
    assert_eq!(
        raw(&app, "GET", &at, &t, Some("text/event-stream"), None)
            .await
            .0,
        400
    );
    let (status, _) = raw(
        &app,
        "POST",
        &at,
        &t,
        None,
        Some(b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":1,\"invocationId\":\"1\",\"target\":\"Ping\",\"arguments\":[]}\x1e"),
    )
    .await;
    assert_eq!(status, 200);
    let mut got = String::new();
    while !got.contains("\"invocationId\":\"1\"") {
        let (status, body) = raw(&app, "GET", &at, &t, None, None).await;
        assert_eq!(status, 200);
        got.push_str(&body);
    }
    assert!(got.starts_with("{}\u{1e}"), "{got}");
    assert!(
        got.contains(r#"{"type":3,"invocationId":"1","result":true}"#),
        "{got}"
    );
    let admin_t = token(&admin("acme"));
    let (_, count) = app
        .get("/api/v1/tenants/acme/connections", Some(&admin_t))
        .await;
    assert_eq!(count["connections"], 1);
    // A poll waits; DELETE ends the connection and that poll answers 204.
    let poll = {
        let (app_url, at, t) = (app.url(&at), at.clone(), t.clone());
        let _ = at;
        actix_web::rt::spawn(async move {
            awc::Client::default()
                .get(app_url)
                .bearer_auth(t)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let (status, _) = raw(&app, "DELETE", &at, &t, None, None).await;
    assert_eq!(status, 202);
    // The waiting poll may have taken a ping before the DELETE; the connection ends either way.
    let mut last = poll.await.unwrap().expect("poll answered");
    while last == 200 {
        last = raw(&app, "GET", &at, &t, None, None).await.0;
    }
    assert_eq!(last, 204);
    eventually("the connection to be released", || async {
        let (_, body) = app
            .get("/api/v1/tenants/acme/connections", Some(&admin_t))
            .await;
        (body["connections"] == 0).then_some(())
    })
    .await;
    // It is gone.
    assert_eq!(raw(&app, "GET", &at, &t, None, None).await.0, 404);
}

#[actix_web::test]
async fn an_abandoned_long_polling_connection_ends_after_the_disconnect_timeout() {
    let app = spawn_app_with(|s| s.signalr.disconnect_timeout_ms = 300).await;
    let t = token(&customer("acme", "c1", None));
    let (_, body) = negotiate(&app, &t).await;
    let at = format!(
        "/hubs/notifications?id={}",
        body["connectionToken"].as_str().unwrap()
    );
    assert_eq!(raw(&app, "GET", &at, &t, None, None).await.0, 200);
    let (status, _) = raw(
        &app,
        "POST",
        &at,
        &t,
        None,
        Some(b"{\"protocol\":\"json\",\"version\":1}\x1e"),
    )
    .await;
    assert_eq!(status, 200);
    let admin_t = token(&admin("acme"));
    let (_, online) = app
        .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
        .await;
    assert_eq!(online["online"], true);
    // No more polls: the connection ends and its presence is released.
    eventually("the abandoned connection to end", || async {
        let (_, body) = app
            .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
            .await;
        (body["online"] == false).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn an_sse_connection_ends_when_its_client_goes_away() {
    // Noticed by the socket check, long before the next heartbeat (15 s) would fail to write.
    let app = spawn_app_with(|s| s.signalr.sse_disconnect_check_ms = 100).await;
    let t = token(&customer("acme", "c1", None));
    let admin_t = token(&admin("acme"));
    let mut hub = HubClient::start(&app, &t, forced("ServerSentEvents", &[]))
        .await
        .expect("starts");
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
    let (_, online) = app
        .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
        .await;
    assert_eq!(online["online"], true);
    // The client process dies without a goodbye: its event stream drops.
    drop(hub);
    eventually("the SSE connection to end", || async {
        let (_, body) = app
            .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
            .await;
        (body["online"] == false).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn sse_refuses_messagepack_at_the_handshake_with_aspnet_core_message() {
    let app = spawn_app().await;
    let t = token(&customer("acme", "c1", None));
    let (_, body) = negotiate(&app, &t).await;
    let at = format!(
        "/hubs/notifications?id={}",
        body["connectionToken"].as_str().unwrap()
    );
    let mut res = app
        .http
        .get(app.url(&at))
        .bearer_auth(&t)
        .insert_header(("accept", "text/event-stream"))
        .send()
        .await
        .expect("sse request");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let (status, _) = raw(
        &app,
        "POST",
        &at,
        &t,
        None,
        Some(b"{\"protocol\":\"messagepack\",\"version\":1}\x1e"),
    )
    .await;
    assert_eq!(status, 200);
    // The stream carries the refusal, then ends.
    let body = res.body().limit(1 << 20).await.expect("the stream ends");
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with(":\r\n"), "{text}");
    assert!(
        text.contains("data: {\"error\":\"Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format.\"}\u{1e}\r\n\r\n"),
        "{text}"
    );
}

async fn negotiate(app: &TestApp, token: &str) -> (u16, Value) {
    let mut res = app
        .http
        .post(app.url("/hubs/notifications/negotiate?negotiateVersion=1"))
        .bearer_auth(token)
        .send()
        .await
        .expect("negotiate");
    let status = res.status().as_u16();
    let body = res.body().await.expect("negotiate body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A plain request to the hub; returns the status and the body as text.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    accept: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(accept) = accept {
        req = req.insert_header(("accept", accept));
    }
    let mut res = match body {
        Some(b) => req.send_body(b.to_vec()).await,
        None => req.send().await,
    }
    .expect("hub request");
    let status = res.status().as_u16();
    let bytes = res.body().limit(1 << 20).await.expect("hub body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[actix_web::test]
async fn a_long_polling_client_that_stops_polling_with_events_waiting_is_shut_by_the_watchdog() {
    // Its queue takes one message, so the actor stops being run at once; the disconnect timeout
    // is out of the way: the watchdog must end it, as it ends a WebSocket client that stopped
    // reading.
    let app = spawn_app_with(|s| {
        s.signalr.long_polling_buffer_bytes = 1;
        s.signalr.disconnect_timeout_ms = 600_000;
        s.session.write_timeout_ms = 300;
    })
    .await;
    let t = token(&customer("acme", "c1", None));
    let (_, body) = negotiate(&app, &t).await;
    let at = format!(
        "/hubs/notifications?id={}",
        body["connectionToken"].as_str().unwrap()
    );
    assert_eq!(raw(&app, "GET", &at, &t, None, None).await.0, 200);
    let handshake = b"{\"protocol\":\"json\",\"version\":1}\x1e";
    assert_eq!(
        raw(&app, "POST", &at, &t, None, Some(handshake)).await.0,
        200
    );
    let admin_t = token(&admin("acme"));
    // Published until the connection ends, not a fixed few: the POST above returns once the
    // handshake is queued for the actor, which joins its channels only when it next runs. Events
    // published before that never reach its outbox, and with nothing waiting only the heartbeat
    // (15 s) would show the stall (the test failed about one run in ten under load).
    let mut n = 0;
    eventually("the stalled Long Polling connection to end", || {
        n += 1;
        let (app, admin_t) = (&app, &admin_t);
        async move {
            app.publish(&service(), "tenant:acme:broadcast", "Tick", json!({"n": n}))
                .await;
            let (_, body) = app
                .get("/api/v1/tenants/acme/users/c1/online", Some(admin_t))
                .await;
            (body["online"] == false).then_some(())
        }
    })
    .await;
    let m = app.metrics().await;
    let counted: f64 = ["slow_consumer", "heartbeat_timeout", "write_timeout"]
        .iter()
        .map(|r| {
            metric_value(
                &m,
                &format!("switchyard_disconnects_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert_eq!(counted, 1.0, "the stall is counted once");
    // What was queued before the stall is still delivered, then the end.
    let (status, queued) = raw(&app, "GET", &at, &t, None, None).await;
    assert_eq!((status, queued.as_str()), (200, "{}\u{1e}"));
    assert_eq!(raw(&app, "GET", &at, &t, None, None).await.0, 204);
}

#[actix_web::test]
async fn an_idle_long_polling_client_is_not_taken_for_silent() {
    // The JS client sends no pings over Long Polling (its polls are the keep-alive): each poll
    // must count as hearing from it, or the client timeout would close every idle one.
    let app = spawn_app_with(|s| {
        s.session.heartbeat_interval_ms = 100;
        s.session.client_timeout_ms = 400;
    })
    .await;
    let mut hub = HubClient::start(
        &app,
        &token(&customer("acme", "c1", None)),
        forced("LongPolling", &[]),
    )
    .await
    .expect("starts");
    // Idle for several client timeouts.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
    assert!(
        !hub.backlog_contains(|v| v["type"] == "closed"),
        "{:?}",
        hub.take_backlog()
    );
    hub.stop().await;
}

#[actix_web::test]
async fn an_sse_stream_that_ended_leaves_its_keep_alive_connection_alone() {
    // The watchdog resets a connection whose actor ended but which is still open after the write
    // timeout (a WebSocket's close stuck behind unsent data). An SSE stream that ended cleanly
    // leaves an ordinary keep-alive connection, which is not the actor's any more.
    let app = spawn_app_with(|s| s.session.write_timeout_ms = 100).await;
    let t = token(&customer("acme", "c1", None));
    let (_, body) = negotiate(&app, &t).await;
    let at = format!(
        "/hubs/notifications?id={}",
        body["connectionToken"].as_str().unwrap()
    );
    let mut res = app
        .http
        .get(app.url(&at))
        .bearer_auth(&t)
        .insert_header(("accept", "text/event-stream"))
        .send()
        .await
        .expect("sse request");
    // The client closes the hub connection: the server closes, and the stream ends.
    let bye = b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":7}\x1e";
    assert_eq!(raw(&app, "POST", &at, &t, None, Some(bye)).await.0, 200);
    let body = res.body().limit(1 << 20).await.expect("the stream ends");
    assert!(String::from_utf8_lossy(&body).contains("data: {\"type\":7"));
    let admin_t = token(&admin("acme"));
    eventually("the connection to end", || async {
        let (_, body) = app
            .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
            .await;
        (body["online"] == false).then_some(())
    })
    .await;
    // Many write timeouts later, nothing was reset, and the pooled connection still serves.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        app.metric("switchyard_connection_resets_total{when=\"closing\"}")
            .await,
        0.0
    );
    assert_eq!(raw(&app, "GET", &at, &t, None, None).await.0, 404);
}

#[actix_web::test]
async fn an_sse_client_that_stops_reading_is_reset_by_the_watchdog_like_a_websocket_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| {
        s.actors.session.policy = switchyard_actors::mailbox::SlowConsumerPolicy::Disconnect;
        s.actors.session.max_queued_bytes = 256 * 1024;
        s.session.write_timeout_ms = 1000;
    })
    .await;
    let t = token(&customer("acme", "c1", None));
    let (_, body) = negotiate(&app, &t).await;
    let at = format!(
        "/hubs/notifications?id={}",
        body["connectionToken"].as_str().unwrap()
    );
    // A client whose receive buffer is tiny and which stops reading after the response head.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "GET {at} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\
                 Authorization: Bearer {t}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let handshake = b"{\"protocol\":\"json\",\"version\":1}\x1e";
    assert_eq!(
        raw(&app, "POST", &at, &t, None, Some(handshake)).await.0,
        200
    );
    // Far more than the socket buffers and the outbox bound hold.
    publish_many(&app, "tenant:acme:broadcast", 3000, 1024).await;
    let admin_t = token(&admin("acme"));
    eventually("the stalled SSE connection to end", || async {
        let (_, body) = app
            .get("/api/v1/tenants/acme/users/c1/online", Some(&admin_t))
            .await;
        (body["online"] == false).then_some(())
    })
    .await;
    let m = app.metrics().await;
    let counted: f64 = ["slow_consumer", "heartbeat_timeout", "write_timeout"]
        .iter()
        .map(|r| {
            metric_value(
                &m,
                &format!("switchyard_disconnects_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert_eq!(counted, 1.0, "the stall is counted once");
    // Reset by the watchdog, either as stalled or, when the connection's own slow-consumer close
    // came first (a busy machine), as a closed connection still holding what it could not send
    // (that one once the write timeout has passed).
    let resets = eventually("the stalled stream's connection to be reset", || async {
        let m = app.metrics().await;
        let resets: f64 = ["stalled", "closing"]
            .iter()
            .map(|w| {
                metric_value(
                    &m,
                    &format!("switchyard_connection_resets_total{{when=\"{w}\"}}"),
                )
            })
            .sum();
        (resets > 0.0).then_some(resets)
    })
    .await;
    assert_eq!(
        resets, 1.0,
        "a stalled stream's connection is reset once: nothing could get out of it"
    );
    // Reading now finds the connection reset or closed, after what the buffers held.
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection ended");
}
