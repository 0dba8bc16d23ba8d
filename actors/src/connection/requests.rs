//! The session's requests, one at a time, in the order the client sent them.
//!
//! Every request gets exactly one reply, and the replies come in request order: a request starts
//! only once every earlier one has been answered. Without that, a `subscribe` still waiting for the
//! authorizer or the broker could be overtaken by the `unsubscribe` after it, which removed the
//! pending subscription and left the subscribe without a reply (a SignalR `invoke()` that never
//! resolved). As in an ASP.NET Core hub (one invocation at a time per connection), a request that
//! waits (the authorizer, a broker round trip, a hub method) holds back the ones after it; events
//! for the connection keep flowing meanwhile. The inbound rate limit bounds what can queue up.
//!
//! A request's asynchronous part runs through [`Connection::hold`]; the queue moves on when the last
//! held future of the request has finished.

use std::collections::VecDeque;

use actix::prelude::*;
use actix_web_actors::ws;

use super::Connection;
use crate::codec::{Decoded, ReplyTo};

/// One thing to do in request order.
pub(super) enum Step {
    /// A record the codec decoded (a request, a refusal to answer, a frame to write, a failure).
    Decoded(Decoded),
    /// A request refused by the inbound rate limit: its error reply, in its turn.
    RateLimited(ReplyTo),
    /// Write the handshake reply (after the handshake's default channels are registered).
    AnswerHandshake(crate::codec::OutFrame),
    /// Tell the hub methods the connection is ready (after the handshake's default channels).
    HubConnected,
}

/// The queue of steps not yet started, and how many futures the current one still waits for.
#[derive(Default)]
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
}

impl Connection {
    /// Runs queued steps until one waits for a future, the queue is empty, or the session closes.
    pub(super) fn run_requests(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        while self.requests.held == 0 && !self.closing {
            let Some(step) = self.requests.queue.pop_front() else {
                return;
            };
            self.run_step(ctx, step);
        }
    }

    /// Runs `fut`, then `then` with its output; no later request starts before both are done.
    /// `then` may hold further futures (the next part of the same request).
    pub(super) fn hold<T: 'static>(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        fut: impl ActorFuture<Self, Output = T> + 'static,
        then: impl FnOnce(&mut Self, &mut ws::WebsocketContext<Self>, T) + 'static,
    ) {
        self.requests.held += 1;
        ctx.spawn(fut.map(move |out, act, ctx| {
            then(act, ctx, out);
            act.requests.held -= 1;
            act.run_requests(ctx);
        }));
    }

    fn run_step(&mut self, ctx: &mut ws::WebsocketContext<Self>, step: Step) {
        match step {
            Step::Decoded(d) => self.on_decoded(ctx, d),
            Step::RateLimited(reply_to) => {
                let outcome = self.rate_limited_outcome();
                self.reply(ctx, &reply_to, outcome);
            }
            Step::AnswerHandshake(reply) => {
                self.write(ctx, reply);
                self.handshake_reply_pending = false;
                // Events that arrived for the default channels meanwhile.
                self.drain_outbox(ctx);
            }
            Step::HubConnected => self.hub_connected(ctx),
        }
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
}
