//! The publisher: a generator that schedules messages (as fast as the window allows, or at a fixed
//! rate) onto either a pool of keep-alive HTTP connections, one publish in flight per connection,
//! with retry and back-off on 503; or a few keep-alive connections each with one
//! `POST /api/v1/publish/batch` of many events in flight (a result per event, refused-as-busy
//! events retried); or a few `Service` WebSocket connections with a pipelining window each
//! (`ws_publisher`, native or Socket.IO). All count acknowledgements per target channel the same
//! way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::PublishOver;
use crate::http_client::HttpConnection;
use crate::net::Dialer;
use crate::payload::{self, now_micros};
use crate::subscriber::ErrorSamples;

/// REST publish path.
pub const PUBLISH_PATH: &str = "/api/v1/publish";
/// REST batch publish path.
pub const PUBLISH_BATCH_PATH: &str = "/api/v1/publish/batch";
/// First pause after a 503.
pub(crate) const RETRY_BACKOFF_START: Duration = Duration::from_millis(2);
/// Longest pause between retries.
pub(crate) const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Room reserved in a request body beyond the payload (channel, event, JSON punctuation).
pub(crate) const BODY_OVERHEAD_BYTES: usize = 128;

/// What to publish and how.
pub struct PublishPlan {
    pub dialer: Arc<Dialer>,
    pub token: String,
    pub event: String,
    pub payload_bytes: usize,
    /// Target channels; each message goes to one (chosen at random when there are several).
    pub channels: Vec<String>,
    pub messages: u64,
    /// Messages per second; `None` publishes as fast as the window allows.
    pub rate: Option<f64>,
    /// Publishes in flight at most (over HTTP one connection each; over a WebSocket shared out
    /// among the connections).
    pub window: usize,
    /// REST or WebSocket.
    pub over: PublishOver,
    /// WebSocket connections (with `over == Ws`).
    pub ws_connections: usize,
    /// With `over == Ws`: speak Socket.IO (the Socket.IO target) instead of the native protocol.
    pub socketio: bool,
    /// With `over == Batch`: the most events per request.
    pub batch_size: usize,
    /// With `over == Batch`: keep-alive connections, one batch in flight on each.
    pub http_connections: usize,
    /// How long in-flight WebSocket publishes may go without any acknowledgement arriving on their
    /// connection before they count as errors.
    pub ack_timeout: Duration,
    pub max_retries: u32,
    pub seed: u64,
    /// Offset added to connection indices so publisher sockets spread over source addresses too.
    pub connection_index_base: usize,
}

/// What happened while publishing.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Acknowledged (2xx) publishes per target channel.
    pub acked_per_channel: Vec<u64>,
    pub acked: u64,
    pub errors: u64,
    /// HTTP 503 answers, or over a WebSocket `busy` / `unavailable` errors (each retried).
    pub busy_503: u64,
    /// WebSocket `rate_limited` errors (each retried).
    pub rate_limited: u64,
    /// WebSocket replies whose id matched no publish in flight (e.g. a second ack for one id).
    pub unmatched_replies: u64,
    pub first_publish_micros: u64,
    pub finished_micros: u64,
    /// Largest delay between a message's scheduled time and its hand-off (rate mode).
    pub max_schedule_lag_micros: u64,
    pub error_samples: Vec<String>,
}

#[derive(Clone, Copy)]
pub(crate) struct Job {
    pub target: usize,
    pub seq: u64,
}

/// The queue of jobs the workers take from.
pub(crate) type JobQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

pub(crate) struct Shared {
    pub acked: Vec<AtomicU64>,
    pub errors: AtomicU64,
    pub busy_503: AtomicU64,
    pub rate_limited: AtomicU64,
    pub unmatched_replies: AtomicU64,
    pub first_publish_micros: AtomicU64,
    pub error_samples: ErrorSamples,
}

impl Shared {
    /// Stamps the first publish of the run (the start of the delivery clock) and returns `now`.
    pub fn stamp_send(&self) -> u64 {
        let sent_at = now_micros();
        let _ = self.first_publish_micros.compare_exchange(
            0,
            sent_at,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        sent_at
    }

    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.error_samples.note(message);
    }
}

/// Publishes according to `plan` and returns when every message has been answered or given up.
pub async fn run(plan: PublishPlan) -> PublishOutcome {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared {
        acked: plan.channels.iter().map(|_| AtomicU64::new(0)).collect(),
        errors: AtomicU64::new(0),
        busy_503: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        unmatched_replies: AtomicU64::new(0),
        first_publish_micros: AtomicU64::new(0),
        error_samples: ErrorSamples::default(),
    });
    let window = plan.window.max(1);
    let batch_size = plan.batch_size.max(1);
    let queue_capacity = match plan.over {
        // Room for every connection's next batch.
        PublishOver::Batch => plan.http_connections.max(1) * batch_size,
        PublishOver::Http | PublishOver::Ws => window,
    };
    let (jobs, job_queue) = mpsc::channel::<Job>(queue_capacity);
    let job_queue: JobQueue = Arc::new(tokio::sync::Mutex::new(job_queue));
    let workers: Vec<_> = match plan.over {
        PublishOver::Http => (0..window)
            .map(|worker| {
                tokio::spawn(publish_worker(
                    worker,
                    Arc::clone(&plan),
                    Arc::clone(&shared),
                    Arc::clone(&job_queue),
                ))
            })
            .collect(),
        PublishOver::Batch => (0..plan.http_connections.max(1))
            .map(|worker| {
                tokio::spawn(batch_worker(
                    worker,
                    Arc::clone(&plan),
                    Arc::clone(&shared),
                    Arc::clone(&job_queue),
                ))
            })
            .collect(),
        PublishOver::Ws => {
            let connections = plan.ws_connections.clamp(1, window);
            (0..connections)
                .map(|worker| {
                    // The window shared out: the first `window % connections` take one more.
                    let slots = window / connections + usize::from(worker < window % connections);
                    tokio::spawn(crate::ws_publisher::worker(
                        worker,
                        slots,
                        Arc::clone(&plan),
                        Arc::clone(&shared),
                        Arc::clone(&job_queue),
                    ))
                })
                .collect()
        }
    };

    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut next_seq = vec![0u64; plan.channels.len()];
    let start = Instant::now();
    let mut max_lag = Duration::ZERO;
    for n in 0..plan.messages {
        if plan.channels.is_empty() {
            break;
        }
        let due = plan
            .rate
            .map(|rate| start + Duration::from_secs_f64(n as f64 / rate));
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        let target = if plan.channels.len() == 1 {
            0
        } else {
            rng.random_range(0..plan.channels.len())
        };
        let seq = next_seq[target];
        next_seq[target] += 1;
        if jobs.send(Job { target, seq }).await.is_err() {
            break;
        }
        if let Some(due) = due {
            max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        }
    }
    drop(jobs);
    for worker in workers {
        let _ = worker.await;
    }
    let acked_per_channel: Vec<u64> = shared
        .acked
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    PublishOutcome {
        acked: acked_per_channel.iter().sum(),
        acked_per_channel,
        errors: shared.errors.load(Ordering::Relaxed),
        busy_503: shared.busy_503.load(Ordering::Relaxed),
        rate_limited: shared.rate_limited.load(Ordering::Relaxed),
        unmatched_replies: shared.unmatched_replies.load(Ordering::Relaxed),
        first_publish_micros: shared.first_publish_micros.load(Ordering::Relaxed),
        finished_micros: now_micros(),
        max_schedule_lag_micros: max_lag.as_micros() as u64,
        error_samples: shared.error_samples.take(),
    }
}

async fn publish_worker(
    worker: usize,
    plan: Arc<PublishPlan>,
    shared: Arc<Shared>,
    job_queue: JobQueue,
) {
    let prefixes = event_prefixes(&plan);
    let mut connection: Option<HttpConnection> = None;
    let mut body = String::with_capacity(plan.payload_bytes + BODY_OVERHEAD_BYTES);
    loop {
        let job = { job_queue.lock().await.recv().await };
        let Some(job) = job else { break };
        body.clear();
        body.push_str(&prefixes[job.target]);
        let sent_at = shared.stamp_send();
        payload::write_payload(&mut body, job.seq, sent_at, plan.payload_bytes);
        body.push('}');
        publish_one(
            worker,
            &plan,
            &shared,
            &mut connection,
            job.target,
            body.as_bytes(),
        )
        .await;
    }
}

/// One event of a batch: its target and its JSON (kept byte for byte for a retry).
struct BatchItem {
    target: usize,
    event: String,
    retries: u32,
}

/// `{"results":[…]}` of `POST /api/v1/publish/batch`: per event a `status` (202 when published).
#[derive(serde::Deserialize)]
struct BatchResponse {
    results: Vec<serde_json::Value>,
}

/// Takes up to `batch_size` queued jobs at a time (waiting only for the first) and publishes them
/// in one `POST /api/v1/publish/batch`; events answered 503 (or 429) are sent again, in a batch of
/// their own, after a back-off.
async fn batch_worker(
    worker: usize,
    plan: Arc<PublishPlan>,
    shared: Arc<Shared>,
    job_queue: JobQueue,
) {
    let prefixes = event_prefixes(&plan);
    let batch_size = plan.batch_size.max(1);
    let mut connection: Option<HttpConnection> = None;
    let mut body = String::new();
    loop {
        let mut batch: Vec<BatchItem> = Vec::with_capacity(batch_size);
        {
            let mut queue = job_queue.lock().await;
            let Some(first) = queue.recv().await else {
                break;
            };
            let mut next = Some(first);
            while let Some(job) = next.take() {
                let mut event = String::with_capacity(plan.payload_bytes + BODY_OVERHEAD_BYTES);
                event.push_str(&prefixes[job.target]);
                payload::write_payload(
                    &mut event,
                    job.seq,
                    shared.stamp_send(),
                    plan.payload_bytes,
                );
                event.push('}');
                batch.push(BatchItem {
                    target: job.target,
                    event,
                    retries: 0,
                });
                if batch.len() >= batch_size {
                    break;
                }
                next = queue.try_recv().ok();
            }
        }
        let mut backoff = RETRY_BACKOFF_START;
        while !batch.is_empty() {
            body.clear();
            body.push_str(r#"{"events":["#);
            for (i, item) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&item.event);
            }
            body.push_str("]}");
            let retry = post_batch(
                worker,
                &plan,
                &shared,
                &mut connection,
                batch,
                body.as_bytes(),
            )
            .await;
            batch = retry;
            if !batch.is_empty() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

/// Sends one batch and settles each event; returns the events to send again (refused as busy or
/// rate-limited, under their retry limit).
async fn post_batch(
    worker: usize,
    plan: &PublishPlan,
    shared: &Shared,
    connection: &mut Option<HttpConnection>,
    batch: Vec<BatchItem>,
    body: &[u8],
) -> Vec<BatchItem> {
    let fail_all = |batch: &[BatchItem], message: String| {
        shared
            .errors
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        shared.error_samples.note(message);
    };
    if connection.as_ref().is_none_or(|c| c.closed) {
        match HttpConnection::open(&plan.dialer, plan.connection_index_base + worker).await {
            Ok(c) => *connection = Some(c),
            Err(e) => {
                fail_all(&batch, format!("publisher connect: {e}"));
                return Vec::new();
            }
        }
    }
    let Some(open) = connection.as_mut() else {
        return Vec::new();
    };
    let response = match open.post_json(PUBLISH_BATCH_PATH, &plan.token, body).await {
        Ok(response) => response,
        Err(e) => {
            // Not retried: the server may have published some of it.
            fail_all(&batch, format!("publish batch: {e}"));
            *connection = None;
            return Vec::new();
        }
    };
    let statuses: Vec<u16> = match response.status {
        200 => match serde_json::from_slice::<BatchResponse>(&response.body) {
            Ok(answer) if answer.results.len() == batch.len() => answer
                .results
                .iter()
                .map(|r| r.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16)
                .collect(),
            Ok(answer) => {
                fail_all(
                    &batch,
                    format!(
                        "publish batch: {} results for {} events",
                        answer.results.len(),
                        batch.len()
                    ),
                );
                return Vec::new();
            }
            Err(e) => {
                fail_all(&batch, format!("publish batch answer: {e}"));
                return Vec::new();
            }
        },
        // The whole request refused as busy: every event is busy.
        503 | 429 => vec![response.status; batch.len()],
        status => {
            fail_all(
                &batch,
                format!(
                    "publish batch answered {status}: {}",
                    String::from_utf8_lossy(&response.body)
                ),
            );
            return Vec::new();
        }
    };
    let mut retry = Vec::new();
    for (mut item, status) in batch.into_iter().zip(statuses) {
        match status {
            200..=299 => {
                shared.acked[item.target].fetch_add(1, Ordering::Relaxed);
            }
            503 | 429 => {
                let counter = if status == 503 {
                    &shared.busy_503
                } else {
                    &shared.rate_limited
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if item.retries < plan.max_retries {
                    item.retries += 1;
                    retry.push(item);
                } else {
                    shared.error(format!(
                        "batch event still refused ({status}) after {} retries",
                        plan.max_retries
                    ));
                }
            }
            status => shared.error(format!("batch event answered {status}")),
        }
    }
    retry
}

/// `{"channel":…,"event":…,"data":` for each target channel: a REST publish body up to its data.
fn event_prefixes(plan: &PublishPlan) -> Vec<String> {
    plan.channels
        .iter()
        .map(|channel| {
            format!(
                r#"{{"channel":{},"event":{},"data":"#,
                serde_json::to_string(channel).unwrap_or_default(),
                serde_json::to_string(&plan.event).unwrap_or_default()
            )
        })
        .collect()
}

/// Sends one publish, retrying on 503. Any other failure counts as an error; the message is not
/// retried then, because the server may have accepted it.
async fn publish_one(
    worker: usize,
    plan: &PublishPlan,
    shared: &Shared,
    connection: &mut Option<HttpConnection>,
    target: usize,
    body: &[u8],
) {
    let mut backoff = RETRY_BACKOFF_START;
    for _ in 0..=plan.max_retries {
        if connection.as_ref().is_none_or(|c| c.closed) {
            match HttpConnection::open(&plan.dialer, plan.connection_index_base + worker).await {
                Ok(c) => *connection = Some(c),
                Err(e) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    shared.error_samples.note(format!("publisher connect: {e}"));
                    return;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            return;
        };
        match open.post_json(PUBLISH_PATH, &plan.token, body).await {
            Ok(response) if (200..300).contains(&response.status) => {
                shared.acked[target].fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(response) if response.status == 503 => {
                shared.busy_503.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Ok(response) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                shared.error_samples.note(format!(
                    "publish answered {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ));
                return;
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                shared.error_samples.note(format!("publish: {e}"));
                *connection = None;
                return;
            }
        }
    }
    shared.errors.fetch_add(1, Ordering::Relaxed);
    shared.error_samples.note(format!(
        "publish still busy (503) after {} retries",
        plan.max_retries
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Endpoint;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake server: answers the first publish with 503, the second with a chunked 202 and the
    /// rest with a Content-Length 202, all on one keep-alive connection.
    async fn fake_server(listener: tokio::net::TcpListener) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut answered = 0;
        loop {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Each request body ends with the payload's closing `"}}`.
            while let Some(end) = buf.windows(3).position(|w| w == b"\"}}") {
                buf.drain(..end + 3);
                let reply: &[u8] = match answered {
                    0 => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                    1 => b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
                    _ => b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
                };
                socket.write_all(reply).await.unwrap();
                answered += 1;
            }
        }
    }

    /// A fake batch endpoint: the first batch's second event is refused as busy, everything else
    /// is published; counts the events it saw per request.
    async fn fake_batch_server(
        listener: tokio::net::TcpListener,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    ) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 8192];
            let n = socket.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Each request body ends with the events array's `]}`.
            while let Some(end) = buf.windows(3).position(|w| w == b"}]}") {
                let request = String::from_utf8(buf.drain(..end + 3).collect()).unwrap();
                assert!(
                    request.starts_with("POST /api/v1/publish/batch "),
                    "{request}"
                );
                let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
                let events = serde_json::from_str::<serde_json::Value>(body).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .len();
                let first = seen.lock().unwrap().is_empty();
                seen.lock().unwrap().push(events);
                let results: Vec<serde_json::Value> = (0..events)
                    .map(|i| {
                        if first && i == 1 {
                            serde_json::json!({"status": 503, "title": "busy"})
                        } else {
                            serde_json::json!({"status": 202, "id": "x", "offset": 1, "epoch": "e"})
                        }
                    })
                    .collect();
                let answer = serde_json::json!({ "results": results }).to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn batches_count_each_event_and_retry_the_busy_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn(fake_batch_server(listener, Arc::clone(&seen)));
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let outcome = run(PublishPlan {
            dialer: Arc::new(Dialer::new(endpoint, 1)),
            token: "t".to_owned(),
            event: "BenchEvent".to_owned(),
            payload_bytes: 64,
            channels: vec!["a".to_owned(), "b".to_owned()],
            messages: 10,
            rate: None,
            window: 1,
            over: PublishOver::Batch,
            ws_connections: 1,
            socketio: false,
            batch_size: 4,
            http_connections: 1,
            ack_timeout: Duration::from_secs(5),
            max_retries: 5,
            seed: 1,
            connection_index_base: 0,
        })
        .await;
        assert_eq!(outcome.errors, 0, "{:?}", outcome.error_samples);
        assert_eq!(outcome.acked, 10);
        assert_eq!(outcome.busy_503, 1);
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().all(|&n| (1..=4).contains(&n)),
            "batches of at most 4: {seen:?}"
        );
        assert_eq!(
            seen.iter().sum::<usize>(),
            11,
            "ten events and one retry: {seen:?}"
        );
    }

    #[tokio::test]
    async fn retries_503_and_reads_chunked_and_sized_responses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(fake_server(listener));
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let outcome = run(PublishPlan {
            dialer: Arc::new(Dialer::new(endpoint, 1)),
            token: "t".to_owned(),
            event: "BenchEvent".to_owned(),
            payload_bytes: 64,
            channels: vec!["tenant:bench:broadcast".to_owned()],
            messages: 3,
            rate: None,
            window: 1,
            over: PublishOver::Http,
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
        assert_eq!(outcome.acked, 3);
        assert_eq!(outcome.busy_503, 1);
        assert_eq!(outcome.errors, 0, "{:?}", outcome.error_samples);
    }
}
