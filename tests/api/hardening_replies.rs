//! Issue 12, finding 3: "A subscribe followed at once by an unsubscribe never gets its reply."
//! Every request gets exactly one reply, in the order the requests were sent, on one node and on a
//! cluster (where the broker's round trip goes through Redis), on the native protocol and with the
//! real `@microsoft/signalr` client.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};
use crate::redis_server::RedisServer;

const PAIRS: u64 = 20;

/// Sends `frames` in one write, so the server reads them together.
async fn send_together(ws: &mut WsClient, frames: &[Value]) {
    for f in frames {
        ws.ws.feed(Message::text(f.to_string())).await.unwrap();
    }
    ws.ws.flush().await.unwrap();
}

/// Sends `PAIRS` subscribe/unsubscribe pairs of `channel` without waiting, then expects every
/// reply, in order: `subscribed` (id 2i), `unsubscribed` (id 2i+1).
async fn pairs_are_answered_in_order(ws: &mut WsClient, channel: &str) {
    for i in 0..PAIRS {
        ws.send_json(json!({"type":"subscribe","id":2 * i,"data":{"channel":channel}}))
            .await;
        ws.send_json(json!({"type":"unsubscribe","id":2 * i + 1,"data":{"channel":channel}}))
            .await;
    }
    for i in 0..PAIRS {
        let sub = ws.recv_event().await;
        assert_eq!(
            (&sub["type"], &sub["id"]),
            (&json!("subscribed"), &json!(2 * i)),
            "reply {} of the pairs: {sub}",
            2 * i
        );
        let unsub = ws.recv_event().await;
        assert_eq!(
            (&unsub["type"], &unsub["id"]),
            (&json!("unsubscribed"), &json!(2 * i + 1)),
            "reply {}: {unsub}",
            2 * i + 1
        );
    }
    // Nothing else was owed: the next frame is the answer to this ping.
    ws.ping().await;
}

#[actix_web::test]
async fn a_subscribe_followed_at_once_by_an_unsubscribe_gets_its_reply() {
    let app = spawn_app().await;
    let mut ws = app.connect(&staff("acme")).await;
    pairs_are_answered_in_order(&mut ws, "tenant:acme:order:o").await;

    // Still unsubscribed after the last pair: an event on the channel does not arrive.
    ws.subscribed("tenant:acme:broadcast").await;
    app.publish(&service(), "tenant:acme:order:o", "Missed", json!(1))
        .await;
    app.publish(&service(), "tenant:acme:broadcast", "Seen", json!(2))
        .await;
    assert_eq!(ws.notifications(1).await[0]["event"], "Seen");
}

#[actix_web::test]
async fn a_subscribe_followed_at_once_by_an_unsubscribe_gets_its_reply_on_a_cluster() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut ws = b.connect(&staff("acme")).await;
    pairs_are_answered_in_order(&mut ws, "tenant:acme:order:o").await;

    // A last subscribe that stays: an event published on the other node arrives once.
    // (`subscribed` comes once node b listens on the channel in Redis.)
    ws.subscribed("tenant:acme:order:o").await;
    let (status, ack) = a
        .publish(&service(), "tenant:acme:order:o", "Seen", json!(1))
        .await;
    assert_eq!(status, 202, "{ack}");
    let got = ws.notifications(1).await;
    assert_eq!(got[0]["event"], "Seen");
    assert_eq!(got[0]["offset"], ack["offset"]);
    ws.ping().await;
}

/// A subscription the authorizer refuses (it looks the conversation up, asynchronously), then an
/// unsubscribe of it: the refusal comes first, and the unsubscribe finds nothing to remove.
#[actix_web::test]
async fn a_refused_subscribe_is_answered_before_the_unsubscribe_that_followed_it() {
    let app = spawn_app().await;
    let mut ws = app.connect(&customer("acme", "c1", None)).await;
    for round in 0..5 {
        let (s, u) = (format!("s{round}"), format!("u{round}"));
        send_together(
            &mut ws,
            &[
                json!({"type":"subscribe","id":s,"data":{"channel":"conversation:nope"}}),
                json!({"type":"unsubscribe","id":u,"data":{"channel":"conversation:nope"}}),
            ],
        )
        .await;
        let first = ws.recv_event().await;
        assert_eq!(
            (&first["type"], &first["id"], &first["data"]["code"]),
            (&json!("subscription_error"), &json!(s), &json!("forbidden")),
            "{first}"
        );
        let second = ws.recv_event().await;
        assert_eq!(
            (&second["type"], &second["id"], &second["data"]["code"]),
            (&json!("error"), &json!(u), &json!("not_subscribed")),
            "{second}"
        );
    }
    ws.ping().await;
}

/// `JoinOrderChannel` then `LeaveOrderChannel` invoked without awaiting in between (one frame):
/// both `invoke()`s resolve, the join's first.
async fn join_then_leave_both_complete(hub: &mut HubClient) {
    for _ in 0..5 {
        let results = hub
            .invoke_together(&[
                ("JoinOrderChannel", json!(["o"])),
                ("LeaveOrderChannel", json!(["o"])),
            ])
            .await;
        let order: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            order,
            [0, 1],
            "completions in invocation order: {results:?}"
        );
        let joined = results[0].1.as_ref().expect("the join completes");
        assert_eq!(joined["channel"], "tenant:acme:order:o", "{joined}");
        assert_eq!(results[1].1, Ok(Value::Null), "the leave completes");
    }
    assert_eq!(hub.invoke("Ping", json!([])).await, Ok(json!(true)));
}

#[actix_web::test]
async fn join_then_leave_order_channel_in_one_frame_both_complete() {
    let app = spawn_app().await;
    let mut hub = HubClient::start(&app, &token(&staff("acme")), HubOptions::default())
        .await
        .expect("hub client starts");
    join_then_leave_both_complete(&mut hub).await;
    hub.stop().await;
}

#[actix_web::test]
async fn join_then_leave_order_channel_in_one_frame_both_complete_on_a_cluster() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let _a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let mut hub = HubClient::start(&b, &token(&staff("acme")), HubOptions::default())
        .await
        .expect("hub client starts");
    join_then_leave_both_complete(&mut hub).await;
    hub.stop().await;
}
