//! [`SessionTimeoutScheduler`]: one actor per node that expires idle dining sessions and warns
//! their customers shortly before.
//!
//! Every `scan_interval` it asks the store to *claim* what is due, then announces it through the
//! node's one publish path ([`Node::publish`], source `scheduler`):
//! - a warning: `CustomerSessionExpiring {sessionId, secondsRemaining, minutesRemaining}` to
//!   `session:{id}`, once per deadline;
//! - an expiry: `SessionExpired {sessionId, tableNumber, reason}` to `tenant:{t}:admins:sessions`,
//!   `tenant:{t}:admins` and `session:{id}`.
//!
//! The state lives in the database, not here: a claim is one atomic statement that flips the row
//! (Active → Expired, or "warned"), so with several nodes on one database each session is claimed
//! by exactly one of them and announced once, and sessions that lapsed while every node was down
//! are expired by the first scan after a restart. An announcement that the broker refuses (full
//! mailbox) is kept and retried on the next tick; only a node crash between claim and publish
//! can lose one.
//!
//! Messages: [`ScanNow`] (tests, operators → scheduler; replies with a [`ScanReport`]).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::channel::{Channel, ChannelName};
use crate::envelope::{now_millis, Draft, EventName};
use crate::ids::TenantKey;
use crate::mailbox::ActorKind;
use crate::node::Node;
use crate::payload::Payload;
use crate::shutdown::Shutdown;
use crate::storage::StorageError;

/// Most sessions one scan claims of each kind; the rest wait for the next tick, so one scan never
/// holds row locks or the broker for long.
pub const MAX_CLAIMS_PER_SCAN: usize = 500;

/// Announcements kept for retry when the broker refuses them; beyond this the oldest are dropped
/// (and logged), so a broker that stays full cannot grow the scheduler's memory.
pub const MAX_PENDING_ANNOUNCEMENTS: usize = 10_000;

/// Source label of everything the scheduler publishes (`switchyard_published_total`).
pub const PUBLISH_SOURCE: &str = "scheduler";

/// Event announcing an expiry (admins and the customer).
pub const EVENT_SESSION_EXPIRED: &str = "SessionExpired";
/// Event warning the customer before expiry.
pub const EVENT_SESSION_EXPIRING: &str = "CustomerSessionExpiring";

const MILLIS_PER_SEC: u64 = 1000;
const SECS_PER_MIN: u64 = 60;

/// Why a session expired (the `reason` of `SessionExpired`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryReason {
    /// No activity for the inactive timeout.
    InactiveSessionTimeout,
    /// Every order was served and the served-order timeout passed.
    ServedOrderTimeout,
}

impl ExpiryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryReason::InactiveSessionTimeout => "InactiveSessionTimeout",
            ExpiryReason::ServedOrderTimeout => "ServedOrderTimeout",
        }
    }
}

impl fmt::Display for ExpiryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExpiryReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "InactiveSessionTimeout" => Ok(ExpiryReason::InactiveSessionTimeout),
            "ServedOrderTimeout" => Ok(ExpiryReason::ServedOrderTimeout),
            other => Err(format!("unknown expiry reason {other:?}")),
        }
    }
}

/// A session this node has just claimed as expired.
#[derive(Clone, Debug)]
pub struct ExpiredSession {
    pub session_id: String,
    pub tenant: TenantKey,
    /// The table as the session was opened with it (a number or a label).
    pub table_number: serde_json::Value,
    pub reason: ExpiryReason,
}

/// A session this node has just claimed for its "expiring soon" warning.
#[derive(Clone, Debug)]
pub struct ExpiringSession {
    pub session_id: String,
    pub tenant: TenantKey,
    /// The deadline, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What the scheduler needs from storage. Each claim is atomic across every node sharing the
/// database: a session is returned by at most one call, ever (for warnings: once per deadline).
pub trait SessionExpiryStore: Send + Sync + 'static {
    /// Marks Active sessions whose warning time has come (and whose deadline has not) as warned.
    fn claim_warnings(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<ExpiringSession>, StorageError>>;

    /// Marks Active sessions whose deadline has passed as Expired, with the deadline's reason.
    fn claim_expiries(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<ExpiredSession>, StorageError>>;
}

/// The scheduler's settings (from `[scheduler]`; the timeouts themselves live with the sessions).
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    pub scan_interval: Duration,
}

/// What one scan announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    pub warned: usize,
    pub expired: usize,
    /// Announcements the broker refused; kept for the next tick.
    pub deferred: usize,
}

/// Sent by tests or operators to a node's scheduler: scan now; replies with what it announced.
#[derive(Message)]
#[rtype(result = "Result<ScanReport, StorageError>")]
pub struct ScanNow;

/// Expires idle dining sessions and warns before it (see the module docs).
pub struct SessionTimeoutScheduler {
    node: Arc<Node>,
    store: Arc<dyn SessionExpiryStore>,
    config: SchedulerConfig,
    /// A periodic scan is running; the next tick skips rather than piling scans up.
    scanning: bool,
    /// Announcements the broker refused, oldest first.
    pending: VecDeque<Draft>,
    /// Keeps the node's shutdown waiting until this actor is gone.
    shutdown: Shutdown,
}

impl SessionTimeoutScheduler {
    pub fn new(
        node: Arc<Node>,
        store: Arc<dyn SessionExpiryStore>,
        config: SchedulerConfig,
    ) -> Self {
        Self {
            shutdown: node.shutdown.hold("session scheduler"),
            node,
            store,
            config,
            scanning: false,
            pending: VecDeque::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.scanning || self.shutdown.is_shutdown() {
            return;
        }
        self.scanning = true;
        let scan = self.scan();
        ctx.spawn(scan.map(|res, act, _| {
            act.scanning = false;
            if let Err(e) = res {
                log::warn!("session scheduler on node {}: {e}", act.node.id);
            }
        }));
    }

    /// One scan: retry what was deferred, then claim and announce warnings and expiries.
    fn scan(&mut self) -> ResponseActFuture<Self, Result<ScanReport, StorageError>> {
        let retry: Vec<Draft> = self.pending.drain(..).collect();
        let (node, store) = (self.node.clone(), self.store.clone());
        let work = async move {
            let mut deferred = publish_all(&node, retry).await;
            let claimed = async {
                let mut report = ScanReport::default();
                let now = now_millis();
                let warnings = store.claim_warnings(now, MAX_CLAIMS_PER_SCAN).await?;
                for w in &warnings {
                    log::info!(
                        "tenant {}: session {} expires in {} s; warning the customer",
                        w.tenant,
                        w.session_id,
                        w.expires_at_ms.saturating_sub(now).div_ceil(MILLIS_PER_SEC)
                    );
                    deferred.extend(publish_all(&node, warning_drafts(w, now)).await);
                }
                report.warned = warnings.len();
                let expiries = store.claim_expiries(now, MAX_CLAIMS_PER_SCAN).await?;
                for e in &expiries {
                    log::info!(
                        "tenant {}: session {} (table {}) expired: {}",
                        e.tenant,
                        e.session_id,
                        e.table_number,
                        e.reason
                    );
                    deferred.extend(publish_all(&node, expiry_drafts(e)).await);
                }
                report.expired = expiries.len();
                Ok::<_, StorageError>(report)
            }
            .await;
            (claimed, deferred)
        };
        Box::pin(work.into_actor(self).map(|(claimed, deferred), act, _| {
            let count = deferred.len();
            act.defer(deferred);
            claimed.map(|report| ScanReport {
                deferred: count,
                ..report
            })
        }))
    }

    fn defer(&mut self, drafts: Vec<Draft>) {
        self.pending.extend(drafts);
        while self.pending.len() > MAX_PENDING_ANNOUNCEMENTS {
            if let Some(lost) = self.pending.pop_front() {
                log::error!(
                    "session scheduler: dropping announcement {} on {} after the broker refused it too long",
                    lost.event,
                    lost.channel
                );
            }
        }
    }
}

/// Publishes in order; returns the drafts the broker refused.
async fn publish_all(node: &Node, drafts: Vec<Draft>) -> Vec<Draft> {
    let mut refused = Vec::new();
    for draft in drafts {
        if let Err(e) = node.publish(draft.clone(), PUBLISH_SOURCE).await {
            log::warn!(
                "session scheduler: {} on {} deferred: {e}",
                draft.event,
                draft.channel
            );
            refused.push(draft);
        }
    }
    refused
}

fn draft(channel: Channel, event: &str, data: &Payload) -> Draft {
    Draft::new(
        ChannelName::from_channel(channel),
        EventName::parse(event).expect("scheduler event names are valid"),
        data.clone(),
    )
}

/// The scheduler's events have the shape it gives them (ids, reasons, times).
fn raw(v: serde_json::Value) -> Payload {
    Payload::built(&v)
}

/// `session:{id}`, when the stored id is a valid channel segment (it was checked on insert).
fn session_channel(session_id: &str) -> Option<Channel> {
    match ChannelName::parse(&format!("session:{session_id}")) {
        Ok(c) => Some(c.kind().clone()),
        Err(e) => {
            log::warn!("session scheduler: session id {session_id:?} has no channel: {e}");
            None
        }
    }
}

/// `SessionExpired` to the tenant's session admins, its admins, and the customer's session.
pub fn expiry_drafts(e: &ExpiredSession) -> Vec<Draft> {
    let data = raw(json!({
        "sessionId": e.session_id,
        "tableNumber": e.table_number,
        "reason": e.reason.as_str(),
    }));
    let tenant = e.tenant.clone();
    let mut out = vec![
        draft(
            Channel::TenantAdminsSessions {
                tenant: tenant.clone(),
            },
            EVENT_SESSION_EXPIRED,
            &data,
        ),
        draft(
            Channel::TenantAdmins { tenant },
            EVENT_SESSION_EXPIRED,
            &data,
        ),
    ];
    if let Some(c) = session_channel(&e.session_id) {
        out.push(draft(c, EVENT_SESSION_EXPIRED, &data));
    }
    out
}

/// `CustomerSessionExpiring` to the customer's session; remaining time rounded up.
pub fn warning_drafts(w: &ExpiringSession, now_ms: u64) -> Vec<Draft> {
    let seconds = w
        .expires_at_ms
        .saturating_sub(now_ms)
        .div_ceil(MILLIS_PER_SEC);
    let data = raw(json!({
        "sessionId": w.session_id,
        "secondsRemaining": seconds,
        "minutesRemaining": seconds.div_ceil(SECS_PER_MIN),
    }));
    session_channel(&w.session_id)
        .map(|c| vec![draft(c, EVENT_SESSION_EXPIRING, &data)])
        .unwrap_or_default()
}

impl Actor for SessionTimeoutScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.limits.get(ActorKind::Scheduler).mailbox());
        self.node
            .metrics
            .actors
            .with_label_values(&[ActorKind::Scheduler.as_str()])
            .inc();
        log::info!(
            "node {}: session scheduler scanning every {:?}",
            self.node.id,
            self.config.scan_interval
        );
        // Sessions that lapsed while no node ran are expired right away.
        self.tick(ctx);
        ctx.run_interval(self.config.scan_interval, |act, ctx| act.tick(ctx));
        let wait = self.shutdown.signalled();
        ctx.spawn(wait.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.node
            .metrics
            .actors
            .with_label_values(&[ActorKind::Scheduler.as_str()])
            .dec();
        log::info!("node {}: session scheduler stopped", self.node.id);
    }
}

crate::metered_actor!(SessionTimeoutScheduler);

impl Handler<ScanNow> for SessionTimeoutScheduler {
    type Result = ResponseActFuture<Self, Result<ScanReport, StorageError>>;

    fn handle(&mut self, _: ScanNow, _: &mut Self::Context) -> Self::Result {
        self.scan()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_follow_the_contract() {
        let e = ExpiredSession {
            session_id: "s1".into(),
            tenant: TenantKey::parse("acme").unwrap(),
            table_number: json!(12),
            reason: ExpiryReason::ServedOrderTimeout,
        };
        let drafts = expiry_drafts(&e);
        let channels: Vec<&str> = drafts.iter().map(|d| d.channel.as_str()).collect();
        assert_eq!(
            channels,
            [
                "tenant:acme:admins:sessions",
                "tenant:acme:admins",
                "session:s1"
            ]
        );
        assert!(drafts.iter().all(|d| d.event.as_str() == "SessionExpired"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(drafts[0].data.get()).unwrap(),
            json!({"sessionId":"s1","tableNumber":12,"reason":"ServedOrderTimeout"})
        );

        let w = ExpiringSession {
            session_id: "s1".into(),
            tenant: TenantKey::parse("acme").unwrap(),
            expires_at_ms: 1_000_000 + 61_500,
        };
        let drafts = warning_drafts(&w, 1_000_000);
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].channel.as_str(), "session:s1");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(drafts[0].data.get()).unwrap(),
            json!({"sessionId":"s1","secondsRemaining":62,"minutesRemaining":2})
        );
    }

    #[test]
    fn reasons_round_trip() {
        for r in [
            ExpiryReason::InactiveSessionTimeout,
            ExpiryReason::ServedOrderTimeout,
        ] {
            assert_eq!(r.as_str().parse::<ExpiryReason>().unwrap(), r);
        }
        assert!("Bored".parse::<ExpiryReason>().is_err());
    }
}
