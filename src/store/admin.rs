//! Run-time changes made through the admin API, kept so a restart (and every other node sharing
//! the database) applies them: actor mailbox limits and per-tenant quotas.

use switchyard_actors::ids::TenantKey;
use switchyard_actors::mailbox::{ActorKind, MailboxSettings, SlowConsumerPolicy};
use switchyard_actors::quotas::TenantQuotas;

use super::{ms, on_db, Store, StoreError};

const SELECT_LIMITS: &str =
    "SELECT kind, mailbox, policy, max_queued_bytes FROM actor_limits ORDER BY kind";

const UPSERT_LIMITS: &str = "INSERT INTO actor_limits \
     (kind, mailbox, policy, max_queued_bytes, updated_at_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (kind) DO UPDATE SET mailbox = excluded.mailbox, policy = excluded.policy, \
     max_queued_bytes = excluded.max_queued_bytes, updated_at_ms = excluded.updated_at_ms";

const DELETE_LIMITS: &str = "DELETE FROM actor_limits WHERE kind = $1";

const SELECT_QUOTAS: &str = "SELECT tenant_key, max_connections, publishes_per_second, \
     max_subscriptions_per_connection FROM tenant_quotas ORDER BY tenant_key";

const UPSERT_QUOTAS: &str = "INSERT INTO tenant_quotas \
     (tenant_key, max_connections, publishes_per_second, max_subscriptions_per_connection, \
     updated_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_key) DO UPDATE SET \
     max_connections = excluded.max_connections, \
     publishes_per_second = excluded.publishes_per_second, \
     max_subscriptions_per_connection = excluded.max_subscriptions_per_connection, \
     updated_at_ms = excluded.updated_at_ms";

const DELETE_QUOTAS: &str = "DELETE FROM tenant_quotas WHERE tenant_key = $1";

fn count(field: &str, v: i64) -> Result<usize, StoreError> {
    usize::try_from(v).map_err(|_| StoreError::Corrupt(format!("{field} = {v}")))
}

impl Store {
    /// Every stored actor limit. Rows naming an unknown kind or policy are reported as corrupt.
    pub async fn actor_limits(&self) -> Result<Vec<(ActorKind, MailboxSettings)>, StoreError> {
        let rows: Vec<(String, i64, String, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(SELECT_LIMITS).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(kind, mailbox, policy, bytes)| {
                let kind = kind.parse::<ActorKind>().map_err(StoreError::Corrupt)?;
                let policy = match policy.as_str() {
                    "drop" => SlowConsumerPolicy::Drop,
                    "disconnect" => SlowConsumerPolicy::Disconnect,
                    other => return Err(StoreError::Corrupt(format!("policy {other:?}"))),
                };
                Ok((
                    kind,
                    MailboxSettings {
                        mailbox: count("mailbox", mailbox)?,
                        policy,
                        max_queued_bytes: count("max_queued_bytes", bytes)?,
                    },
                ))
            })
            .collect()
    }

    /// Stores one actor kind's limits.
    pub async fn save_actor_limits(
        &self,
        kind: ActorKind,
        s: MailboxSettings,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query(UPSERT_LIMITS)
                .bind(kind.as_str())
                .bind(ms(s.mailbox as u64))
                .bind(s.policy.as_str())
                .bind(ms(s.max_queued_bytes as u64))
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Forgets one actor kind's stored limits (back to the configuration).
    pub async fn delete_actor_limits(&self, kind: ActorKind) -> Result<(), StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query(DELETE_LIMITS)
                .bind(kind.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every tenant's own quotas.
    pub async fn tenant_quotas(&self) -> Result<Vec<(TenantKey, TenantQuotas)>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(SELECT_QUOTAS).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(tenant, conns, pubs, subs)| {
                let tenant = TenantKey::parse(&tenant)
                    .map_err(|e| StoreError::Corrupt(format!("tenant key {tenant:?}: {e}")))?;
                Ok((
                    tenant,
                    TenantQuotas {
                        max_connections: count("max_connections", conns)?,
                        publishes_per_second: u32::try_from(pubs).map_err(|_| {
                            StoreError::Corrupt(format!("publishes_per_second = {pubs}"))
                        })?,
                        max_subscriptions_per_connection: count(
                            "max_subscriptions_per_connection",
                            subs,
                        )?,
                    },
                ))
            })
            .collect()
    }

    /// Stores a tenant's own quotas.
    pub async fn save_tenant_quotas(
        &self,
        tenant: &TenantKey,
        q: TenantQuotas,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query(UPSERT_QUOTAS)
                .bind(tenant.as_str())
                .bind(ms(q.max_connections as u64))
                .bind(i64::from(q.publishes_per_second))
                .bind(ms(q.max_subscriptions_per_connection as u64))
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Returns a tenant to the default quotas.
    pub async fn delete_tenant_quotas(&self, tenant: &TenantKey) -> Result<(), StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query(DELETE_QUOTAS)
                .bind(tenant.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
