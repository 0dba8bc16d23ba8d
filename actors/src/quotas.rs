//! Per-tenant quotas: how many connections a tenant may hold on a node, how many events its
//! members and back ends may publish per second, and how many subscriptions one of its
//! connections may hold.
//!
//! Defaults come from configuration (`[quotas]`); operators override them per tenant through the
//! admin API. The [`QuotaBook`] is read on connect, subscribe and publish — never on the fan-out
//! path — so a short read lock is fine there. Each refusal is counted in
//! `switchyard_quota_exceeded_total{tenant, quota}` (tenant keys are a bounded set chosen by the
//! operator; no user ever appears in a label).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::ids::TenantKey;
use crate::metrics::Metrics;

/// One tenant's quotas (configuration `[quotas]`, and the admin API's JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuotas {
    /// Open connections of the tenant on one node.
    pub max_connections: usize,
    /// Events published to the tenant's channels (or by its members) per second, on one node.
    pub publishes_per_second: u32,
    /// Subscriptions one connection of the tenant may hold (never above `session.max_subscriptions`).
    pub max_subscriptions_per_connection: usize,
}

/// Sanity bounds for configured and run-time quotas.
pub const MAX_CONNECTIONS_RANGE: (usize, usize) = (1, 10_000_000);
pub const PUBLISHES_RANGE: (u32, u32) = (1, 10_000_000);
pub const SUBSCRIPTIONS_RANGE: (usize, usize) = (1, 100_000);

/// Why a quota value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be between {min} and {max}, got {got}")]
pub struct QuotaValueError {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
    pub got: u64,
}

fn check(field: &'static str, got: u64, (min, max): (u64, u64)) -> Result<(), QuotaValueError> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(QuotaValueError {
            field,
            min,
            max,
            got,
        })
    }
}

impl TenantQuotas {
    pub fn validate(&self) -> Result<(), QuotaValueError> {
        let wide = |(a, b): (usize, usize)| (a as u64, b as u64);
        check(
            "maxConnections",
            self.max_connections as u64,
            wide(MAX_CONNECTIONS_RANGE),
        )?;
        check(
            "publishesPerSecond",
            u64::from(self.publishes_per_second),
            (u64::from(PUBLISHES_RANGE.0), u64::from(PUBLISHES_RANGE.1)),
        )?;
        check(
            "maxSubscriptionsPerConnection",
            self.max_subscriptions_per_connection as u64,
            wide(SUBSCRIPTIONS_RANGE),
        )
    }
}

/// Which quota a refusal concerns (the `quota` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    Connections,
    Publishes,
    Subscriptions,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 3] = [
        QuotaKind::Connections,
        QuotaKind::Publishes,
        QuotaKind::Subscriptions,
    ];

    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Connections => "connections",
            QuotaKind::Publishes => "publishes",
            QuotaKind::Subscriptions => "subscriptions",
        }
    }
}

/// A publish refused by the tenant's rate quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant} may publish at most {limit} events per second; retry shortly")]
pub struct PublishQuotaExceeded {
    pub tenant: TenantKey,
    pub limit: u32,
}

struct Book {
    defaults: TenantQuotas,
    overrides: HashMap<TenantKey, TenantQuotas>,
    /// One publish limiter per tenant that published, rebuilt when its quota changes.
    limiters: HashMap<TenantKey, (u32, Arc<DefaultDirectRateLimiter>)>,
}

/// Every tenant's quotas on this node (see the module docs).
pub struct QuotaBook {
    inner: RwLock<Book>,
    metrics: Arc<Metrics>,
}

impl QuotaBook {
    pub fn new(defaults: TenantQuotas, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: RwLock::new(Book {
                defaults,
                overrides: HashMap::new(),
                limiters: HashMap::new(),
            }),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Book> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured defaults.
    pub fn defaults(&self) -> TenantQuotas {
        self.read().defaults
    }

    /// The quotas in force for `tenant`, and whether they are the tenant's own.
    pub fn get(&self, tenant: &TenantKey) -> (TenantQuotas, bool) {
        let book = self.read();
        match book.overrides.get(tenant) {
            Some(q) => (*q, true),
            None => (book.defaults, false),
        }
    }

    /// Every tenant with its own quotas.
    pub fn overrides(&self) -> Vec<(TenantKey, TenantQuotas)> {
        let mut all: Vec<_> = self
            .read()
            .overrides
            .iter()
            .map(|(t, q)| (t.clone(), *q))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Gives `tenant` its own quotas (validated), effective at once.
    pub fn set(&self, tenant: &TenantKey, q: TenantQuotas) -> Result<(), QuotaValueError> {
        q.validate()?;
        let mut book = self.write();
        book.overrides.insert(tenant.clone(), q);
        book.limiters.remove(tenant);
        Ok(())
    }

    /// Returns `tenant` to the defaults.
    pub fn reset(&self, tenant: &TenantKey) {
        let mut book = self.write();
        book.overrides.remove(tenant);
        book.limiters.remove(tenant);
    }

    /// Replaces every override at once (a reload from the database).
    pub fn replace_all(&self, all: impl IntoIterator<Item = (TenantKey, TenantQuotas)>) {
        let fresh: HashMap<_, _> = all
            .into_iter()
            .filter(|(_, q)| q.validate().is_ok())
            .collect();
        let mut book = self.write();
        if book.overrides != fresh {
            book.overrides = fresh;
            book.limiters.clear();
        }
    }

    /// Takes one publish from `tenant`'s rate quota.
    pub fn take_publish(&self, tenant: &TenantKey) -> Result<(), PublishQuotaExceeded> {
        let limit = self.get(tenant).0.publishes_per_second;
        let limiter = {
            let book = self.read();
            book.limiters
                .get(tenant)
                .filter(|(l, _)| *l == limit)
                .map(|(_, r)| r.clone())
        };
        let limiter = match limiter {
            Some(l) => l,
            None => {
                let per_second = NonZeroU32::new(limit.max(1)).expect("max(1) is non-zero");
                let fresh = Arc::new(RateLimiter::direct(Quota::per_second(per_second)));
                self.write()
                    .limiters
                    .entry(tenant.clone())
                    .and_modify(|e| {
                        if e.0 != limit {
                            *e = (limit, fresh.clone())
                        }
                    })
                    .or_insert((limit, fresh))
                    .1
                    .clone()
            }
        };
        limiter.check().map_err(|_| {
            self.exceeded(tenant, QuotaKind::Publishes);
            PublishQuotaExceeded {
                tenant: tenant.clone(),
                limit,
            }
        })
    }

    /// Counts a refusal under `kind` for `tenant`.
    pub fn exceeded(&self, tenant: &TenantKey, kind: QuotaKind) {
        self.metrics
            .quota_exceeded
            .with_label_values(&[tenant.as_str(), kind.label()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(pubs: u32) -> TenantQuotas {
        TenantQuotas {
            max_connections: 10,
            publishes_per_second: pubs,
            max_subscriptions_per_connection: 5,
        }
    }

    #[test]
    fn overrides_win_and_reset_returns_to_defaults() {
        let book = QuotaBook::new(quotas(100), Arc::new(Metrics::new()));
        let t = TenantKey::parse("acme").unwrap();
        assert_eq!(book.get(&t), (quotas(100), false));
        book.set(&t, quotas(3)).unwrap();
        assert_eq!(book.get(&t), (quotas(3), true));
        book.reset(&t);
        assert_eq!(book.get(&t), (quotas(100), false));
    }

    #[test]
    fn nonsense_values_are_refused() {
        let book = QuotaBook::new(quotas(100), Arc::new(Metrics::new()));
        let t = TenantKey::parse("acme").unwrap();
        let err = book.set(&t, quotas(0)).unwrap_err();
        assert_eq!(err.field, "publishesPerSecond");
        assert!(!book.get(&t).1);
    }

    #[test]
    fn publish_rate_is_limited_per_tenant_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let book = QuotaBook::new(quotas(1000), metrics.clone());
        let (a, b) = (
            TenantKey::parse("a").unwrap(),
            TenantKey::parse("b").unwrap(),
        );
        book.set(&a, quotas(2)).unwrap();
        assert!(book.take_publish(&a).is_ok());
        assert!(book.take_publish(&a).is_ok());
        let refused = book.take_publish(&a).unwrap_err();
        assert_eq!(refused.limit, 2);
        assert!(
            book.take_publish(&b).is_ok(),
            "another tenant is not affected"
        );
        assert_eq!(
            metrics
                .quota_exceeded
                .with_label_values(&["a", "publishes"])
                .get(),
            1
        );
    }
}
