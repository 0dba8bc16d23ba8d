//! The operators' and admin consoles' API (docs/admin.md):
//! - actor kinds with their live mailbox limits and measured mailboxes (`crate::admin_samples`),
//!   retuned at run time and reset to the configured defaults (`Operator`);
//! - the node's recent figures for the console's charts (`Operator`);
//! - tenants with their connections, online users, channels, rates and recent events
//!   (Admin/Staff of the tenant, or `Operator` for all);
//! - per-tenant quotas (read: the tenant's Admin/Staff or `Operator`; change: `Operator`).
//!
//! Changes apply at once to live actors and new ones, are logged, and — with `[admin] persist`
//! — stored, so a restart keeps them and every node sharing the database picks them up.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_actors::activity::{ActivityReport, TenantActivity};
use switchyard_actors::identity::{Identity, Role};
use switchyard_actors::ids::TenantKey;
use switchyard_actors::mailbox::{ActorKind, MailboxSettings, SlowConsumerPolicy};
use switchyard_actors::metrics::Metrics;
use switchyard_actors::node::Node;
use switchyard_actors::quotas::TenantQuotas;

use crate::admin_samples::{refresh_sessions, KindFigures};
use crate::caller::Caller;
use crate::problem::ApiError;
use crate::routes::tenants::{snapshot, tenant_error};
use crate::state::AppState;
use crate::store::Store;

/// How long the admin API waits for the activity recorder.
const RECORDER_TIMEOUT: Duration = Duration::from_secs(2);

fn operator_only(who: &Identity) -> Result<(), ApiError> {
    if who.role == Role::Operator {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "the actor admin API is for the Operator role only".into(),
        ))
    }
}

/// The tenant in the path, if the caller may watch it (its Admin/Staff, or an Operator).
fn watched_tenant(who: &Identity, raw: &str) -> Result<TenantKey, ApiError> {
    let tenant =
        TenantKey::parse(raw).map_err(|e| ApiError::BadRequest(format!("tenant key {e}")))?;
    if who.is_staff_of(&tenant) || who.role == Role::Operator {
        Ok(tenant)
    } else {
        Err(ApiError::Forbidden(format!(
            "tenant {tenant}: Admin or Staff of the tenant, or Operator, only"
        )))
    }
}

/// The limits a kind acts on: every kind its mailbox; only sessions the slow-consumer policy and
/// the byte budget (broker shards apply them to sessions' outboxes).
fn uses(kind: ActorKind) -> &'static [&'static str] {
    if kind == ActorKind::Connection {
        &["mailbox", "policy", "maxQueuedBytes"]
    } else {
        &["mailbox"]
    }
}

/// One kind's limits as the API shows them: `policy` and `maxQueuedBytes` only where used.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LimitsView {
    mailbox: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<SlowConsumerPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queued_bytes: Option<usize>,
}

impl LimitsView {
    fn of(kind: ActorKind, s: MailboxSettings) -> Self {
        let session = kind == ActorKind::Connection;
        Self {
            mailbox: s.mailbox,
            policy: session.then_some(s.policy),
            max_queued_bytes: session.then_some(s.max_queued_bytes),
        }
    }
}

/// One actor kind as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActorView {
    kind: ActorKind,
    /// Whether this kind runs in this node's mode.
    running: bool,
    /// Live actors of this kind on this node.
    count: i64,
    /// The limits this kind acts on (the fields a change may give).
    uses: &'static [&'static str],
    #[serde(flatten)]
    limits: LimitsView,
    /// The configured limits (`[actors.<kind>]`), what a reset returns to.
    defaults: LimitsView,
    /// Whether the live limits differ from the configured ones.
    overridden: bool,
    /// Whether changes are stored in the database (`[admin] persist`), surviving restarts.
    persisted: bool,
    /// Messages waiting in (or being handled from) this kind's mailboxes now.
    queue_depth: i64,
    /// The most messages one actor of this kind has had waiting since start.
    peak_queue_depth: i64,
    /// Sessions only: the most outbound bytes one session has had queued since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_queued_bytes: Option<i64>,
    handled: u64,
    /// Over the last sample interval (`None` until two samples were taken).
    handled_per_second: Option<f64>,
    /// Mean time in the handler (`None` for sessions, whose figure is the delivery latency).
    mean_handle_millis: Option<f64>,
    mailbox_full: u64,
    dropped: u64,
    slow_consumer_disconnects: u64,
    /// Broker shards, one entry each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<switchyard_actors::metered::MeterReading>,
}

fn actor_view(state: &AppState, kind: ActorKind) -> ActorView {
    let node: &Node = &state.node;
    let m: &Metrics = &node.metrics;
    let s = node.limits.get(kind).settings();
    let defaults = state.settings.mailbox(kind);
    let f = KindFigures::read(m, kind);
    let dropped_reason = match kind {
        ActorKind::Connection => Some("slow_consumer"),
        ActorKind::Activity => Some("activity_full"),
        _ => None,
    };
    let index = ActorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    ActorView {
        kind,
        running: f.running,
        count: m.actors.with_label_values(&[kind.as_str()]).get(),
        uses: uses(kind),
        limits: LimitsView::of(kind, s),
        defaults: LimitsView::of(kind, defaults),
        overridden: LimitsView::of(kind, s) != LimitsView::of(kind, defaults),
        persisted: state.settings.admin.persist,
        queue_depth: f.queue_depth,
        peak_queue_depth: f.peak_queue_depth,
        peak_queued_bytes: (kind == ActorKind::Connection)
            .then(|| m.session_queued_bytes_peak.get()),
        handled: f.handled,
        handled_per_second: state
            .samples
            .handled_per_second()
            .get(index)
            .copied()
            .flatten(),
        mean_handle_millis: f.mean_handle_millis,
        mailbox_full: f.mailbox_full,
        dropped: dropped_reason.map_or(0, |r| m.dropped.with_label_values(&[r]).get()),
        slow_consumer_disconnects: if kind == ActorKind::Connection {
            m.slow_consumer_disconnects.get()
        } else {
            0
        },
        instances: f.instances,
    }
}

impl PartialEq for LimitsView {
    fn eq(&self, o: &Self) -> bool {
        (self.mailbox, self.policy, self.max_queued_bytes)
            == (o.mailbox, o.policy, o.max_queued_bytes)
    }
}

/// `GET /api/v1/admin/actors` → `{"actors": [ActorView, …]}`.
pub async fn actors(
    Caller(who): Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&who)?;
    refresh_sessions(&state.node.metrics, &state.connections);
    let all: Vec<_> = ActorKind::ALL
        .into_iter()
        .map(|k| actor_view(&state, k))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "actors": all })))
}

/// `GET /api/v1/admin/samples` → the node's recent figures for the console's charts:
/// `{"intervalMs","windowSecs","points":[{"at","deliveredPerSecond","publishedPerSecond",
/// "connections","slowConsumerDisconnects","actors":{kind:{"queueDepth","mailboxFull",
/// "handledPerSecond"}}}]}`, oldest first.
pub async fn samples(
    Caller(who): Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&who)?;
    let a = &state.settings.admin;
    Ok(HttpResponse::Ok().json(json!({
        "intervalMs": a.sample_interval_ms,
        "windowSecs": a.sample_window_secs,
        "points": state.samples.points(),
    })))
}

/// A change of one kind's limits; absent fields keep their value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitChange {
    mailbox: Option<usize>,
    policy: Option<SlowConsumerPolicy>,
    max_queued_bytes: Option<usize>,
}

/// `PUT /api/v1/admin/actors/{kind}` with `{"mailbox"?, "policy"?, "maxQueuedBytes"?}` →
/// the kind's new view.
pub async fn put_actor(
    Caller(who): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    body: web::Json<LimitChange>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&who)?;
    let kind: ActorKind = path
        .parse()
        .map_err(|e: String| ApiError::NotFound(format!("{e}; kinds: {}", kind_names())))?;
    let change = body.into_inner();
    if change.mailbox.is_none() && change.policy.is_none() && change.max_queued_bytes.is_none() {
        return Err(ApiError::BadRequest(format!(
            "nothing to change: give {}",
            uses(kind).join(", ")
        )));
    }
    for (field, given) in [
        ("policy", change.policy.is_some()),
        ("maxQueuedBytes", change.max_queued_bytes.is_some()),
    ] {
        if given && !uses(kind).contains(&field) {
            return Err(ApiError::BadRequest(format!(
                "{kind} does not use {field} (only session does); {kind} uses {}",
                uses(kind).join(", ")
            )));
        }
    }
    let limits = state.node.limits.get(kind);
    let old = limits.settings();
    let new = MailboxSettings {
        mailbox: change.mailbox.unwrap_or(old.mailbox),
        policy: change.policy.unwrap_or(old.policy),
        max_queued_bytes: change.max_queued_bytes.unwrap_or(old.max_queued_bytes),
    };
    new.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if state.settings.admin.persist {
        store
            .save_actor_limits(kind, new, now_ms())
            .await
            .map_err(ApiError::from)?;
    }
    apply_limits(&state.node, kind, new);
    log::info!(
        "admin: {kind} limits changed by {} from {old:?} to {new:?}",
        who.user_id
    );
    Ok(HttpResponse::Ok().json(actor_view(&state, kind)))
}

/// `DELETE /api/v1/admin/actors/{kind}`: back to the configured limits (`[actors.<kind>]`),
/// forgetting the stored change → the kind's view.
pub async fn reset_actor(
    Caller(who): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&who)?;
    let kind: ActorKind = path
        .parse()
        .map_err(|e: String| ApiError::NotFound(format!("{e}; kinds: {}", kind_names())))?;
    if state.settings.admin.persist {
        store
            .delete_actor_limits(kind)
            .await
            .map_err(ApiError::from)?;
    }
    let old = state.node.limits.get(kind).settings();
    let defaults = state.settings.mailbox(kind);
    apply_limits(&state.node, kind, defaults);
    log::info!(
        "admin: {kind} limits reset to defaults by {} (from {old:?} to {defaults:?})",
        who.user_id
    );
    Ok(HttpResponse::Ok().json(actor_view(&state, kind)))
}

/// Applies limits to live actors and new ones, and to the capacity metric. Unchanged limits are
/// left alone (no needless re-application by live actors).
pub fn apply_limits(node: &Node, kind: ActorKind, s: MailboxSettings) -> bool {
    let limits = node.limits.get(kind);
    if limits.settings() == s {
        return false;
    }
    if limits.update(s).is_err() {
        return false;
    }
    let m = &node.metrics;
    m.mailbox_capacity
        .with_label_values(&[kind.as_str()])
        .set(s.mailbox as i64);
    m.limit_changes.with_label_values(&[kind.as_str()]).inc();
    true
}

fn kind_names() -> String {
    ActorKind::ALL.map(|k| k.as_str()).join(", ")
}

fn now_ms() -> i64 {
    i64::try_from(switchyard_actors::envelope::now_millis()).unwrap_or(i64::MAX)
}

/// `GET /api/v1/admin/tenants` → `{"tenants": [{"tenantKey","connections","users"}]}`: every
/// tenant with connections for an Operator, the caller's own tenant for its Admin/Staff.
pub async fn tenants(
    Caller(who): Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let keys = match (who.role, &who.tenant) {
        (Role::Operator, _) => state
            .node
            .tenants
            .tenant_keys()
            .await
            .map_err(tenant_error)?,
        (r, Some(t)) if r.is_tenant_staff() => vec![t.clone()],
        _ => {
            return Err(ApiError::Forbidden(
                "tenant activity: Admin or Staff of a tenant, or Operator, only".into(),
            ))
        }
    };
    let mut out = Vec::with_capacity(keys.len());
    for tenant in keys {
        let snap = snapshot(&state, &tenant).await?;
        // An Admin sees its tenant even when empty; an Operator sees tenants with connections.
        if snap.connections > 0 || who.role != Role::Operator {
            out.push(json!({
                "tenantKey": tenant,
                "connections": snap.connections,
                "users": snap.users.len(),
            }));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "tenants": out })))
}

/// `GET /api/v1/admin/tenants/{t}`: online users, channels with subscriber counts (this node),
/// publish and delivery rates, recent events and the quotas in force.
pub async fn tenant(
    Caller(who): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = watched_tenant(&who, &path)?;
    let snap = snapshot(&state, &tenant).await?;
    let channels = state
        .node
        .broker
        .channel_stats(&format!("tenant:{tenant}:"))
        .await
        .map_err(|e| ApiError::Busy(e.to_string()))?;
    let activity = match &state.node.activity_recorder {
        Some(r) => r
            .send(TenantActivity(tenant.clone()))
            .timeout(RECORDER_TIMEOUT)
            .await
            .map_err(|e| ApiError::Busy(format!("activity recorder: {e}")))?,
        None => ActivityReport::default(),
    };
    let (quotas, own) = state.node.quotas.get(&tenant);
    Ok(HttpResponse::Ok().json(json!({
        "tenantKey": tenant,
        "connections": snap.connections,
        "users": snap.users,
        "channels": channels
            .into_iter()
            .map(|(channel, subscribers)| json!({"channel": channel, "subscribers": subscribers}))
            .collect::<Vec<_>>(),
        "rates": activity.rates,
        "recentEvents": activity.recent_events,
        "quotas": quotas,
        "quotasOverridden": own,
    })))
}

fn quotas_view(tenant: &TenantKey, q: TenantQuotas, own: bool) -> serde_json::Value {
    json!({ "tenantKey": tenant, "quotas": q, "overridden": own })
}

/// `GET /api/v1/admin/tenants/{t}/quotas` → `{"tenantKey","quotas":{…},"overridden"}`.
pub async fn get_quotas(
    Caller(who): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = watched_tenant(&who, &path)?;
    let (q, own) = state.node.quotas.get(&tenant);
    Ok(HttpResponse::Ok().json(quotas_view(&tenant, q, own)))
}

/// A change of a tenant's quotas; absent fields keep the value in force.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuotaChange {
    max_connections: Option<usize>,
    publishes_per_second: Option<u32>,
    max_subscriptions_per_connection: Option<usize>,
}

/// `PUT /api/v1/admin/tenants/{t}/quotas` (Operator) → the tenant's quotas.
pub async fn put_quotas(
    Caller(who): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    body: web::Json<QuotaChange>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&who)?;
    let tenant =
        TenantKey::parse(&path).map_err(|e| ApiError::BadRequest(format!("tenant key {e}")))?;
    let c = body.into_inner();
    let (old, _) = state.node.quotas.get(&tenant);
    let new = TenantQuotas {
        max_connections: c.max_connections.unwrap_or(old.max_connections),
        publishes_per_second: c.publishes_per_second.unwrap_or(old.publishes_per_second),
        max_subscriptions_per_connection: c
            .max_subscriptions_per_connection
            .unwrap_or(old.max_subscriptions_per_connection),
    };
    new.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if state.settings.admin.persist {
        store
            .save_tenant_quotas(&tenant, new, now_ms())
            .await
            .map_err(ApiError::from)?;
    }
    state
        .node
        .quotas
        .set(&tenant, new)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    log::info!(
        "admin: tenant {tenant} quotas set by {} to {new:?}",
        who.user_id
    );
    Ok(HttpResponse::Ok().json(quotas_view(&tenant, new, true)))
}

/// `DELETE /api/v1/admin/tenants/{t}/quotas` (Operator): back to the defaults.
pub async fn delete_quotas(
    Caller(who): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&who)?;
    let tenant =
        TenantKey::parse(&path).map_err(|e| ApiError::BadRequest(format!("tenant key {e}")))?;
    if state.settings.admin.persist {
        store
            .delete_tenant_quotas(&tenant)
            .await
            .map_err(ApiError::from)?;
    }
    state.node.quotas.reset(&tenant);
    log::info!(
        "admin: tenant {tenant} quotas reset to defaults by {}",
        who.user_id
    );
    let (q, own) = state.node.quotas.get(&tenant);
    Ok(HttpResponse::Ok().json(quotas_view(&tenant, q, own)))
}

/// Applies what is stored (at start-up, then every `[admin] reload_interval_ms`), so a change
/// made on any node sharing the database reaches this one; kinds with nothing stored (never
/// changed, or reset on any node) take their configured `defaults`.
pub async fn apply_stored(
    node: &Node,
    store: &Store,
    defaults: impl Fn(ActorKind) -> MailboxSettings,
) -> Result<(), crate::store::StoreError> {
    let stored = store.actor_limits().await?;
    for kind in ActorKind::ALL {
        let s = stored
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or_else(|| defaults(kind), |(_, s)| *s);
        if s.validate().is_ok() && apply_limits(node, kind, s) {
            log::info!("admin: stored {kind} limits applied: {s:?}");
        }
    }
    node.quotas.replace_all(store.tenant_quotas().await?);
    Ok(())
}
