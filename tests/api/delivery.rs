//! Delivery over the native protocol: subscribe, publish over REST, receive with offsets.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn published_events_arrive_in_order_with_offsets_and_epoch() {
    let app = spawn_app().await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    let sub = ws.subscribed("tenant:acme:broadcast").await;
    assert_eq!(sub["data"]["channel"], "tenant:acme:broadcast");
    assert_eq!(sub["data"]["offset"], 0, "a new channel starts at offset 0");
    assert!(sub["data"]["subscriptionId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let epoch = sub["data"]["epoch"].as_str().unwrap().to_owned();

    for i in 1..=5 {
        let (status, ack) = app
            .publish(
                &service(),
                "tenant:acme:broadcast",
                "NewOrder",
                json!({"orderId": i}),
            )
            .await;
        assert_eq!(status, 202, "{ack}");
        assert_eq!(ack["offset"], i);
        assert_eq!(ack["epoch"], epoch.as_str());
        assert!(ack["id"].as_str().is_some());
    }
    for i in 1..=5 {
        let n = ws.recv().await;
        assert_eq!(n["type"], "notification");
        let d = &n["data"];
        assert_eq!(d["channel"], "tenant:acme:broadcast");
        assert_eq!(d["event"], "NewOrder");
        assert_eq!(d["data"], json!({"orderId": i}));
        assert_eq!(d["offset"], i);
        assert_eq!(d["epoch"], epoch.as_str());
        assert!(d["id"].as_str().is_some());
        assert!(d["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

#[actix_web::test]
async fn subscribe_reports_the_current_offset_of_a_busy_channel() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.publish(&service(), "user:u1", "Hello", json!(null))
            .await;
    }
    let mut ws = app.connect(&customer("acme", "u1", None)).await;
    let sub = ws.subscribed("user:u1").await;
    assert_eq!(sub["data"]["offset"], 3);
    app.publish(&service(), "user:u1", "Hello", json!("x"))
        .await;
    let n = ws.recv().await;
    assert_eq!(
        n["data"]["offset"], 4,
        "only events after the subscription arrive"
    );
}

#[actix_web::test]
async fn every_subscriber_gets_every_event() {
    let app = spawn_app().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut ws = app.connect(&customer("acme", &format!("c{i}"), None)).await;
        ws.subscribed("tenant:acme:order:o-1").await;
        clients.push(ws);
    }
    for i in 1..=10 {
        app.publish(
            &service(),
            "tenant:acme:order:o-1",
            "OrderStatusChanged",
            json!({"n": i}),
        )
        .await;
    }
    for ws in &mut clients {
        for i in 1..=10 {
            let n = ws.recv().await;
            assert_eq!(n["data"]["offset"], i);
        }
    }
}

#[actix_web::test]
async fn unsubscribe_stops_delivery_and_ping_answers() {
    let app = spawn_app().await;
    let mut ws = app.connect(&admin("acme")).await;
    ws.subscribed("tenant:acme:admins").await;
    ws.subscribed("tenant:acme:admins:orders").await;
    ws.send_json(json!({"type":"unsubscribe","id":3,"data":{"channel":"tenant:acme:admins"}}))
        .await;
    let reply = ws.recv().await;
    assert_eq!(
        reply,
        json!({"type":"unsubscribed","id":3,"data":{"channel":"tenant:acme:admins"}})
    );
    app.publish(&service(), "tenant:acme:admins", "Gone", json!(1))
        .await;
    app.publish(&service(), "tenant:acme:admins:orders", "Kept", json!(2))
        .await;
    let n = ws.recv().await;
    assert_eq!(
        n["data"]["event"], "Kept",
        "the unsubscribed channel must be silent: {n}"
    );

    ws.send_json(json!({"type":"unsubscribe","data":{"channel":"tenant:acme:admins"}}))
        .await;
    let err = ws.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "not_subscribed");
    ws.ping().await;
}

#[actix_web::test]
async fn clients_publish_where_the_rules_allow() {
    let app = spawn_app().await;
    let mut listener = app.connect(&customer("acme", "c1", None)).await;
    listener.subscribed("tenant:acme:broadcast").await;

    let mut staff_ws = app.connect(&staff("acme")).await;
    staff_ws
        .send_json(json!({"type":"publish","id":"p1","data":{"channel":"tenant:acme:broadcast","event":"Announcement","data":{"text":"hi"}}}))
        .await;
    let ack = staff_ws.recv().await;
    assert_eq!(ack["type"], "published", "{ack}");
    assert_eq!(ack["id"], "p1");
    assert_eq!(ack["data"]["offset"], 1);
    let n = listener.recv().await;
    assert_eq!(n["data"]["data"], json!({"text":"hi"}));

    let mut cust = app.connect(&customer("acme", "c2", None)).await;
    cust.send_json(json!({"type":"publish","id":"p2","data":{"channel":"tenant:acme:broadcast","event":"Spam","data":1}}))
        .await;
    let err = cust.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["id"], "p2");
    assert_eq!(err["data"]["code"], "forbidden");
    assert!(err["data"]["message"]
        .as_str()
        .unwrap()
        .contains("tenant:{t}:broadcast"));
}
