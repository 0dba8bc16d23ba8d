//! [`Connections`]: what every connection of a node shares besides the node itself — the
//! connection settings, the parked (resumable) connections, the watchdog, the per-user and
//! per-address limits, the live connections' outboxes (summed for the sessions' queue depth) and the
//! connection id counter. Built once at start-up next to the
//! [`Node`]; the node knows nothing of connections, so the engine side never depends on them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;

use super::resume::ParkedConnections;
use super::watchdog::ConnectionWatchdog;
use super::ConnectionSettings;
use crate::connection_limits::ConnectionLimiter;
use crate::ids::ConnId;
use crate::node::Node;
use crate::outbox::Outbox;

/// The live connections' outboxes (registered on start, removed on stop: a lock per connect and
/// disconnect, none per delivery).
#[derive(Default)]
pub struct Outboxes(Mutex<HashMap<ConnId, Arc<Outbox>>>);

impl Outboxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<Outbox>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, conn: ConnId, outbox: Arc<Outbox>) {
        self.lock().insert(conn, outbox);
    }

    pub fn remove(&self, conn: ConnId) {
        self.lock().remove(&conn);
    }

    /// Events waiting in every connection's outbox now.
    pub fn queued_events(&self) -> i64 {
        self.lock().values().map(|o| o.len() as i64).sum()
    }
}

/// The connection side of a node (see the module docs).
pub struct Connections {
    pub node: Arc<Node>,
    pub settings: ConnectionSettings,
    /// Resumable connections whose socket dropped, waiting for their client.
    pub parked: ParkedConnections,
    /// Connections per user and per source address on this node.
    pub limits: Arc<ConnectionLimiter>,
    /// Resets the connections that cannot write (absent in bare test nodes).
    pub watchdog: Option<Addr<ConnectionWatchdog>>,
    /// Every live connection's outbox, so the sessions' queue depth is summed when asked
    /// (a sample or an admin request), never counted per delivery.
    pub outboxes: Outboxes,
    next_conn: AtomicU64,
}

impl Connections {
    pub fn new(node: Arc<Node>, settings: ConnectionSettings, resume_grace: Duration) -> Self {
        Self {
            outboxes: Outboxes::default(),
            node,
            settings,
            parked: ParkedConnections::new(resume_grace),
            limits: Arc::new(ConnectionLimiter::unlimited()),
            watchdog: None,
            next_conn: AtomicU64::new(1),
        }
    }

    /// Limiting connections per user and per source address.
    pub fn with_limits(mut self, limits: ConnectionLimiter) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// With `watchdog` watching the connections.
    pub fn with_watchdog(mut self, watchdog: Addr<ConnectionWatchdog>) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    fn event() -> Arc<Envelope> {
        Arc::new(crate::envelope::tests::sample())
    }

    #[test]
    fn the_sessions_depth_is_every_live_outbox_summed() {
        let outboxes = Outboxes::default();
        let (a, b) = (Arc::<Outbox>::default(), Arc::<Outbox>::default());
        outboxes.insert(ConnId(1), a.clone());
        outboxes.insert(ConnId(2), b.clone());
        for _ in 0..3 {
            a.push(&event(), 10, 100, 1 << 20);
        }
        b.push(&event(), 10, 100, 1 << 20);
        assert_eq!(outboxes.queued_events(), 4);
        let mut taken = Vec::new();
        a.take_all(&mut taken);
        assert_eq!(
            outboxes.queued_events(),
            1,
            "taken events are no longer waiting"
        );
        outboxes.remove(ConnId(2));
        assert_eq!(
            outboxes.queued_events(),
            0,
            "a closed connection's outbox is gone"
        );
    }
}
