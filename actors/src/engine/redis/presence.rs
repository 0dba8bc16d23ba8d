//! Cluster-wide presence in Redis ([`RedisPresence`], the presence engine of cluster mode, and the
//! commands it runs): each node keeps its connections per tenant in a hash that
//! expires unless the node's heartbeat refreshes it, and a per-tenant count per user decides
//! "first connection anywhere" / "last connection anywhere". A node killed without warning is
//! removed by any other node's janitor once its heartbeat is older than `node_ttl`.
//!
//! Redis decides "first connection anywhere" (announce `UserOnline` at once) and schedules
//! `UserOffline` after the grace period; the [`PresenceJanitor`] actor hands out the due ones
//! (each to exactly one node), refreshes this node's heartbeat, and removes the presence of nodes
//! that stopped beating. It runs on its own timers; no messages from outside.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::Script;

use super::{scripts, Cluster, ClusterError};
use crate::envelope::now_millis;
use crate::identity::Role;
use crate::ids::{ConnId, NodeId, TenantKey, UserId};
use crate::presence::{
    Announcer, PresenceChange, PresenceEngine, TenantError, TenantSnapshot, UserPresence,
};
use crate::shutdown::Shutdown;

/// A node's presence data outlives the moment it is declared dead by this factor, so the janitor
/// that declares it dead still finds what to remove (and whom to announce offline).
const DATA_TTL_FACTOR: u32 = 3;

impl Cluster {
    fn presence_data_ttl_ms(&self) -> u64 {
        (self.config().node_ttl * DATA_TTL_FACTOR).as_millis() as u64
    }

    /// Registers a connection; true when it is the user's first anywhere (announce UserOnline).
    pub async fn presence_connect(
        &self,
        tenant: &TenantKey,
        conn: ConnId,
        user: &UserId,
        role: Role,
    ) -> Result<bool, ClusterError> {
        let k = self.keys();
        let script = Script::new(scripts::PRESENCE_CONNECT);
        let mut inv = script.prepare_invoke();
        inv.key(k.presence_conns(tenant, self.node()))
            .key(k.presence_users(tenant))
            .key(k.node_tenants(self.node()))
            .key(k.presence_pending())
            .arg(conn.0)
            .arg(user.as_str())
            .arg(role.as_str())
            .arg(tenant.as_str())
            .arg(self.presence_data_ttl_ms());
        let first: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(first == 1)
    }

    /// When a UserOffline scheduled now would be due.
    fn offline_due(&self) -> u64 {
        now_millis() + self.config().offline_grace.as_millis() as u64
    }

    /// Unregisters a connection; true when it was the user's last anywhere (a UserOffline is
    /// scheduled after the grace period; [`Cluster::presence_due`] hands it out).
    pub async fn presence_disconnect(
        &self,
        tenant: &TenantKey,
        conn: ConnId,
        user: &UserId,
    ) -> Result<bool, ClusterError> {
        let k = self.keys();
        let script = Script::new(scripts::PRESENCE_DISCONNECT);
        let mut inv = script.prepare_invoke();
        inv.key(k.presence_conns(tenant, self.node()))
            .key(k.presence_users(tenant))
            .key(k.presence_pending())
            .arg(conn.0)
            .arg(user.as_str())
            .arg(tenant.as_str())
            .arg(self.offline_due());
        let last: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(last == 1)
    }

    /// Takes the UserOffline announcements that are due (each goes to exactly one caller).
    pub async fn presence_due(&self) -> Result<Vec<(TenantKey, String)>, ClusterError> {
        let k = self.keys();
        let script = Script::new(scripts::PRESENCE_DUE);
        let mut inv = script.prepare_invoke();
        inv.key(k.presence_pending())
            .arg(now_millis())
            .arg(k.meta_prefix());
        let flat: Vec<String> = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(flat
            .chunks(2)
            .filter_map(|p| Some((TenantKey::parse(&p[0]).ok()?, p.get(1)?.clone())))
            .collect())
    }

    /// Refreshes this node's heartbeat and its presence hashes' time-to-live.
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        let k = self.keys().clone();
        let node = self.node().clone();
        let ttl = self.presence_data_ttl_ms() as i64;
        self.run(|mut c| async move {
            let tenants: Vec<String> = redis::cmd("SMEMBERS")
                .arg(k.node_tenants(&node))
                .query_async(&mut c)
                .await?;
            let mut pipe = redis::pipe();
            pipe.zadd(k.nodes(), node.0.as_ref(), now_millis()).ignore();
            pipe.pexpire(k.node_tenants(&node), ttl).ignore();
            for t in tenants {
                if let Ok(t) = TenantKey::parse(&t) {
                    pipe.pexpire(k.presence_conns(&t, &node), ttl).ignore();
                }
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Nodes whose heartbeat is within `node_ttl`.
    pub async fn live_nodes(&self) -> Result<Vec<NodeId>, ClusterError> {
        let k = self.keys().clone();
        let since = now_millis().saturating_sub(self.config().node_ttl.as_millis() as u64);
        let nodes: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(k.nodes())
                    .arg(since)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(nodes.into_iter().map(|n| NodeId(n.into())).collect())
    }

    /// Every tenant with connections on a live node (the union of the nodes' tenant sets).
    pub async fn presence_tenants(&self) -> Result<Vec<TenantKey>, ClusterError> {
        let nodes = self.live_nodes().await?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes.iter().map(|n| self.keys().node_tenants(n)).collect();
        let mut tenants: Vec<String> = self
            .run(|mut c| {
                let keys = keys.clone();
                async move { redis::cmd("SUNION").arg(keys).query_async(&mut c).await }
            })
            .await?;
        tenants.sort();
        Ok(tenants
            .into_iter()
            .filter_map(|t| TenantKey::parse(&t).ok())
            .collect())
    }

    /// Removes a node's presence and its entry; returns how many connections went with it.
    /// Only the caller whose `ZREM` removed a dead node does the work, so it happens once.
    pub async fn drop_node(&self, node: &NodeId) -> Result<u64, ClusterError> {
        let k = self.keys().clone();
        let n = node.clone();
        let removed: i64 = self
            .run(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(k.nodes())
                    .arg(n.0.as_ref())
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if removed == 0 && node != self.node() {
            return Ok(0);
        }
        let k = self.keys();
        let script = Script::new(scripts::PRESENCE_DROP_NODE);
        let mut inv = script.prepare_invoke();
        inv.key(k.node_tenants(node))
            .key(k.presence_pending())
            .arg(k.meta_prefix())
            .arg(node.0.as_ref())
            .arg(self.offline_due());
        self.run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// Nodes whose heartbeat is older than `node_ttl`.
    pub async fn dead_nodes(&self) -> Result<Vec<NodeId>, ClusterError> {
        let k = self.keys().clone();
        let before = now_millis().saturating_sub(self.config().node_ttl.as_millis() as u64);
        let nodes: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(k.nodes())
                    .arg("-inf")
                    .arg(format!("({before}"))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(nodes.into_iter().map(|n| NodeId(n.into())).collect())
    }

    /// A tenant's connections and online users across every live node.
    pub async fn presence_snapshot(
        &self,
        tenant: &TenantKey,
    ) -> Result<TenantSnapshot, ClusterError> {
        let nodes = self.live_nodes().await?;
        let k = self.keys().clone();
        let t = tenant.clone();
        let hashes: Vec<Vec<(String, String)>> = self
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for n in &nodes {
                    pipe.hgetall(k.presence_conns(&t, n));
                }
                pipe.query_async(&mut c).await
            })
            .await?;
        let mut users: BTreeMap<String, (Role, usize)> = BTreeMap::new();
        let mut connections = 0;
        for (_, entry) in hashes.into_iter().flatten() {
            let (user, role) = entry
                .split_once('\t')
                .unwrap_or((entry.as_str(), "Customer"));
            let role = role.parse().unwrap_or(Role::Customer);
            connections += 1;
            let e = users.entry(user.to_owned()).or_insert((role, 0));
            e.1 += 1;
        }
        Ok(TenantSnapshot {
            connections,
            users: users
                .into_iter()
                .map(|(user_id, (role, connections))| UserPresence {
                    user_id,
                    role,
                    connections,
                })
                .collect(),
        })
    }
}

/// The shortest interval of the offline sweep, however short the grace period.
const MIN_SWEEP: Duration = Duration::from_millis(50);

/// Cluster-wide presence (see the module docs).
pub struct RedisPresence {
    cluster: Cluster,
    announcer: Announcer,
    _janitor: Addr<PresenceJanitor>,
}

impl RedisPresence {
    /// Starts the janitor on the current arbiter; it stops when `shutdown` is signalled (hold
    /// it, so the shutdown waits for the janitor).
    pub fn start(cluster: Cluster, announcer: Announcer, shutdown: Shutdown) -> Self {
        let janitor = PresenceJanitor {
            cluster: cluster.clone(),
            announcer: announcer.clone(),
            shutdown,
        }
        .start();
        Self {
            cluster,
            announcer,
            _janitor: janitor,
        }
    }
}

fn unavailable(e: ClusterError) -> TenantError {
    TenantError::Unavailable(e.to_string())
}

impl PresenceEngine for RedisPresence {
    fn joined(&self, tenant: &TenantKey, conn: ConnId, user: &UserId, role: Role, _: bool) {
        let (cluster, announcer) = (self.cluster.clone(), self.announcer.clone());
        let (tenant, user) = (tenant.clone(), user.clone());
        actix::spawn(async move {
            match cluster.presence_connect(&tenant, conn, &user, role).await {
                Ok(true) => announcer.announce(PresenceChange {
                    tenant,
                    user,
                    online: true,
                    role: Some(role),
                }),
                Ok(false) => {}
                Err(e) => log::warn!("presence of {user} in {tenant} not recorded: {e}"),
            }
        });
    }

    fn left(&self, tenant: &TenantKey, conn: ConnId, user: &UserId, _: bool) {
        let cluster = self.cluster.clone();
        let (tenant, user) = (tenant.clone(), user.clone());
        // The UserOffline, if due, is announced by a node's janitor.
        actix::spawn(async move {
            if let Err(e) = cluster.presence_disconnect(&tenant, conn, &user).await {
                log::warn!("presence of {user} in {tenant} not removed: {e}");
            }
        });
    }

    fn snapshot(
        &self,
        tenant: &TenantKey,
    ) -> BoxFuture<'static, Result<TenantSnapshot, TenantError>> {
        let (cluster, tenant) = (self.cluster.clone(), tenant.clone());
        async move {
            cluster
                .presence_snapshot(&tenant)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn tenant_keys(&self) -> BoxFuture<'static, Result<Vec<TenantKey>, TenantError>> {
        let cluster = self.cluster.clone();
        async move { cluster.presence_tenants().await.map_err(unavailable) }.boxed()
    }

    fn node_stopping(&self) -> BoxFuture<'static, ()> {
        let cluster = self.cluster.clone();
        async move {
            match cluster.drop_node(cluster.node()).await {
                Ok(n) => log::info!("presence: removed this node's {n} connections"),
                Err(e) => log::warn!("presence: could not remove this node's connections: {e}"),
            }
        }
        .boxed()
    }
}

/// Refreshes this node's heartbeat, removes dead nodes' presence and announces due
/// `UserOffline`s (see the module docs).
pub struct PresenceJanitor {
    cluster: Cluster,
    announcer: Announcer,
    /// No heartbeat after the signal: one would put the node back in the cluster's node list
    /// after its shutdown took it out.
    shutdown: Shutdown,
}

impl PresenceJanitor {
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_shutdown() {
            return;
        }
        let cluster = self.cluster.clone();
        let fut = async move {
            cluster.heartbeat().await?;
            for node in cluster.dead_nodes().await? {
                let n = cluster.drop_node(&node).await?;
                log::info!(
                    "presence: node {node} missed its heartbeats; removed its {n} connections"
                );
            }
            Ok::<_, ClusterError>(())
        };
        ctx.spawn(fut.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                log::debug!("presence heartbeat failed: {e}");
            }
        }));
    }

    /// Announces the UserOffline events that are due (one node takes each).
    fn announce_offline(&mut self, ctx: &mut Context<Self>) {
        let (cluster, announcer) = (self.cluster.clone(), self.announcer.clone());
        let fut = async move {
            for (tenant, user) in cluster.presence_due().await? {
                match UserId::parse(&user) {
                    Ok(user) => announcer.announce(PresenceChange {
                        tenant,
                        user,
                        online: false,
                        role: None,
                    }),
                    Err(e) => log::warn!("presence: unusable user id {user:?} in {tenant}: {e}"),
                }
            }
            Ok::<_, ClusterError>(())
        };
        ctx.spawn(fut.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                log::debug!("presence sweep failed: {e}");
            }
        }));
    }
}

impl Actor for PresenceJanitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let beat = self.cluster.config().heartbeat;
        self.heartbeat(ctx);
        ctx.run_interval(beat, |act, ctx| act.heartbeat(ctx));
        let sweep = (self.cluster.config().offline_grace / 2).max(MIN_SWEEP);
        ctx.run_interval(sweep, |act, ctx| act.announce_offline(ctx));
        let signalled = self.shutdown.signalled();
        ctx.spawn(
            actix::fut::wrap_future(signalled).map(|_, _, ctx: &mut Context<Self>| ctx.stop()),
        );
    }
}
