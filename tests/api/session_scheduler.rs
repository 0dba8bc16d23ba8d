//! The SessionTimeoutScheduler with short timeouts from configuration: warning then expiry, on
//! SQLite and on Postgres; the served-order timeout; staff-closed sessions never announced; two
//! nodes on one Postgres announce each expiry once; sessions that lapsed while no node ran are
//! expired after a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard::settings::Settings;
use switchyard_actors::scheduler::ScanNow;

use crate::helpers::*;

const SCHEDULED: &str = "switchyard_published_total{source=\"scheduler\"}";

/// Scans every 100 ms; sessions expire after 3 s idle, with the warning 2 s before.
pub(crate) fn fast(s: &mut Settings) {
    s.scheduler.scan_interval_ms = 100;
    s.scheduler.inactive_timeout_secs = 3;
    s.scheduler.served_order_timeout_secs = 1;
    s.scheduler.warn_before_secs = 2;
}

/// Polls `GET …/sessions/{id}` until its status is `status`.
pub(crate) async fn wait_for_status(app: &TestApp, tenant: &str, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let (_, s) = app
            .get(
                &format!("/api/v1/tenants/{tenant}/sessions/{id}"),
                Some(&token(&service())),
            )
            .await;
        if s["status"] == status {
            return s;
        }
        assert!(
            started.elapsed() < WAIT,
            "session {id} never became {status}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn warning_then_expiry(db: &TestDb) {
    let app = spawn_app_with_db(db, fast).await;
    let mut adm = app.connect(&admin("a")).await;
    adm.subscribed("tenant:a:admins:sessions").await;
    adm.subscribed("tenant:a:admins").await;
    let mut cust = app.connect(&customer("a", "c1", Some("s1"))).await;
    cust.subscribed("session:s1").await;

    app.open_session("a", "s1", json!(4)).await;

    let warning = cust.recv_type("notification").await["data"].clone();
    assert_eq!(warning["event"], "CustomerSessionExpiring", "{warning}");
    let w = &warning["data"];
    assert_eq!(w["sessionId"], "s1");
    let secs = w["secondsRemaining"].as_u64().unwrap();
    assert!((1..=2).contains(&secs), "{w}");
    assert_eq!(w["minutesRemaining"], 1);

    let expired = json!({"sessionId": "s1", "tableNumber": 4, "reason": "InactiveSessionTimeout"});
    let n = cust.recv_type("notification").await["data"].clone();
    assert_eq!(n["event"], "SessionExpired");
    assert_eq!(n["data"], expired);
    let got = adm.notifications(2).await;
    let mut channels: Vec<&str> = got.iter().map(|n| n["channel"].as_str().unwrap()).collect();
    channels.sort();
    assert_eq!(channels, ["tenant:a:admins", "tenant:a:admins:sessions"]);
    for n in &got {
        assert_eq!(n["event"], "SessionExpired");
        assert_eq!(n["data"], expired);
    }

    let s = wait_for_status(&app, "a", "s1", "Expired").await;
    assert_eq!(s["expiryReason"], "InactiveSessionTimeout");
    assert!(s["expiredAt"].is_string());
    // One warning and three expiry announcements, and nothing more on later scans.
    app.wait_metric(SCHEDULED, 4.0).await;
    let report = app.handle.background.scheduler.send(ScanNow).await.unwrap();
    assert_eq!(report.unwrap().expired, 0);
    assert_eq!(app.metric(SCHEDULED).await, 4.0);
    app.stop().await;
}

#[actix_web::test]
async fn warning_then_expiry_on_sqlite() {
    warning_then_expiry(&TestDb::sqlite()).await;
}

#[actix_web::test]
async fn warning_then_expiry_on_postgres() {
    warning_then_expiry(&TestDb::postgres().await).await;
}

#[actix_web::test]
async fn served_orders_expire_on_their_own_timeout_and_closed_sessions_are_never_announced() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.scheduler.warn_before_secs = 0;
    })
    .await;
    let svc = token(&service());
    let (status, _) = app
        .put_json(
            "/api/v1/tenants/a",
            Some(&svc),
            &json!({"inactiveTimeoutSecs": 60, "servedOrderTimeoutSecs": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let mut adm = app.connect(&admin("a")).await;
    adm.subscribed("tenant:a:admins:sessions").await;

    // Closed by staff: never announced, even once its deadline has long passed.
    app.open_session("a", "closed", json!(1)).await;
    app.post_json(
        "/api/v1/tenants/a/sessions/closed/activity",
        Some(&svc),
        &json!({"allServed": true}),
    )
    .await;
    let (status, _) = app
        .delete("/api/v1/tenants/a/sessions/closed", Some(&svc))
        .await;
    assert_eq!(status, 200);

    app.open_session("a", "served", json!(2)).await;
    let (_, s) = app
        .post_json(
            "/api/v1/tenants/a/sessions/served/activity",
            Some(&svc),
            &json!({"hasOrders": true, "allServed": true}),
        )
        .await;
    assert_eq!(s["allServed"], true, "{s}");
    let n = adm.recv_type("notification").await["data"].clone();
    assert_eq!(
        n["data"],
        json!({"sessionId": "served", "tableNumber": 2, "reason": "ServedOrderTimeout"})
    );
    let s = wait_for_status(&app, "a", "served", "Expired").await;
    assert_eq!(s["expiryReason"], "ServedOrderTimeout");

    app.wait_metric(SCHEDULED, 3.0).await;
    let report = app.handle.background.scheduler.send(ScanNow).await.unwrap();
    assert_eq!(report.unwrap().expired, 0);
    let (_, closed) = app
        .get("/api/v1/tenants/a/sessions/closed", Some(&svc))
        .await;
    assert_eq!(closed["status"], "Closed");
    // Only "served" was announced (three channels).
    assert_eq!(app.metric(SCHEDULED).await, 3.0);
    app.stop().await;
}

#[actix_web::test]
async fn two_nodes_on_one_postgres_announce_each_expiry_once() {
    const SESSIONS: usize = 6;
    let db = TestDb::postgres().await;
    let tweak = |s: &mut Settings| {
        fast(s);
        s.scheduler.inactive_timeout_secs = 1;
        s.scheduler.warn_before_secs = 0;
    };
    let a = spawn_app_with_db(&db, tweak).await;
    let b = spawn_app_with_db(&db, tweak).await;
    // Without Redis each node delivers what it publishes: watch both.
    let mut watch_a = a.connect(&admin("t")).await;
    watch_a.subscribed("tenant:t:admins:sessions").await;
    let mut watch_b = b.connect(&admin("t")).await;
    watch_b.subscribed("tenant:t:admins:sessions").await;
    for i in 0..SESSIONS {
        let node = if i % 2 == 0 { &a } else { &b };
        node.open_session("t", &format!("s{i}"), json!(i)).await;
    }
    for i in 0..SESSIONS {
        wait_for_status(&a, "t", &format!("s{i}"), "Expired").await;
    }
    wait_metric_sum(&[&a, &b], SCHEDULED, (SESSIONS * 3) as f64).await;
    // Both schedulers have nothing left to claim.
    for node in [&a, &b] {
        let r = node
            .handle
            .background
            .scheduler
            .send(ScanNow)
            .await
            .unwrap();
        assert_eq!(r.unwrap().expired, 0);
    }
    let total = a.metric(SCHEDULED).await + b.metric(SCHEDULED).await;
    assert_eq!(
        total,
        (SESSIONS * 3) as f64,
        "three announcements per expiry"
    );

    // Every session was announced exactly once, across both nodes: a marker published on each
    // node after the expiries ends each watcher's stream.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (node, ws) in [(&a, &mut watch_a), (&b, &mut watch_b)] {
        let (status, _) = node
            .publish(&service(), "tenant:t:admins:sessions", "Marker", json!({}))
            .await;
        assert_eq!(status, 202);
        loop {
            let n = ws.recv_type("notification").await["data"].clone();
            if n["event"] == "Marker" {
                break;
            }
            assert_eq!(n["event"], "SessionExpired");
            *seen
                .entry(n["data"]["sessionId"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), SESSIONS, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    a.stop().await;
    b.stop().await;
}

async fn lapsed_while_down(db: &TestDb) {
    // The first node never scans after start-up: it only opens the session.
    let first = spawn_app_with_db(db, |s| {
        fast(s);
        s.scheduler.scan_interval_ms = 600_000;
        s.scheduler.inactive_timeout_secs = 1;
        s.scheduler.warn_before_secs = 0;
    })
    .await;
    first.open_session("a", "s1", json!(9)).await;
    first.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Nobody ran when it lapsed; the next node expires and announces it.
    let second = spawn_app_with_db(db, fast).await;
    let s = wait_for_status(&second, "a", "s1", "Expired").await;
    assert_eq!(s["expiryReason"], "InactiveSessionTimeout");
    second.wait_metric(SCHEDULED, 3.0).await;
    assert_eq!(second.metric(SCHEDULED).await, 3.0);
    second.stop().await;
}

#[actix_web::test]
async fn sessions_that_lapsed_while_no_node_ran_expire_after_restart_on_sqlite() {
    lapsed_while_down(&TestDb::sqlite()).await;
}

#[actix_web::test]
async fn sessions_that_lapsed_while_no_node_ran_expire_after_restart_on_postgres() {
    lapsed_while_down(&TestDb::postgres().await).await;
}
