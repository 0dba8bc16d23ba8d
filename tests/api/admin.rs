//! The operators' and admin consoles' API: actor limits retuned live (and kept across restarts and
//! nodes), tenant activity (figures, recent events, the activity stream) and tenant quotas, each
//! allowed and refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const ACTORS: &str = "/api/v1/admin/actors";

fn kind<'a>(body: &'a Value, kind: &str) -> &'a Value {
    body["actors"]
        .as_array()
        .expect("actors array")
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap_or_else(|| panic!("kind {kind} listed in {body}"))
}

#[actix_web::test]
async fn actor_api_lists_every_kind_for_operators_only() {
    let app = spawn_app().await;
    let _ws = app.connect(&admin("t1")).await;
    let ops = token(&operator());
    let (status, body) = app.get(ACTORS, Some(&ops)).await;
    assert_eq!(status, 200, "{body}");
    for k in [
        "session",
        "broker",
        "tenant_group",
        "redis_bridge",
        "scheduler",
        "pg_listener",
        "activity",
    ] {
        let a = kind(&body, k);
        assert!(a["mailbox"].as_u64().unwrap() > 0, "{k}: {a}");
        for field in [
            "count",
            "queueDepth",
            "peakQueueDepth",
            "handled",
            "mailboxFull",
            "dropped",
            "slowConsumerDisconnects",
        ] {
            assert!(a[field].is_number(), "{k}.{field} in {a}");
        }
        // Only sessions use (and show) a slow-consumer policy and a byte budget.
        let session = k == "session";
        assert_eq!(a["policy"].is_string(), session, "{k}: {a}");
        assert_eq!(a["maxQueuedBytes"].is_number(), session, "{k}: {a}");
        assert_eq!(a["defaults"]["policy"].is_string(), session, "{k}: {a}");
        assert_eq!(a["persisted"], true, "{k}: {a}");
        assert_eq!(a["overridden"], false, "{k}: {a}");
        // Embedded mode on SQLite: no Redis bridge, no change-feed listener.
        let idle = k == "redis_bridge" || k == "pg_listener";
        assert_eq!(a["running"], !idle, "{k}: {a}");
    }
    assert_eq!(
        kind(&body, "broker")["instances"].as_array().map(Vec::len),
        Some(app.handle.node.broker.shard_count()),
        "one entry per shard"
    );
    let session = kind(&body, "session");
    assert_eq!(session["mailbox"], app.settings.actors.session.mailbox);
    assert_eq!(session["count"], 1, "the one open connection");
    assert_eq!(
        kind(&body, "broker")["count"],
        app.handle.node.broker.shard_count() as u64
    );
    assert_eq!(kind(&body, "activity")["count"], 1);

    for who in [admin("t1"), service(), customer("t1", "c", None)] {
        let (status, body) = app.get(ACTORS, Some(&token(&who))).await;
        assert_eq!(status, 403, "{} refused: {body}", who.role);
        assert_eq!(body["code"], "forbidden");
    }
    let (status, body) = app.get(ACTORS, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_missing"))
    );
}

#[actix_web::test]
async fn actor_limits_change_at_run_time_are_validated_and_survive_a_restart() {
    let db = TestDb::sqlite();
    let app = spawn_app_with_db(&db, |_| {}).await;
    let ops = token(&operator());
    let path = format!("{ACTORS}/session");

    let (status, body) = app
        .put_json(&path, Some(&ops), &json!({"mailbox": 77, "policy": "drop"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["mailbox"].as_u64(), body["policy"].as_str()),
        (Some(77), Some("drop"))
    );
    assert_eq!(
        body["maxQueuedBytes"], app.settings.actors.session.max_queued_bytes,
        "an absent field keeps its value"
    );
    let (_, listed) = app.get(ACTORS, Some(&ops)).await;
    assert_eq!(
        kind(&listed, "session")["mailbox"],
        77,
        "visible in the next GET"
    );
    assert_eq!(
        app.metric("switchyard_mailbox_capacity{actor=\"session\"}")
            .await,
        77.0
    );
    assert_eq!(
        app.metric("switchyard_limit_changes_total{actor=\"session\"}")
            .await,
        1.0
    );

    let refusals = [
        (json!({"mailbox": 0}), 400, "mailbox must be between"),
        (
            json!({"maxQueuedBytes": 12}),
            400,
            "maxQueuedBytes must be between",
        ),
        (
            json!({"policy": "explode"}),
            400,
            "expected `drop` or `disconnect`",
        ),
        (json!({"mailbox": -5}), 400, "invalid value: integer `-5`"),
        (json!({"mailboxes": 5}), 400, "unknown field"),
        (json!({}), 400, "nothing to change"),
    ];
    for (field, value) in [("policy", json!("drop")), ("maxQueuedBytes", json!(4096))] {
        let (status, body) = app
            .put_json(
                &format!("{ACTORS}/broker"),
                Some(&ops),
                &json!({ field: value }),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["detail"],
            format!("broker does not use {field} (only session does); broker uses mailbox"),
        );
    }
    for (change, code, reason) in refusals {
        let (status, body) = app.put_json(&path, Some(&ops), &change).await;
        assert_eq!(status, code, "{change}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(reason),
            "{change}: {detail:?} names {reason:?}"
        );
    }
    let (status, body) = app
        .put_json(
            &format!("{ACTORS}/conductor"),
            Some(&ops),
            &json!({"mailbox": 5}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("session, broker"));
    let (status, _) = app
        .put_json(&path, Some(&token(&admin("t1"))), &json!({"mailbox": 5}))
        .await;
    assert_eq!(status, 403);
    let (_, listed) = app.get(ACTORS, Some(&ops)).await;
    assert_eq!(
        kind(&listed, "session")["mailbox"],
        77,
        "refused changes changed nothing"
    );

    app.stop().await;
    let restarted = spawn_app_with_db(&db, |_| {}).await;
    let (_, listed) = restarted.get(ACTORS, Some(&ops)).await;
    let session = kind(&listed, "session");
    assert_eq!(
        (session["mailbox"].as_u64(), session["policy"].as_str()),
        (Some(77), Some("drop"))
    );
    assert_eq!(
        kind(&listed, "broker")["mailbox"],
        restarted.settings.actors.broker.mailbox,
        "kinds never changed keep the configured default"
    );

    // Reset to the defaults: the stored change is forgotten, so the next restart keeps them too.
    let (status, body) = restarted.delete(&path, Some(&ops)).await;
    assert_eq!(status, 200, "{body}");
    let configured = restarted.settings.actors.session.clone();
    assert_eq!(
        (body["mailbox"].as_u64(), body["policy"].as_str()),
        (
            Some(configured.mailbox as u64),
            Some(configured.policy.as_str())
        )
    );
    assert_eq!(body["overridden"], false, "{body}");
    assert_eq!(body["defaults"]["mailbox"], configured.mailbox);
    let (status, body) = restarted
        .delete(&format!("{ACTORS}/conductor"), Some(&ops))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = restarted.delete(&path, Some(&token(&admin("t1")))).await;
    assert_eq!(status, 403);
    restarted.stop().await;
    let again = spawn_app_with_db(&db, |_| {}).await;
    let (_, listed) = again.get(ACTORS, Some(&ops)).await;
    assert_eq!(kind(&listed, "session")["mailbox"], configured.mailbox);
    assert_eq!(kind(&listed, "session")["overridden"], false);
}

/// Publishes concurrent bursts to `channel` (a broker shard's mailbox should be 1) until the
/// admin API shows a full broker mailbox that held two messages; returns the broker entry.
pub async fn fill_broker_mailbox(app: &TestApp, channel: &str) -> Value {
    fill_mailbox(app, "broker", channel).await
}

/// Bursts of concurrent publishes to `channel` until `kind`'s mailbox was full and held at least
/// two messages (its actors keep up with one sender at a time, not with many at once); returns
/// the kind's entry. Gives up after many bursts.
async fn fill_mailbox(app: &TestApp, kind_name: &str, channel: &str) -> Value {
    const BURST: usize = 48;
    const BURSTS: usize = 200;
    let ops = token(&operator());
    let publisher = service();
    for _ in 0..BURSTS {
        let sends = (0..BURST).map(|i| app.publish(&publisher, channel, "Load", json!({ "i": i })));
        for (status, body) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 202, "{body}");
        }
        let (_, listed) = app.get(ACTORS, Some(&ops)).await;
        let entry = kind(&listed, kind_name).clone();
        if entry["mailboxFull"].as_u64() > Some(0) && entry["peakQueueDepth"].as_u64() >= Some(2) {
            return entry;
        }
    }
    panic!("{kind_name}'s mailbox was never full under {BURSTS} bursts of {BURST} publishes");
}

#[actix_web::test]
async fn filling_a_mailbox_on_purpose_shows_its_depth_and_full_count() {
    let app = spawn_app().await;
    let ops = token(&operator());
    let mut watcher = app.connect(&customer("acme", "w", None)).await;
    watcher.subscribed("tenant:acme:broadcast").await;
    let (_, before) = app.get(ACTORS, Some(&ops)).await;
    for k in ["broker", "activity"] {
        assert_eq!(kind(&before, k)["mailboxFull"], 0, "{before}");
        let (status, body) = app
            .put_json(&format!("{ACTORS}/{k}"), Some(&ops), &json!({"mailbox": 1}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    let broker = fill_broker_mailbox(&app, "tenant:acme:broadcast").await;
    assert!(broker["handled"].as_u64() > Some(0), "{broker}");
    assert!(broker["meanHandleMillis"].is_number(), "{broker}");
    // Per shard: the channel lives on one shard, which held the messages.
    let shards = broker["instances"].as_array().expect("instances");
    let full: u64 = shards
        .iter()
        .map(|s| s["mailboxFull"].as_u64().unwrap())
        .sum();
    assert_eq!(full, broker["mailboxFull"].as_u64().unwrap(), "{broker}");
    let busiest = shards
        .iter()
        .find(|s| s["peakQueueDepth"].as_u64() >= Some(2))
        .unwrap_or_else(|| panic!("a shard held two messages: {broker}"));
    let instance = busiest["instance"].as_str().unwrap();
    // The same figures in /metrics.
    let metrics = app.metrics().await;
    for (sample, at_least) in [
        (
            "switchyard_mailbox_full_total{actor=\"broker\"}".to_owned(),
            1.0,
        ),
        (
            format!("switchyard_mailbox_depth_peak{{actor=\"broker\",shard=\"{instance}\"}}"),
            2.0,
        ),
        (
            format!(
                "switchyard_mailbox_handle_seconds_count{{actor=\"broker\",shard=\"{instance}\"}}"
            ),
            1.0,
        ),
    ] {
        assert!(
            metric_value(&metrics, &sample) >= at_least,
            "{sample} in {metrics}"
        );
    }

    // The activity recorder is offered one observation per publish and delivery, never waited
    // for: a full mailbox drops them, counted.
    let activity = fill_mailbox(&app, "activity", "tenant:acme:broadcast").await;
    assert!(activity["dropped"].as_u64() > Some(0), "{activity}");

    // Once the load stops, every mailbox drains: depth is measured now, not a peak.
    eventually("the mailboxes drain", || async {
        let (_, listed) = app.get(ACTORS, Some(&ops)).await;
        listed["actors"]
            .as_array()?
            .iter()
            .all(|a| a["queueDepth"] == 0)
            .then_some(())
    })
    .await;
}

#[actix_web::test]
async fn samples_for_the_charts_show_publishes_and_deliveries_for_operators_only() {
    let app = spawn_app_with(|s| s.admin.sample_interval_ms = 100).await;
    let ops = token(&operator());
    let mut ws = app.connect(&customer("acme", "c", None)).await;
    ws.subscribed("tenant:acme:broadcast").await;
    let point = eventually("a sample with publishes and deliveries", || async {
        let (status, _) = app
            .publish(&service(), "tenant:acme:broadcast", "Tick", json!({}))
            .await;
        assert_eq!(status, 202);
        let (status, body) = app.get("/api/v1/admin/samples", Some(&ops)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["intervalMs"], 100, "{body}");
        assert_eq!(body["windowSecs"], 900, "{body}");
        body["points"]
            .as_array()?
            .iter()
            .rev()
            .find(|p| {
                p["publishedPerSecond"].as_f64() > Some(0.0)
                    && p["deliveredPerSecond"].as_f64() > Some(0.0)
            })
            .cloned()
    })
    .await;
    assert!(point["connections"].as_i64() >= Some(1), "{point}");
    for k in ["session", "broker", "tenant_group", "activity", "scheduler"] {
        assert!(point["actors"][k]["queueDepth"].is_number(), "{k}: {point}");
        assert!(
            point["actors"][k]["mailboxFull"].is_number(),
            "{k}: {point}"
        );
    }
    let (status, body) = app
        .get("/api/v1/admin/samples", Some(&token(&admin("acme"))))
        .await;
    assert_eq!(status, 403, "{body}");
}

#[actix_web::test]
async fn a_change_on_one_node_reaches_another_sharing_sqlite() {
    a_change_on_one_node_reaches_another(TestDb::sqlite()).await;
}

#[actix_web::test]
async fn a_change_on_one_node_reaches_another_sharing_postgres() {
    a_change_on_one_node_reaches_another(TestDb::postgres().await).await;
}

async fn a_change_on_one_node_reaches_another(db: TestDb) {
    let fast = |s: &mut switchyard::settings::Settings| s.admin.reload_interval_ms = 100;
    let a = spawn_app_with_db(&db, fast).await;
    let b = spawn_app_with_db(&db, fast).await;
    let ops = token(&operator());
    let (status, _) = a
        .put_json(
            &format!("{ACTORS}/tenant_group"),
            Some(&ops),
            &json!({"mailbox": 321}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = a
        .put_json(
            "/api/v1/admin/tenants/t9/quotas",
            Some(&ops),
            &json!({"maxConnections": 3}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("node b applies the stored limit and quota", || async {
        let (_, listed) = b.get(ACTORS, Some(&ops)).await;
        let (_, quotas) = b.get("/api/v1/admin/tenants/t9/quotas", Some(&ops)).await;
        (kind(&listed, "tenant_group")["mailbox"] == 321 && quotas["quotas"]["maxConnections"] == 3)
            .then_some(())
    })
    .await;
    // A reset on node a returns node b to the configured limit too.
    let (status, _) = a
        .delete(&format!("{ACTORS}/tenant_group"), Some(&ops))
        .await;
    assert_eq!(status, 200);
    let configured = b.settings.actors.tenant_group.mailbox;
    eventually("node b applies the reset", || async {
        let (_, listed) = b.get(ACTORS, Some(&ops)).await;
        (kind(&listed, "tenant_group")["mailbox"] == configured).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn lowering_the_session_limit_live_disconnects_a_slow_consumer_sooner() {
    const CHANNEL: &str = "tenant:acme:broadcast";
    let app = spawn_app_with(|s| {
        s.actors.session.mailbox = 100_000;
        s.actors.session.max_queued_bytes = 256 << 20;
    })
    .await;
    let mut slow = stalled_client(&app, &customer("acme", "slow", None)).await;
    slow.subscribed(CHANNEL).await;
    // Under the generous limit, a burst the stalled client cannot read is only queued.
    publish_many(&app, CHANNEL, 400, 2048).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.metric("switchyard_slow_consumer_disconnects_total")
            .await,
        0.0
    );

    let (status, body) = app
        .put_json(
            &format!("{ACTORS}/session"),
            Some(&token(&operator())),
            &json!({"maxQueuedBytes": 16384, "policy": "disconnect"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    publish_many(&app, CHANNEL, 400, 2048).await;
    app.wait_metric("switchyard_slow_consumer_disconnects_total", 1.0)
        .await;
    assert_eq!(
        slow.closed().await,
        4000,
        "closed as a slow consumer after the change"
    );
    let (_, listed) = app.get(ACTORS, Some(&token(&operator()))).await;
    let session = kind(&listed, "session");
    assert!(session["slowConsumerDisconnects"].as_u64().unwrap() >= 1);
    // The eviction means the stalled session's outbox held more than 16 KiB of 2 KiB events.
    assert!(
        session["peakQueueDepth"].as_u64().unwrap() >= 2,
        "{session}"
    );
    assert!(
        session["peakQueuedBytes"].as_u64().unwrap() >= 16384 - 4096,
        "{session}"
    );
}

#[actix_web::test]
async fn a_batchs_events_each_reach_the_tenants_recent_events_and_rates() {
    // A batch goes to the broker as one run and reaches the activity recorder as one
    // observation of its events (`Observe::Batch`): each event is still a recent event of its own.
    let app = spawn_app().await;
    let mut alice = app.connect(&admin("t1")).await;
    alice.subscribed("tenant:t1:broadcast").await;
    let ops = token(&operator());
    let events: Vec<_> = (0..3)
        .map(|i| json!({"channel": "tenant:t1:broadcast", "event": "NewOrder", "data": {"i": i}}))
        .collect();
    let (status, body) = app.publish_batch(&events).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    alice.notifications(3).await;
    let detail = eventually("the batch's events are the recent events", || async {
        let (_, body) = app.get("/api/v1/admin/tenants/t1", Some(&ops)).await;
        let recent: Vec<Value> = body["recentEvents"]
            .as_array()?
            .iter()
            .map(|e| e["id"].clone())
            .collect();
        // Newest first.
        (recent.iter().take(3).rev().cloned().collect::<Vec<_>>() == ids).then_some(body)
    })
    .await;
    assert_eq!(detail["recentEvents"][0]["offset"], 3);
    // Each event counts once in both rates (one publish, one delivery each), not the batch once:
    // a rate is the count over the window's whole seconds.
    let window = app.settings.activity.rate_window_secs.max(1) as f64;
    eventually("the batch's three events count in the rates", || async {
        let (_, body) = app.get("/api/v1/admin/tenants/t1", Some(&ops)).await;
        let r = &body["rates"];
        let published = (r["publishedPerSecond"].as_f64()? * window).round();
        let delivered = (r["deliveredPerSecond"].as_f64()? * window).round();
        ((published, delivered) == (3.0, 3.0)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn tenant_activity_shows_users_channels_rates_and_recent_events() {
    let app = spawn_app().await;
    let mut alice = app.connect(&admin("t1")).await;
    alice.subscribed("tenant:t1:broadcast").await;
    let _other = app.connect(&admin("t2")).await;
    let ops = token(&operator());

    let (status, body) = app.get("/api/v1/admin/tenants", Some(&ops)).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenantKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["t1", "t2"],
        "an operator sees every tenant with connections"
    );
    let (status, body) = app
        .get("/api/v1/admin/tenants", Some(&token(&staff("t1"))))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["tenants"],
        json!([{"tenantKey": "t1", "connections": 1, "users": 1}])
    );

    let (status, ack) = app
        .publish(
            &service(),
            "tenant:t1:broadcast",
            "NewOrder",
            json!({"orderId": "o-1"}),
        )
        .await;
    assert_eq!(status, 202);
    alice.notifications(1).await;
    let detail = eventually("the publish is in the tenant's recent events", || async {
        let (status, body) = app.get("/api/v1/admin/tenants/t1", Some(&ops)).await;
        assert_eq!(status, 200, "{body}");
        (body["recentEvents"][0]["id"] == ack["id"]).then_some(body)
    })
    .await;
    let recent = &detail["recentEvents"][0];
    assert_eq!(recent["event"], "NewOrder");
    assert_eq!(recent["channel"], "tenant:t1:broadcast");
    assert_eq!(recent["offset"], ack["offset"]);
    assert!(
        recent.get("data").is_none(),
        "payloads never reach the console"
    );
    assert_eq!(detail["connections"], 1);
    assert_eq!(detail["users"][0]["userId"], "admin-t1");
    assert_eq!(detail["users"][0]["role"], "Admin");
    assert!(detail["channels"]
        .as_array()
        .unwrap()
        .contains(&json!({"channel": "tenant:t1:broadcast", "subscribers": 1})));
    assert!(detail["rates"]["publishedPerSecond"].is_number());
    assert!(detail["rates"]["deliveredPerSecond"].is_number());
    assert_eq!(
        detail["quotas"]["maxConnections"],
        app.settings.quotas.max_connections
    );
    eventually(
        "the publish and its delivery count in the rates",
        || async {
            let (_, body) = app.get("/api/v1/admin/tenants/t1", Some(&ops)).await;
            let r = &body["rates"];
            (r["publishedPerSecond"].as_f64()? > 0.0 && r["deliveredPerSecond"].as_f64()? > 0.0)
                .then_some(())
        },
    )
    .await;
    let (_, t2) = app.get("/api/v1/admin/tenants/t2", Some(&ops)).await;
    assert_eq!(
        t2["recentEvents"],
        json!([]),
        "nothing of t1 is shown under t2"
    );

    for (who, path) in [
        (admin("t2"), "/api/v1/admin/tenants/t1"),
        (customer("t1", "c", None), "/api/v1/admin/tenants/t1"),
        (service(), "/api/v1/admin/tenants/t1"),
        (customer("t1", "c", None), "/api/v1/admin/tenants"),
    ] {
        let (status, body) = app.get(path, Some(&token(&who))).await;
        assert_eq!(status, 403, "{} on {path}: {body}", who.role);
    }
    let (status, _) = app.get("/api/v1/admin/tenants/bad%20key", Some(&ops)).await;
    assert_eq!(status, 400);
}

/// The next notification on the activity channel, skipping others (presence, replies).
async fn next_activity(ws: &mut WsClient) -> Value {
    loop {
        let v = ws.recv().await;
        if v["type"] == "notification" && v["data"]["channel"] == "tenant:t1:activity" {
            return v["data"].clone();
        }
    }
}

#[actix_web::test]
async fn the_activity_stream_summarises_connections_subscriptions_and_publishes() {
    let app = spawn_app().await;
    let mut console = app.connect(&operator()).await;
    console.subscribed("tenant:t1:activity").await;
    let mut customer_ws = app.connect(&customer("t1", "c1", None)).await;
    let refused = customer_ws.subscribe("tenant:t1:activity").await;
    assert_eq!(refused["type"], "subscription_error");
    assert_eq!(refused["data"]["code"], "forbidden");
    let refused = app
        .connect(&admin("t2"))
        .await
        .subscribe("tenant:t1:activity")
        .await;
    assert_eq!(
        refused["data"]["code"], "forbidden",
        "another tenant's admin is refused"
    );

    let opened = next_activity(&mut console).await;
    assert_eq!(opened["event"], "ConnectionOpened");
    assert_eq!(
        opened["data"],
        json!({"userId": "c1", "role": "Customer", "protocol": "native"})
    );
    customer_ws.subscribed("tenant:t1:broadcast").await;
    let sub = next_activity(&mut console).await;
    assert_eq!(sub["event"], "Subscribed");
    assert_eq!(
        sub["data"],
        json!({"userId": "c1", "channel": "tenant:t1:broadcast"})
    );
    let (_, ack) = app
        .publish(
            &service(),
            "tenant:t1:broadcast",
            "NewOrder",
            json!({"secret": "s"}),
        )
        .await;
    let published = next_activity(&mut console).await;
    assert_eq!(published["event"], "Published");
    assert_eq!(
        published["data"],
        json!({"channel": "tenant:t1:broadcast", "event": "NewOrder", "id": ack["id"], "offset": ack["offset"]})
    );
    drop(customer_ws);
    let closed = next_activity(&mut console).await;
    assert_eq!(closed["event"], "ConnectionClosed");
    assert_eq!(closed["data"]["userId"], "c1");
}

#[actix_web::test]
async fn a_busy_tenant_cannot_flood_its_activity_stream() {
    const LIMIT: u32 = 5;
    let app = spawn_app_with(|s| s.activity.max_events_per_second = LIMIT).await;
    // An operator's console has no tenant: its own connection is not part of t1's activity.
    let mut console = app.connect(&operator()).await;
    console.subscribed("tenant:t1:activity").await;
    let started = std::time::Instant::now();
    publish_many(&app, "tenant:t1:broadcast", 60, 16).await;
    let elapsed_secs = started.elapsed().as_secs() + 1;
    let mut published = 0u64;
    let suppressed = loop {
        let v = next_activity(&mut console).await;
        match v["event"].as_str() {
            Some("Published") => published += 1,
            Some("ActivitySuppressed") => break v["data"]["suppressed"].as_u64().unwrap(),
            other => panic!("unexpected activity {other:?}"),
        }
    };
    assert!(suppressed > 0);
    assert!(
        published <= u64::from(LIMIT) * (elapsed_secs + 1),
        "{published} summaries in about {elapsed_secs} s at {LIMIT}/s"
    );
    assert!(app.metric("switchyard_activity_suppressed_total").await >= suppressed as f64);
}

#[actix_web::test]
async fn tenant_quotas_refuse_connections_subscriptions_and_publishes_and_are_counted() {
    let db = TestDb::sqlite();
    let app = spawn_app_with_db(&db, |_| {}).await;
    let ops = token(&operator());
    let path = "/api/v1/admin/tenants/t1/quotas";
    let quotas =
        json!({"maxConnections": 1, "publishesPerSecond": 2, "maxSubscriptionsPerConnection": 2});

    let (status, _) = app
        .put_json(path, Some(&token(&admin("t1"))), &quotas)
        .await;
    assert_eq!(status, 403, "only an operator sets quotas");
    for bad in [
        json!({"maxConnections": 0}),
        json!({"publishesPerSecond": 0}),
        json!({"maxSubscriptionsPerConnection": 0}),
        json!({"maxConnection": 3}),
    ] {
        let (status, body) = app.put_json(path, Some(&ops), &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "bad_request");
    }
    let (status, body) = app.put_json(path, Some(&ops), &quotas).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quotas"], quotas);
    let (status, body) = app.get(path, Some(&token(&admin("t1")))).await;
    assert_eq!(
        (status, &body["quotas"], &body["overridden"]),
        (200, &quotas, &json!(true))
    );
    let (status, _) = app.get(path, Some(&token(&admin("t2")))).await;
    assert_eq!(status, 403);

    // Connections: the second is refused at the upgrade with 429 problem JSON.
    let mut first = app.connect(&admin("t1")).await;
    let (status, body) = app
        .connect_token(&token(&customer("t1", "c2", None)))
        .await
        .err()
        .expect("the second connection is refused");
    assert_eq!(status, 429);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "too_many_requests");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("limit of 1 connections"));
    let _t2 = app.connect(&admin("t2")).await; // other tenants are not affected

    // Subscriptions: the third is refused by the quota; the connection lives on.
    first.subscribed("tenant:t1:broadcast").await;
    first.subscribed("tenant:t1:admins").await;
    let refused = first.subscribe("tenant:t1:order:o1").await;
    assert_eq!(refused["type"], "subscription_error");
    assert_eq!(refused["data"]["code"], "quota_exceeded");
    assert!(refused["data"]["reason"]
        .as_str()
        .unwrap()
        .contains("at most 2 subscriptions"));
    first.ping().await;

    // Publishes: two per second; a burst past it gets 429 (REST) and quota_exceeded (client).
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (status, _) = app
            .publish(&service(), "tenant:t1:broadcast", "Tick", json!({"i": i}))
            .await;
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    first
        .send_json(json!({"type":"publish","id":"p","data":{"channel":"tenant:t1:broadcast","event":"Tick","data":{}}}))
        .await;
    let reply = first.recv_type("error").await;
    assert_eq!(reply["data"]["code"], "quota_exceeded", "{reply}");
    let (status, _) = app
        .publish(&service(), "tenant:t2:broadcast", "Tick", json!({}))
        .await;
    assert_eq!(status, 202, "another tenant's quota is its own");

    for quota in ["connections", "subscriptions", "publishes"] {
        let sample = format!("switchyard_quota_exceeded_total{{quota=\"{quota}\",tenant=\"t1\"}}");
        assert!(app.metric(&sample).await >= 1.0, "{sample}");
    }

    // Kept across a restart; DELETE returns the tenant to the defaults.
    app.stop().await;
    let app = spawn_app_with_db(&db, |_| {}).await;
    let (_, body) = app.get(path, Some(&ops)).await;
    assert_eq!(body["quotas"], quotas, "quotas survive a restart");
    let (status, _) = app.delete(path, Some(&token(&admin("t1")))).await;
    assert_eq!(status, 403, "only an operator resets quotas");
    let (status, body) = app.delete(path, Some(&ops)).await;
    assert_eq!(status, 200);
    assert_eq!(body["overridden"], false);
    assert_eq!(
        body["quotas"]["maxConnections"],
        app.settings.quotas.max_connections
    );
    let _a = app.connect(&admin("t1")).await;
    let _b = app.connect(&customer("t1", "c2", None)).await;
}

#[actix_web::test]
async fn the_consoles_own_socket_is_not_the_tenants_activity() {
    let app = spawn_app().await;
    let ops = token(&operator());
    let mut member = app.connect(&customer("t1", "guest", None)).await;
    member.ping().await;
    // An Admin's console (client=console) watching its tenant's activity.
    let url = app.ws_url(&format!(
        "/ws?client=console&access_token={}",
        token(&admin("t1"))
    ));
    let mut console = WsClient::open(url).await.expect("console upgrade");
    console.subscribed("tenant:t1:activity").await;
    // Another role cannot hide that way: a customer's `client=console` is an ordinary connection.
    let url = app.ws_url(&format!(
        "/ws?client=console&access_token={}",
        token(&customer("t1", "sneaky", None))
    ));
    let mut sneaky = WsClient::open(url).await.expect("customer upgrade");
    sneaky.ping().await;
    let (_, t1) = app.get("/api/v1/admin/tenants/t1", Some(&ops)).await;
    assert_eq!(t1["connections"], 2, "the member and the customer: {t1}");
    let users: Vec<&str> = t1["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["guest", "sneaky"], "{t1}");
    // The console itself works: it sees the tenant's activity.
    let (status, _) = app
        .publish(&service(), "tenant:t1:broadcast", "NewOrder", json!({}))
        .await;
    assert_eq!(status, 202);
    let seen = console.recv_type("notification").await;
    assert_eq!(seen["data"]["channel"], "tenant:t1:activity", "{seen}");
}
