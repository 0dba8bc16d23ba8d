//! One subscriber connection: connect (with the SignalR negotiate when asked), subscribe to one
//! channel, then receive until told to stop, scanning each delivery for its stamp and recording
//! sequence and latency with as little work per message as possible. Four protocols: native,
//! SignalR JSON, SignalR MessagePack (binary, varint-prefixed records; `hub_msgpack`) and
//! Socket.IO (`socketio`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::cli::Protocol;
use crate::http_client::HttpConnection;
use crate::hub_msgpack;
use crate::net::Dialer;
use crate::payload::{self, now_micros};
use crate::socketio;
use crate::stats::{
    ConnectOutcome, LatencyRecorder, LatencyShards, Progress, SeqTracker, SubscriberStats,
};

/// SignalR record separator.
const RECORD_SEPARATOR: char = '\u{1e}';
/// SignalR handshake request for the JSON hub protocol.
const HUB_HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
/// SignalR keep-alive record, sent so the server's client timeout never fires on idle hubs.
const HUB_PING_RECORD: &str = "{\"type\":6}\u{1e}";
/// How often an idle hub client sends its keep-alive (SignalR's default is 15 s).
const HUB_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Completion error of a hub subscribe to a channel the connection was joined to on connect.
const HUB_ALREADY_SUBSCRIBED: &str = "already subscribed";
/// Invocation id of the subscribe call.
const SUBSCRIBE_INVOCATION_ID: &str = "1";
/// Keep-alive connections used for SignalR negotiates at most (they also cost file descriptors on
/// both sides, which matters near the descriptor limit).
pub const NEGOTIATE_CONNECTIONS: usize = 16;
/// Native WebSocket path.
pub(crate) const NATIVE_WS_PATH: &str = "/ws";

type Ws = WebSocketStream<TcpStream>;

/// Everything subscribers share.
pub struct SubscriberContext {
    pub dialer: Arc<Dialer>,
    pub protocol: Protocol,
    pub hub_path: String,
    pub hub_method: String,
    /// Limits connections being set up at once.
    pub connect_gate: Semaphore,
    /// Keep-alive connections reused for SignalR negotiates.
    pub negotiate_pool: Mutex<Vec<HttpConnection>>,
    /// Bounds the negotiate connections to [`NEGOTIATE_CONNECTIONS`].
    pub negotiate_gate: Semaphore,
    pub latency: Arc<LatencyShards>,
    pub progress: Arc<Progress>,
    pub setup_timeout: Duration,
    pub ws_read_buffer_bytes: usize,
    /// First few setup failures, for the report.
    pub error_samples: ErrorSamples,
}

/// Keeps the first few distinct error messages of a kind.
#[derive(Default)]
pub struct ErrorSamples {
    samples: Mutex<Vec<String>>,
}

/// Error messages kept per kind.
const MAX_ERROR_SAMPLES: usize = 3;

impl SubscriberContext {
    /// Closes the pooled negotiate connections once every subscriber is set up.
    pub fn release_negotiate_pool(&self) {
        self.negotiate_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl ErrorSamples {
    pub fn note(&self, message: String) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < MAX_ERROR_SAMPLES && !samples.contains(&message) {
            samples.push(message);
        }
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What one subscriber connects as and to.
pub struct SubscriberPlan {
    pub index: usize,
    pub channel: String,
    pub token: String,
}

/// Per-connection receive state.
struct Receiver {
    seq: SeqTracker,
    latency: LatencyRecorder,
    last_receive_micros: u64,
    progress: Arc<Progress>,
}

impl Receiver {
    /// Records the delivery in `text` if it is one; returns whether it was.
    fn on_text(&mut self, text: &str) -> bool {
        self.on_stamp(payload::scan(text))
    }

    /// Records the delivery in a MessagePack record if it is one; returns whether it was.
    fn on_msgpack(&mut self, record: &[u8]) -> bool {
        self.on_stamp(payload::scan_msgpack(record))
    }

    fn on_stamp(&mut self, stamp: Option<payload::Stamp>) -> bool {
        let Some(stamp) = stamp else {
            return false;
        };
        let now = now_micros();
        if self.seq.record(stamp.seq) {
            self.progress
                .delivered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.latency
                .record(now.saturating_sub(stamp.sent_at_micros));
        }
        self.last_receive_micros = now;
        true
    }
}

enum SetupError {
    Connect(String),
    Refused(String),
}

impl From<socketio::SetupError> for SetupError {
    fn from(e: socketio::SetupError) -> Self {
        match e {
            socketio::SetupError::Connect(m) => SetupError::Connect(m),
            socketio::SetupError::Refused(m) => SetupError::Refused(m),
        }
    }
}

pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs one subscriber from connect to stop, reporting the setup outcome on `ready` as soon as it
/// is known.
pub async fn run(
    ctx: Arc<SubscriberContext>,
    plan: SubscriberPlan,
    ready: mpsc::UnboundedSender<(usize, ConnectOutcome)>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberStats {
    let mut stats = SubscriberStats {
        index: plan.index,
        ..Default::default()
    };
    let mut receiver = Receiver {
        seq: SeqTracker::default(),
        latency: LatencyRecorder::new(Arc::clone(&ctx.latency), plan.index),
        last_receive_micros: 0,
        progress: Arc::clone(&ctx.progress),
    };
    let setup = {
        let _permit = ctx.connect_gate.acquire().await;
        match tokio::time::timeout(ctx.setup_timeout, setup(&ctx, &plan, &mut receiver)).await {
            Ok(result) => result,
            Err(_) => Err(SetupError::Connect(
                "connect/subscribe timed out".to_owned(),
            )),
        }
    };
    let mut ws = match setup {
        Ok(ws) => ws,
        Err(error) => {
            let (outcome, message) = match error {
                SetupError::Connect(m) => (ConnectOutcome::ConnectFailed, m),
                SetupError::Refused(m) => (ConnectOutcome::SubscribeRefused, m),
            };
            ctx.error_samples.note(message);
            stats.outcome = outcome;
            let _ = ready.send((plan.index, outcome));
            return stats;
        }
    };
    stats.outcome = ConnectOutcome::Subscribed;
    let _ = ready.send((plan.index, ConnectOutcome::Subscribed));

    let protocol = ctx.protocol;
    let hub = protocol.is_hub();
    let keepalive_record = match protocol {
        Protocol::SignalrMsgpack => Message::binary(hub_msgpack::PING_RECORD),
        _ => Message::text(HUB_PING_RECORD),
    };
    let mut keepalive = tokio::time::interval(HUB_KEEPALIVE_INTERVAL);
    keepalive.reset();
    enum Event {
        Stop,
        Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
        Keepalive,
    }
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => Event::Stop,
            frame = ws.next() => Event::Frame(frame),
            _ = keepalive.tick(), if hub => Event::Keepalive,
        };
        match event {
            Event::Stop => break,
            Event::Keepalive => {
                if ws.send(keepalive_record.clone()).await.is_err() {
                    stats.disconnected_early = true;
                    break;
                }
            }
            Event::Frame(Some(Ok(Message::Text(text)))) => match protocol {
                Protocol::Signalr => {
                    for record in text.split(RECORD_SEPARATOR) {
                        receiver.on_text(record);
                    }
                }
                Protocol::Socketio if text.as_str() == socketio::PING => {
                    if ws.send(Message::text(socketio::PONG)).await.is_err() {
                        stats.disconnected_early = true;
                        break;
                    }
                }
                _ => {
                    receiver.on_text(&text);
                }
            },
            Event::Frame(Some(Ok(Message::Binary(frame))))
                if protocol == Protocol::SignalrMsgpack =>
            {
                for record in hub_msgpack::records(&frame) {
                    receiver.on_msgpack(record);
                }
            }
            Event::Frame(Some(Ok(Message::Close(_))))
            | Event::Frame(Some(Err(_)))
            | Event::Frame(None) => {
                if !*stop.borrow() {
                    stats.disconnected_early = true;
                }
                break;
            }
            Event::Frame(Some(Ok(_))) => {}
        }
    }
    receiver.latency.flush();
    stats.seq = std::mem::take(&mut receiver.seq);
    stats.last_receive_micros = receiver.last_receive_micros;
    stats
}

async fn setup(
    ctx: &SubscriberContext,
    plan: &SubscriberPlan,
    receiver: &mut Receiver,
) -> Result<Ws, SetupError> {
    let authority = &ctx.dialer.endpoint.authority;
    let url = match ctx.protocol {
        Protocol::Native => format!(
            "ws://{authority}{NATIVE_WS_PATH}?access_token={}",
            percent_encode(&plan.token)
        ),
        Protocol::Socketio => socketio::url(authority),
        Protocol::Signalr | Protocol::SignalrMsgpack => {
            let connection_token = negotiate(ctx, plan).await?;
            format!(
                "ws://{authority}{}?id={}&access_token={}",
                ctx.hub_path,
                percent_encode(&connection_token),
                percent_encode(&plan.token)
            )
        }
    };
    let stream = ctx
        .dialer
        .connect(plan.index)
        .await
        .map_err(|e| SetupError::Connect(format!("tcp connect: {e}")))?;
    let config = WebSocketConfig::default().read_buffer_size(ctx.ws_read_buffer_bytes);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .map_err(|e| SetupError::Connect(format!("websocket handshake: {e}")))?;
    match ctx.protocol {
        Protocol::Native => subscribe_native(&mut ws, &plan.channel, receiver).await?,
        Protocol::Signalr => {
            subscribe_hub(&mut ws, &ctx.hub_method, &plan.channel, receiver).await?
        }
        Protocol::SignalrMsgpack => {
            subscribe_hub_msgpack(&mut ws, &ctx.hub_method, &plan.channel, receiver).await?
        }
        Protocol::Socketio => {
            socketio::connect(&mut ws, &plan.token).await?;
            socketio::subscribe(&mut ws, &plan.channel, |text| {
                receiver.on_text(text);
            })
            .await?
        }
    }
    Ok(ws)
}

async fn negotiate(ctx: &SubscriberContext, plan: &SubscriberPlan) -> Result<String, SetupError> {
    let _permit = ctx.negotiate_gate.acquire().await;
    let pooled = ctx
        .negotiate_pool
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop();
    let mut connection = match pooled {
        Some(connection) => connection,
        None => HttpConnection::open(&ctx.dialer, plan.index)
            .await
            .map_err(|e| SetupError::Connect(format!("negotiate connect: {e}")))?,
    };
    let path = format!("{}/negotiate?negotiateVersion=1", ctx.hub_path);
    let response = connection
        .post_json(&path, &plan.token, b"")
        .await
        .map_err(|e| SetupError::Connect(format!("negotiate: {e}")))?;
    if !connection.closed {
        ctx.negotiate_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(connection);
    }
    if response.status != 200 {
        return Err(SetupError::Refused(format!(
            "negotiate answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )));
    }
    let body: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| SetupError::Connect(format!("negotiate body: {e}")))?;
    body.get("connectionToken")
        .or_else(|| body.get("connectionId"))
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| SetupError::Refused("negotiate returned no connectionToken".to_owned()))
}

/// Reads the next text frame during setup; anything else than text is skipped.
async fn next_text(ws: &mut Ws) -> Result<String, SetupError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(SetupError::Refused(format!(
                    "closed during subscribe: {frame:?}"
                )))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SetupError::Connect(format!("read during subscribe: {e}"))),
            None => return Err(SetupError::Connect("closed during subscribe".to_owned())),
        }
    }
}

async fn subscribe_native(
    ws: &mut Ws,
    channel: &str,
    receiver: &mut Receiver,
) -> Result<(), SetupError> {
    let request = serde_json::json!({"type": "subscribe", "id": 1, "data": {"channel": channel}});
    ws.send(Message::text(request.to_string()))
        .await
        .map_err(|e| SetupError::Connect(format!("send subscribe: {e}")))?;
    loop {
        let text = next_text(ws).await?;
        if receiver.on_text(&text) {
            continue;
        }
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match frame.get("type").and_then(|t| t.as_str()) {
            Some("subscribed") => return Ok(()),
            Some("subscription_error") | Some("error") => return Err(SetupError::Refused(text)),
            _ => {}
        }
    }
}

async fn subscribe_hub(
    ws: &mut Ws,
    method: &str,
    channel: &str,
    receiver: &mut Receiver,
) -> Result<(), SetupError> {
    ws.send(Message::text(HUB_HANDSHAKE))
        .await
        .map_err(|e| SetupError::Connect(format!("send handshake: {e}")))?;
    let mut handshaken = false;
    loop {
        let text = next_text(ws).await?;
        for record in text.split(RECORD_SEPARATOR).filter(|r| !r.is_empty()) {
            if !handshaken {
                let reply: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
                if let Some(error) = reply.get("error") {
                    return Err(SetupError::Refused(format!("handshake refused: {error}")));
                }
                handshaken = true;
                let invocation = serde_json::json!({
                    "type": 1,
                    "invocationId": SUBSCRIBE_INVOCATION_ID,
                    "target": method,
                    "arguments": [channel],
                });
                ws.send(Message::text(format!("{invocation}{RECORD_SEPARATOR}")))
                    .await
                    .map_err(|e| SetupError::Connect(format!("send subscribe: {e}")))?;
                continue;
            }
            if receiver.on_text(record) {
                continue;
            }
            let message: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
            let kind = message.get("type").and_then(|t| t.as_u64());
            let invocation = message.get("invocationId").and_then(|t| t.as_str());
            match (kind, invocation) {
                (Some(3), Some(SUBSCRIBE_INVOCATION_ID)) => {
                    match message.get("error").and_then(|e| e.as_str()) {
                        None => return Ok(()),
                        // Switchyard joins hub connections to their default groups (a member's
                        // `tenant:{t}:broadcast`) at the handshake, as SignalR back ends do: the
                        // connection is on the channel already.
                        Some(HUB_ALREADY_SUBSCRIBED) => return Ok(()),
                        Some(_) => return Err(SetupError::Refused(record.to_owned())),
                    }
                }
                (Some(7), _) => return Err(SetupError::Refused(format!("hub closed: {record}"))),
                _ => {}
            }
        }
    }
}

/// The MessagePack hub handshake and `Subscribe`: the handshake answer is JSON (text, or binary
/// from servers that send it so), then records come in binary frames.
async fn subscribe_hub_msgpack(
    ws: &mut Ws,
    method: &str,
    channel: &str,
    receiver: &mut Receiver,
) -> Result<(), SetupError> {
    ws.send(Message::text(hub_msgpack::HANDSHAKE))
        .await
        .map_err(|e| SetupError::Connect(format!("send handshake: {e}")))?;
    let mut handshaken = false;
    loop {
        let frame = match ws.next().await {
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(Message::Close(frame))) => {
                return Err(SetupError::Refused(format!(
                    "closed during subscribe: {frame:?}"
                )))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(SetupError::Connect(format!("read during subscribe: {e}"))),
            None => return Err(SetupError::Connect("closed during subscribe".to_owned())),
        };
        let mut rest = &frame[..];
        if !handshaken {
            let Some(end) = rest.iter().position(|&b| b == RECORD_SEPARATOR as u8) else {
                return Err(SetupError::Refused(
                    "handshake answer without a record separator".to_owned(),
                ));
            };
            let reply: serde_json::Value = serde_json::from_slice(&rest[..end]).unwrap_or_default();
            if let Some(error) = reply.get("error") {
                return Err(SetupError::Refused(format!("handshake refused: {error}")));
            }
            handshaken = true;
            rest = &rest[end + 1..];
            ws.send(Message::binary(hub_msgpack::invocation(
                SUBSCRIBE_INVOCATION_ID,
                method,
                &[channel],
            )))
            .await
            .map_err(|e| SetupError::Connect(format!("send subscribe: {e}")))?;
        }
        for record in hub_msgpack::records(rest) {
            if receiver.on_msgpack(record) {
                continue;
            }
            match hub_msgpack::read(record) {
                hub_msgpack::Record::Completion {
                    invocation_id,
                    result,
                } if invocation_id == SUBSCRIBE_INVOCATION_ID => {
                    return match result {
                        // Joined at the handshake already (see `subscribe_hub`).
                        Ok(()) => Ok(()),
                        Err(e) if e == HUB_ALREADY_SUBSCRIBED => Ok(()),
                        Err(e) => Err(SetupError::Refused(format!("subscribe refused: {e}"))),
                    };
                }
                hub_msgpack::Record::Close(error) => {
                    return Err(SetupError::Refused(format!("hub closed: {error}")))
                }
                _ => {}
            }
        }
    }
}
