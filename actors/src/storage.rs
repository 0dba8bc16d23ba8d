//! The error the storage seams report. Actors reach the database only through small traits
//! ([`crate::scheduler::SessionExpiryStore`], [`crate::change_feed::ChangeFeed`]) that the server
//! implements in `src/store/`; this crate never sees SQL, so a failure arrives as text to log.

/// A storage operation failed (unreachable database, a query refused, a malformed row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

impl StorageError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}
