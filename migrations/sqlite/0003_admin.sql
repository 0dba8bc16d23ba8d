-- Run-time changes made through the admin API (docs/admin.md): actor mailbox limits and
-- per-tenant quotas. Configuration stays the default for anything without a row.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE actor_limits (
    kind             TEXT PRIMARY KEY NOT NULL,
    mailbox          INTEGER NOT NULL,
    policy           TEXT NOT NULL,
    max_queued_bytes INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL
);

CREATE TABLE tenant_quotas (
    tenant_key                       TEXT PRIMARY KEY NOT NULL,
    max_connections                  INTEGER NOT NULL,
    publishes_per_second             INTEGER NOT NULL,
    max_subscriptions_per_connection INTEGER NOT NULL,
    updated_at_ms                    INTEGER NOT NULL
);
