//! Dining sessions: a table's guests from seating to payment (`docs/dining-sessions.md`).
//!
//! Each row carries its current deadline (`expires_at_ms`) and the reason it will expire with,
//! recomputed from the tenant's timeouts whenever the session, or the tenant's timeouts, change.
//! That keeps every scheduler claim a single conditional `UPDATE … RETURNING`: on Postgres the
//! candidate rows are locked with `FOR UPDATE SKIP LOCKED` so concurrent nodes never wait for or
//! double-claim each other's rows; SQLite has a single writer, so the conditional update is
//! enough.

use std::fmt;
use std::str::FromStr;

use futures_util::future::BoxFuture;
use serde_json::Value;
use switchyard_actors::ids::{SessionKey, TenantKey};
use switchyard_actors::scheduler::{
    ExpiredSession, ExpiringSession, ExpiryReason, SessionExpiryStore,
};
use switchyard_actors::storage::StorageError;

use super::deadlines::{TimeoutRow, RECOMPUTE_DEADLINES, SELECT_TENANT_TIMEOUTS};
use super::{on_db, Store, StoreError};

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SessionStatus {
    Active,
    /// Expired by the scheduler (announced).
    Expired,
    /// Closed by staff (never announced).
    Closed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "Active",
            SessionStatus::Expired => "Expired",
            SessionStatus::Closed => "Closed",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Active" => Ok(SessionStatus::Active),
            "Expired" => Ok(SessionStatus::Expired),
            "Closed" => Ok(SessionStatus::Closed),
            other => Err(format!(
                "unknown session status {other:?} (expected Active, Expired or Closed)"
            )),
        }
    }
}

/// One dining session as stored.
#[derive(Clone, Debug)]
pub struct DiningSession {
    pub session_id: String,
    pub tenant_key: String,
    pub table_number: Value,
    pub status: SessionStatus,
    pub opened_at_ms: i64,
    pub last_activity_ms: i64,
    pub has_orders: bool,
    pub all_served: bool,
    /// The deadline (for an ended session: the one it had).
    pub expires_at_ms: i64,
    /// The reason it will expire with (Active), or did (Expired).
    pub expiry_reason: Option<ExpiryReason>,
    /// When it expired or was closed.
    pub ended_at_ms: Option<i64>,
}

/// What a session's activity report changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Activity {
    /// The session has orders (a new order also sets `all_served = false`).
    pub has_orders: Option<bool>,
    /// Every order is served (starts the served-order timeout).
    pub all_served: Option<bool>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    session_id: String,
    tenant_key: String,
    table_number: String,
    status: String,
    opened_at_ms: i64,
    last_activity_ms: i64,
    has_orders: bool,
    all_served: bool,
    expires_at_ms: i64,
    deadline_reason: String,
    ended_at_ms: Option<i64>,
    expiry_reason: Option<String>,
}

impl TryFrom<SessionRow> for DiningSession {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("session {}: {what}", r.session_id));
        let status: SessionStatus = r.status.parse().map_err(corrupt)?;
        let reason = match status {
            SessionStatus::Active => Some(&r.deadline_reason),
            SessionStatus::Expired => r.expiry_reason.as_ref(),
            SessionStatus::Closed => None,
        };
        let expiry_reason = reason
            .map(|s| s.parse::<ExpiryReason>())
            .transpose()
            .map_err(corrupt)?;
        let table_number = serde_json::from_str(&r.table_number)
            .map_err(|e| corrupt(format!("table_number: {e}")))?;
        Ok(DiningSession {
            session_id: r.session_id,
            tenant_key: r.tenant_key,
            table_number,
            status,
            opened_at_ms: r.opened_at_ms,
            last_activity_ms: r.last_activity_ms,
            has_orders: r.has_orders,
            all_served: r.all_served,
            expires_at_ms: r.expires_at_ms,
            expiry_reason,
            ended_at_ms: r.ended_at_ms,
        })
    }
}

macro_rules! session_columns {
    () => {
        "session_id, tenant_key, table_number, status, opened_at_ms, last_activity_ms, \
         has_orders, all_served, expires_at_ms, deadline_reason, ended_at_ms, expiry_reason"
    };
}

const SELECT_SESSION: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM dining_sessions WHERE tenant_key = $1 AND session_id = $2"
);

const LIST_SESSIONS: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM dining_sessions WHERE tenant_key = $1 AND ($2 IS NULL OR status = $2) \
     ORDER BY opened_at_ms DESC, session_id LIMIT $3"
);

const INSERT_SESSION: &str = "INSERT INTO dining_sessions \
     (session_id, tenant_key, table_number, status, opened_at_ms, last_activity_ms, expires_at_ms) \
     VALUES ($1, $2, $3, 'Active', $4, $4, $4) ON CONFLICT (session_id) DO NOTHING";

const UPDATE_ACTIVITY: &str = "UPDATE dining_sessions SET last_activity_ms = $3, \
     has_orders = COALESCE($4, has_orders), \
     all_served = COALESCE($5, all_served), \
     served_at_ms = CASE WHEN COALESCE($5, all_served) THEN COALESCE(served_at_ms, $3) ELSE NULL END \
     WHERE tenant_key = $1 AND session_id = $2 AND status = 'Active'";

const CLOSE_SESSION: &str = "UPDATE dining_sessions SET status = 'Closed', ended_at_ms = $3 \
     WHERE tenant_key = $1 AND session_id = $2 AND status = 'Active'";

/// Claims due expiries: `$1` now, `$2` limit; `$lock` is the backend's row-lock clause.
macro_rules! claim_expiries_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE dining_sessions SET status = 'Expired', ended_at_ms = $1, \
             expiry_reason = deadline_reason \
             WHERE status = 'Active' AND session_id IN (\
               SELECT session_id FROM dining_sessions \
               WHERE status = 'Active' AND expires_at_ms <= $1 \
               ORDER BY expires_at_ms LIMIT $2 ",
            $lock,
            ") RETURNING session_id, tenant_key, table_number, expiry_reason"
        )
    };
}

/// Claims due warnings: `$1` now, `$2` limit. Only before the deadline, once per deadline.
macro_rules! claim_warnings_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE dining_sessions SET warned_at_ms = $1 \
             WHERE status = 'Active' AND warned_at_ms IS NULL AND session_id IN (\
               SELECT session_id FROM dining_sessions \
               WHERE status = 'Active' AND warned_at_ms IS NULL AND warn_before_ms > 0 \
                 AND expires_at_ms - warn_before_ms <= $1 AND expires_at_ms > $1 \
               ORDER BY expires_at_ms LIMIT $2 ",
            $lock,
            ") RETURNING session_id, tenant_key, expires_at_ms"
        )
    };
}

impl Store {
    /// Opens a session at `table_number`; [`StoreError::SessionExists`] if the id is taken.
    pub async fn open_session(
        &self,
        tenant: &TenantKey,
        session: &SessionKey,
        table_number: &Value,
        now_ms: i64,
    ) -> Result<DiningSession, StoreError> {
        let table = table_number.to_string();
        let (t, id) = (tenant.as_str(), session.as_str());
        // Writes come first in every transaction: a SQLite reader that later writes could
        // deadlock with another writer instead of waiting for it.
        let row: Option<SessionRow> = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(INSERT_SESSION)
                .bind(id)
                .bind(t)
                .bind(&table)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                None
            } else {
                let overrides: Option<TimeoutRow> = sqlx::query_as(SELECT_TENANT_TIMEOUTS)
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?;
                let eff = self.effective(overrides);
                sqlx::query(RECOMPUTE_DEADLINES)
                    .bind(eff.inactive_ms())
                    .bind(eff.served_order_ms())
                    .bind(eff.warn_before_ms())
                    .bind(t)
                    .bind(Some(id))
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as(SELECT_SESSION)
                    .bind(t)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Some(row)
            }
        });
        match row {
            Some(r) => r.try_into(),
            None => Err(StoreError::SessionExists(id.to_owned())),
        }
    }

    /// One session of `tenant` ([`StoreError::SessionNotFound`] for another tenant's).
    pub async fn session(
        &self,
        tenant: &TenantKey,
        session: &str,
    ) -> Result<DiningSession, StoreError> {
        let row: Option<SessionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(SELECT_SESSION)
                .bind(tenant.as_str())
                .bind(session)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::SessionNotFound(session.to_owned()))?
            .try_into()
    }

    /// The tenant's sessions, newest first, optionally of one status.
    pub async fn sessions(
        &self,
        tenant: &TenantKey,
        status: Option<SessionStatus>,
        limit: u32,
    ) -> Result<Vec<DiningSession>, StoreError> {
        let status = status.map(|s| s.as_str());
        let rows: Vec<SessionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(LIST_SESSIONS)
                .bind(tenant.as_str())
                .bind(status)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(DiningSession::try_from).collect()
    }

    /// Records activity on an Active session and moves its deadline.
    pub async fn record_activity(
        &self,
        tenant: &TenantKey,
        session: &str,
        activity: Activity,
        now_ms: i64,
    ) -> Result<DiningSession, StoreError> {
        let t = tenant.as_str();
        let row: Option<SessionRow> = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(UPDATE_ACTIVITY)
                .bind(t)
                .bind(session)
                .bind(now_ms)
                .bind(activity.has_orders)
                .bind(activity.all_served)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                None
            } else {
                let overrides: Option<TimeoutRow> = sqlx::query_as(SELECT_TENANT_TIMEOUTS)
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?;
                let eff = self.effective(overrides);
                sqlx::query(RECOMPUTE_DEADLINES)
                    .bind(eff.inactive_ms())
                    .bind(eff.served_order_ms())
                    .bind(eff.warn_before_ms())
                    .bind(t)
                    .bind(Some(session))
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as(SELECT_SESSION)
                    .bind(t)
                    .bind(session)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Some(row)
            }
        });
        match row {
            Some(r) => r.try_into(),
            None => Err(self.not_active(tenant, session).await),
        }
    }

    /// Closes a session on staff's word (never announced). Closing a Closed session again
    /// returns it unchanged; an Expired one is [`StoreError::SessionNotActive`].
    pub async fn close_session(
        &self,
        tenant: &TenantKey,
        session: &str,
        now_ms: i64,
    ) -> Result<DiningSession, StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query(CLOSE_SESSION)
                .bind(tenant.as_str())
                .bind(session)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        let s = self.session(tenant, session).await?;
        match s.status {
            SessionStatus::Closed => Ok(s),
            status => Err(StoreError::SessionNotActive {
                id: s.session_id,
                status,
            }),
        }
    }

    /// Why an update matched no Active row: unknown, or not Active any more.
    async fn not_active(&self, tenant: &TenantKey, session: &str) -> StoreError {
        match self.session(tenant, session).await {
            Ok(s) => StoreError::SessionNotActive {
                id: s.session_id,
                status: s.status,
            },
            Err(e) => e,
        }
    }

    async fn claim_expiries(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<ExpiredSession>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>)> = match &self.db {
            super::Db::Sqlite(pool) => {
                sqlx::query_as(claim_expiries_sql!(""))
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            super::Db::Postgres(pool) => {
                sqlx::query_as(claim_expiries_sql!("FOR UPDATE SKIP LOCKED"))
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
        };
        let claimed = rows.into_iter().map(|(id, tenant, table, reason)| {
            let corrupt = |what: String| StoreError::Corrupt(format!("session {id}: {what}"));
            Ok(ExpiredSession {
                tenant: TenantKey::parse(&tenant)
                    .map_err(|e| corrupt(format!("tenant key {e}")))?,
                table_number: serde_json::from_str(&table)
                    .map_err(|e| corrupt(format!("table_number: {e}")))?,
                reason: reason.unwrap_or_default().parse().map_err(corrupt)?,
                session_id: id.clone(),
            })
        });
        Ok(readable(claimed))
    }

    async fn claim_warnings(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<ExpiringSession>, StoreError> {
        let rows: Vec<(String, String, i64)> = match &self.db {
            super::Db::Sqlite(pool) => {
                sqlx::query_as(claim_warnings_sql!(""))
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            super::Db::Postgres(pool) => {
                sqlx::query_as(claim_warnings_sql!("FOR UPDATE SKIP LOCKED"))
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
        };
        let claimed = rows.into_iter().map(|(id, tenant, expires_at)| {
            Ok(ExpiringSession {
                tenant: TenantKey::parse(&tenant)
                    .map_err(|e| StoreError::Corrupt(format!("session {id}: tenant key {e}")))?,
                session_id: id,
                expires_at_ms: u64::try_from(expires_at).unwrap_or(0),
            })
        });
        Ok(readable(claimed))
    }
}

/// The claimed rows that can be announced. A row that cannot be read stays claimed (it would
/// fail again on every scan) and is logged for an operator.
fn readable<T>(claimed: impl Iterator<Item = Result<T, StoreError>>) -> Vec<T> {
    claimed
        .filter_map(|r| {
            r.map_err(|e| log::error!("session scheduler: claimed an unreadable session: {e}"))
                .ok()
        })
        .collect()
}

/// The scheduler's view of the store.
impl SessionExpiryStore for Store {
    fn claim_warnings(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<ExpiringSession>, StorageError>> {
        let store = self.clone();
        Box::pin(async move {
            store
                .claim_warnings(super::ms(now_ms), limit as i64)
                .await
                .map_err(StorageError::new)
        })
    }

    fn claim_expiries(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<ExpiredSession>, StorageError>> {
        let store = self.clone();
        Box::pin(async move {
            store
                .claim_expiries(super::ms(now_ms), limit as i64)
                .await
                .map_err(StorageError::new)
        })
    }
}
