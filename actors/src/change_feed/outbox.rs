//! The storage seam of the change feed: a lease one node at a time holds, and the outbox rows it
//! reads. Implemented over Postgres in `src/store/change_feed.rs`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use super::ChangeType;
use crate::storage::StorageError;

/// One row of the outbox: a change the trigger recorded.
#[derive(Clone, Debug)]
pub struct OutboxChange {
    /// The outbox's sequence number (relay order).
    pub id: i64,
    pub table: String,
    pub entity_id: String,
    pub change: ChangeType,
    /// The row's `tenant_key`, when the table has one.
    pub tenant_key: Option<String>,
    /// The row as JSON (after the change; before it for deletes).
    pub row: Option<Box<RawValue>>,
    /// When the change was made, milliseconds since the Unix epoch.
    pub changed_at_ms: u64,
}

/// The feed as the listener sees it: a lease that one node at a time can hold.
pub trait ChangeFeed: Send + Sync + 'static {
    /// Tries to take the lease; `Ok(None)` when another node holds it.
    fn try_lead(&self) -> BoxFuture<'static, Result<Option<Box<dyn ChangeLease>>, StorageError>>;
}

/// The held lease. Every method fails once the lease is lost (its connection died), and the
/// listener then goes back to trying to take it.
pub trait ChangeLease: Send {
    /// Resolves on a wake-up from the database, or after `at_most`.
    fn wait_for_changes(&mut self, at_most: Duration) -> BoxFuture<'_, Result<(), StorageError>>;
    /// The oldest `limit` changes not yet relayed, in outbox order.
    fn pending(&mut self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxChange>, StorageError>>;
    /// Marks changes relayed (after the broker accepted them).
    fn mark_relayed(&mut self, ids: Vec<i64>) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Deletes relayed changes older than `retention`.
    fn prune(&mut self, retention: Duration) -> BoxFuture<'_, Result<u64, StorageError>>;
    /// Gives the lease up so another node can take it at once.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}
