//! Who may do what: the one place every entry point asks before a subscribe or a publish.
//!
//! | file | owns |
//! | --- | --- |
//! | `rules.rs` | the channel table (DESIGN.md): identity × channel → allow, deny naming the rule, or look up stored data; the hub's default channels |
//! | `authorizer.rs` | the seam for the rules that need stored data ([`ChannelAuthorizer`], implemented by the server over its store) |
//! | `access.rs` | [`access::decide`] and [`access::check`]: the rules, then the authorizer when they say "look up" |
//! | `publish.rs` | [`publish::admit`]: a client's publish — access, then the tenant's publish quota |
//! | `data_plane.rs` | the Azure-compatible REST API: Service callers only, a tenant's token within its tenant, where hubs and users are |
//! | `refusal.rs` | [`Refusal`]: why the policy said no, and its wire error code |
//!
//! Every entry point goes through here: REST publish and channel history, a `/ws` `subscribe` or
//! `publish` (native and SignalR, hub methods' joins included), chat's conversation methods, and the
//! Redis ingest stream. Each wire turns a [`Refusal`] into its own error in one place: native and
//! SignalR through [`Refusal::code`], problem JSON through the server's `From<Refusal> for ApiError`.

pub mod access;
pub mod authorizer;
pub mod data_plane;
pub mod publish;
pub mod refusal;
pub mod rules;

pub use access::Action;
pub use authorizer::{ChannelAuthorizer, NoLookups};
pub use refusal::Refusal;
pub use rules::{default_channels, RuleViolation};
