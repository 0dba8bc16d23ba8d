//! One connection's publishes to one channel keep their order: a lane per channel.
//!
//! The core lets a connection's publishes run side by side (`session.max_publishes_in_flight`,
//! `core/mod.rs`). Publishes to different channels go to the broker independently. Publishes to
//! one channel go through that channel's lane: while a run of them is with the broker, later ones
//! wait in the lane, and when the run is answered everything that waited goes to the broker as the
//! next run, in request order, in one request ([`crate::node::Node::publish_run`]: one shard
//! message on one node, one publish after another in Redis). So a back end that pipelines many
//! events to one channel (a fan-out) pays one broker round trip per run instead of one per
//! event, and their offsets follow request order.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::core::PublishTicket;
use crate::channel::ChannelName;
use crate::envelope::Draft;

/// A publish waiting in its channel's lane.
#[derive(Debug)]
pub(super) struct Waiting {
    pub ticket: PublishTicket,
    pub draft: Draft,
}

/// The lanes of the channels with a run at the broker (see the module docs).
#[derive(Debug, Default)]
pub(super) struct PublishLanes {
    /// A channel is here while a run of it is at the broker; its value is what waits for the next.
    busy: HashMap<ChannelName, Vec<Waiting>>,
}

impl PublishLanes {
    /// Queues a publish; returns the run to hand to the broker now when its channel had none
    /// there (the run is this publish alone).
    pub fn enqueue(&mut self, ticket: PublishTicket, draft: Draft) -> Option<Vec<Waiting>> {
        match self.busy.entry(draft.channel.clone()) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push(Waiting { ticket, draft });
                None
            }
            Entry::Vacant(lane) => {
                lane.insert(Vec::new());
                Some(vec![Waiting { ticket, draft }])
            }
        }
    }

    /// `channel`'s run was answered: the next run (everything that waited meanwhile, in order),
    /// or `None` and the lane is free.
    pub fn finished(&mut self, channel: &ChannelName) -> Option<Vec<Waiting>> {
        let waiting = self.busy.get_mut(channel)?;
        if waiting.is_empty() {
            self.busy.remove(channel);
            None
        } else {
            Some(std::mem::take(waiting))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EventName;

    fn draft(channel: &str) -> Draft {
        Draft::new(
            ChannelName::parse(channel).unwrap(),
            EventName::parse("E").unwrap(),
            crate::payload::Payload::test("1"),
        )
    }

    fn tickets(run: &[Waiting]) -> Vec<PublishTicket> {
        run.iter().map(|w| w.ticket).collect()
    }

    #[test]
    fn a_channel_with_a_run_at_the_broker_queues_the_next_publishes_in_order() {
        let mut lanes = PublishLanes::default();
        let a = "tenant:t1:order:a";
        let first = lanes.enqueue(PublishTicket::new(1), draft(a)).unwrap();
        assert_eq!(tickets(&first), [PublishTicket::new(1)]);
        assert!(lanes.enqueue(PublishTicket::new(2), draft(a)).is_none());
        // Another channel is independent.
        let other = lanes.enqueue(PublishTicket::new(3), draft("tenant:t1:order:b"));
        assert_eq!(tickets(&other.unwrap()), [PublishTicket::new(3)]);
        assert!(lanes.enqueue(PublishTicket::new(4), draft(a)).is_none());

        let channel = ChannelName::parse(a).unwrap();
        let next = lanes.finished(&channel).expect("two waited");
        assert_eq!(
            tickets(&next),
            [PublishTicket::new(2), PublishTicket::new(4)]
        );
        // While that run is out, a new publish waits again.
        assert!(lanes.enqueue(PublishTicket::new(5), draft(a)).is_none());
        assert_eq!(
            tickets(&lanes.finished(&channel).unwrap()),
            [PublishTicket::new(5)]
        );
        assert!(lanes.finished(&channel).is_none(), "nothing waited: free");
        let again = lanes.enqueue(PublishTicket::new(6), draft(a));
        assert_eq!(
            tickets(&again.unwrap()),
            [PublishTicket::new(6)],
            "a free lane runs at once"
        );
    }
}
