//! Tenant groups: one [`TenantGroup`] actor per tenant with connections on this node, holding
//! its local connections by user and role; it answers connection counts and "is this user online".
//!
//! The [`TenantRegistry`] routes to groups and owns their lifecycle: it counts joins and leaves
//! under one short lock (connect/disconnect only, never the fan-out path), starts a group on the
//! tenant's first connection and stops it after the last one leaves.
//!
//! Messages (who sends them, what they reply):
//! - [`Join`]: registry → group when a session opens; no reply.
//! - [`Leave`]: registry → group when a session closes; no reply.
//! - [`Snapshot`]: API → group; replies with connections and online users.
//! - [`IsOnline`]: API → group; replies whether a user has a connection here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::identity::Role;
use crate::ids::{ConnId, TenantKey, UserId};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metrics::Metrics;

/// A connection as its tenant group sees it.
#[derive(Clone, Debug)]
pub struct Member {
    pub conn: ConnId,
    pub user: UserId,
    pub role: Role,
}

/// Sent by the registry to a group when a session of the tenant opens.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join(pub Member);

/// Sent by the registry to a group when a session of the tenant closes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave(pub ConnId);

/// Asks a group for its connections and online users.
#[derive(Message)]
#[rtype(result = "TenantSnapshot")]
pub struct Snapshot;

/// Asks a group whether a user has at least one connection on this node.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsOnline(pub UserId);

/// One user's presence in a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub user_id: String,
    pub role: Role,
    pub connections: usize,
}

/// A tenant's local connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TenantSnapshot {
    pub connections: usize,
    pub users: Vec<UserPresence>,
}

/// One tenant's connections on this node.
pub struct TenantGroup {
    tenant: TenantKey,
    members: HashMap<ConnId, Member>,
    /// Connections per user, with the role of the user's latest connection.
    users: HashMap<UserId, (Role, usize)>,
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

impl Handler<Join> for TenantGroup {
    type Result = ();
    fn handle(&mut self, Join(m): Join, _: &mut Self::Context) {
        let entry = self.users.entry(m.user.clone()).or_insert((m.role, 0));
        entry.0 = m.role;
        entry.1 += 1;
        self.members.insert(m.conn, m);
    }
}

impl Handler<Leave> for TenantGroup {
    type Result = ();
    fn handle(&mut self, Leave(conn): Leave, _: &mut Self::Context) {
        if let Some(m) = self.members.remove(&conn) {
            if let Some(entry) = self.users.get_mut(&m.user) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.users.remove(&m.user);
                }
            }
        }
    }
}

impl Handler<Snapshot> for TenantGroup {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        let mut users: Vec<UserPresence> = self
            .users
            .iter()
            .map(|(u, (role, n))| UserPresence {
                user_id: u.to_string(),
                role: *role,
                connections: *n,
            })
            .collect();
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        MessageResult(TenantSnapshot {
            connections: self.members.len(),
            users,
        })
    }
}

impl Handler<IsOnline> for TenantGroup {
    type Result = bool;
    fn handle(&mut self, IsOnline(user): IsOnline, _: &mut Self::Context) -> bool {
        self.users.contains_key(&user)
    }
}

/// Why a tenant query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("the tenant group did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the tenant group stopped")]
    Stopped,
    #[error("tenant {tenant} has reached its limit of {limit} connections")]
    Quota { tenant: TenantKey, limit: usize },
}

struct Entry {
    group: Addr<TenantGroup>,
    connections: usize,
}

/// Routes to tenant groups and owns their lifecycle (see the module docs).
#[derive(Clone)]
pub struct TenantRegistry {
    groups: Arc<Mutex<HashMap<TenantKey, Entry>>>,
    limits: Arc<ActorLimits>,
    metrics: Arc<Metrics>,
    query_timeout: Duration,
}

impl TenantRegistry {
    pub fn new(limits: Arc<ActorLimits>, metrics: Arc<Metrics>, query_timeout: Duration) -> Self {
        Self {
            groups: Arc::default(),
            limits,
            metrics,
            query_timeout,
        }
    }

    /// Registers a connection with its tenant's group, starting the group if needed. Refuses when
    /// the tenant already has `max_connections` connections on this node.
    pub fn join(
        &self,
        tenant: &TenantKey,
        member: Member,
        max_connections: Option<usize>,
    ) -> Result<(), TenantError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(limit), Some(e)) = (max_connections, groups.get(tenant)) {
            if e.connections >= limit {
                return Err(TenantError::Quota {
                    tenant: tenant.clone(),
                    limit,
                });
            }
        }
        let entry = groups.entry(tenant.clone()).or_insert_with(|| Entry {
            group: TenantGroup {
                tenant: tenant.clone(),
                members: HashMap::new(),
                users: HashMap::new(),
                limits: self.limits.clone(),
                metrics: self.metrics.clone(),
            }
            .start(),
            connections: 0,
        });
        entry.connections += 1;
        // do_send: joins and leaves must never be lost; they are bounded by connections.
        entry.group.do_send(Join(member));
        Ok(())
    }

    /// Unregisters a connection; stops the group after its last connection.
    pub fn leave(&self, tenant: &TenantKey, conn: ConnId) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = groups.get_mut(tenant) else {
            return;
        };
        entry.group.do_send(Leave(conn));
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections == 0 {
            if let Some(e) = groups.remove(tenant) {
                // Queued after the Leave, so the group has settled when it stops.
                e.group.do_send(StopGroup);
            }
        }
    }

    fn group(&self, tenant: &TenantKey) -> Option<Addr<TenantGroup>> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.get(tenant).map(|e| e.group.clone())
    }

    async fn ask<M>(&self, group: Addr<TenantGroup>, msg: M) -> Result<M::Result, TenantError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        TenantGroup: Handler<M>,
    {
        group
            .send(msg)
            .timeout(self.query_timeout)
            .await
            .map_err(|e| match e {
                MailboxError::Timeout => TenantError::Timeout(self.query_timeout),
                MailboxError::Closed => TenantError::Stopped,
            })
    }

    /// The tenant's local connections and online users (empty when it has none here).
    pub async fn snapshot(&self, tenant: &TenantKey) -> Result<TenantSnapshot, TenantError> {
        match self.group(tenant) {
            Some(g) => self.ask(g, Snapshot).await,
            None => Ok(TenantSnapshot::default()),
        }
    }

    /// Whether `user` of `tenant` has a connection on this node.
    pub async fn is_online(&self, tenant: &TenantKey, user: &UserId) -> Result<bool, TenantError> {
        match self.group(tenant) {
            Some(g) => self.ask(g, IsOnline(user.clone())).await,
            None => Ok(false),
        }
    }

    /// Every tenant with connections here, with its connection count.
    pub fn tenants(&self) -> Vec<(TenantKey, usize)> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = groups
            .iter()
            .map(|(t, e)| (t.clone(), e.connections))
            .collect();
        out.sort();
        out
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
