//! Publishing over a WebSocket: one `Service` connection on `/ws` per worker, sending native
//! `publish` frames pipelined up to the worker's share of the window, each acknowledged with
//! `published` (matched by the frame's `id`). Against the Socket.IO target the same worker speaks
//! Socket.IO instead (`socketio`): `42<id>["publish",{…}]` events answered by acks `43<id>[…]`.
//!
//! The accounting is the HTTP publisher's: an acknowledged publish counts once for its target
//! channel; `busy` and `unavailable` (REST's 503) and `rate_limited` are retried after a back-off
//! with the original payload (and `sentAtMicros` stamp) under a fresh id, up to `--max-retries`;
//! any other refusal is an error; publishes in flight when the connection is lost, or still
//! unacknowledged after `ack_timeout` without any reply, are errors and are not retried (the server
//! may have taken them). A reply whose id matches nothing in flight is counted, never acknowledged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::payload;
use crate::publisher::{
    Job, JobQueue, PublishPlan, Shared, BODY_OVERHEAD_BYTES, RETRY_BACKOFF_MAX, RETRY_BACKOFF_START,
};
use crate::socketio;
use crate::subscriber::{percent_encode, NATIVE_WS_PATH};

/// Read buffer of a publisher connection (acks are small).
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// How long a finished worker waits for its close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<TcpStream>;

/// One publish not yet settled: its target, its payload (kept for a retry) and its retry state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight {
    pub target: usize,
    pub payload: String,
    pub retries: u32,
    pub backoff: Duration,
}

impl Flight {
    pub fn new(target: usize, payload: String) -> Self {
        Self {
            target,
            payload,
            retries: 0,
            backoff: RETRY_BACKOFF_START,
        }
    }
}

/// What a server frame says about the publishes in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `published` for this id.
    Published(u64),
    /// `error` for this id.
    Refused {
        id: u64,
        code: String,
        message: String,
    },
    /// An `error` without an id the publisher sent (it cannot be matched to a publish).
    Unmatched(String),
    /// Anything else (pong, notification, …).
    Other,
}

#[derive(Deserialize)]
struct ReplyFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
}

/// Reads one server text frame.
pub fn parse_reply(text: &str) -> Reply {
    let Ok(frame) = serde_json::from_str::<ReplyFrame>(text) else {
        return Reply::Other;
    };
    let id = frame.id.as_ref().and_then(Value::as_u64);
    match (frame.kind.as_str(), id) {
        ("published", Some(id)) => Reply::Published(id),
        ("error", Some(id)) => {
            let field = |key: &str| {
                frame
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let message = match field("message") {
                m if m.is_empty() => field("reason"),
                m => m,
            };
            Reply::Refused {
                id,
                code: field("code"),
                message,
            }
        }
        ("published", None) | ("error", None) => Reply::Unmatched(text.to_owned()),
        _ => Reply::Other,
    }
}

/// What settling a reply means for the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Acknowledged: count one for this target.
    Acked(usize),
    /// Refused as busy (`busy`, `unavailable`) or rate-limited: send again after `backoff`.
    Retry { flight: Flight, rate_limited: bool },
    /// Refused for good (or retried too often): one error.
    Failed {
        message: String,
        busy: bool,
        rate_limited: bool,
    },
    /// The id is not in flight (a duplicate or stray reply): counted, never acknowledged.
    Unmatched,
    /// Not a reply to a publish.
    Ignored,
}

/// The publishes one connection has in flight, by request id.
#[derive(Debug, Default)]
pub struct Pipeline {
    next_id: u64,
    in_flight: HashMap<u64, Flight>,
}

impl Pipeline {
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The id the next [`Pipeline::start`] returns.
    pub fn peek_id(&self) -> u64 {
        self.next_id + 1
    }

    /// Registers a publish about to be sent and returns its request id (never reused, also not
    /// across reconnects, so a late reply cannot settle the wrong publish).
    pub fn start(&mut self, flight: Flight) -> u64 {
        self.next_id += 1;
        self.in_flight.insert(self.next_id, flight);
        self.next_id
    }

    /// Settles the publish a reply is about.
    pub fn settle(&mut self, reply: Reply, max_retries: u32) -> Settled {
        let (id, refusal) = match reply {
            Reply::Published(id) => (id, None),
            Reply::Refused { id, code, message } => (id, Some((code, message))),
            Reply::Unmatched(_) => return Settled::Unmatched,
            Reply::Other => return Settled::Ignored,
        };
        let Some(mut flight) = self.in_flight.remove(&id) else {
            return Settled::Unmatched;
        };
        let Some((code, message)) = refusal else {
            return Settled::Acked(flight.target);
        };
        let busy = matches!(code.as_str(), "busy" | "unavailable");
        let rate_limited = code == "rate_limited";
        if !(busy || rate_limited) {
            return Settled::Failed {
                message: format!("publish refused: {code}: {message}"),
                busy,
                rate_limited,
            };
        }
        if flight.retries >= max_retries {
            return Settled::Failed {
                message: format!("publish still refused ({code}) after {max_retries} retries"),
                busy,
                rate_limited,
            };
        }
        flight.retries += 1;
        Settled::Retry {
            flight,
            rate_limited,
        }
    }

    /// Gives up on everything in flight (the connection is gone, or no reply came in time) and
    /// returns how many publishes that was.
    pub fn abandon_all(&mut self) -> usize {
        let abandoned = self.in_flight.len();
        self.in_flight.clear();
        abandoned
    }
}

/// A refused publish waiting for its back-off to pass.
struct PendingRetry {
    due: Instant,
    flight: Flight,
}

/// One publisher connection's worker: takes jobs from the shared queue while it has fewer than
/// `slots` publishes in flight, and returns when the queue is closed and everything it took is
/// settled.
pub(crate) async fn worker(
    worker: usize,
    slots: usize,
    plan: Arc<PublishPlan>,
    shared: Arc<Shared>,
    job_queue: JobQueue,
) {
    let slots = slots.max(1);
    let dialect = if plan.socketio {
        Dialect::SocketIo
    } else {
        Dialect::Native
    };
    let prefixes: Vec<String> = plan
        .channels
        .iter()
        .map(|channel| {
            let channel = serde_json::to_string(channel).unwrap_or_default();
            let event = serde_json::to_string(&plan.event).unwrap_or_default();
            match dialect {
                Dialect::Native => {
                    format!(r#","data":{{"channel":{channel},"event":{event},"data":"#)
                }
                Dialect::SocketIo => {
                    format!(r#"["publish",{{"channel":{channel},"event":{event},"data":"#)
                }
            }
        })
        .collect();
    let mut pipeline = Pipeline::default();
    let mut retries: Vec<PendingRetry> = Vec::new();
    let mut connection: Option<Ws> = None;
    let mut jobs_done = false;
    let mut last_reply = Instant::now();
    let mut frame = String::with_capacity(plan.payload_bytes + BODY_OVERHEAD_BYTES);
    loop {
        if jobs_done && pipeline.is_empty() && retries.is_empty() {
            break;
        }
        if connection.is_none() {
            match connect(&plan, worker).await {
                Ok(ws) => {
                    connection = Some(ws);
                    last_reply = Instant::now();
                }
                Err(e) => {
                    // Like the HTTP publisher: what cannot be sent is an error, and the next
                    // publish tries to connect again.
                    let message = format!("publisher connect: {e}");
                    if let Some(retry) = retries.pop() {
                        drop(retry);
                        shared.error(message);
                    } else if jobs_done {
                        break;
                    } else {
                        match job_queue.lock().await.recv().await {
                            Some(_) => shared.error(message),
                            None => jobs_done = true,
                        }
                    }
                    continue;
                }
            }
        }
        let Some(ws) = connection.as_mut() else {
            continue;
        };
        if pipeline.is_empty() {
            // The reply clock runs only while something is in flight.
            last_reply = Instant::now();
        }
        let room = pipeline.len() < slots;
        let next_due = retries.iter().map(|r| r.due).min();
        let ack_deadline = last_reply + plan.ack_timeout;
        enum Step {
            Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
            RetryDue,
            Job(Option<Job>),
            AckTimeout,
        }
        let step = tokio::select! {
            biased;
            frame = ws.next() => Step::Frame(frame),
            _ = sleep_until_opt(next_due), if room && next_due.is_some() => Step::RetryDue,
            job = next_job(&job_queue), if room && !jobs_done => Step::Job(job),
            _ = tokio::time::sleep_until(ack_deadline), if !pipeline.is_empty() => Step::AckTimeout,
        };
        let sent = match step {
            Step::Frame(Some(Ok(Message::Text(text))))
                if dialect == Dialect::SocketIo && text.as_str() == socketio::PING =>
            {
                ws.send(Message::text(socketio::PONG)).await
            }
            Step::Frame(Some(Ok(Message::Text(text)))) => {
                last_reply = Instant::now();
                let reply = match dialect {
                    Dialect::Native => parse_reply(&text),
                    Dialect::SocketIo => socketio::parse_ack(&text),
                };
                settle(&mut pipeline, &mut retries, &shared, &plan, reply, &text);
                Ok(())
            }
            Step::Frame(Some(Ok(Message::Close(close)))) => {
                lose_connection(
                    &mut pipeline,
                    &shared,
                    &format!("closed by the server: {close:?}"),
                );
                connection = None;
                continue;
            }
            Step::Frame(Some(Ok(_))) => Ok(()),
            Step::Frame(Some(Err(e))) => {
                lose_connection(&mut pipeline, &shared, &format!("read: {e}"));
                connection = None;
                continue;
            }
            Step::Frame(None) => {
                lose_connection(&mut pipeline, &shared, "closed");
                connection = None;
                continue;
            }
            Step::RetryDue => {
                let now = Instant::now();
                let mut fed = Ok(());
                while pipeline.len() < slots && fed.is_ok() {
                    let Some(index) = retries.iter().position(|r| r.due <= now) else {
                        break;
                    };
                    let flight = retries.swap_remove(index).flight;
                    fed = send(ws, dialect, &mut pipeline, &mut frame, &prefixes, flight).await;
                }
                match fed {
                    Ok(()) => ws.flush().await,
                    Err(e) => Err(e),
                }
            }
            Step::Job(None) => {
                jobs_done = true;
                Ok(())
            }
            Step::Job(Some(job)) => {
                let mut next = Some(job);
                let mut fed = Ok(());
                // This job, then whatever else is queued already, into one flush.
                while let Some(job) = next.take() {
                    let mut payload_text = String::with_capacity(plan.payload_bytes);
                    let sent_at = shared.stamp_send();
                    payload::write_payload(&mut payload_text, job.seq, sent_at, plan.payload_bytes);
                    let flight = Flight::new(job.target, payload_text);
                    fed = send(ws, dialect, &mut pipeline, &mut frame, &prefixes, flight).await;
                    if fed.is_err() || pipeline.len() >= slots {
                        break;
                    }
                    next = try_next_job(&job_queue);
                }
                match fed {
                    Ok(()) => ws.flush().await,
                    Err(e) => Err(e),
                }
            }
            Step::AckTimeout => {
                let abandoned = pipeline.abandon_all();
                shared.errors.fetch_add(abandoned as u64, Ordering::Relaxed);
                shared.error_samples.note(format!(
                    "no reply to {abandoned} publish(es) within {:?}; connection dropped",
                    plan.ack_timeout
                ));
                connection = None;
                continue;
            }
        };
        if let Err(e) = sent {
            lose_connection(&mut pipeline, &shared, &format!("send: {e}"));
            connection = None;
        }
    }
    if let Some(mut ws) = connection {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

async fn next_job(job_queue: &JobQueue) -> Option<Job> {
    job_queue.lock().await.recv().await
}

fn try_next_job(job_queue: &JobQueue) -> Option<Job> {
    job_queue.try_lock().ok()?.try_recv().ok()
}

/// Which protocol the publisher speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// Switchyard's native `publish` / `published` on `/ws`.
    Native,
    /// Socket.IO `publish` events with acks.
    SocketIo,
}

/// Registers `flight` and feeds its frame (not flushed).
async fn send(
    ws: &mut Ws,
    dialect: Dialect,
    pipeline: &mut Pipeline,
    frame: &mut String,
    prefixes: &[String],
    flight: Flight,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    frame.clear();
    let id = pipeline.peek_id();
    match dialect {
        Dialect::Native => {
            frame.push_str(r#"{"type":"publish""#);
            frame.push_str(&prefixes[flight.target]);
            // The payload byte for byte (a retry keeps its original stamp).
            frame.push_str(&flight.payload);
            frame.push_str(r#"},"id":"#);
            frame.push_str(&id.to_string());
            frame.push('}');
        }
        Dialect::SocketIo => {
            frame.push_str(socketio::EVENT_PREFIX);
            frame.push_str(&id.to_string());
            frame.push_str(&prefixes[flight.target]);
            frame.push_str(&flight.payload);
            frame.push_str("}]");
        }
    }
    let started = pipeline.start(flight);
    debug_assert_eq!(started, id);
    ws.feed(Message::text(frame.as_str())).await
}

fn settle(
    pipeline: &mut Pipeline,
    retries: &mut Vec<PendingRetry>,
    shared: &Shared,
    plan: &PublishPlan,
    reply: Reply,
    text: &str,
) {
    match pipeline.settle(reply, plan.max_retries) {
        Settled::Acked(target) => {
            shared.acked[target].fetch_add(1, Ordering::Relaxed);
        }
        Settled::Retry {
            mut flight,
            rate_limited,
        } => {
            let counter = if rate_limited {
                &shared.rate_limited
            } else {
                &shared.busy_503
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let due = Instant::now() + flight.backoff;
            flight.backoff = (flight.backoff * 2).min(RETRY_BACKOFF_MAX);
            retries.push(PendingRetry { due, flight });
        }
        Settled::Failed {
            message,
            busy,
            rate_limited,
        } => {
            if busy {
                shared.busy_503.fetch_add(1, Ordering::Relaxed);
            }
            if rate_limited {
                shared.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            shared.error(message);
        }
        Settled::Unmatched => {
            shared.unmatched_replies.fetch_add(1, Ordering::Relaxed);
            shared
                .error_samples
                .note(format!("reply matching no publish in flight: {text}"));
        }
        Settled::Ignored => {}
    }
}

fn lose_connection(pipeline: &mut Pipeline, shared: &Shared, why: &str) {
    let abandoned = pipeline.abandon_all();
    shared.errors.fetch_add(abandoned as u64, Ordering::Relaxed);
    shared.error_samples.note(format!(
        "publisher connection lost ({why}) with {abandoned} publish(es) unacknowledged"
    ));
}

async fn connect(plan: &PublishPlan, worker: usize) -> Result<Ws, String> {
    let stream = plan
        .dialer
        .connect(plan.connection_index_base + worker)
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let authority = &plan.dialer.endpoint.authority;
    let url = if plan.socketio {
        socketio::url(authority)
    } else {
        format!(
            "ws://{authority}{NATIVE_WS_PATH}?access_token={}",
            percent_encode(&plan.token)
        )
    };
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .map_err(|e| format!("websocket handshake: {e}"))?;
    if plan.socketio {
        tokio::time::timeout(plan.ack_timeout, socketio::connect(&mut ws, &plan.token))
            .await
            .map_err(|_| "socket.io connect timed out".to_owned())??;
    }
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::PublishOver;
    use crate::net::{Dialer, Endpoint};
    use crate::publisher::{self, PublishPlan};

    fn refused(id: u64, code: &str) -> Reply {
        Reply::Refused {
            id,
            code: code.to_owned(),
            message: "m".to_owned(),
        }
    }

    #[test]
    fn parses_switchyard_and_baseline_replies() {
        assert_eq!(
            parse_reply(r#"{"type":"published","id":2,"data":{"epoch":"e","id":"x","offset":2}}"#),
            Reply::Published(2)
        );
        assert_eq!(
            parse_reply(r#"{"type":"error","id":3,"data":{"code":"busy","message":"later"}}"#),
            Reply::Refused {
                id: 3,
                code: "busy".to_owned(),
                message: "later".to_owned()
            }
        );
        assert!(matches!(
            parse_reply(r#"{"type":"error","data":{"code":"bad_json","message":"x"}}"#),
            Reply::Unmatched(_)
        ));
        assert_eq!(parse_reply(r#"{"type":"pong"}"#), Reply::Other);
        assert_eq!(parse_reply("not json"), Reply::Other);
    }

    #[test]
    fn each_publish_is_acknowledged_once() {
        let mut pipeline = Pipeline::default();
        let a = pipeline.start(Flight::new(0, "{}".to_owned()));
        let b = pipeline.start(Flight::new(1, "{}".to_owned()));
        assert_ne!(a, b);
        // Out of order is fine; a second ack for one id counts as unmatched, not acked.
        assert_eq!(pipeline.settle(Reply::Published(b), 3), Settled::Acked(1));
        assert_eq!(pipeline.settle(Reply::Published(b), 3), Settled::Unmatched);
        assert_eq!(pipeline.settle(Reply::Published(a), 3), Settled::Acked(0));
        assert_eq!(pipeline.settle(Reply::Published(99), 3), Settled::Unmatched);
        assert!(pipeline.is_empty());
    }

    #[test]
    fn busy_and_rate_limited_are_retried_then_given_up() {
        let mut pipeline = Pipeline::default();
        let id = pipeline.start(Flight::new(0, "p".to_owned()));
        let Settled::Retry {
            flight,
            rate_limited,
        } = pipeline.settle(refused(id, "rate_limited"), 1)
        else {
            panic!("rate_limited is retried");
        };
        assert!(rate_limited);
        assert_eq!(flight.retries, 1);
        assert_eq!(
            flight.payload, "p",
            "the retry carries the original payload"
        );
        let id = pipeline.start(flight);
        assert!(matches!(
            pipeline.settle(refused(id, "busy"), 1),
            Settled::Failed { busy: true, .. }
        ));
        let id = pipeline.start(Flight::new(0, "p".to_owned()));
        assert!(matches!(
            pipeline.settle(refused(id, "forbidden"), 5),
            Settled::Failed {
                busy: false,
                rate_limited: false,
                ..
            }
        ));
        assert!(pipeline.is_empty());
    }

    #[test]
    fn a_lost_connection_abandons_what_was_in_flight() {
        let mut pipeline = Pipeline::default();
        let a = pipeline.start(Flight::new(0, "{}".to_owned()));
        pipeline.start(Flight::new(0, "{}".to_owned()));
        assert_eq!(pipeline.abandon_all(), 2);
        // A late ack after the loss is not counted.
        assert_eq!(pipeline.settle(Reply::Published(a), 3), Settled::Unmatched);
        // Ids are not reused after the loss.
        assert!(pipeline.start(Flight::new(0, "{}".to_owned())) > a + 1);
    }

    /// A fake /ws server: answers publish ids with a busy error once, then with `published`
    /// (the third publish twice, a duplicate ack), out of order in pairs.
    async fn fake_ws_server(listener: tokio::net::TcpListener) {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let mut refused_once = false;
        let mut held: Option<u64> = None;
        let mut answered = 0;
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(frame["type"], "publish");
            assert!(frame["data"]["data"]["seq"].is_u64());
            let id = frame["id"].as_u64().unwrap();
            if !refused_once {
                refused_once = true;
                let busy = format!(
                    r#"{{"type":"error","id":{id},"data":{{"code":"busy","message":"later"}}}}"#
                );
                ws.send(Message::text(busy)).await.unwrap();
                continue;
            }
            let ack = |id: u64| {
                format!(
                    r#"{{"type":"published","id":{id},"data":{{"id":"x","offset":1,"epoch":"e"}}}}"#
                )
            };
            match held.take() {
                None => held = Some(id),
                Some(first) => {
                    ws.send(Message::text(ack(id))).await.unwrap();
                    ws.send(Message::text(ack(first))).await.unwrap();
                    answered += 2;
                    if answered == 2 {
                        ws.send(Message::text(ack(first))).await.unwrap();
                    }
                }
            }
        }
    }

    /// A fake Socket.IO server: Engine.IO open, CONNECT with the token, a ping the client must
    /// answer, then acks — the first publish refused as busy, the rest acknowledged.
    async fn fake_socketio_server(listener: tokio::net::TcpListener) {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        ws.send(Message::text(
            r#"0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#,
        ))
        .await
        .unwrap();
        let Some(Ok(Message::Text(connect))) = ws.next().await else {
            panic!("a CONNECT packet");
        };
        assert_eq!(connect.as_str(), r#"40{"token":"t"}"#);
        ws.send(Message::text(r#"40{"sid":"x"}"#)).await.unwrap();
        ws.send(Message::text("2")).await.unwrap();
        let mut refused_once = false;
        let mut ponged = false;
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            if text.as_str() == "3" {
                ponged = true;
                continue;
            }
            let rest = text.strip_prefix("42").expect("an event");
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let id: u64 = rest[..digits].parse().expect("an ack id");
            let args: Value = serde_json::from_str(&rest[digits..]).unwrap();
            assert_eq!(args[0], "publish");
            assert!(args[1]["data"]["seq"].is_u64());
            let ack = if refused_once {
                format!(r#"43{id}[{{"id":"e-{id}","offset":{id},"epoch":"e"}}]"#)
            } else {
                refused_once = true;
                format!(r#"43{id}[{{"error":{{"code":"busy","message":"later"}}}}]"#)
            };
            ws.send(Message::text(ack)).await.unwrap();
        }
        assert!(ponged, "the publisher answers the server's ping");
    }

    #[tokio::test]
    async fn socketio_publishes_are_acknowledged_by_their_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(fake_socketio_server(listener));
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let outcome = publisher::run(PublishPlan {
            dialer: Arc::new(Dialer::new(endpoint, 1)),
            token: "t".to_owned(),
            event: "BenchEvent".to_owned(),
            payload_bytes: 64,
            channels: vec!["a".to_owned()],
            messages: 5,
            rate: None,
            window: 4,
            over: PublishOver::Ws,
            ws_connections: 1,
            socketio: true,
            batch_size: 1,
            http_connections: 1,
            ack_timeout: Duration::from_secs(5),
            max_retries: 5,
            seed: 1,
            connection_index_base: 0,
        })
        .await;
        assert_eq!(outcome.acked, 5, "{:?}", outcome.error_samples);
        assert_eq!(outcome.busy_503, 1);
        assert_eq!(outcome.errors, 0, "{:?}", outcome.error_samples);
        server.await.expect("the fake server's checks hold");
    }

    #[tokio::test]
    async fn pipelined_publishes_over_a_websocket_are_counted_exactly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(fake_ws_server(listener));
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let outcome = publisher::run(PublishPlan {
            dialer: Arc::new(Dialer::new(endpoint, 1)),
            token: "t".to_owned(),
            event: "BenchEvent".to_owned(),
            payload_bytes: 64,
            channels: vec!["a".to_owned(), "b".to_owned()],
            messages: 6,
            rate: None,
            window: 4,
            over: PublishOver::Ws,
            ws_connections: 1,
            socketio: false,
            batch_size: 1,
            http_connections: 1,
            ack_timeout: Duration::from_secs(5),
            max_retries: 5,
            seed: 1,
            connection_index_base: 0,
        })
        .await;
        assert_eq!(outcome.acked, 6, "{:?}", outcome.error_samples);
        assert_eq!(outcome.acked_per_channel.iter().sum::<u64>(), 6);
        assert_eq!(outcome.busy_503, 1);
        assert_eq!(outcome.unmatched_replies, 1);
        assert_eq!(outcome.errors, 0, "{:?}", outcome.error_samples);
    }
}
