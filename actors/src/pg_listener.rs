//! [`PgChangeListener`]: relays the Postgres change outbox into entity notifications.
//!
//! A trigger (installed by a migration, see `docs/change-feed.md`) writes every row change of the
//! tables it is attached to into an outbox and `NOTIFY`s as a wake-up. Every node runs this actor,
//! but only the holder of the feed's lease (a Postgres advisory lock, behind [`ChangeFeed`])
//! relays: the others retry every `retry_interval` and take over when the holder dies, because its
//! lock dies with its connection. The holder reads the outbox in id order, publishes each change
//! through the node's one publish path ([`Node::publish`], source `change_feed`) on
//! `notifications:{EntityType}:{EntityId}`, and marks a row relayed only after the broker accepted
//! it. Nothing is lost while no node relays: the rows wait in the outbox. A holder that crashes
//! between publish and mark makes the next holder publish those rows again (at least once).
//!
//! The wake-up is only a hint: the holder also polls every `poll_interval`, so a lost `NOTIFY`
//! delays a change, never drops it.
//!
//! Messages: [`ListenerStatus`] (tests, admin → listener; replies with [`ListenerState`]);
//! [`LeaseChanged`] and [`Relayed`] (the relay loop → its actor).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};

use crate::channel::ChannelName;
use crate::codec::rfc3339_millis;
use crate::envelope::{Draft, EventName};
use crate::ids::validate_segment;
use crate::mailbox::ActorKind;
use crate::node::Node;
use crate::payload::{PayloadError, PayloadLimits};
use crate::storage::StorageError;

/// Source label of everything the listener publishes (`switchyard_published_total`).
pub const PUBLISH_SOURCE: &str = "change_feed";

/// The event name of every entity notification; `changeType` says what happened.
pub const EVENT_ENTITY_CHANGED: &str = "EntityChanged";

/// Table-name prefix of Marten document tables, dropped when deriving an entity type.
pub const DOCUMENT_TABLE_PREFIX: &str = "mt_doc_";

/// What happened to the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }

    /// From the trigger's `TG_OP` (`INSERT`, `UPDATE`, `DELETE`).
    pub fn from_operation(op: &str) -> Option<Self> {
        match op {
            "INSERT" => Some(ChangeType::Created),
            "UPDATE" => Some(ChangeType::Updated),
            "DELETE" => Some(ChangeType::Deleted),
            _ => None,
        }
    }
}

/// How much of the row a notification carries, per entity type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadStrategy {
    /// Identity and change type only; clients refetch what they need.
    Minimal,
    /// The row as JSON in `payload` (for deletes: the row as it was).
    Full,
}

impl PayloadStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadStrategy::Minimal => "minimal",
            PayloadStrategy::Full => "full",
        }
    }
}

impl FromStr for PayloadStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minimal" => Ok(PayloadStrategy::Minimal),
            "full" => Ok(PayloadStrategy::Full),
            other => Err(format!(
                "unknown payload strategy {other:?} (expected minimal or full)"
            )),
        }
    }
}

/// Why an entity mapping was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityMapError {
    #[error("change feed: entity type {0:?} is mapped from more than one table")]
    DuplicateType(String),
    #[error("change feed: entity type {name:?} {reason}")]
    BadType {
        name: String,
        reason: crate::ids::SegmentError,
    },
}

/// Table ↔ entity type, and the payload strategy of each entity type.
///
/// Tables not mapped explicitly get a derived type: `mt_doc_order_item` → `OrderItem` (the
/// `mt_doc_` prefix dropped, the rest in PascalCase), and the reverse for lookups.
#[derive(Clone, Debug)]
pub struct EntityMap {
    by_table: HashMap<String, String>,
    by_type: HashMap<String, String>,
    full: HashSet<String>,
    default_payload: PayloadStrategy,
}

impl EntityMap {
    pub fn new(
        tables: impl IntoIterator<Item = (String, String)>,
        default_payload: PayloadStrategy,
        full_payload_types: impl IntoIterator<Item = String>,
    ) -> Result<Self, EntityMapError> {
        let mut by_table = HashMap::new();
        let mut by_type = HashMap::new();
        for (table, ty) in tables {
            validate_segment(&ty).map_err(|reason| EntityMapError::BadType {
                name: ty.clone(),
                reason,
            })?;
            if by_type.insert(ty.clone(), table.clone()).is_some() {
                return Err(EntityMapError::DuplicateType(ty));
            }
            by_table.insert(table, ty);
        }
        Ok(Self {
            by_table,
            by_type,
            full: full_payload_types.into_iter().collect(),
            default_payload,
        })
    }

    /// The entity type of a table's rows.
    pub fn entity_type(&self, table: &str) -> String {
        if let Some(ty) = self.by_table.get(table) {
            return ty.clone();
        }
        let base = table.strip_prefix(DOCUMENT_TABLE_PREFIX).unwrap_or(table);
        base.split('_')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|first| first.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The table that holds an entity type's rows.
    pub fn table_for(&self, entity_type: &str) -> String {
        if let Some(table) = self.by_type.get(entity_type) {
            return table.clone();
        }
        let mut snake = String::from(DOCUMENT_TABLE_PREFIX);
        for (i, c) in entity_type.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.extend(c.to_lowercase());
        }
        snake
    }

    pub fn payload(&self, entity_type: &str) -> PayloadStrategy {
        if self.full.contains(entity_type) {
            PayloadStrategy::Full
        } else {
            self.default_payload
        }
    }
}

/// One row of the outbox: a change the trigger recorded.
#[derive(Clone, Debug)]
pub struct OutboxChange {
    /// The outbox's sequence number (relay order).
    pub id: i64,
    pub table: String,
    pub entity_id: String,
    pub change: ChangeType,
    /// The row's `tenant_key`, when the table has one.
    pub tenant_key: Option<String>,
    /// The row as JSON (after the change; before it for deletes).
    pub row: Option<Box<RawValue>>,
    /// When the change was made, milliseconds since the Unix epoch.
    pub changed_at_ms: u64,
}

/// The feed as the listener sees it: a lease that one node at a time can hold.
pub trait ChangeFeed: Send + Sync + 'static {
    /// Tries to take the lease; `Ok(None)` when another node holds it.
    fn try_lead(&self) -> BoxFuture<'static, Result<Option<Box<dyn ChangeLease>>, StorageError>>;
}

/// The held lease. Every method fails once the lease is lost (its connection died), and the
/// listener then goes back to trying to take it.
pub trait ChangeLease: Send {
    /// Resolves on a wake-up from the database, or after `at_most`.
    fn wait_for_changes(&mut self, at_most: Duration) -> BoxFuture<'_, Result<(), StorageError>>;
    /// The oldest `limit` changes not yet relayed, in outbox order.
    fn pending(&mut self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxChange>, StorageError>>;
    /// Marks changes relayed (after the broker accepted them).
    fn mark_relayed(&mut self, ids: Vec<i64>) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Deletes relayed changes older than `retention`.
    fn prune(&mut self, retention: Duration) -> BoxFuture<'_, Result<u64, StorageError>>;
    /// Gives the lease up so another node can take it at once.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The listener's settings (from `[change_feed]`).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// How often a node without the lease tries to take it, and the back-off after errors.
    pub retry_interval: Duration,
    /// The holder reads the outbox at least this often, wake-up or not.
    pub poll_interval: Duration,
    /// Changes read per round trip.
    pub batch_size: usize,
    /// Relayed changes are kept this long (for inspection), then deleted.
    pub retention: Duration,
    pub entities: Arc<EntityMap>,
}

/// How often the holder prunes relayed outbox rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Sent by the relay loop to its actor when it takes or loses the lease; no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseChanged {
    pub leading: bool,
}

/// Sent by the relay loop to its actor after a batch was relayed; no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Relayed {
    pub count: u64,
}

/// Sent by tests or the admin API to the listener; replies with its state.
#[derive(Message)]
#[rtype(result = "ListenerState")]
pub struct ListenerStatus;

/// Whether this node relays, and how much it relayed since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerState {
    pub leading: bool,
    pub relayed: u64,
}

/// Relays the change outbox while this node holds the lease (see the module docs).
pub struct PgChangeListener {
    node: Arc<Node>,
    feed: Arc<dyn ChangeFeed>,
    config: ListenerConfig,
    state: ListenerState,
}

impl PgChangeListener {
    pub fn new(node: Arc<Node>, feed: Arc<dyn ChangeFeed>, config: ListenerConfig) -> Self {
        Self {
            node,
            feed,
            config,
            state: ListenerState::default(),
        }
    }
}

impl Actor for PgChangeListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.limits.get(ActorKind::PgListener).mailbox());
        self.node
            .metrics
            .actors
            .with_label_values(&[ActorKind::PgListener.as_str()])
            .inc();
        let relay = relay_loop(
            self.node.clone(),
            self.feed.clone(),
            self.config.clone(),
            ctx.address(),
        );
        // The loop ends by itself on shutdown, after giving the lease up.
        ctx.spawn(relay.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.node
            .metrics
            .actors
            .with_label_values(&[ActorKind::PgListener.as_str()])
            .dec();
        log::info!("node {}: change listener stopped", self.node.id);
    }
}

impl Handler<LeaseChanged> for PgChangeListener {
    type Result = ();
    fn handle(&mut self, msg: LeaseChanged, _: &mut Self::Context) {
        self.state.leading = msg.leading;
    }
}

impl Handler<Relayed> for PgChangeListener {
    type Result = ();
    fn handle(&mut self, msg: Relayed, _: &mut Self::Context) {
        self.state.relayed += msg.count;
    }
}

impl Handler<ListenerStatus> for PgChangeListener {
    type Result = MessageResult<ListenerStatus>;
    fn handle(&mut self, _: ListenerStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state)
    }
}

/// Try to lead; while leading, relay; on shutdown give the lease up and end.
async fn relay_loop(
    node: Arc<Node>,
    feed: Arc<dyn ChangeFeed>,
    config: ListenerConfig,
    me: Addr<PgChangeListener>,
) {
    let mut shutdown = node.shutdown_signal();
    let mut last_error: Option<String> = None;
    while !node.is_shutting_down() {
        match feed.try_lead().await {
            Ok(Some(mut lease)) => {
                log::info!("node {}: holding the change-feed lease; relaying", node.id);
                me.do_send(LeaseChanged { leading: true });
                let outcome = lead(&mut *lease, &node, &config, &me).await;
                lease.release().await;
                me.do_send(LeaseChanged { leading: false });
                match outcome {
                    Ok(()) => log::info!("node {}: change-feed lease released", node.id),
                    Err(e) => log::warn!("node {}: change-feed lease lost: {e}", node.id),
                }
                last_error = None;
            }
            Ok(None) => last_error = None,
            Err(e) => {
                // Log a failure once until it changes, not on every retry.
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    log::warn!("node {}: change feed unavailable: {text}", node.id);
                }
                last_error = Some(text);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.retry_interval) => {}
            _ = shutdown.wait_for(|down| *down) => {}
        }
    }
}

/// Relays until shutdown (`Ok`) or until the lease fails (`Err`).
async fn lead(
    lease: &mut dyn ChangeLease,
    node: &Node,
    config: &ListenerConfig,
    me: &Addr<PgChangeListener>,
) -> Result<(), StorageError> {
    let mut shutdown = node.shutdown_signal();
    let mut last_prune = Instant::now();
    loop {
        loop {
            let batch = lease.pending(config.batch_size.max(1)).await?;
            let full_batch = batch.len() >= config.batch_size.max(1);
            let (done, refused) = relay_batch(node, &config.entities, batch).await;
            let count = done.len() as u64;
            if !done.is_empty() {
                lease.mark_relayed(done).await?;
                me.do_send(Relayed { count });
            }
            if let Some(e) = refused {
                // The broker is full or stopping: keep the rest for later, in order.
                log::warn!("change feed: publish refused, retrying later: {e}");
                tokio::time::sleep(config.retry_interval).await;
                break;
            }
            if !full_batch {
                break;
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let pruned = lease.prune(config.retention).await?;
            if pruned > 0 {
                log::debug!("change feed: pruned {pruned} relayed outbox rows");
            }
        }
        if node.is_shutting_down() {
            return Ok(());
        }
        tokio::select! {
            woke = lease.wait_for_changes(config.poll_interval) => woke?,
            _ = shutdown.wait_for(|down| *down) => return Ok(()),
        }
    }
}

/// Publishes a batch in order. Returns the ids to mark relayed (published, or unusable and
/// skipped) and, if the broker refused one, why (that change and the rest stay pending).
async fn relay_batch(
    node: &Node,
    entities: &EntityMap,
    batch: Vec<OutboxChange>,
) -> (Vec<i64>, Option<crate::node::PublishError>) {
    let mut done = Vec::with_capacity(batch.len());
    for change in batch {
        let draft = match entity_draft(entities, &change, &node.payload) {
            Ok(d) => d,
            Err(EntityDraftError::Payload(e)) => {
                // Refused for good (it would be refused again): counted, logged, not retried.
                node.metrics
                    .bad_payloads
                    .with_label_values(&[PUBLISH_SOURCE, e.reason()])
                    .inc();
                log::warn!(
                    "change feed: refusing outbox row {} ({} {:?}, tenant {:?}): {e}",
                    change.id,
                    change.table,
                    change.entity_id,
                    change.tenant_key
                );
                done.push(change.id);
                continue;
            }
            Err(why) => {
                log::warn!(
                    "change feed: skipping outbox row {} ({} {:?}): {why}",
                    change.id,
                    change.table,
                    change.entity_id
                );
                done.push(change.id);
                continue;
            }
        };
        match node.publish(draft, PUBLISH_SOURCE).await {
            Ok(_) => {
                log::debug!(
                    "change feed: {} {} {} (tenant {:?})",
                    change.table,
                    change.entity_id,
                    change.change.as_str(),
                    change.tenant_key
                );
                done.push(change.id)
            }
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// Why an outbox row cannot become a notification.
#[derive(Debug, thiserror::Error)]
pub enum EntityDraftError {
    #[error("no channel for this entity: {0}")]
    Channel(#[from] crate::channel::ChannelError),
    /// The notification's data (with the full payload, the row) is beyond the payload limits.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// `EntityChanged` data. The row goes in as the JSON text the database gave, never parsed, so
/// its depth is judged by the payload check alone.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntityChanged<'a> {
    entity_type: &'a str,
    entity_id: &'a str,
    change_type: &'static str,
    payload_type: &'static str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

/// The notification for one change on `notifications:{EntityType}:{EntityId}`:
/// `EntityChanged {entityType, entityId, changeType, payloadType, timestamp, tenantKey?, payload?}`,
/// its data within `limits`.
pub fn entity_draft(
    entities: &EntityMap,
    change: &OutboxChange,
    limits: &PayloadLimits,
) -> Result<Draft, EntityDraftError> {
    let entity_type = entities.entity_type(&change.table);
    let channel = ChannelName::parse(&format!("notifications:{entity_type}:{}", change.entity_id))?;
    let strategy = entities.payload(&entity_type);
    let data = EntityChanged {
        entity_type: &entity_type,
        entity_id: &change.entity_id,
        change_type: change.change.as_str(),
        payload_type: strategy.as_str(),
        timestamp: rfc3339_millis(change.changed_at_ms),
        tenant_key: change.tenant_key.as_deref(),
        payload: (strategy == PayloadStrategy::Full)
            .then(|| change.row.as_deref().unwrap_or(RawValue::NULL)),
    };
    let raw = to_raw_value(&data).expect("entity notifications serialize");
    Ok(Draft::new(
        channel,
        EventName::parse(EVENT_ENTITY_CHANGED).expect("a valid event name"),
        limits.check(raw)?,
    ))
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn map() -> EntityMap {
        EntityMap::new(
            [("mt_doc_team".to_owned(), "Team".to_owned())],
            PayloadStrategy::Minimal,
            ["Player".to_owned()],
        )
        .unwrap()
    }

    #[test]
    fn tables_map_to_entity_types_and_back() {
        let m = map();
        assert_eq!(m.entity_type("mt_doc_team"), "Team");
        assert_eq!(m.table_for("Team"), "mt_doc_team");
        assert_eq!(m.entity_type("mt_doc_order_item"), "OrderItem");
        assert_eq!(m.table_for("OrderItem"), "mt_doc_order_item");
        assert_eq!(m.payload("Team"), PayloadStrategy::Minimal);
        assert_eq!(m.payload("Player"), PayloadStrategy::Full);
        assert!(matches!(
            EntityMap::new(
                [("a".into(), "X".into()), ("b".into(), "X".into())],
                PayloadStrategy::Minimal,
                []
            ),
            Err(EntityMapError::DuplicateType(_))
        ));
    }

    #[test]
    fn drafts_carry_the_seed_fields() {
        let change = OutboxChange {
            id: 1,
            table: "mt_doc_player".into(),
            entity_id: "p-1".into(),
            change: ChangeType::Updated,
            tenant_key: Some("acme".into()),
            row: Some(RawValue::from_string(r#"{"id":"p-1","name":"Ann"}"#.into()).unwrap()),
            changed_at_ms: 1_700_000_000_123,
        };
        let d = entity_draft(&map(), &change, &LIMITS).unwrap();
        assert_eq!(d.channel.as_str(), "notifications:Player:p-1");
        let v: Value = serde_json::from_str(d.data.get()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"entityType":"Player","entityId":"p-1","changeType":"updated",
                "payloadType":"full","timestamp":"2023-11-14T22:13:20.123Z","tenantKey":"acme",
                "payload":{"id":"p-1","name":"Ann"}})
        );
        let bad = OutboxChange {
            entity_id: "has:colon".into(),
            ..change
        };
        assert!(matches!(
            entity_draft(&map(), &bad, &LIMITS),
            Err(EntityDraftError::Channel(_))
        ));
    }

    const LIMITS: PayloadLimits = PayloadLimits {
        max_depth: 4,
        max_bytes: 4096,
    };

    #[test]
    fn a_full_payload_beyond_the_limits_is_refused() {
        let change = |row: &str| OutboxChange {
            id: 1,
            table: "mt_doc_player".into(),
            entity_id: "p-1".into(),
            change: ChangeType::Updated,
            tenant_key: None,
            row: Some(RawValue::from_string(row.into()).unwrap()),
            changed_at_ms: 0,
        };
        // The row sits one level inside the notification's data.
        assert!(entity_draft(&map(), &change(r#"{"a":[[1]]}"#), &LIMITS).is_ok());
        assert!(matches!(
            entity_draft(&map(), &change(r#"{"a":[[[1]]]}"#), &LIMITS),
            Err(EntityDraftError::Payload(PayloadError::TooDeep { max: 4 }))
        ));
    }
}
