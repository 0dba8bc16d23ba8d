//! The REST API's answers to bad input: 400 problem JSON naming what is wrong, counted.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn bad_publish_bodies_get_400_problem_json() {
    let app = spawn_app().await;
    let t = token(&service());
    let cases = [
        ("application/json", "{not json", "request body"),
        (
            "application/json",
            r#"{"channel":"global:broadcast","event":"E"}"#,
            "data",
        ),
        (
            "application/json",
            r#"{"channel":"nope","event":"E","data":1}"#,
            "channel",
        ),
        (
            "application/json",
            r#"{"channel":"tenant::broadcast","event":"E","data":1}"#,
            "channel",
        ),
        (
            "application/json",
            r#"{"channel":"global:broadcast","event":"has space","data":1}"#,
            "event",
        ),
        (
            "application/json",
            r#"{"channel":"global:broadcast","event":"E","data":1,"extra":true}"#,
            "extra",
        ),
        (
            "text/plain",
            r#"{"channel":"global:broadcast","event":"E","data":1}"#,
            "request body",
        ),
    ];
    for (ct, body, mention) in cases {
        let (status, content_type, p) = app.post_raw("/api/v1/publish", Some(&t), ct, body).await;
        assert_eq!(status, 400, "{body}: {p}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(p["code"], "bad_request");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(mention),
            "{body}: detail {detail:?} should mention {mention}"
        );
    }
    assert!(
        app.metric("switchyard_http_errors_total{status=\"400\"}")
            .await
            >= 7.0
    );
    // Nothing was published by any of them.
    assert_eq!(
        app.metric("switchyard_published_total{source=\"rest\"}")
            .await,
        0.0
    );
}

#[actix_web::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1024).await;
    let data = "x".repeat(2000);
    let (status, p) = app
        .publish(&service(), "global:broadcast", "E", json!(data))
        .await;
    assert_eq!(status, 400, "{p}");
}

#[actix_web::test]
async fn unknown_routes_are_404_problem_json() {
    let app = spawn_app().await;
    let (status, p) = app.get("/api/v1/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(p["code"], "not_found");
}

/// Issue 16: `POST /api/v1/publish/batch` publishes many events in one request, in order, with a
/// result per event; a refused event (bad name, forbidden channel, bad payload) gets the single
/// publish's problem document and does not stop the rest. In cluster mode the subscriber is on the
/// other node.
#[actix_web::test]
async fn a_batch_publishes_each_event_in_order_with_a_result_each_across_nodes() {
    let redis = crate::redis_server::RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut sub = b.connect(&customer("acme", "c1", None)).await;
    sub.subscribed("tenant:acme:broadcast").await;
    let deep = (0..100).fold(json!(1), |v, _| json!([v]));
    let batch = json!({"events": [
        {"channel": "tenant:acme:broadcast", "event": "First", "data": {"n": 1}},
        {"channel": "tenant:acme:broadcast", "event": "has space", "data": {"n": 2}},
        {"channel": "tenant:acme:broadcast", "event": "Deep", "data": deep},
        {"channel": "tenant:acme:broadcast", "event": "Second", "data": {"n": 3}},
    ]});
    // A customer may not publish to the broadcast channel: every event refused alike.
    let (status, refused) = a
        .post_json(
            "/api/v1/publish/batch",
            Some(&token(&customer("acme", "c2", None))),
            &json!({"events": [batch["events"][0].clone()]}),
        )
        .await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["results"][0]["status"], 403, "{refused}");
    assert_eq!(refused["results"][0]["code"], "forbidden", "{refused}");

    let (status, body) = a
        .post_json("/api/v1/publish/batch", Some(&token(&service())), &batch)
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("a result per event");
    let statuses: Vec<_> = results.iter().map(|r| r["status"].as_u64()).collect();
    assert_eq!(
        statuses,
        [Some(202), Some(400), Some(400), Some(202)],
        "{body}"
    );
    assert_eq!(results[1]["code"], "bad_request", "{body}");
    assert_eq!(results[2]["code"], "bad_payload", "{body}");
    assert!(results[3]["offset"].as_u64() > results[0]["offset"].as_u64());
    for (expected, result) in [("First", &results[0]), ("Second", &results[3])] {
        let n = sub.recv_type("notification").await;
        assert_eq!(n["data"]["event"], expected, "{n}");
        assert_eq!(n["data"]["id"], result["id"], "{n}");
    }

    // Empty and oversized batches are refused as a whole.
    let (status, p) = a
        .post_json(
            "/api/v1/publish/batch",
            Some(&token(&service())),
            &json!({"events": []}),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (400, Some("bad_request")),
        "{p}"
    );
    let most = a.settings.publish.max_batch_events;
    let too_many: Vec<_> = (0..=most)
        .map(|n| json!({"channel": "tenant:acme:broadcast", "event": "E", "data": n}))
        .collect();
    let (status, p) = a.publish_batch(&too_many).await;
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("max_batch_events"),
        "{p}"
    );
}

/// A batch publishes different channels' events at once, but each channel's in the batch's order,
/// and the results keep the batch's order.
#[actix_web::test]
async fn a_batch_keeps_each_channels_order_and_the_results_order() {
    let app = spawn_app().await;
    let channels = [
        "tenant:acme:order:o1",
        "tenant:acme:order:o2",
        "tenant:acme:order:o3",
    ];
    let mut subs = app.subscriber_per_channel(&channels).await;
    const EVENTS: usize = 30;
    let events: Vec<_> = (0..EVENTS)
        .map(|i| json!({"channel": channels[i % 3], "event": "Step", "data": {"i": i}}))
        .collect();
    let (status, body) = app.publish_batch(&events).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("a result per event");
    assert_eq!(results.len(), EVENTS);
    for (c, ws) in subs.iter_mut().enumerate() {
        // This channel's events, in the batch's order: results in that order carry rising
        // offsets, and the subscriber gets them in that order.
        let mine: Vec<usize> = (0..EVENTS).filter(|i| i % 3 == c).collect();
        let offsets: Vec<u64> = mine
            .iter()
            .map(|&i| {
                assert_eq!(results[i]["status"], 202, "{}", results[i]);
                results[i]["offset"].as_u64().unwrap()
            })
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        for &i in &mine {
            let n = ws.recv_type("notification").await;
            assert_eq!(n["data"]["data"]["i"], i, "{n}");
            assert_eq!(n["data"]["id"], results[i]["id"], "{n}");
        }
    }
}
