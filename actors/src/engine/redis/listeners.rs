//! Whether any node listens to a channel: what the Azure-compatible API's existence checks (a
//! connection, a group, a user) ask beyond this node ([`Cluster::listened`]).
//!
//! On a single Redis a node's bridge holds a classic `SUBSCRIBE` per channel with local
//! subscribers, so `PUBSUB NUMSUB` of the channel's pub/sub channel answers. On a Redis Cluster
//! that does not work: nodes `SSUBSCRIBE` per partition (many channels share one), `PUBSUB NUMSUB`
//! does not count sharded subscriptions, and each shard knows only its own. So there each node
//! marks the channels it has local subscribers to: its id in the set
//! `{prefix}:{p<n>}:<channel>:listeners` (the channel's own hash tag, so the mark lives on the
//! channel's shard), added on the node's first local subscriber and removed after its last —
//! exactly the bridge's listen/unlisten transitions ([`ListenerMarks`]); the bridge confirms a
//! channel's subscription only once its mark is written. The bridge marks every
//! channel again after each (re)connection, because a failover can lose marks the old master had
//! not replicated yet. A check reads the set and counts only live nodes ([`Cluster::live_nodes`],
//! the heartbeats): a node killed without unmarking is ignored once it is declared dead. Each
//! node also keeps, per partition, the set of channels it marked there
//! (`{prefix}:{p<n>}:node:<node>:listening`, written in the same script as the mark), so the
//! node that finds a node dead (the presence janitor) removes its marks ([`Cluster::unmark_node`]),
//! and a node removes its own id's marks when it starts, before it marks anything (a restart with
//! the same `node.id` before anyone found it dead would otherwise keep its previous run's).

use std::collections::HashMap;
use std::sync::LazyLock;

use tokio::sync::mpsc;

use redis::Script;

use super::{scripts, Cluster, ClusterError};
use crate::channel::ChannelName;
use crate::ids::NodeId;

/// Hashed once: a mark is written on every channel's first and last local subscriber.
static MARK_LISTENING: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::MARK_LISTENING));
static UNMARK_NODE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::UNMARK_NODE));

impl Cluster {
    /// Whether any node has a local subscriber to `channel` (see the module docs).
    pub async fn listened(&self, channel: &ChannelName) -> Result<bool, ClusterError> {
        if self.keys().sharded() {
            return self.marked_by_a_live_node(channel).await;
        }
        let key = self.keys().pubsub(channel.as_str());
        let counts: Vec<(String, u64)> = self
            .run(|mut conn| async move {
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(counts.iter().any(|(_, n)| *n > 0))
    }

    /// Redis Cluster: whether a live node marked `channel` as listened to.
    async fn marked_by_a_live_node(&self, channel: &ChannelName) -> Result<bool, ClusterError> {
        let key = self.keys().listeners(channel);
        let marked: Vec<String> = self
            .run(|mut conn| async move {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if marked.is_empty() {
            return Ok(false);
        }
        // The one place existence checks ask which nodes are alive. Every node beats into each
        // presence partition, so any one answers; the channel's own number spreads the reads.
        let k = self.keys();
        let q = k.partition(channel) % k.presence_partitions().end.max(1);
        let live = self.live_nodes(q).await?;
        Ok(marked.iter().any(|m| live.iter().any(|n| *n.0 == **m)))
    }

    /// Marks (or unmarks) this node as listening to `channel` (Redis Cluster layout).
    async fn mark_listening(
        &self,
        channel: &ChannelName,
        listening: bool,
    ) -> Result<(), ClusterError> {
        let k = self.keys();
        let mut inv = MARK_LISTENING.prepare_invoke();
        inv.key(k.listeners(channel))
            .key(k.node_listening(k.partition(channel), self.node()))
            .arg(self.node().0.as_ref())
            .arg(channel.as_str())
            .arg(if listening { "1" } else { "0" });
        self.run(|mut conn| async move { inv.invoke_async::<()>(&mut conn).await })
            .await
    }

    /// Removes the listener marks of `node`, found dead, from every partition (Redis Cluster
    /// layout; nothing to do on a single Redis). Idempotent: every node that saw it die may ask.
    /// Returns how many marks it had.
    pub async fn unmark_node(&self, node: &NodeId) -> Result<u64, ClusterError> {
        if !self.keys().sharded() {
            return Ok(0);
        }
        let k = self.keys();
        let per = futures_util::future::try_join_all(k.channel_partitions().map(|p| {
            let mut inv = UNMARK_NODE.prepare_invoke();
            inv.key(k.node_listening(p, node))
                .arg(node.0.as_ref())
                .arg(k.partition_stem(p));
            self.run(|mut conn| async move { inv.invoke_async::<u64>(&mut conn).await })
        }))
        .await?;
        Ok(per.into_iter().sum())
    }
}

/// The bridge's side of the marks (Redis Cluster layout): it queues each listen/unlisten
/// transition here, and one writer task applies them in order — a channel left right after it
/// was listened to must end unmarked, which two concurrent writes could not promise.
pub struct ListenerMarks {
    queue: mpsc::UnboundedSender<(ChannelName, bool)>,
}

impl ListenerMarks {
    /// The marks and their writer, to run until the bridge stops. `marked` is told each channel
    /// whose mark is now in Redis (the bridge confirms a subscription only then, so a connected
    /// client exists for every node's check at once, as on one Redis).
    pub fn start(
        cluster: Cluster,
        marked: impl Fn(ChannelName) + 'static,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (queue, rx) = mpsc::unbounded_channel();
        (Self { queue }, write_marks(cluster, rx, marked))
    }

    /// Queues this node's mark of `channel`: set while `listening`, removed otherwise.
    pub fn set(&self, channel: ChannelName, listening: bool) {
        // The writer lives as long as the bridge that holds this.
        let _ = self.queue.send((channel, listening));
    }
}

/// Applies queued marks; of several queued for one channel only the last counts. A failed write
/// is retried with back-off (unless a later one for its channel supersedes it), so a mark is
/// never left behind because Redis was briefly unreachable.
async fn write_marks(
    cluster: Cluster,
    mut rx: mpsc::UnboundedReceiver<(ChannelName, bool)>,
    marked: impl Fn(ChannelName),
) {
    let mut pending: HashMap<ChannelName, bool> = HashMap::new();
    let mut delay = cluster.config().reconnect_min;
    // A previous life of this node id (a crash, then a restart before any node found it dead:
    // a fixed `node.id`, as a StatefulSet gives) left its marks, of channels this life does not
    // listen to; live again, it would count for them. They go before this life marks anything.
    loop {
        match cluster.unmark_node(cluster.node()).await {
            Ok(left) => {
                if left > 0 {
                    log::info!(
                        "listener marks: removed {left} left by this node id's previous run"
                    );
                }
                break;
            }
            Err(e) => {
                log::warn!("listener marks: clearing this node id's previous marks: {e}; retried in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(cluster.config().reconnect_max);
            }
        }
    }
    delay = cluster.config().reconnect_min;
    loop {
        if pending.is_empty() {
            let Some((channel, listening)) = rx.recv().await else {
                return;
            };
            pending.insert(channel, listening);
        }
        while let Ok((channel, listening)) = rx.try_recv() {
            pending.insert(channel, listening);
        }
        // One write per channel, all in flight at once (different channels: their order does
        // not matter; one channel's later change waits for the next round).
        let batch: Vec<(ChannelName, bool)> = pending.drain().collect();
        let results = futures_util::future::join_all(
            batch
                .iter()
                .map(|(channel, listening)| cluster.mark_listening(channel, *listening)),
        )
        .await;
        let mut failed: Option<ClusterError> = None;
        for ((channel, listening), result) in batch.into_iter().zip(results) {
            match result {
                Ok(()) if listening => marked(channel),
                Ok(()) => {}
                Err(e) => {
                    // A later change queued meanwhile supersedes this one.
                    pending.entry(channel).or_insert(listening);
                    failed = Some(e);
                }
            }
        }
        match failed {
            None => delay = cluster.config().reconnect_min,
            Some(e) => {
                log::warn!(
                    "listener marks: {e}; {} channels retried in {delay:?}",
                    pending.len()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(cluster.config().reconnect_max);
            }
        }
    }
}
