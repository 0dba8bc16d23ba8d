//! SignalR hub protocol: notification frames (the rest of the codec lands with the hub).

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::envelope::Envelope;

/// Record separator ending every JSON hub protocol record.
pub const RECORD_SEPARATOR: u8 = 0x1e;

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
}

fn message<D: Serialize>(env: &Envelope, data: D) -> NotificationMessage<'_, D> {
    NotificationMessage {
        id: &env.id,
        kind: env.event.as_str(),
        tenant_key: env.channel.tenant().map(|t| t.as_str()),
        channel: env.channel.as_str(),
        data,
        timestamp: super::rfc3339_millis(env.ts),
        offset: env.offset,
    }
}

#[derive(Serialize)]
struct JsonInvocation<'a> {
    #[serde(rename = "type")]
    kind: u8,
    target: &'a str,
    arguments: [NotificationMessage<'a, &'a RawValue>; 1],
}

/// `{"type":1,"target":"<event>","arguments":[{…}]}` + 0x1E, shared by every JSON hub session.
pub fn encode_notification_json(env: &Envelope) -> Bytes {
    let mut out = serde_json::to_vec(&JsonInvocation {
        kind: 1,
        target: env.event.as_str(),
        arguments: [message(env, &*env.data)],
    })
    .expect("invocations always serialize");
    out.push(RECORD_SEPARATOR);
    Bytes::from(out)
}

/// `[1, {}, nil, "<event>", [{…}]]` with its varint length prefix, shared by every MessagePack
/// hub session.
pub fn encode_notification_msgpack(env: &Envelope) -> Bytes {
    // MessagePack needs a structured value; parsing `data` here happens once per node.
    let data: serde_json::Value = serde_json::from_str(env.data.get()).unwrap_or_default();
    let body = (
        1u8,
        std::collections::BTreeMap::<String, String>::new(),
        (),
        env.event.as_str(),
        [message(env, data)],
    );
    let encoded = rmp_serde::to_vec_named(&body).expect("invocations always serialize");
    let mut out = Vec::with_capacity(encoded.len() + 5);
    write_varint(&mut out, encoded.len());
    out.extend_from_slice(&encoded);
    Bytes::from(out)
}

/// SignalR's length prefix: 7 bits per byte, least significant first, high bit = more.
pub fn write_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
