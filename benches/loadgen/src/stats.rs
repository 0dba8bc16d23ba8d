//! Measurement: per-subscriber sequence tracking (lost and duplicated deliveries), latency
//! recording into sharded HDR histograms with bounded memory per connection, and the merge of all
//! subscribers' results into run totals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Highest latency the histograms resolve, in microseconds (one hour); larger values saturate.
const LATENCY_MAX_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits kept by the latency histograms.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Latencies a connection buffers before taking a shard lock.
const LATENCY_FLUSH_BATCH: usize = 256;
/// Highest sequence number tracked; larger ones are counted as unexpected (guards memory).
const MAX_TRACKED_SEQ: u64 = 1 << 32;
/// Bits per word of the sequence bitset.
const BITS_PER_WORD: u64 = u64::BITS as u64;

/// Which sequence numbers one subscriber has seen on its channel.
#[derive(Default, Debug, Clone)]
pub struct SeqTracker {
    seen: Vec<u64>,
    pub distinct: u64,
    pub duplicates: u64,
    pub unexpected: u64,
}

impl SeqTracker {
    /// Records a delivery; returns true the first time `seq` is seen.
    pub fn record(&mut self, seq: u64) -> bool {
        if seq >= MAX_TRACKED_SEQ {
            self.unexpected += 1;
            return false;
        }
        let word = (seq / BITS_PER_WORD) as usize;
        let bit = 1u64 << (seq % BITS_PER_WORD);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            false
        } else {
            self.seen[word] |= bit;
            self.distinct += 1;
            true
        }
    }
}

/// Latency histograms shared by all connections, split into shards to keep lock contention low.
pub struct LatencyShards {
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// A fresh latency histogram (microseconds).
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, LATENCY_SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

impl LatencyShards {
    pub fn new(shard_count: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..shard_count.max(1))
                .map(|_| Mutex::new(new_latency_histogram()))
                .collect(),
        })
    }

    fn record_batch(&self, shard: usize, micros: &[u64]) {
        let mut histogram = self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for &value in micros {
            histogram.saturating_record(value);
        }
    }

    /// All shards added into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = new_latency_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere, so addition cannot fail.
            let _ = total.add(&*shard);
        }
        total
    }
}

/// A connection's latency buffer: cheap pushes, one shard lock per batch.
pub struct LatencyRecorder {
    shards: Arc<LatencyShards>,
    shard: usize,
    pending: Vec<u64>,
}

impl LatencyRecorder {
    pub fn new(shards: Arc<LatencyShards>, shard: usize) -> Self {
        Self {
            shards,
            shard,
            pending: Vec::new(),
        }
    }

    pub fn record(&mut self, micros: u64) {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(LATENCY_FLUSH_BATCH);
        }
        self.pending.push(micros);
        if self.pending.len() >= LATENCY_FLUSH_BATCH {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.shards.record_batch(self.shard, &self.pending);
            self.pending.clear();
        }
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// How one subscriber's connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectOutcome {
    #[default]
    NotAttempted,
    ConnectFailed,
    SubscribeRefused,
    Subscribed,
}

/// One subscriber's result at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct SubscriberStats {
    pub index: usize,
    pub outcome: ConnectOutcome,
    pub seq: SeqTracker,
    pub last_receive_micros: u64,
    /// The connection ended before the run did (server closed it, or a read error).
    pub disconnected_early: bool,
}

/// Run totals over all subscribers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryTotals {
    pub subscribed: u64,
    pub connect_errors: u64,
    pub subscribe_errors: u64,
    pub disconnected_early: u64,
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub last_receive_micros: u64,
}

/// Adds up subscribers' results. `expected_for(index)` is how many distinct messages subscriber
/// `index` should have received (the acknowledged publishes to its channel).
pub fn merge_subscribers(
    stats: &[SubscriberStats],
    expected_for: impl Fn(usize) -> u64,
) -> DeliveryTotals {
    let mut totals = DeliveryTotals::default();
    for s in stats {
        match s.outcome {
            ConnectOutcome::Subscribed => totals.subscribed += 1,
            ConnectOutcome::ConnectFailed | ConnectOutcome::NotAttempted => {
                totals.connect_errors += 1;
                continue;
            }
            ConnectOutcome::SubscribeRefused => {
                totals.subscribe_errors += 1;
                continue;
            }
        }
        let expected = expected_for(s.index);
        totals.expected += expected;
        totals.deliveries += s.seq.distinct;
        totals.lost += expected.saturating_sub(s.seq.distinct);
        totals.duplicated += s.seq.duplicates;
        totals.unexpected += s.seq.unexpected;
        totals.disconnected_early += u64::from(s.disconnected_early);
        totals.last_receive_micros = totals.last_receive_micros.max(s.last_receive_micros);
    }
    totals
}

/// Counter of distinct deliveries across all subscribers, polled to know when the run is complete.
#[derive(Default)]
pub struct Progress {
    pub delivered: AtomicU64,
}

impl Progress {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracker_counts_distinct_and_duplicates() {
        let mut tracker = SeqTracker::default();
        assert!(tracker.record(0));
        assert!(tracker.record(130));
        assert!(!tracker.record(130));
        assert!(tracker.record(64));
        assert!(!tracker.record(MAX_TRACKED_SEQ));
        assert_eq!(tracker.distinct, 3);
        assert_eq!(tracker.duplicates, 1);
        assert_eq!(tracker.unexpected, 1);
    }

    fn subscriber(
        index: usize,
        outcome: ConnectOutcome,
        seqs: &[u64],
        last: u64,
    ) -> SubscriberStats {
        let mut seq = SeqTracker::default();
        for &s in seqs {
            seq.record(s);
        }
        SubscriberStats {
            index,
            outcome,
            seq,
            last_receive_micros: last,
            disconnected_early: false,
        }
    }

    #[test]
    fn merge_counts_lost_duplicates_and_failures() {
        let stats = vec![
            subscriber(0, ConnectOutcome::Subscribed, &[0, 1, 2, 2], 50),
            subscriber(1, ConnectOutcome::Subscribed, &[0, 2], 70),
            subscriber(2, ConnectOutcome::ConnectFailed, &[], 0),
            subscriber(3, ConnectOutcome::SubscribeRefused, &[], 0),
        ];
        let totals = merge_subscribers(&stats, |_| 3);
        assert_eq!(
            totals,
            DeliveryTotals {
                subscribed: 2,
                connect_errors: 1,
                subscribe_errors: 1,
                disconnected_early: 0,
                deliveries: 5,
                expected: 6,
                lost: 1,
                duplicated: 1,
                unexpected: 0,
                last_receive_micros: 70,
            }
        );
    }

    #[test]
    fn merge_never_counts_negative_loss() {
        // A message whose publish failed may still arrive: more than expected is not "lost".
        let stats = vec![subscriber(0, ConnectOutcome::Subscribed, &[0, 1, 2], 1)];
        let totals = merge_subscribers(&stats, |_| 2);
        assert_eq!(totals.lost, 0);
        assert_eq!(totals.deliveries, 3);
    }

    #[test]
    fn latency_shards_merge_all_recorders() {
        let shards = LatencyShards::new(4);
        {
            let mut a = LatencyRecorder::new(Arc::clone(&shards), 0);
            let mut b = LatencyRecorder::new(Arc::clone(&shards), 3);
            for v in 1..=1000 {
                a.record(v);
            }
            b.record(5_000);
            // `a` flushes full batches as it goes; both flush the rest on drop.
        }
        let merged = shards.merged();
        assert_eq!(merged.len(), 1001);
        assert!(merged.equivalent(merged.max(), 5_000));
        assert_eq!(merged.min(), 1);
    }
}
