//! Dining sessions over REST, on SQLite and on Postgres: open, read, list, activity, close,
//! per-tenant timeouts, and every refusal (401, 403, 400, 404, 409).

use serde_json::{json, Value};

use crate::helpers::*;

const T: &str = "/api/v1/tenants/a";

async fn session_lifecycle(db: &TestDb) {
    let app = spawn_app_with_db(db, |_| {}).await;
    let svc = token(&service());
    let adm = token(&admin("a"));

    // Open with a given id (Service) and with a generated one (Admin).
    let s1 = app.open_session("a", "s1", json!(7)).await;
    assert_eq!(s1["sessionId"], "s1");
    assert_eq!(s1["tenantKey"], "a");
    assert_eq!(s1["tableNumber"], 7);
    assert_eq!(s1["status"], "Active");
    assert_eq!(s1["hasOrders"], false);
    assert!(s1["expiresAt"].as_str().unwrap().ends_with('Z'), "{s1}");
    let (status, s2) = app
        .post_json(
            &format!("{T}/sessions"),
            Some(&adm),
            &json!({"tableNumber": "Terrace 2"}),
        )
        .await;
    assert_eq!(status, 201, "{s2}");
    assert_eq!(s2["tableNumber"], "Terrace 2");
    let s2_id = s2["sessionId"].as_str().unwrap().to_owned();
    assert!(!s2_id.is_empty());

    // Read and list.
    let (status, got) = app.get(&format!("{T}/sessions/s1"), Some(&svc)).await;
    assert_eq!(status, 200);
    assert_eq!(got["sessionId"], "s1");
    let (status, list) = app
        .get(
            &format!("{T}/sessions?status=Active"),
            Some(&token(&staff("a"))),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);

    // Activity moves the deadline and records orders.
    let (status, after) = app
        .post_json(
            &format!("{T}/sessions/s1/activity"),
            Some(&svc),
            &json!({"hasOrders": true}),
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["hasOrders"], true);
    assert!(after["lastActivityAt"].as_str() >= s1["lastActivityAt"].as_str());
    let (status, _, _) = app
        .post_raw(
            &format!("{T}/sessions/s1/activity"),
            Some(&svc),
            "application/json",
            "",
        )
        .await;
    assert_eq!(status, 200, "an empty body is plain activity");

    // Close: Closed, idempotent, then no more activity.
    let (status, closed) = app.delete(&format!("{T}/sessions/s1"), Some(&adm)).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["status"], "Closed");
    assert!(closed["closedAt"].is_string());
    let (status, _) = app.delete(&format!("{T}/sessions/s1"), Some(&adm)).await;
    assert_eq!(status, 200);
    let (status, p) = app
        .post_json(&format!("{T}/sessions/s1/activity"), Some(&svc), &json!({}))
        .await;
    assert_eq!(status, 409, "{p}");
    assert_eq!(p["code"], "conflict");
    let (_, list) = app
        .get(&format!("{T}/sessions?status=Closed"), Some(&svc))
        .await;
    let ids: Vec<&Value> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["sessionId"])
        .collect();
    assert_eq!(ids, [&json!("s1")]);

    // The id is taken (409), another tenant cannot see it (404).
    let (status, _) = app
        .post_json(
            &format!("{T}/sessions"),
            Some(&svc),
            &json!({"tableNumber": 1, "sessionId": "s1"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, p) = app.get("/api/v1/tenants/b/sessions/s1", Some(&svc)).await;
    assert_eq!(status, 404, "{p}");
    assert_eq!(p["code"], "not_found");

    // Per-tenant timeouts: defaults, override, back to defaults.
    let (status, t) = app.get(T, Some(&adm)).await;
    assert_eq!(status, 200);
    assert_eq!(
        t["inactiveTimeoutSecs"],
        app.settings.scheduler.inactive_timeout_secs
    );
    let (status, t) = app
        .put_json(
            T,
            Some(&adm),
            &json!({"inactiveTimeoutSecs": 600, "warnBeforeSecs": 60}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["inactiveTimeoutSecs"], 600);
    assert_eq!(t["warnBeforeSecs"], 60);
    assert_eq!(t["overrides"]["servedOrderTimeoutSecs"], Value::Null);
    let (_, s2_now) = app.get(&format!("{T}/sessions/{s2_id}"), Some(&svc)).await;
    assert_ne!(
        s2_now["expiresAt"], s2["expiresAt"],
        "active sessions are rescheduled"
    );
    let (_, t) = app.put_json(T, Some(&adm), &json!({})).await;
    assert_eq!(t["overrides"]["inactiveTimeoutSecs"], Value::Null);
    app.stop().await;
}

#[actix_web::test]
async fn session_lifecycle_on_sqlite() {
    session_lifecycle(&TestDb::sqlite()).await;
}

#[actix_web::test]
async fn session_lifecycle_on_postgres() {
    session_lifecycle(&TestDb::postgres().await).await;
}

#[actix_web::test]
async fn session_routes_refuse_bad_callers_and_bad_input() {
    let app = spawn_app().await;
    app.open_session("a", "s1", json!(1)).await;
    let svc = token(&service());

    // 401 without a token, 403 for customers, other tenants' staff and operators.
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            format!("{T}/sessions"),
            Some(json!({"tableNumber": 1})),
        ),
        ("GET", format!("{T}/sessions/s1"), None),
        ("GET", format!("{T}/sessions"), None),
        ("POST", format!("{T}/sessions/s1/activity"), Some(json!({}))),
        ("DELETE", format!("{T}/sessions/s1"), None),
        ("PUT", T.to_owned(), Some(json!({}))),
        ("GET", T.to_owned(), None),
    ];
    for (method, path, body) in &routes {
        for (who, expected) in [
            (None, 401),
            (Some(customer("a", "c1", Some("s1"))), 403),
            (Some(admin("b")), 403),
            (Some(staff("b")), 403),
            (Some(operator()), 403),
        ] {
            let t = who.as_ref().map(token);
            let (status, p) = match *method {
                "GET" => app.get(path, t.as_deref()).await,
                "DELETE" => app.delete(path, t.as_deref()).await,
                "PUT" => {
                    app.put_json(path, t.as_deref(), body.as_ref().unwrap())
                        .await
                }
                _ => {
                    app.post_json(path, t.as_deref(), body.as_ref().unwrap())
                        .await
                }
            };
            assert_eq!(status, expected, "{method} {path} as {who:?}: {p}");
        }
    }
    // The session survived every refused DELETE.
    let (_, s) = app.get(&format!("{T}/sessions/s1"), Some(&svc)).await;
    assert_eq!(s["status"], "Active");

    // 400: specific messages.
    let bad: Vec<(String, Value, &str)> = vec![
        (format!("{T}/sessions"), json!({}), "tableNumber"),
        (
            format!("{T}/sessions"),
            json!({"tableNumber": -1}),
            "tableNumber",
        ),
        (
            format!("{T}/sessions"),
            json!({"tableNumber": ""}),
            "tableNumber",
        ),
        (
            format!("{T}/sessions"),
            json!({"tableNumber": [1]}),
            "tableNumber",
        ),
        (
            format!("{T}/sessions"),
            json!({"tableNumber": 1, "sessionId": "a:b"}),
            "sessionId",
        ),
        (
            format!("{T}/sessions"),
            json!({"tableNumber": 1, "extra": true}),
            "extra",
        ),
        (
            format!("{T}/sessions/s1/activity"),
            json!({"hasOrders": "yes"}),
            "request body",
        ),
        (
            "/api/v1/tenants/a:b/sessions".to_owned(),
            json!({"tableNumber": 1}),
            "tenant",
        ),
    ];
    for (path, body, mention) in bad {
        let (status, p) = app.post_json(&path, Some(&svc), &body).await;
        assert_eq!(status, 400, "{path} {body}: {p}");
        assert_eq!(p["code"], "bad_request");
        assert!(
            p["detail"].as_str().unwrap().contains(mention),
            "{body}: {p} should mention {mention}"
        );
    }
    for body in [
        json!({"inactiveTimeoutSecs": 0}),
        json!({"warnBeforeSecs": 99999999}),
        json!({"nope": 1}),
    ] {
        let (status, p) = app.put_json(T, Some(&svc), &body).await;
        assert_eq!(status, 400, "{body}: {p}");
    }
    let (status, _) = app
        .get(&format!("{T}/sessions?status=Sleeping"), Some(&svc))
        .await;
    assert_eq!(status, 400);
    let (status, _) = app.get(&format!("{T}/sessions?limit=0"), Some(&svc)).await;
    assert_eq!(status, 400);

    // 404 for unknown sessions.
    for (status, _) in [
        app.get(&format!("{T}/sessions/nope"), Some(&svc)).await,
        app.delete(&format!("{T}/sessions/nope"), Some(&svc)).await,
        app.post_json(
            &format!("{T}/sessions/nope/activity"),
            Some(&svc),
            &json!({}),
        )
        .await,
    ] {
        assert_eq!(status, 404);
    }
}
