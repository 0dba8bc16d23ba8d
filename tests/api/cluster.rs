//! Cluster mode against real `redis-server` processes: several nodes (separate apps on separate
//! ports) sharing one Redis.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use serde_json::json;

use crate::helpers::*;
use crate::redis_server::RedisServer;

/// Reads notifications until `n` arrived; returns their offsets.
async fn offsets(ws: &mut WsClient, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = ws.recv().await;
        assert_eq!(v["type"], "notification", "{v}");
        out.push(v["data"]["offset"].as_u64().unwrap());
    }
    out
}

#[actix_web::test]
async fn publish_on_one_node_arrives_on_every_node_once() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let c = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut on_a = a.connect(&customer("acme", "u1", None)).await;
    let mut on_b = b.connect(&customer("acme", "u2", None)).await;
    let mut on_c = c.connect(&customer("acme", "u3", None)).await;
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        let sub = ws.subscribed("tenant:acme:broadcast").await;
        assert_eq!(sub["data"]["offset"], 0);
    }
    for i in 1..=10 {
        let node = [&a, &b, &c][i % 3];
        let (status, ack) = node
            .publish(
                &service(),
                "tenant:acme:broadcast",
                "NewOrder",
                json!({"n": i}),
            )
            .await;
        assert_eq!(status, 202, "{ack}");
        assert_eq!(ack["offset"], i as u64, "offsets are cluster-wide");
    }
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(offsets(ws, 10).await, (1..=10).collect::<Vec<u64>>());
    }
    // Exactly once: a marker is the very next thing each client sees.
    a.publish(&service(), "tenant:acme:broadcast", "Marker", json!(null))
        .await;
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(ws.recv().await["data"]["event"], "Marker");
    }
    let (_, ready) = b.get("/health/ready", None).await;
    assert_eq!(ready["mode"], "cluster");
    assert_eq!(ready["redis"]["connected"], true);
}

#[actix_web::test]
async fn subscribing_under_concurrent_publishing_has_no_gap_and_no_duplicate() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    const TOTAL: u64 = 300;
    let publisher = async {
        stream::iter(1..=TOTAL)
            .for_each_concurrent(4, |i| {
                let node = if i % 2 == 0 { &a } else { &b };
                async move {
                    let (status, _) = node
                        .publish(&service(), "tenant:acme:order:o1", "Tick", json!({"i": i}))
                        .await;
                    assert_eq!(status, 202);
                }
            })
            .await
    };
    let subscribers = async {
        let mut clients = Vec::new();
        for i in 0..6 {
            let node = if i % 2 == 0 { &a } else { &b };
            let mut ws = node
                .connect(&customer("acme", &format!("u{i}"), None))
                .await;
            let sub = ws.subscribed("tenant:acme:order:o1").await;
            clients.push((ws, sub["data"]["offset"].as_u64().unwrap()));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        clients
    };
    let ((), clients) = tokio::join!(publisher, subscribers);
    for (mut ws, start) in clients {
        let got = offsets(&mut ws, (TOTAL - start) as usize).await;
        let expected: Vec<u64> = (start + 1..=TOTAL).collect();
        assert_eq!(got, expected, "subscribed at offset {start}");
    }
}

#[actix_web::test]
async fn a_client_recovers_what_it_missed_on_another_node() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let channel = "tenant:acme:broadcast";
    let mut ws = a.connect(&customer("acme", "kds-1", None)).await;
    let epoch = ws.subscribed(channel).await["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..=5 {
        a.publish(&service(), channel, "NewOrder", json!({"n": i}))
            .await;
    }
    assert_eq!(offsets(&mut ws, 5).await, vec![1, 2, 3, 4, 5]);
    drop(ws); // Wi-Fi drops
    for i in 6..=65 {
        b.publish(&service(), channel, "NewOrder", json!({"n": i}))
            .await;
    }
    // The display reconnects to the other node and asks for everything after offset 5.
    let mut ws = b.connect(&customer("acme", "kds-1", None)).await;
    ws.send_json(
        json!({"type":"subscribe","data":{"channel":channel,"since":{"offset":5,"epoch":epoch}}}),
    )
    .await;
    let sub = ws.recv().await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["data"]["recovered"], true);
    assert_eq!(sub["data"]["offset"], 65);
    let replay = ws.recv().await;
    assert_eq!(
        replay["data"]["data"],
        json!({"n": 6}),
        "the payload survives the round trip"
    );
    let mut got = vec![replay["data"]["offset"].as_u64().unwrap()];
    got.extend(offsets(&mut ws, 59).await);
    assert_eq!(
        got,
        (6..=65).collect::<Vec<u64>>(),
        "in order, no gap, no duplicate"
    );
    a.publish(&service(), channel, "NewOrder", json!({"n": 66}))
        .await;
    assert_eq!(offsets(&mut ws, 1).await, vec![66], "then live");

    // The same over REST.
    let t = token(&admin("acme"));
    let (status, page) = a
        .get(
            &format!("/api/v1/channels/{channel}/history?since=60&epoch={epoch}&limit=10"),
            Some(&t),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["recovered"], true);
    let offs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![61, 62, 63, 64, 65, 66]);
    let (status, _) = a
        .get(
            &format!("/api/v1/channels/{channel}/history"),
            Some(&token(&admin("other"))),
        )
        .await;
    assert_eq!(status, 403);
}

#[actix_web::test]
async fn stale_positions_and_lost_history_are_not_recovered() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |s| s.history.size = 10).await;
    let channel = "tenant:acme:broadcast";
    for i in 1..=30 {
        a.publish(&service(), channel, "E", json!(i)).await;
    }
    let mut ws = a.connect(&customer("acme", "u", None)).await;
    let epoch = ws.subscribed(channel).await["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    ws.send_json(json!({"type":"unsubscribe","data":{"channel":channel}}))
        .await;
    ws.recv_type("unsubscribed").await;
    ws.send_json(
        json!({"type":"subscribe","data":{"channel":channel,"since":{"offset":3,"epoch":epoch}}}),
    )
    .await;
    let sub = ws.recv().await;
    assert_eq!(
        sub["data"]["recovered"], false,
        "offset 4 fell out of the 10-event history: {sub}"
    );
    assert_eq!(sub["data"]["offset"], 30);

    // Redis restarts without persistence: history is gone, the epoch changes.
    drop(ws);
    redis.restart().await;
    eventually("the bridge to reconnect", || async {
        let (status, _) = a.get("/health/ready", None).await;
        (status == 200).then_some(())
    })
    .await;
    let mut ws = a.connect(&customer("acme", "u", None)).await;
    ws.send_json(
        json!({"type":"subscribe","data":{"channel":channel,"since":{"offset":30,"epoch":epoch}}}),
    )
    .await;
    let sub = ws.recv().await;
    assert_eq!(sub["data"]["recovered"], false, "{sub}");
    assert_ne!(sub["data"]["epoch"], epoch.as_str());
    assert_eq!(sub["data"]["offset"], 0);
}

#[actix_web::test]
async fn presence_is_cluster_wide_with_online_and_offline_events() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    presence_across_nodes(&a, &b).await;
}

/// Presence of two nodes sharing one Redis or one Redis Cluster (also run by
/// `redis_cluster.rs`): one UserOnline per user across nodes, snapshots and counts from either
/// node, one UserOffline after the grace period (both nodes' janitors sweep: a second would
/// arrive before the marker), and none for a reconnect within it.
pub async fn presence_across_nodes(a: &TestApp, b: &TestApp) {
    // A Service watcher: it has no tenant presence of its own.
    let mut watcher = a.connect(&service()).await;
    watcher.subscribed("tenant:acme:admins").await;

    let u1_a = a.connect(&customer("acme", "u1", None)).await;
    let u1_b = b.connect(&customer("acme", "u1", None)).await;
    let u2_b = b.connect(&staff("acme")).await;
    let _other = b.connect(&customer("other", "x", None)).await;
    let mut online = Vec::new();
    while online.len() < 2 {
        let n = watcher.recv().await;
        assert_eq!(n["data"]["event"], "UserOnline", "{n}");
        online.push(n["data"]["data"]["userId"].as_str().unwrap().to_owned());
    }
    online.sort();
    assert_eq!(
        online,
        ["staff-acme", "u1"],
        "one UserOnline per user, across nodes"
    );

    let t = token(&admin("acme"));
    let snap = eventually("presence from both nodes", || async {
        let (_, p) = a.get("/api/v1/tenants/acme/presence", Some(&t)).await;
        (p["connections"] == 3).then_some(p)
    })
    .await;
    let users: Vec<(String, u64)> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["userId"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(users, [("staff-acme".into(), 1), ("u1".into(), 2)]);
    let roles: Vec<&str> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["Staff", "Customer"]);
    let (_, on) = b
        .get("/api/v1/tenants/acme/users/u1/online", Some(&t))
        .await;
    assert_eq!(on["online"], true);
    let (_, count) = b.get("/api/v1/tenants/acme/connections", Some(&t)).await;
    assert_eq!(
        count["connections"], 3,
        "connection counts are cluster-wide"
    );

    // u1 still has a connection on A: closing the one on B announces nothing.
    drop(u1_b);
    // staff leaves for good: UserOffline after the grace period.
    drop(u2_b);
    let n = watcher.recv().await;
    assert_eq!(n["data"]["event"], "UserOffline", "{n}");
    assert_eq!(n["data"]["data"]["userId"], "staff-acme");
    // A reconnect within the grace period is not announced at all.
    drop(u1_a);
    let _u1_again = b.connect(&customer("acme", "u1", None)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.publish(&service(), "tenant:acme:admins", "Marker", json!(null))
        .await;
    assert_eq!(
        watcher.recv().await["data"]["event"],
        "Marker",
        "no flapping for u1, and staff's UserOffline once"
    );
}

#[actix_web::test]
async fn redis_dying_mid_traffic_degrades_then_resumes_by_itself() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let channel = "tenant:acme:broadcast";
    let mut on_a = a.connect(&customer("acme", "u1", None)).await;
    let mut on_b = b.connect(&customer("acme", "u2", None)).await;
    on_a.subscribed(channel).await;
    on_b.subscribed(channel).await;
    a.publish(&service(), channel, "Before", json!(1)).await;
    assert_eq!(on_b.recv().await["data"]["event"], "Before");
    assert_eq!(on_a.recv().await["data"]["event"], "Before");

    redis.kill().await;
    // Nodes stay up and say why they are not ready.
    let ready = eventually("readiness to report the bridge down", || async {
        let (status, body) = a.get("/health/ready", None).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(ready["redis"]["connected"], false);
    assert!(ready["redis"]["lastError"].as_str().is_some());
    let (status, _) = a.get("/health/live", None).await;
    assert_eq!(status, 200);
    // A publish is retried, then refused with a clear 503; this node's subscribers still get it.
    let (status, problem) = a.publish(&service(), channel, "During", json!(2)).await;
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("not relayed"),
        "{problem}"
    );
    assert_eq!(
        on_a.recv().await["data"]["event"],
        "During",
        "local delivery goes on"
    );
    assert!(a.metric("switchyard_redis_unrelayed_total").await >= 1.0);
    assert!(a.metric("switchyard_redis_publish_retries_total").await >= 2.0);
    on_b.ping().await;

    // Redis returns (empty): the bridges reconnect and resubscribe by themselves.
    redis.restart().await;
    for node in [&a, &b] {
        eventually("the bridge to resubscribe", || async {
            let (status, body) = node.get("/health/ready", None).await;
            (status == 200 && body["redis"]["subscribed"] == 1).then_some(())
        })
        .await;
    }
    let (status, _) = a.publish(&service(), channel, "After", json!(3)).await;
    assert_eq!(status, 202);
    assert_eq!(
        on_b.recv().await["data"]["event"],
        "After",
        "cross-node delivery resumed"
    );
    assert_eq!(on_a.recv().await["data"]["event"], "After");
}

#[actix_web::test]
async fn a_sigkilled_node_leaves_presence_within_the_node_ttl() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let engine = [
        ("SWITCHYARD__REDIS__URL", redis.url()),
        ("SWITCHYARD__REDIS__PREFIX", prefix),
    ];
    sigkilled_node_leaves_presence(&a, &engine).await;
}

/// A node process started with `engine` (the variables naming its Redis or Redis Cluster and
/// prefix, shared with `a`) is SIGKILLed: `a` announces its user offline and its connection is
/// gone from presence (also run by `redis_cluster.rs`).
pub async fn sigkilled_node_leaves_presence(a: &TestApp, engine: &[(&str, String)]) {
    let mut watcher = a.connect(&service()).await;
    watcher.subscribed("tenant:acme:admins").await;
    // Node B is a real process, so it can really be SIGKILLed.
    let mut env: Vec<(&str, &str)> = engine.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("SWITCHYARD__PRESENCE__NODE_TTL_SECS", "2"),
        ("SWITCHYARD__PRESENCE__HEARTBEAT_INTERVAL_MS", "200"),
        ("SWITCHYARD__PRESENCE__OFFLINE_GRACE_MS", "300"),
    ]);
    let (mut b, port) = spawn_node_process(&env).await;
    let url = format!(
        "ws://127.0.0.1:{port}/ws?access_token={}",
        token(&customer("acme", "on-b", None))
    );
    let mut on_b = WsClient::open(url).await.unwrap();
    on_b.ping().await;
    let n = watcher.recv().await;
    assert_eq!(
        (
            n["data"]["event"].as_str(),
            n["data"]["data"]["userId"].as_str()
        ),
        (Some("UserOnline"), Some("on-b"))
    );

    b.start_kill().unwrap(); // SIGKILL
    b.wait().await.unwrap();
    let n = watcher.recv_type("notification").await;
    assert_eq!(n["data"]["event"], "UserOffline", "{n}");
    assert_eq!(n["data"]["data"]["userId"], "on-b");
    let t = token(&admin("acme"));
    let (_, p) = a.get("/api/v1/tenants/acme/presence", Some(&t)).await;
    assert_eq!(p["connections"], 0, "node B's connection is gone: {p}");
}

#[actix_web::test]
async fn graceful_shutdown_removes_presence_at_once() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |s| s.presence.node_ttl_secs = 600).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |s| s.presence.node_ttl_secs = 600).await;
    graceful_shutdown_removes_presence(&a, b).await;
}

/// `b` shuts down gracefully: its presence is gone at once, as `a` sees it (both nodes with a
/// node TTL far longer than the test; also run by `redis_cluster.rs`).
pub async fn graceful_shutdown_removes_presence(a: &TestApp, b: TestApp) {
    let mut on_b = b.connect(&customer("acme", "u1", None)).await;
    on_b.ping().await;
    let t = token(&admin("acme"));
    eventually("u1 present", || async {
        let (_, p) = a.get("/api/v1/tenants/acme/presence", Some(&t)).await;
        (p["connections"] == 1).then_some(())
    })
    .await;
    b.handle.shutdown().await;
    let (_, p) = a.get("/api/v1/tenants/acme/presence", Some(&t)).await;
    assert_eq!(
        p["connections"], 0,
        "gone at once, not after the 600 s node TTL: {p}"
    );
}

#[actix_web::test]
async fn other_processes_publish_through_the_ingest_stream() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut admin_ws = a.connect(&service()).await;
    admin_ws.subscribed("tenant:acme:admins").await;
    // A background job (any language) appends a draft; exactly one node publishes it.
    let job = json!({"channel":"tenant:acme:admins","event":"TenantCreated","data":{"tenantKey":"acme","name":"Acme"},"id":"job-42"});
    redis.ingest_group_exists(&prefix).await;
    for _ in 0..2 {
        // Sent twice with one id: published once.
        redis.ingest(&prefix, &job.to_string()).await;
    }
    redis.ingest(&prefix, "{not json").await;
    let n = admin_ws.recv().await;
    assert_eq!(n["data"]["event"], "TenantCreated");
    assert_eq!(n["data"]["data"]["name"], "Acme");
    assert_eq!(n["data"]["id"], "job-42");
    a.publish(&service(), "tenant:acme:admins", "Marker", json!(null))
        .await;
    assert_eq!(
        admin_ws.recv().await["data"]["event"],
        "Marker",
        "published once"
    );
    let refused = a
        .metric("switchyard_bad_frames_total{code=\"ingest\"}")
        .await
        + b.metric("switchyard_bad_frames_total{code=\"ingest\"}")
            .await;
    assert_eq!(refused, 1.0, "the bad entry was refused and counted");
}

#[actix_web::test]
async fn tls_to_redis_with_a_private_ca() {
    let redis = RedisServer::start_tls().await;
    let prefix = unique_prefix();
    let ca = RedisServer::ca_file();
    let (_node, port) = spawn_node_process(&[
        ("SWITCHYARD__REDIS__URL", &redis.url()),
        ("SWITCHYARD__REDIS__PREFIX", &prefix),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ])
    .await;
    let http = awc::Client::default();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the bridge over TLS", || async {
        let res = http.get(format!("{base}/health/ready")).send().await.ok()?;
        (res.status() == 200).then_some(())
    })
    .await;
    let url = format!(
        "ws://127.0.0.1:{port}/ws?access_token={}",
        token(&service())
    );
    let mut ws = WsClient::open(url).await.unwrap();
    ws.subscribed("tenant:acme:admins").await;
    let res = http
        .post(format!("{base}/api/v1/publish"))
        .bearer_auth(token(&service()))
        .send_json(&json!({"channel":"tenant:acme:admins","event":"OverTls","data":{}}))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(ws.recv().await["data"]["event"], "OverTls");
}

/// The documented example in `scripts/examples/publish-via-redis.sh` really works.
#[actix_web::test]
async fn the_documented_redis_publish_example_works() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut ws = a.connect(&service()).await;
    ws.subscribed("tenant:pizza:admins").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/examples/publish-via-redis.sh"
    );
    let out = tokio::process::Command::new("bash")
        .args([script, &redis.url(), &prefix, "pizza"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = ws.recv_event().await;
    assert_eq!(n["data"]["event"], "TenantCreated");
    assert_eq!(n["data"]["data"]["tenantKey"], "pizza");
    assert_eq!(n["data"]["id"], "tenant-created-pizza");
}

#[actix_web::test]
async fn drafts_appended_before_any_node_ran_are_published() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let mut conn = redis.conn().await;
    let draft = json!({"channel":"tenant:acme:broadcast","event":"Early","data":{"n":1}});
    redis.ingest(&prefix, &draft.to_string()).await;
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let t = token(&admin("acme"));
    let page = eventually("the early draft to be published", || async {
        let (_, page) = a
            .get("/api/v1/channels/tenant:acme:broadcast/history", Some(&t))
            .await;
        (page["events"].as_array().map_or(0, |e| e.len()) == 1).then_some(page)
    })
    .await;
    assert_eq!(page["events"][0]["event"], "Early");
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("{prefix}:ingest"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 0, "published drafts are deleted from the stream");
}

/// The channels this Redis has pub/sub subscribers for, under `prefix`.
async fn redis_pubsub_channels(redis: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = redis.conn().await;
    let mut channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}:ch:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    channels.sort();
    channels
}

#[actix_web::test]
async fn redis_subscriptions_follow_local_subscribers_and_everything_carries_the_prefix() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let order = "tenant:acme:order:o1";
    let pubsub = format!("{prefix}:ch:{order}");
    // Published on, but nobody here listens: no Redis subscription.
    let (status, _) = a.publish(&service(), order, "E", json!(1)).await;
    assert_eq!(status, 202);
    assert!(!redis_pubsub_channels(&redis, &prefix)
        .await
        .contains(&pubsub));

    // The first local subscriber subscribes in Redis (before `subscribed` is answered).
    let mut first = a.connect(&customer("acme", "u1", None)).await;
    first.subscribed(order).await;
    assert_eq!(
        redis_pubsub_channels(&redis, &prefix).await,
        std::slice::from_ref(&pubsub)
    );
    let mut second = a.connect(&customer("acme", "u2", None)).await;
    second.subscribed(order).await;

    // One of two leaves: still subscribed, and events still arrive through Redis.
    first
        .send_json(json!({"type":"unsubscribe","data":{"channel":order}}))
        .await;
    first.recv_type("unsubscribed").await;
    a.publish(&service(), order, "StillHere", json!(2)).await;
    assert_eq!(second.recv().await["data"]["event"], "StillHere");
    assert_eq!(
        redis_pubsub_channels(&redis, &prefix).await,
        std::slice::from_ref(&pubsub)
    );

    // The last one goes away: the Redis subscription is dropped.
    drop(second);
    eventually(
        "the Redis unsubscribe after the last local subscriber",
        || async {
            redis_pubsub_channels(&redis, &prefix)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // Every key this node wrote (offsets, epochs, history, presence, nodes) carries the prefix.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.ends_with(":history")),
        "history was written: {keys:?}"
    );
    let stray: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with(&format!("{prefix}:")))
        .collect();
    assert!(stray.is_empty(), "keys without the prefix: {stray:?}");
}

#[actix_web::test]
async fn a_password_protected_redis_and_a_database_index_from_the_pieces() {
    let redis = RedisServer::start_with_password("s3cret-pass").await;
    // The overlays' way: host, port, password and database instead of a URL.
    let settings = |password: &'static str| {
        let port = redis.port;
        let prefix = unique_prefix();
        move |s: &mut switchyard::settings::Settings| {
            cluster_settings(s, "", &prefix);
            s.redis.host = "127.0.0.1".into();
            s.redis.port = port;
            s.redis.password = password.to_owned().into();
            s.redis.database = 5;
        }
    };
    let a = spawn_app_with(settings("s3cret-pass")).await;
    let (status, ready) = a.get("/health/ready", None).await;
    assert_eq!(
        (status, ready["mode"].as_str()),
        (200, Some("cluster")),
        "{ready}"
    );
    let mut ws = a.connect(&customer("acme", "u1", None)).await;
    ws.subscribed("tenant:acme:broadcast").await;
    let (status, ack) = a
        .publish(&service(), "tenant:acme:broadcast", "Authed", json!(1))
        .await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(ws.recv().await["data"]["event"], "Authed");
    // Everything went to database 5, nothing to 0.
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("SELECT")
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    let in_5: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let in_0: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(in_5 > 0, "keys in database 5");
    assert_eq!(in_0, 0, "nothing in database 0");

    // A wrong password: the node stays up, not ready, and says why.
    let b = spawn_app_with(settings("wrong")).await;
    let ready = eventually("readiness to report the refused password", || async {
        let (status, body) = b.get("/health/ready", None).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(ready["redis"]["connected"], false, "{ready}");
    let (status, _) = b.get("/health/live", None).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn redis_history_expires_after_its_time_to_live() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |s| s.history.ttl_secs = 2).await;
    let channel = "tenant:acme:broadcast";
    for i in 1..=3 {
        a.publish(&service(), channel, "E", json!(i)).await;
    }
    let mut conn = redis.conn().await;
    let history = format!("{prefix}:{{{channel}}}:history");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&history)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=2000).contains(&ttl), "the stream expires (PTTL {ttl})");
    let t = token(&admin("acme"));
    let (_, page) = a
        .get(&format!("/api/v1/channels/{channel}/history"), Some(&t))
        .await;
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    assert_eq!(page["events"].as_array().unwrap().len(), 3);

    tokio::time::sleep(Duration::from_millis(2600)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&history)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "history is gone after history.ttl_secs");
    let mut ws = a.connect(&customer("acme", "u", None)).await;
    ws.send_json(
        json!({"type":"subscribe","data":{"channel":channel,"since":{"offset":1,"epoch":epoch}}}),
    )
    .await;
    let sub = ws.recv().await;
    assert_eq!(sub["data"]["recovered"], false, "{sub}");
}

/// Issue 14, finding 1: the groups a SignalR connection joins at the handshake are live on every
/// node when `start()` resolves, so an event published on another node at that moment arrives.
#[actix_web::test]
async fn an_event_published_right_after_signalr_start_reaches_a_client_on_another_node() {
    use crate::hub_client::{HubClient, HubOptions};
    const ROUNDS: usize = 30;
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let user = format!("kitchen-{round}");
        let url = b.url("/hubs/notifications");
        let opts = HubOptions {
            events: vec!["OrderReady"],
            ..Default::default()
        };
        let mut hub = HubClient::start_url(&url, &token(&customer("acme", &user, None)), opts)
            .await
            .unwrap();
        let channel = format!("tenant:acme:user:{user}");
        let (status, _) = a
            .publish(
                &service(),
                &channel,
                "OrderReady",
                json!({ "round": round }),
            )
            .await;
        assert_eq!(status, 202);
        match tokio::time::timeout(Duration::from_secs(3), hub.event("OrderReady")).await {
            Ok(event) => assert_eq!(event["data"]["round"], round),
            Err(_) => lost.push(round),
        }
    }
    assert!(lost.is_empty(), "lost in rounds {lost:?} of {ROUNDS}");
}

/// Chaos run finding: a node that had read an ingest entry and stopped before publishing it
/// (SIGKILL, or a restart) left it pending on its name until another consumer's 30 s claim time.
/// Back under the same node id, it takes the entry up at once.
#[actix_web::test]
async fn a_node_back_under_its_id_publishes_the_ingest_entries_it_had_read_at_once() {
    const RESTARTED: &str = "node-restarted";
    /// Well inside the 30 s after which any node would claim the entry anyway.
    const AT_ONCE: Duration = Duration::from_secs(5);
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let stream = format!("{prefix}:ingest");
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("switchyard")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let draft = json!({"channel": "tenant:acme:broadcast", "event": "Ingested", "data": {"n": 1}});
    redis.ingest(&prefix, &draft.to_string()).await;
    // The node read it, then died before publishing it: pending on its name.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("switchyard")
        .arg(RESTARTED)
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    let node = spawn_cluster_node(&redis.url(), &prefix, |s| s.node.id = RESTARTED.into()).await;
    let t = token(&admin("acme"));
    let published = tokio::time::timeout(
        AT_ONCE,
        eventually("the pending entry to be published", || async {
            let (_, h) = node
                .get("/api/v1/channels/tenant:acme:broadcast/history", Some(&t))
                .await;
            (h["events"].as_array().map_or(0, |e| e.len()) == 1).then_some(h)
        }),
    )
    .await
    .expect("published at once, not after the claim idle time");
    assert_eq!(published["events"][0]["event"], "Ingested", "{published}");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("switchyard")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "acknowledged: {pending:?}"
    );
}

/// Calls of `command` Redis has served so far (`INFO commandstats`).
async fn redis_calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A publish is one round trip to Redis: the node's commands share a multiplexed connection. (A
/// connection checked out of the pool per command was checked with `UNWATCH` + `PING` each time
/// it was reused, a second round trip per publish that halved what a publisher got through.)
#[actix_web::test]
async fn a_publish_costs_redis_one_round_trip_not_a_connection_check_too() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let channel = "tenant:acme:broadcast";
    let mut on_a = a.connect(&customer("acme", "u1", None)).await;
    on_a.subscribed(channel).await;
    const PUBLISHES: u64 = 50;
    let (pings, unwatches) = (
        redis_calls(&redis, "ping").await,
        redis_calls(&redis, "unwatch").await,
    );
    for i in 0..PUBLISHES {
        let (status, ack) = a
            .publish(&service(), channel, "Tick", json!({"i": i}))
            .await;
        assert_eq!(status, 202, "{ack}");
    }
    assert_eq!(offsets(&mut on_a, PUBLISHES as usize).await.len(), 50);
    let (pings, unwatches) = (
        redis_calls(&redis, "ping").await - pings,
        redis_calls(&redis, "unwatch").await - unwatches,
    );
    // Heartbeats and the bridge's own checks may ping now and then, never once per publish.
    assert!(
        pings < PUBLISHES / 5 && unwatches < PUBLISHES / 5,
        "{PUBLISHES} publishes cost {pings} PINGs and {unwatches} UNWATCHes besides"
    );
}

/// A back end publishes pipelined on `/ws` of node a (publishes to different channels in flight
/// together): every publish is answered once, in request order, a `ping` after them is answered
/// after them, and subscribers on node b get each channel's events in the order they were sent.
#[actix_web::test]
async fn pipelined_publishes_are_answered_in_order_and_delivered_in_order_on_another_node() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let channels = [
        "tenant:acme:order:p1",
        "tenant:acme:order:p2",
        "tenant:acme:order:p3",
    ];
    let mut subs = b.subscriber_per_channel(&channels).await;
    let mut publisher = a.connect(&service()).await;
    const PUBLISHES: u64 = 30;
    for i in 0..PUBLISHES {
        let channel = channels[(i % 3) as usize];
        publisher
            .send_json(json!({"type":"publish","id":i,"data":{"channel":channel,"event":"Step","data":{"i":i}}}))
            .await;
    }
    publisher
        .send_json(json!({"type":"ping","id":"after"}))
        .await;
    let mut offsets: Vec<Vec<u64>> = vec![Vec::new(); 3];
    for i in 0..PUBLISHES {
        let ack = publisher.recv().await;
        assert_eq!(
            (ack["type"].as_str(), ack["id"].as_u64()),
            (Some("published"), Some(i)),
            "{ack}"
        );
        offsets[(i % 3) as usize].push(ack["data"]["offset"].as_u64().unwrap());
    }
    let pong = publisher.recv().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_str()),
        (Some("pong"), Some("after")),
        "{pong}"
    );
    for (c, ws) in subs.iter_mut().enumerate() {
        assert!(
            offsets[c].windows(2).all(|w| w[0] < w[1]),
            "{:?}",
            offsets[c]
        );
        let got: Vec<u64> = ws
            .notifications(offsets[c].len())
            .await
            .iter()
            .map(|n| n["data"]["i"].as_u64().unwrap())
            .collect();
        let sent: Vec<u64> = (0..PUBLISHES).filter(|i| i % 3 == c as u64).collect();
        assert_eq!(got, sent, "channel {}", channels[c]);
    }
}

/// With `redis.replica_acks` on one Redis, a publish's `WAIT` for replicas does not hold up the
/// node's other Redis commands: a subscribe (its position script) is answered while the publish
/// still waits. (Redis runs one client's commands in order, so a `WAIT` on the shared command
/// connection held every other command until the replicas answered or the wait timed out.)
#[actix_web::test]
async fn a_publish_waiting_for_replicas_does_not_hold_up_other_commands() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    // No replica: every WAIT runs to its timeout and the publish is refused then.
    let a = spawn_cluster_node(&redis.url(), &prefix, |s| {
        s.redis.replica_acks = 1;
        s.redis.replica_ack_timeout_ms = 3000;
        s.redis.publish_retry_attempts = 1;
    })
    .await;
    let mut ws = a.connect(&customer("acme", "u1", None)).await;
    let publisher = service();
    let publish = a.publish(&publisher, "tenant:acme:broadcast", "Tick", json!(1));
    tokio::pin!(publish);
    // Let the publish reach Redis first.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut publish).await;
    assert!(early.is_err(), "the publish waits for a replica: {early:?}");
    tokio::select! {
        reply = ws.subscribe("tenant:acme:order:o1") => {
            assert_eq!(reply["type"], "subscribed", "{reply}");
        }
        (status, body) = &mut publish => {
            panic!("the subscribe waited behind the publish's WAIT ({status} {body})");
        }
    }
    let (status, body) = publish.await;
    assert_eq!(status, 503, "not replicated: {body}");
}
