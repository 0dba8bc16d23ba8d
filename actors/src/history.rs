//! Embedded-mode history: each channel's recent envelopes in memory, with its offset counter and
//! epoch. One [`ChannelLog`] per channel, owned by the broker shard that owns the channel.
//!
//! Limits (stated where the guarantee is made): history lives in one node's memory, so it is lost
//! on restart; a new log gets a fresh epoch, so a client's old position is never mistaken for a
//! new one. Cluster mode keeps history in Redis streams instead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::envelope::{Draft, Envelope, StreamPosition};
use crate::ids::NodeId;

/// History bounds for one channel.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// Envelopes kept per channel.
    pub size: usize,
    /// How long an envelope stays recoverable; also how long an idle log is kept.
    pub ttl: Duration,
}

/// What a subscriber asking to recover gets.
#[derive(Debug)]
pub struct Recovery {
    /// Whether every event after the client's position is in `replay`.
    pub recovered: bool,
    /// Events after the client's position, oldest first.
    pub replay: Vec<Arc<Envelope>>,
}

/// One channel's offsets and recent envelopes.
pub struct ChannelLog {
    epoch: Arc<str>,
    /// Offset of the last event appended (0 = none yet).
    offset: u64,
    entries: VecDeque<(Instant, Arc<Envelope>)>,
    last_used: Instant,
}

impl ChannelLog {
    pub fn new() -> Self {
        Self {
            // A short random epoch: unique per log, so a recreated log never reuses offsets
            // under an epoch a client has seen.
            epoch: Arc::from(&uuid::Uuid::new_v4().simple().to_string()[..12]),
            offset: 0,
            entries: VecDeque::new(),
            last_used: Instant::now(),
        }
    }

    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Gives the draft the next offset, keeps it (within `limits`) and returns the envelope.
    pub fn append(
        &mut self,
        draft: Draft,
        origin: &NodeId,
        limits: HistoryLimits,
    ) -> Arc<Envelope> {
        self.offset += 1;
        let env = Arc::new(Envelope::new(
            draft,
            self.offset,
            self.epoch.clone(),
            origin.clone(),
        ));
        let now = Instant::now();
        self.last_used = now;
        if limits.size > 0 {
            if self.entries.len() == limits.size {
                self.entries.pop_front();
            }
            self.entries.push_back((now, env.clone()));
        }
        env
    }

    /// Events after `since`, if this log still holds all of them.
    pub fn recover(&mut self, since: &StreamPosition, limits: HistoryLimits) -> Recovery {
        self.expire(limits.ttl);
        self.last_used = Instant::now();
        let lost = Recovery {
            recovered: false,
            replay: Vec::new(),
        };
        if since.epoch.as_str() != &*self.epoch || since.offset > self.offset {
            return lost;
        }
        let oldest = self
            .entries
            .front()
            .map(|(_, e)| e.offset)
            .unwrap_or(self.offset + 1);
        if since.offset + 1 < oldest {
            return lost;
        }
        Recovery {
            recovered: true,
            replay: self
                .entries
                .iter()
                .filter(|(_, e)| e.offset > since.offset)
                .map(|(_, e)| e.clone())
                .collect(),
        }
    }

    /// Whether this log still holds the event with this id (newest first: a duplicate is recent).
    pub fn holds(&self, id: &str) -> bool {
        self.entries.iter().rev().any(|(_, e)| &*e.id == id)
    }

    /// Drops entries older than `ttl`.
    pub fn expire(&mut self, ttl: Duration) {
        while let Some((at, _)) = self.entries.front() {
            if at.elapsed() > ttl {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether the log holds nothing recoverable and has not been used within `ttl`.
    pub fn is_stale(&self, ttl: Duration) -> bool {
        self.entries.is_empty() && self.last_used.elapsed() > ttl
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Default for ChannelLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;
    use crate::envelope::EventName;

    fn draft() -> Draft {
        Draft::new(
            ChannelName::parse("user:u").unwrap(),
            EventName::parse("E").unwrap(),
            crate::payload::Payload::test("1"),
        )
    }

    const LIMITS: HistoryLimits = HistoryLimits {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    fn node() -> NodeId {
        NodeId(Arc::from("n"))
    }

    #[test]
    fn offsets_increase_and_history_is_bounded() {
        let mut log = ChannelLog::new();
        for i in 1..=5 {
            assert_eq!(log.append(draft(), &node(), LIMITS).offset, i);
        }
        assert_eq!(log.len(), 3);
        let epoch = log.epoch().to_string();
        let pos = |offset| StreamPosition {
            offset,
            epoch: epoch.clone(),
        };
        // 2 and 3 are present; 1 is gone.
        let r = log.recover(&pos(2), LIMITS);
        assert!(r.recovered);
        assert_eq!(
            r.replay.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let r = log.recover(&pos(5), LIMITS);
        assert!(r.recovered && r.replay.is_empty());
        assert!(
            !log.recover(&pos(1), LIMITS).recovered,
            "offset 2 was evicted"
        );
        assert!(
            !log.recover(&pos(9), LIMITS).recovered,
            "a future position is not ours"
        );
    }

    #[test]
    fn another_epoch_is_not_recoverable() {
        let mut log = ChannelLog::new();
        log.append(draft(), &node(), LIMITS);
        let r = log.recover(
            &StreamPosition {
                offset: 0,
                epoch: "other".into(),
            },
            LIMITS,
        );
        assert!(!r.recovered);
        assert_ne!(ChannelLog::new().epoch(), log.epoch());
    }

    #[test]
    fn expired_entries_are_not_replayed() {
        let short = HistoryLimits {
            size: 10,
            ttl: Duration::from_millis(0),
        };
        let mut log = ChannelLog::new();
        log.append(draft(), &node(), short);
        std::thread::sleep(Duration::from_millis(2));
        let r = log.recover(
            &StreamPosition {
                offset: 0,
                epoch: log.epoch().to_string(),
            },
            short,
        );
        assert!(!r.recovered);
    }
}
