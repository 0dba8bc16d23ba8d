//! Tokens at the upgrade and on the REST API: missing, forged, expired → 401 problem JSON.

use serde_json::{json, Value};

use crate::helpers::*;

fn problem(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("problem JSON expected, got {body:?}"))
}

#[actix_web::test]
async fn bad_tokens_are_refused_at_the_upgrade_with_401_problem_json() {
    let app = spawn_app().await;
    let forged = {
        let t = token(&admin("acme"));
        let mut parts: Vec<&str> = t.split('.').collect();
        let claims = base64_url(
            &json!({"sub":"x","tenantKey":"acme","role":"Service","exp":9999999999u64}).to_string(),
        );
        parts[1] = &claims;
        parts.join(".")
    };
    let cases = [
        ("", "token_missing"),
        ("garbage", "token_invalid"),
        (forged.as_str(), "token_invalid"),
        (&token_with_ttl(&admin("acme"), -300), "token_expired"),
    ];
    for (t, code) in cases {
        let (status, body) = app.connect_token(t).await.err().expect("refused");
        assert_eq!(status, 401);
        let p = problem(&body);
        assert_eq!(p["status"], 401);
        assert_eq!(p["code"], code, "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert!(
        app.metric("switchyard_auth_failures_total{reason=\"expired\"}")
            .await
            >= 1.0
    );
    assert!(
        app.metric("switchyard_auth_failures_total{reason=\"missing\"}")
            .await
            >= 1.0
    );
    assert!(
        app.metric("switchyard_auth_failures_total{reason=\"bad_signature\"}")
            .await
            >= 1.0
    );
}

fn base64_url(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[actix_web::test]
async fn the_authorization_header_works_for_websockets_too() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&admin("acme"))).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade with header");
    let mut ws = WsClient { ws };
    ws.subscribed("tenant:acme:admins").await;
}

#[actix_web::test]
async fn rest_refuses_missing_and_bad_tokens() {
    let app = spawn_app().await;
    let body = json!({"channel":"global:broadcast","event":"E","data":{}});
    let (status, p) = app.post_json("/api/v1/publish", None, &body).await;
    assert_eq!((status, p["code"].as_str()), (401, Some("token_missing")));
    let (status, p) = app.post_json("/api/v1/publish", Some("nope"), &body).await;
    assert_eq!((status, p["code"].as_str()), (401, Some("token_invalid")));
    let expired = token_with_ttl(&service(), -300);
    let (status, p) = app
        .post_json("/api/v1/publish", Some(&expired), &body)
        .await;
    assert_eq!((status, p["code"].as_str()), (401, Some("token_expired")));
}

#[actix_web::test]
async fn rs256_tokens_verify_with_the_configured_public_key() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let app = spawn_app_with(|s| {
        s.auth.jwt_public_key_file = fixtures.join("rs256-public.pem").display().to_string();
    })
    .await;
    let private = std::fs::read(fixtures.join("rs256-private.pem")).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub":"u1","tenantKey":"acme","role":"Admin","exp":now+60});
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let mut ws = app.connect_token(&rs).await.expect("RS256 token accepted");
    ws.subscribed("tenant:acme:admins").await;
    // The algorithm is pinned: an HS256 token is refused even if its claims are fine.
    let (status, _) = app
        .connect_token(&token(&admin("acme")))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
}

/// Issue 15, item 4: seed 004's SDK connects with `?token=<jwt>`; it is taken like `access_token`.
#[actix_web::test]
async fn a_token_query_parameter_works_like_access_token() {
    let app = spawn_app().await;
    let url = app.ws_url(&format!("/ws?token={}", token(&admin("acme"))));
    let mut ws = WsClient::open(url).await.expect("?token= is accepted");
    ws.subscribed("tenant:acme:broadcast").await;
    let url = app.ws_url("/ws?token=not-a-jwt");
    let (status, body) = WsClient::open(url)
        .await
        .err()
        .expect("a bad one is refused");
    assert_eq!(status, 401);
    assert_eq!(problem(&body)["code"], "token_invalid");
}
