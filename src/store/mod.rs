//! The sqlx store: every SQL statement of the server lives under this directory.
//!
//! SQLite is the embedded default (a file under `data/`, created with its directory on first
//! run); Postgres is used when `[database] url` is `postgres://…`, and is the only backend with
//! the change feed. Each backend has its own migrations (`migrations/sqlite`,
//! `migrations/postgres`), applied by [`Store::open`]. Statements are shared between backends where
//! the dialects agree (`$n` parameters work on both) and split where they do not (row locks).
//!
//! | file | owns |
//! | --- | --- |
//! | `sessions.rs` | dining sessions: open, read, list, activity, close, and the scheduler's claims |
//! | `tenants.rs` | per-tenant dining-session timeouts |
//! | `deadlines.rs` | a tenant's effective timeouts and the statements turning them into session deadlines (shared by the two above) |
//! | `change_feed.rs` | the Postgres change outbox, its lease (advisory lock) and row-tenant lookups |
//! | `chat.rs` | chat conversations, participants and messages (delivery and read state) |
//! | `admin.rs` | actor limits and tenant quotas changed through the admin API |
//!
//! The actors reach the store only through the traits of `switchyard-actors`
//! ([`switchyard_actors::scheduler::SessionExpiryStore`],
//! [`switchyard_actors::change_feed::ChangeFeed`]), implemented here.

mod admin;
mod change_feed;
mod chat;
mod deadlines;
mod sessions;
mod tenants;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use change_feed::{EntityOwner, PgChangeFeed};
pub use chat::{
    Conversation, ConversationKind, HistoryPage, NewMessage, Participation, StoredMessage,
};
pub use deadlines::{TenantTimeouts, TimeoutOverrides};
pub use sessions::{Activity, DiningSession, SessionStatus};

use crate::settings::{DatabaseSettings, SchedulerSettings};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite: or postgres:// (got {0:?})")]
    UnsupportedUrl(String),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("session {0} already exists")]
    SessionExists(String),
    #[error("session {id} is {status}, not Active")]
    SessionNotActive { id: String, status: SessionStatus },
    #[error("{0} needs the Postgres backend")]
    NeedsPostgres(&'static str),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The database could not be reached (as opposed to a refused or failed statement).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlx(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        )
    }
}

/// Which database the store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has: one text, two backends.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// The default dining-session timeouts (`[scheduler]`), used where a tenant has no override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionDefaults {
    pub inactive_timeout_secs: u64,
    pub served_order_timeout_secs: u64,
    pub warn_before_secs: u64,
}

impl From<&SchedulerSettings> for SessionDefaults {
    fn from(s: &SchedulerSettings) -> Self {
        Self {
            inactive_timeout_secs: s.inactive_timeout_secs,
            served_order_timeout_secs: s.served_order_timeout_secs,
            warn_before_secs: s.warn_before_secs,
        }
    }
}

/// The database: a pool per backend and the session defaults. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
    pub(crate) defaults: SessionDefaults,
}

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and applies the migrations.
    pub async fn open(
        settings: &DatabaseSettings,
        defaults: SessionDefaults,
    ) -> Result<Self, StoreError> {
        let url = settings.url.trim();
        let timeout = Duration::from_millis(settings.connect_timeout_ms);
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if !in_memory {
                if let Some(dir) = opts.get_filename().parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                            path: dir.display().to_string(),
                            source,
                        })?;
                    }
                }
            }
            // An in-memory database lives in one connection: keep exactly that one.
            let max = if in_memory {
                1
            } else {
                settings.max_connections
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max.max(1))
                .acquire_timeout(timeout)
                .idle_timeout(if in_memory { None } else { Some(timeout * 60) })
                .max_lifetime(if in_memory { None } else { Some(timeout * 360) })
                .connect_with(opts)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(timeout)
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Db::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        Ok(Self { db, defaults })
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The Postgres pool, when the store runs on Postgres (the change feed needs it).
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres(p) => Some(p),
            Db::Sqlite(_) => None,
        }
    }

    /// Closes every pooled connection (after the node stopped).
    pub async fn close(&self) {
        on_db!(&self.db, pool => pool.close().await)
    }
}

/// A URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds as the databases store them.
pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/db"),
            "postgres://postgres@127.0.0.1/db"
        );
    }
}
