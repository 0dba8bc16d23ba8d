//! The Switchyard server: configuration, start-up and shutdown, the HTTP routes (WebSocket
//! upgrades, REST API, health, metrics), JWT verification. The actors live in the
//! `switchyard-actors` crate (`actors/`).
//!
//! | file | owns |
//! | --- | --- |
//! | `settings.rs` | layered configuration (`config/` + `SWITCHYARD__…` variables) |
//! | `startup.rs` | building a node, running it, the shutdown sequence |
//! | `auth.rs` | JWT verification → `Identity` |
//! | `caller.rs` | a request's authenticated caller (the `Caller` extractor, failures counted; `DataPlaneCaller` for the Azure-compatible API) |
//! | `azure_auth.rs` | Azure access-key tokens (`azure.access_key`) for the Azure-compatible REST API |
//! | `problem.rs` | HTTP errors as problem JSON |
//! | `negotiations.rs` | SignalR negotiate's single-use connection tokens |
//! | `routes/` | one file per group of routes |
//! | `store/` | the sqlx store (SQLite or Postgres): dining sessions, tenants, the change outbox |
//! | `authorizer.rs` | the database-checked channel rules (entity rows' tenants) |
//! | `background.rs` | the node's background actors: session-timeout scheduler, change listener |
//! | `chat/` | the chat hub's methods over the store, presence for chat partners, the offline webhook |

pub mod admin_samples;
pub mod auth;
pub mod authorizer;
pub mod azure_auth;
pub mod background;
pub mod caller;
pub mod chat;
pub mod http_server;
pub mod hub_transports;
pub mod negotiations;
pub mod parser_refusals;
pub mod problem;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
