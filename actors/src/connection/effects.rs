//! The actor's side of the connection core: carrying out the [`Effect`]s the core hands out on
//! the socket and the node (writes, replies, closes, joins, publishes, hub methods), feeding it
//! what is read and what the heartbeat says, and draining the outbox. Everything here needs the
//! actor's context or the node; the decisions it acts on are the core's.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde_json::value::RawValue;

use super::core::{Effect, PublishTicket, Tick};
use super::fragments::Reassembled;
use super::inbound::Admission;
use super::membership::JoinRefused;
use super::publish_lanes::Waiting;
use super::read_errors::{self, ReadFailure};
use super::resume::SendBuffer;
use super::socket_context::{self, SocketContext};
use super::subscriptions::Accept;
use super::tracked::Origin;
use super::{Connection, LATENCY_FLUSH_EVERY};
use crate::channel::ChannelName;
use crate::codec::{InFrame, OutFrame, Outcome, ReplyTo};
use crate::codes::{CloseCode, ErrorCode};
use crate::envelope::{now_millis, Draft, Envelope, EventName, StreamPosition};
use crate::mailbox::ActorKind;
use crate::policy::publish;

type Ctx = SocketContext<Connection>;

impl Connection {
    /// Carries out the core's effects until it has none to hand out (it waits for a request's
    /// work, its queue is empty, or the connection is closing).
    pub(super) fn run_requests(&mut self, ctx: &mut Ctx) {
        while let Some(effect) = self.core.poll() {
            self.execute(ctx, effect);
        }
    }

    /// Runs `fut`, then `then` with its output; no later request starts before both are done.
    /// `then` may hold further futures (the next part of the same request).
    pub(super) fn hold<T: 'static>(
        &mut self,
        ctx: &mut Ctx,
        fut: impl ActorFuture<Self, Output = T> + 'static,
        then: impl FnOnce(&mut Self, &mut Ctx, T) + 'static,
    ) {
        self.core.hold();
        ctx.spawn(fut.map(move |out, act, ctx| {
            then(act, ctx, out);
            act.core.release();
            act.run_requests(ctx);
        }));
    }

    /// Runs the work of the request the core waits on; `then` gives the core its answer.
    fn answer<T: 'static>(
        &mut self,
        ctx: &mut Ctx,
        fut: impl ActorFuture<Self, Output = T> + 'static,
        then: impl FnOnce(&mut Self, &mut Ctx, T) + 'static,
    ) {
        ctx.spawn(fut.map(move |out, act, ctx| {
            then(act, ctx, out);
            act.run_requests(ctx);
        }));
    }

    /// Answers the request the core waits on with `outcome`.
    pub(super) fn finish(&mut self, ctx: &mut Ctx, reply_to: ReplyTo, outcome: Outcome) {
        let reply = self.core.finish(reply_to, outcome);
        self.execute(ctx, reply);
    }

    fn execute(&mut self, ctx: &mut Ctx, effect: Effect) {
        match effect {
            Effect::Reply { reply_to, outcome } => self.reply(ctx, &reply_to, outcome),
            Effect::SubscriptionRefused {
                reply_to,
                channel,
                code,
                reason,
            } => {
                let refused = JoinRefused { code, reason };
                self.note_refused(&channel, &refused);
                let JoinRefused { code, reason } = refused;
                let outcome = Outcome::SubscriptionError {
                    channel,
                    code,
                    reason,
                };
                self.reply(ctx, &reply_to, outcome);
            }
            Effect::Rejected {
                reply_to,
                code,
                message,
            } => {
                self.node
                    .metrics
                    .bad_frames
                    .with_label_values(&[code.as_str()])
                    .inc();
                log::debug!(
                    "{} bad frame ({}): {message}",
                    self.log_ctx(),
                    code.as_str()
                );
                self.reply(ctx, &reply_to, Outcome::Error { code, message });
            }
            Effect::Send(frame) => self.write(ctx, frame),
            Effect::Close(code) => self.close(ctx, code),
            Effect::Fatal {
                close,
                message,
                farewell,
            } => {
                self.node
                    .metrics
                    .bad_frames
                    .with_label_values(&[close.label()])
                    .inc();
                log::info!("{} protocol failure: {message}", self.log_ctx());
                // The codec's farewell replaces the generic goodbye (never two Close records).
                let last = farewell.or_else(|| self.codec.goodbye(close));
                self.close_with(ctx, close, last);
            }
            Effect::Join {
                reply_to,
                channel,
                raw,
                since,
            } => self.subscribe(ctx, reply_to, channel, raw, since),
            Effect::Left(channel) => self.left_channel(&channel),
            Effect::Publish {
                ticket,
                channel,
                event,
                data,
            } => self.publish(ctx, ticket, channel, event, data),
            Effect::Invoke {
                reply_to,
                method,
                args,
            } => self.invoke(ctx, reply_to, method, args),
            Effect::HandshakeAccepted => {
                if self.resume_token.is_some() && self.codec.resumable() {
                    self.sent = Some(SendBuffer::new(self.shared.settings.resume_buffer_bytes));
                    self.start_acks(ctx);
                }
            }
            Effect::AnswerHandshake(reply) => {
                self.write(ctx, reply);
                // Events that arrived for the default channels meanwhile.
                self.drain_outbox(ctx);
            }
            Effect::HubConnected => self.hub_connected(ctx),
            Effect::Ack(sequence_id) => {
                if let Some(sent) = self.sent.as_mut() {
                    sent.ack(sequence_id);
                }
            }
        }
    }

    /// Joins `channel` for a `subscribe` request and answers it: the reply, then the replayed
    /// and buffered events.
    fn subscribe(
        &mut self,
        ctx: &mut Ctx,
        reply_to: ReplyTo,
        channel: ChannelName,
        raw: String,
        since: Option<StreamPosition>,
    ) {
        let joining = self.join_channel(channel.clone(), since);
        self.answer(ctx, joining, move |act, ctx, res| match res {
            Ok(joined) => {
                let subscribed = Outcome::Subscribed {
                    channel: channel.to_string(),
                    subscription_id: joined.id,
                    offset: joined.offset,
                    epoch: joined.epoch,
                    recovered: joined.recovered,
                };
                act.finish(ctx, reply_to, subscribed);
                for env in joined.ready {
                    act.write_envelope(ctx, &env, Origin::Channel);
                }
                act.report_written();
            }
            Err(JoinRefused { code, reason }) => {
                let refused = act.core.refuse_subscription(reply_to, raw, code, reason);
                act.execute(ctx, refused);
            }
        });
    }

    /// Checks the data, then the rules and the quota (as for REST), then the node's one publish
    /// path, and answers the request.
    fn publish(
        &mut self,
        ctx: &mut Ctx,
        ticket: PublishTicket,
        channel: ChannelName,
        event: EventName,
        data: Arc<RawValue>,
    ) {
        let data = match self.node.check_payload(data, self.codec.label()) {
            Ok(d) => d,
            Err(e) => {
                log::info!("{} publish to {channel}: {e}", self.log_ctx());
                // Answered inside the request loop that started it, which picks up the reply
                // (running the loop again from here would nest it once per refused publish).
                let refused = Outcome::Error {
                    code: ErrorCode::BadPayload,
                    message: e.to_string(),
                };
                return self.core.publish_done(ticket, refused);
            }
        };
        let draft = Draft::new(channel, event, data);
        // Goes in the run handed to the broker once this turn has read what the client sent,
        // unless its channel is busy (then it waits in the channel's lane).
        if let Some(start) = self.lanes.enqueue(ticket, draft) {
            if self.starting.is_empty() {
                // Spawned now, run by the context after the items it is polling this turn (the
                // socket's frames among them, up to 16 a pass): the publishes read this turn are in the run.
                ctx.spawn(fut::ready(()).map(|_, act: &mut Self, ctx| {
                    let run = std::mem::take(&mut act.starting);
                    act.publish_run(ctx, run);
                }));
            }
            self.starting.push(start);
        }
    }

    /// Admits and publishes a run of publishes, each channel's in request order
    /// (`publish_lanes.rs`); when the broker has answered, what waited in the run's channels'
    /// lanes goes as the next run.
    fn publish_run(&mut self, ctx: &mut Ctx, run: Vec<Waiting>) {
        let mut channels: Vec<ChannelName> = run.iter().map(|w| w.draft.channel.clone()).collect();
        channels.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        channels.dedup();
        let (tickets, drafts): (Vec<_>, Vec<_>) =
            run.into_iter().map(|w| (w.ticket, w.draft)).unzip();
        let node = self.node.clone();
        let who = self.identity.clone();
        let error = |code, message: String| Outcome::Error { code, message };
        let publishing = async move {
            // Each publish is admitted on its own (its own quota token), side by side (the
            // authorizer may look stored data up).
            let verdicts = futures_util::future::join_all(drafts.iter().map(|draft| {
                publish::admit(
                    &node.authorizer,
                    &node.quotas,
                    who.clone(),
                    draft.channel.clone(),
                )
            }))
            .await;
            let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(drafts.len());
            let mut admitted = Vec::with_capacity(drafts.len());
            for (draft, verdict) in drafts.into_iter().zip(verdicts) {
                match verdict {
                    Ok(()) => {
                        outcomes.push(None);
                        admitted.push(draft);
                    }
                    Err(refused) => outcomes.push(Some(error(refused.code(), refused.to_string()))),
                }
            }
            let mut answers = node.publish_run(admitted, "ws").await.into_iter();
            outcomes
                .into_iter()
                .map(|refused| {
                    refused.unwrap_or_else(|| match answers.next() {
                        Some(Ok(ack)) => Outcome::Published {
                            id: ack.id,
                            offset: ack.offset,
                            epoch: ack.epoch,
                        },
                        Some(Err(e)) => error(e.code(), e.to_string()),
                        None => error(ErrorCode::Internal, "the broker gave no answer".into()),
                    })
                })
                .collect::<Vec<_>>()
        };
        // `answer` runs the request loop afterwards, which writes what may be replied now.
        self.answer(
            ctx,
            publishing.into_actor(self),
            move |act, ctx, outcomes| {
                for (ticket, outcome) in tickets.into_iter().zip(outcomes) {
                    act.core.publish_done(ticket, outcome);
                }
                let next = act.lanes.finished(channels);
                if !next.is_empty() {
                    act.publish_run(ctx, next);
                }
            },
        );
    }

    pub(super) fn apply_mailbox_limit(&mut self, ctx: &mut Ctx) {
        let limits = self.node.limits.get(ActorKind::Connection);
        let generation = limits.generation();
        if generation != self.mailbox_generation {
            self.mailbox_generation = generation;
            ctx.set_mailbox_capacity(limits.mailbox());
        }
    }

    pub(super) fn write(&mut self, ctx: &mut Ctx, frame: OutFrame) {
        match frame {
            OutFrame::Text(bytes) => ctx.text(&bytes),
            OutFrame::Binary(bytes) => ctx.binary(&bytes),
        }
    }

    /// Writes a sequenced frame (an invocation or completion) and keeps it for a resend.
    fn write_sequenced(&mut self, ctx: &mut Ctx, frame: OutFrame) {
        if let Some(sent) = self.sent.as_mut() {
            sent.record(frame.clone());
        }
        self.write(ctx, frame);
    }

    /// Writes one event from `origin`, unless it is a tracked event whose twin was written
    /// (`tracked.rs`); a tracked one is noted for [`Self::report_written`].
    pub(super) fn write_envelope(&mut self, ctx: &mut Ctx, env: &Envelope, origin: Origin) {
        self.write_envelope_at(ctx, env, origin, now_millis());
    }

    /// [`Self::write_envelope`] with the clock already read (`now_ms`, for the delivery latency):
    /// a batch reads it once, not once per event.
    fn write_envelope_at(&mut self, ctx: &mut Ctx, env: &Envelope, origin: Origin, now_ms: u64) {
        if env.event.is_command() {
            // Never written: the server's own instruction to this connection.
            return self.hub_command(ctx, env);
        }
        let key = self
            .node
            .hub_methods
            .as_ref()
            .and_then(|m| m.event_key(env));
        if let Some(key) = &key {
            if !self.tracked.admit(key, origin) {
                log::debug!(
                    "{} {} on {} already written: not again",
                    self.log_ctx(),
                    env.event,
                    env.channel
                );
                return;
            }
        }
        let format = self.codec.format();
        let default = self.codec.arguments_default();
        let frame = crate::codec::notification_ws_frame(env, format, default);
        if let Some(sent) = self.sent.as_mut() {
            let payload = crate::codec::ws_frame::frame_payload(frame);
            sent.record(if format.is_binary() {
                OutFrame::Binary(payload)
            } else {
                OutFrame::Text(payload)
            });
        }
        if let Some(key) = key {
            self.tracked.taken([key]);
        }
        ctx.write_frame(frame);
        let age_ms = now_ms.saturating_sub(env.ts);
        self.latency.observe(age_ms as f64 / 1000.0);
        if self.latency.get_sample_count() >= LATENCY_FLUSH_EVERY {
            self.latency.flush();
        }
    }

    /// Tells the hub methods which tracked events were written since the last report.
    pub(super) fn report_written(&mut self) {
        if let Some(keys) = self.tracked.take_unreported() {
            if let Some(methods) = &self.node.hub_methods {
                methods.written(&self.identity, self.conn, keys);
            }
        }
    }

    /// Writes every event queued in the outbox, or closes the connection if a shard evicted it.
    pub(super) fn drain_outbox(&mut self, ctx: &mut Ctx) {
        if self.core.handshake_reply_pending() {
            // Left queued: the handshake reply must be the first thing the client reads (it
            // drains once the reply is out).
            self.outbox.rearm_wake();
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let evicted = self.outbox.is_evicted();
        let writing = !evicted && !self.core.is_closing() && self.codec.ready();
        if !writing {
            self.outbox.take_all(&mut batch);
        } else {
            // One turn writes at most a chunk's worth; the rest follows once the HTTP layer has
            // taken the chunk, so a connection far behind does not grow its buffer to its backlog.
            let room = self
                .shared
                .settings
                .max_write_chunk_bytes
                .saturating_sub(ctx.written_len());
            if self.outbox.take_up_to(&mut batch, room) {
                ctx.wake_after_handout(self.outbox.waker());
            }
        }
        if writing {
            // One clock read for the batch: the events were all waiting as of now.
            let now_ms = now_millis();
            let mut verdicts = std::mem::take(&mut self.verdicts);
            self.core.subs.accept_all(&batch, &mut verdicts);
            for (env, verdict) in batch.iter().zip(&verdicts) {
                if *verdict == Accept::Write {
                    self.write_envelope_at(ctx, env, Origin::Channel, now_ms);
                }
            }
            verdicts.clear();
            self.verdicts = verdicts;
        }
        batch.clear();
        self.batch = batch;
        self.report_written();
        if evicted {
            self.close(ctx, CloseCode::SlowConsumer);
        }
    }

    fn reply(&mut self, ctx: &mut Ctx, reply_to: &ReplyTo, outcome: Outcome) {
        // Replies are completions on protocols that sequence (SignalR): kept for a resend.
        if let Some(frame) = self.codec.encode(reply_to, outcome) {
            self.write_sequenced(ctx, frame);
        }
    }

    /// Closes the connection once, with a protocol goodbye where the protocol has one.
    pub(super) fn close(&mut self, ctx: &mut Ctx, code: CloseCode) {
        let goodbye = self.codec.goodbye(code);
        self.close_with(ctx, code, goodbye);
    }

    /// Closes the connection once, writing `last` (a protocol goodbye) first.
    fn close_with(&mut self, ctx: &mut Ctx, code: CloseCode, last: Option<OutFrame>) {
        if !self.core.begin_close() {
            return;
        }
        // Unless the watchdog already reset the connection (and counted why) while this
        // actor could not run.
        if self.pulse.begin_close() {
            let m = &self.node.metrics;
            m.disconnects.with_label_values(&[code.label()]).inc();
            if code == CloseCode::SlowConsumer {
                m.slow_consumer_disconnects.inc();
            }
        }
        log::info!(
            "{} closing: {} ({})",
            self.log_ctx(),
            code.code(),
            code.reason()
        );
        if let Some(frame) = last {
            self.write(ctx, frame);
        }
        ctx.close(Some(socket_context::CloseReason {
            code: actix_http::ws::CloseCode::from(code.code()),
            description: Some(code.reason().to_owned()),
        }));
        ctx.stop();
    }

    pub(super) fn on_heartbeat(&mut self, ctx: &mut Ctx) {
        self.pulse.turn();
        ctx.release_write_buffer();
        self.latency.flush();
        self.apply_mailbox_limit(ctx);
        // Normally a wake does this; it is the fallback when a wake could not be sent.
        if !self.outbox.is_empty() {
            self.drain_outbox(ctx);
        }
        match self.core.tick(Instant::now(), now_millis() / 1000) {
            Tick::Close(code) => {
                if code == CloseCode::HeartbeatTimeout {
                    // A silent resumable client may come back on a new socket: keep its state.
                    self.park_on_stop = self.sent.is_some();
                }
                self.close(ctx, code);
            }
            Tick::Keepalive { protocol } => match self.codec.keepalive() {
                Some(frame) if protocol && self.codec.ready() => self.write(ctx, frame),
                _ => ctx.ping(b""),
            },
        }
    }

    /// A data frame (or reassembled message): the rate limit, then the codec, then the core.
    pub(super) fn on_data(&mut self, ctx: &mut Ctx, frame: InFrame<'_>) {
        let admission = self.core.admit_frame();
        if admission != Admission::Within {
            self.node.metrics.rate_limited.inc();
        }
        if let Admission::Close(code) = admission {
            return self.close(ctx, code);
        }
        // Always decode: the codec's framing state (partial records, the handshake) must see
        // every frame, and a refused request still deserves its own error reply.
        let mut decoded = std::mem::take(&mut self.decoded);
        self.codec.decode(frame, &mut decoded);
        self.core.queue_frame(decoded.drain(..), admission);
        self.decoded = decoded;
        self.run_requests(ctx);
    }

    pub(super) fn on_fragment(&mut self, ctx: &mut Ctx, item: actix_http::ws::Item) {
        match self
            .fragments
            .push(item, self.shared.settings.max_frame_bytes)
        {
            Reassembled::More => {}
            Reassembled::Close(code) => self.close(ctx, code),
            Reassembled::Message { binary: true, buf } => self.on_data(ctx, InFrame::Binary(&buf)),
            Reassembled::Message { binary: false, buf } => match std::str::from_utf8(&buf) {
                Ok(text) => self.on_data(ctx, InFrame::Text(text)),
                Err(e) => self.bad_read(ctx, read_errors::INVALID_UTF8, &e),
            },
        }
    }

    /// A frame that broke the WebSocket protocol: counted, logged, and closed with its code.
    pub(super) fn bad_read(
        &mut self,
        ctx: &mut Ctx,
        failure: ReadFailure,
        error: &dyn std::fmt::Display,
    ) {
        let ReadFailure::Bad { close, label } = failure else {
            return;
        };
        self.node
            .metrics
            .bad_frames
            .with_label_values(&[label])
            .inc();
        log::info!("{} bad websocket frame ({label}): {error}", self.log_ctx());
        self.close(ctx, close);
    }
}
