//! The connection's requests, one at a time, in the order the client sent them: the queue the
//! [`ConnectionCore`](super::core::ConnectionCore) runs.
//!
//! Every request gets exactly one reply, and the replies come in request order: a request starts
//! only once every earlier one has been answered. Without that, a `subscribe` still waiting for the
//! authorizer or the broker could be overtaken by the `unsubscribe` after it, which removed the
//! pending subscription and left the subscribe without a reply (a SignalR `invoke()` that never
//! resolved). As in an ASP.NET Core hub (one invocation at a time per connection), a request that
//! waits (the authorizer, a broker round trip, a hub method) holds back the ones after it; events
//! for the connection keep flowing meanwhile. The inbound rate limit bounds what can queue up.
//!
//! This file is plain data (no actor, no socket): the queue of steps and how many pieces of work
//! the current step still waits for.

use std::collections::VecDeque;

use crate::codec::{Decoded, OutFrame, ReplyTo};

/// One thing to do in request order.
#[derive(Debug)]
pub(super) enum Step {
    /// A record the codec decoded (a request, a refusal to answer, a frame to write, a failure).
    Decoded(Decoded),
    /// A request refused by the inbound rate limit: its error reply, in its turn.
    RateLimited(ReplyTo),
    /// Write the handshake reply (after the handshake's default channels are registered).
    AnswerHandshake(OutFrame),
    /// Tell the hub methods the connection is ready (after the handshake's default channels).
    HubConnected,
    /// Leave every channel but those joined on connect and the connection's own (a hub command),
    /// once every earlier request (a join the commands before it queued) is done.
    LeaveGroups,
}

/// The queue of steps not yet started, and how many pieces of work the current one still waits for.
#[derive(Debug, Default)]
pub(super) struct Requests {
    queue: VecDeque<Step>,
    held: usize,
}

impl Requests {
    /// Queues a step after every other.
    pub(super) fn push(&mut self, step: Step) {
        self.queue.push_back(step);
    }

    /// Queues `steps`, in their order, before every step already queued: work the current step
    /// hands on to be done before the requests after it.
    pub(super) fn push_next(&mut self, steps: impl DoubleEndedIterator<Item = Step>) {
        for step in steps.rev() {
            self.queue.push_front(step);
        }
    }

    /// The next step, unless the current one still waits for something.
    pub(super) fn next(&mut self) -> Option<Step> {
        if self.held > 0 {
            return None;
        }
        self.queue.pop_front()
    }

    /// The step that would start next, if nothing is held (to decide whether it may start while
    /// publishes are in flight, see `ConnectionCore::poll`).
    pub(super) fn peek(&self) -> Option<&Step> {
        if self.held > 0 {
            return None;
        }
        self.queue.front()
    }

    /// The current step waits for one more piece of work.
    pub(super) fn hold(&mut self) {
        self.held += 1;
    }

    /// One piece of work the current step waited for is done.
    pub(super) fn release(&mut self) {
        debug_assert!(self.held > 0, "released more than was held");
        self.held = self.held.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Request;

    fn ping(id: i64) -> Step {
        Step::Decoded(Decoded::request(
            Some(crate::codec::RequestId::Number(id)),
            Request::Ping,
        ))
    }

    fn ids(r: &Requests) -> Vec<i64> {
        r.queue
            .iter()
            .map(|s| match s {
                Step::Decoded(Decoded::Request(i)) => match i.reply_to {
                    Some(crate::codec::RequestId::Number(n)) => n,
                    _ => -1,
                },
                _ => -1,
            })
            .collect()
    }

    #[test]
    fn steps_handed_on_run_before_the_requests_already_queued() {
        let mut r = Requests::default();
        r.push(ping(3));
        r.push(ping(4));
        r.push_next([ping(1), ping(2)].into_iter());
        assert_eq!(ids(&r), [1, 2, 3, 4]);
    }

    #[test]
    fn nothing_starts_while_a_step_is_held() {
        let mut r = Requests::default();
        r.push(ping(1));
        r.push(ping(2));
        assert!(r.next().is_some());
        r.hold();
        r.hold();
        assert!(r.next().is_none());
        r.release();
        assert!(r.next().is_none(), "still one piece of work outstanding");
        r.release();
        assert!(r.next().is_some());
    }
}
