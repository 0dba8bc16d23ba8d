//! Every Redis key and pub/sub channel name, built from the configured prefix in one place
//! (documented in `docs/cluster.md`), in one of two layouts:
//!
//! - **single Redis**: a channel's keys share the hash tag `{<channel>}`; its pub/sub channel is
//!   `{prefix}:ch:{channel}` (classic `PUBLISH`/`SUBSCRIBE`). Presence and heartbeats are one
//!   presence partition whose keys start `<prefix>:` (unchanged from earlier versions).
//! - **Redis Cluster**: channels map to `redis.cluster_partitions` partitions by a stable hash
//!   ([`partition_of`]); a partition's sharded pub/sub channel and every key that changes with a
//!   publish (offset, epoch, history, idempotency marks) share the hash tag `{p<n>}`, so the
//!   publish script is one atomic step on one shard and a node holds one `SSUBSCRIBE` per
//!   partition it listens to. A channel's listener marks (which nodes have local subscribers,
//!   for existence checks: sharded subscriptions are invisible to `PUBSUB NUMSUB`) share that
//!   hash tag too. Presence is spread the same way, by tenant, over as many *presence
//!   partitions*: every key a presence script touches for a tenant (its connections per node,
//!   its user counts, the node's tenants, pending offlines, the nodes' heartbeats) shares the
//!   hash tag `{q<n>}` of the tenant's partition, so each presence script (which also reads
//!   keys it derives from [`Keys::presence_stem`]) stays on one slot, and no shard holds all
//!   tenants' presence or all heartbeats. The ingest stream is `redis.cluster_ingest_streams`
//!   streams, each in its own hash tag `{i<n>}` so they spread over the shards; a draft goes to
//!   stream [`ingest_stream_of`] of its channel.

use crate::channel::ChannelName;
use crate::ids::{NodeId, TenantKey};

/// The partition of `channel` among `partitions`: 32-bit FNV-1a of the channel name's UTF-8
/// bytes, modulo the partition count. Stable across versions and nodes (other publishers may
/// compute it); changing `redis.cluster_partitions` moves channels, so it is fixed per deployment.
pub fn partition_of(channel: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in channel.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

/// The ingest stream (of `streams`) a draft for `channel` is appended to on a Redis Cluster: the
/// same FNV-1a hash as [`partition_of`], modulo the stream count, so all drafts of one channel go
/// to one stream and keep their order there. Other publishers compute it too.
pub fn ingest_stream_of(channel: &str, streams: u32) -> u32 {
    partition_of(channel, streams)
}

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// `Some(n)`: the Redis Cluster layout with `n` partitions.
    partitions: Option<u32>,
    /// Ingest streams of the Redis Cluster layout (1 on a single Redis).
    ingest_streams: u32,
}

impl Keys {
    /// The single-Redis layout.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            partitions: None,
            ingest_streams: 1,
        }
    }

    /// The Redis Cluster layout with `partitions` partitions and `ingest_streams` ingest streams.
    pub fn cluster(prefix: &str, partitions: u32, ingest_streams: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            partitions: Some(partitions.max(1)),
            ingest_streams: ingest_streams.max(1),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this is the Redis Cluster layout (sharded pub/sub).
    pub fn sharded(&self) -> bool {
        self.partitions.is_some()
    }

    /// The hash-tagged stem of a channel's keys: `{prefix}:{<channel>}:` or
    /// `{prefix}:{p<n>}:<channel>:`.
    fn stem(&self, channel: &ChannelName) -> String {
        match self.partitions {
            None => format!("{}:{{{channel}}}:", self.prefix),
            Some(n) => format!(
                "{}{channel}:",
                self.partition_stem(partition_of(channel.as_str(), n))
            ),
        }
    }

    /// The pub/sub channel carrying a channel's envelopes: `{prefix}:ch:{channel}` on a single
    /// Redis, the partition's sharded channel `{prefix}:{p<n>}:ch` on a cluster.
    pub fn pubsub(&self, channel: &str) -> String {
        match self.partitions {
            None => format!("{}:ch:{channel}", self.prefix),
            Some(n) => format!("{}:{{p{}}}:ch", self.prefix, partition_of(channel, n)),
        }
    }

    /// `{prefix}:{<channel>}:offset`, the channel's last assigned offset.
    pub fn offset(&self, channel: &ChannelName) -> String {
        format!("{}offset", self.stem(channel))
    }

    /// `{prefix}:{<channel>}:epoch`, the channel's history generation.
    pub fn epoch(&self, channel: &ChannelName) -> String {
        format!("{}epoch", self.stem(channel))
    }

    /// `{prefix}:{<channel>}:history`, the channel's bounded history stream (entry id
    /// `<offset>-0`, field `e` = the envelope).
    pub fn history(&self, channel: &ChannelName) -> String {
        format!("{}history", self.stem(channel))
    }

    /// `{prefix}:{<channel>}:seen:{id}`, marks an idempotent publish as done.
    pub fn seen(&self, channel: &ChannelName, id: &str) -> String {
        format!("{}seen:{id}", self.stem(channel))
    }

    /// `{prefix}:{p<n>}:<channel>:listeners` (Redis Cluster layout): the set of node ids with
    /// local subscribers to the channel, kept by each node's bridge.
    pub fn listeners(&self, channel: &ChannelName) -> String {
        format!("{}listeners", self.stem(channel))
    }

    /// The channel partitions of the Redis Cluster layout (`0..1` on a single Redis).
    pub fn channel_partitions(&self) -> std::ops::Range<u32> {
        0..self.partitions.unwrap_or(1)
    }

    /// The hash-tagged stem of partition `p`'s keys, `{prefix}:{p<n>}:` (Redis Cluster layout):
    /// a channel's keys are this followed by the channel name.
    pub fn partition_stem(&self, p: u32) -> String {
        format!("{}:{{p{p}}}:", self.prefix)
    }

    /// `{prefix}:{p<n>}:node:<node>:listening`: the channels of partition `n` whose listener
    /// marks carry `node` (Redis Cluster layout), so a dead node's marks can be found and removed.
    pub fn node_listening(&self, p: u32, node: &NodeId) -> String {
        format!("{}node:{node}:listening", self.partition_stem(p))
    }

    /// The partition of `channel` (Redis Cluster layout; `0` on a single Redis).
    pub fn partition(&self, channel: &ChannelName) -> u32 {
        self.partitions
            .map_or(0, |n| partition_of(channel.as_str(), n))
    }

    /// The stream a draft for `channel` is appended to: `{prefix}:ingest` on a single Redis,
    /// `{prefix}:{i<n>}:ingest` with `n` = [`ingest_stream_of`] on a Redis Cluster.
    pub fn ingest(&self, channel: &str) -> String {
        match self.partitions {
            None => format!("{}:ingest", self.prefix),
            Some(_) => self.ingest_stream(ingest_stream_of(channel, self.ingest_streams)),
        }
    }

    /// Every ingest stream (each node reads them all): the one on a single Redis, or
    /// `redis.cluster_ingest_streams` on a Redis Cluster.
    pub fn ingest_streams(&self) -> Vec<String> {
        match self.partitions {
            None => vec![format!("{}:ingest", self.prefix)],
            Some(_) => (0..self.ingest_streams)
                .map(|n| self.ingest_stream(n))
                .collect(),
        }
    }

    /// `{prefix}:{i<n>}:ingest`, the `n`th ingest stream of the Redis Cluster layout.
    fn ingest_stream(&self, n: u32) -> String {
        format!("{}:{{i{n}}}:ingest", self.prefix)
    }

    /// The presence partitions: one (`0`) on a single Redis, `redis.cluster_partitions` on a
    /// cluster. Heartbeats, sweeps and tenant listings walk them all.
    pub fn presence_partitions(&self) -> std::ops::Range<u32> {
        0..self.partitions.unwrap_or(1)
    }

    /// The presence partition holding `tenant`'s presence: [`partition_of`] its key (`0` on a
    /// single Redis).
    pub fn presence_partition(&self, tenant: &TenantKey) -> u32 {
        self.partitions
            .map_or(0, |n| partition_of(tenant.as_str(), n))
    }

    /// The stem of presence partition `q`'s keys (the presence scripts derive key names from
    /// it): `<prefix>` on a single Redis, `<prefix>:{q<n>}` on a cluster.
    pub fn presence_stem(&self, q: u32) -> String {
        match self.partitions {
            None => self.prefix.clone(),
            Some(_) => format!("{}:{{q{q}}}", self.prefix),
        }
    }

    /// `<stem>:nodes`: sorted set of node ids scored by their last heartbeat (ms); on a cluster
    /// every node beats into each presence partition's own.
    pub fn nodes(&self, q: u32) -> String {
        format!("{}:nodes", self.presence_stem(q))
    }

    /// `<stem>:node:<node>:tenants`: the tenants of partition `q` a node has presence entries
    /// for.
    pub fn node_tenants(&self, q: u32, node: &NodeId) -> String {
        format!("{}:node:{node}:tenants", self.presence_stem(q))
    }

    /// `<stem>:presence:<t>:node:<node>`: a node's connections of a tenant.
    pub fn presence_conns(&self, tenant: &TenantKey, node: &NodeId) -> String {
        let stem = self.presence_stem(self.presence_partition(tenant));
        format!("{stem}:presence:{tenant}:node:{node}")
    }

    /// `<stem>:presence:<t>:users`: connections per user across the cluster.
    pub fn presence_users(&self, tenant: &TenantKey) -> String {
        let stem = self.presence_stem(self.presence_partition(tenant));
        format!("{stem}:presence:{tenant}:users")
    }

    /// `<stem>:presence:pending-offline`: sorted set of "tenant\tuser" (of partition `q`'s
    /// tenants) scored by the time their UserOffline is due.
    pub fn presence_pending(&self, q: u32) -> String {
        format!("{}:presence:pending-offline", self.presence_stem(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let k = Keys::new("sy");
        let ch = ChannelName::parse("tenant:a:broadcast").unwrap();
        assert_eq!(k.pubsub(ch.as_str()), "sy:ch:tenant:a:broadcast");
        assert_eq!(k.offset(&ch), "sy:{tenant:a:broadcast}:offset");
        assert_eq!(k.ingest("tenant:a:broadcast"), "sy:ingest");
        assert_eq!(k.ingest_streams(), ["sy:ingest"]);
    }

    #[test]
    fn the_single_redis_presence_layout_is_one_partition_under_the_prefix() {
        let k = Keys::new("sy");
        let (t, node) = (TenantKey::parse("acme").unwrap(), NodeId("n1".into()));
        assert_eq!(k.presence_partitions(), 0..1);
        assert_eq!(k.presence_partition(&t), 0);
        assert_eq!(k.presence_stem(0), "sy");
        assert_eq!(k.nodes(0), "sy:nodes");
        assert_eq!(k.node_tenants(0, &node), "sy:node:n1:tenants");
        assert_eq!(k.presence_conns(&t, &node), "sy:presence:acme:node:n1");
        assert_eq!(k.presence_users(&t), "sy:presence:acme:users");
        assert_eq!(k.presence_pending(0), "sy:presence:pending-offline");
    }

    #[test]
    fn the_cluster_layout_spreads_presence_with_one_hash_tag_per_tenant_partition() {
        let k = Keys::cluster("sy", 64, 4);
        let (t, node) = (TenantKey::parse("acme").unwrap(), NodeId("n1".into()));
        let q = partition_of("acme", 64);
        assert_eq!(k.presence_partition(&t), q);
        assert_eq!(k.presence_partitions(), 0..64);
        let tag = format!("sy:{{q{q}}}:");
        for key in [
            k.nodes(q),
            k.node_tenants(q, &node),
            k.presence_conns(&t, &node),
            k.presence_users(&t),
            k.presence_pending(q),
        ] {
            assert!(key.starts_with(&tag), "{key}");
        }
        assert_eq!(k.presence_users(&t), format!("{tag}presence:acme:users"));
        assert_eq!(k.presence_stem(q), format!("sy:{{q{q}}}"));
        // Tenants spread: not every tenant in one partition.
        let spread: std::collections::BTreeSet<u32> = (0..16)
            .map(|i| k.presence_partition(&TenantKey::parse(&format!("t{i}")).unwrap()))
            .collect();
        assert!(spread.len() > 1, "{spread:?}");
    }

    #[test]
    fn the_cluster_layout_shares_one_hash_tag_per_partition() {
        let k = Keys::cluster("sy", 64, 4);
        let ch = ChannelName::parse("tenant:a:broadcast").unwrap();
        let p = partition_of("tenant:a:broadcast", 64);
        assert!(p < 64);
        let tag = format!("{{p{p}}}");
        for key in [
            k.pubsub(ch.as_str()),
            k.offset(&ch),
            k.epoch(&ch),
            k.history(&ch),
            k.seen(&ch, "e1"),
            k.listeners(&ch),
            k.node_listening(p, &NodeId("n1".into())),
        ] {
            assert!(key.starts_with(&format!("sy:{tag}:")), "{key}");
        }
        assert_eq!(k.partition(&ch), p);
        assert_eq!(
            k.listeners(&ch),
            format!("{}tenant:a:broadcast:listeners", k.partition_stem(p))
        );
        assert_eq!(k.offset(&ch), format!("sy:{tag}:tenant:a:broadcast:offset"));
        assert_eq!(k.pubsub(ch.as_str()), format!("sy:{tag}:ch"));
    }

    #[test]
    fn partitions_are_a_stable_fnv1a_hash() {
        // FNV-1a 32 of "a" is 0xe40c292c; other publishers computing it must get the same.
        assert_eq!(partition_of("a", u32::MAX), 0xe40c292c);
        assert_eq!(partition_of("a", 64), 0xe40c292c % 64);
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn the_cluster_spreads_ingest_over_streams_chosen_by_channel() {
        let k = Keys::cluster("sy", 64, 4);
        assert_eq!(
            k.ingest_streams(),
            [
                "sy:{i0}:ingest",
                "sy:{i1}:ingest",
                "sy:{i2}:ingest",
                "sy:{i3}:ingest"
            ]
        );
        // FNV-1a 32 of "a" is 0xe40c292c, so its drafts go to stream 0xe40c292c % 4 = 0.
        assert_eq!(ingest_stream_of("a", 4), 0xe40c292c % 4);
        assert_eq!(
            k.ingest("a"),
            format!("sy:{{i{}}}:ingest", 0xe40c292c_u32 % 4)
        );
        let streams: std::collections::BTreeSet<String> =
            (0..32).map(|i| k.ingest(&format!("user:u{i}"))).collect();
        assert_eq!(streams.len(), 4, "channels spread over every stream");
    }
}
