//! Tenant groups: one [`TenantGroup`] actor per tenant with connections on this node, holding
//! its local connections by user and role; it answers connection counts and "is this user online".
//!
//! The [`TenantRegistry`] routes to groups and owns their lifecycle: it counts joins and leaves
//! under one short lock (connect/disconnect only, never the fan-out path), starts a group on the
//! tenant's first connection and stops it after the last one leaves. It also announces presence
//! on `tenant:{t}:admins`: `UserOnline` for a user's first connection, `UserOffline` once the last
//! one has stayed closed for the grace period (a quick reconnect announces nothing). In cluster
//! mode "first" and "last" are cluster-wide, decided by Redis ([`crate::cluster::presence`]).
//!
//! Messages (who sends them, what they reply):
//! - [`Join`]: registry → group when a session opens; no reply.
//! - [`Leave`]: registry → group when a session closes; no reply.
//! - [`Snapshot`]: API → group; replies with connections and online users.
//! - [`IsOnline`]: API → group; replies whether a user has a connection here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::broker::BrokerHandle;
use crate::identity::Role;
use crate::ids::{ConnId, TenantKey, UserId};
use crate::mailbox::{ActorKind, ActorLimits};
use crate::metrics::Metrics;
use crate::presence_hook::{PresenceChange, PresenceHook, USER_OFFLINE, USER_ONLINE};
use crate::redis_bridge::presence_event;

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

impl Handler<IsOnline> for TenantGroup {
    type Result = bool;
    fn handle(&mut self, IsOnline(user): IsOnline, _: &mut Self::Context) -> bool {
        self.members.values().any(|m| m.user == user)
    }
}

/// Why a tenant query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("the tenant group did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the tenant group stopped")]
    Stopped,
    #[error("cluster presence is unavailable: {0}")]
    Unavailable(String),
    #[error("tenant {tenant} has reached its limit of {limit} connections")]
    Quota { tenant: TenantKey, limit: usize },
}

struct Entry {
    group: Addr<TenantGroup>,
    connections: usize,
    /// Local connections per user, deciding UserOnline/UserOffline in embedded mode.
    users: HashMap<UserId, usize>,
}

#[derive(Default)]
struct Registry {
    tenants: HashMap<TenantKey, Entry>,
    /// Embedded mode: users whose UserOffline waits out the grace period.
    pending_offline: HashSet<(TenantKey, UserId)>,
}

/// Routes to tenant groups, owns their lifecycle and announces presence (see the module docs).
#[derive(Clone)]
pub struct TenantRegistry {
    inner: Arc<Mutex<Registry>>,
    limits: Arc<ActorLimits>,
    metrics: Arc<Metrics>,
    query_timeout: Duration,
    broker: BrokerHandle,
    offline_grace: Duration,
    /// Told about every announcement (the chat service relays them to conversation partners).
    presence_hook: PresenceHook,
}

impl TenantRegistry {
    pub fn new(
        limits: Arc<ActorLimits>,
        metrics: Arc<Metrics>,
        query_timeout: Duration,
        broker: BrokerHandle,
        offline_grace: Duration,
    ) -> Self {
        Self {
            inner: Arc::default(),
            limits,
            metrics,
            query_timeout,
            broker,
            offline_grace,
            presence_hook: PresenceHook::default(),
        }
    }

    /// The registry telling `hook` about each presence announcement it makes.
    pub fn with_presence_hook(mut self, hook: PresenceHook) -> Self {
        self.presence_hook = hook;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn announce(&self, tenant: &TenantKey, event: &'static str, user: &UserId, role: Option<Role>) {
        let draft = presence_event(tenant, event, user.as_str(), role.map(Role::as_str));
        self.presence_hook.announce(PresenceChange {
            tenant: tenant.clone(),
            user: user.clone(),
            online: event == USER_ONLINE,
            role,
        });
        let broker = self.broker.clone();
        let metrics = self.metrics.clone();
        actix::spawn(async move {
            match broker.publish(draft).await {
                Ok(_) => metrics.published.with_label_values(&["presence"]).inc(),
                Err(e) => log::warn!("{event} not published: {e}"),
            }
        });
    }

    /// Registers a connection with its tenant's group, starting the group if needed, and
    /// announces UserOnline for the user's first connection. Refuses when the tenant already has
    /// `max_connections` connections on this node.
    pub fn join(
        &self,
        tenant: &TenantKey,
        member: Member,
        max_connections: Option<usize>,
    ) -> Result<(), TenantError> {
        let (user, role, conn) = (member.user.clone(), member.role, member.conn);
        let first_here = {
            let mut reg = self.lock();
            if let (Some(limit), Some(e)) = (max_connections, reg.tenants.get(tenant)) {
                if e.connections >= limit {
                    return Err(TenantError::Quota {
                        tenant: tenant.clone(),
                        limit,
                    });
                }
            }
            let entry = reg.tenants.entry(tenant.clone()).or_insert_with(|| Entry {
                group: TenantGroup {
                    tenant: tenant.clone(),
                    members: HashMap::new(),
                    limits: self.limits.clone(),
                    metrics: self.metrics.clone(),
                }
                .start(),
                connections: 0,
                users: HashMap::new(),
            });
            entry.connections += 1;
            let n = entry.users.entry(user.clone()).or_insert(0);
            *n += 1;
            let first = *n == 1;
            // do_send: joins and leaves must never be lost; they are bounded by connections.
            entry.group.do_send(Join(member));
            // A return within the grace period cancels the pending UserOffline: no flapping.
            first && !reg.pending_offline.remove(&(tenant.clone(), user.clone()))
        };
        match self.broker.cluster() {
            None if first_here => self.announce(tenant, USER_ONLINE, &user, Some(role)),
            None => {}
            Some(link) => {
                let (cluster, this, tenant) = (link.cluster.clone(), self.clone(), tenant.clone());
                actix::spawn(async move {
                    match cluster.presence_connect(&tenant, conn, &user, role).await {
                        Ok(true) => this.announce(&tenant, USER_ONLINE, &user, Some(role)),
                        Ok(false) => {}
                        Err(e) => log::warn!("presence of {user} in {tenant} not recorded: {e}"),
                    }
                });
            }
        }
        Ok(())
    }

    /// Unregisters a connection; stops the group after its last connection; schedules UserOffline
    /// after the grace period for the user's last connection.
    pub fn leave(&self, tenant: &TenantKey, conn: ConnId, user: &UserId) {
        let last_here = {
            let mut reg = self.lock();
            let Some(entry) = reg.tenants.get_mut(tenant) else {
                return;
            };
            entry.group.do_send(Leave(conn));
            entry.connections = entry.connections.saturating_sub(1);
            let last = match entry.users.get_mut(user) {
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
                if let Some(e) = reg.tenants.remove(tenant) {
                    // Queued after the Leave, so the group has settled when it stops.
                    e.group.do_send(StopGroup);
                }
            }
            if last && self.broker.cluster().is_none() {
                reg.pending_offline.insert((tenant.clone(), user.clone()));
            }
            last
        };
        match self.broker.cluster() {
            None if last_here => {
                let (this, tenant, user) = (self.clone(), tenant.clone(), user.clone());
                actix::spawn(async move {
                    tokio::time::sleep(this.offline_grace).await;
                    let due = this
                        .lock()
                        .pending_offline
                        .remove(&(tenant.clone(), user.clone()));
                    if due {
                        this.announce(&tenant, USER_OFFLINE, &user, None);
                    }
                });
            }
            None => {}
            Some(link) => {
                let (cluster, tenant, user) = (link.cluster.clone(), tenant.clone(), user.clone());
                // The UserOffline, if due, is announced by a node's presence sweep.
                actix::spawn(async move {
                    if let Err(e) = cluster.presence_disconnect(&tenant, conn, &user).await {
                        log::warn!("presence of {user} in {tenant} not removed: {e}");
                    }
                });
            }
        }
    }

    fn group(&self, tenant: &TenantKey) -> Option<Addr<TenantGroup>> {
        self.lock().tenants.get(tenant).map(|e| e.group.clone())
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

    /// The tenant's connections and online users: cluster-wide in cluster mode, else this
    /// node's (empty when it has none here).
    pub async fn snapshot(&self, tenant: &TenantKey) -> Result<TenantSnapshot, TenantError> {
        if let Some(link) = self.broker.cluster() {
            return link
                .cluster
                .presence_snapshot(tenant)
                .await
                .map_err(|e| TenantError::Unavailable(e.to_string()));
        }
        match self.group(tenant) {
            Some(g) => self.ask(g, Snapshot).await,
            None => Ok(TenantSnapshot::default()),
        }
    }

    /// Whether `user` of `tenant` has a connection (anywhere in the cluster, in cluster mode).
    pub async fn is_online(&self, tenant: &TenantKey, user: &UserId) -> Result<bool, TenantError> {
        if self.broker.cluster().is_some() {
            let snap = self.snapshot(tenant).await?;
            return Ok(snap.users.iter().any(|u| u.user_id == user.as_str()));
        }
        match self.group(tenant) {
            Some(g) => self.ask(g, IsOnline(user.clone())).await,
            None => Ok(false),
        }
    }

    /// Every tenant with connections: cluster-wide in cluster mode, else on this node.
    pub async fn tenant_keys(&self) -> Result<Vec<TenantKey>, TenantError> {
        match self.broker.cluster() {
            Some(link) => link
                .cluster
                .presence_tenants()
                .await
                .map_err(|e| TenantError::Unavailable(e.to_string())),
            None => Ok(self.tenants().into_iter().map(|(t, _)| t).collect()),
        }
    }

    /// Every tenant with connections on this node, with its connection count.
    pub fn tenants(&self) -> Vec<(TenantKey, usize)> {
        let mut out: Vec<_> = self
            .lock()
            .tenants
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
