//! The Postgres change feed: insert/update/delete as entity notifications (minimal and full),
//! tenant isolation on subscribe, changes made while no listener ran relayed when one starts,
//! and the relay lease failing over between two nodes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard::background;
use switchyard::settings::Settings;
use switchyard_actors::change_feed::ListenerStatus;

use crate::helpers::*;

const RELAYED: &str = "switchyard_published_total{source=\"change_feed\"}";

fn fast(s: &mut Settings) {
    s.change_feed.retry_interval_ms = 100;
    s.change_feed.poll_interval_ms = 300;
    s.change_feed.full_payload_entity_types = vec!["Player".into()];
}

/// Two watched tables: `mt_doc_team` (Team, minimal) and `mt_doc_player` (Player, full).
async fn attach_tables(pool: &sqlx::PgPool) {
    for table in ["mt_doc_team", "mt_doc_player"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, data jsonb NOT NULL, tenant_key text)"
        )))
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("SELECT install_notification_trigger_on_table($1)")
            .bind(table)
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn sql(pool: &sqlx::PgPool, stmt: &'static str) {
    sqlx::query(stmt).execute(pool).await.unwrap();
}

async fn leading(app: &TestApp) -> bool {
    match &app.handle.background.change_listener {
        Some(l) => l.send(ListenerStatus).await.unwrap().leading,
        None => false,
    }
}

async fn wait_until_leading(app: &TestApp) {
    let started = Instant::now();
    while !leading(app).await {
        assert!(
            started.elapsed() < WAIT,
            "the listener never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscribes by entity, as the native protocol allows.
async fn watch(ws: &mut WsClient, entity_type: &str, entity_id: &str) -> Value {
    ws.send_json(json!({"type": "subscribe",
        "data": {"entityType": entity_type, "entityId": entity_id}}))
        .await;
    ws.recv().await
}

#[actix_web::test]
async fn row_changes_become_entity_notifications_for_the_rows_tenant_only() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, fast).await;
    let pool = db.pg().await;
    attach_tables(&pool).await;
    wait_until_leading(&app).await;

    // Service may watch a row before it exists; tenants may not.
    let mut svc = app.connect(&service()).await;
    assert_eq!(
        watch(&mut svc, "Team", "team-1").await["type"],
        "subscribed"
    );
    let mut early = app.connect(&admin("a")).await;
    let refused = watch(&mut early, "Team", "team-1").await;
    assert_eq!(refused["type"], "subscription_error", "{refused}");

    sql(
        &pool,
        "INSERT INTO mt_doc_team VALUES ('team-1', '{\"name\":\"Reds\"}', 'a')",
    )
    .await;
    let n = svc.notifications(1).await.remove(0);
    assert_eq!(n["channel"], "notifications:Team:team-1");
    assert_eq!(n["event"], "EntityChanged");
    assert_eq!(n["entityType"], "Team");
    assert_eq!(n["entityId"], "team-1");
    assert_eq!(n["changeType"], "created");
    assert_eq!(n["payloadType"], "minimal");
    assert!(
        n.get("payload").is_none(),
        "minimal carries no payload: {n}"
    );
    assert!(n["timestamp"].is_string());
    assert_eq!(n["offset"], 1);

    // Now the row exists: its tenant's members may watch it, other tenants may not.
    let mut a_admin = app.connect(&admin("a")).await;
    let r = watch(&mut a_admin, "Team", "team-1").await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let mut a_cust = app.connect(&customer("a", "c1", None)).await;
    assert_eq!(
        watch(&mut a_cust, "Team", "team-1").await["type"],
        "subscribed"
    );
    let mut b_admin = app.connect(&admin("b")).await;
    let refused = watch(&mut b_admin, "Team", "team-1").await;
    assert_eq!(refused["type"], "subscription_error", "{refused}");
    assert_eq!(refused["data"]["code"], "forbidden");
    let reason = refused["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("notifications:{EntityType}:{EntityId}") && reason.contains("tenant"),
        "{reason}"
    );
    let refused = b_admin.subscribe("notifications:Team:team-1").await;
    assert_eq!(refused["type"], "subscription_error");

    sql(
        &pool,
        "UPDATE mt_doc_team SET data = '{\"name\":\"Blues\"}' WHERE id = 'team-1'",
    )
    .await;
    for ws in [&mut svc, &mut a_admin, &mut a_cust] {
        let n = ws.notifications(1).await.remove(0);
        assert_eq!(n["changeType"], "updated");
        assert_eq!(n["data"]["tenantKey"], "a");
    }
    sql(&pool, "DELETE FROM mt_doc_team WHERE id = 'team-1'").await;
    for ws in [&mut svc, &mut a_admin, &mut a_cust] {
        let n = ws.notifications(1).await.remove(0);
        assert_eq!(n["changeType"], "deleted");
        assert_eq!(n["offset"], 3);
    }

    // Full payload for Player: the entity.
    sql(
        &pool,
        "INSERT INTO mt_doc_player VALUES ('p-1', '{\"name\":\"Ann\"}', 'b')",
    )
    .await;
    let mut b_staff = app.connect(&staff("b")).await;
    assert_eq!(
        watch(&mut b_staff, "Player", "p-1").await["type"],
        "subscribed"
    );
    assert_eq!(
        watch(&mut a_admin, "Player", "p-1").await["type"],
        "subscription_error"
    );
    sql(
        &pool,
        "UPDATE mt_doc_player SET data = '{\"name\":\"Ann B\"}' WHERE id = 'p-1'",
    )
    .await;
    // The insert is relayed asynchronously, so its `created` may still arrive after subscribing.
    let mut n = b_staff.notifications(1).await.remove(0);
    if n["changeType"] == "created" {
        n = b_staff.notifications(1).await.remove(0);
    }
    assert_eq!(n["changeType"], "updated");
    assert_eq!(n["payloadType"], "full");
    // A Marten document table's full payload is the document with its id (issue 15).
    assert_eq!(n["payload"], json!({"id": "p-1", "name": "Ann B"}));

    // Nothing of tenant a's row reached tenant b: its first notification is this marker.
    b_admin.subscribed("tenant:b:broadcast").await;
    app.publish(&service(), "tenant:b:broadcast", "Marker", json!({}))
        .await;
    assert_eq!(b_admin.recv().await["data"]["event"], "Marker");

    // Unknown rows and ids that cannot be of the table's type are refused, not errors.
    for id in ["team-404", "p-1"] {
        let r = watch(&mut a_admin, "Team", id).await;
        assert_eq!(r["type"], "subscription_error", "{id}: {r}");
    }
    app.wait_metric(RELAYED, 5.0).await;
    assert_eq!(app.metric(RELAYED).await, 5.0);
    app.stop().await;
}

#[actix_web::test]
async fn changes_made_while_no_listener_ran_are_relayed_in_order_when_one_starts() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, |s| {
        fast(s);
        s.change_feed.enabled = false;
    })
    .await;
    assert!(app.handle.background.change_listener.is_none());
    let pool = db.pg().await;
    attach_tables(&pool).await;
    let mut svc = app.connect(&service()).await;
    for id in ["t1", "t2"] {
        assert_eq!(watch(&mut svc, "Team", id).await["type"], "subscribed");
    }
    sql(&pool, "INSERT INTO mt_doc_team VALUES ('t1', '{}', 'a')").await;
    sql(&pool, "INSERT INTO mt_doc_team VALUES ('t2', '{}', 'a')").await;
    sql(
        &pool,
        "UPDATE mt_doc_team SET data = '{\"v\":2}' WHERE id = 't1'",
    )
    .await;
    sql(&pool, "DELETE FROM mt_doc_team WHERE id = 't2'").await;
    assert_eq!(app.handle.store.outbox_backlog().await.unwrap(), 4);

    let entities = std::sync::Arc::new(background::entity_map(&app.settings).unwrap());
    let listener = background::start_change_listener(
        &app.settings,
        app.handle.node.clone(),
        &app.handle.store,
        entities,
    )
    .expect("a listener on Postgres");
    let got: Vec<(String, String)> = svc
        .notifications(4)
        .await
        .iter()
        .map(|n| {
            (
                n["entityId"].as_str().unwrap().to_owned(),
                n["changeType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("t1", "created"),
        ("t2", "created"),
        ("t1", "updated"),
        ("t2", "deleted"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, expected);
    let started = Instant::now();
    while app.handle.store.outbox_backlog().await.unwrap() != 0 {
        assert!(started.elapsed() < WAIT, "relayed rows are marked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The relay loop reports a batch to its actor after marking it relayed, so the count may
    // trail the backlog by a moment.
    eventually("the listener to count 4 relayed changes", || async {
        (listener.send(ListenerStatus).await.unwrap().relayed == 4).then_some(())
    })
    .await;
    assert_eq!(listener.send(ListenerStatus).await.unwrap().relayed, 4);
    app.stop().await;
}

#[actix_web::test]
async fn the_relay_fails_over_to_another_node_when_the_holder_stops() {
    let db = TestDb::postgres().await;
    let first = spawn_app_with_db(&db, fast).await;
    let pool = db.pg().await;
    attach_tables(&pool).await;
    wait_until_leading(&first).await;
    let second = spawn_app_with_db(&db, fast).await;
    // The second node stays on standby while the first holds the lease.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!leading(&second).await, "only one node relays");

    // Without Redis each node delivers what it publishes: watch on both.
    let mut on_first = first.connect(&service()).await;
    assert_eq!(
        watch(&mut on_first, "Team", "t1").await["type"],
        "subscribed"
    );
    let mut on_second = second.connect(&service()).await;
    assert_eq!(
        watch(&mut on_second, "Team", "t1").await["type"],
        "subscribed"
    );

    sql(&pool, "INSERT INTO mt_doc_team VALUES ('t1', '{}', 'a')").await;
    assert_eq!(on_first.notifications(1).await[0]["changeType"], "created");

    first.wait_metric(RELAYED, 1.0).await;
    let first_relayed = first.metric(RELAYED).await;
    first.stop().await;
    // A change while nobody relays waits in the outbox for the new holder.
    sql(
        &pool,
        "UPDATE mt_doc_team SET data = '{\"v\":2}' WHERE id = 't1'",
    )
    .await;
    wait_until_leading(&second).await;
    assert_eq!(on_second.notifications(1).await[0]["changeType"], "updated");
    sql(&pool, "DELETE FROM mt_doc_team WHERE id = 't1'").await;
    assert_eq!(on_second.notifications(1).await[0]["changeType"], "deleted");
    // Each change was relayed once, by one node.
    second.wait_metric(RELAYED, 2.0).await;
    assert_eq!(first_relayed, 1.0);
    assert_eq!(second.metric(RELAYED).await, 2.0);
    second.stop().await;
}

/// Issue 12, finding 5: a row nested deeper than `payload.max_depth` (with the full payload) is
/// refused, counted and skipped; the relay goes on with the next change.
#[actix_web::test]
async fn finding_5_a_deep_row_is_refused_counted_and_later_changes_flow() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, fast).await;
    let pool = db.pg().await;
    attach_tables(&pool).await;
    wait_until_leading(&app).await;
    let mut svc = app.connect(&service()).await;
    for id in ["p-deep", "p-2"] {
        assert_eq!(watch(&mut svc, "Player", id).await["type"], "subscribed");
    }
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    sqlx::query("INSERT INTO mt_doc_player VALUES ('p-deep', $1::jsonb, 'a')")
        .bind(deep)
        .execute(&pool)
        .await
        .unwrap();
    sql(
        &pool,
        "INSERT INTO mt_doc_player VALUES ('p-2', '{\"name\":\"Bo\"}', 'a')",
    )
    .await;
    let n = svc.notifications(1).await.remove(0);
    assert_eq!(n["entityId"], "p-2", "the deep row was not published: {n}");
    app.wait_metric(
        "switchyard_bad_payloads_total{reason=\"depth\",source=\"change_feed\"}",
        1.0,
    )
    .await;
    app.stop().await;
}
