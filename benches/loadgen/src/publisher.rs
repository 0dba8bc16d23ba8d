//! The publisher: a generator that schedules messages (as fast as the window allows, or at a fixed
//! rate) onto either a pool of keep-alive HTTP connections, one publish in flight per connection,
//! with retry and back-off on 503, or a few `Service` WebSocket connections with a pipelining
//! window each (`ws_publisher`). Both count acknowledgements per target channel the same way.

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
    let (jobs, job_queue) = mpsc::channel::<Job>(window);
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
    let prefixes: Vec<String> = plan
        .channels
        .iter()
        .map(|channel| {
            format!(
                r#"{{"channel":{},"event":{},"data":"#,
                serde_json::to_string(channel).unwrap_or_default(),
                serde_json::to_string(&plan.event).unwrap_or_default()
            )
        })
        .collect();
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
