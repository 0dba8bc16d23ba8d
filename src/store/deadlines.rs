//! How a tenant's session timeouts become a dining session's deadline, shared by `sessions.rs`
//! (a new session takes its tenant's timeouts) and `tenants.rs` (changed timeouts move the
//! deadlines of the tenant's Active sessions): the effective timeouts (the `[scheduler]` defaults
//! overlaid with the tenant's own), the statement reading a tenant's own, and the one recomputing
//! deadlines.

use super::{ms, SessionDefaults, Store};

/// A tenant's own timeouts (`$1` the tenant key), in seconds; no row = the defaults.
pub(super) const SELECT_TENANT_TIMEOUTS: &str = "SELECT inactive_timeout_secs, \
     served_order_timeout_secs, warn_before_secs FROM tenants WHERE tenant_key = $1";

/// A row of [`SELECT_TENANT_TIMEOUTS`].
pub(super) type TimeoutRow = (Option<i64>, Option<i64>, Option<i64>);

/// Recomputes the deadline of the tenant's Active sessions (or of one, `$5`) from the effective
/// timeouts in milliseconds: `$1` inactive, `$2` served-order, `$3` warning lead. The earlier of
/// "last activity + inactive" and (once all served) "served + served-order" wins.
pub(super) const RECOMPUTE_DEADLINES: &str = "UPDATE dining_sessions SET \
     expires_at_ms = CASE WHEN all_served AND served_at_ms + $2 < last_activity_ms + $1 \
         THEN served_at_ms + $2 ELSE last_activity_ms + $1 END, \
     deadline_reason = CASE WHEN all_served AND served_at_ms + $2 < last_activity_ms + $1 \
         THEN 'ServedOrderTimeout' ELSE 'InactiveSessionTimeout' END, \
     warn_before_ms = $3, \
     warned_at_ms = NULL \
     WHERE status = 'Active' AND tenant_key = $4 AND ($5 IS NULL OR session_id = $5)";

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
    /// The defaults overlaid with a tenant's own values.
    pub(super) fn with(&self, overrides: TimeoutOverrides) -> TenantTimeouts {
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
    pub(super) fn effective(&self, row: Option<TimeoutRow>) -> TenantTimeouts {
        let overrides = row
            .map(|(i, s, w)| TimeoutOverrides {
                inactive_timeout_secs: secs(i),
                served_order_timeout_secs: secs(s),
                warn_before_secs: secs(w),
            })
            .unwrap_or_default();
        self.defaults.with(overrides)
    }
}
