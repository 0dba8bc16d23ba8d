//! One identity × channel table, every entry point: the channel policy (`actors/src/policy/`)
//! must give the same answer whichever way a caller comes in. Subscribing is checked through
//! `/ws` `subscribe`, the SignalR hub's `Subscribe` and `GET /api/v1/channels/{c}/history`;
//! publishing through `POST /api/v1/publish`, `/ws` `publish`, the hub's `Publish` and the Redis
//! ingest stream (which publishes as a Service: it is checked against the table's Service row).
//! A refusal must also carry the same rule text everywhere. The node runs in cluster mode, so
//! the ingest stream is live, and on its store, so `conversation:{id}` is a stored-data lookup.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};
use crate::redis_server::RedisServer;

/// Stands for the conversation the test creates (its id is known only at run time).
const CONVERSATION: &str = "conversation:{id}";

/// The channels every identity is tried on: tenant-scoped, staff-scoped, one member's, another
/// tenant's, a dining session's, and a stored-data lookup (a conversation of `c1` and `admin-a`).
const CHANNELS: [&str; 6] = [
    "tenant:a:broadcast",
    "tenant:a:admins",
    "tenant:a:user:c1",
    "tenant:b:broadcast",
    "session:s1",
    CONVERSATION,
];

/// What the policy answers for one identity on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct May {
    subscribe: bool,
    publish: bool,
}

const NONE: May = May {
    subscribe: false,
    publish: false,
};
const SUB: May = May {
    subscribe: true,
    publish: false,
};
const BOTH: May = May {
    subscribe: true,
    publish: true,
};

/// The expected decisions, one row per identity, one column per entry of [`CHANNELS`].
fn table() -> Vec<(As, [May; 6])> {
    vec![
        (admin("a"), [BOTH, SUB, NONE, NONE, NONE, SUB]),
        (staff("a"), [BOTH, SUB, NONE, NONE, NONE, NONE]),
        (
            customer("a", "c1", Some("s1")),
            [SUB, NONE, SUB, NONE, SUB, SUB],
        ),
        // The same user id in another tenant: a namesake, not the same person.
        (
            customer("b", "c1", None),
            [NONE, NONE, NONE, SUB, NONE, NONE],
        ),
        (service(), [BOTH, BOTH, BOTH, BOTH, BOTH, BOTH]),
    ]
}

/// One entry point's answer: `Ok` or the refusal's text (the rule).
type Answer = Result<(), String>;

/// Checks one entry point's answer against the table, and that a refusal names the same rule as
/// the first entry point that refused.
fn expect(
    entry: &str,
    who: &As,
    channel: &str,
    allowed: bool,
    answer: Answer,
    rule: &mut Option<String>,
) {
    match answer {
        Ok(()) => assert!(allowed, "{entry}: {who:?} on {channel} was allowed"),
        Err(text) => {
            assert!(
                !allowed,
                "{entry}: {who:?} on {channel} was refused: {text}"
            );
            assert!(
                text.contains(':'),
                "{entry}: the refusal names the rule: {text}"
            );
            match rule {
                Some(first) => assert_eq!(&text, first, "{entry}: {who:?} on {channel}"),
                None => *rule = Some(text),
            }
        }
    }
}

fn problem(entry: &str, status: u16, body: Value, ok: u16) -> Answer {
    if status == ok {
        return Ok(());
    }
    assert_eq!(status, 403, "{entry}: {body}");
    assert_eq!(body["code"], "forbidden", "{entry}: {body}");
    assert_eq!(
        body["type"], "urn:switchyard:problem:forbidden",
        "{entry}: {body}"
    );
    Err(body["detail"].as_str().unwrap().to_owned())
}

/// `subscribe`; the events published on the channels subscribed before may arrive first.
async fn ws_subscribe(ws: &mut WsClient, channel: &str) -> Answer {
    ws.send_json(json!({"type":"subscribe","data":{"channel":channel}}))
        .await;
    let reply = loop {
        let v = ws.recv().await;
        if v["type"] != "notification" {
            break v;
        }
    };
    match reply["type"].as_str() {
        Some("subscribed") => Ok(()),
        Some("subscription_error") => {
            assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
            Err(reply["data"]["reason"].as_str().unwrap().to_owned())
        }
        _ => panic!("/ws subscribe {channel}: {reply}"),
    }
}

async fn ws_publish(ws: &mut WsClient, channel: &str, id: &str) -> Answer {
    ws.send_json(
        json!({"type":"publish","id":id,"data":{"channel":channel,"event":"Matrix","data":{}}}),
    )
    .await;
    let reply = ws.recv().await;
    assert_eq!(reply["id"], id, "{reply}");
    match reply["type"].as_str() {
        Some("published") => Ok(()),
        Some("error") => {
            assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
            Err(reply["data"]["message"].as_str().unwrap().to_owned())
        }
        _ => panic!("/ws publish {channel}: {reply}"),
    }
}

/// `Subscribe` from a clean state (the hub joins some channels on connect, and joining one twice
/// is its own error), left again so the hub gets no events it does not listen for.
async fn hub_subscribe(hub: &mut HubClient, channel: &str) -> Answer {
    let _ = hub.invoke("Unsubscribe", json!([channel])).await;
    let answer = hub.invoke("Subscribe", json!([channel])).await.map(|_| ());
    let _ = hub.invoke("Unsubscribe", json!([channel])).await;
    answer
}

async fn hub_publish(hub: &mut HubClient, channel: &str) -> Answer {
    hub.invoke("Publish", json!([channel, "Matrix", {}]))
        .await
        .map(|_| ())
}

/// Appends a draft to the ingest stream and answers whether it was published (a Service
/// subscribed to `channel` receives it) or refused (counted as a bad ingest entry).
async fn ingest(
    app: &TestApp,
    redis: &RedisServer,
    prefix: &str,
    watcher: &mut WsClient,
    channel: &str,
    n: usize,
    allowed: bool,
) -> Answer {
    let refused_before = app
        .metric("switchyard_bad_frames_total{code=\"ingest\"}")
        .await;
    let draft = json!({"channel": channel, "event": "Ingested", "data": {"n": n}});
    redis.ingest(prefix, &draft.to_string()).await;
    if !allowed {
        app.wait_metric(
            "switchyard_bad_frames_total{code=\"ingest\"}",
            refused_before + 1.0,
        )
        .await;
        return Err(format!("{channel}: refused ingest entry"));
    }
    loop {
        let v = watcher.recv_event().await;
        if v["type"] == "notification" && v["data"]["event"] == "Ingested" {
            assert_eq!(v["data"]["channel"], channel, "{v}");
            assert_eq!(v["data"]["data"]["n"], n, "{v}");
            return Ok(());
        }
    }
}

#[actix_web::test]
async fn every_entry_point_gives_the_same_decision_for_every_identity_and_channel() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let app = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let creator = customer("a", "c1", Some("s1"));
    let (status, c) = app
        .post_json(
            "/api/v1/conversations",
            Some(&token(&creator)),
            &json!({"participants": ["admin-a"]}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let conversation = format!("conversation:{}", c["id"].as_str().unwrap());
    let channel_name = |c: &str| {
        if c == CONVERSATION {
            conversation.clone()
        } else {
            c.to_owned()
        }
    };

    for (who, row) in table() {
        let t = token(&who);
        let mut subscriber = app.connect(&who).await;
        let mut publisher = app.connect(&who).await;
        let mut hub = HubClient::start(&app, &t, HubOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{who:?}: hub start: {e}"));
        for (i, (channel, may)) in CHANNELS.iter().zip(row).enumerate() {
            let channel = channel_name(channel);
            let mut rule = None;
            let history = app
                .get(&format!("/api/v1/channels/{channel}/history"), Some(&t))
                .await;
            let answers = [
                (
                    "/ws subscribe",
                    ws_subscribe(&mut subscriber, &channel).await,
                ),
                ("hub Subscribe", hub_subscribe(&mut hub, &channel).await),
                (
                    "REST history",
                    problem("REST history", history.0, history.1, 200),
                ),
            ];
            for (entry, answer) in answers {
                expect(entry, &who, &channel, may.subscribe, answer, &mut rule);
            }
            let mut rule = None;
            let rest = app.publish(&who, &channel, "Matrix", json!({})).await;
            let answers = [
                ("REST publish", problem("REST publish", rest.0, rest.1, 202)),
                (
                    "/ws publish",
                    ws_publish(&mut publisher, &channel, &format!("p{i}")).await,
                ),
                ("hub Publish", hub_publish(&mut hub, &channel).await),
            ];
            for (entry, answer) in answers {
                expect(entry, &who, &channel, may.publish, answer, &mut rule);
            }
        }
        hub.stop().await;
    }

    // The ingest stream publishes as a Service: it follows the table's Service row.
    let (service_who, service_row) = table()
        .into_iter()
        .find(|(who, _)| who.role == "Service")
        .expect("the table has a Service row");
    let mut watcher = app.connect(&service_who).await;
    for channel in CHANNELS {
        watcher.subscribed(&channel_name(channel)).await;
    }
    redis.ingest_group_exists(&prefix).await;
    for (n, (channel, may)) in CHANNELS.iter().zip(service_row).enumerate() {
        let channel = channel_name(channel);
        let answer = ingest(
            &app,
            &redis,
            &prefix,
            &mut watcher,
            &channel,
            n,
            may.publish,
        )
        .await;
        assert_eq!(
            answer.is_ok(),
            may.publish,
            "ingest on {channel}: {answer:?}"
        );
    }
    app.stop().await;
}
