//! Connection-level tests of [`SignalRCodec`]: handshake, framing across frames, method
//! mapping, completions, keep-alives and close records in both hub protocols, and a
//! property-style check that no input makes `decode` panic.

use std::sync::Arc;

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{json, Value};

use super::framing::write_varint;
use super::hub::tests::staff;
use super::msgpack::tests::{body, decode_frame};
use super::*;
use crate::codec::WireFormat;
use crate::codec::{
    Decoded, InFrame, Inbound, JsonArg, OutFrame, Outcome, Request, RequestId, WireCodec,
};
use crate::codes::{CloseCode, ErrorCode};

const MAX: usize = 1024;

fn codec() -> SignalRCodec {
    SignalRCodec::new(Arc::new(staff(Some("acme"))), MAX)
}

fn text(codec: &mut SignalRCodec, s: &str) -> Vec<Decoded> {
    let mut out = Vec::new();
    codec.decode(InFrame::Text(s), &mut out);
    out
}

fn binary(codec: &mut SignalRCodec, b: &[u8]) -> Vec<Decoded> {
    let mut out = Vec::new();
    codec.decode(InFrame::Binary(b), &mut out);
    out
}

/// A codec after a JSON handshake.
fn json_codec() -> SignalRCodec {
    let mut c = codec();
    assert_handshake_ok(&text(&mut c, "{\"protocol\":\"json\",\"version\":1}\u{1e}"));
    c
}

/// A codec after a MessagePack handshake.
fn msgpack_codec() -> SignalRCodec {
    let mut c = codec();
    assert_handshake_ok(&text(
        &mut c,
        "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}",
    ));
    c
}

fn assert_handshake_ok(out: &[Decoded]) {
    assert!(!out.is_empty(), "{out:?}");
    assert!(
        matches!(
            &out[0],
            Decoded::Request(Inbound {
                reply_to: None,
                request: Request::HandshakeComplete {
                    reply: OutFrame::Text(b)
                }
            }) if &b[..] == b"{}\x1e"
        ),
        "{out:?}"
    );
}

fn fatal(out: &[Decoded]) -> (CloseCode, &str, Option<&OutFrame>) {
    match out {
        [Decoded::Fatal {
            close,
            message,
            farewell,
        }] => (*close, message.as_str(), farewell.as_ref()),
        other => panic!("expected one Fatal, got {other:?}"),
    }
}

fn reject(d: &Decoded) -> (Option<RequestId>, ErrorCode, String) {
    match d {
        Decoded::Reject {
            reply_to,
            code,
            message,
        } => (reply_to.clone(), *code, message.clone()),
        other => panic!("expected Reject, got {other:?}"),
    }
}

fn request(d: &Decoded) -> (Option<RequestId>, &Request) {
    match d {
        Decoded::Request(Inbound { reply_to, request }) => (reply_to.clone(), request),
        other => panic!("expected Request, got {other:?}"),
    }
}

fn text_frame(f: Option<OutFrame>) -> String {
    match f {
        Some(OutFrame::Text(b)) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn id(s: &str) -> Option<RequestId> {
    Some(RequestId::Text(s.into()))
}

/// A MessagePack record with its length prefix.
fn mp_record(value: &Mp) -> Vec<u8> {
    let b = body(value);
    let mut out = Vec::new();
    write_varint(&mut out, b.len());
    out.extend_from_slice(&b);
    out
}

fn mp_invocation(invocation_id: Option<&str>, target: &str, args: Vec<Mp>) -> Vec<u8> {
    mp_record(&Mp::Array(vec![
        Mp::from(1),
        Mp::Map(vec![]),
        invocation_id.map_or(Mp::Nil, Mp::from),
        Mp::from(target),
        Mp::Array(args),
    ]))
}

// --- handshake --------------------------------------------------------------------------------

#[test]
fn json_handshake_v1() {
    let mut c = codec();
    assert!(!c.ready());
    assert_eq!(c.format(), WireFormat::SignalRJson);
    assert_eq!(c.label(), "signalr");
    let out = text(&mut c, "{\"protocol\":\"json\",\"version\":1}\u{1e}");
    assert_eq!(out.len(), 1);
    assert_handshake_ok(&out);
    assert!(c.ready());
    assert_eq!(c.format(), WireFormat::SignalRJson);
    assert_eq!(c.protocol(), Some(HubProtocol::Json));
    assert_eq!(c.protocol_version(), Some(1));
}

#[test]
fn json_handshake_v0_from_signalrcore_and_v2() {
    for v in [0, 2] {
        let mut c = codec();
        let out = text(
            &mut c,
            &format!("{{\"protocol\":\"json\",\"version\":{v}}}\u{1e}"),
        );
        assert_handshake_ok(&out);
        assert_eq!(c.protocol_version(), Some(v));
    }
}

#[test]
fn messagepack_handshake_replies_in_text_and_switches_format() {
    let mut c = codec();
    let out = text(&mut c, "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}");
    assert_eq!(out.len(), 1);
    assert_handshake_ok(&out);
    assert_eq!(c.format(), WireFormat::SignalRMsgPack);
    assert!(c.ready());
    // Clients with a binary transfer format send the handshake in a binary frame.
    let mut c = codec();
    assert_handshake_ok(&binary(
        &mut c,
        b"{\"protocol\":\"messagepack\",\"version\":2}\x1e",
    ));
    assert_eq!(c.format(), WireFormat::SignalRMsgPack);
}

#[test]
fn a_text_only_transport_refuses_messagepack_as_aspnet_core_does() {
    let mut c = codec().text_only();
    let out = text(&mut c, "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}");
    let (close, _, farewell) = fatal(&out);
    assert_eq!(close, CloseCode::ProtocolError);
    assert_eq!(
        farewell,
        Some(&OutFrame::Text(Bytes::from_static(
            b"{\"error\":\"Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format.\"}\x1e"
        )))
    );
    assert!(!c.ready());
    // JSON is fine on it.
    let mut c = codec().text_only();
    assert_handshake_ok(&text(&mut c, "{\"protocol\":\"json\",\"version\":1}\u{1e}"));
}

#[test]
fn unsupported_protocol_is_fatal_with_an_error_reply() {
    let mut c = codec();
    let out = text(&mut c, "{\"protocol\":\"xml\",\"version\":1}\u{1e}");
    let (close, message, farewell) = fatal(&out);
    assert_eq!(close, CloseCode::ProtocolError);
    assert!(message.contains("xml"), "{message}");
    assert_eq!(
        farewell,
        Some(&OutFrame::Text(Bytes::from_static(
            b"{\"error\":\"The protocol 'xml' is not supported.\"}\x1e"
        )))
    );
    assert!(!c.ready());
    // Nothing more is decoded, and nothing is sent at the close: the handshake never completed.
    assert!(text(&mut c, "{\"type\":6}\u{1e}").is_empty());
    assert!(c.goodbye(CloseCode::ProtocolError).is_none());
    assert!(c.keepalive().is_none());
}

#[test]
fn unsupported_version_is_fatal() {
    let mut c = codec();
    let out = text(&mut c, "{\"protocol\":\"messagepack\",\"version\":0}\u{1e}");
    let (close, _, farewell) = fatal(&out);
    assert_eq!(close, CloseCode::ProtocolError);
    let reply = text_frame(farewell.cloned());
    assert!(reply.contains("does not support version 0"), "{reply}");
}

#[test]
fn malformed_handshakes_are_fatal_with_an_error_reply() {
    for bad in [
        "not json\u{1e}",
        "{\"protocol\":\"json\"}\u{1e}",
        "{\"version\":1}\u{1e}",
        "[]\u{1e}",
        "\u{1e}",
        "{\"type\":6}\u{1e}",
    ] {
        let mut c = codec();
        let out = text(&mut c, bad);
        let (close, _, farewell) = fatal(&out);
        assert_eq!(close, CloseCode::ProtocolError, "{bad:?}");
        let reply: Value =
            serde_json::from_str(text_frame(farewell.cloned()).trim_end_matches('\u{1e}')).unwrap();
        assert!(reply["error"].is_string(), "{bad:?}: {reply}");
        assert!(!c.ready());
    }
}

#[test]
fn handshake_split_across_frames_is_buffered() {
    let mut c = codec();
    assert!(text(&mut c, "{\"protocol\":").is_empty());
    assert!(text(&mut c, "\"json\",\"vers").is_empty());
    assert!(!c.ready());
    assert_handshake_ok(&text(&mut c, "ion\":1}\u{1e}"));
    assert!(c.ready());
}

#[test]
fn oversized_handshake_is_fatal() {
    let mut c = codec();
    let out = text(&mut c, &" ".repeat(MAX + 1));
    let (close, _, farewell) = fatal(&out);
    assert_eq!(close, CloseCode::MessageTooBig);
    assert!(farewell.is_some());
}

#[test]
fn records_after_the_handshake_in_the_same_frame_are_decoded() {
    let mut c = codec();
    let out = text(
        &mut c,
        concat!(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}",
            "{\"type\":6}\u{1e}",
            "{\"type\":1,\"invocationId\":\"0\",\"target\":\"JoinOrderChannel\",\"arguments\":[\"o1\"]}\u{1e}",
            "{\"type\":1,\"invocationId\":\"1\",\"tar"
        ),
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert_handshake_ok(&out);
    assert!(matches!(out[1], Decoded::Ignore));
    let (reply_to, req) = request(&out[2]);
    assert_eq!(reply_to, id("0"));
    assert!(matches!(req, Request::Subscribe { channel, .. } if channel == "tenant:acme:order:o1"));
    // The partial record completes in the next frame.
    let out = text(&mut c, "get\":\"Ping\",\"arguments\":[]}\u{1e}");
    assert_eq!(out.len(), 1);
    assert!(matches!(request(&out[0]), (Some(_), Request::Ping)));

    // MessagePack: the handshake in a binary frame, then length-prefixed records.
    let mut c = codec();
    let mut frame = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
    frame.extend(mp_invocation(Some("7"), "Ping", vec![]));
    frame.extend(mp_record(&Mp::Array(vec![Mp::from(6)])));
    let out = binary(&mut c, &frame);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_handshake_ok(&out);
    assert!(matches!(request(&out[1]), (Some(RequestId::Text(i)), Request::Ping) if i == "7"));
    assert!(matches!(out[2], Decoded::Ignore));
}

// --- framing ----------------------------------------------------------------------------------

#[test]
fn several_json_records_per_frame_and_records_split_across_frames() {
    let mut c = json_codec();
    let out = text(
        &mut c,
        concat!(
            "{\"type\":1,\"invocationId\":\"a\",\"target\":\"Ping\",\"arguments\":[]}\u{1e}",
            "{\"type\":1,\"invocationId\":\"b\",\"target\":\"Subscribe\",\"arguments\":[\"user:u1\"]}\u{1e}",
            "{\"type\":6}\u{1e}",
        ),
    );
    assert_eq!(out.len(), 3);
    assert_eq!(request(&out[0]).0, id("a"));
    assert_eq!(request(&out[1]).0, id("b"));
    assert!(matches!(out[2], Decoded::Ignore));

    let record = "{\"type\":1,\"invocationId\":\"c\",\"target\":\"Unsubscribe\",\"arguments\":[\"user:u1\"]}\u{1e}";
    let mut decoded = Vec::new();
    for ch in record.chars() {
        decoded.extend(text(&mut c, &ch.to_string()));
    }
    assert_eq!(decoded.len(), 1);
    assert!(
        matches!(request(&decoded[0]), (Some(_), Request::Unsubscribe { channel }) if channel == "user:u1")
    );
}

#[test]
fn messagepack_records_split_across_frames() {
    let mut c = msgpack_codec();
    let mut stream = mp_invocation(Some("1"), "JoinOrderChannel", vec![Mp::from(42)]);
    stream.extend(mp_invocation(
        None,
        "Publish",
        vec![
            Mp::from("tenant:acme:broadcast"),
            Mp::from("NewOrder"),
            Mp::Map(vec![(Mp::from("total"), Mp::F64(12.5))]),
        ],
    ));
    let mut out = Vec::new();
    for b in &stream {
        out.extend(binary(&mut c, std::slice::from_ref(b)));
    }
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(
        request(&out[0]),
        (Some(RequestId::Text(i)), Request::Subscribe { channel, .. }) if i == "1" && channel == "tenant:acme:order:42"
    ));
    match request(&out[1]) {
        (
            None,
            Request::Publish {
                channel,
                event,
                data,
            },
        ) => {
            assert_eq!(channel, "tenant:acme:broadcast");
            assert_eq!(event, "NewOrder");
            assert_eq!(data.get(), r#"{"total":12.5}"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_json_record_is_fatal_with_a_close_record() {
    let mut c = json_codec();
    // A tail that keeps growing without a separator.
    assert!(text(&mut c, &"x".repeat(MAX)).is_empty());
    let out = text(&mut c, "x");
    let (close, message, farewell) = fatal(&out);
    assert_eq!(close, CloseCode::MessageTooBig);
    let farewell: Value =
        serde_json::from_str(text_frame(farewell.cloned()).trim_end_matches('\u{1e}')).unwrap();
    assert_eq!(
        farewell,
        json!({"type": 7, "error": message, "allowReconnect": false})
    );
    // The connection is finished: nothing more is decoded.
    assert!(text(&mut c, "{\"type\":6}\u{1e}").is_empty());
    // A single complete record over the limit is refused too.
    let mut c = json_codec();
    let big = format!("{{\"type\":6,\"pad\":\"{}\"}}\u{1e}", "x".repeat(MAX));
    assert_eq!(fatal(&text(&mut c, &big)).0, CloseCode::MessageTooBig);
}

#[test]
fn oversized_or_broken_messagepack_prefix_is_fatal() {
    let mut c = msgpack_codec();
    let mut prefix = Vec::new();
    write_varint(&mut prefix, MAX + 1);
    let out = binary(&mut c, &prefix);
    let (close, _, farewell) = fatal(&out);
    assert_eq!(close, CloseCode::MessageTooBig);
    let value = decode_frame(farewell.unwrap());
    assert!(
        matches!(&value, Mp::Array(items) if items[0] == Mp::from(7) && items[2] == Mp::Boolean(false))
    );

    let mut c = msgpack_codec();
    let out = binary(&mut c, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(fatal(&out).0, CloseCode::ProtocolError);
}

#[test]
fn frames_of_the_wrong_kind_are_refused_but_the_connection_lives() {
    let mut c = json_codec();
    let out = binary(&mut c, &[0x02, 0x91, 0x06]);
    assert_eq!(reject(&out[0]).1, ErrorCode::UnsupportedFrame);
    assert_eq!(text(&mut c, "{\"type\":6}\u{1e}").len(), 1);

    let mut c = msgpack_codec();
    let out = text(&mut c, "{\"type\":6}\u{1e}");
    assert_eq!(reject(&out[0]).1, ErrorCode::UnsupportedFrame);
    assert!(matches!(
        binary(&mut c, &[0x02, 0x91, 0x06])[..],
        [Decoded::Ignore]
    ));
}

// --- records ----------------------------------------------------------------------------------

#[test]
fn bad_json_is_rejected_and_the_connection_lives() {
    let mut c = json_codec();
    let out = text(&mut c, "{not json}\u{1e}{\"type\":1,\"invocationId\":\"1\",\"target\":\"Ping\",\"arguments\":[]}\u{1e}");
    assert_eq!(out.len(), 2);
    let (reply_to, code, _) = reject(&out[0]);
    assert_eq!((reply_to, code), (None, ErrorCode::BadJson));
    assert!(matches!(request(&out[1]), (Some(_), Request::Ping)));
}

#[test]
fn bad_messagepack_is_rejected_and_the_connection_lives() {
    let mut c = msgpack_codec();
    let mut frame = vec![0x02, 0xc1, 0xc1]; // a complete record holding garbage
    frame.extend(mp_invocation(Some("1"), "Ping", vec![]));
    let out = binary(&mut c, &frame);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(reject(&out[0]).1, ErrorCode::BadJson);
    assert!(matches!(request(&out[1]), (Some(_), Request::Ping)));
}

#[test]
fn unknown_types_are_reported_without_a_reply_and_never_fatal() {
    let mut c = json_codec();
    let out = text(
        &mut c,
        "{\"type\":99,\"invocationId\":\"5\"}\u{1e}{\"type\":6}\u{1e}",
    );
    assert_eq!(out.len(), 2);
    let (reply_to, code, _) = reject(&out[0]);
    assert_eq!((reply_to, code), (None, ErrorCode::UnknownType));
    assert!(matches!(out[1], Decoded::Ignore));

    let mut c = msgpack_codec();
    let out = binary(&mut c, &mp_record(&Mp::Array(vec![Mp::from(42)])));
    assert_eq!(reject(&out[0]).1, ErrorCode::UnknownType);
}

#[test]
fn control_records_are_ignored_and_close_is_a_request() {
    let mut c = json_codec();
    let out = text(
        &mut c,
        concat!(
            "{\"type\":6}\u{1e}",
            "{\"type\":8,\"sequenceId\":1}\u{1e}",
            "{\"type\":9,\"sequenceId\":1}\u{1e}",
            "{\"type\":5,\"invocationId\":\"1\"}\u{1e}",
            "{\"type\":2,\"invocationId\":\"1\",\"item\":1}\u{1e}",
            "{\"type\":3,\"invocationId\":\"1\"}\u{1e}",
            "{\"type\":7}\u{1e}",
        ),
    );
    assert_eq!(out.len(), 7);
    assert!(matches!(
        request(&out[1]),
        (None, Request::Ack { sequence_id: 1 })
    ));
    assert!(
        [0, 2, 3, 4, 5]
            .iter()
            .all(|&i| matches!(out[i], Decoded::Ignore)),
        "{out:?}"
    );
    assert!(matches!(request(&out[6]), (None, Request::Close)));
}

#[test]
fn a_resume_waits_for_the_clients_sequence_and_drops_duplicates() {
    let mut c = json_codec();
    let ping = |id: &str| {
        format!(
            "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"Ping\",\"arguments\":[]}}\u{1e}"
        )
    };
    // Two invocations arrive (sequence 1 and 2).
    let out = text(&mut c, &(ping("a") + &ping("b")));
    assert_eq!(out.len(), 2);
    assert_eq!(c.received_sequence(), 2);
    c.begin_resume();
    // Before the client's Sequence, everything is ignored (nothing is emitted).
    assert!(text(&mut c, &ping("early")).is_empty());
    // The client resends from 2: "b" again is a duplicate, "c" is new.
    let out = text(
        &mut c,
        &(String::from("{\"type\":9,\"sequenceId\":2}\u{1e}") + &ping("b") + &ping("c")),
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(request(&out[0]), (Some(RequestId::Text(id)), Request::Ping) if id == "c"));
    assert_eq!(c.received_sequence(), 3);
    // A Sequence beyond what arrived is a protocol error.
    c.begin_resume();
    let out = text(&mut c, "{\"type\":9,\"sequenceId\":99}\u{1e}");
    assert!(matches!(out[0], Decoded::Fatal { .. }), "{out:?}");
}

#[test]
fn streaming_is_refused_with_a_completion_error() {
    let mut c = json_codec();
    let out = text(
        &mut c,
        concat!(
            "{\"type\":4,\"invocationId\":\"s\",\"target\":\"Counter\",\"arguments\":[]}\u{1e}",
            "{\"type\":1,\"invocationId\":\"u\",\"target\":\"Upload\",\"arguments\":[],\"streamIds\":[\"1\"]}\u{1e}",
        ),
    );
    for (d, expected) in out.iter().zip(["s", "u"]) {
        let (reply_to, code, message) = reject(d);
        assert_eq!(reply_to, id(expected));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("streaming is not supported"), "{message}");
    }
    // The rejection is answered as a completion error carrying the message.
    let (reply_to, code, message) = reject(&out[0]);
    let frame = text_frame(c.encode(&reply_to, Outcome::Error { code, message }));
    assert!(frame
        .starts_with("{\"type\":3,\"invocationId\":\"s\",\"error\":\"streaming is not supported"));
}

// --- hub methods ------------------------------------------------------------------------------

fn invoke(c: &mut SignalRCodec, target: &str, args: Value) -> Decoded {
    let record = json!({"type": 1, "invocationId": "i", "target": target, "arguments": args});
    let mut out = text(c, &format!("{record}\u{1e}"));
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

#[test]
fn every_method_maps_case_insensitively() {
    let mut c = json_codec();
    for target in ["Ping", "ping", "PING"] {
        assert!(matches!(
            request(&invoke(&mut c, target, json!([]))).1,
            Request::Ping
        ));
    }
    for (target, arg) in [
        ("JoinOrderChannel", json!("o9")),
        ("joinOrderChannel", json!(9)),
    ] {
        let d = invoke(&mut c, target, json!([arg]));
        assert!(
            matches!(request(&d).1, Request::Subscribe { channel, since: None } if channel.starts_with("tenant:acme:order:"))
        );
    }
    let d = invoke(&mut c, "LEAVEORDERCHANNEL", json!(["o9"]));
    assert!(
        matches!(request(&d).1, Request::Unsubscribe { channel } if channel == "tenant:acme:order:o9")
    );
    let d = invoke(&mut c, "subscribe", json!(["user:u1"]));
    assert!(matches!(request(&d).1, Request::Subscribe { channel, .. } if channel == "user:u1"));
    let d = invoke(&mut c, "unsubscribe", json!(["user:u1"]));
    assert!(matches!(request(&d).1, Request::Unsubscribe { channel } if channel == "user:u1"));
    let d = invoke(&mut c, "publish", json!(["c", "E", [1, {"a": null}]]));
    assert!(
        matches!(request(&d).1, Request::Publish { data, .. } if data.get() == r#"[1,{"a":null}]"#)
    );
    let d = invoke(&mut c, "SendMessage", json!(["conv", "hi"]));
    assert!(
        matches!(request(&d).1, Request::Invoke { method, args } if method == "SendMessage" && args.iter().map(JsonArg::get).eq([r#""conv""#, r#""hi""#]))
    );
}

#[test]
fn wrong_arguments_and_missing_tenant_are_rejected_to_the_caller() {
    let mut c = json_codec();
    let (reply_to, code, message) = reject(&invoke(&mut c, "JoinOrderChannel", json!([])));
    assert_eq!(reply_to, id("i"));
    assert_eq!(code, ErrorCode::BadRequest);
    assert_eq!(
        message,
        "JoinOrderChannel expects 1 argument (orderId: string)"
    );
    assert_eq!(
        reject(&invoke(&mut c, "Publish", json!(["c"]))).1,
        ErrorCode::BadRequest
    );
    assert_eq!(
        reject(&invoke(&mut c, "Ping", json!([1]))).1,
        ErrorCode::BadRequest
    );

    let mut c = SignalRCodec::new(Arc::new(staff(None)), MAX);
    text(&mut c, "{\"protocol\":\"json\",\"version\":1}\u{1e}");
    let (reply_to, code, message) = reject(&invoke(&mut c, "JoinOrderChannel", json!(["o1"])));
    assert_eq!((reply_to, code), (id("i"), ErrorCode::Forbidden));
    assert!(message.contains("tenant"), "{message}");
}

#[test]
fn fire_and_forget_gets_no_reply() {
    let mut c = json_codec();
    let out = text(
        &mut c,
        "{\"type\":1,\"target\":\"JoinOrderChannel\",\"arguments\":[\"o1\"]}\u{1e}",
    );
    let (reply_to, _) = request(&out[0]);
    assert_eq!(reply_to, None);
    assert!(c.encode(&reply_to, Outcome::Pong).is_none());
    assert!(c
        .encode(
            &None,
            Outcome::Error {
                code: ErrorCode::Forbidden,
                message: "x".into()
            }
        )
        .is_none());
    // Even a refused fire-and-forget call has nowhere to be answered.
    let out = text(
        &mut c,
        "{\"type\":1,\"target\":\"JoinOrderChannel\",\"arguments\":[]}\u{1e}",
    );
    assert_eq!(reject(&out[0]).0, None);

    let mut c = msgpack_codec();
    let out = binary(&mut c, &mp_invocation(None, "Ping", vec![]));
    assert_eq!(request(&out[0]).0, None);
    assert!(c.encode(&None, Outcome::Pong).is_none());
}

// --- completions ------------------------------------------------------------------------------

fn all_outcomes() -> Vec<(Outcome, Option<Value>, Option<&'static str>)> {
    vec![
        (Outcome::Pong, Some(json!(true)), None),
        (
            Outcome::Subscribed {
                channel: "tenant:acme:order:o1".into(),
                subscription_id: 4,
                offset: 12,
                epoch: Arc::from("ep"),
                recovered: None,
            },
            Some(json!({"channel": "tenant:acme:order:o1", "offset": 12, "epoch": "ep"})),
            None,
        ),
        (
            Outcome::Subscribed {
                channel: "c".into(),
                subscription_id: 4,
                offset: 12,
                epoch: Arc::from("ep"),
                recovered: Some(true),
            },
            Some(json!({"channel": "c", "offset": 12, "epoch": "ep", "recovered": true})),
            None,
        ),
        (
            Outcome::Unsubscribed {
                channel: "c".into(),
            },
            None,
            None,
        ),
        (
            Outcome::Published {
                id: Arc::from("e1"),
                offset: 3,
                epoch: Arc::from("ep"),
            },
            Some(json!({"id": "e1", "offset": 3, "epoch": "ep"})),
            None,
        ),
        (
            Outcome::Value(json!({"n": [1, 2.5, "x"]})),
            Some(json!({"n": [1, 2.5, "x"]})),
            None,
        ),
        (Outcome::Done, None, None),
        (
            Outcome::SubscriptionError {
                channel: "c".into(),
                code: ErrorCode::Forbidden,
                reason: "channel c: members of tenant t only".into(),
            },
            None,
            Some("channel c: members of tenant t only"),
        ),
        (
            Outcome::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
            },
            None,
            Some("slow down"),
        ),
    ]
}

#[test]
fn json_completions_for_every_outcome() {
    let c = json_codec();
    let reply_to = id("42");
    for (outcome, result, error) in all_outcomes() {
        let frame = text_frame(c.encode(&reply_to, outcome.clone()));
        assert!(frame.ends_with('\u{1e}'), "{frame}");
        let v: Value = serde_json::from_str(frame.trim_end_matches('\u{1e}')).unwrap();
        let mut expected = json!({"type": 3, "invocationId": "42"});
        if let Some(r) = result {
            expected["result"] = r;
        }
        if let Some(e) = error {
            expected["error"] = json!(e);
        }
        assert_eq!(v, expected, "{outcome:?}");
    }
}

fn to_mp(v: &Value) -> Mp {
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Mp::from(u),
            (_, Some(i)) => Mp::from(i),
            _ => Mp::F64(n.as_f64().unwrap()),
        },
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(a) => Mp::Array(a.iter().map(to_mp).collect()),
        Value::Object(o) => Mp::Map(
            o.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), to_mp(v)))
                .collect(),
        ),
    }
}

#[test]
fn messagepack_completions_for_every_outcome() {
    let c = msgpack_codec();
    let reply_to = id("42");
    for (outcome, result, error) in all_outcomes() {
        let value = decode_frame(&c.encode(&reply_to, outcome.clone()).unwrap());
        let mut expected = vec![Mp::from(3), Mp::Map(vec![]), Mp::from("42")];
        match (result, error) {
            (None, Some(e)) => expected.extend([Mp::from(1), Mp::from(e)]),
            (None, None) => expected.push(Mp::from(2)),
            (Some(r), None) => expected.extend([Mp::from(3), to_mp(&r)]),
            (Some(_), Some(_)) => unreachable!("never both"),
        }
        // Maps compare in order: `serde_json` keeps keys sorted, and so do both sides here.
        assert_eq!(value, Mp::Array(expected), "{outcome:?}");
    }
}

// --- keep-alive and close ---------------------------------------------------------------------

#[test]
fn keepalive_and_goodbye_in_both_formats() {
    let c = codec();
    assert!(
        c.keepalive().is_none(),
        "nothing may precede the handshake reply"
    );
    assert!(c.goodbye(CloseCode::ServerRestart).is_none());

    let c = json_codec();
    assert_eq!(text_frame(c.keepalive()), "{\"type\":6}\u{1e}");
    assert_eq!(
        text_frame(c.goodbye(CloseCode::ServerRestart)),
        "{\"type\":7,\"error\":\"server restarting, reconnect\",\"allowReconnect\":true}\u{1e}"
    );
    assert_eq!(
        text_frame(c.goodbye(CloseCode::TokenExpired)),
        "{\"type\":7,\"error\":\"token expired\",\"allowReconnect\":false}\u{1e}"
    );
    assert_eq!(
        text_frame(c.goodbye(CloseCode::Normal)),
        "{\"type\":7,\"allowReconnect\":false}\u{1e}"
    );

    let c = msgpack_codec();
    assert_eq!(
        c.keepalive(),
        Some(OutFrame::Binary(Bytes::from_static(&[0x02, 0x91, 0x06])))
    );
    assert_eq!(
        decode_frame(&c.goodbye(CloseCode::SlowConsumer).unwrap()),
        Mp::Array(vec![
            Mp::from(7),
            Mp::from("slow consumer, reconnect and recover"),
            Mp::Boolean(true)
        ])
    );
    assert_eq!(
        decode_frame(&c.goodbye(CloseCode::Normal).unwrap()),
        Mp::Array(vec![Mp::from(7), Mp::Nil, Mp::Boolean(false)])
    );
}

// --- robustness -------------------------------------------------------------------------------

/// xorshift64*: enough randomness to shake the decoder, no dependency, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn valid_json_stream() -> Vec<u8> {
    concat!(
        "{\"type\":1,\"invocationId\":\"0\",\"target\":\"JoinOrderChannel\",\"arguments\":[\"o1\"]}\u{1e}",
        "{\"type\":1,\"target\":\"Publish\",\"arguments\":[\"c\",\"E\",{\"a\":[1,2,{\"b\":null}]}]}\u{1e}",
        "{\"type\":4,\"invocationId\":\"1\",\"target\":\"S\",\"arguments\":[]}\u{1e}",
        "{\"type\":7,\"error\":\"x\"}\u{1e}{\"type\":6}\u{1e}",
    )
    .as_bytes()
    .to_vec()
}

fn valid_msgpack_stream() -> Vec<u8> {
    let mut s = mp_invocation(Some("0"), "JoinOrderChannel", vec![Mp::from("o1")]);
    s.extend(mp_invocation(
        None,
        "Publish",
        vec![
            Mp::from("c"),
            Mp::from("E"),
            Mp::Map(vec![(
                Mp::from("a"),
                Mp::Array(vec![Mp::Binary(vec![1, 2]), Mp::F32(1.5)]),
            )]),
        ],
    ));
    s.extend(mp_record(&Mp::Array(vec![
        Mp::from(7),
        Mp::Nil,
        Mp::Boolean(true),
    ])));
    s
}

/// Feeds `data` to `codec` in random-sized pieces, as text (lossily, when not UTF-8) or binary.
fn feed_randomly(rng: &mut Rng, c: &mut SignalRCodec, data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(64));
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let mut out = Vec::new();
        if rng.below(4) == 0 {
            let s = String::from_utf8_lossy(piece);
            c.decode(InFrame::Text(&s), &mut out);
        } else {
            c.decode(InFrame::Binary(piece), &mut out);
        }
        for d in &out {
            if let Decoded::Request(Inbound { reply_to, .. }) | Decoded::Reject { reply_to, .. } = d
            {
                let _ = c.encode(reply_to, Outcome::Pong);
            }
        }
        let _ = (
            c.keepalive(),
            c.goodbye(CloseCode::TooManyBadFrames),
            c.format(),
            c.ready(),
        );
    }
}

#[test]
fn decode_never_panics_on_random_or_mangled_input() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let handshakes: [&[u8]; 3] = [
        b"{\"protocol\":\"json\",\"version\":1}\x1e",
        b"{\"protocol\":\"messagepack\",\"version\":1}\x1e",
        b"",
    ];
    let streams = [valid_json_stream(), valid_msgpack_stream()];
    for round in 0..3000 {
        let mut c = SignalRCodec::new(Arc::new(staff(Some("acme"))), 256);
        let mut data = handshakes[round % 3].to_vec();
        let mut body = match rng.below(3) {
            0 => rng.bytes(600),
            n => streams[n - 1].clone(),
        };
        // Mangle: truncate, flip bytes, splice random bytes in.
        if !body.is_empty() {
            match rng.below(4) {
                0 => body.truncate(rng.below(body.len())),
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(body.len());
                        body[i] = rng.next() as u8;
                    }
                }
                2 => {
                    let i = rng.below(body.len());
                    let junk = rng.bytes(16);
                    body.splice(i..i, junk);
                }
                _ => {}
            }
        }
        data.extend(body);
        // Sometimes mangle the handshake too.
        if rng.below(5) == 0 && !data.is_empty() {
            let i = rng.below(data.len());
            data[i] = rng.next() as u8;
        }
        feed_randomly(&mut rng, &mut c, &data);
    }
}

#[test]
fn every_truncation_of_valid_input_decodes_without_panicking() {
    for (handshake, stream) in [
        (
            &b"{\"protocol\":\"json\",\"version\":1}\x1e"[..],
            valid_json_stream(),
        ),
        (
            &b"{\"protocol\":\"messagepack\",\"version\":1}\x1e"[..],
            valid_msgpack_stream(),
        ),
    ] {
        let mut full = handshake.to_vec();
        full.extend(&stream);
        for cut in 0..=full.len() {
            let mut c = codec();
            let mut out = Vec::new();
            c.decode(InFrame::Binary(&full[..cut]), &mut out);
            // Everything before the cut that is complete decodes; nothing is fatal.
            assert!(
                !out.iter().any(|d| matches!(d, Decoded::Fatal { .. })),
                "cut at {cut}: {out:?}"
            );
        }
    }
}
