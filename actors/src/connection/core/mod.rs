//! The connection core: everything a WebSocket connection decides, without the socket, the actor
//! or the node (as `quinn-proto` is QUIC without I/O).
//!
//! It owns the inbound rate limit and the bad-frame count (`inbound.rs`), the in-order request
//! queue (`requests.rs`: one request at a time, exactly one reply each, replies in request order),
//! the subscription bookkeeping (`subscriptions.rs`), when the client was last heard from, whether
//! the handshake reply is still to be written, and whether the connection is closing. The actor
//! ([`Connection`](super::Connection)) feeds it inbound frame facts ([`admit_frame`]), decoded
//! records ([`queue_frame`]) and heartbeat ticks ([`tick`]), and executes the [`Effect`]s it
//! hands out ([`poll`]). Work that needs the node (the broker, the authorizer, the hub methods)
//! stays with the actor: the core hands it out as an effect, holds every later request back, and
//! takes the work's answer ([`finish`], [`refuse_subscription`]) as that request's one reply.
//!
//! Publishes are the exception that keeps back ends fast (issue 16: a `Service` connection
//! publishing pipelined): a publish does not hold back the publishes after it, up to
//! `session.max_publishes_in_flight` at once (one connection's publishes to one channel keep their
//! order: the actor hands them to the broker through that channel's lane, `publish_lanes.rs`,
//! after the ones before them). Their replies still go out in
//! request order ([`publish_done`] keeps an answer that overtook an earlier one), and any other
//! request waits until every publish before it has been answered.
//!
//! [`admit_frame`]: ConnectionCore::admit_frame
//! [`queue_frame`]: ConnectionCore::queue_frame
//! [`tick`]: ConnectionCore::tick
//! [`poll`]: ConnectionCore::poll
//! [`finish`]: ConnectionCore::finish
//! [`refuse_subscription`]: ConnectionCore::refuse_subscription
//! [`publish_done`]: ConnectionCore::publish_done

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::inbound::{Admission, BadFrames, InboundLimit};
use super::requests::{Requests, Step};
use super::subscriptions::Subscriptions;
use super::ConnectionSettings;
use crate::channel::{Channel, ChannelName};
use crate::codec::{Decoded, Inbound, JsonArg, OutFrame, Outcome, ReplyTo, Request};
use crate::codes::{CloseCode, ErrorCode};
use crate::envelope::{EventName, StreamPosition};
use crate::identity::Identity;
use crate::policy;

/// Something the actor has to do for the core, in the order the core hands them out.
#[derive(Debug)]
pub(super) enum Effect {
    /// Encode `outcome` as the reply to `reply_to` and write it.
    Reply { reply_to: ReplyTo, outcome: Outcome },
    /// A subscription refused: count and log it as a refused join, then reply with a
    /// `SubscriptionError`.
    SubscriptionRefused {
        reply_to: ReplyTo,
        channel: String,
        code: ErrorCode,
        reason: String,
    },
    /// A record the codec understood well enough to answer but not to act on: count it as a bad
    /// frame, log it, and reply with the error.
    Rejected {
        reply_to: ReplyTo,
        code: ErrorCode,
        message: String,
    },
    /// Write a frame the codec produced for the protocol itself.
    Send(OutFrame),
    /// Close with `code`, after the protocol's goodbye where it has one.
    Close(CloseCode),
    /// The codec gave up: count and log it, write `farewell` (or the protocol's goodbye), close.
    Fatal {
        close: CloseCode,
        message: String,
        farewell: Option<OutFrame>,
    },
    /// Join `channel` through the one join path (`membership.rs`); the request waits for its
    /// answer ([`ConnectionCore::finish`] or [`ConnectionCore::refuse_subscription`]).
    Join {
        reply_to: ReplyTo,
        channel: ChannelName,
        /// The name as the client wrote it, for the reply.
        raw: String,
        since: Option<StreamPosition>,
    },
    /// `channel`'s subscription is gone from the bookkeeping: tell the broker and the activity
    /// recorder.
    Left(ChannelName),
    /// Check the data and publish; its answer goes to [`ConnectionCore::publish_done`] with the
    /// ticket (later publishes may start meanwhile).
    Publish {
        ticket: PublishTicket,
        channel: ChannelName,
        event: EventName,
        data: Arc<RawValue>,
    },
    /// Hand a method to the hub methods; the request waits for its answer
    /// ([`ConnectionCore::finish`]).
    Invoke {
        reply_to: ReplyTo,
        method: String,
        args: Vec<JsonArg>,
    },
    /// The protocol handshake was accepted: the connection becomes resumable if both sides
    /// agreed to it. The default channels, the handshake reply and the hub methods' connect-time
    /// events follow as effects of their own.
    HandshakeAccepted,
    /// Write the handshake reply; the events held back until it was out may flow now.
    AnswerHandshake(OutFrame),
    /// Tell the hub methods the connection is ready for events.
    HubConnected,
    /// The client has every sequenced frame up to this one.
    Ack(u64),
}

/// What a heartbeat tick asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tick {
    /// Close with this code (a silent client, an expired token).
    Close(CloseCode),
    /// Keep the connection alive: with the protocol's own ping when `protocol` (nothing may
    /// precede a pending handshake reply), otherwise with a WebSocket ping.
    Keepalive { protocol: bool },
}

/// Which publish an answer belongs to ([`ConnectionCore::publish_done`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PublishTicket(u64);

#[cfg(test)]
impl PublishTicket {
    pub(in crate::connection) fn new(n: u64) -> Self {
        Self(n)
    }
}

/// A request answered out of the normal one-at-a-time order: a publish in flight, or an answer
/// that waits for the publishes before it.
#[derive(Debug)]
struct Pipelined {
    ticket: PublishTicket,
    reply_to: ReplyTo,
    /// Its answer, once there: replied when every entry before it has been.
    outcome: Option<Outcome>,
}

/// The decisions and pure state of one connection.
pub(super) struct ConnectionCore {
    identity: Arc<Identity>,
    /// For the rate-limit error's text.
    rate_per_second: u32,
    client_timeout: Duration,
    close_on_token_expiry: bool,
    inbound: InboundLimit,
    bad_frames: BadFrames,
    requests: Requests,
    /// The request being run waits for work the actor does; its reply comes with the answer.
    reply_owed: bool,
    /// Effects of the current step not yet handed out.
    effects: VecDeque<Effect>,
    /// The connection's subscriptions (the join path in `membership.rs` begins, activates and
    /// cancels them; the outbox drain asks them about every event).
    pub(super) subs: Subscriptions,
    last_heard: Instant,
    closing: bool,
    /// The handshake was accepted and its reply waits for the default channels; nothing else is
    /// written meanwhile.
    handshake_reply_pending: bool,
    /// A hub connection's own channel, joined after the default channels.
    own_channel: Option<ChannelName>,
    /// Publishes in flight and answers waiting for them, in request order.
    pipelined: VecDeque<Pipelined>,
    max_publishes_in_flight: usize,
    next_ticket: u64,
}

impl ConnectionCore {
    /// The core of a connection of `identity`, opened at `now`.
    pub(super) fn new(
        settings: &ConnectionSettings,
        identity: Arc<Identity>,
        now: Instant,
    ) -> Self {
        let exempt = settings.rate_exempt_roles.contains(&identity.role);
        Self {
            rate_per_second: settings.rate_per_second,
            client_timeout: settings.client_timeout,
            close_on_token_expiry: settings.close_on_token_expiry,
            inbound: InboundLimit::new(
                settings.rate_per_second,
                settings.rate_burst,
                settings.max_rate_violations,
                exempt,
            ),
            bad_frames: BadFrames::new(settings.max_bad_frames),
            requests: Requests::default(),
            reply_owed: false,
            effects: VecDeque::new(),
            subs: Subscriptions::new(settings.max_subscriptions),
            last_heard: now,
            closing: false,
            handshake_reply_pending: false,
            own_channel: None,
            pipelined: VecDeque::new(),
            max_publishes_in_flight: settings.max_publishes_in_flight.max(1),
            next_ticket: 0,
            identity,
        }
    }

    /// The connection's own channel (`connection:{connectionId}`), joined after the handshake
    /// with the default channels, last: a tenant quota too tight for all of them leaves it out
    /// first.
    pub(super) fn set_own_channel(&mut self, channel: ChannelName) {
        self.own_channel = Some(channel);
    }

    /// A resumed connection may send `credit` frames over the rate (what it buffered while its
    /// socket was down).
    pub(super) fn grant_replay_credit(&mut self, credit: u64) {
        self.inbound.grant_replay_credit(credit);
    }

    /// Something (any frame) was read from the client at `now`.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// Judges one inbound data frame against the rate limit, before it is decoded.
    pub(super) fn admit_frame(&mut self) -> Admission {
        self.inbound.admit()
    }

    /// Queues the records decoded from one data frame, admitted as `admission` says. Requests of a
    /// frame over the rate are answered with a rate-limit error in their turn (one error for all
    /// of those that asked for no reply); the protocol's own records run as usual.
    pub(super) fn queue_frame(
        &mut self,
        decoded: impl IntoIterator<Item = Decoded>,
        admission: Admission,
    ) {
        let limited = admission != Admission::Within;
        let mut refused_without_reply = false;
        for d in decoded {
            match d {
                Decoded::Request(inbound) if limited && !is_protocol_request(&inbound.request) => {
                    if inbound.reply_to.is_some() {
                        self.requests.push(Step::RateLimited(inbound.reply_to));
                    } else {
                        refused_without_reply = true;
                    }
                }
                other => self.requests.push(Step::Decoded(other)),
            }
        }
        if refused_without_reply {
            self.requests.push(Step::RateLimited(None));
        }
    }

    /// Queues leaving `channel` (a hub command), with no reply address, after every request
    /// already queued.
    pub(super) fn queue_unsubscribe(&mut self, channel: &ChannelName) {
        let leave = Request::Unsubscribe {
            channel: channel.to_string(),
        };
        self.requests
            .push(Step::Decoded(Decoded::request(None, leave)));
    }

    /// Queues leaving every group (a hub command), after every request already queued.
    pub(super) fn queue_leave_groups(&mut self) {
        self.requests.push(Step::LeaveGroups);
    }

    /// Queues a subscription of the connection's own (a resumed connection's channels, a hub
    /// command's group), with no reply address, after every request already queued.
    pub(super) fn queue_resubscribe(
        &mut self,
        channel: &ChannelName,
        since: Option<StreamPosition>,
    ) {
        let channel = channel.to_string();
        let resubscribe = Request::Subscribe { channel, since };
        self.requests
            .push(Step::Decoded(Decoded::request(None, resubscribe)));
    }

    /// The next effect to execute: `None` while the current request waits for the actor's work,
    /// once the queue is empty, or once the connection is closing.
    pub(super) fn poll(&mut self) -> Option<Effect> {
        loop {
            if self.closing {
                return None;
            }
            if let Some(effect) = self.effects.pop_front() {
                return Some(effect);
            }
            if !self.pipelined.is_empty() && !self.may_start_while_publishing(self.requests.peek()?)
            {
                return None;
            }
            let step = self.requests.next()?;
            self.run_step(step);
        }
    }

    /// Whether `step` may start while publishes are in flight: only another publish, within the
    /// limit. One to a channel already being published to starts too: the actor's lane for that
    /// channel hands it to the broker after the ones before it (`publish_lanes.rs`).
    fn may_start_while_publishing(&self, step: &Step) -> bool {
        let Step::Decoded(Decoded::Request(inbound)) = step else {
            return false;
        };
        if !matches!(inbound.request, Request::Publish { .. }) {
            return false;
        }
        let in_flight = self
            .pipelined
            .iter()
            .filter(|p| p.outcome.is_none())
            .count();
        in_flight < self.max_publishes_in_flight
    }

    /// The answer to the publish `ticket`: replied now if every request before it has been,
    /// otherwise once they are (replies keep request order).
    pub(super) fn publish_done(&mut self, ticket: PublishTicket, outcome: Outcome) {
        if let Some(p) = self.pipelined.iter_mut().find(|p| p.ticket == ticket) {
            p.outcome = Some(outcome);
        }
        while self.pipelined.front().is_some_and(|p| p.outcome.is_some()) {
            let p = self.pipelined.pop_front().expect("checked");
            let outcome = p.outcome.expect("checked");
            self.emit(Effect::Reply {
                reply_to: p.reply_to,
                outcome,
            });
        }
    }

    fn ticket(&mut self) -> PublishTicket {
        self.next_ticket += 1;
        PublishTicket(self.next_ticket)
    }

    /// The current request waits for one more piece of the actor's work (a hub method's reply,
    /// one of its joins); [`release`](Self::release) when it is done.
    pub(super) fn hold(&mut self) {
        self.requests.hold();
    }

    /// A piece of work [`hold`](Self::hold) announced is done.
    pub(super) fn release(&mut self) {
        self.requests.release();
    }

    /// The answer to the request waiting for the actor's work (a join, a publish, a hub method):
    /// its one reply. Later requests may run once nothing else is held.
    pub(super) fn finish(&mut self, reply_to: ReplyTo, outcome: Outcome) -> Effect {
        self.settle();
        Effect::Reply { reply_to, outcome }
    }

    /// The answer to a join the broker or the checks refused: its one reply.
    pub(super) fn refuse_subscription(
        &mut self,
        reply_to: ReplyTo,
        channel: String,
        code: ErrorCode,
        reason: String,
    ) -> Effect {
        self.settle();
        Effect::SubscriptionRefused {
            reply_to,
            channel,
            code,
            reason,
        }
    }

    fn settle(&mut self) {
        debug_assert!(self.reply_owed, "a reply for a request that owed none");
        self.reply_owed = false;
        self.requests.release();
    }

    /// Starts closing; false if the connection was already closing (a close happens once).
    pub(super) fn begin_close(&mut self) -> bool {
        !std::mem::replace(&mut self.closing, true)
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether the handshake reply is still to be written (events wait until it is).
    pub(super) fn handshake_reply_pending(&self) -> bool {
        self.handshake_reply_pending
    }

    /// A heartbeat at `now` (`unix_secs` on the wall clock): a new interval for the rate limit and
    /// the bad-frame count, and what the connection needs.
    pub(super) fn tick(&mut self, now: Instant, unix_secs: u64) -> Tick {
        self.inbound.new_interval();
        self.bad_frames.new_interval();
        if now.saturating_duration_since(self.last_heard) > self.client_timeout {
            return Tick::Close(CloseCode::HeartbeatTimeout);
        }
        if self.close_on_token_expiry {
            if let Some(exp) = self.identity.expires_at {
                if unix_secs >= exp {
                    return Tick::Close(CloseCode::TokenExpired);
                }
            }
        }
        Tick::Keepalive {
            protocol: !self.handshake_reply_pending,
        }
    }

    fn emit(&mut self, effect: Effect) {
        self.effects.push_back(effect);
    }

    /// Hands out `effect`, whose answer the current request waits for.
    fn await_answer(&mut self, effect: Effect) {
        debug_assert!(!self.reply_owed, "one request at a time");
        self.reply_owed = true;
        self.requests.hold();
        self.emit(effect);
    }

    fn reply(&mut self, reply_to: ReplyTo, outcome: Outcome) {
        if self.pipelined.is_empty() {
            return self.emit(Effect::Reply { reply_to, outcome });
        }
        // A publish refused at once while earlier ones are in flight: after their replies.
        let ticket = self.ticket();
        self.pipelined.push_back(Pipelined {
            ticket,
            reply_to,
            outcome: Some(outcome),
        });
    }

    fn run_step(&mut self, step: Step) {
        match step {
            Step::Decoded(d) => self.run_decoded(d),
            Step::RateLimited(reply_to) => {
                let outcome = rate_limited(self.rate_per_second);
                self.reply(reply_to, outcome);
            }
            Step::AnswerHandshake(reply) => {
                self.handshake_reply_pending = false;
                self.emit(Effect::AnswerHandshake(reply));
            }
            Step::HubConnected => self.emit(Effect::HubConnected),
            Step::LeaveGroups => {
                let keep = policy::default_channels(&self.identity);
                let leaving: Vec<ChannelName> = self
                    .subs
                    .channels()
                    .filter(|c| !keep.contains(c) && Some(*c) != self.own_channel.as_ref())
                    .cloned()
                    .collect();
                for channel in leaving {
                    if self.subs.remove(&channel) {
                        self.emit(Effect::Left(channel));
                    }
                }
            }
        }
    }

    fn run_decoded(&mut self, d: Decoded) {
        match d {
            Decoded::Request(inbound) => self.run_request(inbound),
            Decoded::Reject {
                reply_to,
                code,
                message,
            } => {
                let too_many = self.bad_frames.record();
                self.emit(Effect::Rejected {
                    reply_to,
                    code,
                    message,
                });
                if too_many {
                    self.emit(Effect::Close(CloseCode::TooManyBadFrames));
                }
            }
            Decoded::Send(frame) => self.emit(Effect::Send(frame)),
            Decoded::Ignore => {}
            Decoded::Fatal {
                close,
                message,
                farewell,
            } => self.emit(Effect::Fatal {
                close,
                message,
                farewell,
            }),
        }
    }

    /// The channel of this connection's subscription `id`: the id its `subscribed` reply gave, or
    /// `{EntityType}:{EntityId}` (the id seed 004's SDK makes up for an entity subscription).
    fn subscription_by_id(&self, id: &str) -> Option<ChannelName> {
        if let Some(channel) = id.parse().ok().and_then(|n| self.subs.channel_of(n)) {
            return Some(channel);
        }
        let (entity_type, entity_id) = id.split_once(':')?;
        let channel =
            ChannelName::parse(&Channel::notifications_name(entity_type, entity_id)).ok()?;
        self.subs.contains(&channel).then_some(channel)
    }

    fn run_request(&mut self, Inbound { reply_to, request }: Inbound) {
        let bad_channel = |e: crate::channel::ChannelError| Outcome::Error {
            code: ErrorCode::BadChannel,
            message: e.to_string(),
        };
        match request {
            Request::Subscribe {
                channel: raw,
                since,
            } => match ChannelName::parse(&raw) {
                Ok(channel) => self.await_answer(Effect::Join {
                    reply_to,
                    channel,
                    raw,
                    since,
                }),
                Err(e) => self.emit(Effect::SubscriptionRefused {
                    reply_to,
                    channel: raw,
                    code: ErrorCode::BadChannel,
                    reason: e.to_string(),
                }),
            },
            Request::Unsubscribe { channel: raw } => match ChannelName::parse(&raw) {
                Err(e) => self.reply(reply_to, bad_channel(e)),
                Ok(channel) if self.subs.remove(&channel) => {
                    self.emit(Effect::Left(channel));
                    self.reply(reply_to, Outcome::Unsubscribed { channel: raw });
                }
                Ok(_) => {
                    let outcome = Outcome::Error {
                        code: ErrorCode::NotSubscribed,
                        message: format!("not subscribed to {raw}"),
                    };
                    self.reply(reply_to, outcome);
                }
            },
            // Answered either way, never a bad frame: a client's cleanup may well unsubscribe
            // what a refused or repeated subscribe never made.
            Request::UnsubscribeById { subscription_id } => {
                match self.subscription_by_id(&subscription_id) {
                    Some(channel) => {
                        self.subs.remove(&channel);
                        let raw = channel.to_string();
                        self.emit(Effect::Left(channel));
                        self.reply(reply_to, Outcome::Unsubscribed { channel: raw });
                    }
                    None => {
                        let outcome = Outcome::Error {
                            code: ErrorCode::NotSubscribed,
                            message: format!("no subscription {subscription_id:?}"),
                        };
                        self.reply(reply_to, outcome);
                    }
                }
            }
            Request::Publish {
                channel,
                event,
                data,
            } => {
                let channel = match ChannelName::parse(&channel) {
                    Ok(c) => c,
                    Err(e) => return self.reply(reply_to, bad_channel(e)),
                };
                let event = match EventName::parse(&event) {
                    Ok(e) => e,
                    Err(e) => {
                        let outcome = Outcome::Error {
                            code: ErrorCode::BadEvent,
                            message: e.to_string(),
                        };
                        return self.reply(reply_to, outcome);
                    }
                };
                let ticket = self.ticket();
                self.pipelined.push_back(Pipelined {
                    ticket,
                    reply_to,
                    outcome: None,
                });
                self.emit(Effect::Publish {
                    ticket,
                    channel,
                    event,
                    data,
                });
            }
            Request::Ping => self.reply(reply_to, Outcome::Pong),
            Request::Invoke { method, args } => self.await_answer(Effect::Invoke {
                reply_to,
                method,
                args,
            }),
            Request::HandshakeComplete { reply } => {
                self.emit(Effect::HandshakeAccepted);
                // The default channels, registered on every node; then the handshake reply (so
                // `start()` resolves only once they are live); then the hub methods'
                // connect-time events; all before any request sent after the handshake. Until the
                // reply is out, events wait in the outbox: nothing may precede it.
                self.handshake_reply_pending = true;
                let defaults = policy::default_channels(&self.identity)
                    .into_iter()
                    .chain(self.own_channel.clone())
                    .map(|c| {
                        let subscribe = Request::Subscribe {
                            channel: c.to_string(),
                            since: None,
                        };
                        Step::Decoded(Decoded::request(None, subscribe))
                    });
                let steps: Vec<Step> = defaults
                    .chain([Step::AnswerHandshake(reply), Step::HubConnected])
                    .collect();
                self.requests.push_next(steps.into_iter());
            }
            Request::Close => self.emit(Effect::Close(CloseCode::Normal)),
            Request::Ack { sequence_id } => self.emit(Effect::Ack(sequence_id)),
        }
    }
}

/// Requests that keep the protocol itself going, processed even when the client is over its rate.
fn is_protocol_request(r: &Request) -> bool {
    matches!(r, Request::HandshakeComplete { .. } | Request::Close)
}

/// The reply to a request refused by the inbound rate limit.
fn rate_limited(rate_per_second: u32) -> Outcome {
    Outcome::Error {
        code: ErrorCode::RateLimited,
        message: format!(
            "more than {rate_per_second} frames per second; this request was not processed"
        ),
    }
}
