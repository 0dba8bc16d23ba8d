//! The handshake: the client's first record, always JSON and ended by 0x1E whatever protocol it
//! asks for, names the hub protocol and its version; the server answers `{}` or
//! `{"error":"…"}` + 0x1E, always in a text frame, and closes after an error.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::framing::RECORD_SEPARATOR;
use crate::codec::{OutFrame, WireFormat};
use crate::codes::CloseCode;

/// The hub protocols this server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubProtocol {
    /// Text frames, records ended by 0x1E.
    Json,
    /// Binary frames, records prefixed by a varint length.
    MessagePack,
}

impl HubProtocol {
    /// The name in the handshake request.
    pub fn name(self) -> &'static str {
        match self {
            HubProtocol::Json => "json",
            HubProtocol::MessagePack => "messagepack",
        }
    }

    /// The notification format of a connection using this protocol.
    pub fn format(self) -> WireFormat {
        match self {
            HubProtocol::Json => WireFormat::SignalRJson,
            HubProtocol::MessagePack => WireFormat::SignalRMsgPack,
        }
    }

    /// Versions accepted in the handshake. Version 1 is the one the spec describes; 2 is what
    /// clients since .NET 8 / `@microsoft/signalr` 8 send (same records, plus Ack and Sequence
    /// when stateful reconnect was negotiated); the Python `signalrcore` client sends 0 for JSON.
    /// (ASP.NET Core accepts any version up to 2; no MessagePack client sends 0.)
    pub fn supports_version(self, version: u64) -> bool {
        match self {
            HubProtocol::Json => version <= 2,
            HubProtocol::MessagePack => (1..=2).contains(&version),
        }
    }

    /// Protocol names match case-insensitively, as in ASP.NET Core's protocol resolver.
    fn from_name(name: &str) -> Option<Self> {
        [HubProtocol::Json, HubProtocol::MessagePack]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

/// A successful handshake request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub protocol: HubProtocol,
    pub version: u32,
}

/// Why a handshake failed. The `Display` text is what the client reads in `{"error":…}`; the
/// wording of the first two errors follows ASP.NET Core's so client-side checks keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion { protocol: String, version: String },
    #[error("The handshake request is not valid JSON: {0}")]
    NotJson(String),
    #[error("The handshake request must be a JSON object with \"protocol\" and \"version\".")]
    NotAnObject,
    #[error("The handshake request has no string \"protocol\".")]
    MissingProtocol,
    #[error("The handshake request has no numeric \"version\".")]
    MissingVersion,
    #[error("The handshake request exceeds the {max}-byte limit.")]
    TooBig { max: usize },
    /// A binary protocol over a text-only transport (Server-Sent Events); ASP.NET Core's wording.
    #[error("Cannot use the '{0}' protocol on the current transport. The transport does not support 'Binary' transfer format.")]
    BinaryOnTextTransport(String),
}

impl HandshakeError {
    /// The WebSocket close code after the error reply.
    pub fn close_code(&self) -> CloseCode {
        match self {
            HandshakeError::TooBig { .. } => CloseCode::MessageTooBig,
            _ => CloseCode::ProtocolError,
        }
    }

    /// The handshake response carrying this error.
    pub fn reply(&self) -> OutFrame {
        error_reply(&self.to_string())
    }
}

/// Parses one handshake record (the bytes before the first 0x1E).
/// The hub protocol version with stateful reconnect (Ack and Sequence records).
pub const STATEFUL_RECONNECT_VERSION: u32 = 2;

pub fn parse_request(record: &[u8]) -> Result<Handshake, HandshakeError> {
    let value: Value =
        serde_json::from_slice(record).map_err(|e| HandshakeError::NotJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(HandshakeError::NotAnObject);
    };
    let name = match fields.get("protocol") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(HandshakeError::MissingProtocol),
    };
    let protocol = HubProtocol::from_name(name)
        .ok_or_else(|| HandshakeError::UnsupportedProtocol(name.to_owned()))?;
    let version = match fields.get("version") {
        Some(Value::Number(n)) => n,
        _ => return Err(HandshakeError::MissingVersion),
    };
    let unsupported = || HandshakeError::UnsupportedVersion {
        protocol: protocol.name().to_owned(),
        version: version.to_string(),
    };
    let v = version.as_u64().ok_or_else(unsupported)?;
    if !protocol.supports_version(v) {
        return Err(unsupported());
    }
    let version = u32::try_from(v).map_err(|_| unsupported())?;
    Ok(Handshake { protocol, version })
}

/// `{}` + 0x1E: the handshake succeeded. Text even for MessagePack, as clients expect.
pub fn success_reply() -> OutFrame {
    OutFrame::Text(Bytes::from_static(b"{}\x1e"))
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    error: &'a str,
}

/// `{"error":"…"}` + 0x1E: the handshake failed and the server will close.
pub fn error_reply(message: &str) -> OutFrame {
    let mut out = serde_json::to_vec(&ErrorReply { error: message }).unwrap_or_else(|_| {
        // A struct holding one string cannot fail to serialize; keep a valid reply regardless.
        br#"{"error":"handshake failed"}"#.to_vec()
    });
    out.push(RECORD_SEPARATOR);
    OutFrame::Text(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Handshake, HandshakeError> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn accepts_the_versions_real_clients_send() {
        for (req, protocol, version) in [
            (r#"{"protocol":"json","version":1}"#, HubProtocol::Json, 1),
            (r#"{"protocol":"json","version":0}"#, HubProtocol::Json, 0),
            (r#"{"protocol":"json","version":2}"#, HubProtocol::Json, 2),
            (
                r#"{"protocol":"messagepack","version":1}"#,
                HubProtocol::MessagePack,
                1,
            ),
            (
                r#"{"protocol":"messagepack","version":2}"#,
                HubProtocol::MessagePack,
                2,
            ),
            (
                r#"{"version":1, "protocol":"JSON", "extra":true}"#,
                HubProtocol::Json,
                1,
            ),
        ] {
            assert_eq!(parse(req), Ok(Handshake { protocol, version }), "{req}");
        }
    }

    #[test]
    fn refuses_unknown_protocols_and_versions_with_aspnet_wording() {
        let e = parse(r#"{"protocol":"xml","version":1}"#).unwrap_err();
        assert_eq!(e.to_string(), "The protocol 'xml' is not supported.");
        assert_eq!(e.close_code(), CloseCode::ProtocolError);
        let e = parse(r#"{"protocol":"json","version":3}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "The server does not support version 3 of the 'json' protocol."
        );
        for v in ["0", "3", "-1", "1.5"] {
            let req = format!(r#"{{"protocol":"messagepack","version":{v}}}"#);
            assert!(
                matches!(parse(&req), Err(HandshakeError::UnsupportedVersion { .. })),
                "{req}"
            );
        }
    }

    #[test]
    fn malformed_requests_get_specific_errors() {
        assert!(matches!(parse("{"), Err(HandshakeError::NotJson(_))));
        assert!(matches!(parse(""), Err(HandshakeError::NotJson(_))));
        assert_eq!(parse("[1]"), Err(HandshakeError::NotAnObject));
        assert_eq!(
            parse(r#"{"version":1}"#),
            Err(HandshakeError::MissingProtocol)
        );
        assert_eq!(
            parse(r#"{"protocol":1}"#),
            Err(HandshakeError::MissingProtocol)
        );
        assert_eq!(
            parse(r#"{"protocol":"json"}"#),
            Err(HandshakeError::MissingVersion)
        );
        assert_eq!(
            parse(r#"{"protocol":"json","version":"1"}"#),
            Err(HandshakeError::MissingVersion)
        );
        assert!(matches!(
            parse_request(b"\xff\xfe"),
            Err(HandshakeError::NotJson(_))
        ));
    }

    #[test]
    fn replies_are_text_and_end_with_the_separator() {
        assert_eq!(
            success_reply(),
            OutFrame::Text(Bytes::from_static(b"{}\x1e"))
        );
        let reply = HandshakeError::UnsupportedProtocol("x\"y".into()).reply();
        assert_eq!(
            reply,
            OutFrame::Text(Bytes::from_static(
                b"{\"error\":\"The protocol 'x\\\"y' is not supported.\"}\x1e"
            ))
        );
    }
}
