//! Bounded mailboxes: per-actor-kind limits that operators tune at run time and the slow-consumer
//! policy.
//!
//! actix's `do_send` ignores mailbox capacity, so everything on the fan-out path is bounded: events
//! go into each connection's [`Outbox`](crate::outbox::Outbox), whose length and bytes are the
//! connection's `mailbox` and `max_queued_bytes`, and its wake-up is sent with `try_send`; when the
//! outbox is full the configured [`SlowConsumerPolicy`] applies. Control messages that must
//! not be lost (subscribe/unsubscribe bookkeeping, joins/leaves) use `do_send`; they are bounded by
//! the number of connections, not by traffic.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// The kinds of actor whose mailboxes are configured and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A WebSocket connection's actor. Its external name stays `session` (configuration, metrics
    /// and the admin API predate the module's rename).
    #[serde(rename = "session")]
    Connection,
    Broker,
    TenantGroup,
    RedisBridge,
    Scheduler,
    /// The change-feed listener; externally `pg_listener`, for the same reason.
    #[serde(rename = "pg_listener")]
    ChangeFeed,
    Activity,
}

impl ActorKind {
    pub const ALL: [ActorKind; 7] = [
        ActorKind::Connection,
        ActorKind::Broker,
        ActorKind::TenantGroup,
        ActorKind::RedisBridge,
        ActorKind::Scheduler,
        ActorKind::ChangeFeed,
        ActorKind::Activity,
    ];

    /// The name used in configuration (`[actors.<name>]`), metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Connection => "session",
            ActorKind::Broker => "broker",
            ActorKind::TenantGroup => "tenant_group",
            ActorKind::RedisBridge => "redis_bridge",
            ActorKind::Scheduler => "scheduler",
            ActorKind::ChangeFeed => "pg_listener",
            ActorKind::Activity => "activity",
        }
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown actor kind {s:?}"))
    }
}

/// What happens to a connection whose outbound queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Drop the message for that connection and count it; the client sees a gap in offsets and can
    /// resubscribe with `since` to recover.
    Drop,
    /// Close the connection with close code 4000 so the client reconnects and recovers from history.
    Disconnect,
}

impl SlowConsumerPolicy {
    fn to_u8(self) -> u8 {
        match self {
            SlowConsumerPolicy::Drop => 0,
            SlowConsumerPolicy::Disconnect => 1,
        }
    }
    fn from_u8(v: u8) -> Self {
        if v == 0 {
            SlowConsumerPolicy::Drop
        } else {
            SlowConsumerPolicy::Disconnect
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Drop => "drop",
            SlowConsumerPolicy::Disconnect => "disconnect",
        }
    }
}

/// One actor kind's limits as plain values (configuration, admin API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxSettings {
    /// Messages an actor of this kind may have queued.
    pub mailbox: usize,
    /// What happens when a connection's queue is full (meaningful for connections).
    pub policy: SlowConsumerPolicy,
    /// Bytes of outbound frames a connection may have queued (meaningful for connections).
    pub max_queued_bytes: usize,
}

/// Why a limit change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("mailbox must be between {min} and {max}, got {got}")]
    Mailbox { min: usize, max: usize, got: usize },
    #[error("maxQueuedBytes must be between {min} and {max}, got {got}")]
    QueuedBytes { min: usize, max: usize, got: usize },
}

/// Sanity bounds for run-time changes: below these nothing can work, above them one actor could
/// hold gigabytes.
pub const MAILBOX_RANGE: (usize, usize) = (1, 1_000_000);
pub const QUEUED_BYTES_RANGE: (usize, usize) = (1024, 1 << 30);

impl MailboxSettings {
    pub fn validate(&self) -> Result<(), LimitError> {
        let (min, max) = MAILBOX_RANGE;
        if !(min..=max).contains(&self.mailbox) {
            return Err(LimitError::Mailbox {
                min,
                max,
                got: self.mailbox,
            });
        }
        let (min, max) = QUEUED_BYTES_RANGE;
        if !(min..=max).contains(&self.max_queued_bytes) {
            return Err(LimitError::QueuedBytes {
                min,
                max,
                got: self.max_queued_bytes,
            });
        }
        Ok(())
    }
}

/// One actor kind's live limits, readable on the hot path without locks.
#[derive(Debug)]
pub struct MailboxLimits {
    mailbox: AtomicUsize,
    policy: AtomicU8,
    max_queued_bytes: AtomicUsize,
    /// Bumped on every change so live actors notice cheaply and re-apply their capacity.
    generation: AtomicU64,
}

impl MailboxLimits {
    pub fn new(s: MailboxSettings) -> Self {
        Self {
            mailbox: AtomicUsize::new(s.mailbox),
            policy: AtomicU8::new(s.policy.to_u8()),
            max_queued_bytes: AtomicUsize::new(s.max_queued_bytes),
            generation: AtomicU64::new(0),
        }
    }

    pub fn mailbox(&self) -> usize {
        self.mailbox.load(Ordering::Relaxed)
    }
    pub fn policy(&self) -> SlowConsumerPolicy {
        SlowConsumerPolicy::from_u8(self.policy.load(Ordering::Relaxed))
    }
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_bytes.load(Ordering::Relaxed)
    }
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn settings(&self) -> MailboxSettings {
        MailboxSettings {
            mailbox: self.mailbox(),
            policy: self.policy(),
            max_queued_bytes: self.max_queued_bytes(),
        }
    }

    /// Applies validated new limits to live actors of this kind and to new ones.
    pub fn update(&self, s: MailboxSettings) -> Result<(), LimitError> {
        s.validate()?;
        self.mailbox.store(s.mailbox, Ordering::Relaxed);
        self.policy.store(s.policy.to_u8(), Ordering::Relaxed);
        self.max_queued_bytes
            .store(s.max_queued_bytes, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// Every actor kind's live limits.
#[derive(Debug)]
pub struct ActorLimits {
    kinds: [MailboxLimits; ActorKind::ALL.len()],
}

impl ActorLimits {
    /// Builds the table from configured settings, one per kind (in [`ActorKind::ALL`] order).
    pub fn new(settings: impl Fn(ActorKind) -> MailboxSettings) -> Self {
        Self {
            kinds: ActorKind::ALL.map(|k| MailboxLimits::new(settings(k))),
        }
    }

    pub fn get(&self, kind: ActorKind) -> &MailboxLimits {
        &self.kinds[ActorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }
}

/// What happened when a message was offered to a bounded mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Accepted,
    /// Full; the message was dropped (policy `drop`).
    Dropped,
    /// Full; the connection was marked for disconnection (policy `disconnect`).
    Evicted,
    /// The recipient is gone.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_update_validates_and_bumps_generation() {
        let l = MailboxLimits::new(MailboxSettings {
            mailbox: 10,
            policy: SlowConsumerPolicy::Drop,
            max_queued_bytes: 4096,
        });
        let g = l.generation();
        let bad = MailboxSettings {
            mailbox: 0,
            ..l.settings()
        };
        assert!(l.update(bad).is_err());
        assert_eq!(l.generation(), g);
        let good = MailboxSettings {
            mailbox: 5,
            policy: SlowConsumerPolicy::Disconnect,
            max_queued_bytes: 2048,
        };
        l.update(good).unwrap();
        assert_eq!(l.settings(), good);
        assert_eq!(l.generation(), g + 1);
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for k in ActorKind::ALL {
            assert_eq!(k.as_str().parse::<ActorKind>().unwrap(), k);
        }
    }
}
