//! The Redis Cluster engine against a real Redis Cluster (six `redis-server` processes, three
//! masters with a replica each; see `redis_cluster_server.rs`): two Switchyard nodes, the client
//! on the other node from the publisher. Each test starts its own cluster and keeps it short.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard::settings::Settings;
use switchyard_actors::engine::redis::Keys;

use crate::helpers::*;
use crate::redis_cluster_server::{cli, RedisCluster};

pub const PARTITIONS: u32 = 64;
pub const INGEST_STREAMS: u32 = 4;

/// A Switchyard node on the Redis Cluster `rc`.
pub async fn node(rc: &RedisCluster, prefix: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let seeds = rc.seeds();
    spawn_cluster_node("", prefix, move |s| {
        s.redis.url = secrecy::SecretString::from(String::new());
        s.redis.cluster_nodes = seeds;
        s.redis.cluster_partitions = PARTITIONS;
        s.redis.cluster_ingest_streams = INGEST_STREAMS;
        tweak(s);
    })
    .await
}

/// The environment of a node process on the Redis Cluster `rc` with [`node`]'s layout (not the
/// defaults by chance), plus `extra`. A process, so it can really be SIGKILLed.
pub fn process_env(
    rc: &RedisCluster,
    prefix: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    [
        ("SWITCHYARD__REDIS__CLUSTER_NODES", rc.seeds()),
        ("SWITCHYARD__REDIS__PREFIX", prefix.to_owned()),
        (
            "SWITCHYARD__REDIS__CLUSTER_PARTITIONS",
            PARTITIONS.to_string(),
        ),
        (
            "SWITCHYARD__REDIS__CLUSTER_INGEST_STREAMS",
            INGEST_STREAMS.to_string(),
        ),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
    .collect()
}

/// The key layout the nodes use.
pub fn keys(prefix: &str) -> Keys {
    Keys::cluster(prefix, PARTITIONS, INGEST_STREAMS)
}

/// The slot of a channel's partition (its sharded pub/sub channel and keys).
async fn slot_of(rc: &RedisCluster, prefix: &str, channel: &str) -> u16 {
    rc.keyslot(&keys(prefix).pubsub(channel)).await
}

/// Reads notifications until one with event `until` arrives; returns the others' data.
async fn read_until(ws: &mut WsClient, until: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = ws.recv().await;
        assert_eq!(v["type"], "notification", "{v}");
        if v["data"]["event"] == until {
            return out;
        }
        out.push(v["data"].clone());
    }
}

#[actix_web::test]
async fn a_redis_cluster_carries_events_across_nodes_with_recovery_presence_and_ingest() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let b = node(&rc, &prefix, |_| {}).await;

    // Channels whose partitions sit on every master.
    let mut channels = Vec::new();
    let mut masters = BTreeSet::new();
    for i in 0.. {
        let ch = format!("tenant:acme:order:o{i}");
        let m = rc.master_of(slot_of(&rc, &prefix, &ch).await).await.port;
        if masters.insert(m) || channels.len() < 4 {
            channels.push(ch);
        }
        if masters.len() == 3 && channels.len() >= 4 {
            break;
        }
    }
    let mut on_b = b.connect(&customer("acme", "u1", None)).await;
    for ch in &channels {
        assert_eq!(on_b.subscribed(ch).await["data"]["offset"], 0);
    }
    for i in 1..=5u64 {
        for ch in &channels {
            let (status, ack) = a.publish(&service(), ch, "Tick", json!({"i": i})).await;
            assert_eq!(status, 202, "{ack}");
            assert_eq!(ack["offset"], i, "offsets are per channel, cluster-wide");
        }
    }
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..5 * channels.len() {
        let n = on_b.recv().await;
        got.entry(n["data"]["channel"].as_str().unwrap().to_owned())
            .or_default()
            .push(n["data"]["offset"].as_u64().unwrap());
    }
    for ch in &channels {
        assert_eq!(
            got[ch],
            vec![1, 2, 3, 4, 5],
            "{ch}: in order, once, across nodes"
        );
    }

    // Sharded pub/sub only, one shard channel per partition, on the masters that own them.
    let mut shard_channels = BTreeSet::new();
    for m in &masters {
        let listed = cli(*m, &["PUBSUB", "SHARDCHANNELS"])
            .await
            .unwrap_or_default();
        shard_channels.extend(listed.lines().map(str::to_owned));
        let classic = cli(*m, &["PUBSUB", "CHANNELS"]).await.unwrap_or_default();
        assert!(
            !classic.contains(&prefix),
            "no classic PUBLISH channels: {classic}"
        );
    }
    let keys = keys(&prefix);
    let expected: BTreeSet<String> = channels.iter().map(|c| keys.pubsub(c)).collect();
    assert_eq!(
        shard_channels, expected,
        "one SSUBSCRIBE per partition listened to"
    );

    // Recovery by offset, on the other node.
    let ch = &channels[0];
    let mut on_a = a.connect(&customer("acme", "kds", None)).await;
    let sub = on_a.subscribed(ch).await;
    let epoch = sub["data"]["epoch"].as_str().unwrap().to_owned();
    drop(on_a);
    for i in 6..=20 {
        b.publish(&service(), ch, "Tick", json!({"i": i})).await;
    }
    let mut on_a = a.connect(&customer("acme", "kds", None)).await;
    on_a.send_json(
        json!({"type":"subscribe","data":{"channel":ch,"since":{"offset":5,"epoch":epoch}}}),
    )
    .await;
    let sub = on_a.recv().await;
    assert_eq!(sub["data"]["recovered"], true, "{sub}");
    let replay: Vec<u64> = on_a
        .notifications(15)
        .await
        .iter()
        .map(|n| n["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(replay, (6..=20).collect::<Vec<u64>>());

    // Presence is cluster-wide.
    let _u2 = a.connect(&customer("acme", "u2", None)).await;
    let t = token(&admin("acme"));
    eventually("presence from both nodes", || async {
        let (_, p) = b.get("/api/v1/tenants/acme/presence", Some(&t)).await;
        (p["connections"].as_u64() >= Some(3)).then_some(())
    })
    .await;

    // Other processes publish through the ingest stream, on a cluster the channel's
    // `{prefix}:{i<n>}:ingest`.
    let job = json!({"channel": ch, "event": "FromJob", "data": {"k": 1}, "id": "job-1"});
    let port = rc.ports[0];
    let stream = keys.ingest(ch);
    assert!(stream.starts_with(&format!("{prefix}:{{i")), "{stream}");
    eventually("the ingest group", || async {
        cli(port, &["XINFO", "GROUPS", &stream]).await
    })
    .await;
    cli(port, &["XADD", &stream, "*", "event", &job.to_string()])
        .await
        .unwrap();
    let n = on_a.recv().await;
    assert_eq!(n["data"]["event"], "FromJob", "{n}");
    assert_eq!(n["data"]["offset"], 21);

    let (_, ready) = a.get("/health/ready", None).await;
    assert_eq!(ready["redis"]["connected"], true, "{ready}");
}

#[actix_web::test]
async fn ingest_drafts_spread_over_streams_on_several_masters_are_each_published_once() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let b = node(&rc, &prefix, |_| {}).await;
    let keys = keys(&prefix);

    // The streams are spread over the shards.
    let streams = keys.ingest_streams();
    assert_eq!(streams.len(), INGEST_STREAMS as usize);
    let mut masters = BTreeSet::new();
    for s in &streams {
        masters.insert(rc.master_of(rc.keyslot(s).await).await.port);
    }
    assert!(
        masters.len() > 1,
        "ingest streams on one master: {streams:?}"
    );

    // One channel per stream.
    let mut by_stream: HashMap<String, String> = HashMap::new();
    for i in 0.. {
        let ch = format!("tenant:acme:order:o{i}");
        by_stream.entry(keys.ingest(&ch)).or_insert(ch);
        if by_stream.len() == streams.len() {
            break;
        }
    }
    let mut on_b = b.connect(&customer("acme", "u1", None)).await;
    for ch in by_stream.values() {
        assert_eq!(on_b.subscribed(ch).await["data"]["offset"], 0);
    }
    let port = rc.ports[0];
    for s in &streams {
        eventually("the ingest group on every stream", || async {
            cli(port, &["XINFO", "GROUPS", s])
                .await
                .filter(|g| g.contains("switchyard"))
        })
        .await;
    }
    // No idempotency ids: a draft published twice would take a second offset.
    const DRAFTS: u64 = 5;
    for i in 1..=DRAFTS {
        for (stream, ch) in &by_stream {
            let job = json!({"channel": ch, "event": "FromJob", "data": {"i": i}});
            cli(port, &["XADD", stream, "*", "event", &job.to_string()])
                .await
                .unwrap();
        }
    }
    let mut got: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for _ in 0..DRAFTS as usize * by_stream.len() {
        let n = on_b.recv().await;
        assert_eq!(n["data"]["event"], "FromJob", "{n}");
        got.entry(n["data"]["channel"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                n["data"]["offset"].as_u64().unwrap(),
                n["data"]["data"]["i"].as_u64().unwrap(),
            ));
    }
    for ch in by_stream.values() {
        let expected: Vec<(u64, u64)> = (1..=DRAFTS).map(|i| (i, i)).collect();
        assert_eq!(got[ch], expected, "{ch}: every draft once, in order");
        // Nothing published twice later either: the next publish takes the next offset.
        let (status, ack) = a.publish(&service(), ch, "After", json!({})).await;
        assert_eq!((status, &ack["offset"]), (202, &json!(DRAFTS + 1)), "{ack}");
    }
    for s in &streams {
        eventually("every entry acknowledged and deleted", || async {
            (cli(port, &["XLEN", s]).await.as_deref() == Some("0")).then_some(())
        })
        .await;
    }
}

/// Publishes `Tick`s from `a` until `stop` is set, recording the accepted ones' offsets.
async fn publish_until(
    a: &TestApp,
    channel: &str,
    accepted: &Mutex<Vec<u64>>,
    count: &AtomicUsize,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (status, ack) = a
            .publish(&service(), channel, "Tick", json!({"i": i}))
            .await;
        if status == 202 {
            accepted
                .lock()
                .unwrap()
                .push(ack["offset"].as_u64().unwrap());
        }
        count.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the client on the other node received, checked against what was accepted: every
/// accepted offset arrived, in order, once.
async fn check_nothing_lost(a: &TestApp, on_b: &mut WsClient, channel: &str, accepted: Vec<u64>) {
    // Up to the last accepted publish with nothing published after it (no later event to
    // reveal a gap): what the bridge missed while it was cut off comes from history by itself.
    let last = *accepted.iter().max().expect("publishes were accepted");
    let mut got = Vec::new();
    while got
        .last()
        .is_none_or(|n: &Value| n["offset"].as_u64().unwrap() < last)
    {
        let v = on_b.recv().await;
        assert_eq!(v["type"], "notification", "{v}");
        got.push(v["data"].clone());
    }
    eventually("a publish to be accepted again", || async {
        let (status, _) = a.publish(&service(), channel, "Marker", json!(null)).await;
        (status == 202).then_some(())
    })
    .await;
    got.extend(read_until(on_b, "Marker").await);
    let offsets: Vec<u64> = got.iter().map(|n| n["offset"].as_u64().unwrap()).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate: {offsets:?}"
    );
    let epochs: BTreeSet<&str> = got.iter().map(|n| n["epoch"].as_str().unwrap()).collect();
    assert_eq!(epochs.len(), 1, "no history lost, one epoch: {epochs:?}");
    let received: BTreeSet<u64> = offsets.into_iter().collect();
    let missing: Vec<u64> = accepted
        .iter()
        .filter(|o| !received.contains(o))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but never delivered: {missing:?}"
    );
}

#[actix_web::test]
async fn a_master_killed_under_publishing_fails_over_and_no_acknowledged_publish_is_lost() {
    let mut rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    // Acknowledged only once the replica has it; retries ride out the failover.
    let tweak = |s: &mut Settings| {
        s.redis.replica_acks = 1;
        s.redis.replica_ack_timeout_ms = 500;
        s.redis.publish_retry_attempts = 6;
    };
    let a = node(&rc, &prefix, tweak).await;
    let b = node(&rc, &prefix, tweak).await;
    let channel = "tenant:acme:broadcast";
    let mut on_b = b.connect(&customer("acme", "u1", None)).await;
    on_b.subscribed(channel).await;
    let master = rc.master_of(slot_of(&rc, &prefix, channel).await).await;

    let accepted = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let chaos = async {
        while count.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rc.kill(master.port).await;
        rc.wait_ok().await; // its replica was promoted
                            // The promoted master has no replica: with replica acknowledgement, its publishes are
                            // refused until the old master is back (as its replica) and has synced.
        rc.restart_stopped().await;
        let after = count.load(Ordering::SeqCst);
        while count.load(Ordering::SeqCst) < after + 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(publish_until(&a, channel, &accepted, &count, &stop), chaos);
    let promoted = rc.master_of(slot_of(&rc, &prefix, channel).await).await;
    assert_ne!(promoted.port, master.port, "the replica took over");
    let accepted = accepted.into_inner().unwrap();
    check_nothing_lost(&a, &mut on_b, channel, accepted).await;
    for n in [&a, &b] {
        eventually("the node to be ready again", || async {
            let (status, body) = n.get("/health/ready", None).await;
            (status == 200 && body["redis"]["connected"] == true).then_some(())
        })
        .await;
    }
}

#[actix_web::test]
async fn moving_slots_while_publishing_loses_nothing() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |s| s.redis.publish_retry_attempts = 6).await;
    let b = node(&rc, &prefix, |s| s.redis.publish_retry_attempts = 6).await;
    let channel = "tenant:acme:broadcast";
    let mut on_b = b.connect(&customer("acme", "u1", None)).await;
    on_b.subscribed(channel).await;
    let slot = slot_of(&rc, &prefix, channel).await;
    let from = rc.master_of(slot).await;
    let to = rc
        .nodes()
        .await
        .into_iter()
        .find(|n| n.master && !n.slots.is_empty() && n.port != from.port)
        .unwrap();

    let accepted = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reshard = async {
        while count.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rc.move_slot(slot, to.port).await;
        let after = count.load(Ordering::SeqCst);
        while count.load(Ordering::SeqCst) < after + 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(
        publish_until(&a, channel, &accepted, &count, &stop),
        reshard
    );
    assert_eq!(rc.master_of(slot).await.port, to.port, "the slot moved");
    let accepted = accepted.into_inner().unwrap();
    check_nothing_lost(&a, &mut on_b, channel, accepted).await;
}

#[actix_web::test]
async fn the_whole_redis_cluster_down_degrades_then_resumes_by_itself() {
    let mut rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let b = node(&rc, &prefix, |_| {}).await;
    let channel = "tenant:acme:broadcast";
    let mut on_a = a.connect(&customer("acme", "u1", None)).await;
    let mut on_b = b.connect(&customer("acme", "u2", None)).await;
    on_a.subscribed(channel).await;
    on_b.subscribed(channel).await;
    a.publish(&service(), channel, "Before", json!(1)).await;
    assert_eq!(on_b.recv().await["data"]["event"], "Before");
    assert_eq!(on_a.recv().await["data"]["event"], "Before");

    rc.kill_all().await;
    let ready = eventually("readiness to report Redis down", || async {
        let (status, body) = a.get("/health/ready", None).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(ready["redis"]["connected"], false, "{ready}");
    // Refused with a clear 503 after the retries; this node's subscribers still get it.
    let (status, problem) = a.publish(&service(), channel, "During", json!(2)).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        on_a.recv().await["data"]["event"],
        "During",
        "local delivery goes on"
    );
    on_b.ping().await;

    // The cluster returns (same nodes, no data): nodes reconnect and resubscribe by themselves.
    rc.restart_stopped().await;
    for n in [&a, &b] {
        eventually("the bridge to resubscribe", || async {
            let (status, body) = n.get("/health/ready", None).await;
            (status == 200 && body["redis"]["subscribed"] == 1).then_some(())
        })
        .await;
    }
    let (status, ack) = eventually("a publish to be accepted again", || async {
        let (status, ack) = a.publish(&service(), channel, "After", json!(3)).await;
        (status == 202).then_some((status, ack))
    })
    .await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(
        on_b.recv().await["data"]["event"],
        "After",
        "cross-node delivery resumed"
    );
}

#[actix_web::test]
async fn chat_and_once_only_session_expiry_across_nodes_on_a_redis_cluster() {
    use crate::chat::{chat_client, listening, user};
    use crate::session_scheduler::{fast, wait_for_status};
    const SESSIONS: usize = 4;
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let db = TestDb::postgres().await;
    let seeds = rc.seeds();
    let tweak = |s: &mut Settings| {
        cluster_settings(s, "", &prefix);
        s.redis.url = secrecy::SecretString::from(String::new());
        s.redis.cluster_nodes = seeds.clone();
        s.redis.cluster_partitions = PARTITIONS;
        fast(s);
        s.scheduler.inactive_timeout_secs = 1;
        s.scheduler.warn_before_secs = 0;
    };
    let a = spawn_app_with_db(&db, tweak).await;
    let b = spawn_app_with_db(&db, tweak).await;

    // Chat: alice on one node, bob on the other.
    let mut alice = chat_client(&a, &user("alice")).await;
    let mut bob = chat_client(&b, &user("bob")).await;
    listening(&a, 3).await;
    listening(&b, 3).await;
    alice
        .invoke("SendMessage", json!(["bob", "Hi Bob", "Text", "tmp-1"]))
        .await
        .expect("SendMessage completes");
    let got = bob.event("ReceiveMessage").await;
    assert_eq!(got["content"], "Hi Bob");
    assert_eq!(got["senderId"], "alice");
    bob.invoke("SendMessage", json!(["alice", "Hello Alice"]))
        .await
        .unwrap();
    let reply = alice.event("ReceiveMessage").await;
    assert_eq!(reply["content"], "Hello Alice");
    assert_eq!(reply["conversationId"], got["conversationId"]);

    // The scheduler: sessions opened on both nodes expire once each, announced once, seen by
    // a watcher on one node.
    let mut watch = a.connect(&admin("t")).await;
    watch.subscribed("tenant:t:admins:sessions").await;
    for i in 0..SESSIONS {
        let node = if i % 2 == 0 { &a } else { &b };
        node.open_session("t", &format!("s{i}"), json!(i)).await;
    }
    for i in 0..SESSIONS {
        wait_for_status(&a, "t", &format!("s{i}"), "Expired").await;
    }
    // Every announcement, then a marker: anything announced twice arrives before it. (The
    // status turns Expired just before the announcement is published, so the marker goes out
    // only once all were seen.)
    let mut seen: HashMap<String, usize> = HashMap::new();
    let count = |n: &serde_json::Value, seen: &mut HashMap<String, usize>| {
        assert_eq!(n["event"], "SessionExpired", "{n}");
        *seen
            .entry(n["data"]["sessionId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    };
    while seen.len() < SESSIONS {
        let n = watch.recv_type("notification").await["data"].clone();
        count(&n, &mut seen);
    }
    let (status, _) = b
        .publish(&service(), "tenant:t:admins:sessions", "Marker", json!({}))
        .await;
    assert_eq!(status, 202);
    loop {
        let n = watch.recv_type("notification").await["data"].clone();
        if n["event"] == "Marker" {
            break;
        }
        count(&n, &mut seen);
    }
    assert_eq!(seen.len(), SESSIONS, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "once each: {seen:?}");
}

#[actix_web::test]
async fn presence_across_nodes_on_a_redis_cluster_with_one_offline_after_the_grace() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let b = node(&rc, &prefix, |_| {}).await;
    crate::cluster::presence_across_nodes(&a, &b).await;
}

#[actix_web::test]
async fn a_sigkilled_node_leaves_presence_on_a_redis_cluster() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let engine = process_env(&rc, &prefix, &[]);
    crate::cluster::sigkilled_node_leaves_presence(&a, &engine).await;
}

#[actix_web::test]
async fn graceful_shutdown_removes_presence_at_once_on_a_redis_cluster() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |s| s.presence.node_ttl_secs = 600).await;
    let b = node(&rc, &prefix, |s| s.presence.node_ttl_secs = 600).await;
    crate::cluster::graceful_shutdown_removes_presence(&a, b).await;
}

/// The masters (by port) holding keys of this test's `prefix` that match `pattern` (a glob
/// after the prefix, e.g. `*:presence:*`).
async fn masters_holding(rc: &RedisCluster, prefix: &str, pattern: &str) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for m in rc
        .nodes()
        .await
        .iter()
        .filter(|n| n.master && !n.slots.is_empty())
    {
        let found = cli(m.port, &["KEYS", &format!("*{prefix}{pattern}")])
            .await
            .unwrap_or_default();
        if found.lines().any(|k| !k.is_empty()) {
            out.insert(m.port);
        }
    }
    out
}

#[actix_web::test]
async fn presence_and_heartbeats_are_spread_over_the_masters() {
    /// Tenants whose presence partitions fall on more than one master (a fixed set: the hash
    /// and the cluster's slot ranges are deterministic); before presence was spread, all of
    /// them, and every heartbeat, were on one master.
    const TENANTS: [&str; 8] = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"];
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let b = node(&rc, &prefix, |_| {}).await;
    let mut clients = Vec::new();
    for (i, tenant) in TENANTS.into_iter().enumerate() {
        let n = if i % 2 == 0 { &a } else { &b };
        clients.push(n.connect(&customer(tenant, "u1", None)).await);
    }
    for c in &mut clients {
        c.ping().await;
    }
    eventually("every tenant's presence recorded", || async {
        let mut recorded = 0;
        for tenant in TENANTS {
            let (_, p) = a
                .get(
                    &format!("/api/v1/tenants/{tenant}/presence"),
                    Some(&token(&admin(tenant))),
                )
                .await;
            recorded += usize::from(p["connections"] == 1);
        }
        (recorded == TENANTS.len()).then_some(())
    })
    .await;
    let presence = masters_holding(&rc, &prefix, "*:presence:*:users").await;
    assert!(
        presence.len() > 1,
        "the tenants' presence keys are on more than one master: {presence:?}"
    );
    let heartbeats = masters_holding(&rc, &prefix, "*:nodes").await;
    assert!(
        heartbeats.len() > 1,
        "node heartbeats are on more than one master: {heartbeats:?}"
    );
    // The operator's tenant list gathers every partition, on either node.
    for n in [&a, &b] {
        let (status, body) = n
            .get("/api/v1/admin/tenants", Some(&token(&operator())))
            .await;
        assert_eq!(status, 200, "{body}");
        let listed: BTreeSet<&str> = body["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenantKey"].as_str().unwrap())
            .collect();
        assert_eq!(listed, BTreeSet::from(TENANTS), "{body}");
    }
}

/// Pipelined publishes go to the broker in runs (`connection/publish_lanes.rs`); on a Redis
/// Cluster a run's channels live on different masters, each channel's published one after
/// another. 200 publishes to 50 channels sent without waiting: one reply each in request order,
/// each channel's offsets in request order, every event delivered once on the other node.
#[actix_web::test]
async fn pipelined_publishes_on_a_redis_cluster_keep_each_channels_order_across_nodes() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = node(&rc, &prefix, |_| {}).await;
    let b = node(&rc, &prefix, |_| {}).await;
    crate::pipelining::pipelined_publishes_are_answered_in_order_and_delivered_once(&a, &b).await;
}
