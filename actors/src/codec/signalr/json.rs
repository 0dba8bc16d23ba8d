//! The JSON hub protocol's records: reading a client record into a [`HubMessage`], and writing
//! Completion, Ping and Close records (each ended by 0x1E, sent in text frames).
//!
//! A record is read field by field as raw JSON text: an invocation's `arguments` stay text
//! ([`JsonArg`]), because they may carry event data nested deeper than the parser's limit, which
//! the connection's payload check refuses with an answer to the caller.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::framing::RECORD_SEPARATOR;
use super::message::{kind, Completion, HubMessage, RecordError};
use crate::codec::{JsonArg, OutFrame, RequestId};

const FORMAT: &str = "JSON";

/// Reads one record (the bytes between separators).
pub fn parse_record(record: &[u8]) -> Result<HubMessage, RecordError> {
    let malformed = |detail: String| RecordError::Malformed {
        format: FORMAT,
        detail,
    };
    let text = std::str::from_utf8(record).map_err(|e| malformed(e.to_string()))?;
    let raw: HashMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| {
        malformed(if e.is_data() {
            "a hub message must be a JSON object".to_owned()
        } else {
            e.to_string()
        })
    })?;
    // Every field but the arguments is small: read as values (one nested beyond the parser's
    // limit makes the record unreadable, as before).
    let mut args = None;
    let mut fields = Map::new();
    for (name, value) in raw {
        if name == "arguments" {
            args = Some(value);
            continue;
        }
        let value = serde_json::from_str(value.get()).map_err(|e| malformed(e.to_string()))?;
        fields.insert(name, value);
    }
    let message_type = match fields.get("type") {
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| RecordError::invalid(None, "hub message needs a numeric \"type\""))?;
    Ok(match message_type {
        kind::INVOCATION => {
            let id = invocation_id(&fields)?;
            let target = target(&mut fields, &id)?;
            let args = match args.map(|a| serde_json::from_str::<Vec<Box<RawValue>>>(a.get())) {
                Some(Ok(args)) => args.into_iter().map(JsonArg).collect(),
                _ => {
                    return Err(RecordError::invalid(
                        id,
                        format!("invocation of '{target}' needs an \"arguments\" array"),
                    ))
                }
            };
            let streams =
                matches!(fields.get("streamIds"), Some(Value::Array(ids)) if !ids.is_empty());
            HubMessage::Invocation {
                id,
                target,
                args,
                streams,
            }
        }
        kind::STREAM_INVOCATION => {
            let id = invocation_id(&fields)?;
            let target = target(&mut fields, &id)?;
            HubMessage::StreamInvocation { id, target }
        }
        kind::STREAM_ITEM => HubMessage::StreamItem,
        kind::COMPLETION => HubMessage::Completion,
        kind::CANCEL_INVOCATION => HubMessage::CancelInvocation,
        kind::PING => HubMessage::Ping,
        kind::CLOSE => HubMessage::Close {
            error: match fields.remove("error") {
                Some(Value::String(e)) => Some(e),
                _ => None,
            },
        },
        kind::ACK => HubMessage::Ack {
            sequence_id: sequence_id(&fields)?,
        },
        kind::SEQUENCE => HubMessage::Sequence {
            sequence_id: sequence_id(&fields)?,
        },
        other => HubMessage::Unknown(other),
    })
}

/// `sequenceId` of an Ack or Sequence record.
fn sequence_id(fields: &Map<String, Value>) -> Result<u64, RecordError> {
    fields
        .get("sequenceId")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            RecordError::invalid(
                None,
                "Ack and Sequence records need a numeric \"sequenceId\"",
            )
        })
}

/// `invocationId`: absent or null for fire-and-forget; a string per the spec (integers are
/// accepted and echoed as integers).
fn invocation_id(fields: &Map<String, Value>) -> Result<Option<RequestId>, RecordError> {
    match fields.get("invocationId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(RequestId::Text(s.clone()))),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().map(RequestId::Number)),
        Some(_) => Err(RecordError::invalid(
            None,
            "\"invocationId\" must be a string",
        )),
    }
}

fn target(fields: &mut Map<String, Value>, id: &Option<RequestId>) -> Result<String, RecordError> {
    match fields.remove("target") {
        Some(Value::String(t)) => Ok(t),
        _ => Err(RecordError::invalid(
            id.clone(),
            "invocation needs a string \"target\"",
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompletionRecord<'a> {
    #[serde(rename = "type")]
    kind: i64,
    invocation_id: &'a RequestId,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CloseRecord<'a> {
    #[serde(rename = "type")]
    kind: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    allow_reconnect: bool,
}

fn record<T: Serialize>(value: &T) -> Result<OutFrame, serde_json::Error> {
    let mut out = serde_json::to_vec(value)?;
    out.push(RECORD_SEPARATOR);
    Ok(OutFrame::Text(Bytes::from(out)))
}

/// `{"type":3,"invocationId":…,"result"|"error":…}` + 0x1E.
pub fn completion(id: &RequestId, completion: &Completion) -> OutFrame {
    let (result, error) = match completion {
        Completion::Void => (None, None),
        Completion::Result(v) => (Some(v), None),
        Completion::Error(e) => (None, Some(e.as_str())),
    };
    record(&CompletionRecord {
        kind: kind::COMPLETION,
        invocation_id: id,
        result,
        error,
    })
    .unwrap_or_else(|e| {
        // A `serde_json::Value` always serializes; stay well-formed if that ever changes.
        log::error!("cannot serialize a completion: {e}");
        completion_error_fallback(id)
    })
}

fn completion_error_fallback(id: &RequestId) -> OutFrame {
    let error = "internal error: the result could not be serialized";
    record(&CompletionRecord {
        kind: kind::COMPLETION,
        invocation_id: id,
        result: None,
        error: Some(error),
    })
    .unwrap_or_else(|_| OutFrame::Text(Bytes::from_static(b"{\"type\":6}\x1e")))
}

/// `{"type":8,"sequenceId":N}` + 0x1E.
pub fn ack(sequence_id: u64) -> OutFrame {
    OutFrame::Text(Bytes::from(format!(
        "{{\"type\":8,\"sequenceId\":{sequence_id}}}\u{1e}"
    )))
}

/// `{"type":9,"sequenceId":N}` + 0x1E.
pub fn sequence(sequence_id: u64) -> OutFrame {
    OutFrame::Text(Bytes::from(format!(
        "{{\"type\":9,\"sequenceId\":{sequence_id}}}\u{1e}"
    )))
}

/// `{"type":6}` + 0x1E.
pub fn ping() -> OutFrame {
    OutFrame::Text(Bytes::from_static(b"{\"type\":6}\x1e"))
}

/// `{"type":7,"error":…,"allowReconnect":…}` + 0x1E.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> OutFrame {
    record(&CloseRecord {
        kind: kind::CLOSE,
        error,
        allow_reconnect,
    })
    .unwrap_or_else(|_| OutFrame::Text(Bytes::from_static(b"{\"type\":7}\x1e")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<HubMessage, RecordError> {
        parse_record(s.as_bytes())
    }

    fn arg(v: Value) -> JsonArg {
        JsonArg(serde_json::value::to_raw_value(&v).unwrap())
    }

    #[test]
    fn arguments_of_any_depth_are_read_as_text() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let record = format!(
            r#"{{"type":1,"invocationId":"3","target":"Publish","arguments":["c","E",{deep}]}}"#
        );
        match parse(&record) {
            Ok(HubMessage::Invocation { id, args, .. }) => {
                assert_eq!(id, Some(RequestId::Text("3".into())));
                assert_eq!(args[2].get(), deep);
            }
            other => panic!("{other:?}"),
        }
    }

    fn text(frame: OutFrame) -> String {
        match frame {
            OutFrame::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invocations_with_and_without_id() {
        assert_eq!(
            parse(
                r#"{"type":1,"invocationId":"0","target":"JoinOrderChannel","arguments":["o1"]}"#
            ),
            Ok(HubMessage::Invocation {
                id: Some(RequestId::Text("0".into())),
                target: "JoinOrderChannel".into(),
                args: vec![arg(json!("o1"))],
                streams: false,
            })
        );
        assert_eq!(
            parse(
                r#"{"type":1,"target":"Ping","arguments":[],"headers":{"a":"b"},"streamIds":[]}"#
            ),
            Ok(HubMessage::Invocation {
                id: None,
                target: "Ping".into(),
                args: vec![],
                streams: false,
            })
        );
        assert!(matches!(
            parse(
                r#"{"type":1,"invocationId":"1","target":"Up","arguments":[],"streamIds":["s"]}"#
            ),
            Ok(HubMessage::Invocation { streams: true, .. })
        ));
    }

    #[test]
    fn every_type_number_is_recognised() {
        for (record, expected) in [
            (
                r#"{"type":2,"invocationId":"1","item":3}"#,
                HubMessage::StreamItem,
            ),
            (r#"{"type":3,"invocationId":"1"}"#, HubMessage::Completion),
            (
                r#"{"type":5,"invocationId":"1"}"#,
                HubMessage::CancelInvocation,
            ),
            (r#"{"type":6}"#, HubMessage::Ping),
            (r#"{"type":7}"#, HubMessage::Close { error: None }),
            (
                r#"{"type":7,"error":"bye","allowReconnect":true}"#,
                HubMessage::Close {
                    error: Some("bye".into()),
                },
            ),
            (
                r#"{"type":8,"sequenceId":3}"#,
                HubMessage::Ack { sequence_id: 3 },
            ),
            (
                r#"{"type":9,"sequenceId":3}"#,
                HubMessage::Sequence { sequence_id: 3 },
            ),
            (r#"{"type":42}"#, HubMessage::Unknown(42)),
            (
                r#"{"type":4,"invocationId":"9","target":"Counter","arguments":[]}"#,
                HubMessage::StreamInvocation {
                    id: Some(RequestId::Text("9".into())),
                    target: "Counter".into(),
                },
            ),
        ] {
            assert_eq!(parse(record), Ok(expected), "{record}");
        }
    }

    #[test]
    fn bad_records_are_malformed_or_invalid() {
        assert!(matches!(parse("{nope"), Err(RecordError::Malformed { .. })));
        assert!(matches!(parse("[1]"), Err(RecordError::Malformed { .. })));
        assert!(matches!(parse(""), Err(RecordError::Malformed { .. })));
        assert_eq!(parse(r#"{"type":"1"}"#).unwrap_err().reply_to(), None);
        // The id is echoed when it can be read, so the caller is not left waiting.
        let e = parse(r#"{"type":1,"invocationId":"7","target":"X"}"#).unwrap_err();
        assert_eq!(e.reply_to(), Some(RequestId::Text("7".into())));
        let e = parse(r#"{"type":1,"invocationId":"7","arguments":[]}"#).unwrap_err();
        assert_eq!(e.reply_to(), Some(RequestId::Text("7".into())));
        let e = parse(r#"{"type":1,"invocationId":{},"target":"X","arguments":[]}"#).unwrap_err();
        assert_eq!(e.reply_to(), None);
    }

    #[test]
    fn completions_carry_result_or_error_never_both() {
        let id = RequestId::Text("0".into());
        assert_eq!(
            text(completion(&id, &Completion::Result(json!(true)))),
            "{\"type\":3,\"invocationId\":\"0\",\"result\":true}\u{1e}"
        );
        assert_eq!(
            text(completion(&id, &Completion::Result(Value::Null))),
            "{\"type\":3,\"invocationId\":\"0\",\"result\":null}\u{1e}"
        );
        assert_eq!(
            text(completion(&id, &Completion::Void)),
            "{\"type\":3,\"invocationId\":\"0\"}\u{1e}"
        );
        assert_eq!(
            text(completion(&id, &Completion::Error("no".into()))),
            "{\"type\":3,\"invocationId\":\"0\",\"error\":\"no\"}\u{1e}"
        );
        assert_eq!(
            text(completion(&RequestId::Number(5), &Completion::Void)),
            "{\"type\":3,\"invocationId\":5}\u{1e}"
        );
    }

    #[test]
    fn ping_and_close_records() {
        assert_eq!(text(ping()), "{\"type\":6}\u{1e}");
        assert_eq!(
            text(close(Some("server restarting, reconnect"), true)),
            "{\"type\":7,\"error\":\"server restarting, reconnect\",\"allowReconnect\":true}\u{1e}"
        );
        assert_eq!(
            text(close(None, false)),
            "{\"type\":7,\"allowReconnect\":false}\u{1e}"
        );
    }
}
