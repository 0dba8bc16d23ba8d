//! The Postgres change feed's storage side: the outbox the trigger fills
//! (`migrations/postgres/0002_change_feed.sql`), the relay lease, and row-tenant lookups for the
//! subscription check.
//!
//! The lease is a session-level advisory lock (`pg_try_advisory_lock(lock_key)`) held on a
//! dedicated connection, and every outbox statement of the holder runs on that same connection:
//! if the connection dies, the lock is gone and the holder's next statement fails, so two nodes
//! never relay at once. Wake-ups come from a `LISTEN` on a second connection, read by a small task
//! that only pokes a [`Notify`] (the relay loop waits on it with a timeout, which is cancel-safe).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::Connection;
use switchyard_actors::change_feed::{ChangeFeed, ChangeLease, ChangeType, OutboxChange};
use switchyard_actors::storage::StorageError;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

use super::{Store, StoreError};

/// The `NOTIFY` channel of the trigger function.
pub const NOTIFY_CHANNEL: &str = "switchyard_changes";

/// Pause after the wake-up connection fails, before it reconnects.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

const PENDING: &str = "SELECT id, table_name, entity_id, operation, tenant_key, \
     row_data::text AS row_data, \
     (extract(epoch FROM changed_at) * 1000)::bigint AS changed_at_ms \
     FROM switchyard_change_outbox WHERE relayed_at IS NULL ORDER BY id LIMIT $1";

/// Whose row an entity is, for tenant isolation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntityOwner {
    /// No such table or row.
    Missing,
    /// The row has no tenant (its table has no `tenant_key`, or it is NULL).
    Shared,
    Tenant(String),
}

impl Store {
    /// The tenant of row `entity_id` of `table` (Postgres only).
    pub async fn entity_owner(
        &self,
        table: &str,
        entity_id: &str,
    ) -> Result<EntityOwner, StoreError> {
        let pool = self
            .postgres()
            .ok_or(StoreError::NeedsPostgres("the change feed"))?;
        let (present, tenant): (Option<bool>, Option<String>) =
            sqlx::query_as("SELECT present, tenant_key FROM switchyard_entity_tenant($1, $2)")
                .bind(table)
                .bind(entity_id)
                .fetch_one(pool)
                .await?;
        Ok(match (present.unwrap_or(false), tenant) {
            (false, _) => EntityOwner::Missing,
            (true, None) => EntityOwner::Shared,
            (true, Some(t)) => EntityOwner::Tenant(t),
        })
    }

    /// Changes in the outbox not yet relayed (for health and tests).
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let pool = self
            .postgres()
            .ok_or(StoreError::NeedsPostgres("the change feed"))?;
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM switchyard_change_outbox WHERE relayed_at IS NULL",
        )
        .fetch_one(pool)
        .await?)
    }
}

/// The feed over one Postgres database; see the module docs.
pub struct PgChangeFeed {
    pool: PgPool,
    lock_key: i64,
    /// A standby node's connection, kept between attempts to take the lock.
    standby: Arc<Mutex<Option<PgConnection>>>,
}

impl PgChangeFeed {
    pub fn new(pool: PgPool, lock_key: i64) -> Self {
        Self {
            pool,
            lock_key,
            standby: Arc::new(Mutex::new(None)),
        }
    }
}

fn storage(e: sqlx::Error) -> StorageError {
    StorageError::new(e)
}

impl ChangeFeed for PgChangeFeed {
    fn try_lead(&self) -> BoxFuture<'static, Result<Option<Box<dyn ChangeLease>>, StorageError>> {
        let (pool, key, standby) = (self.pool.clone(), self.lock_key, self.standby.clone());
        Box::pin(async move {
            let mut slot = standby.lock().await;
            let mut conn = match slot.take() {
                Some(c) => c,
                None => PgConnection::connect_with(&pool.connect_options())
                    .await
                    .map_err(storage)?,
            };
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await
                .map_err(storage)?;
            if !got {
                *slot = Some(conn);
                return Ok(None);
            }
            drop(slot);
            let wake = Arc::new(Notify::new());
            let listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = unlock(&mut conn, key).await;
                    let _ = conn.close().await;
                    return Err(storage(e));
                }
            };
            let lease = PgLease {
                conn,
                lock_key: key,
                wake: wake.clone(),
                listen: AbortOnDrop(tokio::spawn(listen(listener, wake))),
            };
            Ok(Some(Box::new(lease) as Box<dyn ChangeLease>))
        })
    }
}

/// Pokes `wake` on every notification; reconnects (through sqlx) when the connection drops.
async fn listen(mut listener: PgListener, wake: Arc<Notify>) {
    let mut listening = false;
    loop {
        if !listening {
            match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => listening = true,
                Err(e) => {
                    log::warn!("change feed: LISTEN {NOTIFY_CHANNEL} failed: {e}");
                    tokio::time::sleep(LISTEN_RETRY).await;
                    continue;
                }
            }
        }
        match listener.recv().await {
            Ok(_) => wake.notify_one(),
            Err(e) => {
                // The relay still polls; wake it so nothing waits for the full poll interval.
                log::warn!("change feed: wake-up connection failed: {e}");
                wake.notify_one();
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        }
    }
}

async fn unlock(conn: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}

/// The held advisory lock and the connection that holds it.
struct PgLease {
    conn: PgConnection,
    lock_key: i64,
    wake: Arc<Notify>,
    listen: AbortOnDrop,
}

/// The wake-up task, stopped with its lease.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    /// Stops the task and waits until it is gone, so its connection is closed when this returns.
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    table_name: String,
    entity_id: String,
    operation: String,
    tenant_key: Option<String>,
    row_data: Option<String>,
    changed_at_ms: i64,
}

impl ChangeLease for PgLease {
    fn wait_for_changes(&mut self, at_most: Duration) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let _ = tokio::time::timeout(at_most, self.wake.notified()).await;
            Ok(())
        })
    }

    fn pending(&mut self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxChange>, StorageError>> {
        Box::pin(async move {
            let rows: Vec<OutboxRow> = sqlx::query_as(PENDING)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut self.conn)
                .await
                .map_err(storage)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let Some(change) = ChangeType::from_operation(&r.operation) else {
                    return Err(StorageError::new(format!(
                        "outbox row {} has unknown operation {:?}",
                        r.id, r.operation
                    )));
                };
                let row = r
                    .row_data
                    .map(RawValue::from_string)
                    .transpose()
                    .map_err(|e| StorageError::new(format!("outbox row {}: {e}", r.id)))?;
                out.push(OutboxChange {
                    id: r.id,
                    table: r.table_name,
                    entity_id: r.entity_id,
                    change,
                    tenant_key: r.tenant_key,
                    row,
                    changed_at_ms: u64::try_from(r.changed_at_ms).unwrap_or(0),
                });
            }
            Ok(out)
        })
    }

    fn mark_relayed(&mut self, ids: Vec<i64>) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE switchyard_change_outbox SET relayed_at = now() WHERE id = ANY($1)",
            )
            .bind(&ids)
            .execute(&mut self.conn)
            .await
            .map_err(storage)?;
            Ok(())
        })
    }

    fn prune(&mut self, retention: Duration) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move {
            let done = sqlx::query(
                "DELETE FROM switchyard_change_outbox \
                 WHERE relayed_at < now() - make_interval(secs => $1)",
            )
            .bind(retention.as_secs_f64())
            .execute(&mut self.conn)
            .await
            .map_err(storage)?;
            Ok(done.rows_affected())
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let PgLease {
                mut conn,
                lock_key,
                listen,
                ..
            } = *self;
            listen.stop().await;
            if let Err(e) = unlock(&mut conn, lock_key).await {
                log::debug!("change feed: unlocking failed (closing the connection frees it): {e}");
            }
            let _ = conn.close().await;
        })
    }
}
