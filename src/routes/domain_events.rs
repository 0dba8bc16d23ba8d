//! Typed domain notifications (the seeds' `INotificationService`), for back ends that prefer one
//! call per business event to raw `POST /api/v1/publish`. Each publishes through the node's one
//! publish path (source `domain`) and answers `202 {"published": [{channel, id, offset, epoch}]}`.
//!
//! | route | event → channels |
//! | --- | --- |
//! | `POST /api/v1/tenants/{t}/orders` (the order, with `orderId`, `sessionId`?) | `NewOrder` (the order's fields, plus the order as `order` and `timestamp`, as the seed's `NotifyNewOrder` nests it) → `tenant:{t}:admins`, `tenant:{t}:admins:orders`; session activity (`hasOrders`) |
//! | `POST …/orders/{orderId}/status` `{"status", "sessionId"?, "order"?}` | `OrderStatusChanged` → `tenant:{t}:admins`, `tenant:{t}:order:{orderId}`; `OrderStatusUpdate` → `session:{sessionId}` |
//! | `POST …/tables/{tableId}/status` `{"isOccupied"}` | `TableStatusChanged` → `tenant:{t}:admins` |
//! | `POST …/sessions/{id}/cart` `{"cart"}` | `CartUpdated` → `session:{id}` |
//! | `POST …/broadcast` `{"event", "data"}` | `{event}` → `tenant:{t}:broadcast` |
//! | `POST …/roles/{role}/broadcast` `{"event", "data"}` | Admin, Staff → `tenant:{t}:admins`; Customer → `tenant:{t}:broadcast` |
//!
//! There is no customers-only channel: a `Customer` role broadcast goes to every member of the
//! tenant (staff included), the same audience as the seeds' tenant group. Callers: `Service`, or
//! Admin/Staff of the tenant. A session named in a request must be one of the tenant's
//! (404 otherwise), so nobody reaches another tenant's customers through these routes.
//!
//! The JSON a caller chooses (`data`, `cart`, `order`, the whole order) is read as raw text, which
//! has no nesting limit, and each event's data passes the node's payload check: too deep or too
//! large is `400 bad_payload`, as on `POST /api/v1/publish`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Map, Value};
use switchyard_actors::channel::{Channel, ChannelName};
use switchyard_actors::codec::rfc3339_millis;
use switchyard_actors::envelope::{now_millis, Draft, EventName};
use switchyard_actors::identity::Role;
use switchyard_actors::ids::{validate_segment, TenantKey};
use switchyard_actors::node::Node;
use switchyard_actors::payload::Payload;
use switchyard_actors::policy::Refusal;

use super::dining_sessions::staff_tenant;
use crate::caller::Caller;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::store::{Activity, SessionStatus, Store, StoreError};

/// Source label of these publishes (`switchyard_published_total`, and
/// `switchyard_bad_payloads_total` for refused data).
pub const PUBLISH_SOURCE: &str = "domain";

/// The field of `NewOrder`'s data holding the order itself.
const NEW_ORDER_NESTED: &str = "order";

fn event(name: &str) -> EventName {
    EventName::parse(name).expect("domain event names are valid")
}

fn segment(what: &str, raw: &str) -> Result<String, ApiError> {
    validate_segment(raw).map_err(|e| ApiError::BadRequest(format!("{what} {e}")))?;
    Ok(raw.to_owned())
}

/// An id given as a JSON string or integer.
fn id_field(what: &str, v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => segment(what, s).map(Some),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{what} must be a string or an integer, got {other}"
        ))),
    }
}

/// An event's data as JSON text. Serializing never parses, so raw parts (`&RawValue`) of any
/// depth go in unchanged and the payload check sees the data as it will be sent.
fn raw(v: &impl Serialize) -> Box<RawValue> {
    to_raw_value(v).expect("event data always serializes")
}

/// Publishes one event to each channel, in order; returns one ack per channel.
async fn publish(
    node: &Node,
    channels: Vec<Channel>,
    event: EventName,
    data: impl Into<std::sync::Arc<RawValue>>,
) -> Result<Vec<Value>, ApiError> {
    let data = node.check_payload(data, PUBLISH_SOURCE).inspect_err(|e| {
        let channel = channels
            .first()
            .map(|c| ChannelName::from_channel(c.clone()));
        log::info!("domain event {event} to {channel:?}: {e}");
    })?;
    publish_checked(node, channels, event, data).await
}

/// [`publish`] for data that already passed the payload check.
async fn publish_checked(
    node: &Node,
    channels: Vec<Channel>,
    event: EventName,
    data: Payload,
) -> Result<Vec<Value>, ApiError> {
    // One request is one publish against the tenant's quota, however many channels it reaches.
    if let Some(tenant) = channels.iter().find_map(|c| c.tenant()) {
        node.quotas.take_publish(tenant).map_err(Refusal::from)?;
    }
    let mut acks = Vec::with_capacity(channels.len());
    for channel in channels {
        let channel = ChannelName::from_channel(channel);
        let draft = Draft::new(channel.clone(), event.clone(), data.clone());
        let ack = node.publish(draft, PUBLISH_SOURCE).await?;
        acks.push(json!({
            "channel": channel,
            "event": event,
            "id": &*ack.id,
            "offset": ack.offset,
            "epoch": &*ack.epoch,
        }));
    }
    Ok(acks)
}

/// `202 {"published": [{channel, event, id, offset, epoch}, …]}`.
fn accepted(acks: Vec<Value>) -> HttpResponse {
    HttpResponse::Accepted().json(json!({ "published": acks }))
}

fn now() -> i64 {
    i64::try_from(now_millis()).unwrap_or(i64::MAX)
}

/// The session must be one of the tenant's (and Active, when `active`).
async fn tenant_session(
    store: &Store,
    tenant: &TenantKey,
    id: &str,
    active: bool,
) -> Result<String, ApiError> {
    let s = store.session(tenant, id).await?;
    if active && s.status != SessionStatus::Active {
        return Err(StoreError::SessionNotActive {
            id: s.session_id,
            status: s.status,
        }
        .into());
    }
    Ok(s.session_id)
}

/// `POST /api/v1/tenants/{t}/orders`: the order as the back end has it (`orderId` required,
/// `sessionId` optional). `NewOrder` to the admins; the session records activity with orders.
pub async fn new_order(
    who: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    body: web::Json<Box<RawValue>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = staff_tenant(&who, &path)?;
    // The order is the event's data: checked before it is parsed into a value tree.
    let order_text = state
        .node
        .check_payload(body.into_inner(), PUBLISH_SOURCE)
        .inspect_err(|e| log::info!("tenant {tenant}: new order refused: {e}"))?;
    let order: Map<String, Value> = serde_json::from_str(order_text.get())
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    let order_id = id_field("orderId", order.get("orderId"))?
        .ok_or_else(|| ApiError::BadRequest("orderId is required".into()))?;
    if let Some(session) = id_field("sessionId", order.get("sessionId"))? {
        let activity = Activity {
            has_orders: Some(true),
            all_served: Some(false),
        };
        store
            .record_activity(&tenant, &session, activity, now())
            .await?;
    }
    log::info!("tenant {tenant}: new order {order_id}");
    let data = new_order_data(&order, order_text);
    let channels = vec![
        Channel::TenantAdmins {
            tenant: tenant.clone(),
        },
        Channel::TenantAdminsOrders { tenant },
    ];
    let acks = publish(&state.node, channels, event("NewOrder"), data).await?;
    Ok(accepted(acks))
}

/// `NewOrder`'s data: the order's own fields (what back ends and front ends read today) plus the
/// order itself as `order` and a `timestamp`, the shape the seed's `NotifyNewOrder` builds
/// (`{orderId, tableNumber, order = orderData, timestamp}`) and its front end reads
/// (`notification.data.order`). An order that already nests `order` is published as it is.
fn new_order_data(order: &Map<String, Value>, text: Payload) -> std::sync::Arc<RawValue> {
    if order.contains_key(NEW_ORDER_NESTED) {
        return text.into_raw();
    }
    let mut data = order.clone();
    data.insert(NEW_ORDER_NESTED.into(), Value::Object(order.clone()));
    data.entry("timestamp")
        .or_insert_with(|| Value::from(rfc3339_millis(now_millis())));
    raw(&data).into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderStatusBody {
    status: String,
    session_id: Option<String>,
    order: Option<Box<RawValue>>,
}

/// `OrderStatusChanged` / `OrderStatusUpdate` data.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderStatusData<'a> {
    order_id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a RawValue>,
}

/// `POST /api/v1/tenants/{t}/orders/{orderId}/status`.
pub async fn order_status(
    who: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    body: web::Json<OrderStatusBody>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, raw_order) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let order_id = segment("orderId", &raw_order)?;
    let b = body.into_inner();
    if b.status.trim().is_empty() {
        return Err(ApiError::BadRequest("status must not be empty".into()));
    }
    let session = match &b.session_id {
        Some(id) => Some(tenant_session(&store, &tenant, id, false).await?),
        None => None,
    };
    let data = raw(&OrderStatusData {
        order_id: &order_id,
        status: &b.status,
        session_id: session.as_deref(),
        order: b.order.as_deref(),
    });
    let mut acks = publish(
        &state.node,
        vec![
            Channel::TenantAdmins {
                tenant: tenant.clone(),
            },
            Channel::TenantOrder {
                tenant,
                order: order_id,
            },
        ],
        event("OrderStatusChanged"),
        data.clone(),
    )
    .await?;
    if let Some(session) = session {
        let update = publish(
            &state.node,
            vec![Channel::Session { session }],
            event("OrderStatusUpdate"),
            data,
        )
        .await?;
        acks.extend(update);
    }
    Ok(accepted(acks))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableStatusBody {
    is_occupied: bool,
}

/// `POST /api/v1/tenants/{t}/tables/{tableId}/status` → `TableStatusChanged {tableId, isOccupied}`.
pub async fn table_status(
    who: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    body: web::Json<TableStatusBody>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, raw_table) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let table_id = segment("tableId", &raw_table)?;
    let data = json!({"tableId": table_id, "isOccupied": body.is_occupied});
    publish(
        &state.node,
        vec![Channel::TenantAdmins { tenant }],
        event("TableStatusChanged"),
        raw(&data),
    )
    .await
    .map(accepted)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartBody {
    cart: Box<RawValue>,
}

/// `POST /api/v1/tenants/{t}/sessions/{id}/cart` → `CartUpdated {sessionId, cart}`.
pub async fn cart(
    who: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    store: web::Data<Store>,
    body: web::Json<CartBody>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, id) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let session = tenant_session(&store, &tenant, &id, true).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CartUpdated<'a> {
        session_id: &'a str,
        cart: &'a RawValue,
    }
    let data = raw(&CartUpdated {
        session_id: &session,
        cart: &body.cart,
    });
    publish(
        &state.node,
        vec![Channel::Session { session }],
        event("CartUpdated"),
        data,
    )
    .await
    .map(accepted)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastBody {
    event: String,
    data: Box<RawValue>,
}

fn broadcast_event(b: &BroadcastBody) -> Result<EventName, ApiError> {
    EventName::parse(&b.event).map_err(|e| ApiError::BadRequest(format!("event: {e}")))
}

/// `POST /api/v1/tenants/{t}/broadcast` → `tenant:{t}:broadcast`.
pub async fn broadcast(
    who: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
    body: web::Json<BroadcastBody>,
) -> Result<HttpResponse, ApiError> {
    let tenant = staff_tenant(&who, &path)?;
    let ev = broadcast_event(&body)?;
    publish(
        &state.node,
        vec![Channel::TenantBroadcast { tenant }],
        ev,
        body.into_inner().data,
    )
    .await
    .map(accepted)
}

/// `POST /api/v1/tenants/{t}/roles/{role}/broadcast`: Admin/Staff → `tenant:{t}:admins`,
/// Customer → `tenant:{t}:broadcast` (see the module docs).
pub async fn role_broadcast(
    who: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    body: web::Json<BroadcastBody>,
) -> Result<HttpResponse, ApiError> {
    let (raw_tenant, raw_role) = path.into_inner();
    let tenant = staff_tenant(&who, &raw_tenant)?;
    let role: Role = raw_role
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("role: {e}")))?;
    let channel = match role {
        Role::Admin | Role::Staff => Channel::TenantAdmins { tenant },
        Role::Customer => Channel::TenantBroadcast { tenant },
        Role::Service | Role::Operator => {
            return Err(ApiError::BadRequest(format!(
                "role {role} has no tenant channel; broadcast to Admin, Staff or Customer"
            )))
        }
    };
    let ev = broadcast_event(&body)?;
    publish(&state.node, vec![channel], ev, body.into_inner().data)
        .await
        .map(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_actors::payload::PayloadLimits;

    fn new_order(body: Value) -> Value {
        let limits = PayloadLimits {
            max_depth: 8,
            max_bytes: 4096,
        };
        let text = limits.check(raw(&body)).unwrap();
        let Value::Object(order) = body else {
            panic!("an object")
        };
        serde_json::from_str(new_order_data(&order, text).get()).unwrap()
    }

    #[test]
    fn new_orders_nest_the_order_unless_the_back_end_did() {
        let order = json!({"orderId": "o1", "tableNumber": "T5", "totalAmount": 12.5});
        let data = new_order(order.clone());
        assert_eq!(data["order"], order);
        assert_eq!(data["tableNumber"], "T5");
        assert!(data["timestamp"].is_string());
        let nested = json!({"orderId": "o1", "tableNumber": "T5", "order": {"items": []}});
        assert_eq!(
            new_order(nested.clone()),
            nested,
            "nested by hand: as given"
        );
    }
}
