//! Issue 12, finding 5: "Deeply nested `data` poisons a channel". One payload validation
//! (`payload.max_depth`, `payload.max_bytes`) for every way in — REST, domain endpoints, `/ws`,
//! hub methods, the Redis ingest stream, the change feed — one error (`bad_payload`), and nothing
//! stored can make a channel's history fail.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};
use crate::redis_server::RedisServer;

/// How deep the finding's `data` was nested (deeper than serde_json's own limit of 128).
const DEEP: usize = 200;

/// `[[[…1…]]]` nested `depth` arrays deep, as JSON text (a `Value` that deep could not be parsed
/// back by the client side of these tests either).
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn bad_payload_count(kind: &str) -> String {
    format!("switchyard_bad_payloads_total{{reason=\"depth\",source=\"{kind}\"}}")
}

/// A history page read without building a `Value` tree of each event's data, so the test reads
/// exactly what the server sent even when an old stored entry is deeper than serde_json allows.
#[derive(Deserialize)]
struct RawPage {
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    offset: u64,
    event: String,
    data: Box<RawValue>,
}

/// `GET /api/v1/channels/{channel}/history`: the status, and the page when it is one.
async fn raw_history(app: &TestApp, channel: &str) -> (u16, Option<RawPage>, String) {
    let mut res = app
        .http
        .get(app.url(&format!("/api/v1/channels/{channel}/history")))
        .bearer_auth(token(&service()))
        .send()
        .await
        .expect("http request");
    let status = res.status().as_u16();
    let body = res.body().limit(8 << 20).await.expect("http body");
    let text = String::from_utf8_lossy(&body).into_owned();
    (status, serde_json::from_slice(&body).ok(), text)
}

async fn publish_text(app: &TestApp, channel: &str, data: &str) -> (u16, Value) {
    let body = format!(r#"{{"channel":"{channel}","event":"Deep","data":{data}}}"#);
    let (status, _, reply) = app
        .post_raw(
            "/api/v1/publish",
            Some(&token(&service())),
            "application/json",
            &body,
        )
        .await;
    (status, reply)
}

/// REST publish of the finding's data, then the channel's history, on `publisher`; `reader`
/// (another node in cluster mode) reads history too.
async fn deep_rest_publish_is_refused_and_history_stays_readable(
    publisher: &TestApp,
    reader: &TestApp,
) {
    let channel = "tenant:acme:broadcast";
    let (status, ok) = publisher
        .publish(&service(), channel, "Before", json!({"n": 1}))
        .await;
    assert_eq!(status, 202, "{ok}");
    let (status, problem) = publish_text(publisher, channel, &nested(DEEP)).await;
    assert_eq!(status, 400, "the finding: 202 for 200 levels: {problem}");
    assert_eq!(problem["code"], "bad_payload", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("64 levels")),
        "{problem}"
    );
    let (status, ok) = publisher
        .publish(&service(), channel, "After", json!({"n": 2}))
        .await;
    assert_eq!(status, 202, "{ok}");
    for app in [publisher, reader] {
        let (status, page, text) = raw_history(app, channel).await;
        assert_eq!(status, 200, "history of the channel still answers: {text}");
        let events: Vec<_> = page
            .unwrap()
            .events
            .iter()
            .map(|e| e.event.clone())
            .collect();
        assert_eq!(events, ["Before", "After"], "nothing deep was stored");
    }
    publisher.wait_metric(&bad_payload_count("rest"), 1.0).await;
}

#[actix_web::test]
async fn finding_5_deep_rest_publish_is_refused_and_history_stays_readable() {
    let app = spawn_app().await;
    deep_rest_publish_is_refused_and_history_stays_readable(&app, &app).await;
}

#[actix_web::test]
async fn finding_5_deep_rest_publish_is_refused_and_history_stays_readable_in_a_cluster() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    deep_rest_publish_is_refused_and_history_stays_readable(&a, &b).await;
}

#[actix_web::test]
async fn finding_5_deep_domain_event_data_is_refused_with_the_same_code() {
    let app = spawn_app().await;
    let body = format!(r#"{{"event":"Deep","data":{}}}"#, nested(DEEP));
    let (status, _, problem) = app
        .post_raw(
            "/api/v1/tenants/acme/broadcast",
            Some(&token(&service())),
            "application/json",
            &body,
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "bad_payload", "{problem}");
    let body = format!(r#"{{"orderId":"o-1","items":{}}}"#, nested(DEEP));
    let (status, _, problem) = app
        .post_raw(
            "/api/v1/tenants/acme/orders",
            Some(&token(&service())),
            "application/json",
            &body,
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "bad_payload", "{problem}");
    app.wait_metric(&bad_payload_count("domain"), 2.0).await;
}

#[actix_web::test]
async fn finding_5_deep_ws_publish_gets_bad_payload_with_its_id() {
    let app = spawn_app().await;
    let mut ws = app.connect(&service()).await;
    ws.subscribed("tenant:acme:broadcast").await;
    ws.send_text(&format!(
        r#"{{"type":"publish","id":7,"data":{{"channel":"tenant:acme:broadcast","event":"Deep","data":{}}}}}"#,
        nested(DEEP)
    ))
    .await;
    let err = ws.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["id"], 7, "the reply names the request: {err}");
    assert_eq!(
        err["data"]["code"], "bad_payload",
        "the finding: bad_json over /ws, 202 over REST: {err}"
    );
    // An invoke's arguments pass the same check.
    ws.send_text(&format!(
        r#"{{"type":"invoke","id":"inv","data":{{"method":"SendMessage","args":["c",{}]}}}}"#,
        nested(DEEP)
    ))
    .await;
    let err = ws.recv().await;
    assert_eq!(
        (&err["id"], &err["data"]["code"]),
        (&json!("inv"), &json!("bad_payload")),
        "{err}"
    );
    // Still alive; the refused events were never published.
    ws.send_json(json!({"type":"publish","id":8,"data":{"channel":"tenant:acme:broadcast","event":"Fine","data":{"a":[1]}}}))
        .await;
    let mut replies = vec![ws.recv().await, ws.recv().await];
    replies.sort_by_key(|v| v["type"].as_str().unwrap_or_default().to_owned());
    assert_eq!(replies[0]["data"]["event"], "Fine", "{replies:?}");
    assert_eq!(replies[0]["data"]["offset"], 1, "{replies:?}");
    assert_eq!(replies[1]["type"], "published", "{replies:?}");
    app.wait_metric(&bad_payload_count("native"), 2.0).await;
}

#[actix_web::test]
async fn finding_5_deep_hub_publish_gets_the_same_error() {
    let app = spawn_app().await;
    let mut hub = HubClient::start(&app, &token(&service()), HubOptions::default())
        .await
        .unwrap();
    // The real client serializes the argument itself: JSON.stringify has no depth limit.
    let mut deep = json!(1);
    for _ in 0..DEEP {
        deep = json!([deep]);
    }
    let err = hub
        .invoke("Publish", json!(["tenant:acme:broadcast", "Deep", deep]))
        .await
        .unwrap_err();
    assert!(
        err.contains("bad_payload") && err.contains("64 levels"),
        "the finding: no answer at all over SignalR: {err}"
    );
    let ack = hub
        .invoke(
            "Publish",
            json!(["tenant:acme:broadcast", "Fine", {"a": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(ack["offset"], 1, "the refused event was never published");
    app.wait_metric(&bad_payload_count("signalr"), 1.0).await;

    // MessagePack: the same answer. (The JS MessagePack encoder refuses to write more than 100
    // levels itself, so this is deeper than the limit but within what the client can send.)
    let opts = HubOptions {
        messagepack: true,
        ..HubOptions::default()
    };
    let mut hub = HubClient::start(&app, &token(&service()), opts)
        .await
        .unwrap();
    let mut deep = json!(1);
    for _ in 0..90 {
        deep = json!([deep]);
    }
    let err = hub
        .invoke("Publish", json!(["tenant:acme:broadcast", "Deep", deep]))
        .await
        .unwrap_err();
    assert!(
        err.contains("bad_payload") && err.contains("64 levels"),
        "{err}"
    );
    app.wait_metric(&bad_payload_count("signalr"), 2.0).await;
}

#[actix_web::test]
async fn finding_5_oversized_data_is_refused_with_the_same_code() {
    let app = spawn_app_with(|s| s.payload.max_bytes = 1024).await;
    let big = format!("\"{}\"", "x".repeat(2000));
    let (status, problem) = publish_text(&app, "tenant:acme:broadcast", &big).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "bad_payload", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1024 bytes")),
        "{problem}"
    );
    let mut ws = app.connect(&service()).await;
    ws.send_text(&format!(
        r#"{{"type":"publish","id":1,"data":{{"channel":"tenant:acme:broadcast","event":"Big","data":{big}}}}}"#
    ))
    .await;
    let err = ws.recv().await;
    assert_eq!(err["data"]["code"], "bad_payload", "{err}");
    let mut hub = HubClient::start(&app, &token(&service()), HubOptions::default())
        .await
        .unwrap();
    let err = hub
        .invoke(
            "Publish",
            json!(["tenant:acme:broadcast", "Big", "x".repeat(2000)]),
        )
        .await
        .unwrap_err();
    assert!(err.contains("bad_payload"), "{err}");
    let size =
        |kind: &str| format!("switchyard_bad_payloads_total{{reason=\"size\",source=\"{kind}\"}}");
    for kind in ["rest", "native", "signalr"] {
        app.wait_metric(&size(kind), 1.0).await;
    }
    // Just under the limit is fine.
    let (status, ok) = app
        .publish(
            &service(),
            "tenant:acme:broadcast",
            "Fits",
            json!("x".repeat(1000)),
        )
        .await;
    assert_eq!(status, 202, "{ok}");
}

#[actix_web::test]
async fn finding_5_deep_ingest_entry_is_refused_counted_and_later_entries_flow() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut on_b = b.connect(&service()).await;
    on_b.subscribed("tenant:acme:admins").await;
    redis.ingest_group_exists(&prefix).await;
    let deep = format!(
        r#"{{"channel":"tenant:acme:admins","event":"Deep","data":{}}}"#,
        nested(DEEP)
    );
    let fine = json!({"channel":"tenant:acme:admins","event":"Fine","data":{"n":1}}).to_string();
    for entry in [deep, fine] {
        redis.ingest(&prefix, &entry).await;
    }
    let n = on_b.recv_event().await;
    assert_eq!(
        n["data"]["event"], "Fine",
        "the deep entry was not published: {n}"
    );
    assert_eq!(n["data"]["offset"], 1, "{n}");
    wait_metric_sum(&[&a, &b], &bad_payload_count("ingest"), 1.0).await;
    eventually("the refused entry to leave the stream", || async {
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("{prefix}:ingest"))
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        (len == 0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn finding_5_poisoned_history_entries_written_before_the_fix_do_not_fail_history() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let channel = "tenant:acme:broadcast";
    let (status, first) = a
        .publish(&service(), channel, "First", json!({"n": 1}))
        .await;
    assert_eq!(status, 202, "{first}");
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    // What an old node accepted: the finding's data, stored in history as the publish script
    // stores it; and an entry no node can decode at all.
    let mut conn = redis.conn().await;
    let history = format!("{prefix}:{{{channel}}}:history");
    let deep_envelope = format!(
        r#"{{"v":1,"id":"old-deep","channel":"{channel}","event":"Deep","data":{},"ts":1,"offset":2,"epoch":"{epoch}","origin":"old-node"}}"#,
        nested(DEEP)
    );
    for (id, envelope) in [("2-0", deep_envelope.as_str()), ("3-0", "{not an envelope")] {
        let _: String = redis::cmd("XADD")
            .arg(&history)
            .arg(id)
            .arg("e")
            .arg(envelope)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:{{{channel}}}:offset"))
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, last) = b
        .publish(&service(), channel, "Last", json!({"n": 4}))
        .await;
    assert_eq!(status, 202, "{last}");
    assert_eq!(last["offset"], 4, "{last}");
    for app in [&a, &b] {
        let (status, page, text) = raw_history(app, channel).await;
        assert_eq!(
            status, 200,
            "the finding: 500 recursion limit exceeded: {text}"
        );
        let page = page.unwrap();
        let offsets: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
        assert_eq!(
            offsets,
            [1, 2, 4],
            "the undecodable entry is skipped: {text}"
        );
        assert_eq!(
            page.events[1].data.get(),
            nested(DEEP),
            "a stored payload is returned as stored"
        );
    }
    wait_metric_sum(
        &[&a, &b],
        "switchyard_history_skipped_total{reason=\"undecodable\"}",
        2.0,
    )
    .await;
    // Recovery over /ws reads the same history: the undecodable entry makes it incomplete, which
    // the client is told (its cue to refetch), and the subscription works.
    let mut ws = b.connect(&service()).await;
    ws.send_json(
        json!({"type":"subscribe","data":{"channel":channel,"since":{"offset":2,"epoch":epoch}}}),
    )
    .await;
    let sub = ws.recv().await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(
        sub["data"]["recovered"], false,
        "offset 3 cannot be replayed: {sub}"
    );
    a.publish(&service(), channel, "Live", json!({"n": 5}))
        .await;
    let n = ws.recv().await;
    assert_eq!(n["data"]["offset"], 5, "{n}");
}
