//! Switchyard's actors, the messages between them, the envelope, the channel grammar and the wire
//! codecs. This crate knows nothing of HTTP routes, configuration files or SQL text: the server
//! (`src/`) builds a [`node::Node`] from its settings and hands it to every actor.
//!
//! | file | owns |
//! | --- | --- |
//! | `connection/` | [`connection::Connection`]: one actor per WebSocket connection, around its connection core (decisions without the socket); [`connection::watchdog::ConnectionWatchdog`]: resets the connections of actors that cannot write |
//! | `broker/` | [`broker::BrokerShard`] actors: channel → subscribers, fan-out, embedded history; [`broker::Publisher`]: the one publish path |
//! | `engine/` | the engine seam ([`engine::BrokerEngine`]) and the engines: `embedded.rs`, `redis/` (broker and presence engines, Redis commands, the [`engine::redis::bridge::RedisBridge`] actor, the ingest stream) |
//! | `presence.rs` | the presence seam ([`presence::PresenceEngine`], implemented by each engine); the UserOnline/UserOffline announcer and the hook telling the server |
//! | `tenant_group.rs` | [`tenant_group::TenantGroup`] actors: a tenant's local connections; the registry |
//! | `scheduler.rs` | [`scheduler::SessionTimeoutScheduler`]: dining-session expiry and warnings |
//! | `change_feed/` | [`change_feed::ChangeFeedListener`]: the Postgres change outbox → entity notifications |
//! | `shutdown.rs` | the shutdown sequence: the signal, the tasks it waits for, the node's own threads |
//! | `storage.rs` | the error the storage seams (traits implemented in `src/store/`) report |
//! | `codec/` | wire protocols: native JSON, SignalR JSON and MessagePack |
//! | `channel.rs` | the channel grammar |
//! | `policy/` | who may do what: the channel rules, the stored-data authorizer seam, publish admission (rules, then quota), the one [`policy::Refusal`] |
//! | `publish_path.rs` | the interface of the one publish path, for actors that publish their own events |
//! | `envelope.rs`, `history.rs` | the one event envelope and in-memory history |
//! | `payload.rs` | the one validation of an event's data (depth and size), for every way in |
//! | `mailbox.rs` | per-actor-kind mailbox limits and the slow-consumer policy |
//! | `metered.rs` | measured mailboxes: the wrapper every sender of a measured kind uses (depth, peak, full, handled, time per message) |
//! | `codes.rs` | every close code and error code |
//! | `hub_methods.rs` | the seam for hub methods implemented by the server (chat) |
//! | `hub_commands.rs` | what the Azure-compatible REST API asks of one hub connection (join, leave, close), carried on its `connection:{id}` channel |
//! | `chat_events.rs` | the chat hub's event names; which SignalR events carry their data bare |
//! | `activity.rs` | [`activity::ActivityRecorder`]: per-tenant recent events, rates, the activity stream |
//! | `quotas.rs` | per-tenant quotas: connections, publishes per second, subscriptions per connection |

pub mod activity;
pub mod broker;
pub mod change_feed;
pub mod channel;
pub mod chat_events;
pub mod codec;
pub mod codes;
pub mod connection;
pub mod connection_limits;
pub mod engine;
pub mod envelope;
pub mod history;
pub mod hub_arguments;
pub mod hub_commands;
pub mod hub_methods;
pub mod identity;
pub mod ids;
pub mod mailbox;
pub mod metered;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod payload;
pub mod policy;
pub mod presence;
pub mod publish_path;
pub mod quotas;
pub mod scheduler;
pub mod shutdown;
pub mod storage;
pub mod tenant_group;
