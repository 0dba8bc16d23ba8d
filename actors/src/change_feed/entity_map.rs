//! Which entity a changed row is, how much of it a notification carries, and the `EntityChanged`
//! event for one change.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};

use super::OutboxChange;
use crate::channel::{Channel, ChannelName};
use crate::codec::rfc3339_millis;
use crate::envelope::{Draft, EventName};
use crate::ids::validate_segment;
use crate::payload::{PayloadError, PayloadLimits};

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
    /// The entity in `payload` (for deletes: as it was): a Marten document table's (`mt_doc_*`)
    /// `data` document with its `id`, any other table's row as JSON.
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
/// `EntityChanged {entityType, entityId, changeType, payloadType, timestamp, tenantKey?, payload?}`
/// (`payload`: see [`PayloadStrategy::Full`]), its data within `limits`.
pub fn entity_draft(
    entities: &EntityMap,
    change: &OutboxChange,
    limits: &PayloadLimits,
) -> Result<Draft, EntityDraftError> {
    let entity_type = entities.entity_type(&change.table);
    let channel = ChannelName::parse(&Channel::notifications_name(
        &entity_type,
        &change.entity_id,
    ))?;
    let strategy = entities.payload(&entity_type);
    let row = change.row.as_deref().unwrap_or(RawValue::NULL);
    let document = (strategy == PayloadStrategy::Full)
        .then(|| entity_document(&change.table, row))
        .flatten();
    let data = EntityChanged {
        entity_type: &entity_type,
        entity_id: &change.entity_id,
        change_type: change.change.as_str(),
        payload_type: strategy.as_str(),
        timestamp: rfc3339_millis(change.changed_at_ms),
        tenant_key: change.tenant_key.as_deref(),
        payload: (strategy == PayloadStrategy::Full).then(|| document.as_deref().unwrap_or(row)),
    };
    let raw = to_raw_value(&data).expect("entity notifications serialize");
    Ok(Draft::new(
        channel,
        EventName::parse(EVENT_ENTITY_CHANGED).expect("a valid event name"),
        limits.check(raw)?,
    ))
}

/// The column of a Marten document table that holds the document.
const DOCUMENT_COLUMN: &str = "data";

/// The row's id column, which Marten keeps beside the document.
const ID_COLUMN: &str = "id";

/// A Marten document row (`mt_doc_*`: `id`, `data`, Marten's own `mt_*` columns) as the entity
/// itself: its `data` document, with the row's `id` when the document has none. The full
/// payload is this (seed 004: `payload.homeScore`, not the row's `payload.data.homeScore`).
/// `None` for other tables, or a row without an object in `data`: the full payload is then the
/// row. Only the row's and the document's top-level fields are read; the values stay the JSON
/// text the database gave, for the payload check to judge.
fn entity_document(table: &str, row: &RawValue) -> Option<Box<RawValue>> {
    if !table.starts_with(DOCUMENT_TABLE_PREFIX) {
        return None;
    }
    let columns: HashMap<String, &RawValue> = serde_json::from_str(row.get()).ok()?;
    let document = *columns.get(DOCUMENT_COLUMN)?;
    let fields: HashMap<String, &RawValue> = serde_json::from_str(document.get()).ok()?;
    if fields.contains_key(ID_COLUMN) {
        return Some(document.to_owned());
    }
    let id = columns.get(ID_COLUMN)?.get();
    // The document's own text with `"id":…,` put in front of its fields.
    let inner = document.get().trim_start().strip_prefix('{')?.trim_start();
    let text = if inner.starts_with('}') {
        format!("{{\"{ID_COLUMN}\":{id}}}")
    } else {
        format!("{{\"{ID_COLUMN}\":{id},{inner}")
    };
    RawValue::from_string(text).ok()
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

    /// Issue 15 (seed 004): the full payload of a Marten document is the entity
    /// (`payload.homeScore`), not the table row (`payload.data.homeScore`).
    #[test]
    fn the_full_payload_of_a_document_table_is_the_document_with_its_id() {
        let payload = |table: &str, row: &str| {
            let change = OutboxChange {
                id: 1,
                table: table.into(),
                entity_id: "p-1".into(),
                change: ChangeType::Deleted,
                tenant_key: None,
                row: Some(RawValue::from_string(row.into()).unwrap()),
                changed_at_ms: 0,
            };
            let d = entity_draft(&map(), &change, &LIMITS).unwrap();
            let v: Value = serde_json::from_str(d.data.get()).unwrap();
            v["payload"].clone()
        };
        let marten = r#"{"id":"p-1","data":{"homeScore":21,"awayScore":14},"mt_version":"v","mt_dotnet_type":"Ballr.Player","tenant_key":"acme"}"#;
        assert_eq!(
            payload("mt_doc_player", marten),
            serde_json::json!({"id":"p-1","homeScore":21,"awayScore":14})
        );
        // A document with its own id is sent as stored.
        assert_eq!(
            payload(
                "mt_doc_player",
                r#"{"id":"p-1","data":{"id":"p-1","Name":"Ann"}}"#
            ),
            serde_json::json!({"id":"p-1","Name":"Ann"})
        );
        assert_eq!(
            payload("mt_doc_player", r#"{"id":7,"data":{ }}"#),
            serde_json::json!({"id":7})
        );
        // Other tables, and rows without a document object, keep the row.
        assert_eq!(
            payload("player", marten),
            serde_json::from_str::<Value>(marten).unwrap()
        );
        for row in [r#"{"id":"p-1","name":"Ann"}"#, r#"{"id":"p-1","data":[1]}"#] {
            assert_eq!(
                payload("mt_doc_player", row),
                serde_json::from_str::<Value>(row).unwrap()
            );
        }
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
