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
