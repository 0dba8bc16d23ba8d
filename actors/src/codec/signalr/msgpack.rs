//! The MessagePack hub protocol's records: reading a client record (one MessagePack array) into a
//! [`HubMessage`], and writing Completion, Ping and Close records with their varint length prefix
//! (sent in binary frames). Values cross into the rest of the server as `serde_json::Value`.

use std::collections::BTreeMap;

use bytes::Bytes;
use rmpv::Value as Mp;
use serde::Serialize;
use serde_json::Value;

use super::framing::write_varint;
use super::message::{kind, Completion, HubMessage, RecordError};
use crate::codec::{JsonArg, OutFrame, RequestId};

const FORMAT: &str = "MessagePack";

/// Nesting limit when reading a record. `rmpv` counts two levels per array or map, so this
/// allows about 128 levels of nesting, like `serde_json`'s own limit.
const MAX_DEPTH: usize = 256;

/// `ResultKind` of a Completion.
const ERROR_RESULT: u8 = 1;
const VOID_RESULT: u8 = 2;
const NON_VOID_RESULT: u8 = 3;

/// The header map of every record the server writes: always empty (`0x80`).
type Headers = BTreeMap<String, String>;

/// Reads one record (a length-prefixed body, without the prefix).
pub fn parse_record(body: &[u8]) -> Result<HubMessage, RecordError> {
    let malformed = |detail: String| RecordError::Malformed {
        format: FORMAT,
        detail,
    };
    let mut reader = body;
    let value = match rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH) {
        Ok(v) => v,
        // The reader recurses, so it must stop somewhere; the caller still gets an answer.
        Err(rmpv::decode::Error::DepthLimitExceeded) => {
            return Err(match invocation_head(body) {
                Some((reply_to, target)) => RecordError::TooDeep {
                    reply_to,
                    message: format!(
                        "bad_payload: an argument of '{target}' is nested more than {} levels \
                         deep, deeper than a MessagePack record may be",
                        MAX_DEPTH / 2
                    ),
                },
                None => malformed(rmpv::decode::Error::DepthLimitExceeded.to_string()),
            })
        }
        Err(e) => return Err(malformed(e.to_string())),
    };
    if !reader.is_empty() {
        return Err(malformed(format!(
            "{} bytes follow the message inside its length prefix",
            reader.len()
        )));
    }
    let Mp::Array(items) = value else {
        return Err(malformed("a hub message must be an array".to_owned()));
    };
    let mut items = items.into_iter();
    let message_type = items
        .next()
        .and_then(|t| t.as_i64())
        .ok_or_else(|| RecordError::invalid(None, "hub message needs a numeric type first"))?;
    Ok(match message_type {
        kind::INVOCATION => {
            // [1, headers, invocationId|nil, target, [arguments], [streamIds]?]
            let _headers = items.next();
            let id = invocation_id(items.next())?;
            let target = target(items.next(), &id)?;
            let args = match items.next() {
                Some(Mp::Array(args)) => args
                    .into_iter()
                    .map(|a| {
                        let value = to_json(a)?;
                        serde_json::value::to_raw_value(&value)
                            .map(JsonArg)
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        RecordError::invalid(id.clone(), format!("'{target}' argument: {e}"))
                    })?,
                _ => {
                    return Err(RecordError::invalid(
                        id,
                        format!("invocation of '{target}' needs an arguments array"),
                    ))
                }
            };
            let streams = matches!(items.next(), Some(Mp::Array(ids)) if !ids.is_empty());
            HubMessage::Invocation {
                id,
                target,
                args,
                streams,
            }
        }
        kind::STREAM_INVOCATION => {
            // [4, headers, invocationId, target, [arguments], [streamIds]?]
            let _headers = items.next();
            let id = invocation_id(items.next())?;
            let target = target(items.next(), &id)?;
            HubMessage::StreamInvocation { id, target }
        }
        kind::STREAM_ITEM => HubMessage::StreamItem,
        kind::COMPLETION => HubMessage::Completion,
        kind::CANCEL_INVOCATION => HubMessage::CancelInvocation,
        kind::PING => HubMessage::Ping,
        // [7, error|nil, allowReconnect?]
        kind::CLOSE => HubMessage::Close {
            error: items.next().and_then(|e| match e {
                Mp::String(s) => s.into_str(),
                _ => None,
            }),
        },
        // [8, sequenceId] / [9, sequenceId]
        kind::ACK => HubMessage::Ack {
            sequence_id: sequence_id(items.next())?,
        },
        kind::SEQUENCE => HubMessage::Sequence {
            sequence_id: sequence_id(items.next())?,
        },
        other => HubMessage::Unknown(other),
    })
}

/// The invocation id and target of an Invocation record too deep to read whole: the array header
/// is skipped by hand and the elements before the arguments are read one at a time.
fn invocation_head(body: &[u8]) -> Option<(Option<RequestId>, String)> {
    // fixarray, array 16, array 32: the marker, then 0, 2 or 4 length bytes.
    let (&marker, rest) = body.split_first()?;
    let length_bytes = match marker {
        0x90..=0x9f => 0,
        0xdc => 2,
        0xdd => 4,
        _ => return None,
    };
    let mut rest = rest.get(length_bytes..)?;
    let mut next = || rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH).ok();
    if next()?.as_i64()? != kind::INVOCATION {
        return None;
    }
    let _headers = next()?;
    let id = invocation_id(next()).ok()?;
    let target = target(next(), &id).ok()?;
    Some((id, target))
}

/// The `sequenceId` of an Ack or Sequence record.
fn sequence_id(value: Option<Mp>) -> Result<u64, RecordError> {
    value
        .and_then(|v| v.as_u64())
        .ok_or_else(|| RecordError::invalid(None, "Ack and Sequence records need a sequenceId"))
}

/// Nil for fire-and-forget, a string per the spec (integers are accepted and echoed).
fn invocation_id(value: Option<Mp>) -> Result<Option<RequestId>, RecordError> {
    match value {
        Some(Mp::Nil) => Ok(None),
        Some(Mp::String(s)) => s
            .into_str()
            .map(|s| Some(RequestId::Text(s)))
            .ok_or_else(|| RecordError::invalid(None, "invocation id is not valid UTF-8")),
        Some(Mp::Integer(n)) if n.as_i64().is_some() => Ok(n.as_i64().map(RequestId::Number)),
        _ => Err(RecordError::invalid(
            None,
            "invocation id must be a string or nil",
        )),
    }
}

fn target(value: Option<Mp>, id: &Option<RequestId>) -> Result<String, RecordError> {
    match value {
        Some(Mp::String(s)) => s.into_str(),
        _ => None,
    }
    .ok_or_else(|| RecordError::invalid(id.clone(), "invocation needs a string target"))
}

/// Converts an argument to JSON. Binary becomes a base64 string (what ASP.NET Core's JSON
/// protocol does with `byte[]`); map keys must be strings or integers; extension types (such as
/// MessagePack timestamps) and non-finite floats have no JSON form and are refused.
pub fn to_json(value: Mp) -> Result<Value, String> {
    Ok(match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            (None, None) => return Err("integer out of range".to_owned()),
        },
        Mp::F32(f) => finite(f64::from(f))?,
        Mp::F64(f) => finite(f)?,
        Mp::String(s) => Value::String(
            s.into_str()
                .ok_or_else(|| "string is not valid UTF-8".to_owned())?,
        ),
        Mp::Binary(bytes) => Value::String(base64(&bytes)),
        Mp::Array(items) => Value::Array(
            items
                .into_iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Mp::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match k {
                    Mp::String(s) => s
                        .into_str()
                        .ok_or_else(|| "map key is not valid UTF-8".to_owned())?,
                    Mp::Integer(n) => n.to_string(),
                    other => return Err(format!("map key {other} is not a string")),
                };
                map.insert(key, to_json(v)?);
            }
            Value::Object(map)
        }
        Mp::Ext(ty, _) => return Err(format!("extension type {ty} is not supported")),
    })
}

fn finite(f: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{f} has no JSON form"))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serializes `body` as one record: varint length, then the MessagePack body.
fn record<T: Serialize>(body: &T) -> Result<OutFrame, rmp_serde::encode::Error> {
    let encoded = rmp_serde::to_vec_named(body)?;
    let mut out = Vec::with_capacity(encoded.len() + 5);
    write_varint(&mut out, encoded.len());
    out.extend_from_slice(&encoded);
    Ok(OutFrame::Binary(Bytes::from(out)))
}

/// `[3, {}, id, 1, error]`, `[3, {}, id, 2]` or `[3, {}, id, 3, result]`.
pub fn completion(id: &RequestId, completion: &Completion) -> OutFrame {
    let headers = Headers::new();
    let encoded = match completion {
        Completion::Error(e) => record(&(kind::COMPLETION, &headers, id, ERROR_RESULT, e)),
        Completion::Void => record(&(kind::COMPLETION, &headers, id, VOID_RESULT)),
        Completion::Result(v) => record(&(kind::COMPLETION, &headers, id, NON_VOID_RESULT, v)),
    };
    encoded.unwrap_or_else(|e| {
        log::error!("cannot serialize a completion: {e}");
        let error = "internal error: the result could not be serialized";
        record(&(kind::COMPLETION, &headers, id, ERROR_RESULT, error)).unwrap_or_else(|_| ping())
    })
}

/// `[8, sequenceId]`.
pub fn ack(sequence_id: u64) -> OutFrame {
    record(&(kind::ACK, sequence_id)).unwrap_or_else(|_| ping())
}

/// `[9, sequenceId]`.
pub fn sequence(sequence_id: u64) -> OutFrame {
    record(&(kind::SEQUENCE, sequence_id)).unwrap_or_else(|_| ping())
}

/// `[6]`, always exactly `0x91 0x06` after its prefix.
pub fn ping() -> OutFrame {
    OutFrame::Binary(Bytes::from_static(&[0x02, 0x91, 0x06]))
}

/// `[7, error|nil, allowReconnect]`.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> OutFrame {
    record(&(kind::CLOSE, error, allow_reconnect))
        .unwrap_or_else(|_| OutFrame::Binary(Bytes::from_static(&[0x02, 0x91, 0x07])))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    /// Encodes `value` as one MessagePack record body.
    pub(crate) fn body(value: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    /// Decodes one record written by the server: checks the prefix and returns the value.
    pub(crate) fn decode_frame(frame: &OutFrame) -> Mp {
        let OutFrame::Binary(bytes) = frame else {
            panic!("expected a binary frame, got {frame:?}")
        };
        let (len, prefix) = super::super::framing::read_varint(bytes).unwrap().unwrap();
        assert_eq!(prefix + len, bytes.len(), "exactly one record");
        let mut rest = &bytes[prefix..];
        let value = rmpv::decode::read_value(&mut rest).unwrap();
        assert!(rest.is_empty());
        value
    }

    fn invocation(id: Mp, target: &str, args: Vec<Mp>) -> Mp {
        Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            id,
            Mp::from(target),
            Mp::Array(args),
            Mp::Array(vec![]),
        ])
    }

    #[test]
    fn reads_the_spec_examples() {
        // HubProtocol.md, Invocation: [1, {}, "xyz", "method", [42], []].
        let bytes = [
            0x96, 0x01, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64,
            0x91, 0x2a, 0x90,
        ];
        assert_eq!(
            parse_record(&bytes),
            Ok(HubMessage::Invocation {
                id: Some(RequestId::Text("xyz".into())),
                target: "method".into(),
                args: vec![JsonArg(RawValue::from_string("42".into()).unwrap())],
                streams: false,
            })
        );
        // Non-blocking: nil invocation id.
        let bytes = [
            0x96, 0x01, 0x80, 0xc0, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
        ];
        assert!(matches!(
            parse_record(&bytes),
            Ok(HubMessage::Invocation { id: None, .. })
        ));
        // With headers {"x":"y","z":"z"}: ignored.
        let bytes = [
            0x96, 0x01, 0x82, 0xa1, 0x78, 0xa1, 0x79, 0xa1, 0x7a, 0xa1, 0x7a, 0xa3, 0x78, 0x79,
            0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
        ];
        assert!(matches!(
            parse_record(&bytes),
            Ok(HubMessage::Invocation { id: Some(_), .. })
        ));
        assert_eq!(parse_record(&[0x91, 0x06]), Ok(HubMessage::Ping));
        assert_eq!(
            parse_record(&[0x92, 0x07, 0xa3, 0x78, 0x79, 0x7a]),
            Ok(HubMessage::Close {
                error: Some("xyz".into())
            })
        );
        assert_eq!(
            parse_record(&[0x92, 0x08, 0xcc, 0x24]),
            Ok(HubMessage::Ack { sequence_id: 0x24 })
        );
        assert_eq!(
            parse_record(&[0x92, 0x09, 0xcc, 0x13]),
            Ok(HubMessage::Sequence { sequence_id: 0x13 })
        );
        assert_eq!(
            parse_record(&[0x93, 0x05, 0x80, 0xa3, 0x78, 0x79, 0x7a]),
            Ok(HubMessage::CancelInvocation)
        );
        assert_eq!(
            parse_record(&[0x94, 0x02, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x2a]),
            Ok(HubMessage::StreamItem)
        );
        assert_eq!(parse_record(&[0x91, 0x63]), Ok(HubMessage::Unknown(99)));
    }

    #[test]
    fn stream_invocations_and_upload_streams_are_recognised() {
        let mut v = invocation(Mp::from("1"), "Counter", vec![]);
        if let Mp::Array(items) = &mut v {
            items[0] = Mp::from(4);
        }
        assert_eq!(
            parse_record(&body(&v)),
            Ok(HubMessage::StreamInvocation {
                id: Some(RequestId::Text("1".into())),
                target: "Counter".into()
            })
        );
        let mut v = invocation(Mp::from("2"), "Upload", vec![]);
        if let Mp::Array(items) = &mut v {
            items[5] = Mp::Array(vec![Mp::from("s1")]);
        }
        assert!(matches!(
            parse_record(&body(&v)),
            Ok(HubMessage::Invocation { streams: true, .. })
        ));
    }

    #[test]
    fn arguments_become_json() {
        let args = vec![
            Mp::from("o1"),
            Mp::from(-3),
            Mp::from(u64::MAX),
            Mp::F64(1.5),
            Mp::Nil,
            Mp::Boolean(true),
            Mp::Binary(b"hello".to_vec()),
            Mp::Map(vec![
                (Mp::from("a"), Mp::Array(vec![Mp::from(1)])),
                (Mp::from(2), Mp::from("two")),
            ]),
        ];
        let parsed = parse_record(&body(&invocation(Mp::from("1"), "X", args))).unwrap();
        let HubMessage::Invocation { args, .. } = parsed else {
            panic!("{parsed:?}")
        };
        let args: Vec<Value> = args
            .iter()
            .map(|a| serde_json::from_str(a.get()).unwrap())
            .collect();
        assert_eq!(
            Value::Array(args),
            json!(["o1", -3, u64::MAX, 1.5, null, true, "aGVsbG8=", {"a":[1],"2":"two"}])
        );
    }

    #[test]
    fn arguments_too_deep_to_read_are_answered_as_bad_payload() {
        let mut deep = Mp::from(1);
        for _ in 0..200 {
            deep = Mp::Array(vec![deep]);
        }
        let args = vec![Mp::from("c"), Mp::from("E"), deep];
        let e = parse_record(&body(&invocation(Mp::from("9"), "Publish", args))).unwrap_err();
        assert_eq!(e.code(), crate::codes::ErrorCode::BadPayload);
        assert_eq!(e.reply_to(), Some(RequestId::Text("9".into())));
        assert!(e.to_string().starts_with("bad_payload: "), "{e}");
    }

    #[test]
    fn base64_pads_like_the_standard() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn bad_records_are_malformed_or_invalid() {
        let malformed = |b: &[u8]| matches!(parse_record(b), Err(RecordError::Malformed { .. }));
        assert!(malformed(&[]));
        assert!(malformed(&[0x96, 0x01])); // truncated
        assert!(malformed(&[0x06])); // not an array
        assert!(malformed(&[0x91, 0x06, 0x00])); // trailing bytes
        assert!(malformed(&[0xa3, 0x78])); // truncated string
                                           // Nested too deep.
        let mut deep = vec![0x91; 1000];
        deep.push(0x06);
        assert!(malformed(&deep));

        let invalid = |v: Mp| parse_record(&body(&v)).unwrap_err();
        assert_eq!(invalid(Mp::Array(vec![])).reply_to(), None);
        assert_eq!(
            invalid(Mp::Array(vec![Mp::from("1")])).code(),
            crate::codes::ErrorCode::BadRequest
        );
        // Bad target or arguments: the id is kept for the completion error.
        let e = invalid(Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::from("9"),
            Mp::from(5),
        ]));
        assert_eq!(e.reply_to(), Some(RequestId::Text("9".into())));
        let e = invalid(invocation(
            Mp::from("9"),
            "X",
            vec![Mp::Ext(-1, vec![0; 4])],
        ));
        assert_eq!(e.reply_to(), Some(RequestId::Text("9".into())));
        let e = invalid(invocation(Mp::from("9"), "X", vec![Mp::F64(f64::NAN)]));
        assert_eq!(e.reply_to(), Some(RequestId::Text("9".into())));
        let e = invalid(invocation(Mp::Boolean(true), "X", vec![]));
        assert_eq!(e.reply_to(), None);
    }

    #[test]
    fn completions_have_the_spec_layout() {
        let id = RequestId::Text("xyz".into());
        let h = || Mp::Map(vec![]);
        assert_eq!(
            decode_frame(&completion(&id, &Completion::Error("Error".into()))),
            Mp::Array(vec![
                Mp::from(3),
                h(),
                Mp::from("xyz"),
                Mp::from(1),
                Mp::from("Error")
            ])
        );
        assert_eq!(
            decode_frame(&completion(&id, &Completion::Void)),
            Mp::Array(vec![Mp::from(3), h(), Mp::from("xyz"), Mp::from(2)])
        );
        assert_eq!(
            decode_frame(&completion(&id, &Completion::Result(json!(42)))),
            Mp::Array(vec![
                Mp::from(3),
                h(),
                Mp::from("xyz"),
                Mp::from(3),
                Mp::from(42)
            ])
        );
        // Byte-exact against the spec's examples (after the one-byte prefix).
        let OutFrame::Binary(b) = completion(&id, &Completion::Void) else {
            panic!()
        };
        assert_eq!(
            &b[..],
            &[0x08, 0x94, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x02]
        );
        let OutFrame::Binary(b) = completion(&id, &Completion::Result(json!(42))) else {
            panic!()
        };
        assert_eq!(
            &b[..],
            &[0x09, 0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x03, 0x2a]
        );
    }

    #[test]
    fn ping_and_close_records() {
        assert_eq!(decode_frame(&ping()), Mp::Array(vec![Mp::from(6)]));
        assert_eq!(
            decode_frame(&close(Some("xyz"), true)),
            Mp::Array(vec![Mp::from(7), Mp::from("xyz"), Mp::Boolean(true)])
        );
        assert_eq!(
            decode_frame(&close(None, false)),
            Mp::Array(vec![Mp::from(7), Mp::Nil, Mp::Boolean(false)])
        );
    }
}
