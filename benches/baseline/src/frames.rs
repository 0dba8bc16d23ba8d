//! Wire frames of the baseline server: the native-protocol and SignalR JSON text and the SignalR
//! MessagePack records the server sends, reading a client's MessagePack records, the identifiers
//! stamped on frames (message id, epoch) and the RFC 3339 timestamp.
//!
//! Every notification is encoded here once per wire format and handed out as shared bytes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

/// The SignalR record separator that ends every hub-protocol record.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// Event name of a publish that names none.
pub const DEFAULT_EVENT: &str = "Notification";

/// Seconds in one civil day, for the timestamp arithmetic.
const SECONDS_PER_DAY: u64 = 86_400;

/// Identity of this server run: the history epoch and the message-id counter.
pub struct ServerIdentity {
    epoch: String,
    next_message: AtomicU64,
}

impl ServerIdentity {
    /// An identity whose epoch is derived from the start time, so restarts change it.
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            epoch: format!("{nanos:x}"),
            next_message: AtomicU64::new(1),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// A fresh message id, unique within this run.
    pub fn next_message_id(&self) -> String {
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.epoch)
    }
}

impl Default for ServerIdentity {
    fn default() -> Self {
        Self::new()
    }
}

/// One published event, as the fan-out needs it to build each wire format.
pub struct Notification<'a> {
    pub id: &'a str,
    pub channel: &'a str,
    pub event: &'a str,
    pub data: &'a RawValue,
    pub offset: u64,
    pub epoch: &'a str,
    pub timestamp: &'a str,
}

/// A JSON string literal (quoted and escaped).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The tenant key of a `tenant:{t}:…` channel, or "" for channels outside any tenant.
fn tenant_of(channel: &str) -> &str {
    channel
        .strip_prefix("tenant:")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("")
}

/// `{"type":"notification","data":{…}}` for native-protocol subscribers.
pub fn native_notification(n: &Notification<'_>) -> Utf8Bytes {
    let mut out = String::with_capacity(n.data.get().len() + 192);
    let _ = write!(
        out,
        r#"{{"type":"notification","data":{{"id":{},"channel":{},"event":{},"data":{},"offset":{},"epoch":{},"timestamp":{}}}}}"#,
        json_string(n.id),
        json_string(n.channel),
        json_string(n.event),
        n.data.get(),
        n.offset,
        json_string(n.epoch),
        json_string(n.timestamp),
    );
    Utf8Bytes::from(out)
}

/// A SignalR invocation record (type 1) named after the event, for hub subscribers.
pub fn signalr_notification(n: &Notification<'_>) -> Utf8Bytes {
    let mut out = String::with_capacity(n.data.get().len() + 224);
    let _ = write!(
        out,
        r#"{{"type":1,"target":{ev},"arguments":[{{"id":{},"type":{ev},"tenantKey":{},"channel":{},"data":{},"timestamp":{},"offset":{}}}]}}{RECORD_SEPARATOR}"#,
        json_string(n.id),
        json_string(tenant_of(n.channel)),
        json_string(n.channel),
        n.data.get(),
        json_string(n.timestamp),
        n.offset,
        ev = json_string(n.event),
    );
    Utf8Bytes::from(out)
}

/// `{"type":"subscribed",…}` echoing the client's request id.
pub fn native_subscribed(
    request_id: Option<&RawValue>,
    channel: &str,
    subscription_id: &str,
    offset: u64,
    epoch: &str,
) -> Utf8Bytes {
    let id = request_id.map(RawValue::get).unwrap_or("null");
    Utf8Bytes::from(format!(
        r#"{{"type":"subscribed","id":{id},"data":{{"channel":{},"subscriptionId":{},"offset":{offset},"epoch":{}}}}}"#,
        json_string(channel),
        json_string(subscription_id),
        json_string(epoch),
    ))
}

/// `{"type":"subscription_error",…}` for a subscribe the server cannot honour.
pub fn native_subscription_error(
    request_id: Option<&RawValue>,
    channel: &str,
    code: &str,
    reason: &str,
) -> Utf8Bytes {
    let id = request_id.map(RawValue::get).unwrap_or("null");
    Utf8Bytes::from(format!(
        r#"{{"type":"subscription_error","id":{id},"data":{{"channel":{},"code":{},"reason":{}}}}}"#,
        json_string(channel),
        json_string(code),
        json_string(reason),
    ))
}

/// `{"type":"error",…}` for a frame the server cannot act on, echoing the request id when the
/// frame had one (Switchyard's shape: `code` and `message`).
pub fn native_error(request_id: Option<&RawValue>, code: &str, message: &str) -> Utf8Bytes {
    let id = request_id
        .map(|id| format!(r#","id":{}"#, id.get()))
        .unwrap_or_default();
    Utf8Bytes::from(format!(
        r#"{{"type":"error"{id},"data":{{"code":{},"message":{}}}}}"#,
        json_string(code),
        json_string(message),
    ))
}

/// `{"type":"published",…}`: the acknowledgement of a `publish` frame, echoing its id.
pub fn native_published(
    request_id: Option<&RawValue>,
    message_id: &str,
    offset: u64,
    epoch: &str,
) -> Utf8Bytes {
    let id = request_id.map(RawValue::get).unwrap_or("null");
    Utf8Bytes::from(format!(
        r#"{{"type":"published","id":{id},"data":{{"id":{},"offset":{offset},"epoch":{}}}}}"#,
        json_string(message_id),
        json_string(epoch),
    ))
}

/// A SignalR completion (type 3) carrying a result.
pub fn signalr_completion_result(invocation_id: &str, result_json: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":3,"invocationId":{},"result":{result_json}}}{RECORD_SEPARATOR}"#,
        json_string(invocation_id),
    ))
}

/// A SignalR completion (type 3) carrying an error.
pub fn signalr_completion_error(invocation_id: &str, error: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":3,"invocationId":{},"error":{}}}{RECORD_SEPARATOR}"#,
        json_string(invocation_id),
        json_string(error),
    ))
}

/// `[6]` with its length prefix: the MessagePack hub keep-alive record.
pub const MSGPACK_PING_RECORD: &[u8] = &[0x02, 0x91, 0x06];
/// The longest varint length prefix of a MessagePack hub record.
const MAX_VARINT_LEN: usize = 5;
/// Completion result kinds of the MessagePack hub protocol.
const MSGPACK_ERROR_RESULT: u8 = 1;
const MSGPACK_NON_VOID_RESULT: u8 = 3;

/// `value` encoded with SignalR's varint length prefix.
fn msgpack_record(value: &rmpv::Value) -> Bytes {
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, value).expect("writing to a Vec cannot fail");
    let mut out = Vec::with_capacity(body.len() + MAX_VARINT_LEN);
    let mut n = body.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// The SignalR MessagePack invocation of a notification, `[1, {}, nil, event, [{…}], []]` with the
/// JSON hub's message as a map (the data re-encoded from JSON), for MessagePack hub subscribers.
pub fn signalr_msgpack_notification(n: &Notification<'_>) -> Bytes {
    use rmpv::Value as Mp;
    let data: serde_json::Value = serde_json::from_str(n.data.get()).unwrap_or_default();
    let data = rmpv::ext::to_value(data).unwrap_or(Mp::Nil);
    let message = Mp::Map(vec![
        (Mp::from("id"), Mp::from(n.id)),
        (Mp::from("type"), Mp::from(n.event)),
        (Mp::from("tenantKey"), Mp::from(tenant_of(n.channel))),
        (Mp::from("channel"), Mp::from(n.channel)),
        (Mp::from("data"), data),
        (Mp::from("timestamp"), Mp::from(n.timestamp)),
        (Mp::from("offset"), Mp::from(n.offset)),
    ]);
    msgpack_record(&Mp::Array(vec![
        Mp::from(1),
        Mp::Map(Vec::new()),
        Mp::Nil,
        Mp::from(n.event),
        Mp::Array(vec![message]),
        Mp::Array(Vec::new()),
    ]))
}

/// A MessagePack completion (type 3) carrying a result.
pub fn signalr_msgpack_completion_result(invocation_id: &str, result: rmpv::Value) -> Bytes {
    use rmpv::Value as Mp;
    msgpack_record(&Mp::Array(vec![
        Mp::from(3),
        Mp::Map(Vec::new()),
        Mp::from(invocation_id),
        Mp::from(MSGPACK_NON_VOID_RESULT),
        result,
    ]))
}

/// A MessagePack completion (type 3) carrying an error.
pub fn signalr_msgpack_completion_error(invocation_id: &str, error: &str) -> Bytes {
    use rmpv::Value as Mp;
    msgpack_record(&Mp::Array(vec![
        Mp::from(3),
        Mp::Map(Vec::new()),
        Mp::from(invocation_id),
        Mp::from(MSGPACK_ERROR_RESULT),
        Mp::from(error),
    ]))
}

/// The records of one binary frame from a MessagePack hub client (each behind its varint length);
/// a malformed or truncated prefix ends the list.
pub fn msgpack_records(mut frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let mut len: usize = 0;
        let mut prefix = 0;
        loop {
            let &byte = frame.get(prefix)?;
            len |= usize::from(byte & 0x7f) << (7 * prefix);
            prefix += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if prefix >= MAX_VARINT_LEN {
                return None;
            }
        }
        let record = frame.get(prefix..prefix + len)?;
        frame = &frame[prefix + len..];
        Some(record)
    })
}

/// A client's hub record as the hub handles it, in either format.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HubCall {
    pub kind: u64,
    pub invocation_id: String,
    pub target: String,
    /// The string arguments (a channel name); others are left out.
    pub arguments: Vec<String>,
}

/// Reads a MessagePack record: `[type, headers, invocationId, target, [arguments], …]` for
/// invocations, `[type, …]` for the rest. `None` when it is no array with a numeric type.
pub fn read_msgpack_call(record: &[u8]) -> Option<HubCall> {
    use rmpv::Value as Mp;
    let mut reader = record;
    let Mp::Array(items) = rmpv::decode::read_value(&mut reader).ok()? else {
        return None;
    };
    let text = |i: usize| {
        items
            .get(i)
            .and_then(Mp::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(HubCall {
        kind: items.first()?.as_u64()?,
        invocation_id: text(2),
        target: text(3),
        arguments: match items.get(4) {
            Some(Mp::Array(args)) => args
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
    })
}

/// The current UTC time as RFC 3339 with millisecond precision.
pub fn rfc3339_now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since_epoch.as_secs(), since_epoch.subsec_millis())
}

/// Formats seconds since the Unix epoch (plus milliseconds) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(unix_seconds: u64, millis: u32) -> String {
    let days = (unix_seconds / SECONDS_PER_DAY) as i64;
    let second_of_day = unix_seconds % SECONDS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
fn civil_from_days(days_since_epoch: i64) -> (i64, u32, u32) {
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn notification_frames_embed_the_raw_data() {
        let data = RawValue::from_string(r#"{"seq":7}"#.to_owned()).unwrap();
        let n = Notification {
            id: "e-1",
            channel: "tenant:bench:broadcast",
            event: "BenchEvent",
            data: &data,
            offset: 3,
            epoch: "e",
            timestamp: "t",
        };
        let native: serde_json::Value = serde_json::from_str(&native_notification(&n)).unwrap();
        assert_eq!(native["data"]["data"]["seq"], 7);
        assert_eq!(native["data"]["offset"], 3);
        let hub = signalr_notification(&n);
        let record = hub.strip_suffix(RECORD_SEPARATOR).unwrap();
        let hub: serde_json::Value = serde_json::from_str(record).unwrap();
        assert_eq!(hub["target"], "BenchEvent");
        assert_eq!(hub["arguments"][0]["tenantKey"], "bench");
    }

    #[test]
    fn msgpack_notification_carries_the_data_as_a_map() {
        let data = RawValue::from_string(r#"{"seq":7,"sentAtMicros":9}"#.to_owned()).unwrap();
        let n = Notification {
            id: "e-1",
            channel: "tenant:bench:broadcast",
            event: "BenchEvent",
            data: &data,
            offset: 3,
            epoch: "e",
            timestamp: "t",
        };
        let frame = signalr_msgpack_notification(&n);
        let records: Vec<&[u8]> = msgpack_records(&frame).collect();
        assert_eq!(records.len(), 1);
        let value = rmpv::decode::read_value(&mut &records[0][..]).unwrap();
        assert_eq!(value[0], rmpv::Value::from(1));
        assert_eq!(value[3], rmpv::Value::from("BenchEvent"));
        let message = &value[4][0];
        let field = |key: &str| {
            message
                .as_map()
                .unwrap()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("offset"), rmpv::Value::from(3));
        assert_eq!(field("data")["seq"], rmpv::Value::from(7));
        let call = read_msgpack_call(records[0]).unwrap();
        assert_eq!((call.kind, call.target.as_str()), (1, "BenchEvent"));
    }

    #[test]
    fn published_and_error_echo_the_request_id() {
        let id = RawValue::from_string("17".to_owned()).unwrap();
        let ack: serde_json::Value =
            serde_json::from_str(&native_published(Some(&id), "e-3", 3, "e")).unwrap();
        assert_eq!(
            ack,
            serde_json::json!({"type":"published","id":17,"data":{"id":"e-3","offset":3,"epoch":"e"}})
        );
        let error: serde_json::Value =
            serde_json::from_str(&native_error(Some(&id), "bad_request", "no \"channel\""))
                .unwrap();
        assert_eq!(error["id"], 17);
        assert_eq!(error["data"]["code"], "bad_request");
        let error: serde_json::Value =
            serde_json::from_str(&native_error(None, "bad_json", "x")).unwrap();
        assert!(error.get("id").is_none());
    }
}
