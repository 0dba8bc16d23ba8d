//! Per-tenant dining-session timeouts: overrides of the `[scheduler]` defaults, set with
//! `PUT /api/v1/tenants/{t}`. Changing them moves the deadline of the tenant's Active sessions.

use switchyard_actors::ids::TenantKey;

use super::sessions::RECOMPUTE_DEADLINES;
use super::{ms, on_db, SessionDefaults, Store, StoreError};

pub(super) const SELECT_TENANT_TIMEOUTS: &str = "SELECT inactive_timeout_secs, \
     served_order_timeout_secs, warn_before_secs FROM tenants WHERE tenant_key = $1";

const UPSERT_TENANT: &str = "INSERT INTO tenants \
     (tenant_key, inactive_timeout_secs, served_order_timeout_secs, warn_before_secs, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_key) DO UPDATE SET \
     inactive_timeout_secs = excluded.inactive_timeout_secs, \
     served_order_timeout_secs = excluded.served_order_timeout_secs, \
     warn_before_secs = excluded.warn_before_secs, \
     updated_at_ms = excluded.updated_at_ms";

const MILLIS_PER_SEC: u64 = 1000;

/// A tenant's own values; `None` = the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub inactive_timeout_secs: Option<u64>,
    pub served_order_timeout_secs: Option<u64>,
    pub warn_before_secs: Option<u64>,
}

/// The timeouts in force for a tenant, and which of them are its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantTimeouts {
    pub inactive_timeout_secs: u64,
    pub served_order_timeout_secs: u64,
    pub warn_before_secs: u64,
    pub overrides: TimeoutOverrides,
}

impl TenantTimeouts {
    pub(super) fn inactive_ms(&self) -> i64 {
        ms(self.inactive_timeout_secs.saturating_mul(MILLIS_PER_SEC))
    }
    pub(super) fn served_order_ms(&self) -> i64 {
        ms(self
            .served_order_timeout_secs
            .saturating_mul(MILLIS_PER_SEC))
    }
    pub(super) fn warn_before_ms(&self) -> i64 {
        ms(self.warn_before_secs.saturating_mul(MILLIS_PER_SEC))
    }
}

fn secs(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

impl SessionDefaults {
    fn with(&self, overrides: TimeoutOverrides) -> TenantTimeouts {
        TenantTimeouts {
            inactive_timeout_secs: overrides
                .inactive_timeout_secs
                .unwrap_or(self.inactive_timeout_secs),
            served_order_timeout_secs: overrides
                .served_order_timeout_secs
                .unwrap_or(self.served_order_timeout_secs),
            warn_before_secs: overrides.warn_before_secs.unwrap_or(self.warn_before_secs),
            overrides,
        }
    }
}

impl Store {
    /// The effective timeouts from a `tenants` row (or none).
    pub(super) fn effective(
        &self,
        row: Option<(Option<i64>, Option<i64>, Option<i64>)>,
    ) -> TenantTimeouts {
        let overrides = row
            .map(|(i, s, w)| TimeoutOverrides {
                inactive_timeout_secs: secs(i),
                served_order_timeout_secs: secs(s),
                warn_before_secs: secs(w),
            })
            .unwrap_or_default();
        self.defaults.with(overrides)
    }

    /// The timeouts in force for `tenant`.
    pub async fn tenant_timeouts(&self, tenant: &TenantKey) -> Result<TenantTimeouts, StoreError> {
        let row = on_db!(&self.db, pool => {
            sqlx::query_as(SELECT_TENANT_TIMEOUTS)
                .bind(tenant.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(self.effective(row))
    }

    /// Replaces the tenant's overrides and moves the deadlines of its Active sessions.
    pub async fn set_tenant_timeouts(
        &self,
        tenant: &TenantKey,
        overrides: TimeoutOverrides,
        now_ms: i64,
    ) -> Result<TenantTimeouts, StoreError> {
        let eff = self.defaults.with(overrides);
        let opt = |v: Option<u64>| v.map(ms);
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(UPSERT_TENANT)
                .bind(tenant.as_str())
                .bind(opt(overrides.inactive_timeout_secs))
                .bind(opt(overrides.served_order_timeout_secs))
                .bind(opt(overrides.warn_before_secs))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            let moved = sqlx::query(RECOMPUTE_DEADLINES)
                .bind(eff.inactive_ms())
                .bind(eff.served_order_ms())
                .bind(eff.warn_before_ms())
                .bind(tenant.as_str())
                .bind(None::<&str>)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            log::info!("tenant {tenant}: session timeouts set to {eff:?}; {moved} active sessions rescheduled");
        });
        Ok(eff)
    }
}
