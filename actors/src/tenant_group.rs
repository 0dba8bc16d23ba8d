//! Tenant groups: one [`TenantGroup`] actor per tenant with connections on this node, holding
//! its local connections by user and role; it answers this node's snapshot of the tenant.
//!
//! [`TenantGroups`] owns the groups' lifecycle: it counts joins and leaves under one short lock
//! (connect/disconnect only, never the fan-out path), starts a group on the tenant's first
//! connection and stops it after the last one leaves. [`TenantRegistry`] is what the rest of the
//! node uses: the groups, plus the node's presence engine ([`crate::presence`]), told about every
//! join and leave under the same lock, so it sees them in the order they happened.
//!
//! Messages (who sends them, what they reply):
//! - [`Join`]: registry → group when a connection opens; no reply.
//! - [`Leave`]: registry → group when a connection closes; no reply.
//! - [`Snapshot`]: the embedded presence engine (through [`TenantGroups`]) → group; replies with
//!   connections and online users.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::identity::Role;
use crate::ids::{ConnId, TenantKey, UserId};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metered::{Meter, Metered};
use crate::metrics::Metrics;
use crate::presence::{LocalTenants, PresenceEngine};
pub use crate::presence::{TenantError, TenantSnapshot, UserPresence};

/// A connection as its tenant group sees it.
#[derive(Clone, Debug)]
pub struct Member {
    pub conn: ConnId,
    pub user: UserId,
    pub role: Role,
}

/// Sent by the registry to a group when a connection of the tenant opens.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join(pub Member);

/// Sent by the registry to a group when a connection of the tenant closes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave(pub ConnId);

/// Asks a group for its connections and online users.
#[derive(Message)]
#[rtype(result = "TenantSnapshot")]
pub struct Snapshot;

/// One tenant's connections on this node.
pub struct TenantGroup {
    tenant: TenantKey,
    members: HashMap<ConnId, Member>,
    limits: Arc<ActorLimits>,
    metrics: Arc<Metrics>,
}

impl Actor for TenantGroup {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.get(ActorKind::TenantGroup).mailbox());
        self.metrics
            .actors
            .with_label_values(&[ActorKind::TenantGroup.as_str()])
            .inc();
        log::debug!("tenant group {} started", self.tenant);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics
            .actors
            .with_label_values(&[ActorKind::TenantGroup.as_str()])
            .dec();
        log::debug!("tenant group {} stopped", self.tenant);
    }
}

crate::metered_actor!(TenantGroup);

impl Handler<Join> for TenantGroup {
    type Result = ();
    fn handle(&mut self, Join(m): Join, _: &mut Self::Context) {
        self.members.insert(m.conn, m);
    }
}

impl Handler<Leave> for TenantGroup {
    type Result = ();
    fn handle(&mut self, Leave(conn): Leave, _: &mut Self::Context) {
        self.members.remove(&conn);
    }
}

impl Handler<Snapshot> for TenantGroup {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        let mut by_user: BTreeMap<&str, (Role, usize)> = BTreeMap::new();
        for m in self.members.values() {
            let e = by_user.entry(m.user.as_str()).or_insert((m.role, 0));
            e.1 += 1;
        }
        let users = by_user
            .into_iter()
            .map(|(u, (role, connections))| UserPresence {
                user_id: u.to_owned(),
                role,
                connections,
            })
            .collect();
        MessageResult(TenantSnapshot {
            connections: self.members.len(),
            users,
        })
    }
}

struct Entry {
    group: Metered<TenantGroup>,
    connections: usize,
    /// Local connections per user: "first" and "last" connection on this node.
    users: HashMap<UserId, usize>,
}

/// This node's tenant groups: starts, feeds and stops them (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct TenantGroups {
    tenants: Arc<Mutex<HashMap<TenantKey, Entry>>>,
    limits: Arc<ActorLimits>,
    metrics: Arc<Metrics>,
    /// One meter for all groups (instance `all`): tenants would make an unbounded label.
    meter: Arc<Meter>,
    query_timeout: Duration,
}

/// The instance label of the tenant groups' shared meter.
pub const GROUPS_INSTANCE: &str = "all";

impl TenantGroups {
    pub fn new(limits: Arc<ActorLimits>, metrics: Arc<Metrics>, query_timeout: Duration) -> Self {
        let meter = metrics.meter(
            ActorKind::TenantGroup,
            GROUPS_INSTANCE,
            Some(limits.clone()),
        );
        Self {
            tenants: Arc::default(),
            limits,
            metrics,
            meter,
            query_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantKey, Entry>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn group(&self, tenant: &TenantKey) -> Option<Metered<TenantGroup>> {
        self.lock().get(tenant).map(|e| e.group.clone())
    }

    /// Every tenant with connections on this node, with its connection count.
    pub fn tenants(&self) -> Vec<(TenantKey, usize)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|(t, e)| (t.clone(), e.connections))
            .collect();
        out.sort();
        out
    }
}

impl LocalTenants for TenantGroups {
    fn snapshot(
        &self,
        tenant: &TenantKey,
    ) -> BoxFuture<'static, Result<TenantSnapshot, TenantError>> {
        let Some(group) = self.group(tenant) else {
            return futures_util::future::ready(Ok(TenantSnapshot::default())).boxed();
        };
        let timeout = self.query_timeout;
        async move {
            group
                .send(Snapshot)
                .timeout(timeout)
                .await
                .map_err(|e| match e {
                    MailboxError::Timeout => TenantError::Timeout(timeout),
                    MailboxError::Closed => TenantError::Stopped,
                })
        }
        .boxed()
    }

    fn tenant_keys(&self) -> Vec<TenantKey> {
        self.tenants().into_iter().map(|(t, _)| t).collect()
    }
}

/// Routes to tenant groups and tells presence (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct TenantRegistry {
    groups: TenantGroups,
    presence: Arc<dyn PresenceEngine>,
}

impl TenantRegistry {
    pub fn new(groups: TenantGroups, presence: Arc<dyn PresenceEngine>) -> Self {
        Self { groups, presence }
    }

    /// The node's presence engine.
    pub fn presence(&self) -> &Arc<dyn PresenceEngine> {
        &self.presence
    }

    /// Registers a connection with its tenant's group, starting the group if needed, and tells
    /// presence. Refuses when the tenant already has `max_connections` connections on this node.
    pub fn join(
        &self,
        tenant: &TenantKey,
        member: Member,
        max_connections: Option<usize>,
    ) -> Result<(), TenantError> {
        let (user, role, conn) = (member.user.clone(), member.role, member.conn);
        let mut reg = self.groups.lock();
        if let (Some(limit), Some(e)) = (max_connections, reg.get(tenant)) {
            if e.connections >= limit {
                return Err(TenantError::Quota {
                    tenant: tenant.clone(),
                    limit,
                });
            }
        }
        let entry = reg.entry(tenant.clone()).or_insert_with(|| Entry {
            group: Metered::new(
                TenantGroup {
                    tenant: tenant.clone(),
                    members: HashMap::new(),
                    limits: self.groups.limits.clone(),
                    metrics: self.groups.metrics.clone(),
                }
                .start(),
                self.groups.meter.clone(),
            ),
            connections: 0,
            users: HashMap::new(),
        });
        entry.connections += 1;
        let n = entry.users.entry(user.clone()).or_insert(0);
        *n += 1;
        let first_here = *n == 1;
        // do_send: joins and leaves must never be lost; they are bounded by connections.
        entry.group.do_send(Join(member));
        // Under the lock: presence sees joins and leaves in the order they happened.
        self.presence.joined(tenant, conn, &user, role, first_here);
        Ok(())
    }

    /// Unregisters a connection, stops the group after its last connection, and tells presence.
    pub fn leave(&self, tenant: &TenantKey, conn: ConnId, user: &UserId) {
        let mut reg = self.groups.lock();
        let Some(entry) = reg.get_mut(tenant) else {
            return;
        };
        entry.group.do_send(Leave(conn));
        entry.connections = entry.connections.saturating_sub(1);
        let last_here = match entry.users.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                entry.users.remove(user);
                true
            }
            None => false,
        };
        if entry.connections == 0 {
            if let Some(e) = reg.remove(tenant) {
                // Queued after the Leave, so the group has settled when it stops.
                e.group.do_send(StopGroup);
            }
        }
        self.presence.left(tenant, conn, user, last_here);
    }

    /// The tenant's connections and online users: cluster-wide in cluster mode, else this
    /// node's (empty when it has none here).
    pub async fn snapshot(&self, tenant: &TenantKey) -> Result<TenantSnapshot, TenantError> {
        self.presence.snapshot(tenant).await
    }

    /// Whether `user` of `tenant` has a connection (anywhere in the cluster, in cluster mode).
    pub async fn is_online(&self, tenant: &TenantKey, user: &UserId) -> Result<bool, TenantError> {
        let snap = self.snapshot(tenant).await?;
        Ok(snap.users.iter().any(|u| u.user_id == user.as_str()))
    }

    /// Every tenant with connections: cluster-wide in cluster mode, else on this node.
    pub async fn tenant_keys(&self) -> Result<Vec<TenantKey>, TenantError> {
        self.presence.tenant_keys().await
    }

    /// Every tenant with connections on this node, with its connection count.
    pub fn tenants(&self) -> Vec<(TenantKey, usize)> {
        self.groups.tenants()
    }
}

/// Sent by the registry to a group after its last connection left.
#[derive(Message)]
#[rtype(result = "()")]
struct StopGroup;

impl Handler<StopGroup> for TenantGroup {
    type Result = ();
    fn handle(&mut self, _: StopGroup, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
