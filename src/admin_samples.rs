//! The node's recent past for the console's charts: every `[admin] sample_interval_ms` the node
//! reads its counters (deliveries, publishes, connections, slow-consumer disconnects, each actor
//! kind's mailbox depth, full count and handled count) into a ring buffer holding
//! `[admin] sample_window_secs` of them; `GET /api/v1/admin/samples` turns consecutive samples
//! into rates. Also where one actor kind's figures are read ([`KindFigures`]), for the samples
//! and for `GET /api/v1/admin/actors` alike.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use serde::Serialize;
use serde_json::{json, Map, Value};
use switchyard_actors::connection::Connections;
use switchyard_actors::envelope::now_millis;
use switchyard_actors::mailbox::ActorKind;
use switchyard_actors::metered::{KindReading, MeterReading};
use switchyard_actors::metrics::Metrics;
use switchyard_actors::node::Node;

/// `switchyard_published_total{source}` of the node's own activity summaries, left out of the
/// publish rate (watching a tenant would otherwise show up as publishing).
const OWN_SOURCE: &str = "activity";

/// One actor kind's figures now.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindFigures {
    /// Whether an actor of this kind runs in this node's mode (no Redis bridge in embedded mode,
    /// no change-feed listener without Postgres and `[change_feed] enabled`).
    pub running: bool,
    pub queue_depth: i64,
    pub peak_queue_depth: i64,
    pub handled: u64,
    pub mailbox_full: u64,
    pub mean_handle_millis: Option<f64>,
    /// Per instance, for kinds with several (broker shards).
    pub instances: Vec<MeterReading>,
}

impl KindFigures {
    pub fn read(m: &Metrics, kind: ActorKind) -> Self {
        let instances = m.mailboxes.readings(kind);
        let sum = KindReading::of(&instances);
        let full = m.mailbox_full.with_label_values(&[kind.as_str()]).get();
        let mut f = KindFigures {
            running: !instances.is_empty(),
            queue_depth: sum.queue_depth,
            peak_queue_depth: sum.peak_queue_depth,
            handled: sum.handled,
            mailbox_full: full,
            mean_handle_millis: sum.mean_handle_millis,
            instances,
        };
        if kind == ActorKind::Connection {
            // Sessions: the outbox is the queue; handled = events handed to it and written;
            // the peak is the deepest single outbox. Time per event is the delivery latency.
            f.peak_queue_depth = m.session_queue_depth_peak.get();
            f.handled = m.delivered.get();
            f.instances.clear();
        }
        if kind != ActorKind::Broker {
            f.instances.clear();
        }
        f
    }
}

/// The counters behind one point of the charts.
#[derive(Clone, Debug)]
struct Sample {
    at_ms: u64,
    published: u64,
    delivered: u64,
    connections: i64,
    slow_consumer_disconnects: u64,
    /// (depth, full, handled) in [`ActorKind::ALL`] order.
    kinds: Vec<(i64, u64, u64)>,
}

impl Sample {
    fn take(m: &Metrics) -> Self {
        let published = m
            .published
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|x| {
                !x.get_label()
                    .iter()
                    .any(|l| l.name() == "source" && l.value() == OWN_SOURCE)
            })
            .map(|x| x.get_counter().get_value() as u64)
            .sum();
        let connections = ["native", "signalr"]
            .iter()
            .map(|p| m.connections.with_label_values(&[p]).get())
            .sum();
        let kinds = ActorKind::ALL
            .iter()
            .map(|k| {
                let f = KindFigures::read(m, *k);
                (f.queue_depth, f.mailbox_full, f.handled)
            })
            .collect();
        Sample {
            at_ms: now_millis(),
            published,
            delivered: m.delivered.get(),
            connections,
            slow_consumer_disconnects: m.slow_consumer_disconnects.get(),
            kinds,
        }
    }
}

/// The ring buffer of samples (see the module docs).
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
    capacity: usize,
    pub interval: Duration,
}

impl Samples {
    /// Keeps `window / interval` samples (at least two, so there is a rate).
    pub fn new(interval: Duration, window: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let capacity = (window.as_millis() / interval.as_millis()).max(2) as usize + 1;
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            interval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the node's counters into the ring, dropping the oldest sample when full.
    pub fn sample(&self, m: &Metrics) {
        let s = Sample::take(m);
        let mut ring = self.lock();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Each kind's messages handled per second over the last interval (`None` before two
    /// samples), in [`ActorKind::ALL`] order.
    pub fn handled_per_second(&self) -> Vec<Option<f64>> {
        let ring = self.lock();
        let n = ring.len();
        if n < 2 {
            return vec![None; ActorKind::ALL.len()];
        }
        let (a, b) = (&ring[n - 2], &ring[n - 1]);
        let secs = secs_between(a, b);
        a.kinds
            .iter()
            .zip(&b.kinds)
            .map(|(x, y)| Some(y.2.saturating_sub(x.2) as f64 / secs))
            .collect()
    }

    /// The charts' points: one per pair of consecutive samples, oldest first.
    pub fn points(&self) -> Vec<Value> {
        let ring = self.lock();
        ring.iter()
            .zip(ring.iter().skip(1))
            .map(|(a, b)| {
                let secs = secs_between(a, b);
                let rate = |x: u64, y: u64| round2(y.saturating_sub(x) as f64 / secs);
                let mut actors = Map::new();
                for (i, kind) in ActorKind::ALL.iter().enumerate() {
                    let (x, y) = (a.kinds[i], b.kinds[i]);
                    actors.insert(
                        kind.as_str().to_owned(),
                        json!({
                            "queueDepth": y.0,
                            "mailboxFull": y.1.saturating_sub(x.1),
                            "handledPerSecond": rate(x.2, y.2),
                        }),
                    );
                }
                json!({
                    "at": b.at_ms,
                    "deliveredPerSecond": rate(a.delivered, b.delivered),
                    "publishedPerSecond": rate(a.published, b.published),
                    "connections": b.connections,
                    "slowConsumerDisconnects":
                        b.slow_consumer_disconnects.saturating_sub(a.slow_consumer_disconnects),
                    "actors": actors,
                })
            })
            .collect()
    }
}

fn secs_between(a: &Sample, b: &Sample) -> f64 {
    (b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0).max(0.001)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sums the sessions' outboxes into their meter (before anything reads the figures).
pub fn refresh_sessions(m: &Metrics, connections: &Connections) {
    m.sessions_meter()
        .set_depth(connections.outboxes.queued_events());
}

/// Samples every `samples.interval` until the node shuts down.
pub fn run_sampler(node: Arc<Node>, connections: Arc<Connections>, samples: Arc<Samples>) {
    let mut shutdown = node.shutdown.hold("admin samples");
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(samples.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    refresh_sessions(&node.metrics, &connections);
                    samples.sample(&node.metrics);
                }
                _ = shutdown.recv() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_window_and_rates_come_from_consecutive_samples() {
        let samples = Samples::new(Duration::from_secs(5), Duration::from_secs(15));
        let m = Metrics::new();
        for _ in 0..10 {
            samples.sample(&m);
        }
        // 15 s of 5-second samples: 3 intervals, 4 samples, 3 points.
        assert_eq!(samples.points().len(), 3);
        m.delivered.inc_by(500);
        samples.sample(&m);
        let last = samples.points().pop().unwrap();
        assert!(last["deliveredPerSecond"].as_f64().unwrap() > 0.0);
        assert_eq!(last["actors"]["broker"]["queueDepth"], 0);
        assert_eq!(samples.handled_per_second().len(), ActorKind::ALL.len());
    }
}
