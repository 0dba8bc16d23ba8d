//! The session: one actor per WebSocket connection (the only user of the deprecated
//! `actix-web-actors`, kept in this one module so a move to `actix-ws` touches one place).
//!
//! It owns the socket, the caller's verified identity, its subscriptions, the heartbeat, the inbound
//! rate limit and the outbox. Frames are turned into requests by the connection's
//! [`WireCodec`]; the session never looks inside a frame itself. Requests are handled one at a time
//! in arrival order (`requests.rs`), joins of every origin through one path (`membership.rs`).
//! Notifications arrive in its [`Outbox`] as shared envelopes whose frame for this codec's format
//! was encoded once for the whole node; a [`Wake`] makes the session write everything queued in one
//! turn.
//!
//! Lifecycle: registration with the tenant group happens at the upgrade (so a tenant quota can be
//! answered with HTTP 429); everything is unregistered exactly once, in `stopped()`.

pub mod conn_socket;
mod invoke;
mod membership;
mod read_errors;
mod requests;
pub mod resume;
pub mod subscriptions;
pub mod watchdog;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::local::LocalHistogram;

use self::conn_socket::ConnSocket;
use self::membership::JoinRefused;
use self::read_errors::ReadFailure;
use self::requests::{Requests, Step};
use self::resume::{Parked, SendBuffer, TenantMembership};
use self::subscriptions::{Accept, Subscriptions};
use self::watchdog::{Pulse, Watch};
use crate::activity::Observe;
use crate::channel::ChannelName;
use crate::codec::{Decoded, InFrame, Inbound, OutFrame, Outcome, ReplyTo, Request, WireCodec};
use crate::codes::{CloseCode, ErrorCode};
use crate::connection_limits::ConnectionSlot;
use crate::envelope::{now_millis, Draft, Envelope, EventName, StreamPosition};
use crate::identity::Identity;
use crate::ids::{ConnId, TenantKey};
use crate::mailbox::ActorKind;
use crate::node::{Node, PublishError};
use crate::outbox::{Outbox, Wake};
use crate::publish_policy::{admit_publish, PublishRefused};
use crate::rules;
use std::collections::HashSet;

/// Per-connection limits and timers (configuration `[session]` and `[rate_limit]`).
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Largest frame or reassembled message accepted; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// How often the server sends a heartbeat (WebSocket ping, or the protocol's own ping).
    pub heartbeat_interval: Duration,
    /// A client heard from less recently than this is dropped (close 4001).
    pub client_timeout: Duration,
    /// A connection the session cannot write to for this long is shut (see [`watchdog`]).
    pub write_timeout: Duration,
    /// Time a protocol with a handshake (SignalR) has to complete it (close 4002).
    pub handshake_timeout: Duration,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Inbound data frames per second, sustained.
    pub rate_per_second: u32,
    /// Inbound data frames allowed in a burst.
    pub rate_burst: u32,
    /// Rate-limited frames tolerated per heartbeat interval before closing with 4429.
    pub max_rate_violations: u32,
    /// Roles whose connections the inbound rate limit does not apply to.
    pub rate_exempt_roles: Vec<crate::identity::Role>,
    /// Bad frames tolerated per heartbeat interval before closing with 4400.
    pub max_bad_frames: u32,
    /// Close with 4401 when the token's `exp` passes during the connection.
    pub close_on_token_expiry: bool,
    /// Bytes of unacknowledged frames a resumable connection keeps for a resend.
    pub resume_buffer_bytes: usize,
}

/// How often a resumable connection acknowledges what the client sent (as the JS client does).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Deliveries observed locally before the latency histogram is flushed to the shared one
/// (also flushed on every heartbeat): shared atomics per delivery would contend across threads.
const LATENCY_FLUSH_EVERY: u64 = 64;

/// Sent to a session to close it with a code (operator eviction, shutdown); no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close(pub CloseCode);

/// A message being reassembled from continuation frames.
struct Fragments {
    binary: bool,
    buf: BytesMut,
}

/// One WebSocket connection.
pub struct Connection {
    conn: ConnId,
    identity: Arc<Identity>,
    /// The tenant group this connection joined at the upgrade, left in `stopped()`.
    tenant: Option<TenantKey>,
    codec: Box<dyn WireCodec>,
    node: Arc<Node>,
    subs: Subscriptions,
    outbox: Arc<Outbox>,
    /// Reused buffer for the events taken from the outbox in one turn.
    batch: Vec<Arc<Envelope>>,
    last_heard: Instant,
    /// The inbound rate limit; `None` for an exempt role.
    limiter: Option<DefaultDirectRateLimiter>,
    rate_violations: u32,
    bad_frames: u32,
    fragments: Option<Fragments>,
    closing: bool,
    latency: LocalHistogram,
    mailbox_generation: u64,
    decoded: Vec<Decoded>,
    /// Resumable connections: the token it parks under if its socket drops.
    resume_token: Option<Arc<str>>,
    /// Resumable connections: sequenced frames not yet acknowledged by the client.
    sent: Option<SendBuffer>,
    /// The client's sequence number last acknowledged to it.
    acked_in: u64,
    /// A resumed connection: channels to resubscribe from these positions at start.
    resuming: Option<Vec<(ChannelName, Option<StreamPosition>)>>,
    /// Channels still recovering after a resume; one that cannot recover fails the resume.
    recovering: HashSet<ChannelName>,
    /// Park on stop even though the session closed (a heartbeat timeout of a resumable one).
    park_on_stop: bool,
    /// This connection's count against the per-user and per-address limits, given back when
    /// the session is dropped.
    _slot: Option<ConnectionSlot>,
    /// Frames a resumed connection may send over the rate: the rate times the time it was
    /// parked (what a compliant client can have buffered meanwhile), used up once.
    replay_credit: u64,
    /// The handshake was accepted and its reply waits for the default channels (see
    /// `Request::HandshakeComplete`); nothing else is written meanwhile.
    handshake_reply_pending: bool,
    /// Requests not yet answered, handled one at a time in arrival order.
    requests: Requests,
    /// What the node's session watchdog sees of this session.
    pulse: Arc<Pulse>,
    /// The TCP connection, for the watchdog to reset if this session cannot write.
    socket: ConnSocket,
}

impl Connection {
    /// A session for a verified caller; `tenant` is the tenant group it has already joined.
    pub fn new(
        node: Arc<Node>,
        conn: ConnId,
        identity: Arc<Identity>,
        tenant: Option<TenantKey>,
        codec: Box<dyn WireCodec>,
    ) -> Self {
        let s = &node.sessions;
        let per_second = NonZeroU32::new(s.rate_per_second.max(1)).expect("max(1) is non-zero");
        let burst = NonZeroU32::new(s.rate_burst.max(1)).expect("max(1) is non-zero");
        let limited = !s.rate_exempt_roles.contains(&identity.role);
        let outbox = Arc::<Outbox>::default();
        Self {
            conn,
            identity,
            tenant,
            codec,
            subs: Subscriptions::new(s.max_subscriptions),
            pulse: Arc::new(Pulse::new(outbox.clone())),
            socket: ConnSocket::default(),
            outbox,
            batch: Vec::new(),
            last_heard: Instant::now(),
            limiter: limited
                .then(|| RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))),
            rate_violations: 0,
            bad_frames: 0,
            fragments: None,
            closing: false,
            latency: node.metrics.delivery_latency.local(),
            mailbox_generation: u64::MAX,
            decoded: Vec::new(),
            resume_token: None,
            sent: None,
            acked_in: 0,
            resuming: None,
            recovering: HashSet::new(),
            park_on_stop: false,
            _slot: None,
            handshake_reply_pending: false,
            replay_credit: 0,
            requests: Requests::default(),
            node,
        }
    }

    /// Makes the connection resumable under `token` (SignalR stateful reconnect, agreed at
    /// negotiate); it takes effect if the handshake asks for it too.
    pub fn with_resume_token(mut self, token: Arc<str>) -> Self {
        self.resume_token = Some(token);
        self
    }

    /// The connection holds `slot` of the connection limits for as long as it lives.
    pub fn with_slot(mut self, slot: ConnectionSlot) -> Self {
        self._slot = Some(slot);
        self
    }

    /// Continues a parked connection on a new socket.
    pub fn resume(
        node: Arc<Node>,
        conn: ConnId,
        tenant: Option<TenantKey>,
        token: Arc<str>,
        parked: Parked,
    ) -> Self {
        let Parked {
            identity,
            mut codec,
            sent,
            channels,
            acked_in,
            membership,
            parked_at,
        } = parked;
        // The caller leaves the parked membership once this session has joined in its own name.
        debug_assert!(
            membership.is_none(),
            "the parked membership was taken first"
        );
        codec.begin_resume();
        let mut s = Self::new(node, conn, identity, tenant, codec).with_resume_token(token);
        s.sent = Some(sent);
        s.acked_in = acked_in;
        s.resuming = Some(channels);
        let gap = parked_at.elapsed().as_secs_f64();
        s.replay_credit = (f64::from(s.node.sessions.rate_per_second) * gap).ceil() as u64;
        s
    }

    /// Writes a sequenced frame (an invocation or completion) and keeps it for a resend.
    fn write_sequenced(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: OutFrame) {
        if let Some(sent) = self.sent.as_mut() {
            sent.record(frame.clone());
        }
        self.write(ctx, frame);
    }

    fn start_acks(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.run_interval(ACK_INTERVAL, |act, ctx| {
            let received = act.codec.received_sequence();
            if received > act.acked_in {
                act.acked_in = received;
                if let Some(frame) = act.codec.ack_frame(received) {
                    act.write(ctx, frame);
                }
            }
        });
    }

    /// A resumed connection: where the resend starts, the unacknowledged frames, then every
    /// channel from the position delivered before the drop.
    fn continue_resumed(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        channels: Vec<(ChannelName, Option<StreamPosition>)>,
    ) {
        let Some(sent) = self.sent.as_ref() else {
            return;
        };
        let Some(unacked) = sent.unacked().map(|f| f.cloned().collect::<Vec<_>>()) else {
            return self.close(ctx, CloseCode::ResumeIncomplete);
        };
        if let Some(frame) = self.codec.sequence_frame(sent.resend_from()) {
            self.write(ctx, frame);
        }
        log::info!(
            "{} resumed: resending {} frames, {} channels",
            self.log_ctx(),
            unacked.len(),
            channels.len()
        );
        for frame in unacked {
            self.write(ctx, frame);
        }
        for (channel, since) in channels {
            if since.is_some() {
                self.recovering.insert(channel.clone());
            }
            let channel = channel.to_string();
            let resubscribe = Request::Subscribe { channel, since };
            self.requests
                .push(Step::Decoded(Decoded::request(None, resubscribe)));
        }
        self.run_requests(ctx);
        self.start_acks(ctx);
    }

    /// Keeps this connection's state for a resume (see [`resume`]).
    fn park(&mut self) -> bool {
        let (Some(token), Some(sent)) = (self.resume_token.clone(), self.sent.take()) else {
            return false;
        };
        let channels = self.subs.positions();
        let codec = std::mem::replace(&mut self.codec, Box::new(crate::codec::native::NativeCodec));
        // The membership stays with the parked connection (so `stopped()` does not leave).
        let membership = self.tenant.take().map(|tenant| TenantMembership {
            tenant,
            conn: self.conn,
        });
        self.node.parked.park(
            token.clone(),
            Parked {
                identity: self.identity.clone(),
                codec,
                sent,
                channels,
                acked_in: self.acked_in,
                membership,
                parked_at: Instant::now(),
            },
        );
        log::info!("{} parked for a stateful reconnect", self.log_ctx());
        let node = self.node.clone();
        actix::spawn(async move {
            tokio::time::sleep(node.parked.grace()).await;
            if let Some(expired) = node.parked.expire(&token) {
                log::debug!("a parked connection was not resumed in time; it leaves");
                if let Some(m) = expired.membership {
                    m.leave(&node.tenants, &expired.identity.user_id);
                }
            }
        });
        true
    }

    /// Checks that `req` is a WebSocket upgrade this server can complete, without starting
    /// anything: callers check before they claim resources for the connection.
    pub fn verify_upgrade(req: &HttpRequest) -> Result<(), ws::HandshakeError> {
        ws::handshake(req).map(|_| ())
    }

    /// Completes the WebSocket upgrade and starts the session actor.
    pub fn serve(
        mut self,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<HttpResponse, actix_web::Error> {
        self.socket = ConnSocket::of(req);
        let max = self.node.sessions.max_frame_bytes;
        ws::WsResponseBuilder::new(self, req, payload)
            .frame_size(max)
            .start()
    }

    fn log_ctx(&self) -> String {
        format!(
            "conn={} tenant={} user={} proto={}",
            self.conn,
            self.identity
                .tenant
                .as_ref()
                .map(|t| t.as_str())
                .unwrap_or("-"),
            self.identity.user_id,
            self.codec.label()
        )
    }

    fn apply_mailbox_limit(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let limits = self.node.limits.get(ActorKind::Connection);
        let generation = limits.generation();
        if generation != self.mailbox_generation {
            self.mailbox_generation = generation;
            ctx.set_mailbox_capacity(limits.mailbox());
        }
    }

    fn write(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: OutFrame) {
        match frame {
            OutFrame::Text(bytes) => ctx.text(text_of(bytes)),
            OutFrame::Binary(bytes) => ctx.binary(bytes),
        }
    }

    fn write_envelope(&mut self, ctx: &mut ws::WebsocketContext<Self>, env: &Envelope) {
        let format = self.codec.format();
        let frame = env.frame(format).clone();
        if let Some(sent) = self.sent.as_mut() {
            sent.record(if format.is_binary() {
                OutFrame::Binary(frame.clone())
            } else {
                OutFrame::Text(frame.clone())
            });
        }
        if format.is_binary() {
            ctx.binary(frame);
        } else {
            ctx.text(text_of(frame));
        }
        let age_ms = now_millis().saturating_sub(env.ts);
        self.latency.observe(age_ms as f64 / 1000.0);
        if self.latency.get_sample_count() >= LATENCY_FLUSH_EVERY {
            self.latency.flush();
        }
    }

    /// Writes every event queued in the outbox, or closes the session if a shard evicted it.
    fn drain_outbox(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.handshake_reply_pending {
            // Left queued: the handshake reply must be the first thing the client reads (it
            // drains once the reply is out).
            self.outbox.rearm_wake();
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.outbox.take_all(&mut batch);
        let evicted = self.outbox.is_evicted();
        if !evicted && !self.closing && self.codec.ready() {
            for env in &batch {
                if self.subs.accept(env) == Accept::Write {
                    self.write_envelope(ctx, env);
                }
            }
        }
        batch.clear();
        self.batch = batch;
        if evicted {
            self.close(ctx, CloseCode::SlowConsumer);
        }
    }

    fn reply(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reply_to: &ReplyTo,
        outcome: Outcome,
    ) {
        // Replies are completions on protocols that sequence (SignalR): kept for a resend.
        if let Some(frame) = self.codec.encode(reply_to, outcome) {
            self.write_sequenced(ctx, frame);
        }
    }

    fn subscription_error(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reply_to: &ReplyTo,
        channel: String,
        code: ErrorCode,
        reason: String,
    ) {
        let refused = JoinRefused { code, reason };
        self.note_refused(&channel, &refused);
        let JoinRefused { code, reason } = refused;
        self.reply(
            ctx,
            reply_to,
            Outcome::SubscriptionError {
                channel,
                code,
                reason,
            },
        );
    }

    /// Closes the connection once, with a protocol goodbye where the protocol has one.
    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode) {
        let goodbye = self.codec.goodbye(code);
        self.close_with(ctx, code, goodbye);
    }

    /// Closes the connection once, writing `last` (a protocol goodbye) first.
    fn close_with(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: CloseCode,
        last: Option<OutFrame>,
    ) {
        if self.closing {
            return;
        }
        self.closing = true;
        // Unless the watchdog already reset the connection (and counted why) while this
        // session could not run.
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
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code.code()),
            description: Some(code.reason().to_owned()),
        }));
        ctx.stop();
    }

    fn on_heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.pulse.turn();
        self.latency.flush();
        self.rate_violations = 0;
        self.bad_frames = 0;
        self.apply_mailbox_limit(ctx);
        // Normally a wake does this; it is the fallback when a wake could not be sent.
        if !self.outbox.is_empty() {
            self.drain_outbox(ctx);
        }
        if self.last_heard.elapsed() > self.node.sessions.client_timeout {
            // A silent resumable client may come back on a new socket: keep its state.
            self.park_on_stop = self.sent.is_some();
            return self.close(ctx, CloseCode::HeartbeatTimeout);
        }
        if self.node.sessions.close_on_token_expiry {
            if let Some(exp) = self.identity.expires_at {
                if now_millis() / 1000 >= exp {
                    return self.close(ctx, CloseCode::TokenExpired);
                }
            }
        }
        match self.codec.keepalive() {
            Some(frame) if self.codec.ready() && !self.handshake_reply_pending => {
                self.write(ctx, frame)
            }
            _ => ctx.ping(b""),
        }
    }

    fn on_data(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: InFrame<'_>) {
        let mut limited = self.limiter.as_ref().is_some_and(|l| l.check().is_err());
        if limited && self.replay_credit > 0 {
            // What a resumed client buffered while its socket was down, at most at the allowed
            // rate: its flush is not a violation.
            self.replay_credit -= 1;
            limited = false;
        }
        if limited {
            self.node.metrics.rate_limited.inc();
            self.rate_violations += 1;
            if self.rate_violations > self.node.sessions.max_rate_violations {
                return self.close(ctx, CloseCode::RateLimited);
            }
        }
        // Always decode: the codec's framing state (partial records, the handshake) must see
        // every frame, and a refused request still deserves its own error reply.
        let mut decoded = std::mem::take(&mut self.decoded);
        self.codec.decode(frame, &mut decoded);
        let mut refused_without_reply = false;
        for d in decoded.drain(..) {
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
        self.decoded = decoded;
        self.run_requests(ctx);
    }

    fn rate_limited_outcome(&self) -> Outcome {
        Outcome::Error {
            code: ErrorCode::RateLimited,
            message: format!(
                "more than {} frames per second; this request was not processed",
                self.node.sessions.rate_per_second
            ),
        }
    }

    fn on_decoded(&mut self, ctx: &mut ws::WebsocketContext<Self>, d: Decoded) {
        match d {
            Decoded::Request(inbound) => self.on_request(ctx, inbound),
            Decoded::Reject {
                reply_to,
                code,
                message,
            } => {
                self.node
                    .metrics
                    .bad_frames
                    .with_label_values(&[code.as_str()])
                    .inc();
                self.bad_frames += 1;
                log::debug!(
                    "{} bad frame ({}): {message}",
                    self.log_ctx(),
                    code.as_str()
                );
                self.reply(ctx, &reply_to, Outcome::Error { code, message });
                if self.bad_frames > self.node.sessions.max_bad_frames {
                    self.close(ctx, CloseCode::TooManyBadFrames);
                }
            }
            Decoded::Send(frame) => self.write(ctx, frame),
            Decoded::Ignore => {}
            Decoded::Fatal {
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
        }
    }

    fn on_request(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        Inbound { reply_to, request }: Inbound,
    ) {
        match request {
            Request::Subscribe { channel, since } => self.subscribe(ctx, reply_to, channel, since),
            Request::Unsubscribe { channel } => self.unsubscribe(ctx, reply_to, channel),
            Request::Publish {
                channel,
                event,
                data,
            } => self.publish(ctx, reply_to, channel, event, data),
            Request::Ping => self.reply(ctx, &reply_to, Outcome::Pong),
            Request::Invoke { method, args } => self.invoke(ctx, reply_to, method, args),
            Request::HandshakeComplete { reply } => {
                if self.resume_token.is_some() && self.codec.resumable() {
                    self.sent = Some(SendBuffer::new(self.node.sessions.resume_buffer_bytes));
                    self.start_acks(ctx);
                }
                // The default channels, registered on every node; then the handshake reply (so
                // `start()` resolves only once they are live); then the hub methods'
                // connect-time events; all before any request sent after the handshake. Until the
                // reply is out, events wait in the outbox: nothing may precede it.
                self.handshake_reply_pending = true;
                let defaults = rules::default_channels(&self.identity)
                    .into_iter()
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
            Request::Close => self.close(ctx, CloseCode::Normal),
            Request::Ack { sequence_id } => {
                if let Some(sent) = self.sent.as_mut() {
                    sent.ack(sequence_id);
                }
            }
        }
    }

    fn subscribe(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reply_to: ReplyTo,
        raw: String,
        since: Option<StreamPosition>,
    ) {
        let channel = match ChannelName::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                return self.subscription_error(
                    ctx,
                    &reply_to,
                    raw,
                    ErrorCode::BadChannel,
                    e.to_string(),
                )
            }
        };
        let joining = self.join_channel(ctx, channel.clone(), since);
        self.hold(ctx, joining, move |act, ctx, res| match res {
            Ok(joined) => {
                let subscribed = Outcome::Subscribed {
                    channel: channel.to_string(),
                    subscription_id: joined.id,
                    offset: joined.offset,
                    epoch: joined.epoch,
                    recovered: joined.recovered,
                };
                act.reply(ctx, &reply_to, subscribed);
                for env in joined.ready {
                    act.write_envelope(ctx, &env);
                }
            }
            Err(JoinRefused { code, reason }) => {
                act.subscription_error(ctx, &reply_to, raw, code, reason)
            }
        });
    }

    fn unsubscribe(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reply_to: ReplyTo,
        raw: String,
    ) {
        let channel = match ChannelName::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                return self.reply(
                    ctx,
                    &reply_to,
                    Outcome::Error {
                        code: ErrorCode::BadChannel,
                        message: e.to_string(),
                    },
                )
            }
        };
        if self.leave_channel(&channel) {
            self.reply(ctx, &reply_to, Outcome::Unsubscribed { channel: raw });
        } else {
            self.reply(
                ctx,
                &reply_to,
                Outcome::Error {
                    code: ErrorCode::NotSubscribed,
                    message: format!("not subscribed to {raw}"),
                },
            );
        }
    }

    fn publish(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reply_to: ReplyTo,
        raw: String,
        event: String,
        data: Arc<serde_json::value::RawValue>,
    ) {
        let error = |code, message: String| Outcome::Error { code, message };
        let channel = match ChannelName::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                return self.reply(ctx, &reply_to, error(ErrorCode::BadChannel, e.to_string()))
            }
        };
        let event = match EventName::parse(&event) {
            Ok(e) => e,
            Err(e) => return self.reply(ctx, &reply_to, error(ErrorCode::BadEvent, e.to_string())),
        };
        let data = match self.node.check_payload(data, self.codec.label()) {
            Ok(d) => d,
            Err(e) => {
                log::info!("{} publish to {channel}: {e}", self.log_ctx());
                return self.reply(ctx, &reply_to, error(ErrorCode::BadPayload, e.to_string()));
            }
        };
        // The rules, then the quota (as for REST); then the node's one publish path.
        let node = self.node.clone();
        let admitted = admit_publish(node.clone(), self.identity.clone(), channel.clone());
        let draft = Draft::new(channel, event, data);
        let publishing = async move {
            admitted.await.map_err(|refused| match refused {
                PublishRefused::Forbidden(rule) => error(ErrorCode::Forbidden, rule),
                PublishRefused::Quota(q) => error(ErrorCode::QuotaExceeded, q.to_string()),
            })?;
            node.publish(draft, "ws")
                .await
                .map_err(|e| error(publish_error_code(&e), e.to_string()))
        };
        self.hold(ctx, publishing.into_actor(self), move |act, ctx, res| {
            let outcome = match res {
                Ok(ack) => Outcome::Published {
                    id: ack.id,
                    offset: ack.offset,
                    epoch: ack.epoch,
                },
                Err(refused) => refused,
            };
            act.reply(ctx, &reply_to, outcome);
        });
    }

    /// Tells the activity recorder about a subscription of a tenant's connection (or, for
    /// callers without a tenant, on a tenant's channel).
    fn observe_subscription(&self, channel: &ChannelName, subscribed: bool) {
        if !self.node.activity.is_active()
            || matches!(
                channel.kind(),
                crate::channel::Channel::TenantActivity { .. }
            )
        {
            return;
        }
        let Some(tenant) = self.tenant.clone().or_else(|| channel.tenant().cloned()) else {
            return;
        };
        let (user, channel) = (self.identity.user_id.clone(), channel.clone());
        self.node.activity.observe(if subscribed {
            Observe::Subscribed {
                tenant,
                user,
                channel,
            }
        } else {
            Observe::Unsubscribed {
                tenant,
                user,
                channel,
            }
        });
    }

    /// Tells the activity recorder that this tenant connection opened or closed.
    fn observe_connection(&self, opened: bool) {
        let Some(tenant) = self.tenant.clone() else {
            return;
        };
        let (user, role, protocol) = (
            self.identity.user_id.clone(),
            self.identity.role,
            self.codec.label(),
        );
        self.node.activity.observe(if opened {
            Observe::ConnectionOpened {
                tenant,
                user,
                role,
                protocol,
            }
        } else {
            Observe::ConnectionClosed {
                tenant,
                user,
                role,
                protocol,
            }
        });
    }

    fn on_fragment(&mut self, ctx: &mut ws::WebsocketContext<Self>, item: actix_http::ws::Item) {
        let max = self.node.sessions.max_frame_bytes;
        let (first, last, chunk) = match item {
            actix_http::ws::Item::FirstText(b) => (Some(false), false, b),
            actix_http::ws::Item::FirstBinary(b) => (Some(true), false, b),
            actix_http::ws::Item::Continue(b) => (None, false, b),
            actix_http::ws::Item::Last(b) => (None, true, b),
        };
        if let Some(binary) = first {
            self.fragments = Some(Fragments {
                binary,
                buf: BytesMut::new(),
            });
        }
        let Some(f) = self.fragments.as_mut() else {
            return self.close(ctx, CloseCode::ProtocolError);
        };
        if f.buf.len() + chunk.len() > max {
            return self.close(ctx, CloseCode::MessageTooBig);
        }
        f.buf.extend_from_slice(&chunk);
        if last {
            let Some(Fragments { binary, buf }) = self.fragments.take() else {
                return;
            };
            if binary {
                self.on_data(ctx, InFrame::Binary(&buf));
            } else {
                match std::str::from_utf8(&buf) {
                    Ok(text) => self.on_data(ctx, InFrame::Text(text)),
                    Err(e) => self.bad_read(ctx, read_errors::INVALID_UTF8, &e),
                }
            }
        }
    }

    /// A frame that broke the WebSocket protocol: counted, logged, and closed with its code.
    fn bad_read(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
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

/// Requests that keep the protocol itself going, processed even when the client is over its rate.
fn is_protocol_request(r: &Request) -> bool {
    matches!(r, Request::HandshakeComplete { .. } | Request::Close)
}

/// Wraps encoder output as a text frame payload without re-validating it per recipient.
fn text_of(bytes: Bytes) -> bytestring::ByteString {
    // SAFETY: every OutFrame::Text and every text-format notification frame is produced by
    // serde_json (plus ASCII record separators), which only emits valid UTF-8.
    unsafe { bytestring::ByteString::from_bytes_unchecked(bytes) }
}

fn publish_error_code(e: &PublishError) -> ErrorCode {
    match e {
        PublishError::Broker(b) => b.code(),
    }
}

impl Actor for Connection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.apply_mailbox_limit(ctx);
        let m = &self.node.metrics;
        m.connections.with_label_values(&[self.codec.label()]).inc();
        m.connections_opened
            .with_label_values(&[self.codec.label()])
            .inc();
        m.actors
            .with_label_values(&[ActorKind::Connection.as_str()])
            .inc();
        log::debug!("{} connected", self.log_ctx());
        self.observe_connection(true);
        if let Some(watchdog) = &self.node.watchdog {
            watchdog.do_send(Watch {
                pulse: self.pulse.clone(),
                socket: self.socket.clone(),
                who: self.log_ctx(),
            });
        }

        ctx.run_interval(self.node.sessions.heartbeat_interval, |act, ctx| {
            act.on_heartbeat(ctx)
        });
        if let Some(channels) = self.resuming.take() {
            self.continue_resumed(ctx, channels);
        }
        if !self.codec.ready() {
            ctx.run_later(self.node.sessions.handshake_timeout, |act, ctx| {
                if !act.codec.ready() {
                    act.close(ctx, CloseCode::HandshakeTimeout);
                }
            });
        } else {
            // No handshake (native): ready for the hub methods' connect-time events now.
            self.hub_connected(ctx);
        }
        // Resolves once the node starts shutting down (or the node is gone).
        let wait = self.node.shutdown.listen().signalled();
        ctx.spawn(
            wait.into_actor(self)
                .map(|_, act, ctx| act.close(ctx, CloseCode::ServerRestart)),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // The watchdog resets the connection if it is still open after the write timeout.
        self.pulse.stopped();
        self.socket.session_ended();
        self.outbox.close();
        self.latency.flush();
        let label = self.codec.label();
        // A drop without a close (or a silent client) of a resumable connection parks it.
        let unclean = !self.closing || self.park_on_stop;
        if unclean && !self.node.shutdown.has_begun() {
            self.park();
        }
        let channels = self.subs.drain();
        if !channels.is_empty() {
            self.node.broker.unsubscribe(self.conn, channels);
        }
        self.observe_connection(false);
        if let Some(tenant) = self.tenant.take() {
            self.node
                .tenants
                .leave(&tenant, self.conn, &self.identity.user_id);
        }
        let m = &self.node.metrics;
        m.connections.with_label_values(&[label]).dec();
        m.actors
            .with_label_values(&[ActorKind::Connection.as_str()])
            .dec();
        log::debug!("conn={} disconnected", self.conn);
    }
}

impl Handler<Wake> for Connection {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.drain_outbox(ctx);
    }
}

impl Handler<Close> for Connection {
    type Result = ();

    fn handle(&mut self, Close(code): Close, ctx: &mut Self::Context) {
        self.close(ctx, code);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.last_heard = Instant::now();
        self.pulse.heard();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_data(ctx, InFrame::Text(&text)),
            Ok(ws::Message::Binary(bin)) => self.on_data(ctx, InFrame::Binary(&bin)),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(ctx, item),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                log::debug!("{} client closed: {reason:?}", self.log_ctx());
                self.closing = true;
                ctx.close(reason);
                ctx.stop();
            }
            Err(e) => match read_errors::classify(&e) {
                ReadFailure::PeerLost => {
                    // An unclean drop, which a resumable connection survives; nothing can be
                    // written to it any more.
                    log::debug!("{} connection lost: {e}", self.log_ctx());
                    ctx.stop();
                }
                bad => self.bad_read(ctx, bad, &e),
            },
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
