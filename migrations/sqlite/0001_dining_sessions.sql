-- Tenants' dining-session timeout overrides and dining sessions (SQLite).
-- Times are milliseconds since the Unix epoch; the scheduler's deadline is stored with the row so
-- that a claim is one conditional UPDATE (see docs/dining-sessions.md).

CREATE TABLE tenants (
    tenant_key                TEXT PRIMARY KEY NOT NULL,
    -- NULL = the [scheduler] default.
    inactive_timeout_secs     INTEGER,
    served_order_timeout_secs INTEGER,
    warn_before_secs          INTEGER,
    updated_at_ms             INTEGER NOT NULL
);

CREATE TABLE dining_sessions (
    session_id       TEXT PRIMARY KEY NOT NULL,
    tenant_key       TEXT NOT NULL,
    -- The table as given (JSON: a number or a label).
    table_number     TEXT NOT NULL,
    -- Active, Expired or Closed.
    status           TEXT NOT NULL DEFAULT 'Active',
    opened_at_ms     INTEGER NOT NULL,
    last_activity_ms INTEGER NOT NULL,
    has_orders       BOOLEAN NOT NULL DEFAULT FALSE,
    all_served       BOOLEAN NOT NULL DEFAULT FALSE,
    -- When every order became served (NULL while not all served).
    served_at_ms     INTEGER,
    -- The current deadline and the reason it will expire with.
    expires_at_ms    INTEGER NOT NULL,
    deadline_reason  TEXT NOT NULL DEFAULT 'InactiveSessionTimeout',
    -- The warning lead for this deadline (0 = none) and when the warning was claimed.
    warn_before_ms   INTEGER NOT NULL DEFAULT 0,
    warned_at_ms     INTEGER,
    -- When it expired or was closed, and why it expired.
    ended_at_ms      INTEGER,
    expiry_reason    TEXT
);

CREATE INDEX dining_sessions_due ON dining_sessions (status, expires_at_ms);
CREATE INDEX dining_sessions_by_tenant ON dining_sessions (tenant_key, status, opened_at_ms);
