//! Cluster-wide presence in Redis ([`RedisPresence`], the presence engine of cluster mode, and the
//! commands it runs): each node keeps its connections per tenant in a hash that
//! expires unless the node's heartbeat refreshes it, and a per-tenant count per user decides
//! "first connection anywhere" / "last connection anywhere". A node killed without warning is
//! removed by any other node's janitor once its heartbeat is older than `node_ttl`.
//!
//! Presence lives in *presence partitions* (`keys.rs`): one on a single Redis; on a Redis
//! Cluster a tenant's presence is in the partition its key hashes to, and each partition has its
//! own pending offlines, node tenant sets and heartbeats, so every script runs on one slot and
//! the partitions spread over the shards. A node beats into every partition (one small script
//! each, sent concurrently), and whatever walks the cluster (the heartbeat, the offline sweep, the
//! tenant listing, a graceful stop) does so partition by partition; a tenant's snapshot reads
//! its one partition.
//!
//! Redis decides "first connection anywhere" (announce `UserOnline` at once) and schedules
//! `UserOffline` after the grace period; the [`PresenceJanitor`] actor hands out the due ones
//! (each to exactly one node), refreshes this node's heartbeat, and removes the presence of nodes
//! that stopped beating (in the same script as the beat, so each dead node is removed once per
//! partition). It runs on its own timers; no messages from outside.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{join_all, BoxFuture};
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
        let q = k.presence_partition(tenant);
        let script = Script::new(scripts::PRESENCE_CONNECT);
        let mut inv = script.prepare_invoke();
        inv.key(k.presence_conns(tenant, self.node()))
            .key(k.presence_users(tenant))
            .key(k.node_tenants(q, self.node()))
            .key(k.presence_pending(q))
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
            .key(k.presence_pending(k.presence_partition(tenant)))
            .arg(conn.0)
            .arg(user.as_str())
            .arg(tenant.as_str())
            .arg(self.offline_due());
        let last: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(last == 1)
    }

    /// Runs `each` on every presence partition at once (on a cluster they are spread over the
    /// shards; the cluster connection sends each to its shard) and collects the results; the
    /// first error, if any, after every partition was tried.
    async fn per_partition<T, F, Fut>(&self, each: F) -> Result<Vec<T>, ClusterError>
    where
        F: Fn(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        join_all(self.keys().presence_partitions().map(each))
            .await
            .into_iter()
            .collect()
    }

    /// [`Self::per_partition`] for steps that take what they answer out of Redis (due
    /// `UserOffline`s, dead nodes): the partitions that answered are kept even when another
    /// failed (a shard failing over), since Redis no longer holds what they returned; a failed
    /// partition is logged and tried again on the next round.
    async fn per_partition_taken<T, F, Fut>(&self, what: &str, each: F) -> Vec<T>
    where
        F: Fn(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let mut taken = Vec::new();
        for (q, result) in join_all(self.keys().presence_partitions().map(each))
            .await
            .into_iter()
            .enumerate()
        {
            match result {
                Ok(t) => taken.push(t),
                Err(e) => log::warn!("presence {what}: partition {q} failed: {e}; next round"),
            }
        }
        taken
    }

    /// Takes the UserOffline announcements that are due, in every presence partition (each
    /// goes to exactly one caller).
    pub async fn presence_due(&self) -> Result<Vec<(TenantKey, String)>, ClusterError> {
        let now = now_millis();
        let script = &Script::new(scripts::PRESENCE_DUE);
        let per = self
            .per_partition_taken("offline sweep", |q| async move {
                let k = self.keys();
                let mut inv = script.prepare_invoke();
                inv.key(k.presence_pending(q))
                    .arg(now)
                    .arg(k.presence_stem(q));
                self.run(|mut c| async move { inv.invoke_async::<Vec<String>>(&mut c).await })
                    .await
            })
            .await;
        Ok(per
            .iter()
            .flat_map(|flat| flat.chunks(2))
            .filter_map(|p| Some((TenantKey::parse(&p[0]).ok()?, p.get(1)?.clone())))
            .collect())
    }

    /// This node's heartbeat in every presence partition (refreshing its presence's
    /// time-to-live there), and the removal of the nodes that stopped beating: returns each
    /// removed node with the connections removed with it.
    pub async fn heartbeat(&self) -> Result<HashMap<NodeId, u64>, ClusterError> {
        let now = now_millis();
        let dead_before = now.saturating_sub(self.config().node_ttl.as_millis() as u64);
        let (ttl, due) = (self.presence_data_ttl_ms(), self.offline_due());
        let script = &Script::new(scripts::PRESENCE_BEAT);
        let per = self
            .per_partition_taken("heartbeat", |q| async move {
                let k = self.keys();
                let mut inv = script.prepare_invoke();
                inv.key(k.nodes(q))
                    .key(k.presence_pending(q))
                    .key(k.node_tenants(q, self.node()))
                    .arg(k.presence_stem(q))
                    .arg(self.node().0.as_ref())
                    .arg(now)
                    .arg(ttl)
                    .arg(dead_before)
                    .arg(due);
                self.run(
                    |mut c| async move { inv.invoke_async::<Vec<(String, u64)>>(&mut c).await },
                )
                .await
            })
            .await;
        let mut removed = HashMap::new();
        for (node, n) in per.into_iter().flatten() {
            *removed.entry(NodeId(node.into())).or_default() += n;
        }
        Ok(removed)
    }

    /// Nodes of presence partition `q` whose heartbeat is within `node_ttl`.
    pub(super) async fn live_nodes(&self, q: u32) -> Result<Vec<NodeId>, ClusterError> {
        let key = self.keys().nodes(q);
        let since = now_millis().saturating_sub(self.config().node_ttl.as_millis() as u64);
        let nodes: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg(since)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(nodes.into_iter().map(|n| NodeId(n.into())).collect())
    }

    /// Every tenant with connections on a live node (the union, over the presence partitions,
    /// of the live nodes' tenant sets there).
    pub async fn presence_tenants(&self) -> Result<Vec<TenantKey>, ClusterError> {
        let per = self
            .per_partition(|q| async move {
                let nodes = self.live_nodes(q).await?;
                if nodes.is_empty() {
                    return Ok(Vec::new());
                }
                let keys: Vec<String> = nodes
                    .iter()
                    .map(|n| self.keys().node_tenants(q, n))
                    .collect();
                self.run(|mut c| async move {
                    redis::cmd("SUNION")
                        .arg(keys)
                        .query_async::<Vec<String>>(&mut c)
                        .await
                })
                .await
            })
            .await?;
        let mut tenants: Vec<TenantKey> = per
            .into_iter()
            .flatten()
            .filter_map(|t| TenantKey::parse(&t).ok())
            .collect();
        tenants.sort();
        Ok(tenants)
    }

    /// Removes this node's presence and heartbeat from every presence partition (its graceful
    /// stop); returns how many connections went with it.
    pub async fn drop_own_presence(&self) -> Result<u64, ClusterError> {
        let due = self.offline_due();
        let script = &Script::new(scripts::PRESENCE_DROP_NODE);
        let per = self
            .per_partition(|q| async move {
                let k = self.keys();
                let mut inv = script.prepare_invoke();
                inv.key(k.nodes(q))
                    .key(k.presence_pending(q))
                    .arg(k.presence_stem(q))
                    .arg(self.node().0.as_ref())
                    .arg(due);
                self.run(|mut c| async move { inv.invoke_async::<u64>(&mut c).await })
                    .await
            })
            .await?;
        Ok(per.into_iter().sum())
    }

    /// A tenant's connections and online users across every live node (all in the tenant's
    /// presence partition).
    pub async fn presence_snapshot(
        &self,
        tenant: &TenantKey,
    ) -> Result<TenantSnapshot, ClusterError> {
        let nodes = self
            .live_nodes(self.keys().presence_partition(tenant))
            .await?;
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
            match cluster.drop_own_presence().await {
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
            for (node, n) in cluster.heartbeat().await? {
                log::info!(
                    "presence: node {node} missed its heartbeats; removed its {n} connections"
                );
                // Its listener marks too (existence checks ignore a dead node's marks already;
                // this keeps them from piling up). Several nodes may do this for one death.
                match cluster.unmark_node(&node).await {
                    Ok(0) => {}
                    Ok(m) => log::info!("node {node}: removed its {m} listener marks"),
                    Err(e) => log::warn!("node {node}: listener marks not removed: {e}"),
                }
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
