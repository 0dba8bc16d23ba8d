//! Issue 12, finding 8: "Policy order bugs". A WebSocket publish is checked against the channel
//! rules before it takes the tenant's publish quota (as REST does), and joins made by hub methods
//! go through the same subscription path as `subscribe`: the tenant's subscription quota and the
//! activity observations apply to them too.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};

const QUOTA_SUBSCRIPTIONS: &str =
    "switchyard_quota_exceeded_total{quota=\"subscriptions\",tenant=\"pets\"}";

#[actix_web::test]
async fn a_forbidden_ws_publish_does_not_use_up_the_publish_quota() {
    const PER_SECOND: u32 = 2;
    let app = spawn_app_with(|s| s.quotas.publishes_per_second = PER_SECOND).await;
    // Customers may not publish on their tenant's broadcast channel.
    let mut customer_ws = app.connect(&customer("acme", "c1", None)).await;
    for i in 0..2 * PER_SECOND {
        customer_ws
            .send_json(json!({"type":"publish","id":i,"data":{"channel":"tenant:acme:broadcast","event":"Tick","data":{}}}))
            .await;
        let reply = customer_ws.recv_event().await;
        assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
    }
    // The whole quota is still there for a publisher the rules allow.
    let mut admin_ws = app.connect(&admin("acme")).await;
    for i in 0..PER_SECOND {
        admin_ws
            .send_json(json!({"type":"publish","id":i,"data":{"channel":"tenant:acme:broadcast","event":"Tick","data":{}}}))
            .await;
        let reply = admin_ws.recv_event().await;
        assert_eq!(reply["type"], "published", "publish {i}: {reply}");
    }
    assert_eq!(
        app.metric("switchyard_quota_exceeded_total{quota=\"publishes\",tenant=\"acme\"}")
            .await,
        0.0
    );
}

/// A conversation of `alice` and `bob` in tenant `pets`; its id.
async fn conversation(app: &TestApp) -> String {
    let (status, c) = app
        .post_json(
            "/api/v1/conversations",
            Some(&token(&customer("pets", "alice", None))),
            &json!({"participants": ["bob"]}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

/// Invokes a hub method over the native protocol; its reply (notifications are skipped: the chat
/// announces a leave on the conversation before the connection leaves it).
async fn invoke(ws: &mut WsClient, id: &str, method: &str, args: Value) -> Value {
    ws.send_json(json!({"type":"invoke","id":id,"data":{"method":method,"args":args}}))
        .await;
    loop {
        let reply = ws.recv().await;
        if reply["type"] != "notification" {
            assert_eq!(reply["id"], id, "{reply}");
            return reply;
        }
    }
}

#[actix_web::test]
async fn hub_method_joins_obey_the_tenant_subscription_quota() {
    let app = spawn_app_with(|s| s.quotas.max_subscriptions_per_connection = 1).await;
    let conv = conversation(&app).await;

    // Native `invoke` of a chat method: the quota's one subscription is taken already.
    let mut alice = app.connect(&customer("pets", "alice", None)).await;
    alice.subscribed("tenant:pets:broadcast").await;
    let refused = invoke(&mut alice, "j", "JoinConversation", json!([conv])).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["data"]["code"], "quota_exceeded", "{refused}");
    assert!(
        refused["data"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1 subscriptions"),
        "{refused}"
    );
    assert!(app.metric(QUOTA_SUBSCRIPTIONS).await >= 1.0);
    // Freed, the same join works.
    alice
        .send_json(
            json!({"type":"unsubscribe","id":"u","data":{"channel":"tenant:pets:broadcast"}}),
        )
        .await;
    assert_eq!(alice.recv_event().await["type"], "unsubscribed");
    let joined = invoke(&mut alice, "j2", "JoinConversation", json!([conv])).await;
    assert_eq!(joined["type"], "result", "{joined}");

    // SignalR: the default channels leave no room; JoinOrderChannel, Subscribe and
    // JoinConversation are all refused by the quota, with its message.
    let mut bob = HubClient::start(
        &app,
        &token(&customer("pets", "bob", None)),
        HubOptions::default(),
    )
    .await
    .expect("hub client starts");
    assert_eq!(bob.invoke("Ping", json!([])).await, Ok(json!(true)));
    let before = app.metric(QUOTA_SUBSCRIPTIONS).await;
    for (method, args) in [
        ("JoinOrderChannel", json!(["o-1"])),
        ("Subscribe", json!(["tenant:pets:order:o-2"])),
        ("JoinConversation", json!([conv])),
    ] {
        let err = bob.invoke(method, args).await.unwrap_err();
        assert!(
            err.contains("subscriptions per connection"),
            "{method}: {err}"
        );
    }
    assert!(app.metric(QUOTA_SUBSCRIPTIONS).await >= before + 3.0);
    bob.stop().await;
}

/// The next activity summary `event` on `tenant:pets:activity`, skipping other frames (and
/// summaries of other kinds, such as the chat's own publishes).
async fn next_activity(ws: &mut WsClient, event: &str) -> Value {
    loop {
        let v = ws.recv().await;
        if v["type"] == "notification"
            && v["data"]["channel"] == "tenant:pets:activity"
            && v["data"]["event"] == event
        {
            return v["data"]["data"].clone();
        }
    }
}

/// `alice` joins and leaves her conversation through the chat methods on `node`; the console
/// (subscribed to the activity stream, possibly on another node) sees both.
async fn joins_and_leaves_show(node: &TestApp, console: &mut WsClient, conv: &str) {
    let mut alice = node.connect(&customer("pets", "alice", None)).await;
    next_activity(console, "ConnectionOpened").await;
    let joined = invoke(&mut alice, "j", "JoinConversation", json!([conv])).await;
    assert_eq!(joined["type"], "result", "{joined}");
    let channel = format!("conversation:{conv}");
    assert_eq!(
        next_activity(console, "Subscribed").await,
        json!({"userId": "alice", "channel": channel})
    );
    let left = invoke(&mut alice, "l", "LeaveConversation", json!([conv])).await;
    assert_eq!(left["type"], "result", "{left}");
    assert_eq!(
        next_activity(console, "Unsubscribed").await,
        json!({"userId": "alice", "channel": channel})
    );
}

#[actix_web::test]
async fn hub_method_joins_and_leaves_show_in_the_tenant_activity() {
    let app = spawn_app().await;
    let conv = conversation(&app).await;
    let mut console = app.connect(&operator()).await;
    console.subscribed("tenant:pets:activity").await;
    joins_and_leaves_show(&app, &mut console, &conv).await;
}

#[actix_web::test]
async fn hub_method_joins_and_leaves_show_in_the_tenant_activity_on_a_cluster() {
    let (_redis, _db, a, b) = two_chat_nodes().await;
    let conv = conversation(&b).await;
    // The console on node a, the chat user on node b.
    let mut console = a.connect(&operator()).await;
    console.subscribed("tenant:pets:activity").await;
    joins_and_leaves_show(&b, &mut console, &conv).await;
}
