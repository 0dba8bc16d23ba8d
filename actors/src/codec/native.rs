//! The native JSON protocol at `/ws` (text frames; specified in `docs/protocol.md`).
//!
//! Every frame is an object `{"type": …, "id"?: …, "data"?: {…}}`. `id` is the client's
//! correlation id, echoed in the reply. Fields may also sit at the top level instead of in `data`.
//!
//! A frame is read field by field as raw JSON text, never as one value tree: a publish's `data`
//! (and an invoke's `args`) may be nested deeper than the parser's limit, and it is the payload
//! check's to refuse (`bad_payload`, with the request's `id`), not the parser's. The frame's own
//! fields (`type`, `id`, `data`) are borrowed from the frame's text in one pass, and a request's
//! fields from that (a publish's `data` still raw text), so a publish's data is copied only into
//! the shared payload. A publish in the shape every client sends (`type` first) is read in a
//! single pass ([`fast_publish`]); any other frame, and every refusal, takes the general path.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    Decoded, InFrame, JsonArg, OutFrame, Outcome, ReplyTo, Request, RequestId, WireCodec,
    WireFormat,
};
use crate::channel::Channel;
use crate::codes::ErrorCode;
use crate::envelope::{Envelope, StreamPosition};

/// The native protocol codec; stateless.
#[derive(Default, Debug)]
pub struct NativeCodec;

impl WireCodec for NativeCodec {
    fn format(&self) -> WireFormat {
        WireFormat::Native
    }

    fn label(&self) -> &'static str {
        "native"
    }

    fn decode(&mut self, frame: InFrame<'_>, out: &mut Vec<Decoded>) {
        out.push(match frame {
            InFrame::Text(text) => decode_text(text),
            InFrame::Binary(_) => Decoded::reject(
                None,
                ErrorCode::UnsupportedFrame,
                "binary frames are not part of the native protocol; send JSON text frames",
            ),
        });
    }

    fn encode(&self, reply_to: &ReplyTo, outcome: Outcome) -> Option<OutFrame> {
        Some(OutFrame::Text(Bytes::from(encode_outcome(
            reply_to, outcome,
        ))))
    }
}

/// A frame's own fields, each as raw JSON text borrowed from the frame; any other field is
/// skipped (without a nesting limit: serde_json skips a value iteratively) and a repeated one
/// counts as last given. Typed after the parse, so that a `type` or `id` of the wrong kind is a
/// `bad_request` answered with what can be read, not a `bad_json`.
#[derive(Default)]
struct ClientFrame<'a> {
    kind: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    /// The request's fields; absent or `null`: they sit at the top level.
    data: Option<&'a RawValue>,
}

/// The names [`ClientFrame`] keeps (read without copying the key).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum FrameField {
    Type,
    Id,
    Data,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for ClientFrame<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FrameVisitor;
        impl<'de> serde::de::Visitor<'de> for FrameVisitor {
            type Value = ClientFrame<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // An object only (a struct would also take an array).
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut frame = ClientFrame::default();
                while let Some(field) = map.next_key::<FrameField>()? {
                    let slot = match field {
                        FrameField::Type => &mut frame.kind,
                        FrameField::Id => &mut frame.id,
                        FrameField::Data => &mut frame.data,
                        FrameField::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Option<&'de RawValue>>()?;
                }
                Ok(frame)
            }
        }
        d.deserialize_map(FrameVisitor)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeData {
    channel: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    since: Option<StreamPosition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnsubscribeData {
    channel: Option<String>,
    subscription_id: Option<SubscriptionId>,
    entity_type: Option<String>,
    entity_id: Option<String>,
}

/// A `subscriptionId` as clients send it: the text a `subscribed` reply gave (or seed 004's
/// `{EntityType}:{EntityId}`), or that id as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum SubscriptionId {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
struct InvokeData {
    method: String,
    #[serde(default)]
    args: Vec<Box<RawValue>>,
}

/// A publish's fields, borrowed from the frame (the names are copied only if they hold escapes).
#[derive(Deserialize)]
struct PublishData<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A small top-level field (`id`) as a value; `Err` when it is nested too deep to read.
fn field(raw: Option<&RawValue>) -> Result<Option<Value>, serde_json::Error> {
    raw.map(|raw| serde_json::from_str(raw.get())).transpose()
}

/// The frame's `type`: borrowed when it is a plain string (every client's), else read as a value
/// (`Err` when nested too deep to read, `Ok(None)` when it is no string).
fn frame_type(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if let Ok(plain) = serde_json::from_str::<&str>(raw.get()) {
        return Ok(Some(Cow::Borrowed(plain)));
    }
    Ok(match serde_json::from_str(raw.get())? {
        Value::String(s) => Some(Cow::Owned(s)),
        _ => None,
    })
}

fn decode_text(text: &str) -> Decoded {
    fast_publish(text).unwrap_or_else(|| decode_any(text))
}

/// A publish frame as every client writes it, read in one pass: `type` first and `"publish"`,
/// then `id` and `data` in any order, the publish's `channel`, `event` and `data` inside `data`,
/// names without escapes, nothing repeated. Anything else gives `None` (after reading no further
/// than the first field that does not fit), and [`decode_any`] reads the frame from the start, so
/// every other frame (and every refusal) is decoded exactly as before.
fn fast_publish(text: &str) -> Option<Decoded> {
    let frame = serde_json::from_str::<FastPublish<'_>>(text).ok()?;
    let fields = frame.data?;
    let reply_to = reply_to(field(frame.id).ok()?).ok()?;
    Some(Decoded::request(
        reply_to,
        Request::Publish {
            channel: fields.channel?.to_owned(),
            event: fields.event?.to_owned(),
            data: Arc::from(fields.data?.to_owned()),
        },
    ))
}

/// What [`fast_publish`] reads; an `Err` from its visitors means "not this shape".
#[derive(Default)]
struct FastPublish<'a> {
    id: Option<&'a RawValue>,
    data: Option<FastPublishData<'a>>,
}

#[derive(Default)]
struct FastPublishData<'a> {
    channel: Option<&'a str>,
    event: Option<&'a str>,
    data: Option<&'a RawValue>,
}

/// The names [`FastPublishData`] keeps.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum PublishField {
    Channel,
    Event,
    Data,
    #[serde(other)]
    Other,
}

/// "Not the common publish shape" (never shown: the frame is then read by [`decode_any`]).
fn not_fast<E: serde::de::Error>() -> E {
    E::custom("not the common publish shape")
}

/// Stores `value` in `slot`, refusing a repeated field.
fn once<T, E: serde::de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(not_fast()),
    }
}

impl<'de> Deserialize<'de> for FastPublish<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FastPublish<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a publish frame")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                match map.next_key::<FrameField>()? {
                    Some(FrameField::Type) if map.next_value::<&str>()? == "publish" => {}
                    _ => return Err(not_fast()),
                }
                let mut frame = FastPublish::default();
                while let Some(key) = map.next_key::<FrameField>()? {
                    match key {
                        FrameField::Id => once(&mut frame.id, map.next_value()?)?,
                        FrameField::Data => once(&mut frame.data, map.next_value()?)?,
                        FrameField::Type => return Err(not_fast()),
                        FrameField::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(frame)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for FastPublishData<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FastPublishData<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a publish's fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = FastPublishData::default();
                while let Some(key) = map.next_key::<PublishField>()? {
                    match key {
                        PublishField::Channel => once(&mut fields.channel, map.next_value()?)?,
                        PublishField::Event => once(&mut fields.event, map.next_value()?)?,
                        PublishField::Data => once(&mut fields.data, map.next_value()?)?,
                        PublishField::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(V)
    }
}

/// The reply address a frame's `id` gives; `Err` is the refusal of an `id` of the wrong kind.
fn reply_to(id: Option<Value>) -> Result<ReplyTo, Decoded> {
    match id {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(RequestId::Text(s))),
        Some(Value::Number(n)) if n.is_i64() => {
            Ok(Some(RequestId::Number(n.as_i64().unwrap_or_default())))
        }
        Some(_) => Err(Decoded::reject(
            None,
            ErrorCode::BadRequest,
            "\"id\" must be a string or an integer",
        )),
    }
}

/// Any frame, field by field (see the module docs).
fn decode_any(text: &str) -> Decoded {
    let parsed = serde_json::from_str::<ClientFrame<'_>>(text).and_then(|frame| {
        let kind = frame_type(frame.kind)?;
        let id = field(frame.id)?;
        Ok((frame, kind, id))
    });
    let (frame, kind, id) = match parsed {
        Ok(f) => f,
        Err(e) => {
            return Decoded::reject(
                None,
                ErrorCode::BadJson,
                format!("frame is not a JSON object: {e}"),
            )
        }
    };
    let reply_to = match reply_to(id) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let kind = match kind {
        Some(s) => s,
        None => {
            return Decoded::reject(
                reply_to,
                ErrorCode::BadRequest,
                "frame needs a string \"type\"",
            )
        }
    };
    // `data`, or the frame itself when the fields sit at the top level (`type` and `id` are then
    // fields the request's struct does not know, and ignores).
    let data = match frame.data {
        Some(d) => d.get(),
        None => text,
    };
    let request = match &*kind {
        "subscribe" => parse::<SubscribeData>(data).and_then(|d| {
            let channel = match (d.channel, d.entity_type, d.entity_id) {
                (Some(c), None, None) => c,
                (None, Some(t), Some(id)) => Channel::notifications_name(&t, &id),
                _ => {
                    return Err(
                        "subscribe needs \"channel\", or \"entityType\" and \"entityId\""
                            .to_owned(),
                    )
                }
            };
            Ok(Request::Subscribe {
                channel,
                since: d.since,
            })
        }),
        "unsubscribe" => parse::<UnsubscribeData>(data).and_then(|d| {
            match (d.channel, d.subscription_id, d.entity_type, d.entity_id) {
                (Some(channel), None, None, None) => Ok(Request::Unsubscribe { channel }),
                (None, Some(id), None, None) => Ok(Request::UnsubscribeById {
                    subscription_id: match id {
                        SubscriptionId::Number(n) => n.to_string(),
                        SubscriptionId::Text(t) => t,
                    },
                }),
                (None, None, Some(t), Some(id)) => Ok(Request::Unsubscribe {
                    channel: Channel::notifications_name(&t, &id),
                }),
                _ => Err("unsubscribe needs \"channel\", \"subscriptionId\", or \"entityType\" \
                     and \"entityId\""
                    .to_owned()),
            }
        }),
        "publish" => parse::<PublishData<'_>>(data).map(|d| Request::Publish {
            channel: d.channel.into_owned(),
            event: d.event.into_owned(),
            data: Arc::from(d.data.to_owned()),
        }),
        "ping" => Ok(Request::Ping),
        "invoke" => parse::<InvokeData>(data).map(|d| Request::Invoke {
            method: d.method,
            args: d.args.into_iter().map(JsonArg).collect(),
        }),
        other => {
            return Decoded::reject(
                reply_to,
                ErrorCode::UnknownType,
                format!(
                "unknown frame type {other:?}; expected subscribe, unsubscribe, publish, ping or invoke"
            ),
            )
        }
    };
    match request {
        Ok(r) => Decoded::request(reply_to, r),
        Err(msg) => Decoded::reject(reply_to, ErrorCode::BadRequest, format!("{kind}: {msg}")),
    }
}

fn parse<'a, T: Deserialize<'a>>(data: &'a str) -> Result<T, String> {
    serde_json::from_str(data).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct ServerFrame<'a, D: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: &'a ReplyTo,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
}

fn frame<D: Serialize>(kind: &'static str, id: &ReplyTo, data: Option<D>) -> Vec<u8> {
    serde_json::to_vec(&ServerFrame { kind, id, data }).expect("server frames always serialize")
}

fn encode_outcome(id: &ReplyTo, outcome: Outcome) -> Vec<u8> {
    use serde_json::json;
    match outcome {
        Outcome::Subscribed {
            channel,
            subscription_id,
            offset,
            epoch,
            recovered,
        } => {
            let mut data = json!({
                "channel": channel,
                "subscriptionId": subscription_id.to_string(),
                "offset": offset,
                "epoch": &*epoch,
            });
            if let Some(r) = recovered {
                data["recovered"] = Value::Bool(r);
            }
            if let Some((entity_type, entity_id)) = Channel::entity_of_name(&channel) {
                data["entityType"] = entity_type.into();
                data["entityId"] = entity_id.into();
            }
            frame("subscribed", id, Some(data))
        }
        Outcome::SubscriptionError {
            channel,
            code,
            reason,
        } => {
            let mut data = json!({"channel": channel, "code": code, "reason": reason});
            // Seed 004's shape, `{entityType, entityId, error}`, beside Switchyard's.
            if let Some((entity_type, entity_id)) = Channel::entity_of_name(&channel) {
                data["entityType"] = entity_type.into();
                data["entityId"] = entity_id.into();
                data["error"] = reason.as_str().into();
            }
            frame("subscription_error", id, Some(data))
        }
        Outcome::Unsubscribed { channel } => {
            frame("unsubscribed", id, Some(json!({ "channel": channel })))
        }
        Outcome::Published {
            id: event_id,
            offset,
            epoch,
        } => frame(
            "published",
            id,
            Some(PublishedData {
                epoch: &epoch,
                id: &event_id,
                offset,
            }),
        ),
        Outcome::Pong => frame::<()>("pong", id, None),
        Outcome::Error { code, message } => {
            frame("error", id, Some(json!({"code": code, "message": message})))
        }
        Outcome::Value(v) => frame("result", id, Some(v)),
        Outcome::Done => frame::<()>("result", id, None),
    }
}

/// A `published` reply's data (one per publish; no value tree). Fields in name order, as the other
/// replies' `json!` maps print theirs.
#[derive(Serialize)]
struct PublishedData<'a> {
    epoch: &'a str,
    id: &'a str,
    offset: u64,
}

#[derive(Serialize)]
struct Notification<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: NotificationBody<'a>,
}

#[derive(Serialize)]
struct NotificationBody<'a> {
    id: &'a str,
    channel: &'a str,
    event: &'a str,
    data: &'a RawValue,
    offset: u64,
    epoch: &'a str,
    timestamp: String,
    /// Entity channels (`notifications:{EntityType}:{EntityId}`) only: the change-feed fields.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    entity: Option<EntityFields<'a>>,
}

/// The change-feed fields of an entity notification, lifted out of the event's data so the
/// frame has the seed's shape (`entityType`, `entityId`, `changeType`, `payloadType`, `payload`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntityFields<'a> {
    entity_type: &'a str,
    entity_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    change_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

/// The parts of an entity event's data that the frame repeats; anything else is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntityData<'a> {
    #[serde(borrow)]
    change_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    payload_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

fn entity_fields(env: &Envelope) -> Option<EntityFields<'_>> {
    let Channel::Notifications {
        entity_type,
        entity_id,
    } = env.channel.kind()
    else {
        return None;
    };
    // Data published by others may be any JSON: then only the channel's parts are added.
    let data = serde_json::from_str::<EntityData<'_>>(env.data.get()).ok();
    let (change_type, payload_type, payload) = data
        .map(|d| (d.change_type, d.payload_type, d.payload))
        .unwrap_or_default();
    Some(EntityFields {
        entity_type,
        entity_id,
        change_type,
        payload_type,
        payload,
    })
}

/// The `notification` frame for an envelope (shared by every native connection).
pub fn encode_notification(env: &Envelope) -> Bytes {
    let body = NotificationBody {
        id: &env.id,
        channel: env.channel.as_str(),
        event: env.event.as_str(),
        data: &env.data,
        offset: env.offset,
        epoch: &env.epoch,
        timestamp: super::rfc3339_millis(env.ts),
        entity: entity_fields(env),
    };
    // Sized up front (the queue's estimate covers the frame's fixed fields), so the encoder does
    // not grow the buffer several times per event.
    let mut bytes = Vec::with_capacity(env.queued_size());
    serde_json::to_writer(
        &mut bytes,
        &Notification {
            kind: "notification",
            data: body,
        },
    )
    .expect("notifications always serialize");
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Inbound;

    fn decode(text: &str) -> Decoded {
        let mut out = Vec::new();
        NativeCodec.decode(InFrame::Text(text), &mut out);
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn text(frame: Option<OutFrame>) -> Value {
        match frame {
            Some(OutFrame::Text(b)) => serde_json::from_slice(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subscribe_with_channel_since_and_id() {
        let d = decode(
            r#"{"type":"subscribe","id":7,"data":{"channel":"tenant:a:broadcast","since":{"offset":3,"epoch":"e"}}}"#,
        );
        assert!(matches!(
            d,
            Decoded::Request(Inbound {
                reply_to: Some(RequestId::Number(7)),
                request: Request::Subscribe { channel, since: Some(StreamPosition { offset: 3, epoch }) },
            }) if channel == "tenant:a:broadcast" && epoch == "e"
        ));
    }

    #[test]
    fn subscribe_by_entity_and_top_level_fields() {
        let d =
            decode(r#"{"type":"subscribe","data":{"entityType":"Team","entityId":"team-123"}}"#);
        assert!(matches!(
            d,
            Decoded::Request(Inbound { reply_to: None, request: Request::Subscribe { channel, since: None } })
                if channel == "notifications:Team:team-123"
        ));
        let d = decode(r#"{"type":"unsubscribe","id":"x","channel":"user:u"}"#);
        assert!(matches!(
            d,
            Decoded::Request(Inbound { reply_to: Some(RequestId::Text(x)), request: Request::Unsubscribe { channel } })
                if x == "x" && channel == "user:u"
        ));
    }

    /// Issue 15 (seed 004): its SDK unsubscribes with `{"subscriptionId":"Team:team-123"}`.
    #[test]
    fn unsubscribe_by_subscription_id_or_entity() {
        let by_id = |text: &str| match decode(text) {
            Decoded::Request(Inbound {
                request: Request::UnsubscribeById { subscription_id },
                ..
            }) => subscription_id,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            by_id(r#"{"type":"unsubscribe","data":{"subscriptionId":"Team:team-123"}}"#),
            "Team:team-123"
        );
        assert_eq!(
            by_id(r#"{"type":"unsubscribe","id":1,"data":{"subscriptionId":"5"}}"#),
            "5"
        );
        assert_eq!(by_id(r#"{"type":"unsubscribe","subscriptionId":5}"#), "5");
        let d =
            decode(r#"{"type":"unsubscribe","data":{"entityType":"Team","entityId":"team-123"}}"#);
        assert!(matches!(
            d,
            Decoded::Request(Inbound { request: Request::Unsubscribe { channel }, .. })
                if channel == "notifications:Team:team-123"
        ));
        for bad in [
            r#"{"type":"unsubscribe","data":{}}"#,
            r#"{"type":"unsubscribe","data":{"channel":"user:u","subscriptionId":"1"}}"#,
            r#"{"type":"unsubscribe","data":{"entityType":"Team"}}"#,
            r#"{"type":"unsubscribe","data":{"subscriptionId":{"a":1}}}"#,
        ] {
            assert!(
                matches!(
                    decode(bad),
                    Decoded::Reject {
                        code: ErrorCode::BadRequest,
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    /// Issue 15 (seed 004): `subscribed` names the entity, `subscription_error` is
    /// `{entityType, entityId, error}`, beside Switchyard's own fields.
    #[test]
    fn entity_subscription_replies_carry_the_seed_fields() {
        let subscribed = |channel: &str| {
            text(NativeCodec.encode(
                &None,
                Outcome::Subscribed {
                    channel: channel.into(),
                    subscription_id: 3,
                    offset: 0,
                    epoch: Arc::from("e"),
                    recovered: None,
                },
            ))
        };
        assert_eq!(
            subscribed("notifications:Team:team-123"),
            serde_json::json!({"type":"subscribed","data":{"channel":"notifications:Team:team-123",
                "subscriptionId":"3","offset":0,"epoch":"e","entityType":"Team","entityId":"team-123"}})
        );
        assert!(subscribed("user:u")["data"].get("entityType").is_none());

        let refused = |channel: &str| {
            text(NativeCodec.encode(
                &Some(RequestId::Number(2)),
                Outcome::SubscriptionError {
                    channel: channel.into(),
                    code: ErrorCode::Forbidden,
                    reason: "Unauthorized".into(),
                },
            ))
        };
        assert_eq!(
            refused("notifications:Team:team-123"),
            serde_json::json!({"type":"subscription_error","id":2,"data":{
                "channel":"notifications:Team:team-123","code":"forbidden","reason":"Unauthorized",
                "entityType":"Team","entityId":"team-123","error":"Unauthorized"}})
        );
        // A refused name that does not parse still names the entity the client asked for.
        assert_eq!(refused("notifications:Team:a b")["data"]["entityId"], "a b");
        assert_eq!(
            refused("user:u"),
            serde_json::json!({"type":"subscription_error","id":2,"data":{
                "channel":"user:u","code":"forbidden","reason":"Unauthorized"}})
        );
    }

    #[test]
    fn publish_carries_data_as_json() {
        match decode(
            r#"{"type":"publish","data":{"channel":"c","event":"E","data":{"a": [1, 2]}}}"#,
        ) {
            Decoded::Request(inb) => match inb.request {
                Request::Publish { data, event, .. } => {
                    // Exactly as sent (never parsed), as on REST.
                    assert_eq!(data.get(), r#"{"a": [1, 2]}"#);
                    assert_eq!(event, "E");
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// What the map of fields did, the borrowed frame does: the last of a repeated field counts,
    /// escaped names and types are read, a `null` `data` means top-level fields.
    #[test]
    fn repeated_fields_escapes_and_null_data_read_as_before() {
        let publish = |text: &str| match decode(text) {
            Decoded::Request(Inbound {
                reply_to,
                request:
                    Request::Publish {
                        channel,
                        event,
                        data,
                    },
            }) => (reply_to, channel, event, data.get().to_owned()),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            publish(concat!(
                r#"{"type":"ping","id":1,"type":"publish","id":"b","#,
                r#""data":{"channel":"c","event":"E","data":1}}"#
            )),
            (
                Some(RequestId::Text("b".into())),
                "c".to_owned(),
                "E".to_owned(),
                "1".to_owned()
            )
        );
        assert!(matches!(
            decode(r#"{"t\u0079pe":"s\u0075bscribe","data":null,"channel":"c\/d"}"#),
            Decoded::Request(Inbound { request: Request::Subscribe { channel, .. }, .. }) if channel == "c/d"
        ));
        assert!(matches!(
            decode(r#"{"type":"publish","data":{"channel":"c","event":"E"}}"#),
            Decoded::Reject {
                code: ErrorCode::BadRequest,
                ..
            }
        ));
        assert!(matches!(
            decode(r#"{"type":5,"id":3}"#),
            Decoded::Reject {
                code: ErrorCode::BadRequest,
                reply_to: Some(RequestId::Number(3)),
                ..
            }
        ));
    }

    /// The one-pass publish reads what the field-by-field decode reads, and leaves every other
    /// shape (and every refusal) to it.
    #[test]
    fn the_fast_publish_decodes_as_the_general_path_does() {
        let frames = [
            r#"{"type":"publish","id":7,"data":{"channel":"c","event":"E","data":{"a":[1,"]"]}}}"#,
            r#"{"type":"publish","data":{"data":"x","event":"E","channel":"c","extra":[1]},"id":"r"}"#,
            r#"{"type":"publish","data":{"channel":"c","event":"E","data":1},"id":null}"#,
            r#"{"type":"publish","x":{"y":[]},"data":{"channel":"c","event":"E","data":1}}"#,
        ];
        for text in frames {
            let fast = fast_publish(text).unwrap_or_else(|| panic!("not fast: {text}"));
            assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", decode_any(text)),
                "{text}"
            );
        }
        // Shapes the fast path leaves to the general one (which refuses or reads them).
        let others = [
            r#"{"id":1,"type":"publish","data":{"channel":"c","event":"E","data":1}}"#,
            r#"{"type":"publish","data":{"channel":"c\/d","event":"E","data":1}}"#,
            r#"{"type":"publish","data":{"channel":"c","event":"E","data":1},"type":"ping"}"#,
            r#"{"type":"publish","id":1,"id":2,"data":{"channel":"c","event":"E","data":1}}"#,
            r#"{"type":"publish","data":{"channel":"c","channel":"d","event":"E","data":1}}"#,
            r#"{"type":"publish","data":{"channel":"c","event":"E"}}"#,
            r#"{"type":"publish","data":{"channel":1,"event":"E","data":1}}"#,
            r#"{"type":"publish","data":[1]}"#,
            r#"{"type":"publish","data":null,"channel":"c","event":"E"}"#,
            r#"{"type":"publish","id":{"a":1},"data":{"channel":"c","event":"E","data":1}}"#,
            r#"{"type":"publish","id":1.5,"data":{"channel":"c","event":"E","data":1}}"#,
            r#"{"type":"publish","data":{"channel":"c","event":"E","data":1}} x"#,
            r#"{"type":"ping","id":1}"#,
            r#"{"type":"p\u0075blish","data":{"channel":"c","event":"E","data":1}}"#,
        ];
        for text in others {
            assert!(fast_publish(text).is_none(), "{text}");
            assert_eq!(
                format!("{:?}", decode(text)),
                format!("{:?}", decode_any(text)),
                "{text}"
            );
        }
    }

    #[test]
    fn invoke_carries_method_and_arguments() {
        let d = decode(
            r#"{"type":"invoke","id":"m1","data":{"method":"SendMessage","args":["bob","hi"]}}"#,
        );
        assert!(matches!(
            d,
            Decoded::Request(Inbound {
                reply_to: Some(RequestId::Text(id)),
                request: Request::Invoke { method, args },
            }) if id == "m1" && method == "SendMessage" && args.iter().map(JsonArg::get).eq(["\"bob\"", "\"hi\""])
        ));
        let d = decode(r#"{"type":"invoke","data":{"method":"MarkRead"}}"#);
        assert!(
            matches!(d, Decoded::Request(Inbound { request: Request::Invoke { args, .. }, .. }) if args.is_empty())
        );
        let code = |t: &str| match decode(t) {
            Decoded::Reject { code, .. } => code,
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(
            code(r#"{"type":"invoke","data":{}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"invoke","data":{"method":"X","args":"a"}}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn bad_input_gets_specific_codes() {
        let code = |t: &str| match decode(t) {
            Decoded::Reject { code, .. } => code,
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(code("{not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"data":{}}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"subscribe","data":{}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"publish","data":{"channel":"c"}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"ping","id":{"a":1}}"#),
            ErrorCode::BadRequest
        );
        let mut out = Vec::new();
        NativeCodec.decode(InFrame::Binary(b"\x00"), &mut out);
        assert!(matches!(
            out[0],
            Decoded::Reject {
                code: ErrorCode::UnsupportedFrame,
                ..
            }
        ));
    }

    #[test]
    fn replies_echo_the_id() {
        let v = text(NativeCodec.encode(
            &Some(RequestId::Text("r1".into())),
            Outcome::Subscribed {
                channel: "user:u".into(),
                subscription_id: 5,
                offset: 9,
                epoch: Arc::from("e"),
                recovered: Some(true),
            },
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"subscribed","id":"r1","data":{"channel":"user:u","subscriptionId":"5","offset":9,"epoch":"e","recovered":true}})
        );
        let v = text(NativeCodec.encode(&None, Outcome::Pong));
        assert_eq!(v, serde_json::json!({"type":"pong"}));
        let v = text(NativeCodec.encode(
            &Some(RequestId::Number(1)),
            Outcome::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
            },
        ));
        assert_eq!(v["data"]["code"], "rate_limited");
        assert_eq!(v["id"], 1);
    }

    #[test]
    fn notification_shape() {
        let env = crate::envelope::tests::sample();
        let v: Value = serde_json::from_slice(&encode_notification(&env)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"notification","data":{
                "id":"e1","channel":"tenant:acme:broadcast","event":"NewOrder",
                "data":{"orderId":"o1","total":12.5},"offset":7,"epoch":"ep1",
                "timestamp":"2023-11-14T22:13:20.123Z"}})
        );
    }

    #[test]
    fn entity_notifications_carry_the_change_feed_fields() {
        use crate::channel::ChannelName;
        use crate::envelope::{Draft, EventName};
        use crate::ids::NodeId;
        let envelope = |channel: &str, data: &str| {
            let draft = Draft {
                id: Arc::from("e2"),
                channel: ChannelName::parse(channel).unwrap(),
                event: EventName::parse("EntityChanged").unwrap(),
                data: crate::payload::Payload::test(data),
                ts: 1_700_000_000_123,
                arguments: None,
            };
            Envelope::new(draft, 3, Arc::from("ep"), NodeId(Arc::from("n1")))
        };
        let full = envelope(
            "notifications:Team:team-1",
            r#"{"entityType":"Team","entityId":"team-1","changeType":"updated","payloadType":"full","timestamp":"2023-11-14T22:13:20.000Z","payload":{"id":"team-1","name":"A"}}"#,
        );
        let v: Value = serde_json::from_slice(&encode_notification(&full)).unwrap();
        let d = &v["data"];
        assert_eq!(d["channel"], "notifications:Team:team-1");
        assert_eq!(d["entityType"], "Team");
        assert_eq!(d["entityId"], "team-1");
        assert_eq!(d["changeType"], "updated");
        assert_eq!(d["payloadType"], "full");
        assert_eq!(d["payload"], serde_json::json!({"id":"team-1","name":"A"}));
        assert_eq!(d["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(d["offset"], 3);
        assert_eq!(d["data"]["changeType"], "updated");

        let minimal = envelope(
            "notifications:Team:team-1",
            r#"{"changeType":"deleted","payloadType":"minimal"}"#,
        );
        let v: Value = serde_json::from_slice(&encode_notification(&minimal)).unwrap();
        assert_eq!(v["data"]["changeType"], "deleted");
        assert!(v["data"].get("payload").is_none());

        // Whatever a Service published there: the channel's parts, nothing invented.
        let odd = envelope("notifications:Team:team-1", "[1,2]");
        let v: Value = serde_json::from_slice(&encode_notification(&odd)).unwrap();
        assert_eq!(v["data"]["entityId"], "team-1");
        assert!(v["data"].get("changeType").is_none());
        // Other channels are untouched.
        let plain = crate::envelope::tests::sample();
        let v: Value = serde_json::from_slice(&encode_notification(&plain)).unwrap();
        assert!(v["data"].get("entityType").is_none());
    }
}
