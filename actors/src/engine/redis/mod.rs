//! The Redis engine (cluster mode, on one Redis or a Redis Cluster): Redis keeps every channel's offsets and history and carries
//! events between nodes; nodes never talk to each other directly.
//!
//! | file | owns |
//! | --- | --- |
//! | `engine.rs` | [`RedisEngine`]: the [`crate::engine::BrokerEngine`] over Redis |
//! | `commands.rs` | [`Cluster`]: the command handle (publish, positions, recovery) and its settings |
//! | `connection.rs` | one Redis or a Redis Cluster: command connections, pub/sub (`SUBSCRIBE` or sharded `SSUBSCRIBE`) |
//! | `bridge.rs` | [`bridge::RedisBridge`]: the node's pub/sub connection, relaying into the shards |
//! | `presence.rs` | [`RedisPresence`]: cluster-wide presence (spread over presence partitions on a Redis Cluster), its commands (connections per node, heartbeats, offline) and its janitor |
//! | `ingest.rs` | the ingest stream (one, or several spread over a Redis Cluster): back ends publishing by `XADD` |
//! | `listeners.rs` | whether any node listens to a channel (existence checks): `PUBSUB NUMSUB`, or the nodes' listener marks on a Redis Cluster |
//! | `keys.rs`, `scripts.rs` | key names and the Lua scripts |

pub mod bridge;
mod commands;
pub mod connection;
mod engine;
pub mod ingest;
pub mod keys;
mod listeners;
pub mod presence;
pub mod scripts;

pub use commands::{Cluster, ClusterConfig, ClusterError, Position};
pub use engine::RedisEngine;
pub use keys::Keys;
pub use presence::RedisPresence;
