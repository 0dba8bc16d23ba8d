//! Redis restarting empty (no persistence) under traffic, on two nodes: every publish answered 202
//! reaches every subscriber exactly once, in order, and the new epoch is replayed from its first
//! offset, never skipped; a subscriber served locally while Redis was down gets what Redis accepts
//! once it is back. A publish Redis executed but whose reply was lost (answered 503 and delivered
//! locally) is not delivered a second time when the Redis copy comes back.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard::settings::Settings;

use crate::helpers::*;
use crate::redis_server::RedisServer;
use crate::tcp_proxy::Proxy;

/// The bridges retry this slowly, so Redis is back (and accepting publishes) well before they
/// resubscribe: the second of the finding, stretched so it happens on every run.
const BRIDGE_RETRY_MS: u64 = 1000;
/// Publishing rate of the finding: 10/s.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
const PUBLISH_FOR: Duration = Duration::from_millis(5000);
const BEFORE_KILL: Duration = Duration::from_millis(1000);
const REDIS_DOWN_FOR: Duration = Duration::from_millis(1500);

async fn node(redis: &RedisServer, prefix: &str) -> TestApp {
    spawn_cluster_node(&redis.url(), prefix, |s| {
        s.redis.reconnect_min_ms = BRIDGE_RETRY_MS;
        s.redis.reconnect_max_ms = BRIDGE_RETRY_MS;
    })
    .await
}

/// One event as a publisher was told or a subscriber saw it: (i, offset, epoch).
type Seen = (u64, u64, String);

fn seen(v: &Value) -> Seen {
    (
        v["data"]["i"].as_u64().unwrap_or(u64::MAX),
        v["offset"].as_u64().unwrap(),
        v["epoch"].as_str().unwrap().to_owned(),
    )
}

/// Reads notifications until the `Done` event; returns what came before it.
async fn collect_until_done(ws: &mut WsClient) -> Vec<Seen> {
    let mut out = Vec::new();
    loop {
        let v = ws.recv_event().await;
        assert_eq!(v["type"], "notification", "{v}");
        if v["data"]["event"] == "Done" {
            return out;
        }
        out.push(seen(&v["data"]));
    }
}

/// The epochs of `events`, in the order they first appear.
fn epochs(events: &[Seen]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, _, epoch) in events {
        if out.last() != Some(epoch) {
            out.push(epoch.clone());
        }
    }
    out
}

#[actix_web::test]
async fn accepted_publishes_survive_redis_restarting_empty() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = node(&redis, &prefix).await;
    let b = node(&redis, &prefix).await;
    let channel = "tenant:acme:broadcast";
    let mut on_a = a.connect(&customer("acme", "u1", None)).await;
    let mut on_b = b.connect(&customer("acme", "u2", None)).await;
    on_a.subscribed(channel).await;
    on_b.subscribed(channel).await;

    let publisher = async {
        let mut accepted: Vec<Seen> = Vec::new();
        let mut refused = Vec::new();
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now();
        let mut i = 0u64;
        while start.elapsed() < PUBLISH_FOR {
            tick.tick().await;
            let node = if i % 2 == 0 { &a } else { &b };
            let (status, ack) = node
                .publish(&service(), channel, "Tick", json!({"i": i}))
                .await;
            match status {
                202 => accepted.push((
                    i,
                    ack["offset"].as_u64().unwrap(),
                    ack["epoch"].as_str().unwrap().to_owned(),
                )),
                // Redis down: refused, delivered to the publishing node's subscribers only.
                503 => refused.push(i),
                other => panic!("publish {i}: {other} {ack}"),
            }
            i += 1;
        }
        let (status, ack) = a.publish(&service(), channel, "Done", json!(null)).await;
        assert_eq!(status, 202, "{ack}");
        (accepted, refused)
    };
    let outage = async {
        tokio::time::sleep(BEFORE_KILL).await;
        redis.kill().await;
        tokio::time::sleep(REDIS_DOWN_FOR).await;
        redis.restart().await;
    };
    let ((accepted, refused), (), got_a, got_b) = tokio::join!(
        publisher,
        outage,
        collect_until_done(&mut on_a),
        collect_until_done(&mut on_b)
    );

    let redis_epochs = epochs(&accepted);
    assert_eq!(
        redis_epochs.len(),
        2,
        "Redis restarted empty, so publishes got a new epoch: {accepted:?}"
    );
    let first_of_new = accepted
        .iter()
        .find(|(_, _, e)| *e == redis_epochs[1])
        .unwrap();
    assert_eq!(first_of_new.1, 1, "a new epoch starts at offset 1");
    for (who, got) in [("on a", got_a), ("on b", got_b)] {
        // A refused publish reached the publishing node's subscribers (under its local epoch), or
        // even everyone if Redis took it just before dying: the publisher was told it failed.
        let got: Vec<Seen> = got
            .into_iter()
            .filter(|(i, _, _)| !refused.contains(i))
            .collect();
        assert_eq!(
            got, accepted,
            "subscriber {who}: every accepted publish exactly once, in order per epoch"
        );
        assert_eq!(
            epochs(&got),
            redis_epochs,
            "subscriber {who} saw the epoch change"
        );
    }
}

#[actix_web::test]
async fn a_subscriber_served_locally_while_redis_is_down_gets_what_redis_accepts_once_back() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = node(&redis, &prefix).await;
    let b = node(&redis, &prefix).await;
    let channel = "tenant:acme:order:o1";

    redis.kill().await;
    eventually("node b to see Redis down", || async {
        let (status, _) = b.get("/health/ready", None).await;
        (status == 503).then_some(())
    })
    .await;
    let mut on_b = b.connect(&customer("acme", "u1", None)).await;
    let local = on_b.subscribed(channel).await;
    let local_epoch = local["data"]["epoch"].as_str().unwrap().to_owned();

    // Redis returns empty; node a publishes before node b's bridge is back.
    redis.restart().await;
    let mut acks = Vec::new();
    for n in 1..=2 {
        let (status, ack) = a
            .publish(&service(), channel, "Tick", json!({"i": n}))
            .await;
        assert_eq!(status, 202, "{ack}");
        acks.push((
            n,
            ack["offset"].as_u64().unwrap(),
            ack["epoch"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(acks[0].1, 1);

    // Published after the subscribe completed, so it must arrive: from the first offset on.
    let got: Vec<Seen> = on_b.notifications(2).await.iter().map(seen).collect();
    assert_eq!(
        got, acks,
        "subscribed while Redis was down (local epoch {local_epoch})"
    );
    assert_ne!(got[0].2, local_epoch, "the epoch change shows");
    let (status, _) = a.publish(&service(), channel, "Done", json!(null)).await;
    assert_eq!(status, 202);
    assert_eq!(
        on_b.recv_event().await["data"]["event"],
        "Done",
        "nothing twice"
    );
}

const PROXIED_CHANNEL: &str = "tenant:acme:broadcast";

/// Node a reaching Redis through `proxy` (its settings changed by `tweak`), node b reaching it
/// directly, a subscriber to [`PROXIED_CHANNEL`] on b (and on a when `on_a`), and a first event
/// (`Tick {"i": 1}`) published through a and accepted, so a's Redis connections are up before a
/// test mutes the proxy.
struct ProxiedPair {
    _redis: RedisServer,
    proxy: Proxy,
    a: TestApp,
    b: TestApp,
    on_a: Option<WsClient>,
    on_b: WsClient,
}

async fn proxied_pair(tweak: impl FnOnce(&mut Settings), on_a: bool) -> ProxiedPair {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.port).await;
    let prefix = unique_prefix();
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let a = spawn_cluster_node(&via_proxy, &prefix, tweak).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let on_a = match on_a {
        true => {
            let mut ws = a.connect(&customer("acme", "u1", None)).await;
            ws.subscribed(PROXIED_CHANNEL).await;
            Some(ws)
        }
        false => None,
    };
    let mut on_b = b.connect(&customer("acme", "u2", None)).await;
    on_b.subscribed(PROXIED_CHANNEL).await;
    let (status, ack) = a
        .publish(&service(), PROXIED_CHANNEL, "Tick", json!({"i": 1}))
        .await;
    assert_eq!(status, 202, "{ack}");
    ProxiedPair {
        _redis: redis,
        proxy,
        a,
        b,
        on_a,
        on_b,
    }
}

/// The 10-minute chaos run's one duplicate (issue 14): Redis killed just after it ran a publish,
/// before the node read the reply. The node answers 503 and delivers the event to its own
/// subscribers under its local epoch; once Redis is back, the bridge catches up and relays Redis'
/// copy of the same event. Reproduced deterministically by muting the node's Redis connections
/// as the publish script passes: it reaches Redis and runs, its reply and every later one are lost.
#[actix_web::test]
async fn a_publish_redis_ran_but_whose_reply_was_lost_is_delivered_once() {
    let ProxiedPair {
        _redis,
        proxy,
        a,
        b: _b,
        on_a,
        mut on_b,
    } = proxied_pair(|_| {}, true).await;
    let mut on_a = on_a.expect("subscribed on a");
    let channel = PROXIED_CHANNEL;
    // Only the publish carries this payload (presence scripts run on the same connections).
    proxy.mute_after(b"reply-lost");
    let (status, refused) = a
        .publish(
            &service(),
            channel,
            "Tick",
            json!({"i": 2, "tag": "reply-lost"}),
        )
        .await;
    assert_eq!(status, 503, "no reply reached node a: {refused}");
    // Redis ran it all the same: node b (not behind the proxy) relays it.
    proxy.mute(false);
    proxy.sever();

    eventually("node a to reach Redis again", || async {
        let (status, _) = a.get("/health/ready", None).await;
        (status == 200).then_some(())
    })
    .await;
    let (status, ack) = a.publish(&service(), channel, "Done", json!(null)).await;
    assert_eq!(status, 202, "{ack}");

    for (who, ws) in [("on a", &mut on_a), ("on b", &mut on_b)] {
        let got: Vec<u64> = collect_until_done(ws).await.iter().map(|s| s.0).collect();
        assert_eq!(
            got,
            vec![1, 2],
            "subscriber {who}: each event once, in order"
        );
    }
}

/// A publish whose first attempt ran in Redis but lost its reply, and whose retry (same event id)
/// then reached Redis: the retry finds the event already published and must acknowledge the
/// offset and epoch subscribers got it at. (It answered offset 0, seen in the Redis Cluster
/// failover test: the retry reached the promoted replica, which had the first attempt's mark.)
#[actix_web::test]
async fn a_retried_publish_that_had_already_run_is_acknowledged_with_its_real_offset() {
    let ProxiedPair {
        _redis,
        proxy,
        a,
        b,
        mut on_b,
        ..
    } = proxied_pair(
        |s| {
            // The first attempt gives up soon; the retry comes after the proxy is mended.
            s.redis.command_timeout_ms = 1000;
            s.redis.publish_retry_attempts = 4;
            s.redis.publish_retry_delay_ms = 500;
        },
        false,
    )
    .await;
    let channel = PROXIED_CHANNEL;
    // Only the publish carries this payload (presence scripts run on the same connections).
    proxy.mute_after(b"reply-lost");
    let mend = async {
        eventually("the publish to pass the proxy", || async {
            proxy.is_muted().then_some(())
        })
        .await;
        // Its reply is thrown away; then the connection drops and later attempts get through.
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.mute(false);
        proxy.sever();
    };
    let publisher = service();
    let publish = a.publish(
        &publisher,
        channel,
        "Tick",
        json!({"i": 2, "tag": "reply-lost"}),
    );
    let ((status, ack), ()) = tokio::join!(publish, mend);
    assert_eq!(status, 202, "a retry got through: {ack}");

    let (status, done) = b.publish(&service(), channel, "Done", json!(null)).await;
    assert_eq!(status, 202, "{done}");
    let got = collect_until_done(&mut on_b).await;
    assert_eq!(
        got.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2],
        "each event once, in order"
    );
    assert_eq!(
        (ack["offset"].as_u64(), ack["epoch"].as_str()),
        (Some(got[1].1), Some(got[1].2.as_str())),
        "the retry's acknowledgement names the event subscribers got: {ack}"
    );
}

/// A Redis reply slower than the `redis` crate's own default (500 ms) but within
/// `redis.command_timeout` is waited for: the shared command connection on one Redis was made by
/// the pool with that default, so every command was cut at 500 ms whatever the setting said.
/// Redis is held with `CLIENT PAUSE` for 1 s while a presence read is in flight.
#[actix_web::test]
async fn a_redis_reply_within_the_command_timeout_is_waited_for() {
    let redis = RedisServer::start().await;
    let a = spawn_cluster_node(&redis.url(), &unique_prefix(), |s| {
        s.redis.command_timeout_ms = 3000;
    })
    .await;
    let _u1 = a.connect(&customer("acme", "u1", None)).await;
    let t = token(&admin("acme"));
    let presence = "/api/v1/tenants/acme/presence";
    eventually("u1 in presence", || async {
        let (status, p) = a.get(presence, Some(&t)).await;
        (status == 200 && p["connections"] == 1).then_some(())
    })
    .await;
    let paused =
        crate::redis_cluster_server::cli(redis.port, &["CLIENT", "PAUSE", "1000", "ALL"]).await;
    assert_eq!(paused.as_deref(), Some("OK"));
    let (status, p) = a.get(presence, Some(&t)).await;
    assert_eq!(status, 200, "answered once Redis was back: {p}");
    assert_eq!(p["connections"], 1, "{p}");
}
