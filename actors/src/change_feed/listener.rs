//! [`ChangeFeedListener`]: one per node; holds the relay loop and reports whether this node leads.
//!
//! Messages: [`ListenerStatus`] (tests, admin → listener; replies with [`ListenerState`]);
//! [`LeaseChanged`] and [`Relayed`] (the relay loop → its actor).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::relay::relay_loop;
use super::{ChangeFeed, EntityMap};
use crate::mailbox::ActorKind;
use crate::node::Node;
use crate::shutdown::Shutdown;

/// The listener's settings (from `[change_feed]`).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// How often a node without the lease tries to take it, and the back-off after errors.
    pub retry_interval: Duration,
    /// The holder reads the outbox at least this often, wake-up or not.
    pub poll_interval: Duration,
    /// Changes read per round trip.
    pub batch_size: usize,
    /// Relayed changes are kept this long (for inspection), then deleted.
    pub retention: Duration,
    pub entities: Arc<EntityMap>,
}

/// Sent by the relay loop to its actor when it takes or loses the lease; no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseChanged {
    pub leading: bool,
}

/// Sent by the relay loop to its actor after a batch was relayed; no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Relayed {
    pub count: u64,
}

/// Sent by tests or the admin API to the listener; replies with its state.
#[derive(Message)]
#[rtype(result = "ListenerState")]
pub struct ListenerStatus;

/// Whether this node relays, and how much it relayed since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerState {
    pub leading: bool,
    pub relayed: u64,
}

/// Relays the change outbox while this node holds the lease (see the module docs).
pub struct ChangeFeedListener {
    node: Arc<Node>,
    feed: Arc<dyn ChangeFeed>,
    config: ListenerConfig,
    state: ListenerState,
    /// Keeps the node's shutdown waiting until this actor is gone, which is after the relay loop
    /// gave the lease up.
    _shutdown: Shutdown,
}

impl ChangeFeedListener {
    pub fn new(node: Arc<Node>, feed: Arc<dyn ChangeFeed>, config: ListenerConfig) -> Self {
        Self {
            _shutdown: node.shutdown.hold("change-feed listener"),
            node,
            feed,
            config,
            state: ListenerState::default(),
        }
    }
}

impl Actor for ChangeFeedListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.limits.get(ActorKind::ChangeFeed).mailbox());
        self.node
            .metrics
            .actors
            .with_label_values(&[ActorKind::ChangeFeed.as_str()])
            .inc();
        let relay = relay_loop(
            self.node.clone(),
            self.feed.clone(),
            self.config.clone(),
            ctx.address(),
            self.node.shutdown.listen(),
        );
        // The loop ends by itself on shutdown, after giving the lease up.
        ctx.spawn(relay.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.node
            .metrics
            .actors
            .with_label_values(&[ActorKind::ChangeFeed.as_str()])
            .dec();
        log::info!("node {}: change listener stopped", self.node.id);
    }
}

impl Handler<LeaseChanged> for ChangeFeedListener {
    type Result = ();
    fn handle(&mut self, msg: LeaseChanged, _: &mut Self::Context) {
        self.state.leading = msg.leading;
    }
}

impl Handler<Relayed> for ChangeFeedListener {
    type Result = ();
    fn handle(&mut self, msg: Relayed, _: &mut Self::Context) {
        self.state.relayed += msg.count;
    }
}

impl Handler<ListenerStatus> for ChangeFeedListener {
    type Result = MessageResult<ListenerStatus>;
    fn handle(&mut self, _: ListenerStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state)
    }
}
