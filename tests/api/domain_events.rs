//! The typed domain notification endpoints: each one's events on each channel, and every
//! refusal (401, 403, 400, 404, 409).

use serde_json::{json, Value};

use crate::helpers::*;

const T: &str = "/api/v1/tenants/a";

/// (channel, event) of each notification, in arrival order.
fn seen(ns: &[Value]) -> Vec<(String, String)> {
    ns.iter()
        .map(|n| {
            (
                n["channel"].as_str().unwrap().to_owned(),
                n["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(c, e)| (c.to_string(), e.to_string()))
        .collect()
}

#[actix_web::test]
async fn every_domain_endpoint_publishes_its_events() {
    let app = spawn_app().await;
    let svc = token(&service());
    app.open_session("a", "s1", json!(5)).await;

    let mut adm = app.connect(&staff("a")).await;
    for c in [
        "tenant:a:admins",
        "tenant:a:admins:orders",
        "tenant:a:order:o1",
        "tenant:a:broadcast",
    ] {
        adm.subscribed(c).await;
    }
    let mut cust = app.connect(&customer("a", "c1", Some("s1"))).await;
    cust.subscribed("session:s1").await;
    cust.subscribed("tenant:a:broadcast").await;

    // NewOrder: admins and admins:orders; the session records orders.
    let order = json!({"orderId": "o1", "sessionId": "s1", "tableNumber": 5,
        "items": [{"name": "Soup", "quantity": 2}], "total": 12.5});
    let (status, body) = app
        .post_json(&format!("{T}/orders"), Some(&svc), &order)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["published"].as_array().unwrap().len(), 2);
    let ns = adm.notifications(2).await;
    assert_eq!(
        seen(&ns),
        pairs(&[
            ("tenant:a:admins", "NewOrder"),
            ("tenant:a:admins:orders", "NewOrder")
        ])
    );
    // The order's fields, and the order nested as the seed's NotifyNewOrder does (its front end
    // reads `notification.data.order`), with the time it was announced.
    let mut data = ns[0]["data"].clone();
    let stamp = data.as_object_mut().unwrap().remove("timestamp").unwrap();
    assert!(stamp.as_str().is_some_and(|t| t.ends_with('Z')), "{stamp}");
    let mut expected = order.clone();
    expected["order"] = order.clone();
    assert_eq!(data, expected);
    assert_eq!(ns[1]["data"], ns[0]["data"]);
    let (_, s) = app.get(&format!("{T}/sessions/s1"), Some(&svc)).await;
    assert_eq!(s["hasOrders"], true);

    // Order status: admins and the order's watchers; the customer gets OrderStatusUpdate.
    let (status, body) = app
        .post_json(
            &format!("{T}/orders/o1/status"),
            Some(&token(&admin("a"))),
            &json!({"status": "Preparing", "sessionId": "s1", "order": {"orderId": "o1"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let expected = json!({"orderId": "o1", "status": "Preparing", "sessionId": "s1",
        "order": {"orderId": "o1"}});
    let ns = adm.notifications(2).await;
    assert_eq!(
        seen(&ns),
        pairs(&[
            ("tenant:a:admins", "OrderStatusChanged"),
            ("tenant:a:order:o1", "OrderStatusChanged")
        ])
    );
    assert_eq!(ns[1]["data"], expected);
    let n = cust.notifications(1).await;
    assert_eq!(seen(&n), pairs(&[("session:s1", "OrderStatusUpdate")]));
    assert_eq!(n[0]["data"], expected);

    // Table status.
    let (status, _) = app
        .post_json(
            &format!("{T}/tables/12/status"),
            Some(&svc),
            &json!({"isOccupied": true}),
        )
        .await;
    assert_eq!(status, 202);
    let n = adm.notifications(1).await;
    assert_eq!(
        seen(&n),
        pairs(&[("tenant:a:admins", "TableStatusChanged")])
    );
    assert_eq!(n[0]["data"], json!({"tableId": "12", "isOccupied": true}));

    // Cart.
    let cart = json!({"items": [{"name": "Tea", "quantity": 1}], "total": 3});
    let (status, _) = app
        .post_json(
            &format!("{T}/sessions/s1/cart"),
            Some(&svc),
            &json!({"cart": cart}),
        )
        .await;
    assert_eq!(status, 202);
    let n = cust.notifications(1).await;
    assert_eq!(seen(&n), pairs(&[("session:s1", "CartUpdated")]));
    assert_eq!(n[0]["data"], json!({"sessionId": "s1", "cart": cart}));

    // Tenant broadcast reaches everyone in the tenant.
    let (status, _) = app
        .post_json(
            &format!("{T}/broadcast"),
            Some(&svc),
            &json!({"event": "Announcement", "data": {"text": "Kitchen closes at 22:00"}}),
        )
        .await;
    assert_eq!(status, 202);
    for ws in [&mut adm, &mut cust] {
        let n = ws.notifications(1).await;
        assert_eq!(seen(&n), pairs(&[("tenant:a:broadcast", "Announcement")]));
        assert_eq!(n[0]["data"]["text"], "Kitchen closes at 22:00");
    }

    // Role broadcasts: staff roles → admins, customers → the tenant broadcast.
    for (role, channel) in [
        ("Admin", "tenant:a:admins"),
        ("staff", "tenant:a:admins"),
        ("Customer", "tenant:a:broadcast"),
    ] {
        let (status, body) = app
            .post_json(
                &format!("{T}/roles/{role}/broadcast"),
                Some(&svc),
                &json!({"event": "RoleNote", "data": {"role": role}}),
            )
            .await;
        assert_eq!(status, 202, "{role}: {body}");
        let n = adm.notifications(1).await;
        assert_eq!(seen(&n), pairs(&[(channel, "RoleNote")]), "{role}");
    }
    // The customer heard only the Customer one.
    let n = cust.notifications(1).await;
    assert_eq!(n[0]["data"]["role"], "Customer");

    assert_eq!(
        app.metric("switchyard_published_total{source=\"domain\"}")
            .await,
        11.0
    );
}

#[actix_web::test]
async fn domain_endpoints_refuse_bad_callers_and_bad_input() {
    let app = spawn_app().await;
    let svc = token(&service());
    app.open_session("a", "s1", json!(5)).await;
    app.open_session("b", "sb", json!(5)).await;
    let endpoints: Vec<(String, Value)> = vec![
        (format!("{T}/orders"), json!({"orderId": "o1"})),
        (format!("{T}/orders/o1/status"), json!({"status": "Ready"})),
        (format!("{T}/tables/1/status"), json!({"isOccupied": false})),
        (format!("{T}/sessions/s1/cart"), json!({"cart": {}})),
        (format!("{T}/broadcast"), json!({"event": "E", "data": 1})),
        (
            format!("{T}/roles/Admin/broadcast"),
            json!({"event": "E", "data": 1}),
        ),
    ];
    for (path, body) in &endpoints {
        for (who, expected) in [
            (None, 401),
            (Some(customer("a", "c1", Some("s1"))), 403),
            (Some(admin("b")), 403),
            (Some(operator()), 403),
        ] {
            let t = who.as_ref().map(token);
            let (status, p) = app.post_json(path, t.as_deref(), body).await;
            assert_eq!(status, expected, "{path} as {who:?}: {p}");
            assert!(p["detail"].is_string(), "problem JSON: {p}");
        }
    }

    let bad: Vec<(String, Value, &str)> = vec![
        (format!("{T}/orders"), json!({"total": 1}), "orderId"),
        (
            format!("{T}/orders"),
            json!({"orderId": {"x": 1}}),
            "orderId",
        ),
        (
            format!("{T}/orders"),
            json!({"orderId": "o1", "sessionId": "a b"}),
            "sessionId",
        ),
        (format!("{T}/orders/o1/status"), json!({}), "status"),
        (
            format!("{T}/orders/o1/status"),
            json!({"status": ""}),
            "status",
        ),
        (
            format!("{T}/tables/1/status"),
            json!({"isOccupied": "yes"}),
            "request body",
        ),
        (
            format!("{T}/sessions/s1/cart"),
            json!({"items": []}),
            "request body",
        ),
        (
            format!("{T}/broadcast"),
            json!({"event": "bad name", "data": 1}),
            "event",
        ),
        (format!("{T}/broadcast"), json!({"data": 1}), "event"),
        (
            format!("{T}/roles/Service/broadcast"),
            json!({"event": "E", "data": 1}),
            "Service",
        ),
        (
            format!("{T}/roles/Chef/broadcast"),
            json!({"event": "E", "data": 1}),
            "role",
        ),
    ];
    for (path, body, mention) in bad {
        let (status, p) = app.post_json(&path, Some(&svc), &body).await;
        assert_eq!(status, 400, "{path} {body}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains(mention),
            "{path} {body}: {p} should mention {mention}"
        );
    }

    // Sessions must be the tenant's own: unknown or another tenant's is 404.
    for (path, body) in [
        (
            format!("{T}/orders"),
            json!({"orderId": "o1", "sessionId": "nope"}),
        ),
        (
            format!("{T}/orders"),
            json!({"orderId": "o1", "sessionId": "sb"}),
        ),
        (
            format!("{T}/orders/o1/status"),
            json!({"status": "Ready", "sessionId": "sb"}),
        ),
        (format!("{T}/sessions/sb/cart"), json!({"cart": {}})),
    ] {
        let (status, p) = app.post_json(&path, Some(&svc), &body).await;
        assert_eq!(status, 404, "{path} {body}: {p}");
    }
    // An ended session takes no new orders or carts.
    app.delete(&format!("{T}/sessions/s1"), Some(&svc)).await;
    for (path, body) in [
        (
            format!("{T}/orders"),
            json!({"orderId": "o2", "sessionId": "s1"}),
        ),
        (format!("{T}/sessions/s1/cart"), json!({"cart": {}})),
    ] {
        let (status, p) = app.post_json(&path, Some(&svc), &body).await;
        assert_eq!(status, 409, "{path}: {p}");
        assert_eq!(p["code"], "conflict");
    }
    // Nothing was published by any refused request.
    assert_eq!(
        app.metric("switchyard_published_total{source=\"domain\"}")
            .await,
        0.0
    );
}
