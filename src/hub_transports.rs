//! SignalR's Server-Sent Events and Long Polling transports: the connections that are not a
//! WebSocket, keyed by their negotiated `connectionToken`, and what carries their messages.
//! The routes (`routes/signalr.rs`) check tokens, transports and identities; this module owns
//! the sessions once started. Each runs an ordinary connection actor through
//! [`Connection::serve_streamed`](switchyard_actors::connection::Connection::serve_streamed).
//!
//! - **Server-Sent Events** (`GET {hub}?id=…`, `Accept: text/event-stream`): the response body is
//!   the actor's output, each message one `data:` event (text only). The actor runs while the
//!   body is polled, so a client that stops reading is handled by the watchdog exactly as a
//!   WebSocket client; when the response is dropped (the client went away), the actor goes with it.
//! - **Long Polling** (`GET {hub}?id=…` polls): a pump task polls the actor's output into a
//!   bounded queue ([`LongPoll`]); each poll takes everything queued (200, or 200 empty after the
//!   poll timeout, 204 once the connection ended or a newer poll replaced it). No poll for the
//!   disconnect timeout ends the connection. `DELETE {hub}?id=…` closes it as a client's close
//!   frame would.
//! - Sends (`POST {hub}?id=…`, both transports) go to the actor as frames, in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use switchyard_actors::connection::conn_socket::ConnSocket;
use switchyard_actors::connection::streamed::{Inbound, OutMessage, Outbound};
use switchyard_actors::identity::Identity;
use tokio::sync::{watch, Notify};

use crate::settings::{HubTransport, SignalRSettings};

/// The transports' timings and sizes (configuration `[signalr]`).
#[derive(Clone, Debug)]
pub struct TransportSettings {
    pub poll_timeout: Duration,
    pub disconnect_timeout: Duration,
    pub buffer_bytes: usize,
    pub send_queue_frames: usize,
    pub sse_disconnect_check: Duration,
}

impl From<&SignalRSettings> for TransportSettings {
    fn from(s: &SignalRSettings) -> Self {
        Self {
            poll_timeout: Duration::from_millis(s.long_polling_timeout_ms),
            disconnect_timeout: Duration::from_millis(s.disconnect_timeout_ms),
            buffer_bytes: s.long_polling_buffer_bytes,
            send_queue_frames: s.send_queue_frames,
            sse_disconnect_check: Duration::from_millis(s.sse_disconnect_check_ms),
        }
    }
}

/// One SSE or Long Polling connection.
pub struct HttpSession {
    /// Who negotiated it: every later request must be made by the same principal.
    pub identity: Arc<Identity>,
    pub inbound: Inbound,
    pub transport: Transport,
}

pub enum Transport {
    ServerSentEvents,
    LongPolling(Arc<LongPoll>),
}

impl Transport {
    pub fn kind(&self) -> HubTransport {
        match self {
            Transport::ServerSentEvents => HubTransport::ServerSentEvents,
            Transport::LongPolling(_) => HubTransport::LongPolling,
        }
    }
}

/// The node's SSE and Long Polling connections by connection token.
pub struct HttpSessions {
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
    pub settings: TransportSettings,
}

impl HttpSessions {
    pub fn new(settings: TransportSettings) -> Self {
        Self {
            sessions: Mutex::default(),
            settings,
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<HttpSession>> {
        self.lock().get(token).cloned()
    }

    fn insert(&self, token: &str, session: Arc<HttpSession>) {
        self.lock().insert(token.to_owned(), session);
    }

    /// Forgets `token` if it still names `session`.
    fn remove(&self, token: &str, session: &Arc<HttpSession>) {
        let mut sessions = self.lock();
        if sessions.get(token).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(token);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<HttpSession>>> {
        // A plain map; a panic elsewhere cannot leave it half-written.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a Server-Sent Events connection: the response streaming the actor's output.
    pub fn start_sse(
        self: &Arc<Self>,
        token: &str,
        identity: Arc<Identity>,
        socket: ConnSocket,
        (inbound, outbound): (Inbound, Outbound),
    ) -> HttpResponse {
        let session = Arc::new(HttpSession {
            identity,
            inbound,
            transport: Transport::ServerSentEvents,
        });
        self.insert(token, session.clone());
        // Forgets the session when the response is dropped (client gone, or the actor ended).
        let registered = Registered {
            sessions: self.clone(),
            token: token.to_owned(),
            session,
            socket: socket.clone(),
        };
        // A comment line first, so the client's EventSource opens before any message (ASP.NET
        // Core writes the same, for Firefox).
        let preamble = futures_util::stream::once(async {
            Ok::<_, actix_web::Error>(Bytes::from_static(b":\r\n"))
        });
        // The HTTP layer notices a vanished client only when a write fails: check its socket
        // every `sse_disconnect_check_ms` (ASP.NET Core learns it from RequestAborted).
        let mut check = tokio::time::interval(self.settings.sse_disconnect_check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticks = futures_util::stream::unfold(check, |mut check| async move {
            check.tick().await;
            Some((SseItem::Check, check))
        });
        let messages = outbound
            .map(SseItem::Message)
            .chain(futures_util::stream::once(async { SseItem::End }));
        let events = futures_util::stream::select(messages, ticks)
            .take_while(move |item| {
                std::future::ready(match item {
                    SseItem::Message(OutMessage::Close(_)) | SseItem::End => false,
                    SseItem::Check => !socket.peer_closed(),
                    SseItem::Message(_) => true,
                })
            })
            .filter_map(move |item| {
                let _ = &registered;
                std::future::ready(match item {
                    SseItem::Message(OutMessage::Text(text)) => Some(Ok(sse_event(&text))),
                    // The codec refuses binary protocols on this transport at the handshake.
                    _ => None,
                })
            });
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-cache,no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .insert_header((header::CONTENT_ENCODING, "identity"))
            .streaming(preamble.chain(events))
    }

    /// Starts a Long Polling connection (its first poll): the pump runs on this worker, where
    /// the actor lives; the poll itself answers at once, as ASP.NET Core's first poll does.
    pub fn start_long_polling(
        self: &Arc<Self>,
        token: &str,
        identity: Arc<Identity>,
        socket: ConnSocket,
        stop: Arc<Notify>,
        (inbound, outbound): (Inbound, Outbound),
    ) -> HttpResponse {
        let poll = Arc::new(LongPoll::new());
        let session = Arc::new(HttpSession {
            identity,
            inbound,
            transport: Transport::LongPolling(poll.clone()),
        });
        self.insert(token, session.clone());
        let pump = Pump {
            sessions: self.clone(),
            token: token.to_owned(),
            session,
            poll,
            socket,
            stop,
        };
        actix_web::rt::spawn(pump.run(outbound));
        no_cache(HttpResponse::Ok())
            .content_type("application/octet-stream")
            .insert_header(header::ContentLength(0))
            .finish()
    }

    /// One poll of a Long Polling connection.
    pub async fn poll(self: &Arc<Self>, token: &str, session: &Arc<HttpSession>) -> HttpResponse {
        let Transport::LongPolling(poll) = &session.transport else {
            return no_content();
        };
        session.inbound.heard();
        let answer = poll.wait(self.settings.poll_timeout).await;
        if matches!(answer, Polled::Ended) {
            // The client saw the end; nothing is left to deliver.
            self.remove(token, session);
        }
        match answer {
            Polled::Messages(body) => no_cache(HttpResponse::Ok())
                .content_type("application/octet-stream")
                .body(body),
            Polled::TimedOut => no_cache(HttpResponse::Ok())
                .content_type("text/plain")
                .insert_header(header::ContentLength(0))
                .finish(),
            Polled::Replaced | Polled::Ended => no_content(),
        }
    }
}

/// What an SSE response's body is made of.
enum SseItem {
    Message(OutMessage),
    /// Time to check whether the client is still there.
    Check,
    /// The actor's output ended.
    End,
}

fn no_content() -> HttpResponse {
    no_cache(HttpResponse::NoContent())
        .content_type("text/plain")
        .finish()
}

/// ASP.NET Core's headers on every poll: no cache may keep an answer.
fn no_cache(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::EXPIRES, "Thu, 01 Jan 1970 00:00:00 GMT"));
    response
}

/// A message as a Server-Sent Event: each line a `data:` field, then a blank line (ASP.NET
/// Core's `ServerSentEventsMessageFormatter`).
fn sse_event(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Keeps an SSE session registered, and its view of the connection held, for as long as its
/// response lives.
struct Registered {
    sessions: Arc<HttpSessions>,
    token: String,
    session: Arc<HttpSession>,
    socket: ConnSocket,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.remove(&self.token, &self.session);
        self.socket.release();
    }
}

/// A Long Polling connection's queue between its pump and its polls.
pub struct LongPoll {
    state: Mutex<PollState>,
    /// Bumped on every change a waiting poll may care about.
    changes: watch::Sender<u64>,
    /// The queue was taken: the pump may go on.
    room: Notify,
}

struct PollState {
    queued: BytesMut,
    /// The actor ended: once the queue is taken, polls answer 204.
    ended: bool,
    /// The latest poll's number; an older poll answers 204.
    generation: u64,
    /// A poll is waiting now.
    polling: bool,
    /// When the last poll ended (or the connection started).
    last_seen: Instant,
}

enum Polled {
    Messages(Bytes),
    TimedOut,
    Replaced,
    Ended,
}

impl LongPoll {
    fn new() -> Self {
        Self {
            state: Mutex::new(PollState {
                queued: BytesMut::new(),
                ended: false,
                generation: 0,
                polling: false,
                last_seen: Instant::now(),
            }),
            changes: watch::Sender::new(0),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PollState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn push(&self, message: &[u8]) {
        self.lock().queued.extend_from_slice(message);
        self.changed();
    }

    fn end(&self) {
        self.lock().ended = true;
        self.changed();
    }

    fn queued_bytes(&self) -> usize {
        self.lock().queued.len()
    }

    /// How long until the connection counts as abandoned (`None` while a poll waits).
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let s = self.lock();
        (!s.polling).then(|| s.last_seen + timeout)
    }

    async fn wait(&self, timeout: Duration) -> Polled {
        let generation = {
            let mut s = self.lock();
            s.generation += 1;
            s.polling = true;
            s.generation
        };
        // An older poll still waiting answers 204 (ASP.NET Core cancels it likewise).
        self.changed();
        let _done = PollDone {
            poll: self,
            generation,
        };
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            {
                let mut s = self.lock();
                if s.generation != generation {
                    return Polled::Replaced;
                }
                if !s.queued.is_empty() {
                    let body = s.queued.split().freeze();
                    drop(s);
                    self.room.notify_one();
                    return Polled::Messages(body);
                }
                if s.ended {
                    return Polled::Ended;
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Err(_) => return Polled::TimedOut,
                Ok(Err(_)) => return Polled::Ended,
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Marks a poll finished (also when its request is dropped because the client went away).
struct PollDone<'a> {
    poll: &'a LongPoll,
    generation: u64,
}

impl Drop for PollDone<'_> {
    fn drop(&mut self) {
        let mut s = self.poll.lock();
        if s.generation == self.generation {
            s.polling = false;
            s.last_seen = Instant::now();
            drop(s);
            // The pump waits for a change to arm the idle deadline a finished poll starts.
            self.poll.changed();
        }
    }
}

/// Drives a Long Polling connection's actor: its output into the queue, until the actor ends,
/// the watchdog aborts it, or no poll came for the disconnect timeout.
struct Pump {
    sessions: Arc<HttpSessions>,
    token: String,
    session: Arc<HttpSession>,
    poll: Arc<LongPoll>,
    socket: ConnSocket,
    stop: Arc<Notify>,
}

impl Pump {
    async fn run(self, mut outbound: Outbound) {
        let settings = self.sessions.settings.clone();
        // A poll starting or ending changes the idle deadline.
        let mut changes = self.poll.changes.subscribe();
        loop {
            let full = self.poll.queued_bytes() >= settings.buffer_bytes;
            let idle = self.poll.idle_deadline(settings.disconnect_timeout);
            // Without a deadline the branch is disabled; the instant is never waited for.
            let idle_at = tokio::time::Instant::from_std(idle.unwrap_or_else(Instant::now));
            changes.borrow_and_update();
            tokio::select! {
                _ = changes.changed() => {}
                _ = self.stop.notified() => {
                    log::debug!("a Long Polling connection was shut by the watchdog");
                    break;
                }
                _ = tokio::time::sleep_until(idle_at), if idle.is_some() => {
                    if self.poll.idle_deadline(settings.disconnect_timeout)
                        .is_some_and(|at| at <= Instant::now())
                    {
                        log::info!(
                            "a Long Polling connection was not polled for {:?}; it ends",
                            settings.disconnect_timeout
                        );
                        break;
                    }
                }
                _ = self.poll.room.notified(), if full => {}
                message = outbound.next(), if !full => match message {
                    Some(OutMessage::Text(m) | OutMessage::Binary(m)) => self.poll.push(&m),
                    // The actor stops after its close; the stream ends next.
                    Some(OutMessage::Close(_)) => {}
                    None => break,
                },
            }
        }
        // Dropping the stream drops the actor (its `stopped()` releases everything).
        drop(outbound);
        self.poll.end();
        self.socket.release();
        // A client that never polls again does not learn of the end: forget it after a while.
        let (sessions, token, session) = (self.sessions, self.token, self.session);
        actix_web::rt::spawn(async move {
            tokio::time::sleep(sessions.settings.disconnect_timeout).await;
            sessions.remove(&token, &session);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_carry_each_line_as_data() {
        assert_eq!(&sse_event(b"{}\x1e")[..], b"data: {}\x1e\r\n\r\n");
        assert_eq!(&sse_event(b"a\r\nb")[..], b"data: a\r\ndata: b\r\n\r\n");
    }

    #[actix_web::test]
    async fn a_poll_takes_everything_queued_and_a_newer_poll_replaces_a_waiting_one() {
        let poll = Arc::new(LongPoll::new());
        poll.push(b"one");
        poll.push(b"two");
        assert!(
            matches!(poll.wait(Duration::from_secs(5)).await, Polled::Messages(b) if &b[..] == b"onetwo")
        );
        let first = {
            let poll = poll.clone();
            actix_web::rt::spawn(async move { poll.wait(Duration::from_secs(30)).await })
        };
        // Let the first poll start waiting.
        while !poll.lock().polling {
            tokio::task::yield_now().await;
        }
        let second = {
            let poll = poll.clone();
            actix_web::rt::spawn(async move { poll.wait(Duration::from_secs(30)).await })
        };
        assert!(matches!(first.await.unwrap(), Polled::Replaced));
        poll.end();
        assert!(matches!(second.await.unwrap(), Polled::Ended));
        assert!(matches!(
            poll.wait(Duration::from_millis(1)).await,
            Polled::Ended
        ));
    }
}
