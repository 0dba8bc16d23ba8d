//! Every channel rule of DESIGN.md that needs no database, allowed and refused, over the wire.

use serde_json::json;

use crate::helpers::*;

/// (who, channel, allowed)
fn subscribe_table() -> Vec<(As, &'static str, bool)> {
    let cust = customer("a", "c1", Some("s1"));
    vec![
        (cust.clone(), "tenant:a:broadcast", true),
        (admin("b"), "tenant:a:broadcast", false),
        (operator(), "tenant:a:broadcast", false),
        (service(), "tenant:a:broadcast", true),
        (admin("a"), "tenant:a:admins", true),
        (staff("a"), "tenant:a:admins", true),
        (cust.clone(), "tenant:a:admins", false),
        (staff("b"), "tenant:a:admins", false),
        (admin("a"), "tenant:a:admins:orders", true),
        (cust.clone(), "tenant:a:admins:orders", false),
        (staff("a"), "tenant:a:admins:sessions", true),
        (cust.clone(), "tenant:a:admins:sessions", false),
        (cust.clone(), "tenant:a:customer:c1", true),
        (cust.clone(), "tenant:a:customer:c2", false),
        (admin("a"), "tenant:a:customer:c1", true),
        (admin("b"), "tenant:a:customer:c1", false),
        (cust.clone(), "tenant:a:order:o1", true),
        (customer("b", "c9", None), "tenant:a:order:o1", false),
        (cust.clone(), "session:s1", true),
        (cust.clone(), "session:s2", false),
        (customer("a", "c2", None), "session:s1", false),
        (admin("a"), "session:s1", false),
        (cust.clone(), "user:c1", true),
        (cust.clone(), "user:c2", false),
        (admin("a"), "global:broadcast", true),
        (cust.clone(), "global:broadcast", true),
        (operator(), "global:broadcast", true),
        (operator(), "user:c1", false),
        (cust.clone(), "tenant:a:user:c1", true),
        (cust.clone(), "tenant:a:user:c2", false),
        (customer("b", "c1", None), "tenant:a:user:c1", false),
        (admin("a"), "tenant:a:user:c1", false),
        (admin("a"), "tenant:a:user:admin-a", true),
        (operator(), "tenant:a:user:c1", false),
        (service(), "tenant:a:user:c1", true),
    ]
}

#[actix_web::test]
async fn subscribe_rules_allow_and_refuse_naming_the_rule() {
    let app = spawn_app().await;
    for (who, channel, allowed) in subscribe_table() {
        let mut ws = app.connect(&who).await;
        let reply = ws.subscribe(channel).await;
        if allowed {
            assert_eq!(reply["type"], "subscribed", "{who:?} → {channel}: {reply}");
        } else {
            assert_eq!(
                reply["type"], "subscription_error",
                "{who:?} → {channel}: {reply}"
            );
            assert_eq!(reply["data"]["code"], "forbidden");
            assert_eq!(reply["data"]["channel"], channel);
            let reason = reply["data"]["reason"].as_str().unwrap();
            assert!(reason.contains(':'), "the reason names the rule: {reason}");
        }
    }
    let refused = app
        .metric("switchyard_subscription_errors_total{code=\"forbidden\"}")
        .await;
    let expected = subscribe_table().iter().filter(|(_, _, ok)| !ok).count() as f64;
    assert_eq!(refused, expected);
}

/// `spawn_app()` runs on SQLite: conversation `1` does not exist, and entity channels need
/// Postgres, so both are refused (the store-backed rules are tested in chat.rs and change_feed.rs).
#[actix_web::test]
async fn database_checked_channels_are_refused_to_strangers_and_on_sqlite() {
    let app = spawn_app().await;
    let mut ws = app.connect(&customer("a", "c1", None)).await;
    for channel in ["conversation:1", "notifications:Team:team-1"] {
        let reply = ws.subscribe(channel).await;
        assert_eq!(reply["type"], "subscription_error", "{reply}");
        assert_eq!(reply["data"]["code"], "forbidden");
    }
}

#[actix_web::test]
async fn rest_publish_rules() {
    let app = spawn_app().await;
    let cases = [
        (service(), "tenant:a:admins", 202),
        (service(), "global:broadcast", 202),
        (service(), "session:s1", 202),
        (admin("a"), "tenant:a:broadcast", 202),
        (staff("a"), "tenant:a:broadcast", 202),
        (admin("b"), "tenant:a:broadcast", 403),
        (admin("a"), "tenant:a:admins", 403),
        (admin("a"), "global:broadcast", 403),
        (customer("a", "c1", None), "tenant:a:broadcast", 403),
        (operator(), "global:broadcast", 403),
        (service(), "tenant:a:user:c1", 202),
        (customer("a", "c1", None), "tenant:a:user:c1", 403),
        (admin("a"), "tenant:a:user:c1", 403),
    ];
    for (who, channel, expected) in cases {
        let (status, body) = app.publish(&who, channel, "E", json!({})).await;
        assert_eq!(status, expected, "{who:?} → {channel}: {body}");
        if expected == 403 {
            assert_eq!(body["code"], "forbidden");
            assert_eq!(body["status"], 403);
        }
    }
}
