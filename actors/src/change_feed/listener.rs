//! [`ChangeFeedListener`]: one per node; holds the relay loop and reports whether this node leads.
//!
//! Messages: [`ListenerStatus`] (tests, admin → listener; replies with [`ListenerState`]);
//! [`LeaseChanged`] and [`Relayed`] (the relay loop → its actor).

use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use super::relay::{relay_loop, LeaseChanged, ListenerConfig, Relayed, Reports};
use super::ChangeFeed;
use crate::mailbox::ActorKind;
use crate::metered::{Metered, SINGLE_INSTANCE};
use crate::node::Node;
use crate::shutdown::Shutdown;

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
        let meter = self.node.metrics.meter(
            ActorKind::ChangeFeed,
            SINGLE_INSTANCE,
            Some(self.node.limits.clone()),
        );
        let me = Metered::new(ctx.address(), meter);
        let relay = relay_loop(
            self.node.clone(),
            self.feed.clone(),
            self.config.clone(),
            Reports {
                lease: me.recipient(),
                relayed: me.recipient(),
            },
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

crate::metered_actor!(ChangeFeedListener);

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
