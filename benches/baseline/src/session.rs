//! One WebSocket connection: the reader that handles client frames (native protocol, including
//! pipelined `publish` frames answered with `published`, or the SignalR hub protocol in JSON or
//! MessagePack, as the client's handshake chooses) and the
//! writer task that drains the bounded outbound queue — every frame queued, fed to the socket and
//! flushed once per drain — sends heartbeats, and closes the connection (4000) when the rooms drop
//! it as a slow consumer.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::frames::{self, HubCall, RECORD_SEPARATOR};
use crate::rooms::{Protocol, Subscriber};
use crate::AppState;

/// Close code sent to a connection dropped as a slow consumer (Switchyard's 4000).
const SLOW_CONSUMER_CLOSE_CODE: u16 = 4000;

/// SignalR hub-protocol message types used here.
const HUB_INVOCATION: u64 = 1;
const HUB_PING: u64 = 6;
const HUB_CLOSE: u64 = 7;

/// The SignalR handshake reply: an empty object and the record separator.
const HUB_HANDSHAKE_OK: &str = "{}\u{1e}";

/// The SignalR keep-alive record.
const HUB_PING_RECORD: &str = "{\"type\":6}\u{1e}";

type Ws = WebSocketStream<TcpStream>;
type WsSink = futures_util::stream::SplitSink<Ws, Message>;

/// Drains the outbound queue into the socket: waits for one frame, then feeds every frame already
/// queued (at most one queue's worth, so a flush always comes) and flushes once. Sends `heartbeat`
/// at the configured interval, and closes with 4000 when `kick` says the connection was dropped as
/// a slow consumer.
async fn write_loop(
    mut sink: WsSink,
    mut outbox: mpsc::Receiver<Message>,
    heartbeat: Message,
    kick: Arc<Notify>,
    state: Arc<AppState>,
) {
    let mut ticker = tokio::time::interval(state.heartbeat_interval);
    ticker.reset();
    let most_per_flush = state.queue_capacity.max(1);
    loop {
        tokio::select! {
            next = outbox.recv() => {
                let Some(first) = next else { break };
                if sink.feed(first).await.is_err() {
                    break;
                }
                let mut written = 1;
                while written < most_per_flush {
                    let Ok(message) = outbox.try_recv() else { break };
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                    written += 1;
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            _ = kick.notified() => {
                let close = CloseFrame {
                    code: CloseCode::from(SLOW_CONSUMER_CLOSE_CODE),
                    reason: Utf8Bytes::from_static("slow consumer"),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
                break;
            }
            _ = ticker.tick() => {
                if sink.send(heartbeat.clone()).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
}

/// What a connection remembers about itself while it lives.
struct Connection {
    id: u64,
    outbox: mpsc::Sender<Message>,
    kick: Arc<Notify>,
    channels: Vec<Box<str>>,
    state: Arc<AppState>,
}

impl Connection {
    fn subscribe(&mut self, channel: &str, protocol: Protocol, reply: impl FnOnce(u64) -> Message) {
        let subscriber = Subscriber {
            connection_id: self.id,
            protocol,
            outbox: self.outbox.clone(),
            kick: Arc::clone(&self.kick),
        };
        self.state.rooms.subscribe(channel, subscriber, reply);
        self.channels.push(channel.into());
    }

    async fn reply(&self, frame: Message) {
        let _ = self.outbox.send(frame).await;
    }

    async fn reply_text(&self, frame: Utf8Bytes) {
        self.reply(Message::Text(frame)).await;
    }

    fn leave_all(&mut self) {
        for channel in self.channels.drain(..) {
            self.state.rooms.unsubscribe(&channel, self.id);
        }
    }
}

fn open(
    ws: Ws,
    state: Arc<AppState>,
    heartbeat: Message,
) -> (Connection, futures_util::stream::SplitStream<Ws>) {
    let (sink, stream) = ws.split();
    let (outbox, inbox) = mpsc::channel(state.queue_capacity);
    let kick = Arc::new(Notify::new());
    tokio::spawn(write_loop(
        sink,
        inbox,
        heartbeat,
        Arc::clone(&kick),
        Arc::clone(&state),
    ));
    let connection = Connection {
        id: state.next_connection_id(),
        outbox,
        kick,
        channels: Vec::new(),
        state,
    };
    (connection, stream)
}

#[derive(Deserialize)]
struct NativeFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<NativeData<'a>>,
}

#[derive(Deserialize)]
struct NativeData<'a> {
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Handles a `publish` frame: fans the event out (never waiting for a subscriber) and answers
/// `published` with the request's id, or an `error` when the frame lacks a channel or data.
fn publish_frame(
    state: &AppState,
    request_id: Option<&RawValue>,
    data: Option<NativeData<'_>>,
) -> Utf8Bytes {
    let Some(NativeData {
        channel: Some(channel),
        event,
        data: Some(data),
    }) = data.filter(|d| d.channel.as_deref().is_some_and(|c| !c.is_empty()))
    else {
        return frames::native_error(
            request_id,
            "bad_request",
            "publish: data.channel and data.data are required",
        );
    };
    let event = event.as_deref().unwrap_or(frames::DEFAULT_EVENT);
    let published = state.rooms.publish(&state.identity, &channel, event, data);
    frames::native_published(
        request_id,
        &published.id,
        published.offset,
        state.identity.epoch(),
    )
}

/// Serves the native protocol at `/ws` until the peer goes away.
pub async fn run_native(ws: Ws, state: Arc<AppState>) {
    let (mut connection, mut stream) = open(ws, state, Message::Ping(Default::default()));
    let mut subscriptions: u64 = 0;
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let frame: NativeFrame<'_> = match serde_json::from_str(&text) {
            Ok(frame) => frame,
            Err(e) => {
                connection
                    .reply_text(frames::native_error(None, "bad_json", &e.to_string()))
                    .await;
                continue;
            }
        };
        match frame.kind.as_ref() {
            "subscribe" => {
                let channel = frame.data.and_then(|d| d.channel).unwrap_or_default();
                if channel.is_empty() {
                    let error = frames::native_subscription_error(
                        frame.id,
                        "",
                        "invalid_channel",
                        "data.channel is required",
                    );
                    connection.reply_text(error).await;
                    continue;
                }
                subscriptions += 1;
                let subscription_id = format!("{}-{subscriptions}", connection.id);
                let epoch = connection.state.identity.epoch().to_owned();
                let request_id = frame.id;
                let name = channel.clone();
                connection.subscribe(&channel, Protocol::Native, move |offset| {
                    Message::Text(frames::native_subscribed(
                        request_id,
                        &name,
                        &subscription_id,
                        offset,
                        &epoch,
                    ))
                });
            }
            "publish" => {
                let reply = publish_frame(&connection.state, frame.id, frame.data);
                connection.reply_text(reply).await;
            }
            "ping" => {
                connection
                    .reply_text(Utf8Bytes::from_static(r#"{"type":"pong"}"#))
                    .await
            }
            other => {
                let reason = format!("unknown message type {other:?}");
                connection
                    .reply_text(frames::native_error(frame.id, "unknown_type", &reason))
                    .await;
            }
        }
    }
    connection.leave_all();
}

#[derive(Deserialize)]
struct HubRecord<'a> {
    #[serde(rename = "type")]
    kind: u64,
    #[serde(rename = "invocationId", borrow, default)]
    invocation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Vec<Cow<'a, str>>,
}

impl From<HubRecord<'_>> for HubCall {
    fn from(record: HubRecord<'_>) -> Self {
        HubCall {
            kind: record.kind,
            invocation_id: record.invocation_id.unwrap_or_default().into_owned(),
            target: record.target.unwrap_or_default().into_owned(),
            arguments: record.arguments.into_iter().map(Cow::into_owned).collect(),
        }
    }
}

/// The hub protocol a client chose in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HubFormat {
    /// Text frames, records ending with 0x1E.
    Json,
    /// Binary frames, records behind a varint length.
    MessagePack,
}

#[derive(Deserialize)]
struct HandshakeRequest<'a> {
    #[serde(borrow, default)]
    protocol: Cow<'a, str>,
}

/// Reads the handshake (`{"protocol":"json"|"messagepack","version":1}` + 0x1E, the first
/// record) and returns the format and whatever followed it in the same frame.
async fn read_handshake(ws: &mut Ws) -> Option<(HubFormat, Vec<u8>)> {
    loop {
        let frame = match ws.next().await? {
            Ok(Message::Text(text)) => Bytes::from(text),
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        let end = frame.iter().position(|&b| b == RECORD_SEPARATOR as u8)?;
        let request: HandshakeRequest<'_> = serde_json::from_slice(&frame[..end]).ok()?;
        let format = if request.protocol == "messagepack" {
            HubFormat::MessagePack
        } else {
            HubFormat::Json
        };
        return Some((format, frame[end + 1..].to_vec()));
    }
}

/// Serves the SignalR hub protocol (JSON or MessagePack) at `/hubs/notifications` until the peer
/// goes away.
pub async fn run_signalr(mut ws: Ws, state: Arc<AppState>) {
    let Some((format, rest)) = read_handshake(&mut ws).await else {
        return;
    };
    let heartbeat = match format {
        HubFormat::Json => Message::Text(Utf8Bytes::from_static(HUB_PING_RECORD)),
        HubFormat::MessagePack => Message::Binary(Bytes::from_static(frames::MSGPACK_PING_RECORD)),
    };
    let (mut connection, mut stream) = open(ws, state, heartbeat);
    connection
        .reply(Message::Text(Utf8Bytes::from_static(HUB_HANDSHAKE_OK)))
        .await;
    let mut pending = Some(rest);
    loop {
        let frame: Vec<u8> = match pending.take() {
            Some(rest) => rest,
            None => match stream.next().await {
                Some(Ok(Message::Text(text))) if format == HubFormat::Json => {
                    text.as_bytes().to_vec()
                }
                Some(Ok(Message::Binary(bytes))) if format == HubFormat::MessagePack => {
                    bytes.to_vec()
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
        };
        let calls: Vec<HubCall> = match format {
            HubFormat::Json => std::str::from_utf8(&frame)
                .unwrap_or_default()
                .split(RECORD_SEPARATOR)
                .filter(|r| !r.is_empty())
                .filter_map(|r| serde_json::from_str::<HubRecord<'_>>(r).ok())
                .map(HubCall::from)
                .collect(),
            HubFormat::MessagePack => frames::msgpack_records(&frame)
                .filter_map(frames::read_msgpack_call)
                .collect(),
        };
        for call in calls {
            match call.kind {
                HUB_INVOCATION => handle_hub_invocation(&mut connection, format, call).await,
                HUB_PING => {}
                HUB_CLOSE => {
                    connection.leave_all();
                    return;
                }
                _ => {}
            }
        }
    }
    connection.leave_all();
}

fn completion_error(format: HubFormat, invocation_id: &str, error: &str) -> Message {
    match format {
        HubFormat::Json => Message::Text(frames::signalr_completion_error(invocation_id, error)),
        HubFormat::MessagePack => Message::Binary(frames::signalr_msgpack_completion_error(
            invocation_id,
            error,
        )),
    }
}

async fn handle_hub_invocation(connection: &mut Connection, format: HubFormat, call: HubCall) {
    let invocation_id = call.invocation_id;
    match call.target.as_str() {
        "Subscribe" | "JoinChannel" => {
            let Some(channel) = call.arguments.first().filter(|c| !c.is_empty()) else {
                let error =
                    completion_error(format, &invocation_id, "a channel argument is required");
                connection.reply(error).await;
                return;
            };
            let epoch = connection.state.identity.epoch().to_owned();
            let channel = channel.clone();
            let (protocol, name) = match format {
                HubFormat::Json => (
                    Protocol::SignalR,
                    serde_json::to_string(&channel).unwrap_or_default(),
                ),
                HubFormat::MessagePack => (Protocol::SignalRMsgpack, channel.clone()),
            };
            connection.subscribe(&channel, protocol, move |offset| match format {
                HubFormat::Json => {
                    let epoch = serde_json::to_string(&epoch).unwrap_or_default();
                    let result =
                        format!(r#"{{"channel":{name},"offset":{offset},"epoch":{epoch}}}"#);
                    Message::Text(frames::signalr_completion_result(&invocation_id, &result))
                }
                HubFormat::MessagePack => {
                    use rmpv::Value as Mp;
                    let result = Mp::Map(vec![
                        (Mp::from("channel"), Mp::from(name)),
                        (Mp::from("offset"), Mp::from(offset)),
                        (Mp::from("epoch"), Mp::from(epoch)),
                    ]);
                    Message::Binary(frames::signalr_msgpack_completion_result(
                        &invocation_id,
                        result,
                    ))
                }
            });
        }
        "Ping" => {
            let pong = match format {
                HubFormat::Json => Message::Text(frames::signalr_completion_result(
                    &invocation_id,
                    "\"pong\"",
                )),
                HubFormat::MessagePack => {
                    Message::Binary(frames::signalr_msgpack_completion_result(
                        &invocation_id,
                        rmpv::Value::from("pong"),
                    ))
                }
            };
            connection.reply(pong).await;
        }
        other => {
            let error = format!("unknown hub method {other:?}");
            connection
                .reply(completion_error(format, &invocation_id, &error))
                .await;
        }
    }
}
