//! Pipelined publishing seen from outside (issue 16): a `Service` connection sends many publishes
//! on `/ws` without waiting for their replies, to many channels at once. Each request gets one
//! `published` reply in request order, each channel's events keep the order they were sent in,
//! and subscribers (on another node in cluster mode) get every event once, in that order. A
//! publisher whose socket is cut with publishes in flight (by a proxy, or mid-frame followed by
//! the client's FIN) leaves history and deliveries equal: whatever was accepted was delivered
//! once, nothing after a lost publish of its channel was published, and the node goes on serving.
//! The same holds for a `publish/batch` whose HTTP client goes away mid-batch.

use std::collections::HashMap;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::redis_server::RedisServer;
use crate::tcp_proxy::Proxy;

fn channel(c: usize) -> String {
    format!("tenant:acme:order:pipe-{c}")
}

/// The channel of each of `total` publishes over `channels` channels: interleaved (request `k`
/// goes to `37 k mod channels`), every sixth to the same channel as the one before it (a publish
/// that has to wait for its channel's previous one), every channel at least twice.
fn plan(total: usize, channels: usize) -> Vec<usize> {
    let mut plan: Vec<usize> = Vec::with_capacity(total);
    for k in 0..total {
        let c = match plan.last() {
            Some(&previous) if k % 6 == 5 => previous,
            _ => (k * 37) % channels,
        };
        plan.push(c);
    }
    plan
}

/// Request `k`: a publish of `Step {"i": k}` to `channel(c)`, with id `k`.
fn publish_frame(k: usize, c: usize) -> Value {
    json!({"type": "publish", "id": k, "data": {"channel": channel(c), "event": "Step", "data": {"i": k}}})
}

/// A `Service` connection subscribed to the first `channels` channels, each at offset 0.
async fn subscriber(node: &TestApp, channels: usize) -> WsClient {
    let mut ws = node.connect(&service()).await;
    for c in 0..channels {
        let sub = ws.subscribed(&channel(c)).await;
        assert_eq!(sub["data"]["offset"], 0, "a fresh channel: {sub}");
    }
    ws
}

/// Reads `n` notifications and groups them by channel number, in the order they came.
async fn by_channel(ws: &mut WsClient, n: usize) -> HashMap<usize, Vec<Value>> {
    let mut got: HashMap<usize, Vec<Value>> = HashMap::new();
    for d in ws.notifications(n).await {
        let name = d["channel"].as_str().unwrap();
        let c = name
            .strip_prefix("tenant:acme:order:pipe-")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("a notification of another channel: {d}"));
        got.entry(c).or_default().push(d);
    }
    got
}

/// One marker per channel in one batch through `node`; each subscriber's next notifications are
/// exactly those markers, one per channel: nothing of the events before came twice or late.
async fn markers_come_next(node: &TestApp, subs: &mut [WsClient], channels: usize) {
    let events: Vec<Value> = (0..channels)
        .map(|c| json!({"channel": channel(c), "event": "Marker", "data": null}))
        .collect();
    let (status, body) = node.publish_batch(&events).await;
    assert_eq!(status, 200, "{body}");
    for ws in subs.iter_mut() {
        let got = by_channel(ws, channels).await;
        assert_eq!(got.len(), channels, "one marker per channel");
        for (c, list) in got {
            assert_eq!(list.len(), 1, "channel {c}: {list:?}");
            assert_eq!(list[0]["event"], "Marker", "channel {c}: {list:?}");
        }
    }
}

/// Item 1: 200 publishes to 50 channels sent on `publish_on` without waiting; subscribers on
/// `subscribe_on`.
pub async fn pipelined_publishes_are_answered_in_order_and_delivered_once(
    publish_on: &TestApp,
    subscribe_on: &TestApp,
) {
    const CHANNELS: usize = 50;
    const TOTAL: usize = 200;
    let plan = plan(TOTAL, CHANNELS);
    let mut subs = vec![
        subscriber(subscribe_on, CHANNELS).await,
        subscriber(subscribe_on, CHANNELS).await,
    ];

    let mut publisher = publish_on.connect(&service()).await;
    for (k, &c) in plan.iter().enumerate() {
        publisher.send_json(publish_frame(k, c)).await;
    }
    // One reply per request, in request order.
    let mut replies = Vec::with_capacity(TOTAL);
    for k in 0..TOTAL {
        let reply = publisher.recv().await;
        assert_eq!(reply["type"], "published", "request {k}: {reply}");
        assert_eq!(reply["id"], k, "replies in request order: {reply}");
        replies.push(reply["data"].clone());
    }
    // Each channel's offsets rise in request order, from 1, with no gap (this connection is
    // the channels' only publisher).
    let mut expected: HashMap<usize, Vec<(usize, &Value)>> = HashMap::new();
    for (k, &c) in plan.iter().enumerate() {
        expected.entry(c).or_default().push((k, &replies[k]));
    }
    for (c, list) in &expected {
        let offsets: Vec<u64> = list
            .iter()
            .map(|(_, r)| r["offset"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (1..=list.len() as u64).collect();
        assert_eq!(offsets, want, "channel {c}'s offsets in request order");
    }
    // Every subscriber gets every event once, each channel's in request order.
    for ws in subs.iter_mut() {
        let got = by_channel(ws, TOTAL).await;
        for (c, list) in &expected {
            let seen: Vec<(u64, u64, &str)> = got[c]
                .iter()
                .map(|d| {
                    (
                        d["data"]["i"].as_u64().unwrap(),
                        d["offset"].as_u64().unwrap(),
                        d["id"].as_str().unwrap(),
                    )
                })
                .collect();
            let want: Vec<(u64, u64, &str)> = list
                .iter()
                .map(|(k, r)| {
                    (
                        *k as u64,
                        r["offset"].as_u64().unwrap(),
                        r["id"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(seen, want, "channel {c} as delivered");
        }
    }
    markers_come_next(publish_on, &mut subs, CHANNELS).await;
}

#[actix_web::test]
async fn pipelined_publishes_on_one_node_are_answered_in_order_and_delivered_once() {
    let app = spawn_app().await;
    pipelined_publishes_are_answered_in_order_and_delivered_once(&app, &app).await;
}

#[actix_web::test]
async fn pipelined_publishes_on_one_node_reach_the_other_in_order_once() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    pipelined_publishes_are_answered_in_order_and_delivered_once(&a, &b).await;
}

/// Reads the history of every channel of `plan` (publish `k` of `Step {"i": k}` went to channel
/// `plan[k]`) through `node` and checks it: offsets 1..=n with no gap, holding a prefix of what
/// was sent to the channel (a channel's publishes go one after another: none is published after
/// one that was lost). Then every subscriber must have got exactly those events, per channel in
/// that order, and nothing else. Returns the history by channel.
async fn history_is_what_was_delivered(
    node: &TestApp,
    subs: &mut [WsClient],
    plan: &[usize],
) -> HashMap<usize, Vec<Value>> {
    let channels = plan.iter().max().unwrap() + 1;
    let t = token(&service());
    let mut history: HashMap<usize, Vec<Value>> = HashMap::new();
    let mut accepted = 0;
    for c in 0..channels {
        let (status, page) = node
            .get(
                &format!("/api/v1/channels/{}/history?limit=1000", channel(c)),
                Some(&t),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        let offsets: Vec<u64> = events
            .iter()
            .map(|e| e["offset"].as_u64().unwrap())
            .collect();
        let last = page["offset"].as_u64().unwrap();
        assert_eq!(offsets, (1..=last).collect::<Vec<_>>(), "channel {c}");
        let sent: Vec<u64> = (0..plan.len() as u64)
            .filter(|&k| plan[k as usize] == c)
            .collect();
        let published: Vec<u64> = events
            .iter()
            .map(|e| e["data"]["i"].as_u64().unwrap())
            .collect();
        assert!(
            sent.starts_with(&published),
            "channel {c}: published {published:?} of {sent:?}"
        );
        accepted += events.len();
        history.insert(c, events);
    }
    // Every subscriber got exactly what history holds, per channel in its order; the markers
    // after show nothing more was on its way.
    for ws in subs.iter_mut() {
        let got = by_channel(ws, accepted).await;
        for (c, events) in &history {
            let seen: Vec<(&Value, &Value)> = got
                .get(c)
                .map(|l| l.iter().map(|d| (&d["id"], &d["offset"])).collect())
                .unwrap_or_default();
            let want: Vec<(&Value, &Value)> =
                events.iter().map(|e| (&e["id"], &e["offset"])).collect();
            assert_eq!(seen, want, "channel {c} as delivered");
        }
    }
    markers_come_next(node, subs, channels).await;
    history
}

/// Publishes `plan` through a proxy and cuts it once 100 are answered; returns the replies that
/// got through (checked to be in request order).
async fn cut_after_answers(a: &CutNode<'_>, plan: &[usize]) -> Vec<Value> {
    let proxy = Proxy::start(a.port).await;
    let mut publisher = a.ws(proxy.port).await;
    for (k, &c) in plan.iter().enumerate() {
        publisher.send_json(publish_frame(k, c)).await;
    }
    // Cut once 100 of them are answered: the node is publishing, with up to
    // `max_publishes_in_flight` of the rest in flight and the others queued behind them.
    let mut replies = Vec::new();
    while replies.len() < 100 {
        let reply = publisher.recv().await;
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(reply["id"], replies.len(), "in request order: {reply}");
        replies.push(reply["data"].clone());
    }
    proxy.sever();
    // And the replies that got through before the cut: the next ones, in request order.
    loop {
        let next = tokio::time::timeout(WAIT, publisher.ws.next())
            .await
            .expect("the cut socket ends");
        match next {
            Some(Ok(Message::Text(t))) => {
                let reply: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(reply["type"], "published", "{reply}");
                assert_eq!(reply["id"], replies.len(), "in request order: {reply}");
                replies.push(reply["data"].clone());
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    replies
}

/// Publishes `plan` straight to the node, then half of one more frame, then closes the writing
/// half; returns the replies the node wrote before it closed (checked to be in request order).
async fn cut_mid_frame(a: &CutNode<'_>, plan: &[usize]) -> Vec<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = raw_ws_upgrade_at(a.port, &token(&service())).await;
    let mut bytes = Vec::new();
    for (k, &c) in plan.iter().enumerate() {
        client_text_frame(&publish_frame(k, c).to_string(), &mut bytes);
    }
    let mut last = Vec::new();
    client_text_frame(&publish_frame(plan.len(), 0).to_string(), &mut last);
    bytes.extend_from_slice(&last[..last.len() / 2]);
    stream.write_all(&bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut written = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut written))
        .await
        .expect("the node ends the stream");
    let mut replies = Vec::new();
    for text in server_text_frames(&written) {
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(reply["id"], replies.len(), "in request order: {reply}");
        replies.push(reply["data"].clone());
    }
    replies
}

/// Appends `text` as one masked text frame, as a client sends it.
fn client_text_frame(text: &str, out: &mut Vec<u8>) {
    let mask = [0x5a, 0x17, 0xc3, 0x08];
    let len = text.len();
    out.push(0x81);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// The text frames among the raw (unmasked) server frames in `buf`, up to the first incomplete
/// one.
fn server_text_frames(buf: &[u8]) -> Vec<String> {
    let mut texts = Vec::new();
    let mut i = 0;
    while i + 2 <= buf.len() {
        let (len, header) = match buf[i + 1] & 0x7f {
            126 if i + 4 <= buf.len() => (u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize, 4),
            127 if i + 10 <= buf.len() => (
                u64::from_be_bytes(buf[i + 2..i + 10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        let Some(payload) = buf.get(i + header..i + header + len) else {
            break;
        };
        if buf[i] & 0x0f == 1 {
            texts.push(String::from_utf8(payload.to_vec()).unwrap());
        }
        i += header + len;
    }
    texts
}

/// The node the cut publisher was on: its port, its log when it is a process, and how many
/// native connections it has besides the publisher.
struct CutNode<'a> {
    port: u16,
    log: Option<&'a NodeLog>,
    other_connections: f64,
}

impl CutNode<'_> {
    async fn get(&self, path: &str) -> (u16, String) {
        let mut res = awc::Client::default()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .expect("the node answers");
        let body = res.body().limit(8 << 20).await.expect("http body");
        (
            res.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn ws(&self, port: u16) -> WsClient {
        let url = format!(
            "ws://127.0.0.1:{port}/ws?access_token={}",
            token(&service())
        );
        WsClient::open(url).await.expect("websocket upgrade")
    }
}

/// How the publisher's socket is cut.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The proxy drops both sockets once 100 publishes are answered.
    AfterAnswers,
    /// Straight to the node: every publish, then half of one more frame, then the client's FIN;
    /// the node reads a frame cut short and the end of the stream while it publishes.
    MidFrame,
}

/// Item 2: a publisher on `a` sends 800 publishes to 80 channels, more than
/// `session.max_publishes_in_flight`, and its socket is cut as `cut` says; subscribers on `b`.
async fn a_cut_publisher_leaves_history_and_deliveries_equal(
    a: CutNode<'_>,
    b: &TestApp,
    cut: Cut,
) {
    const CHANNELS: usize = 80;
    const TOTAL: usize = 800;
    assert!(TOTAL > b.settings.session.max_publishes_in_flight);
    let plan = plan(TOTAL, CHANNELS);
    let mut subs = vec![subscriber(b, CHANNELS).await, subscriber(b, CHANNELS).await];

    let replies = match cut {
        Cut::AfterAnswers => cut_after_answers(&a, &plan).await,
        Cut::MidFrame => cut_mid_frame(&a, &plan).await,
    };
    if matches!(cut, Cut::AfterAnswers) {
        // The cut came with publishes still unanswered (it comes after 100 answers of 800).
        assert!(replies.len() < TOTAL, "{} answered", replies.len());
    }
    // The node noticed: the publisher's connection is gone (and with it its publishes).
    eventually("the cut connection gone", || async {
        let (_, metrics) = a.get("/metrics").await;
        let open = metric_value(&metrics, "switchyard_connections{protocol=\"native\"}");
        (open <= a.other_connections).then_some(())
    })
    .await;

    let history = history_is_what_was_delivered(b, &mut subs, &plan).await;
    let accepted: usize = history.values().map(Vec::len).sum();
    eprintln!(
        "cut ({cut:?}) with {} of {TOTAL} publishes answered and {accepted} in history",
        replies.len()
    );
    // Nothing the publisher was told was accepted is missing.
    for (k, reply) in replies.iter().enumerate() {
        let offset = reply["offset"].as_u64().unwrap();
        let e = &history[&plan[k]]
            .get(offset as usize - 1)
            .unwrap_or_else(|| panic!("request {k}'s event (offset {offset}) is in history"));
        assert_eq!(e["id"], reply["id"], "request {k}");
        assert_eq!(e["data"]["i"], k, "request {k}");
    }

    // The node goes on: a new connection there publishes, and the subscribers get it.
    let mut again = a.ws(a.port).await;
    again.send_json(publish_frame(TOTAL, 0)).await;
    let reply = again.recv().await;
    assert_eq!(reply["type"], "published", "{reply}");
    let after_marker = history[&0].len() as u64 + 2;
    assert_eq!(reply["data"]["offset"], after_marker, "{reply}");
    for ws in subs.iter_mut() {
        let n = ws.notifications(1).await;
        assert_eq!(n[0]["data"]["i"], TOTAL, "{}", n[0]);
        assert_eq!(n[0]["offset"], after_marker, "{}", n[0]);
    }
    let (status, ready) = a.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    if let Some(log) = a.log {
        let log = log.lock().unwrap();
        let panics: Vec<&String> = log.iter().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "the node panicked: {panics:?}");
    }
}

/// Item 2 on the embedded node.
async fn cut_on_one_node(cut: Cut) {
    let app = spawn_app().await;
    let a = CutNode {
        port: app.port,
        log: None,
        other_connections: 2.0,
    };
    a_cut_publisher_leaves_history_and_deliveries_equal(a, &app, cut).await;
}

/// Item 2 on two nodes on Redis; the publisher's node is a process of its own, so its log shows
/// any panic.
async fn cut_in_a_cluster(cut: Cut) {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let db = TestDb::sqlite();
    let (_a, port, log) = spawn_node_process_logged(&[
        ("SWITCHYARD__REDIS__URL", &redis.url()),
        ("SWITCHYARD__REDIS__PREFIX", &prefix),
        ("SWITCHYARD__DATABASE__URL", db.url()),
    ])
    .await;
    let a = CutNode {
        port,
        log: Some(&log),
        other_connections: 0.0,
    };
    a_cut_publisher_leaves_history_and_deliveries_equal(a, &b, cut).await;
}

#[actix_web::test]
async fn a_publisher_cut_with_publishes_in_flight_on_one_node_loses_nothing_accepted() {
    cut_on_one_node(Cut::AfterAnswers).await;
}

#[actix_web::test]
async fn a_publisher_cut_with_publishes_in_flight_in_a_cluster_loses_nothing_accepted() {
    cut_in_a_cluster(Cut::AfterAnswers).await;
}

#[actix_web::test]
async fn a_publisher_cut_mid_frame_with_publishes_in_flight_on_one_node_loses_nothing_accepted() {
    cut_on_one_node(Cut::MidFrame).await;
}

#[actix_web::test]
async fn a_publisher_cut_mid_frame_with_publishes_in_flight_in_a_cluster_loses_nothing_accepted() {
    cut_in_a_cluster(Cut::MidFrame).await;
}

/// Item 3: a `publish/batch` of 1,000 events to 100 channels through a proxy to node a, whose
/// client is cut as soon as the batch's first event is delivered; subscribers on node b. Once a
/// has shut down (nothing of the batch can still be on its way), every channel's history is a
/// prefix of what the batch held for it, and the subscribers got exactly it, once.
#[actix_web::test]
async fn a_batch_whose_client_is_cut_leaves_history_and_deliveries_equal() {
    const CHANNELS: usize = 100;
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let total = a.settings.publish.max_batch_events;
    let plan = plan(total, CHANNELS);
    let mut subs = vec![
        subscriber(&b, CHANNELS).await,
        subscriber(&b, CHANNELS).await,
    ];
    // Tells when the batch is being published: its first event is on channel 0.
    let mut first = b.connect(&service()).await;
    first.subscribed(&channel(plan[0])).await;

    let events: Vec<Value> = plan
        .iter()
        .enumerate()
        .map(|(k, &c)| json!({"channel": channel(c), "event": "Step", "data": {"i": k}}))
        .collect();
    let body = json!({ "events": events }).to_string();
    let request = format!(
        "POST /api/v1/publish/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        token(&service()),
        body.len()
    );
    let proxy = Proxy::start(a.port).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
        .await
        .unwrap();
    let n = first.notifications(1).await;
    assert_eq!(n[0]["data"]["i"], 0, "{}", n[0]);
    proxy.sever();
    drop(client);
    // A graceful shutdown waits for requests in progress: after it, nothing of the batch is
    // still being published.
    let published = a
        .metric("switchyard_published_total{source=\"rest\"}")
        .await;
    a.stop().await;

    let history = history_is_what_was_delivered(&b, &mut subs, &plan).await;
    let accepted: usize = history.values().map(Vec::len).sum();
    eprintln!("batch cut with {published} of {total} published at the cut, {accepted} in history");
    let (status, ready) = b.get("/health/ready", None).await;
    assert_eq!(status, 200, "{ready}");
}

/// The broker messages handled so far on `node` (the admin API's figure: a count, not a time).
async fn broker_messages(node: &TestApp) -> u64 {
    let (status, body) = node
        .get("/api/v1/admin/actors", Some(&token(&operator())))
        .await;
    assert_eq!(status, 200, "{body}");
    body["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .find(|a| a["kind"] == "broker")
        .and_then(|a| a["handled"].as_u64())
        .unwrap_or_else(|| panic!("the broker's handled count in {body}"))
}

/// Sends `plan`'s publishes in one write of raw frames and reads their replies, in order.
async fn publish_in_one_write(node: &TestApp, plan: &[usize]) -> Vec<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = raw_ws_upgrade_at(node.port, &token(&service())).await;
    let mut bytes = Vec::new();
    for (k, &c) in plan.iter().enumerate() {
        client_text_frame(&publish_frame(k, c).to_string(), &mut bytes);
    }
    stream.write_all(&bytes).await.unwrap();
    let mut written = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let replies = loop {
        let texts = server_text_frames(&written);
        if texts.len() >= plan.len() {
            break texts;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the replies come")
            .unwrap();
        assert!(n > 0, "the node closed the stream");
        written.extend_from_slice(&chunk[..n]);
    };
    replies
        .iter()
        .enumerate()
        .map(|(k, text)| {
            let reply: Value = serde_json::from_str(text).unwrap();
            assert_eq!(reply["type"], "published", "{reply}");
            assert_eq!(reply["id"], k, "in request order: {reply}");
            reply["data"].clone()
        })
        .collect()
}

/// Pipelined publishes go to the broker in runs (`connection/publish_lanes.rs`), not one broker
/// message each: 64 publishes read together, to one channel and then to 64 channels, take far
/// fewer broker messages than publishes. Before runs, each publish was a message of its own (64
/// each time), and those to one channel went one round trip after another.
#[actix_web::test]
async fn pipelined_publishes_reach_the_broker_in_runs_not_one_message_each() {
    const PUBLISHES: usize = 64;
    for (what, plan) in [
        ("one channel", vec![0; PUBLISHES]),
        ("64 channels", (0..PUBLISHES).collect::<Vec<_>>()),
    ] {
        let app = spawn_app().await;
        let mut sub = subscriber(&app, PUBLISHES).await;
        let before = broker_messages(&app).await;
        let replies = publish_in_one_write(&app, &plan).await;
        let used = broker_messages(&app).await - before;
        assert!(
            used < (PUBLISHES / 2) as u64,
            "{what}: {used} broker messages for {PUBLISHES} publishes"
        );
        // Still each channel's offsets in request order, and every event delivered.
        let mut next: HashMap<usize, u64> = HashMap::new();
        for (reply, &c) in replies.iter().zip(&plan) {
            let offset = next.entry(c).or_insert(0);
            *offset += 1;
            assert_eq!(reply["offset"].as_u64(), Some(*offset), "{what}: {reply}");
        }
        assert_eq!(sub.notifications(PUBLISHES).await.len(), PUBLISHES);
    }
}
