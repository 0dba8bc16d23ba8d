//! A connection's subscriptions: the state machine that makes "register first, then replay, then
//! live" come out in order with no gap and no duplicate.
//!
//! A subscription is `Pending` from the moment the client asks until the broker's reply is
//! handled; live events arriving meanwhile are buffered. On activation the connection writes the
//! replay, then the buffered events, skipping every offset at or below the last one written.

use std::collections::HashMap;
use std::sync::Arc;

use crate::channel::ChannelName;
use crate::envelope::Envelope;

/// Live events kept per pending subscription before the oldest are dropped. The pending phase
/// lasts one broker round trip, so this is only reached under extreme load.
pub const PENDING_BUFFER_LIMIT: usize = 4096;

enum Entry {
    Pending {
        id: u64,
        buffered: Vec<Arc<Envelope>>,
    },
    Active {
        id: u64,
        last_offset: u64,
        epoch: Arc<str>,
    },
}

impl Entry {
    /// What to do with a live event of this subscription's channel.
    fn accept(&mut self, env: &Arc<Envelope>) -> Accept {
        match self {
            Entry::Pending { buffered, .. } => {
                if buffered.len() >= PENDING_BUFFER_LIMIT {
                    buffered.remove(0);
                }
                buffered.push(env.clone());
                Accept::Held
            }
            Entry::Active {
                last_offset, epoch, ..
            } => {
                // The same `Arc` in the common case (the shard's epoch), so no text compare.
                if !Arc::ptr_eq(&env.epoch, epoch) && *env.epoch != **epoch {
                    // A new history generation restarts offsets.
                    *epoch = env.epoch.clone();
                    *last_offset = env.offset;
                    Accept::Write
                } else if env.offset > *last_offset {
                    *last_offset = env.offset;
                    Accept::Write
                } else {
                    Accept::Skip
                }
            }
        }
    }
}

/// Why a subscription could not begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginError {
    Already,
    TooMany,
}

/// What to do with a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Write,
    /// Buffered until the subscription activates.
    Held,
    /// Not subscribed, or a duplicate.
    Skip,
}

/// The subscriptions of one connection.
pub struct Subscriptions {
    /// Looked up once per delivered event, so hashed with foldhash rather than SipHash (which was
    /// about 200 instructions per delivery in a fan-out profile, docs/benchmarks.md "Profiles").
    /// Flooding one map with colliding names gains nothing: a connection holds at most
    /// `session.max_subscriptions` entries, and the seed is random per process.
    entries: HashMap<ChannelName, Entry, foldhash::fast::RandomState>,
    next_id: u64,
    max: usize,
}

impl Subscriptions {
    pub fn new(max: usize) -> Self {
        Self {
            entries: HashMap::default(),
            next_id: 1,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, channel: &ChannelName) -> bool {
        self.entries.contains_key(channel)
    }

    /// Every channel, pending or active.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.entries.keys()
    }

    /// Starts a subscription; it counts toward the limit from now on.
    pub fn begin(&mut self, channel: &ChannelName) -> Result<u64, BeginError> {
        if self.entries.contains_key(channel) {
            return Err(BeginError::Already);
        }
        if self.entries.len() >= self.max {
            return Err(BeginError::TooMany);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            channel.clone(),
            Entry::Pending {
                id,
                buffered: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Abandons a pending subscription (refused or failed).
    pub fn cancel(&mut self, channel: &ChannelName) {
        if matches!(self.entries.get(channel), Some(Entry::Pending { .. })) {
            self.entries.remove(channel);
        }
    }

    /// Activates a pending subscription. `start_after` is the offset the client already has
    /// (its `since`, or the channel's offset at registration). Returns the subscription id and the
    /// events to write now, in order; `None` if the subscription was dropped meanwhile.
    pub fn activate(
        &mut self,
        channel: &ChannelName,
        start_after: u64,
        epoch: Arc<str>,
        replay: Vec<Arc<Envelope>>,
    ) -> Option<(u64, Vec<Arc<Envelope>>)> {
        let entry = self.entries.get_mut(channel)?;
        let Entry::Pending { id, buffered } = entry else {
            return None;
        };
        let id = *id;
        let buffered = std::mem::take(buffered);
        let mut last = start_after;
        let mut out = Vec::with_capacity(replay.len() + buffered.len());
        for env in replay.into_iter().chain(buffered) {
            if *env.epoch != *epoch {
                // History was lost between registration and now: deliver what is live.
                last = 0;
            }
            if env.offset > last || *env.epoch != *epoch {
                last = env.offset;
                out.push(env);
            }
        }
        let epoch = out.last().map(|e| e.epoch.clone()).unwrap_or(epoch);
        *entry = Entry::Active {
            id,
            last_offset: last,
            epoch,
        };
        Some((id, out))
    }

    /// Decides what to do with a live event.
    pub fn accept(&mut self, env: &Arc<Envelope>) -> Accept {
        match self.entries.get_mut(&env.channel) {
            None => Accept::Skip,
            Some(entry) => entry.accept(env),
        }
    }

    /// [`Self::accept`] for each of `events` in order; `verdicts[i]` is the decision for
    /// `events[i]`. Consecutive events of one channel (a fan-out burst) share one lookup: the
    /// lookup was the largest cost of a delivery in this connection's own code (docs/benchmarks.md
    /// "Profiles").
    pub fn accept_all(&mut self, events: &[Arc<Envelope>], verdicts: &mut Vec<Accept>) {
        verdicts.clear();
        let mut start = 0;
        while start < events.len() {
            let channel = &events[start].channel;
            let run = events[start..]
                .iter()
                .take_while(|e| e.channel == *channel)
                .count();
            let same = &events[start..start + run];
            match self.entries.get_mut(channel) {
                None => verdicts.extend(same.iter().map(|_| Accept::Skip)),
                Some(entry) => verdicts.extend(same.iter().map(|env| entry.accept(env))),
            }
            start += run;
        }
    }

    /// Removes a subscription; true if it existed.
    pub fn remove(&mut self, channel: &ChannelName) -> bool {
        self.entries.remove(channel).is_some()
    }

    /// Removes every subscription, returning their channels.
    pub fn drain(&mut self) -> Vec<ChannelName> {
        self.entries.drain().map(|(c, _)| c).collect()
    }

    /// Every channel with the position delivered so far (`None` while pending).
    pub fn positions(&self) -> Vec<(ChannelName, Option<crate::envelope::StreamPosition>)> {
        self.entries
            .iter()
            .map(|(c, e)| {
                let pos = match e {
                    Entry::Pending { .. } => None,
                    Entry::Active {
                        last_offset, epoch, ..
                    } => Some(crate::envelope::StreamPosition {
                        offset: *last_offset,
                        epoch: epoch.to_string(),
                    }),
                };
                (c.clone(), pos)
            })
            .collect()
    }

    /// The channel of the active or pending subscription `id`.
    pub fn channel_of(&self, id: u64) -> Option<ChannelName> {
        self.entries.iter().find_map(|(channel, e)| match e {
            Entry::Pending { id: i, .. } | Entry::Active { id: i, .. } if *i == id => {
                Some(channel.clone())
            }
            _ => None,
        })
    }

    /// The subscription id of an active or pending channel.
    pub fn id_of(&self, channel: &ChannelName) -> Option<u64> {
        self.entries.get(channel).map(|e| match e {
            Entry::Pending { id, .. } | Entry::Active { id, .. } => *id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Draft, EventName};
    use crate::ids::NodeId;

    fn ch() -> ChannelName {
        ChannelName::parse("user:u").unwrap()
    }

    fn env(offset: u64, epoch: &str) -> Arc<Envelope> {
        let draft = Draft::new(
            ch(),
            EventName::parse("E").unwrap(),
            crate::payload::Payload::test("null"),
        );
        Arc::new(Envelope::new(
            draft,
            offset,
            Arc::from(epoch),
            NodeId(Arc::from("n")),
        ))
    }

    fn offsets(v: &[Arc<Envelope>]) -> Vec<u64> {
        v.iter().map(|e| e.offset).collect()
    }

    fn env_on(channel: &str, offset: u64) -> Arc<Envelope> {
        let draft = Draft::new(
            ChannelName::parse(channel).unwrap(),
            EventName::parse("E").unwrap(),
            crate::payload::Payload::test("null"),
        );
        Arc::new(Envelope::new(
            draft,
            offset,
            Arc::from("e"),
            NodeId(Arc::from("n")),
        ))
    }

    #[test]
    fn a_batch_gets_the_verdicts_one_by_one_would_give() {
        let setup = || {
            let mut s = Subscriptions::new(10);
            for name in ["user:a", "user:b"] {
                let c = ChannelName::parse(name).unwrap();
                s.begin(&c).unwrap();
                s.activate(&c, 2, Arc::from("e"), Vec::new());
            }
            // Pending: its events are held.
            s.begin(&ChannelName::parse("user:p").unwrap()).unwrap();
            s
        };
        let batch: Vec<_> = [
            ("user:a", 3),
            ("user:a", 3),
            ("user:a", 4),
            ("user:x", 9),
            ("user:b", 1),
            ("user:b", 5),
            ("user:p", 7),
            ("user:a", 2),
            ("user:a", 6),
        ]
        .iter()
        .map(|(c, o)| env_on(c, *o))
        .collect();
        let mut one_by_one = setup();
        let expected: Vec<Accept> = batch.iter().map(|e| one_by_one.accept(e)).collect();
        assert_eq!(
            expected,
            [
                Accept::Write,
                Accept::Skip,
                Accept::Write,
                Accept::Skip,
                Accept::Skip,
                Accept::Write,
                Accept::Held,
                Accept::Skip,
                Accept::Write
            ]
        );
        let mut batched = setup();
        let mut verdicts = vec![Accept::Held; 3];
        batched.accept_all(&batch, &mut verdicts);
        assert_eq!(verdicts, expected);
    }

    #[test]
    fn replay_then_buffered_without_gap_or_duplicate() {
        let mut s = Subscriptions::new(10);
        s.begin(&ch()).unwrap();
        // Live events arrive before the broker's reply; 6 and 7 overlap the replay.
        for o in [6, 7, 8] {
            assert_eq!(s.accept(&env(o, "e")), Accept::Held);
        }
        let replay = (4..=7).map(|o| env(o, "e")).collect();
        let (_, out) = s.activate(&ch(), 3, Arc::from("e"), replay).unwrap();
        assert_eq!(offsets(&out), [4, 5, 6, 7, 8]);
        assert_eq!(s.accept(&env(8, "e")), Accept::Skip, "duplicate");
        assert_eq!(s.accept(&env(9, "e")), Accept::Write);
    }

    #[test]
    fn limits_and_duplicates_are_refused() {
        let mut s = Subscriptions::new(1);
        s.begin(&ch()).unwrap();
        assert_eq!(s.begin(&ch()), Err(BeginError::Already));
        assert_eq!(
            s.begin(&ChannelName::parse("user:v").unwrap()),
            Err(BeginError::TooMany)
        );
    }

    #[test]
    fn events_for_other_or_removed_channels_are_skipped() {
        let mut s = Subscriptions::new(4);
        assert_eq!(s.accept(&env(1, "e")), Accept::Skip);
        s.begin(&ch()).unwrap();
        assert!(s.remove(&ch()));
        assert!(s.activate(&ch(), 0, Arc::from("e"), vec![]).is_none());
    }

    #[test]
    fn a_new_epoch_restarts_offsets() {
        let mut s = Subscriptions::new(4);
        s.begin(&ch()).unwrap();
        s.activate(&ch(), 10, Arc::from("e1"), vec![]).unwrap();
        assert_eq!(s.accept(&env(1, "e2")), Accept::Write);
        assert_eq!(s.accept(&env(2, "e2")), Accept::Write);
        assert_eq!(s.accept(&env(2, "e2")), Accept::Skip);
    }
}
