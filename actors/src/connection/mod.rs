//! The connection actor: one per WebSocket connection, run in a context of our own,
//! [`SocketContext`] (`socket_context.rs`, the WebSocket writer), which reads the client's frames
//! and writes frames encoded once per event for the whole node.
//!
//! The actor is a thin adapter around its `ConnectionCore` (`core/`), which makes
//! every decision that needs neither the socket nor the node: the inbound rate limit, bad-frame
//! counting, the in-order request queue (one reply per request, in request order), subscription
//! bookkeeping, the heartbeat's verdicts. The actor owns the socket, the caller's verified
//! identity, the codec, the outbox and the node's handles; it feeds the core what it reads and what
//! the timers say, and carries out the effects the core hands back (`effects.rs`). Frames are
//! turned into requests by the connection's [`WireCodec`]; neither the actor nor the core looks
//! inside a frame. Joins of every origin go through one path (`membership.rs`), hub methods through
//! `invoke.rs`. Notifications arrive in its [`Outbox`] as shared envelopes whose WebSocket frame
//! for this codec's format was encoded once for the whole node; a [`Wake`] makes the actor copy
//! everything queued into its context's write buffer in one turn, and the context hands that to
//! the HTTP layer as one chunk (`socket_context.rs`).
//!
//! | file | owns |
//! | --- | --- |
//! | `core/` | the connection core: decisions and pure state, unit-tested without a socket |
//! | `requests.rs` | the core's in-order request queue |
//! | `inbound.rs` | the core's inbound rate limit and bad-frame count |
//! | `subscriptions.rs` | the core's subscription state machine (register, replay, live) |
//! | `fragments.rs` | reassembling a message from continuation frames |
//! | `effects.rs` | carrying out the core's effects: writes, replies, closes, publishes, the outbox drain, the heartbeat |
//! | `publish_lanes.rs` | pipelined publishes handed to the broker in runs, each channel's in request order |
//! | `membership.rs` | the one join path (quota, limits, rules, authorizer, broker, activity) |
//! | `invoke.rs` | hub methods the codec does not map itself |
//! | `commands.rs` | carrying out hub commands (join, leave, close) the Azure-compatible REST API sent on the connection's own channel |
//! | `tracked.rs` | the hub methods' tracked events: reporting them written, no push twice |
//! | `resume.rs` | what a resumable connection keeps (stateful reconnect) |
//! | `read_errors.rs` | what a failed WebSocket read means |
//! | `watchdog.rs`, `conn_socket.rs` | resetting connections the actor cannot write to |
//! | `socket_context.rs` | the WebSocket writer: the actor's context, reading frames and writing them into one kept buffer |
//! | `streamed.rs` | running the actor without a WebSocket (SignalR's SSE and Long Polling transports) |
//!
//! Lifecycle: registration with the tenant group happens at the upgrade (so a tenant quota can be
//! answered with HTTP 429); everything is unregistered exactly once, in `stopped()`.

mod commands;
pub mod conn_socket;
mod core;
mod effects;
mod fragments;
mod inbound;
mod invoke;
mod membership;
mod publish_lanes;
mod read_errors;
mod requests;
pub mod resume;
mod shared;
pub mod socket_context;
pub mod streamed;
pub mod subscriptions;
mod tracked;
pub mod watchdog;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::local::LocalHistogram;

use self::conn_socket::ConnSocket;
use self::core::ConnectionCore;
use self::fragments::Fragments;
use self::read_errors::ReadFailure;
use self::resume::{Parked, SendBuffer, TenantMembership};
pub use self::shared::Connections;
use self::socket_context::{Message, ProtocolError, SocketContext};
use self::subscriptions::Subscriptions;
use self::tracked::Tracked;
use self::watchdog::{Pulse, Watch};
use crate::activity::Observe;
use crate::channel::ChannelName;
use crate::codec::{InFrame, WireCodec};
use crate::codes::CloseCode;
use crate::connection_limits::ConnectionSlot;
use crate::envelope::{Envelope, StreamPosition};
use crate::identity::Identity;
use crate::ids::{ConnId, TenantKey};
use crate::mailbox::ActorKind;
use crate::node::Node;
use crate::outbox::{Outbox, Wake};

/// Per-connection limits and timers (configuration `[session]` and `[rate_limit]`).
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Largest frame or reassembled message accepted; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// How often the server sends a heartbeat (WebSocket ping, or the protocol's own ping).
    pub heartbeat_interval: Duration,
    /// A client heard from less recently than this is dropped (close 4001).
    pub client_timeout: Duration,
    /// A connection the actor cannot write to for this long is shut (see [`watchdog`]).
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
    /// Publishes of one connection in flight at once (to different channels; replies still in
    /// request order: see `core/`).
    pub max_publishes_in_flight: usize,
    /// Most bytes of events one turn copies into the write buffer (the rest follows in the next
    /// turn, once the HTTP layer has taken this one's chunk).
    pub max_write_chunk_bytes: usize,
}

/// How often a resumable connection acknowledges what the client sent (as the JS client does).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Deliveries observed locally before the latency histogram is flushed to the shared one
/// (also flushed on every heartbeat): shared atomics per delivery would contend across threads.
const LATENCY_FLUSH_EVERY: u64 = 64;

/// One WebSocket connection: the actor around its `ConnectionCore`.
pub struct Connection {
    conn: ConnId,
    identity: Arc<Identity>,
    /// The tenant group this connection joined at the upgrade, left in `stopped()`.
    tenant: Option<TenantKey>,
    codec: Box<dyn WireCodec>,
    /// What the node's connections share (settings, parked connections, watchdog).
    shared: Arc<Connections>,
    /// The node (the same as `shared.node`, kept at hand).
    node: Arc<Node>,
    /// The decisions and pure state: rate limit, bad frames, requests, subscriptions, heartbeat.
    core: ConnectionCore,
    outbox: Arc<Outbox>,
    /// Reused buffer for the events taken from the outbox in one turn.
    batch: Vec<Arc<Envelope>>,
    /// Reused buffer for what to do with each of them (`Subscriptions::accept_all`).
    verdicts: Vec<subscriptions::Accept>,
    /// The hub methods' tracked events: not reported yet, and the connect window's keys.
    tracked: Tracked,
    fragments: Fragments,
    latency: LocalHistogram,
    mailbox_generation: u64,
    /// Reused buffer for the records decoded from one frame.
    decoded: Vec<crate::codec::Decoded>,
    /// Resumable connections: the token it parks under if its socket drops.
    resume_token: Option<Arc<str>>,
    /// Resumable connections: sequenced frames not yet acknowledged by the client.
    sent: Option<SendBuffer>,
    /// The client's sequence number last acknowledged to it.
    acked_in: u64,
    /// A resumed connection: channels to resubscribe from these positions at start.
    resuming: Option<Vec<(ChannelName, Option<StreamPosition>)>>,
    /// Park on stop even though the connection closed (a heartbeat timeout of a resumable one).
    park_on_stop: bool,
    /// This connection's count against the per-user and per-address limits, given back when
    /// the actor is dropped.
    _slot: Option<ConnectionSlot>,
    /// What the node's connection watchdog sees of this connection.
    pulse: Arc<Pulse>,
    /// The TCP connection, for the watchdog to reset if this actor cannot write.
    socket: ConnSocket,
    /// A hub connection's own channel, `connection:{connectionId}`: joined after the handshake,
    /// where the Azure-compatible REST API reaches it ([`crate::hub_commands`]).
    own_channel: Option<ChannelName>,
    /// Hub commands read from the outbox and not yet carried out, in arrival order.
    commands: std::collections::VecDeque<crate::hub_commands::HubCommand>,
    /// Pipelined publishes to channels with a run at the broker (`publish_lanes.rs`).
    lanes: publish_lanes::PublishLanes,
    /// Publishes started in this turn, handed to the broker as one run once the turn has read
    /// what the client sent.
    starting: Vec<publish_lanes::Waiting>,
}

impl Connection {
    /// A connection for a verified caller; `tenant` is the tenant group it has already joined.
    pub fn new(
        shared: Arc<Connections>,
        conn: ConnId,
        identity: Arc<Identity>,
        tenant: Option<TenantKey>,
        codec: Box<dyn WireCodec>,
    ) -> Self {
        let outbox = Arc::<Outbox>::default();
        Self {
            conn,
            core: ConnectionCore::new(&shared.settings, identity.clone(), Instant::now()),
            identity,
            tenant,
            codec,
            pulse: Arc::new(Pulse::new(outbox.clone())),
            socket: ConnSocket::default(),
            outbox,
            batch: Vec::new(),
            verdicts: Vec::new(),
            tracked: Tracked::default(),
            fragments: Fragments::default(),
            latency: shared.node.metrics.delivery_latency.local(),
            mailbox_generation: u64::MAX,
            decoded: Vec::new(),
            resume_token: None,
            sent: None,
            acked_in: 0,
            resuming: None,
            park_on_stop: false,
            _slot: None,
            node: shared.node.clone(),
            shared,
            own_channel: None,
            commands: Default::default(),
            lanes: Default::default(),
            starting: Vec::new(),
        }
    }

    /// Gives a hub connection its own channel (see [`crate::hub_commands`]): joined with the
    /// default channels after the handshake.
    pub fn with_own_channel(mut self, channel: ChannelName) -> Self {
        self.core.set_own_channel(channel.clone());
        self.own_channel = Some(channel);
        self
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
        shared: Arc<Connections>,
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
            own_channel,
        } = parked;
        // The caller leaves the parked membership once this connection has joined in its own name.
        debug_assert!(
            membership.is_none(),
            "the parked membership was taken first"
        );
        codec.begin_resume();
        let mut s = Self::new(shared, conn, identity, tenant, codec).with_resume_token(token);
        if let Some(own) = own_channel {
            s = s.with_own_channel(own);
        }
        s.sent = Some(sent);
        s.acked_in = acked_in;
        s.resuming = Some(channels);
        let gap = parked_at.elapsed().as_secs_f64();
        let credit = (f64::from(s.shared.settings.rate_per_second) * gap).ceil() as u64;
        s.core.grant_replay_credit(credit);
        s
    }

    fn start_acks(&mut self, ctx: &mut SocketContext<Self>) {
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
        ctx: &mut SocketContext<Self>,
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
            self.core.queue_resubscribe(&channel, since);
        }
        self.run_requests(ctx);
        self.start_acks(ctx);
    }

    /// Keeps this connection's state for a resume (see [`resume`]).
    fn park(&mut self) -> bool {
        let (Some(token), Some(sent)) = (self.resume_token.clone(), self.sent.take()) else {
            return false;
        };
        let channels = self.core.subs.positions();
        let codec = std::mem::replace(&mut self.codec, Box::new(crate::codec::native::NativeCodec));
        // The membership stays with the parked connection (so `stopped()` does not leave).
        let membership = self.tenant.take().map(|tenant| TenantMembership {
            tenant,
            conn: self.conn,
        });
        self.shared.parked.park(
            token.clone(),
            Parked {
                identity: self.identity.clone(),
                codec,
                sent,
                channels,
                acked_in: self.acked_in,
                membership,
                parked_at: Instant::now(),
                own_channel: self.own_channel.clone(),
            },
        );
        log::info!("{} parked for a stateful reconnect", self.log_ctx());
        let shared = self.shared.clone();
        actix::spawn(async move {
            tokio::time::sleep(shared.parked.grace()).await;
            if let Some(expired) = shared.parked.expire(&token) {
                log::debug!("a parked connection was not resumed in time; it leaves");
                if let Some(m) = expired.membership {
                    m.leave(&shared.node.tenants, &expired.identity.user_id);
                }
            }
        });
        true
    }

    /// Checks that `req` is a WebSocket upgrade this server can complete, without starting
    /// anything: callers check before they claim resources for the connection.
    pub fn verify_upgrade(req: &HttpRequest) -> Result<(), socket_context::HandshakeError> {
        socket_context::handshake(req).map(|_| ())
    }

    /// Completes the WebSocket upgrade and starts the connection actor.
    pub fn serve(
        mut self,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<HttpResponse, actix_web::Error> {
        self.socket = ConnSocket::of(req);
        let mut response = socket_context::handshake(req)?;
        let codec = actix_http::ws::Codec::new().max_size(self.shared.settings.max_frame_bytes);
        Ok(response.streaming(SocketContext::start(self, payload, codec)))
    }

    /// The connection's subscriptions, which the core keeps (the join path begins, activates and
    /// cancels them).
    fn subs(&mut self) -> &mut Subscriptions {
        &mut self.core.subs
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
}

impl Actor for Connection {
    type Context = SocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.apply_mailbox_limit(ctx);
        self.shared.outboxes.insert(self.conn, self.outbox.clone());
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
        if let Some(watchdog) = &self.shared.watchdog {
            watchdog.do_send(Watch {
                pulse: self.pulse.clone(),
                socket: self.socket.clone(),
                who: self.log_ctx(),
            });
        }

        // The outbox's wakes: shards wake this task directly (see `outbox.rs`).
        ctx.add_stream(self.outbox.ready());
        ctx.run_interval(self.shared.settings.heartbeat_interval, |act, ctx| {
            act.on_heartbeat(ctx)
        });
        if let Some(channels) = self.resuming.take() {
            self.continue_resumed(ctx, channels);
        }
        if !self.codec.ready() {
            ctx.run_later(self.shared.settings.handshake_timeout, |act, ctx| {
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
        self.shared.outboxes.remove(self.conn);
        let label = self.codec.label();
        // A drop without a close (or a silent client) of a resumable connection parks it.
        let unclean = !self.core.is_closing() || self.park_on_stop;
        if unclean && !self.node.shutdown.has_begun() {
            self.park();
        }
        let channels = self.core.subs.drain();
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

impl StreamHandler<Wake> for Connection {
    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.drain_outbox(ctx);
    }

    /// The outbox closed, which happens in `stopped()`: nothing to do.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Result<Message, ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.core.is_closing() {
            return;
        }
        self.core.heard(Instant::now());
        self.pulse.heard();
        match msg {
            Ok(Message::Text(text)) => self.on_data(ctx, InFrame::Text(&text)),
            Ok(Message::Binary(bin)) => self.on_data(ctx, InFrame::Binary(&bin)),
            Ok(Message::Continuation(item)) => self.on_fragment(ctx, item),
            Ok(Message::Ping(p)) => ctx.pong(&p),
            Ok(Message::Pong(_)) | Ok(Message::Nop) => {}
            Ok(Message::Close(reason)) => {
                log::debug!("{} client closed: {reason:?}", self.log_ctx());
                self.core.begin_close();
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
