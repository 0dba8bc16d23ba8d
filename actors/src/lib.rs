//! Switchyard's actors, the messages between them, the envelope, the channel grammar and the wire
//! codecs. This crate knows nothing of HTTP routes, configuration files or SQL text: the server
//! (`src/`) builds a [`node::Node`] from its settings and hands it to every actor.
//!
//! | file | owns |
//! | --- | --- |
//! | `session/` | [`session::Session`]: one actor per WebSocket connection; [`session::watchdog::ConnectionWatchdog`]: resets the connections of sessions that cannot write |
//! | `broker/` | [`broker::BrokerShard`] actors: channel → subscribers, fan-out, embedded history |
//! | `tenant_group.rs` | [`tenant_group::TenantGroup`] actors: a tenant's local connections |
//! | `scheduler.rs` | [`scheduler::SessionTimeoutScheduler`]: dining-session expiry and warnings |
//! | `pg_listener.rs` | [`pg_listener::ChangeFeedListener`]: the Postgres change outbox → entity notifications |
//! | `shutdown.rs` | the shutdown sequence: the signal, the tasks it waits for, the node's own threads |
//! | `storage.rs` | the error the storage seams (traits implemented in `src/store/`) report |
//! | `codec/` | wire protocols: native JSON, SignalR JSON and MessagePack |
//! | `channel.rs`, `rules.rs` | the channel grammar and who may use which channel |
//! | `publish_policy.rs` | the checks every client publish passes, in one order: rules, then quota |
//! | `envelope.rs`, `history.rs` | the one event envelope and in-memory history |
//! | `payload.rs` | the one validation of an event's data (depth and size), for every way in |
//! | `cluster/`, `redis_bridge.rs` | cluster mode: Redis commands and the [`redis_bridge::RedisBridge`] actor |
//! | `mailbox.rs` | per-actor-kind mailbox limits and the slow-consumer policy |
//! | `codes.rs` | every close code and error code |
//! | `hub_methods.rs` | the seam for hub methods implemented by the server (chat) |
//! | `chat_events.rs` | the chat hub's event names; which SignalR events carry their data bare |
//! | `presence_hook.rs` | the seam telling the server about each UserOnline/UserOffline |
//! | `activity.rs` | [`activity::ActivityRecorder`]: per-tenant recent events, rates, the activity stream |
//! | `quotas.rs` | per-tenant quotas: connections, publishes per second, subscriptions per connection |

pub mod activity;
pub mod authorizer;
pub mod broker;
pub mod change_feed;
pub mod channel;
pub mod chat_events;
pub mod cluster;
pub mod codec;
pub mod codes;
pub mod connection;
pub mod connection_limits;
pub mod envelope;
pub mod history;
pub mod hub_methods;
pub mod identity;
pub mod ids;
pub mod mailbox;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod payload;
pub mod presence_hook;
pub mod publish_policy;
pub mod quotas;
pub mod redis_bridge;
pub mod rules;
pub mod scheduler;
pub mod shutdown;
pub mod storage;
pub mod tenant_group;
