//! Cross-tenant isolation: nothing of tenant A ever reaches tenant B.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn nothing_of_one_tenant_reaches_another() {
    let app = spawn_app().await;
    // Tenant B's admin and customer hold every channel they may hold.
    let mut b_admin = app.connect(&admin("b")).await;
    for c in [
        "tenant:b:broadcast",
        "tenant:b:admins",
        "tenant:b:admins:orders",
        "tenant:b:admins:sessions",
        "tenant:b:order:o1",
        "user:admin-b",
    ] {
        b_admin.subscribed(c).await;
    }
    // B's admin sees the customer arrive (its own tenant's presence) before anything else.
    let mut b_cust = app.connect(&customer("b", "c1", Some("s1"))).await;
    let online = b_admin.recv().await;
    assert_eq!(online["data"]["event"], "UserOnline", "{online}");
    assert_eq!(online["data"]["data"]["tenantKey"], "b");
    for c in [
        "tenant:b:broadcast",
        "tenant:b:customer:c1",
        "tenant:b:order:o1",
        "session:s1",
        "user:c1",
        "tenant:b:user:c1",
    ] {
        b_cust.subscribed(c).await;
    }
    // Every attempt to reach A's channels from B is refused.
    for c in [
        "tenant:a:broadcast",
        "tenant:a:admins",
        "tenant:a:customer:c1",
        "tenant:a:order:o1",
        "tenant:a:user:c1",
    ] {
        assert_eq!(
            b_admin.subscribe(c).await["type"],
            "subscription_error",
            "{c}"
        );
        assert_eq!(
            b_cust.subscribe(c).await["type"],
            "subscription_error",
            "{c}"
        );
    }
    let (status, _) = app
        .publish(&admin("b"), "tenant:a:broadcast", "X", json!(1))
        .await;
    assert_eq!(status, 403);

    // A is busy on every channel (the same order id and user ids as B's, on purpose).
    let mut a_cust = app.connect(&customer("a", "c1", None)).await;
    a_cust.subscribed("tenant:a:order:o1").await;
    for c in [
        "tenant:a:broadcast",
        "tenant:a:admins",
        "tenant:a:admins:orders",
        "tenant:a:admins:sessions",
        "tenant:a:customer:c1",
        "tenant:a:order:o1",
        "tenant:a:user:c1",
    ] {
        for _ in 0..5 {
            let (status, _) = app
                .publish(&service(), c, "Secret", json!({"tenant": "a"}))
                .await;
            assert_eq!(status, 202);
        }
    }
    // A's own subscriber got its events, proving the traffic flowed.
    for i in 1..=5 {
        assert_eq!(a_cust.recv().await["data"]["offset"], i);
    }
    // A marker on B's channels: the first thing B sees must be the marker, never A's events.
    app.publish(
        &service(),
        "tenant:b:broadcast",
        "Marker",
        json!({"tenant": "b"}),
    )
    .await;
    for ws in [&mut b_admin, &mut b_cust] {
        loop {
            let n = ws.recv().await;
            let d = &n["data"];
            assert!(
                d["channel"].as_str().unwrap().starts_with("tenant:b:"),
                "tenant B saw {n}"
            );
            if d["event"] == "Marker" {
                assert_eq!(d["data"]["tenant"], "b");
                break;
            }
            // The only other traffic B may see is its own members' presence.
            assert_eq!(d["event"], "UserOnline", "tenant B saw {n}");
            assert_eq!(d["data"]["tenantKey"], "b");
        }
    }
}
