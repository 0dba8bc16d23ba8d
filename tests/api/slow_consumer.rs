//! Slow consumers: a client that stops reading while thousands of messages flow never delays the
//! others, never grows server memory past its bound, and gets the configured policy, counted.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const CHANNEL: &str = "tenant:acme:broadcast";
/// Enough traffic to fill every kernel buffer between the server and a stalled reader.
const MESSAGES: u64 = 4000;
const PAYLOAD_BYTES: usize = 2048;
/// Far below the ~8 MB that flows (so the stalled client must hit it), but with headroom for
/// healthy readers on a loaded machine running a debug build.
const MAX_QUEUED_BYTES: usize = 512 * 1024;

/// Reads `n` notifications and returns their offsets.
async fn read_offsets(mut ws: WsClient, n: u64) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(n as usize);
    while (offsets.len() as u64) < n {
        let v = ws.recv().await;
        assert_eq!(v["type"], "notification");
        offsets.push(v["data"]["offset"].as_u64().unwrap());
    }
    offsets
}

async fn slow_consumer_run(policy: &'static str) -> (TestApp, WsClient) {
    let app = spawn_app_with(|s| {
        s.actors.session.mailbox = 512;
        s.actors.session.max_queued_bytes = MAX_QUEUED_BYTES;
        s.actors.session.policy = policy.parse_policy();
    })
    .await;
    let mut slow = stalled_client(&app, &customer("acme", "slow", None)).await;
    slow.subscribed(CHANNEL).await;
    let mut readers = Vec::new();
    for i in 0..3 {
        let mut ws = app
            .connect(&customer("acme", &format!("fast{i}"), None))
            .await;
        ws.subscribed(CHANNEL).await;
        readers.push(actix_web::rt::spawn(read_offsets(ws, MESSAGES)));
    }
    publish_many(&app, CHANNEL, MESSAGES, PAYLOAD_BYTES).await;
    // Every fast reader got every message, in order, while the slow one read nothing.
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    for r in readers {
        let offsets = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(offsets, expected);
    }
    let peak = app.metric("switchyard_session_queued_bytes_peak").await as usize;
    assert!(
        peak <= MAX_QUEUED_BYTES + PAYLOAD_BYTES + 512,
        "a session's queue stayed within its byte bound (peak {peak})"
    );
    assert!(
        app.metric("switchyard_mailbox_full_total{actor=\"session\"}")
            .await
            >= 1.0
    );
    (app, slow)
}

trait ParsePolicy {
    fn parse_policy(self) -> switchyard_actors::mailbox::SlowConsumerPolicy;
}
impl ParsePolicy for &str {
    fn parse_policy(self) -> switchyard_actors::mailbox::SlowConsumerPolicy {
        serde_json::from_value(json!(self)).unwrap()
    }
}

#[actix_web::test]
async fn disconnect_policy_closes_the_slow_consumer_with_4000() {
    let (app, mut slow) = slow_consumer_run("disconnect").await;
    assert_eq!(slow.closed().await, 4000);
    assert_eq!(
        app.metric("switchyard_slow_consumer_disconnects_total")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("switchyard_disconnects_total{reason=\"slow_consumer\"}")
            .await,
        1.0
    );
}

#[actix_web::test]
async fn drop_policy_skips_messages_and_keeps_the_connection() {
    let (app, mut slow) = slow_consumer_run("drop").await;
    assert!(
        app.metric("switchyard_dropped_total{reason=\"slow_consumer\"}")
            .await
            >= 1.0
    );
    // Once it reads again it gets what was queued for it, then new events: in order, with a
    // gap where messages were dropped (its cue to recover). Read up to a marker published now.
    app.publish(&service(), CHANNEL, "Tick", json!({"after": true}))
        .await;
    let marker = MESSAGES + 1;
    let mut offsets = Vec::new();
    while offsets.last() != Some(&marker) {
        let v = slow.recv().await;
        offsets.push(v["data"]["offset"].as_u64().unwrap());
    }
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets only increase"
    );
    assert!(
        (offsets.len() as u64) < marker,
        "some messages were dropped for it"
    );
    assert!(
        offsets.windows(2).any(|w| w[1] > w[0] + 1),
        "the gap is visible"
    );
    slow.ping().await;
    assert_eq!(
        app.metric("switchyard_slow_consumer_disconnects_total")
            .await,
        0.0
    );
}
