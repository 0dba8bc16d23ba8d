//! The scenarios: connecting the subscribers, publishing, waiting for the deliveries (or giving up
//! on stragglers), and turning everything measured into the report JSON.
//!
//! `fanout`, `targeted` and `cross-node` are one delivery run with different channel layouts and
//! endpoints; `idle` holds connections and measures the server's memory.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::{TokenMinter, SERVICE_ROLE};
use crate::cli::{CommonArgs, Protocol, PublishArgs, PublishOver, TargetedChannel};
use crate::net::{default_source_addrs, Dialer, Endpoint};
use crate::publisher::{self, PublishPlan};
use crate::server_process::{vm_rss_kb, ServerProcesses};
use crate::stats::{merge_subscribers, ConnectOutcome, LatencyShards, Progress, SubscriberStats};
use crate::subscriber::{self, ErrorSamples, SubscriberContext, SubscriberPlan};

/// How often connect progress is printed on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// How often the delivery counter is polled while waiting for stragglers.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Latency histogram shards per runtime worker thread.
const LATENCY_SHARDS_PER_THREAD: usize = 4;
const MICROS_PER_SEC: f64 = 1_000_000.0;
const MICROS_PER_MILLI: f64 = 1_000.0;
const BYTES_PER_KIB: u64 = 1024;
/// User id of the publishing service in its token.
const PUBLISHER_USER: &str = "bench-publisher";

/// How subscribers map onto channels.
#[derive(Debug, Clone)]
pub enum ChannelLayout {
    /// Every subscriber on this one channel.
    Shared(String),
    /// Subscriber i on its own channel of this family, as user `u{i}`.
    PerSubscriber(TargetedChannel),
}

/// One delivery scenario (fanout, targeted, cross-node).
pub struct DeliveryRun {
    pub scenario: &'static str,
    pub common: CommonArgs,
    pub publish: PublishArgs,
    pub subscribers: usize,
    pub sub_url: String,
    pub pub_url: String,
    pub layout: ChannelLayout,
    pub worker_threads: usize,
}

/// Subscribers that are connected (or failed) and can be stopped.
struct Connections {
    handles: Vec<JoinHandle<SubscriberStats>>,
    stop: watch::Sender<bool>,
    subscribed_indices: Vec<usize>,
    connect_secs: f64,
}

impl Connections {
    async fn finish(self) -> Vec<SubscriberStats> {
        let _ = self.stop.send(true);
        let mut stats = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            if let Ok(s) = handle.await {
                stats.push(s);
            }
        }
        stats
    }
}

fn default_channel(tenant: &str) -> String {
    format!("tenant:{tenant}:broadcast")
}

fn subscriber_context(
    common: &CommonArgs,
    dialer: Arc<Dialer>,
    worker_threads: usize,
) -> Arc<SubscriberContext> {
    Arc::new(SubscriberContext {
        dialer,
        protocol: common.protocol,
        hub_path: common.hub_path.clone(),
        hub_method: common.hub_method.clone(),
        connect_gate: Semaphore::new(common.connect_concurrency.max(1)),
        negotiate_pool: Default::default(),
        negotiate_gate: Semaphore::new(subscriber::NEGOTIATE_CONNECTIONS),
        latency: LatencyShards::new(worker_threads * LATENCY_SHARDS_PER_THREAD),
        progress: Arc::new(Progress::default()),
        setup_timeout: Duration::from_secs(common.timeout_secs),
        ws_read_buffer_bytes: common.ws_read_buffer_bytes,
        error_samples: ErrorSamples::default(),
    })
}

async fn connect_all(
    ctx: &Arc<SubscriberContext>,
    plans: Vec<SubscriberPlan>,
    quiet: bool,
) -> Connections {
    let total = plans.len();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(usize, ConnectOutcome)>();
    let (stop, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            tokio::spawn(subscriber::run(
                Arc::clone(ctx),
                plan,
                ready_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let mut settled = 0;
    let mut subscribed_indices = Vec::with_capacity(total);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.reset();
    while settled < total {
        tokio::select! {
            outcome = ready_rx.recv() => match outcome {
                Some((index, outcome)) => {
                    settled += 1;
                    if outcome == ConnectOutcome::Subscribed {
                        subscribed_indices.push(index);
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                if !quiet {
                    eprintln!("  subscribed {}/{total} ({settled} settled)", subscribed_indices.len());
                }
            }
        }
    }
    subscribed_indices.sort_unstable();
    ctx.release_negotiate_pool();
    Connections {
        handles,
        stop,
        subscribed_indices,
        connect_secs: start.elapsed().as_secs_f64(),
    }
}

fn latency_json(histogram: &hdrhistogram::Histogram<u64>) -> Value {
    let ms = |micros: u64| micros as f64 / MICROS_PER_MILLI;
    if histogram.is_empty() {
        return json!({"p50": null, "p90": null, "p99": null, "p999": null, "max": null, "mean": null, "samples": 0});
    }
    json!({
        "p50": ms(histogram.value_at_quantile(0.50)),
        "p90": ms(histogram.value_at_quantile(0.90)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "p999": ms(histogram.value_at_quantile(0.999)),
        "max": ms(histogram.max()),
        "mean": (histogram.mean() / MICROS_PER_MILLI * 1000.0).round() / 1000.0,
        "samples": histogram.len(),
    })
}

fn per_sec(count: u64, from_micros: u64, to_micros: u64) -> f64 {
    if to_micros <= from_micros || from_micros == 0 {
        return 0.0;
    }
    let rate = count as f64 / ((to_micros - from_micros) as f64 / MICROS_PER_SEC);
    rate.round()
}

/// Runs fanout / targeted / cross-node and returns the report.
pub async fn run_delivery(run: DeliveryRun) -> Result<Value, String> {
    let common = &run.common;
    let sub_endpoint = Endpoint::resolve(&run.sub_url)
        .await
        .map_err(|e| e.to_string())?;
    let pub_endpoint = Endpoint::resolve(&run.pub_url)
        .await
        .map_err(|e| e.to_string())?;
    let source_addrs = common
        .source_addrs
        .unwrap_or_else(|| default_source_addrs(run.subscribers + run.publish.connections()));
    let sub_dialer = Arc::new(Dialer::new(sub_endpoint, source_addrs));
    let pub_dialer = Arc::new(Dialer::new(pub_endpoint, source_addrs));
    let minter = TokenMinter::new(&common.jwt_secret, &common.tenant);
    let plans: Vec<SubscriberPlan> = (0..run.subscribers)
        .map(|index| {
            let (user, channel) = match &run.layout {
                ChannelLayout::Shared(channel) => (format!("bench-sub-{index}"), channel.clone()),
                ChannelLayout::PerSubscriber(kind) => {
                    let user = format!("u{index}");
                    let channel = match kind {
                        TargetedChannel::Customer => {
                            format!("tenant:{}:customer:{user}", common.tenant)
                        }
                        TargetedChannel::User => format!("user:{user}"),
                    };
                    (user, channel)
                }
            };
            let token = minter.mint(&user, &common.subscriber_role);
            SubscriberPlan {
                index,
                channel,
                token,
            }
        })
        .collect();
    let subscriber_channels: Vec<String> = plans.iter().map(|p| p.channel.clone()).collect();

    let server = ServerProcesses::new(&common.server_pids);
    let server_rss_before = server.rss_kb();
    let ctx = subscriber_context(common, sub_dialer, run.worker_threads);
    if !common.json_only {
        eprintln!(
            "{}: connecting {} {} subscribers to {} ({} source address(es))",
            run.scenario,
            run.subscribers,
            common.protocol.name(),
            run.sub_url,
            ctx.dialer.source_count()
        );
    }
    let connections = connect_all(&ctx, plans, common.json_only).await;
    let subscribed = connections.subscribed_indices.len();
    let server_rss_after = server.rss_kb();

    // Publish targets and, for each subscriber, which target index feeds it.
    let (channels, target_of): (Vec<String>, Vec<Option<usize>>) = match &run.layout {
        ChannelLayout::Shared(channel) => (vec![channel.clone()], vec![Some(0); run.subscribers]),
        ChannelLayout::PerSubscriber(_) => {
            let mut target_of = vec![None; run.subscribers];
            let channels = connections
                .subscribed_indices
                .iter()
                .enumerate()
                .map(|(target, &index)| {
                    target_of[index] = Some(target);
                    subscriber_channels[index].clone()
                })
                .collect();
            (channels, target_of)
        }
    };
    let publish = &run.publish;
    let messages = match (publish.rate, publish.duration) {
        (Some(rate), Some(duration)) => (rate * duration).round() as u64,
        _ => publish.messages,
    };
    if !common.json_only {
        let pace = publish
            .rate
            .map(|r| format!("at {r} msg/s"))
            .unwrap_or_else(|| format!("window {}", publish.window));
        let over = match publish.publish_over {
            PublishOver::Http => format!("over HTTP, {} connection(s)", publish.connections()),
            PublishOver::Ws => format!("over {} WebSocket(s)", publish.connections()),
            PublishOver::Batch => format!(
                "in batches of up to {} over {} HTTP connection(s)",
                publish.batch_size,
                publish.connections()
            ),
        };
        eprintln!(
            "{}: {subscribed} subscribed in {:.2} s; publishing {messages} messages to {} ({pace}, {over})",
            run.scenario, connections.connect_secs, run.pub_url
        );
    }
    // The measured window of the server's CPU time: from just before the first publish to the
    // last delivery (or the end of the wait for stragglers, when the server is idle anyway).
    let server_cpu_before = server.cpu_micros();
    let server_cpu_each_before = server.cpu_micros_each();
    let outcome = publisher::run(PublishPlan {
        dialer: pub_dialer,
        token: minter.mint(PUBLISHER_USER, SERVICE_ROLE),
        event: publish.event.clone(),
        payload_bytes: publish.payload_bytes,
        channels,
        messages,
        rate: publish.rate,
        window: publish.window,
        over: publish.publish_over,
        ws_connections: publish.ws_connections(),
        socketio: common.protocol == Protocol::Socketio,
        batch_size: publish.batch_size,
        http_connections: publish.connections(),
        ack_timeout: Duration::from_secs(common.timeout_secs),
        max_retries: publish.max_retries,
        seed: publish.seed,
        connection_index_base: run.subscribers,
    })
    .await;

    let expected_total: u64 = match &run.layout {
        ChannelLayout::Shared(_) => outcome.acked * subscribed as u64,
        ChannelLayout::PerSubscriber(_) => outcome.acked,
    };
    let deadline = Instant::now() + Duration::from_secs(common.timeout_secs);
    while ctx.progress.delivered() < expected_total && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
    let timed_out = ctx.progress.delivered() < expected_total;
    let server_cpu_after = server.cpu_micros();
    let server_cpu_secs_by_pid =
        cpu_secs_by_pid(&server_cpu_each_before, &server.cpu_micros_each());
    let connect_secs = connections.connect_secs;
    let stats = connections.finish().await;
    let totals = merge_subscribers(&stats, |index| {
        target_of[index]
            .map(|target| outcome.acked_per_channel.get(target).copied().unwrap_or(0))
            .unwrap_or(0)
    });
    let latency = ctx.latency.merged();
    let delivery_secs = if totals.last_receive_micros > outcome.first_publish_micros
        && outcome.first_publish_micros > 0
    {
        (totals.last_receive_micros - outcome.first_publish_micros) as f64 / MICROS_PER_SEC
    } else {
        0.0
    };
    let mut errors: Vec<String> = ctx.error_samples.take();
    errors.extend(outcome.error_samples.iter().cloned());
    let server_cpu_micros = match (server_cpu_before, server_cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(json!({
        "scenario": run.scenario,
        "protocol": common.protocol.name(),
        "sub_url": run.sub_url,
        "pub_url": run.pub_url,
        "tenant": common.tenant,
        "subscribers": run.subscribers,
        "subscribed": totals.subscribed,
        "connect_errors": totals.connect_errors,
        "subscribe_errors": totals.subscribe_errors,
        "disconnected_early": totals.disconnected_early,
        "connect_secs": (connect_secs * 1000.0).round() / 1000.0,
        "messages": messages,
        "window": publish.window,
        "publish_over": publish.publish_over.name(),
        "publisher_connections": publish.connections(),
        "rate": publish.rate,
        "payload_bytes": publish.payload_bytes,
        "published": outcome.acked,
        "publish_errors": outcome.errors,
        "publish_busy_503": outcome.busy_503,
        "publish_rate_limited": outcome.rate_limited,
        "publish_unmatched_replies": outcome.unmatched_replies,
        "publish_rate": per_sec(outcome.acked, outcome.first_publish_micros, outcome.finished_micros),
        "max_schedule_lag_ms": outcome.max_schedule_lag_micros as f64 / MICROS_PER_MILLI,
        "expected_deliveries": totals.expected,
        "deliveries": totals.deliveries,
        "deliveries_per_sec": per_sec(totals.deliveries, outcome.first_publish_micros, totals.last_receive_micros),
        "delivery_secs": (delivery_secs * 1000.0).round() / 1000.0,
        "lost": totals.lost,
        "duplicated": totals.duplicated,
        "unexpected": totals.unexpected,
        "timed_out": timed_out,
        "latency_ms": latency_json(&latency),
        "server_pids": common.server_pids,
        "server_cpu_secs": server_cpu_micros.map(|us| us as f64 / MICROS_PER_SEC),
        "server_cpu_secs_by_pid": server_cpu_secs_by_pid,
        "server_cpu_us_per_delivery": server_cpu_micros
            .filter(|_| totals.deliveries > 0)
            .map(|us| ((us as f64 / totals.deliveries as f64) * 1000.0).round() / 1000.0),
        "server_rss_before_kb": server_rss_before,
        "server_rss_after_kb": server_rss_after,
        "server_bytes_per_connection": bytes_per_connection(server_rss_before, server_rss_after, subscribed as u64),
        "source_addrs": ctx.dialer.source_count(),
        "errors": errors,
        "unix_time": crate::payload::now_micros() / MICROS_PER_SEC as u64,
    }))
}

/// Each server process's CPU seconds over the measured window, by pid (null where a counter could
/// not be read at either end).
fn cpu_secs_by_pid(
    before: &[(String, Option<u64>)],
    after: &[(String, Option<u64>)],
) -> serde_json::Map<String, Value> {
    before
        .iter()
        .zip(after)
        .map(|((pid, b), (_, a))| {
            let secs = match (b, a) {
                (Some(b), Some(a)) => json!(a.saturating_sub(*b) as f64 / MICROS_PER_SEC),
                _ => Value::Null,
            };
            (pid.clone(), secs)
        })
        .collect()
}

/// Runs the idle scenario and returns the report.
pub async fn run_idle(
    common: &CommonArgs,
    connections_wanted: usize,
    hold_secs: u64,
    settle_secs: u64,
    channel: Option<String>,
    worker_threads: usize,
) -> Result<Value, String> {
    let endpoint = Endpoint::resolve(&common.url)
        .await
        .map_err(|e| e.to_string())?;
    let source_addrs = common
        .source_addrs
        .unwrap_or_else(|| default_source_addrs(connections_wanted));
    let dialer = Arc::new(Dialer::new(endpoint, source_addrs));
    let minter = TokenMinter::new(&common.jwt_secret, &common.tenant);
    let channel = channel.unwrap_or_else(|| default_channel(&common.tenant));
    let plans = (0..connections_wanted)
        .map(|index| SubscriberPlan {
            index,
            channel: channel.clone(),
            token: minter.mint(&format!("bench-idle-{index}"), &common.subscriber_role),
        })
        .collect();
    let server = ServerProcesses::new(&common.server_pids);
    let server_rss = || server.rss_kb();
    let loadgen_rss_before = vm_rss_kb("self");
    let server_before = server_rss();
    let ctx = subscriber_context(common, dialer, worker_threads);
    if !common.json_only {
        eprintln!(
            "idle: connecting {connections_wanted} {} connections to {} ({} source address(es))",
            common.protocol.name(),
            common.url,
            ctx.dialer.source_count()
        );
    }
    let connections = connect_all(&ctx, plans, common.json_only).await;
    let subscribed = connections.subscribed_indices.len() as u64;
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let server_after = server_rss();
    let loadgen_after = vm_rss_kb("self");
    if !common.json_only {
        eprintln!(
            "idle: {subscribed} subscribed in {:.2} s; holding {hold_secs} s",
            connections.connect_secs
        );
    }
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let server_end = server_rss();
    let connect_secs = connections.connect_secs;
    let stats = connections.finish().await;
    let totals = merge_subscribers(&stats, |_| 0);
    let per_connection =
        |before: Option<u64>, after: Option<u64>| bytes_per_connection(before, after, subscribed);
    Ok(json!({
        "scenario": "idle",
        "protocol": common.protocol.name(),
        "sub_url": common.url,
        "tenant": common.tenant,
        "subscribers": connections_wanted,
        "subscribed": totals.subscribed,
        "connect_errors": totals.connect_errors,
        "subscribe_errors": totals.subscribe_errors,
        "disconnected_early": totals.disconnected_early,
        "connect_secs": (connect_secs * 1000.0).round() / 1000.0,
        "hold_secs": hold_secs,
        "server_pids": common.server_pids,
        "server_rss_before_kb": server_before,
        "server_rss_after_kb": server_after,
        "server_rss_end_kb": server_end,
        "server_bytes_per_connection": per_connection(server_before, server_after),
        "loadgen_bytes_per_connection": per_connection(loadgen_rss_before, loadgen_after),
        "source_addrs": ctx.dialer.source_count(),
        "errors": ctx.error_samples.take(),
        "unix_time": crate::payload::now_micros() / MICROS_PER_SEC as u64,
    }))
}

/// RSS growth (KiB before and after) per connection in bytes; null when unknown.
fn bytes_per_connection(before_kb: Option<u64>, after_kb: Option<u64>, connections: u64) -> Value {
    match (before_kb, after_kb) {
        (Some(b), Some(a)) if connections > 0 => {
            json!((a.saturating_sub(b) * BYTES_PER_KIB) / connections)
        }
        _ => Value::Null,
    }
}

/// Builds the fanout channel layout from the optional `--channel`.
pub fn shared_layout(tenant: &str, channel: &Option<String>) -> ChannelLayout {
    ChannelLayout::Shared(channel.clone().unwrap_or_else(|| default_channel(tenant)))
}
