//! One connection's pipelined publishes go to the broker in runs, and its publishes to one
//! channel keep their order: a lane per channel.
//!
//! The core lets a connection's publishes run side by side (`session.max_publishes_in_flight`,
//! `core/mod.rs`). The publishes the actor starts in one turn (what the socket had delivered by
//! then, up to about 32 frames: actix hands a stream back after 16 items) go to the broker
//! together, as one
//! run ([`crate::node::Node::publish_run`]: one message per broker shard on one node; in Redis
//! each channel's one after another, different channels' side by side). A channel with a run at
//! the broker is busy: later publishes to it wait in its lane, and when the run is answered
//! everything that waited in its channels' lanes goes as the next run, in request order. So a back
//! end pipelining many events pays one broker round trip per run instead of one per event on one
//! node (in Redis one per event of a channel, channels side by side), to one channel (a fan-out)
//! or to many (one event per subscriber), and each channel's offsets follow request order.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::core::PublishTicket;
use crate::channel::ChannelName;
use crate::envelope::Draft;

/// A publish on its way to the broker.
#[derive(Debug)]
pub(super) struct Waiting {
    pub ticket: PublishTicket,
    pub draft: Draft,
}

/// The lanes of the channels with a run at the broker (see the module docs).
#[derive(Debug, Default)]
pub(super) struct PublishLanes {
    /// A channel is here while a run with it is at the broker; its value is what waits for the
    /// next run.
    busy: HashMap<ChannelName, Vec<Waiting>>,
}

impl PublishLanes {
    /// Queues a publish. Hands it back, to go in the run being gathered, when its channel has no
    /// run at the broker (the channel is busy from now on); otherwise it waits in the lane.
    pub fn enqueue(&mut self, ticket: PublishTicket, draft: Draft) -> Option<Waiting> {
        match self.busy.entry(draft.channel.clone()) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push(Waiting { ticket, draft });
                None
            }
            Entry::Vacant(lane) => {
                lane.insert(Vec::new());
                Some(Waiting { ticket, draft })
            }
        }
    }

    /// A run with `channels` was answered: what waited in their lanes, in request order per
    /// channel (the next run: those channels stay busy), and the lanes where nothing waited are
    /// free.
    pub fn finished(&mut self, channels: impl IntoIterator<Item = ChannelName>) -> Vec<Waiting> {
        let mut next = Vec::new();
        for channel in channels {
            let Some(waiting) = self.busy.get_mut(&channel) else {
                continue;
            };
            if waiting.is_empty() {
                self.busy.remove(&channel);
            } else {
                next.append(waiting);
            }
        }
        next
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

    fn name(channel: &str) -> ChannelName {
        ChannelName::parse(channel).unwrap()
    }

    #[test]
    fn a_busy_channels_publishes_wait_in_order_and_go_together_once_its_run_is_answered() {
        let (a, b) = ("tenant:t1:order:a", "tenant:t1:order:b");
        let mut lanes = PublishLanes::default();
        let t = PublishTicket::new;
        // Two free channels: both start (one run).
        assert_eq!(lanes.enqueue(t(1), draft(a)).unwrap().ticket, t(1));
        assert_eq!(lanes.enqueue(t(2), draft(b)).unwrap().ticket, t(2));
        // Both busy now: the next ones wait, each in its channel's lane.
        assert!(lanes.enqueue(t(3), draft(a)).is_none());
        assert!(lanes.enqueue(t(4), draft(b)).is_none());
        assert!(lanes.enqueue(t(5), draft(a)).is_none());

        let next = lanes.finished([name(a), name(b)]);
        assert_eq!(next.len(), 3, "everything that waited goes next");
        let of = |channel| -> Vec<_> {
            next.iter()
                .filter(|w| w.draft.channel == name(channel))
                .map(|w| w.ticket)
                .collect()
        };
        assert_eq!(of(a), [t(3), t(5)], "a channel's in request order");
        assert_eq!(of(b), [t(4)]);

        // That run is out: both channels are still busy.
        assert!(lanes.enqueue(t(6), draft(b)).is_none());
        assert_eq!(tickets(&lanes.finished([name(a), name(b)])), [t(6)]);
        assert!(lanes.finished([name(b)]).is_empty(), "nothing waited: free");
        assert!(lanes.enqueue(t(7), draft(a)).is_some(), "a was freed above");
        assert!(lanes.enqueue(t(8), draft(b)).is_some(), "b is free");
    }
}
