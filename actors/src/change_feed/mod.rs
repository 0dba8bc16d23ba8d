//! The change feed: relays the Postgres change outbox into entity notifications.
//!
//! A trigger (installed by a migration, see `docs/change-feed.md`) writes every row change of the
//! tables it is attached to into an outbox and `NOTIFY`s as a wake-up. Every node runs a [`ChangeFeedListener`],
//! but only the holder of the feed's lease (a Postgres advisory lock, behind [`ChangeFeed`])
//! relays: the others retry every `retry_interval` and take over when the holder dies, because its
//! lock dies with its connection. The holder reads the outbox in id order, publishes each change
//! through the node's one publish path ([`Node::publish`], source `change_feed`) on
//! `notifications:{EntityType}:{EntityId}`, and marks a row relayed only after the broker accepted
//! it. Nothing is lost while no node relays: the rows wait in the outbox. A holder that crashes
//! between publish and mark makes the next holder publish those rows again (at least once).
//!
//! The wake-up is only a hint: the holder also polls every `poll_interval`, so a lost `NOTIFY`
//! delays a change, never drops it.
//!
//! Messages: [`ListenerStatus`] (tests, admin → listener; replies with [`ListenerState`]);
//! [`LeaseChanged`] and [`Relayed`] (the relay loop → its actor).
//!
//! | file | owns |
//! | --- | --- |
//! | `entity_map.rs` | table ↔ entity type, the payload strategy, and the `EntityChanged` event for one change |
//! | `outbox.rs` | the storage seam: [`ChangeFeed`], its [`ChangeLease`] and an [`OutboxChange`] (implemented in `src/store/change_feed.rs`) |
//! | `listener.rs` | the [`ChangeFeedListener`] actor and its status |
//! | `relay.rs` | the loop that takes the lease and relays the outbox in order, its settings and what it reports |

mod entity_map;
mod listener;
mod outbox;
mod relay;

pub use entity_map::{
    entity_draft, ChangeType, EntityDraftError, EntityMap, EntityMapError, PayloadStrategy,
    DOCUMENT_TABLE_PREFIX, EVENT_ENTITY_CHANGED,
};
pub use listener::{ChangeFeedListener, ListenerState, ListenerStatus};
pub use outbox::{ChangeFeed, ChangeLease, OutboxChange};
pub use relay::{LeaseChanged, ListenerConfig, Relayed};

/// Source label of everything the listener publishes (`switchyard_published_total`).
pub const PUBLISH_SOURCE: &str = "change_feed";
