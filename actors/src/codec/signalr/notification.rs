//! Server → client notification frames: one envelope as a hub `Invocation` with no
//! `invocationId`, encoded once per node per format and shared by every SignalR connection.
//!
//! The arguments are what the publisher chose ([`crate::hub_arguments`]): the seeds'
//! notification message, the event's `data` itself, or an explicit list. An event whose publisher
//! chose nothing carries its `data` if it is a chat event on a chat channel
//! ([`crate::chat_events::sent_bare`]) or the hub path defaults to `data`, else the message.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::framing::{write_varint, RECORD_SEPARATOR};
use crate::chat_events::sent_bare;
use crate::codec::rfc3339_millis;
use crate::envelope::Envelope;
use crate::hub_arguments::{ArgumentsDefault, ArgumentsShape};

/// What `env` carries for a client of a hub defaulting to `default` (see the module docs).
pub fn arguments_shape(env: &Envelope, default: ArgumentsDefault) -> ArgumentsShape {
    ArgumentsShape::resolve(
        env.arguments.as_ref(),
        sent_bare(&env.channel, &env.event),
        default,
    )
}

/// The seeds' notification message: the single argument of every server → client invocation.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationMessage<'a, D: Serialize> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    tenant_key: Option<&'a str>,
    channel: &'a str,
    data: D,
    timestamp: String,
    offset: u64,
    /// The history generation `offset` counts in: with it a client's `Subscribe(channel, since)`
    /// after a reconnect names the epoch it really has (an addition to the seeds' message; their
    /// handlers ignore it).
    epoch: &'a str,
}

fn message<D: Serialize>(env: &Envelope, data: D) -> NotificationMessage<'_, D> {
    NotificationMessage {
        id: &env.id,
        kind: env.event.as_str(),
        tenant_key: env.channel.tenant().map(|t| t.as_str()),
        channel: env.channel.as_str(),
        data,
        timestamp: rfc3339_millis(env.ts),
        offset: env.offset,
        epoch: &env.epoch,
    }
}

#[derive(Serialize)]
struct JsonInvocation<'a> {
    #[serde(rename = "type")]
    kind: u8,
    target: &'a str,
    arguments: [NotificationMessage<'a, &'a RawValue>; 1],
}

/// An invocation carrying the event's own arguments: `[data]`, or the publisher's list as it is.
#[derive(Serialize)]
struct OwnJsonInvocation<'a, A: Serialize> {
    #[serde(rename = "type")]
    kind: u8,
    target: &'a str,
    arguments: A,
}

/// `{"type":1,"target":"<event>","arguments":[…]}` + 0x1E, shared by every JSON hub connection
/// that gets this `shape`.
pub fn encode_notification_json(env: &Envelope, shape: ArgumentsShape) -> Bytes {
    let target = env.event.as_str();
    let encoded = match (shape, env.arguments.as_ref().and_then(|a| a.list())) {
        (ArgumentsShape::Message, _) => serde_json::to_vec(&JsonInvocation {
            kind: 1,
            target,
            arguments: [message(env, &*env.data)],
        }),
        (ArgumentsShape::Own, Some(list)) => serde_json::to_vec(&OwnJsonInvocation {
            kind: 1,
            target,
            arguments: list,
        }),
        (ArgumentsShape::Own, None) => serde_json::to_vec(&OwnJsonInvocation {
            kind: 1,
            target,
            arguments: [&*env.data],
        }),
    };
    let mut out = encoded.expect("invocations always serialize");
    out.push(RECORD_SEPARATOR);
    Bytes::from(out)
}

/// `[1, {}, nil, "<event>", [{…}], []]` with its varint length prefix, shared by every
/// MessagePack hub connection. The sixth element, the (empty) stream ids, is what ASP.NET Core writes;
/// readers such as `signalrcore` index it and drop a five-element invocation.
pub fn encode_notification_msgpack(env: &Envelope, shape: ArgumentsShape) -> Bytes {
    // MessagePack needs a structured value; parsing `data` (or the argument list) here happens
    // once per node. Checked JSON always parses; what was stored before the payload limits
    // existed (an old history entry) may not, and goes out as nil rather than failing the frame.
    let parse = |what: &str, raw: &RawValue| -> serde_json::Value {
        serde_json::from_str(raw.get()).unwrap_or_else(|e| {
            log::warn!(
                "{} offset {}: {what} sent as nil to MessagePack clients: {e}",
                env.channel,
                env.offset
            );
            serde_json::Value::Null
        })
    };
    let headers = std::collections::BTreeMap::<String, String>::new();
    let stream_ids: [&str; 0] = [];
    let target = env.event.as_str();
    let list = env.arguments.as_ref().and_then(|a| a.list());
    let encoded = match (shape, list) {
        (ArgumentsShape::Message, _) => {
            let data = parse("data", &env.data);
            rmp_serde::to_vec_named(&(1u8, headers, (), target, [message(env, data)], stream_ids))
        }
        (ArgumentsShape::Own, Some(list)) => {
            let arguments = match parse("the argument list", list) {
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            rmp_serde::to_vec_named(&(1u8, headers, (), target, arguments, stream_ids))
        }
        (ArgumentsShape::Own, None) => {
            let data = parse("data", &env.data);
            rmp_serde::to_vec_named(&(1u8, headers, (), target, [data], stream_ids))
        }
    }
    .expect("invocations always serialize");
    let mut out = Vec::with_capacity(encoded.len() + 5);
    write_varint(&mut out, encoded.len());
    out.extend_from_slice(&encoded);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::sample;
    use crate::hub_arguments::HubArguments;

    /// The JSON frame a client of a hub with the default default gets.
    fn json(env: &Envelope) -> Bytes {
        encode_notification_json(env, arguments_shape(env, ArgumentsDefault::Message))
    }

    /// The MessagePack frame a client of a hub with the default default gets.
    fn msgpack(env: &Envelope) -> Bytes {
        encode_notification_msgpack(env, arguments_shape(env, ArgumentsDefault::Message))
    }

    fn json_value(frame: &Bytes) -> serde_json::Value {
        serde_json::from_slice(&frame[..frame.len() - 1]).unwrap()
    }

    #[test]
    fn the_publisher_chooses_the_arguments_and_the_hub_defaults_them() {
        use crate::codec::{notification_frame, WireFormat};
        use rmpv::Value as M;
        let with = |arguments| {
            let mut env = sample();
            env.arguments = arguments;
            env
        };
        let data = serde_json::json!({"orderId": "o1", "total": 12.5});
        // Chosen by the publisher: the same on every hub.
        for default in [ArgumentsDefault::Message, ArgumentsDefault::Data] {
            let env = with(Some(HubArguments::Data));
            let v = json_value(&notification_frame(&env, WireFormat::SignalRJson, default));
            assert_eq!(v["arguments"], serde_json::json!([data]), "{default:?}");
            let env = with(Some(HubArguments::Message));
            let v = json_value(&notification_frame(&env, WireFormat::SignalRJson, default));
            assert_eq!(v["arguments"][0]["data"], data, "{default:?}");
            let env = with(Some(HubArguments::built(&("c1", "bob", 3))));
            let frame = notification_frame(&env, WireFormat::SignalRJson, default);
            assert_eq!(
                std::str::from_utf8(&frame).unwrap(),
                "{\"type\":1,\"target\":\"NewOrder\",\"arguments\":[\"c1\",\"bob\",3]}\u{1e}"
            );
            let frame = notification_frame(&env, WireFormat::SignalRMsgPack, default);
            let value = rmpv::decode::read_value(&mut &frame[1..]).unwrap();
            assert_eq!(
                value[4],
                M::Array(vec![M::from("c1"), M::from("bob"), M::from(3u8)])
            );
        }
        // Chosen by nobody: each hub's default, each encoded once and kept apart.
        let env = with(None);
        let wrapped = notification_frame(&env, WireFormat::SignalRJson, ArgumentsDefault::Message);
        let bare = notification_frame(&env, WireFormat::SignalRJson, ArgumentsDefault::Data);
        assert_eq!(json_value(&wrapped)["arguments"][0]["data"], data);
        assert_eq!(json_value(&bare)["arguments"], serde_json::json!([data]));
        let again = notification_frame(&env, WireFormat::SignalRJson, ArgumentsDefault::Data);
        assert_eq!(again.as_ptr(), bare.as_ptr(), "encoded once per shape");
        let packed = notification_frame(&env, WireFormat::SignalRMsgPack, ArgumentsDefault::Data);
        let value = rmpv::decode::read_value(&mut &packed[1..]).unwrap();
        assert_eq!(value[4][0].as_map().unwrap()[0].0, M::from("orderId"));
        // The native frame ignores the choice.
        let native = notification_frame(&env, WireFormat::Native, ArgumentsDefault::Data);
        let listed = with(Some(HubArguments::built(&["x"])));
        let native_listed = notification_frame(&listed, WireFormat::Native, ArgumentsDefault::Data);
        assert_eq!(native, native_listed);
    }

    #[test]
    fn json_notification_bytes_are_exact() {
        let frame = json(&sample());
        let expected = concat!(
            r#"{"type":1,"target":"NewOrder","arguments":[{"id":"e1","type":"NewOrder","#,
            r#""tenantKey":"acme","channel":"tenant:acme:broadcast","#,
            r#""data":{"orderId":"o1","total":12.5},"#,
            r#""timestamp":"2023-11-14T22:13:20.123Z","offset":7,"epoch":"ep1"}]}"#,
            "\u{1e}"
        );
        assert_eq!(std::str::from_utf8(&frame).unwrap(), expected);
    }

    #[test]
    fn chat_events_on_chat_channels_carry_their_data_bare() {
        use crate::channel::ChannelName;
        use crate::envelope::{Draft, EventName};
        use crate::ids::NodeId;
        use std::sync::Arc;
        let envelope = |channel: &str, event: &str| {
            let draft = Draft {
                id: Arc::from("e3"),
                channel: ChannelName::parse(channel).unwrap(),
                event: EventName::parse(event).unwrap(),
                data: crate::payload::Payload::test(r#"{"content":"<b>hi</b>"}"#),
                ts: 1_700_000_000_123,
                arguments: None,
            };
            Envelope::new(draft, 2, Arc::from("ep"), NodeId(Arc::from("n1")))
        };
        for channel in ["tenant:pets:user:bob", "user:bob"] {
            let frame = json(&envelope(channel, "ReceiveMessage"));
            assert_eq!(
                std::str::from_utf8(&frame).unwrap(),
                concat!(
                    r#"{"type":1,"target":"ReceiveMessage","arguments":[{"content":"<b>hi</b>"}]}"#,
                    "\u{1e}"
                ),
                "{channel}"
            );
        }
        let frame = msgpack(&envelope("tenant:pets:user:bob", "UserOnline"));
        let value = rmpv::decode::read_value(&mut &frame[1..]).unwrap();
        assert_eq!(value[3], rmpv::Value::from("UserOnline"));
        assert_eq!(
            value[4][0],
            rmpv::Value::Map(vec![(
                rmpv::Value::from("content"),
                rmpv::Value::from("<b>hi</b>")
            )])
        );
        let frame = msgpack(&envelope("conversation:c1", "UserStartedTyping"));
        let value = rmpv::decode::read_value(&mut &frame[1..]).unwrap();
        assert_eq!(
            value[4][0],
            rmpv::Value::Map(vec![(
                rmpv::Value::from("content"),
                rmpv::Value::from("<b>hi</b>")
            )])
        );
        // The same event elsewhere, and other events on chat channels, keep the message.
        for (channel, event) in [
            ("tenant:a:admins", "UserOnline"),
            ("user:bob", "NewOrder"),
            ("tenant:a:user:bob", "NewOrder"),
        ] {
            let frame = json(&envelope(channel, event));
            let v: serde_json::Value = serde_json::from_slice(&frame[..frame.len() - 1]).unwrap();
            assert_eq!(v["arguments"][0]["channel"], channel);
            assert_eq!(v["arguments"][0]["data"]["content"], "<b>hi</b>");
        }
    }

    #[test]
    fn msgpack_notification_structure() {
        use rmpv::Value as M;
        let frame = msgpack(&sample());
        // The varint length prefix (two bytes here: the body is 128-16383 bytes long), then the body.
        assert!(frame[0] >= 0x80 && frame[1] < 0x80);
        let len = (frame[0] & 0x7f) as usize | (frame[1] as usize) << 7;
        assert_eq!(len, frame.len() - 2);
        let mut body = &frame[2..];
        let value = rmpv::decode::read_value(&mut body).unwrap();
        assert!(body.is_empty(), "exactly one value in the body");
        let message = M::Map(vec![
            (M::from("id"), M::from("e1")),
            (M::from("type"), M::from("NewOrder")),
            (M::from("tenantKey"), M::from("acme")),
            (M::from("channel"), M::from("tenant:acme:broadcast")),
            (
                M::from("data"),
                M::Map(vec![
                    (M::from("orderId"), M::from("o1")),
                    (M::from("total"), M::F64(12.5)),
                ]),
            ),
            (M::from("timestamp"), M::from("2023-11-14T22:13:20.123Z")),
            (M::from("offset"), M::from(7u64)),
            (M::from("epoch"), M::from("ep1")),
        ]);
        let expected = M::Array(vec![
            M::from(1u8),
            M::Map(vec![]),
            M::Nil,
            M::from("NewOrder"),
            M::Array(vec![message]),
            M::Array(vec![]),
        ]);
        assert_eq!(value, expected);
        // Six elements, as ASP.NET Core writes them; the empty header map is the single byte
        // 0x80, as the spec requires.
        assert_eq!(&frame[2..5], &[0x96, 0x01, 0x80]);
    }
}
