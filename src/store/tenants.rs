//! Per-tenant dining-session timeouts: overrides of the `[scheduler]` defaults, set with
//! `PUT /api/v1/tenants/{t}`. Changing them moves the deadline of the tenant's Active sessions.

use switchyard_actors::ids::TenantKey;

use super::deadlines::{
    TenantTimeouts, TimeoutOverrides, RECOMPUTE_DEADLINES, SELECT_TENANT_TIMEOUTS,
};
use super::{ms, on_db, Store, StoreError};

const UPSERT_TENANT: &str = "INSERT INTO tenants \
     (tenant_key, inactive_timeout_secs, served_order_timeout_secs, warn_before_secs, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_key) DO UPDATE SET \
     inactive_timeout_secs = excluded.inactive_timeout_secs, \
     served_order_timeout_secs = excluded.served_order_timeout_secs, \
     warn_before_secs = excluded.warn_before_secs, \
     updated_at_ms = excluded.updated_at_ms";

impl Store {
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
