//! One Redis or a Redis Cluster, behind one handle: the only place that knows which. Commands go
//! through one shared multiplexed connection (one Redis: made by the `deadpool-redis` pool, then
//! taken out of it) or the `redis` crate's async cluster connection (which routes by slot, follows
//! `MOVED`/`ASK`, refreshes the slot map and keeps one multiplexed connection per cluster node); pub/sub is classic `SUBSCRIBE` on one connection, or sharded
//! `SSUBSCRIBE` on a RESP3 cluster connection whose pushes arrive on a channel.
//!
//! Everything above this file sees [`Conn`] (a `ConnectionLike`), [`Subscriber`] and
//! [`PushEvent`]; the key layout that goes with each mode is in `keys.rs`.

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where the engine's Redis is.
// One per process, never moved around: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Single {
        /// Makes the command connection (URL, TLS and credentials as configured).
        pool: Pool,
        client: redis::Client,
        /// The shared command connection, made on first use and made again after a failure
        /// ([`Target::reset`]). Not a connection checked out of the pool per command: the pool
        /// checks a connection it hands out again with a round trip (`UNWATCH` + `PING`), which
        /// doubled every publish's round trips, and a multiplexed connection needs no exclusive
        /// use (nothing here uses `WATCH` or `MULTI`).
        conn: std::sync::Mutex<Option<MultiplexedConnection>>,
        /// Publishes acknowledged by replicas, as on a cluster: `WAIT` holds the connection until
        /// they answer (Redis runs one client's commands in order), so it is a connection of
        /// their own and other commands do not queue behind it.
        acked: std::sync::Mutex<Option<MultiplexedConnection>>,
        /// The shared connection's replies' deadline: a command's (the pool makes connections
        /// with the `redis` crate's default of 500 ms, shorter than a command may take).
        timeout: Duration,
        /// Its replies' deadline (a command's plus the replicas' wait).
        acked_timeout: Duration,
    },
    Cluster {
        /// RESP2 commands (replies as on a single Redis).
        commands: ClusterClient,
        /// RESP3, for sharded pub/sub pushes.
        pubsub: ClusterClient,
        /// The shared command connection, made on first use and made again after a failure
        /// ([`Target::reset`]).
        conn: std::sync::Mutex<Option<ClusterConnection>>,
        /// Publishes acknowledged by replicas: `WAIT` holds a node's connection until they
        /// answer, so it gets its own and other commands do not queue behind it.
        acked: std::sync::Mutex<Option<ClusterConnection>>,
        /// Held while one of the two is made: many commands start at once (presence walks every
        /// partition concurrently), and each would otherwise build a whole cluster connection
        /// (one to every Redis node, plus the slot map) only for all but one to be thrown away.
        connecting: tokio::sync::Mutex<()>,
        /// Its replies' deadline (a command's plus the replicas' wait).
        acked_timeout: Duration,
    },
}

impl Target {
    /// One Redis at `url`. `timeout`: how long a command may take; `acked_timeout`: how long a
    /// publish acknowledged by replicas may take.
    pub fn single(url: &str, timeout: Duration, acked_timeout: Duration) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let pool = deadpool_redis::Config::from_url(url.to_owned())
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "pool",
                    e.to_string(),
                ))
            })?;
        Ok(Target::Single {
            pool,
            client,
            conn: std::sync::Mutex::new(None),
            acked: std::sync::Mutex::new(None),
            timeout,
            acked_timeout,
        })
    }

    /// A Redis Cluster reached through `seeds` (URLs carrying TLS, user name and password).
    /// `acked_timeout`: how long a publish acknowledged by replicas may take.
    pub fn cluster(
        seeds: &[String],
        timeout: Duration,
        acked_timeout: Duration,
    ) -> RedisResult<Self> {
        let build = |protocol| {
            ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                .use_protocol(protocol)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Per attempt only: callers bound whole operations themselves (a blocking read
                // on a dedicated connection outlasts one command's deadline).
                .overall_response_timeout(None)
                .build()
        };
        Ok(Target::Cluster {
            commands: build(redis::ProtocolVersion::RESP2)?,
            pubsub: build(redis::ProtocolVersion::RESP3)?,
            conn: std::sync::Mutex::new(None),
            acked: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            acked_timeout,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    /// A connection for one command or a few (the shared connection of either kind); with
    /// `acked`, for publishes that wait for replicas (see [`Target::Cluster`]).
    pub async fn get(&self, acked: bool) -> Result<Conn, super::ClusterError> {
        match self {
            Target::Single {
                pool,
                client,
                conn,
                acked: acked_conn,
                timeout,
                acked_timeout,
            } => {
                let slot = if acked { acked_conn } else { conn };
                if let Some(c) = slot.lock().expect("not poisoned").clone() {
                    return Ok(Conn::Multiplexed(c));
                }
                let fresh = if acked {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_response_timeout(Some(*acked_timeout));
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?
                } else {
                    let mut made = deadpool_redis::Connection::take(pool.get().await?);
                    made.set_response_timeout(*timeout);
                    made
                };
                let mut shared = slot.lock().expect("not poisoned");
                Ok(Conn::Multiplexed(shared.get_or_insert(fresh).clone()))
            }
            Target::Cluster {
                commands,
                conn,
                acked: acked_conn,
                connecting,
                acked_timeout,
                ..
            } => {
                let conn = if acked { acked_conn } else { conn };
                if let Some(c) = conn.lock().expect("not poisoned").clone() {
                    return Ok(Conn::Cluster(c));
                }
                let _making = connecting.lock().await;
                // Another caller may have made it while this one waited.
                if let Some(c) = conn.lock().expect("not poisoned").clone() {
                    return Ok(Conn::Cluster(c));
                }
                let fresh = if acked {
                    let config =
                        redis::cluster::ClusterConfig::new().set_response_timeout(*acked_timeout);
                    commands.get_async_connection_with_config(config).await?
                } else {
                    commands.get_async_connection().await?
                };
                let mut shared = conn.lock().expect("not poisoned");
                Ok(Conn::Cluster(shared.get_or_insert(fresh).clone()))
            }
        }
    }

    /// After a failed command: the next one starts from a new connection (on a Redis Cluster
    /// with a fresh slot map from the seed nodes), so a restarted Redis, a failed-over master's
    /// replica or a moved slot is found even when the old connection keeps waiting for a node
    /// that is gone.
    pub fn reset(&self) {
        match self {
            Target::Single { conn, acked, .. } => {
                conn.lock().expect("not poisoned").take();
                acked.lock().expect("not poisoned").take();
            }
            Target::Cluster { conn, acked, .. } => {
                conn.lock().expect("not poisoned").take();
                acked.lock().expect("not poisoned").take();
            }
        }
    }

    /// A connection of its own (blocking reads must not stall the shared one) whose replies may
    /// take `response_timeout`.
    pub async fn dedicated(&self, response_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::Single { client, .. } => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(response_timeout));
                Ok(Conn::Multiplexed(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Target::Cluster { commands, .. } => {
                let config =
                    redis::cluster::ClusterConfig::new().set_response_timeout(response_timeout);
                Ok(Conn::Cluster(
                    commands.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }

    /// A new pub/sub connection and the stream of what it receives. The stream ends (or yields
    /// [`PushEvent::Lost`]) when the connection, or one of a cluster's node connections, is lost.
    pub async fn subscriber(&self) -> RedisResult<(Subscriber, BoxStream<'static, PushEvent>)> {
        match self {
            Target::Single { client, .. } => {
                let (sink, stream) = client.get_async_pubsub().await?.split();
                let events = stream
                    .map(|msg| match msg.get_payload::<String>() {
                        Ok(payload) => PushEvent::Message {
                            topic: msg.get_channel_name().to_owned(),
                            payload,
                        },
                        Err(e) => PushEvent::Unreadable(e.to_string()),
                    })
                    .chain(futures_util::stream::once(async {
                        PushEvent::Lost("pub/sub connection closed".into())
                    }));
                Ok((Subscriber::Single(sink), events.boxed()))
            }
            Target::Cluster { pubsub, .. } => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let config = redis::cluster::ClusterConfig::new().set_push_sender(tx);
                let conn = pubsub.get_async_connection_with_config(config).await?;
                let events = futures_util::stream::unfold(rx, |mut rx| async move {
                    let push = rx.recv().await?;
                    Some((PushEvent::from_push(push), rx))
                })
                .filter_map(|e| async move { e })
                .chain(futures_util::stream::once(async {
                    PushEvent::Lost("pub/sub connection closed".into())
                }));
                Ok((Subscriber::Cluster(conn), events.boxed()))
            }
        }
    }
}

/// What a pub/sub connection received.
#[derive(Debug)]
pub enum PushEvent {
    /// A message on a (sharded) pub/sub channel.
    Message { topic: String, payload: String },
    /// A message that is not text.
    Unreadable(String),
    /// The server ended a subscription (a cluster slot moved away from the node it was on).
    Unsubscribed(String),
    /// The connection (or, on a cluster, a node's connection) was lost: what was published
    /// meanwhile was missed.
    Lost(String),
}

impl PushEvent {
    fn from_push(push: redis::PushInfo) -> Option<Self> {
        use redis::{FromRedisValue, PushKind};
        let text = |i: usize| {
            push.data
                .get(i)
                .and_then(|v| String::from_redis_value_ref(v).ok())
        };
        match push.kind {
            PushKind::SMessage | PushKind::Message => Some(match (text(0), text(1)) {
                (Some(topic), Some(payload)) => PushEvent::Message { topic, payload },
                _ => PushEvent::Unreadable(format!("{:?}", push.data)),
            }),
            PushKind::SUnsubscribe => Some(PushEvent::Unsubscribed(text(0).unwrap_or_default())),
            PushKind::Disconnection => {
                Some(PushEvent::Lost("a cluster node's connection closed".into()))
            }
            _ => None,
        }
    }
}

/// The subscribing half of a pub/sub connection (cheap to clone).
#[derive(Clone)]
pub enum Subscriber {
    Single(redis::aio::PubSubSink),
    Cluster(ClusterConnection),
}

impl Subscriber {
    /// `SUBSCRIBE` (one Redis) or `SSUBSCRIBE` (cluster: sent to the node serving the topic's slot).
    pub async fn subscribe(&mut self, topic: String) -> RedisResult<()> {
        match self {
            Subscriber::Single(sink) => sink.subscribe(topic).await,
            Subscriber::Cluster(conn) => conn.ssubscribe(topic).await,
        }
    }

    pub async fn unsubscribe(&mut self, topic: String) -> RedisResult<()> {
        match self {
            Subscriber::Single(sink) => sink.unsubscribe(topic).await,
            Subscriber::Cluster(conn) => conn.sunsubscribe(topic).await,
        }
    }
}

/// A command connection of either kind.
pub enum Conn {
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
