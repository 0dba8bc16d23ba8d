//! Seed 004 (the LBS notification service) as a drop-in (issue 15): its own client code,
//! `NotificationClient` and the `useEntitySubscription` hook (`tests/compat/seed004/`, run by
//! Node), against a cluster of two nodes on Redis with the change feed on Postgres; and each
//! point of the seed's entity-subscription protocol on the native `/ws` protocol: `unsubscribe`
//! by `subscriptionId`, `subscribed` and `subscription_error` with the seed's fields, and the full
//! payload as the entity document.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard::settings::Settings;
use switchyard_actors::change_feed::ListenerStatus;

use crate::helpers::*;
use crate::hub_client::HubClient;
use crate::redis_server::RedisServer;

const RELAYED: &str = "switchyard_published_total{source=\"change_feed\"}";

/// The subscriptions the report says unmounting closed the socket with 4400 (more than
/// `connection.max_bad_frames`, 20).
const UNMOUNTED: usize = 25;

/// The seed's tables: `RugbyGameState` documents with the full payload (its example), `Team`
/// documents with the minimal one; Marten's columns beside `data`.
async fn marten_tables(pool: &sqlx::PgPool) {
    for table in ["mt_doc_rugbygamestate", "mt_doc_team"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (id varchar PRIMARY KEY, data jsonb NOT NULL, \
             mt_last_modified timestamptz DEFAULT now(), mt_dotnet_type varchar DEFAULT 'Ballr', \
             tenant_key text)"
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

fn seed_feed(s: &mut Settings) {
    s.change_feed.retry_interval_ms = 100;
    s.change_feed.poll_interval_ms = 300;
    s.change_feed
        .entity_types
        .insert("mt_doc_rugbygamestate".into(), "RugbyGameState".into());
    s.change_feed.full_payload_entity_types = vec!["RugbyGameState".into()];
}

async fn sql(pool: &sqlx::PgPool, stmt: &str) {
    sqlx::query(sqlx::AssertSqlSafe(stmt.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

async fn wait_until_leading(app: &TestApp) {
    let listener = app.handle.background.change_listener.as_ref().unwrap();
    let started = Instant::now();
    while !listener.send(ListenerStatus).await.unwrap().leading {
        assert!(
            started.elapsed() < WAIT,
            "the listener never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seed 004's client code in Node (`tests/compat/seed004/driver.mjs`), scripted from the test
/// through the JSON-lines driver process every Node client of the suite uses.
struct SeedClient {
    driver: HubClient,
}

impl SeedClient {
    async fn start() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/seed004");
        let driver = HubClient::spawn(
            tokio::process::Command::new("node")
                // Node 20 has the browser's WebSocket, which the SDK uses, behind this flag.
                .arg("--experimental-websocket")
                .arg(dir.join("driver.mjs"))
                .current_dir(&dir),
        );
        Self { driver }
    }

    async fn command(&mut self, cmd: Value) {
        self.driver.command(cmd).await;
    }

    /// The first report matching `pred` (from the backlog first); others are kept. A `fatal`
    /// report from the driver fails the test.
    async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let v = self
            .driver
            .wait_for(|v| v["type"] == "fatal" || pred(v))
            .await;
        assert_ne!(v["type"], "fatal", "{v}");
        v
    }

    /// Runs a command and waits until the driver has run it.
    async fn run(&mut self, cmd: Value) {
        let name = cmd["cmd"].clone();
        let key = cmd.get("key").cloned().unwrap_or(Value::Null);
        self.command(cmd).await;
        self.wait_for(|v| v["type"] == "done" && v["cmd"] == name && v["key"] == key)
            .await;
    }

    /// The server's `subscribed` reply for an entity, as the seed describes it.
    async fn subscribed(&mut self, entity_type: &str, entity_id: &str) -> Value {
        self.wait_for(|v| {
            v["type"] == "frame"
                && v["frame"]["type"] == "subscribed"
                && v["frame"]["data"]["entityType"] == entity_type
                && v["frame"]["data"]["entityId"] == entity_id
        })
        .await
    }

    fn take_backlog(&mut self) -> Vec<Value> {
        self.driver.take_backlog()
    }
}

/// The report: the SDK as written receives `payload.homeScore`, and unmounting 25 components
/// unsubscribes them on a socket that stays open, with no event after.
#[actix_web::test]
async fn issue_15_seed_004_sdk_and_hook_work_unchanged_against_a_cluster() {
    let redis = RedisServer::start().await;
    let db = TestDb::postgres().await;
    let prefix = unique_prefix();
    let node = |s: &mut Settings| {
        cluster_settings(s, &redis.url(), &prefix);
        seed_feed(s);
    };
    // `relay` holds the change feed's lease and publishes; the client is on `edge`.
    let relay = spawn_app_with_db(&db, node).await;
    let pool = db.pg().await;
    marten_tables(&pool).await;
    wait_until_leading(&relay).await;
    let edge = spawn_app_with_db(&db, node).await;

    sql(
        &pool,
        "INSERT INTO mt_doc_rugbygamestate (id, data, tenant_key) VALUES \
         ('match-456', '{\"homeScore\":0,\"awayScore\":0,\"currentPeriod\":\"First Half\"}', 'a')",
    )
    .await;
    let teams = UNMOUNTED + 1;
    for i in 1..=teams {
        sql(
            &pool,
            &format!(
                "INSERT INTO mt_doc_team (id, data, tenant_key) VALUES \
                 ('team-{i}', '{{\"name\":\"Team {i}\"}}', 'a')"
            ),
        )
        .await;
    }
    // Every insert is relayed before anyone subscribes: the first event the client sees is ours.
    relay.wait_metric(RELAYED, (teams + 1) as f64).await;

    let mut seed = SeedClient::start().await;
    let fan = token(&customer("a", "fan-1", None));
    seed.run(json!({"cmd":"connect","url":edge.ws_url("/ws"),"token":fan}))
        .await;
    seed.wait_for(|v| v["type"] == "open").await;

    // A scoreboard: the seed's full payload is the entity (`payload.homeScore`).
    seed.run(json!({"cmd":"mount","key":"scoreboard","entityType":"RugbyGameState","entityId":"match-456"}))
        .await;
    let reply = seed.subscribed("RugbyGameState", "match-456").await;
    assert!(
        reply["frame"]["data"]["subscriptionId"].is_string(),
        "{reply}"
    );
    sql(
        &pool,
        "UPDATE mt_doc_rugbygamestate SET data = \
         '{\"homeScore\":21,\"awayScore\":14,\"currentPeriod\":\"Second Half\"}' \
         WHERE id = 'match-456'",
    )
    .await;
    let n = seed
        .wait_for(|v| v["type"] == "notification" && v["key"] == "scoreboard")
        .await;
    assert_eq!(n["homeScore"], 21, "{n}");
    let notification = &n["notification"];
    assert_eq!(notification["entityType"], "RugbyGameState");
    assert_eq!(notification["entityId"], "match-456");
    assert_eq!(notification["changeType"], "updated");
    assert_eq!(notification["payloadType"], "full");
    assert_eq!(
        notification["payload"],
        json!({"id":"match-456","homeScore":21,"awayScore":14,"currentPeriod":"Second Half"})
    );

    // 25 components mount and unmount; one more stays mounted, to see what arrives after.
    for i in 1..=teams {
        seed.run(json!({"cmd":"mount","key":format!("team-{i}"),"entityType":"Team","entityId":format!("team-{i}")}))
            .await;
    }
    for i in 1..=teams {
        seed.subscribed("Team", &format!("team-{i}")).await;
    }
    for i in 1..=UNMOUNTED {
        seed.run(json!({"cmd":"unmount","key":format!("team-{i}")}))
            .await;
    }
    seed.run(json!({"cmd":"unmount","key":"scoreboard"})).await;
    for i in 1..=UNMOUNTED {
        let channel = format!("notifications:Team:team-{i}");
        seed.wait_for(|v| {
            v["frame"]["type"] == "unsubscribed"
                && v["frame"]["data"]["channel"] == channel.as_str()
        })
        .await;
    }
    seed.wait_for(|v| {
        v["frame"]["type"] == "unsubscribed"
            && v["frame"]["data"]["channel"] == "notifications:RugbyGameState:match-456"
    })
    .await;

    let before = seed.take_backlog();
    assert_open_and_accepted(&before);

    // Changes to what was unmounted, then to what is still mounted: only the latter arrives.
    sql(
        &pool,
        "UPDATE mt_doc_rugbygamestate SET data = '{\"homeScore\":28}' WHERE id = 'match-456'",
    )
    .await;
    sql(
        &pool,
        "UPDATE mt_doc_team SET data = '{\"name\":\"Renamed\"}' WHERE id = 'team-1'",
    )
    .await;
    let last = format!("team-{teams}");
    sql(
        &pool,
        &format!("UPDATE mt_doc_team SET data = '{{\"name\":\"Still here\"}}' WHERE id = '{last}'"),
    )
    .await;
    let n = seed
        .wait_for(|v| v["type"] == "notification" && v["key"] == last.as_str())
        .await;
    assert_eq!(n["notification"]["payloadType"], "minimal");
    let after = seed.take_backlog();
    assert_open_and_accepted(&after);
    for v in &after {
        assert!(
            v["frame"]["type"] != "notification" || v["frame"]["data"]["entityId"] == last.as_str(),
            "an event after its subscription was unsubscribed: {v}"
        );
    }
    relay.stop().await;
    edge.stop().await;
}

/// The socket stayed open and the server refused none of the SDK's frames.
fn assert_open_and_accepted(reports: &[Value]) {
    for v in reports {
        assert_ne!(v["type"], "close", "the socket closed: {v}");
        assert_ne!(
            v["frame"]["type"], "error",
            "the server refused a frame: {v}"
        );
    }
}

/// Subscribes by entity on the native protocol, as the seed's SDK does.
async fn watch(ws: &mut WsClient, entity_type: &str, entity_id: &str) -> Value {
    ws.send_json(json!({"type": "subscribe",
        "data": {"entityType": entity_type, "entityId": entity_id}}))
        .await;
    ws.recv().await
}

async fn unsubscribe(ws: &mut WsClient, subscription_id: Value) -> Value {
    ws.send_json(json!({"type":"unsubscribe","data":{"subscriptionId": subscription_id}}))
        .await;
    ws.recv().await
}

/// `unsubscribe` by `subscriptionId`: the SDK's `{entityType}:{entityId}`, and the id the
/// `subscribed` reply gave (as text, or as a number); events stop.
#[actix_web::test]
async fn issue_15_unsubscribe_by_subscription_id_in_every_form_stops_events() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, seed_feed).await;
    let mut ws = app.connect(&service()).await;
    let channel = "notifications:Team:team-123";

    let sdk_form = json!("Team:team-123");
    for form in ["sdk", "reply", "number"] {
        let reply = watch(&mut ws, "Team", "team-123").await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        let id = reply["data"]["subscriptionId"].clone();
        let subscription_id = match form {
            "sdk" => sdk_form.clone(),
            "reply" => id,
            _ => json!(id.as_str().unwrap().parse::<u64>().unwrap()),
        };
        let r = unsubscribe(&mut ws, subscription_id).await;
        assert_eq!(r["type"], "unsubscribed", "{form}: {r}");
        assert_eq!(r["data"]["channel"], channel, "{form}: {r}");
    }

    // Nothing more on the entity's channel: the next notification is the marker.
    ws.subscribed("notifications:Team:marker").await;
    app.publish(
        &service(),
        channel,
        "EntityChanged",
        json!({"changeType":"updated"}),
    )
    .await;
    app.publish(&service(), "notifications:Team:marker", "Marker", json!({}))
        .await;
    let n = ws.notifications(1).await.remove(0);
    assert_eq!(n["event"], "Marker", "{n}");
    app.stop().await;
}

/// Unsubscribing what is not subscribed (the SDK's cleanup after a failed or repeated
/// subscribe) is answered, and never counts toward the 4400 bad-frame close.
#[actix_web::test]
async fn issue_15_unsubscribing_what_is_not_subscribed_is_answered_and_never_closes() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, seed_feed).await;
    let mut ws = app.connect(&service()).await;
    let max_bad_frames = app.settings.session.max_bad_frames as usize;
    for i in 0..=max_bad_frames + 4 {
        let id = if i % 2 == 0 {
            json!(format!("Team:never-{i}"))
        } else {
            json!(format!("{}", 1000 + i))
        };
        ws.send_json(json!({"type":"unsubscribe","id":i,"data":{"subscriptionId":id}}))
            .await;
        let r = ws.recv().await;
        assert_eq!(r["id"], i, "{r}");
        assert_eq!(r["type"], "error", "{r}");
        assert_eq!(r["data"]["code"], "not_subscribed", "{r}");
    }
    ws.ping().await;
    app.stop().await;
}

/// `subscribed` carries `entityType`/`entityId`, `subscription_error` carries
/// `entityType`/`entityId`/`error`, beside Switchyard's own fields.
#[actix_web::test]
async fn issue_15_subscription_replies_carry_the_seed_fields() {
    let db = TestDb::postgres().await;
    let app = spawn_app_with_db(&db, seed_feed).await;
    let pool = db.pg().await;
    marten_tables(&pool).await;
    sql(
        &pool,
        "INSERT INTO mt_doc_team (id, data, tenant_key) VALUES ('team-123', '{}', 'a')",
    )
    .await;

    let mut ws = app.connect(&admin("a")).await;
    let ok = watch(&mut ws, "Team", "team-123").await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    let d = &ok["data"];
    assert_eq!(d["entityType"], "Team");
    assert_eq!(d["entityId"], "team-123");
    assert_eq!(d["channel"], "notifications:Team:team-123");
    assert!(
        d["subscriptionId"].is_string() && d["offset"].is_u64(),
        "{ok}"
    );

    let refused = watch(&mut ws, "Team", "team-404").await;
    assert_eq!(refused["type"], "subscription_error", "{refused}");
    let d = &refused["data"];
    assert_eq!(d["entityType"], "Team");
    assert_eq!(d["entityId"], "team-404");
    assert_eq!(d["channel"], "notifications:Team:team-404");
    assert!(d["code"].is_string(), "{refused}");
    assert!(
        d["error"].is_string() && d["error"] == d["reason"],
        "{refused}"
    );

    // Channels that are not an entity's keep their replies as they were.
    let plain = ws.subscribed("tenant:a:broadcast").await;
    assert!(plain["data"].get("entityType").is_none(), "{plain}");
    app.stop().await;
}
