//! [`Cluster`]: the cheap, cloneable handle for Redis commands (on one Redis or a Redis Cluster,
//! see `connection.rs`): publishing (one atomic Lua step: next offset, bounded history, PUBLISH
//! or SPUBLISH; optionally acknowledged only once replicas have it) and channel positions and
//! recovery from history. Presence commands are in `presence.rs`, the ingest stream in
//! `ingest.rs`, which nodes listen to a channel in `listeners.rs`.
//!
//! Guarantees (stated where they are made): offsets are per channel and cluster-wide; within one
//! epoch they never repeat; the epoch changes only when Redis lost the channel's state. Delivery is
//! relayed only from pub/sub (the origin too), so every node sees one order per channel.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::connection::{Conn, Target};
use super::{scripts, Keys};
use crate::channel::ChannelName;
use crate::engine::PublishAck;
use crate::envelope::{Draft, Envelope, StreamPosition};
use crate::history::{HistoryLimits, Recovery};
use crate::ids::NodeId;
use crate::metrics::Metrics;

/// What cluster mode is configured with (`[redis]`, `[presence]`, `[history]`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://` (TLS), with password and database as in any Redis URL.
    pub url: String,
    /// Redis Cluster seed nodes as URLs (TLS, user name and password as in `url`); when not
    /// empty, the engine runs on the Redis Cluster (sharded pub/sub) and `url` is not used.
    pub cluster_nodes: Vec<String>,
    /// Partitions channels are hashed into on a Redis Cluster (one sharded pub/sub channel each);
    /// tenants' presence is hashed into as many presence partitions.
    pub cluster_partitions: u32,
    /// Ingest streams on a Redis Cluster (each in its own hash tag, so they spread over shards).
    pub cluster_ingest_streams: u32,
    /// A publish is acknowledged only once this many replicas have it (`WAIT`); 0 = on the
    /// master's word.
    pub replica_acks: u32,
    /// How long a publish waits for those replicas before it is refused.
    pub replica_ack_timeout: Duration,
    /// Prefix of every key and pub/sub channel.
    pub prefix: String,
    /// Tries per publish before it is refused (the seeds' RetryAttempts).
    pub publish_attempts: u32,
    /// Pause between tries, doubled each time (the seeds' RetryDelay).
    pub publish_retry_delay: Duration,
    /// Deadline for one Redis command.
    pub command_timeout: Duration,
    /// Back-off bounds for reconnecting the pub/sub connection.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub history: HistoryLimits,
    /// The payload limits drafts from the ingest stream are checked against.
    pub payload: crate::payload::PayloadLimits,
    /// A node not heard from for this long is dead; its presence is removed.
    pub node_ttl: Duration,
    /// How often a node refreshes its presence and looks for dead nodes.
    pub heartbeat: Duration,
    /// A user's last connection must stay closed this long before UserOffline.
    pub offline_grace: Duration,
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis returned an unexpected reply: {0}")]
    Reply(String),
    /// Published, but fewer replicas than asked confirmed it in time: a failover now could lose
    /// it. Not retried and not delivered locally again (it was delivered through Redis).
    #[error("only {got} of {wanted} replicas confirmed the publish in time")]
    NotReplicated { got: u32, wanted: u32 },
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        ClusterError::Redis(e.to_string())
    }
}

impl From<deadpool_redis::PoolError> for ClusterError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        ClusterError::Redis(e.to_string())
    }
}

/// A channel's position and, when asked, what a client missed.
#[derive(Debug)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub recovery: Option<Recovery>,
}

struct Inner {
    target: Target,
    keys: Keys,
    config: ClusterConfig,
    node: NodeId,
    metrics: Arc<Metrics>,
    publish: Script,
    position: Script,
}

/// The cluster command handle (see the module docs).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    pub fn new(
        config: ClusterConfig,
        node: NodeId,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ClusterError> {
        // rustls needs a process-wide crypto provider for rediss://; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (target, keys) = if config.cluster_nodes.is_empty() {
            (
                Target::single(
                    &config.url,
                    config.command_timeout,
                    config.command_timeout + config.replica_ack_timeout,
                )?,
                Keys::new(&config.prefix),
            )
        } else {
            (
                Target::cluster(
                    &config.cluster_nodes,
                    config.command_timeout,
                    config.command_timeout + config.replica_ack_timeout,
                )?,
                Keys::cluster(
                    &config.prefix,
                    config.cluster_partitions,
                    config.cluster_ingest_streams,
                ),
            )
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                keys,
                config,
                node,
                metrics,
                publish: Script::new(scripts::PUBLISH),
                position: Script::new(scripts::POSITION),
            }),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// One Redis or a Redis Cluster: dedicated connections (pub/sub, blocking reads).
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Runs `f` on a pooled connection within the command timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        self.run_on(false, self.inner.config.command_timeout, f)
            .await
    }

    /// Runs `f` within `timeout` on a connection for commands (`acked`: for publishes that
    /// wait for replicas).
    async fn run_on<T, F, Fut>(
        &self,
        acked: bool,
        timeout: Duration,
        f: F,
    ) -> Result<T, ClusterError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        let work = async {
            let conn = self.inner.target.get(acked).await?;
            Ok::<T, ClusterError>(f(conn).await?)
        };
        let result = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClusterError::Timeout(timeout))
            .and_then(|r| r);
        if matches!(
            result,
            Err(ClusterError::Timeout(_) | ClusterError::Redis(_))
        ) {
            self.inner.target.reset();
        }
        result
    }

    /// One publish attempt. `idempotency` (an event id) makes a retried publish happen once.
    pub async fn publish_once(
        &self,
        draft: &Draft,
        idempotent: bool,
    ) -> Result<PublishAck, ClusterError> {
        let keys = &self.inner.keys;
        let (head, tail) = envelope_parts(draft, &self.inner.node);
        let channel = &draft.channel;
        let history = self.inner.config.history;
        let keys_args = [
            keys.offset(channel),
            keys.epoch(channel),
            keys.history(channel),
            keys.seen(channel, &draft.id),
        ];
        let argv: [String; 7] = [
            head,
            tail,
            keys.pubsub(channel.as_str()),
            history.size.to_string(),
            (history.ttl.as_millis() as u64).to_string(),
            if idempotent { "1" } else { "0" }.to_owned(),
            if keys.sharded() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            }
            .to_owned(),
        ];
        let acks = self.inner.config.replica_acks;
        let (offset, epoch): (u64, String) = if acks == 0 {
            let mut inv = self.inner.publish.prepare_invoke();
            for k in &keys_args {
                inv.key(k);
            }
            for a in &argv {
                inv.arg(a);
            }
            self.run(|mut conn| async move { inv.invoke_async(&mut conn).await })
                .await?
        } else {
            // `WAIT` counts what replicas confirmed of this connection's writes, so it goes in
            // one pipeline with the script (the cluster connection routes the pipeline by the
            // script's keys to the partition's master; EVAL, not EVALSHA, so nothing in the
            // pipeline can fail for a script cache that a failover emptied).
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(scripts::PUBLISH)
                .arg(keys_args.len())
                .arg(&keys_args)
                .arg(&argv)
                .cmd("WAIT")
                .arg(acks)
                .arg(self.inner.config.replica_ack_timeout.as_millis() as u64);
            let timeout = self.inner.config.command_timeout + self.inner.config.replica_ack_timeout;
            let (published, got): ((u64, String), u32) = self
                .run_on(true, timeout, |mut conn| async move {
                    pipe.query_async(&mut conn).await
                })
                .await?;
            if got < acks {
                return Err(ClusterError::NotReplicated { got, wanted: acks });
            }
            published
        };
        Ok(PublishAck {
            id: draft.id.clone(),
            offset,
            epoch: Arc::from(epoch),
        })
    }

    /// Publishes with the configured retries and back-off. Every attempt carries the same event
    /// id and is idempotent, so a retry after a lost reply never publishes twice.
    pub async fn publish(&self, draft: &Draft) -> Result<PublishAck, ClusterError> {
        let cfg = &self.inner.config;
        let mut delay = cfg.publish_retry_delay;
        let mut attempt = 1;
        loop {
            match self.publish_once(draft, true).await {
                Ok(ack) => return Ok(ack),
                Err(e @ ClusterError::NotReplicated { .. }) => return Err(e),
                Err(e) if attempt >= cfg.publish_attempts.max(1) => return Err(e),
                Err(e) => {
                    log::warn!(
                        "publish to {} failed (attempt {attempt}/{}): {e}; retrying in {delay:?}",
                        draft.channel,
                        cfg.publish_attempts
                    );
                    self.inner.metrics.redis_retries.inc();
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// The channel's current position, creating its epoch if it has none; with `since`, the
    /// events after it (up to `limit`) and whether they are all there.
    pub async fn position(
        &self,
        channel: &ChannelName,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Position, ClusterError> {
        self.read_position(channel, since, limit, false).await
    }

    /// What the bridge has not relayed yet: the events after `after` (up to `limit`) or, when the
    /// channel's epoch is no longer `after`'s (Redis lost its state), the current epoch from its
    /// first offset; without `after`, the whole current epoch. `recovery.recovered` says whether
    /// nothing in that range is missing from history.
    pub async fn unrelayed(
        &self,
        channel: &ChannelName,
        after: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Position, ClusterError> {
        let start = StreamPosition {
            offset: 0,
            epoch: String::new(),
        };
        self.read_position(channel, Some(after.unwrap_or(&start)), limit, true)
            .await
    }

    async fn read_position(
        &self,
        channel: &ChannelName,
        since: Option<&StreamPosition>,
        limit: usize,
        follow_new_epoch: bool,
    ) -> Result<Position, ClusterError> {
        let keys = &self.inner.keys;
        let mut inv = self.inner.position.prepare_invoke();
        inv.key(keys.offset(channel))
            .key(keys.epoch(channel))
            .key(keys.history(channel))
            .arg(self.inner.config.history.ttl.as_millis() as u64)
            .arg(since.map(|s| s.offset as i64).unwrap_or(-1))
            .arg(since.map(|s| s.epoch.as_str()).unwrap_or(""))
            .arg(limit.max(1))
            .arg(if follow_new_epoch { "1" } else { "0" });
        let reply: Vec<redis::Value> = self
            .run(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        parse_position(&reply, since.is_some(), channel, &self.inner.metrics)
    }
}

/// The envelope's JSON around the two fields only the publish script knows (offset, epoch), so
/// Redis builds the one envelope that every node relays and history keeps.
fn envelope_parts(draft: &Draft, origin: &NodeId) -> (String, String) {
    #[derive(serde::Serialize)]
    struct Head<'a> {
        v: u8,
        id: &'a str,
        channel: &'a str,
        event: &'a str,
        data: &'a serde_json::value::RawValue,
        ts: u64,
    }
    let head = serde_json::to_string(&Head {
        v: crate::envelope::ENVELOPE_VERSION,
        id: &draft.id,
        channel: draft.channel.as_str(),
        event: draft.event.as_str(),
        data: draft.data.as_raw(),
        ts: draft.ts,
    })
    .expect("drafts always serialize");
    let head = format!("{},\"offset\":", &head[..head.len() - 1]);
    let origin = serde_json::to_string(&origin.0).expect("strings serialize");
    // After `origin`, as [`Envelope`] serializes it: nodes without the field ignore it.
    let tail = match &draft.arguments {
        Some(arguments) => format!(
            ",\"origin\":{origin},\"{}\":{}}}",
            crate::envelope::ARGUMENTS_FIELD,
            serde_json::to_string(arguments).expect("arguments serialize")
        ),
        None => format!(",\"origin\":{origin}}}"),
    };
    (head, tail)
}

/// Reads the position script's reply. A history entry that is not a readable envelope (written
/// by something else, or by a version that accepted what this one refuses) is left out, logged
/// and counted, and the recovery is then not complete: one entry must never make a channel's
/// whole history unreadable.
fn parse_position(
    reply: &[redis::Value],
    asked: bool,
    channel: &ChannelName,
    metrics: &Metrics,
) -> Result<Position, ClusterError> {
    use redis::FromRedisValue;
    let bad = || ClusterError::Reply(format!("{reply:?}"));
    if reply.len() < 3 {
        return Err(bad());
    }
    let offset = u64::from_redis_value_ref(&reply[0]).map_err(|_| bad())?;
    let epoch = String::from_redis_value_ref(&reply[1]).map_err(|_| bad())?;
    let mut recovered = i64::from_redis_value_ref(&reply[2]).map_err(|_| bad())? == 1;
    let mut replay = Vec::new();
    for v in &reply[3..] {
        let decoded = String::from_redis_value_ref(v)
            .map_err(|e| e.to_string())
            .and_then(|text| Envelope::from_json(&text).map_err(|e| e.to_string()));
        match decoded {
            Ok(env) => replay.push(Arc::new(env)),
            Err(e) => {
                log::warn!("history of {channel}: skipping an entry that is not an envelope: {e}");
                metrics
                    .history_skipped
                    .with_label_values(&[crate::metrics::HISTORY_UNDECODABLE])
                    .inc();
                recovered = false;
            }
        }
    }
    Ok(Position {
        offset,
        epoch: Arc::from(epoch),
        recovery: asked.then_some(Recovery { recovered, replay }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EventName;

    #[test]
    fn envelope_parts_make_the_documented_envelope() {
        let draft = Draft {
            id: Arc::from("e1"),
            channel: ChannelName::parse("tenant:a:broadcast").unwrap(),
            event: EventName::parse("NewOrder").unwrap(),
            data: crate::payload::Payload::test("{\"x\":1}"),
            ts: 5,
            arguments: None,
        };
        let (head, tail) = envelope_parts(&draft, &NodeId(Arc::from("n1")));
        let text = format!("{head}7,\"epoch\":\"ep\"{tail}");
        let env = Envelope::from_json(&text).unwrap();
        assert_eq!((env.offset, &*env.epoch, &*env.origin.0), (7, "ep", "n1"));
        assert_eq!(
            env.to_json(),
            text,
            "byte-identical to the node's own serialization"
        );
        let draft = Draft {
            arguments: Some(crate::hub_arguments::HubArguments::built(&("c1", 2))),
            ..draft
        };
        let (head, tail) = envelope_parts(&draft, &NodeId(Arc::from("n1")));
        let text = format!("{head}8,\"epoch\":\"ep\"{tail}");
        let env = Envelope::from_json(&text).unwrap();
        assert_eq!(env.arguments, draft.arguments);
        assert_eq!(env.to_json(), text, "with arguments, byte-identical too");
    }
}
