//! A tiny HTTP/1.1 keep-alive front door on the listening port: reads request heads, routes
//! `POST /api/v1/publish`, `POST /api/v1/publish/batch` (Switchyard's body and answer: `{"events":
//! […]}` in, `200 {"results":[…]}` out, one result per event in order) and the SignalR negotiate, and hands WebSocket upgrades (`/ws`,
//! `/hubs/notifications`) to the session code after writing the `101 Switching Protocols`.
//!
//! Pipelined requests are served in order: every complete request already read is answered, and
//! the answers go out in one write. A publish never waits for a subscriber (see `rooms`).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::{session, AppState};

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (Switchyard's `publish.max_batch_bytes` default).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most events in one batch (Switchyard's `publish.max_batch_events` default).
const MAX_BATCH_EVENTS: usize = 1000;
/// Initial capacity of a connection's read buffer.
const READ_BUFFER_BYTES: usize = 4 * 1024;

const NATIVE_WS_PATH: &str = "/ws";
const HUB_PATH: &str = "/hubs/notifications";
const HUB_NEGOTIATE_PATH: &str = "/hubs/notifications/negotiate";
const PUBLISH_PATH: &str = "/api/v1/publish";
const PUBLISH_BATCH_PATH: &str = "/api/v1/publish/batch";
/// The status of a published event, in the single answer and in each batch result.
const ACCEPTED_STATUS: u16 = 202;
const BAD_REQUEST_STATUS: u16 = 400;

/// The parts of a request head this server looks at.
struct RequestHead {
    method: String,
    path: String,
    content_length: usize,
    websocket_key: Option<String>,
    upgrade_websocket: bool,
    close_after: bool,
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let version = request_line.next().unwrap_or("HTTP/1.1");
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut parsed = RequestHead {
        method,
        path,
        content_length: 0,
        websocket_key: None,
        upgrade_websocket: false,
        close_after: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("upgrade") {
            parsed.upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            parsed.websocket_key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close_after |= value.eq_ignore_ascii_case("close");
        }
    }
    Some(parsed)
}

fn response(status: &str, body: &str, close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Deserialize)]
struct PublishRequest<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn problem(title: &str, detail: &str) -> String {
    format!(
        r#"{{"title":{},"detail":{}}}"#,
        serde_json::to_string(title).unwrap_or_default(),
        serde_json::to_string(detail).unwrap_or_default()
    )
}

/// Publishes one event and returns its `{"id","offset","epoch"}`, or the problem's detail.
fn publish_one(state: &AppState, request: &PublishRequest<'_>) -> Result<String, String> {
    if request.channel.is_empty() {
        return Err("channel: required".to_owned());
    }
    let event = request
        .event
        .as_deref()
        .unwrap_or(crate::frames::DEFAULT_EVENT);
    let published = state
        .rooms
        .publish(&state.identity, &request.channel, event, request.data);
    Ok(format!(
        r#"{{"id":{},"offset":{},"epoch":{}}}"#,
        serde_json::to_string(&published.id).unwrap_or_default(),
        published.offset,
        serde_json::to_string(state.identity.epoch()).unwrap_or_default()
    ))
}

fn publish(state: &AppState, body: &[u8]) -> (&'static str, String) {
    let request: PublishRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return (
                "400 Bad Request",
                problem("invalid publish body", &e.to_string()),
            )
        }
    };
    match publish_one(state, &request) {
        Ok(answer) => ("202 Accepted", answer),
        Err(detail) => ("400 Bad Request", problem("invalid publish body", &detail)),
    }
}

#[derive(Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    events: Vec<PublishRequest<'a>>,
}

/// Publishes each event in order; a refused event gets its problem (with its `status`) in its
/// place and does not stop the ones after it.
fn publish_batch(state: &AppState, body: &[u8]) -> (&'static str, String) {
    let request: BatchRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return (
                "400 Bad Request",
                problem("invalid batch body", &e.to_string()),
            )
        }
    };
    if request.events.is_empty() || request.events.len() > MAX_BATCH_EVENTS {
        let detail = format!(
            "events: {} given; a batch holds 1 to {MAX_BATCH_EVENTS}",
            request.events.len()
        );
        return ("400 Bad Request", problem("invalid batch body", &detail));
    }
    let mut out = String::with_capacity(request.events.len() * 96 + 16);
    out.push_str(r#"{"results":["#);
    for (i, event) in request.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match publish_one(state, event) {
            // `{"id",…}` becomes `{"status":202,"id",…}`.
            Ok(answer) => {
                out.push_str(&format!(r#"{{"status":{ACCEPTED_STATUS},"#));
                out.push_str(&answer[1..]);
            }
            Err(detail) => {
                let detail = serde_json::to_string(&detail).unwrap_or_default();
                out.push_str(&format!(
                    r#"{{"status":{BAD_REQUEST_STATUS},"title":"invalid event","detail":{detail}}}"#
                ));
            }
        }
    }
    out.push_str("]}");
    ("200 OK", out)
}

fn negotiate(state: &AppState) -> String {
    let token = format!("c{}", state.next_connection_id());
    format!(
        r#"{{"negotiateVersion":1,"connectionId":"{token}","connectionToken":"{token}","availableTransports":[{{"transport":"WebSockets","transferFormats":["Text","Binary"]}}]}}"#
    )
}

async fn upgrade(
    mut stream: TcpStream,
    head: RequestHead,
    leftover: Vec<u8>,
    state: Arc<AppState>,
) {
    let native = head.path == NATIVE_WS_PATH;
    let hub = head.path == HUB_PATH;
    let Some(key) = head.websocket_key.filter(|_| native || hub) else {
        let _ = stream
            .write_all(&response("404 Not Found", "{}", true))
            .await;
        return;
    };
    let accept = derive_accept_key(key.as_bytes());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(state.ws_read_buffer_bytes)
        .write_buffer_size(state.ws_write_buffer_bytes);
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    if native {
        session::run_native(ws, state).await;
    } else {
        session::run_signalr(ws, state).await;
    }
}

/// Serves one accepted TCP connection until it closes or upgrades.
pub async fn serve_connection(mut stream: TcpStream, state: Arc<AppState>) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Answer every complete request read so far (HTTP/1.1 pipelining), in order.
        let mut consumed = 0;
        let mut close = false;
        loop {
            let pending = &buf[consumed..];
            let Some(head_end) = find_head_end(pending) else {
                if pending.len() > MAX_HEAD_BYTES {
                    out.extend(response("431 Request Header Fields Too Large", "{}", true));
                    close = true;
                }
                break;
            };
            let Some(head) = parse_head(&pending[..head_end]) else {
                out.extend(response("400 Bad Request", "{}", true));
                close = true;
                break;
            };
            if head.upgrade_websocket {
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return;
                }
                let leftover = buf.split_off(consumed + head_end);
                upgrade(stream, head, leftover, state).await;
                return;
            }
            if head.content_length > MAX_BODY_BYTES {
                out.extend(response("413 Payload Too Large", "{}", true));
                close = true;
                break;
            }
            let request_end = head_end + head.content_length;
            if pending.len() < request_end {
                break;
            }
            let body = &pending[head_end..request_end];
            let (status, body) = match (head.method.as_str(), head.path.as_str()) {
                ("POST", PUBLISH_PATH) => publish(&state, body),
                ("POST", PUBLISH_BATCH_PATH) => publish_batch(&state, body),
                ("POST", HUB_NEGOTIATE_PATH) => ("200 OK", negotiate(&state)),
                _ => ("404 Not Found", "{}".to_owned()),
            };
            out.extend(response(status, &body, head.close_after));
            consumed += request_end;
            if head.close_after {
                close = true;
                break;
            }
        }
        buf.drain(..consumed);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::ServerIdentity;
    use crate::rooms::Rooms;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    fn state() -> Arc<AppState> {
        Arc::new(AppState {
            rooms: Rooms::new(),
            identity: ServerIdentity::new(),
            queue_capacity: 16,
            heartbeat_interval: Duration::from_secs(15),
            ws_read_buffer_bytes: 4096,
            ws_write_buffer_bytes: 4096,
            next_connection: AtomicU64::new(1),
        })
    }

    async fn serve(state: Arc<AppState>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                tokio::spawn(serve_connection(socket, Arc::clone(&state)));
            }
        });
        addr
    }

    async fn next_text<S>(ws: &mut WebSocketStream<S>) -> serde_json::Value
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use futures_util::StreamExt;
        loop {
            match ws.next().await.unwrap().unwrap() {
                tokio_tungstenite::tungstenite::Message::Text(text) => {
                    return serde_json::from_str(&text).unwrap()
                }
                _ => continue,
            }
        }
    }

    #[tokio::test]
    async fn pipelined_publish_frames_are_acknowledged_and_delivered() {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let addr = serve(state()).await;
        let url = format!("ws://{addr}{NATIVE_WS_PATH}");
        let (mut subscriber, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        subscriber
            .send(Message::text(
                r#"{"type":"subscribe","id":1,"data":{"channel":"c"}}"#,
            ))
            .await
            .unwrap();
        assert_eq!(next_text(&mut subscriber).await["type"], "subscribed");
        let (mut publisher, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        for id in 1..=3 {
            let frame = format!(
                r#"{{"type":"publish","id":{id},"data":{{"channel":"c","event":"E","data":{{"seq":{id}}}}}}}"#
            );
            publisher.feed(Message::text(frame)).await.unwrap();
        }
        publisher
            .feed(Message::text(
                r#"{"type":"publish","id":4,"data":{"event":"E"}}"#,
            ))
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        for id in 1..=3 {
            let ack = next_text(&mut publisher).await;
            assert_eq!(ack["type"], "published");
            assert_eq!(ack["id"], id);
            assert_eq!(ack["data"]["offset"], id);
        }
        let refused = next_text(&mut publisher).await;
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["id"], 4);
        for seq in 1..=3 {
            let notification = next_text(&mut subscriber).await;
            assert_eq!(notification["type"], "notification");
            assert_eq!(notification["data"]["data"]["seq"], seq);
        }
    }

    #[tokio::test]
    async fn a_messagepack_hub_subscriber_gets_binary_records() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let addr = serve(state()).await;
        let (mut hub, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{HUB_PATH}?id=c1"))
            .await
            .unwrap();
        hub.send(Message::text(
            "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}",
        ))
        .await
        .unwrap();
        let Some(Ok(Message::Text(handshake))) = hub.next().await else {
            panic!("a text handshake answer");
        };
        assert_eq!(handshake.as_str(), "{}\u{1e}");
        // [1, {}, "1", "Subscribe", ["c"]] behind its length.
        let mut invocation = Vec::new();
        rmpv::encode::write_value(
            &mut invocation,
            &rmpv::Value::Array(vec![
                1.into(),
                rmpv::Value::Map(vec![]),
                "1".into(),
                "Subscribe".into(),
                rmpv::Value::Array(vec!["c".into()]),
            ]),
        )
        .unwrap();
        invocation.insert(0, invocation.len() as u8);
        hub.send(Message::binary(invocation)).await.unwrap();
        let completion = loop {
            if let Message::Binary(frame) = hub.next().await.unwrap().unwrap() {
                let record = crate::frames::msgpack_records(&frame)
                    .next()
                    .unwrap()
                    .to_vec();
                break rmpv::decode::read_value(&mut &record[..]).unwrap();
            }
        };
        assert_eq!(completion[0], rmpv::Value::from(3));
        assert_eq!(completion[2], rmpv::Value::from("1"));
        assert_eq!(
            completion[3],
            rmpv::Value::from(3),
            "a result, not an error"
        );
        let mut client = TcpStream::connect(addr).await.unwrap();
        let body = r#"{"channel":"c","event":"E","data":{"seq":5}}"#;
        client
            .write_all(
                format!(
                    "POST {PUBLISH_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let notification = loop {
            if let Message::Binary(frame) = hub.next().await.unwrap().unwrap() {
                let record = crate::frames::msgpack_records(&frame)
                    .next()
                    .unwrap()
                    .to_vec();
                break rmpv::decode::read_value(&mut &record[..]).unwrap();
            }
        };
        assert_eq!(notification[3], rmpv::Value::from("E"));
        assert_eq!(notification[4][0]["data"]["seq"], rmpv::Value::from(5));
    }

    #[tokio::test]
    async fn a_batch_publishes_every_event_in_order_with_a_result_each() {
        let state = state();
        let body = r#"{"events":[
            {"channel":"c","event":"E","data":{"seq":1}},
            {"channel":"","event":"E","data":{"seq":2}},
            {"channel":"c","event":"E","data":{"seq":3}}]}"#;
        let (status, answer) = publish_batch(&state, body.as_bytes());
        assert_eq!(status, "200 OK");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0]["status"], 202);
        assert_eq!(results[0]["offset"], 1);
        assert_eq!(results[1]["status"], 400);
        assert_eq!(results[2]["status"], 202);
        assert_eq!(results[2]["offset"], 2, "a refused event takes no offset");
        let (status, _) = publish_batch(&state, br#"{"events":[]}"#);
        assert_eq!(status, "400 Bad Request");
    }

    #[tokio::test]
    async fn pipelined_publishes_are_answered_in_order_in_one_go() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = state();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve_connection(socket, state).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let body = r#"{"channel":"c","event":"E","data":{"seq":1}}"#;
        let one = format!(
            "POST {PUBLISH_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let last = format!(
            "POST {PUBLISH_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        client
            .write_all(format!("{one}{one}{last}").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(
            answer.matches("HTTP/1.1 202 Accepted").count(),
            3,
            "{answer}"
        );
        let offsets: Vec<usize> = (1..=3)
            .map(|n| answer.find(&format!(r#""offset":{n}"#)).expect("offset"))
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "in order: {answer}"
        );
    }
}
