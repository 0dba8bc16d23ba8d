//! Every close code and error code a client can see, in one place (documented in
//! `docs/protocol.md`; keep the two in step).
//!
//! Close codes 4000-4002 and 4004 mean "reconnect now" (and recover from history where the protocol
//! allows); 4400-4499 mean "something must change before reconnecting" (a fresh token, a slower
//! rate). [`CloseCode::reconnect`] is the authority. Standard codes: 1000 normal, 1002 protocol
//! error, 1007 invalid payload data (text that is not UTF-8), 1009 frame too big, 1012 server
//! restarting (reconnect). Only codes the server sends are listed: a binary frame on the native
//! protocol gets an `unsupported_frame` error frame (not 1003), and a tenant over its connection
//! quota is refused at the upgrade with HTTP 429 (not a close code).

use serde::Serialize;

/// Why the server closed a WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the client asked to close.
    Normal,
    /// 1002: the WebSocket framing was broken.
    ProtocolError,
    /// 1007: a text message was not valid UTF-8 (in one frame or across fragments).
    InvalidPayload,
    /// 1009: a frame (or reassembled message) exceeded `session.max_frame_bytes`.
    MessageTooBig,
    /// 1012: the node is shutting down or restarting; reconnect (to another node).
    ServerRestart,
    /// 4000: the client read too slowly and its outbound queue filled (policy `disconnect`);
    /// reconnect and recover from history.
    SlowConsumer,
    /// 4001: nothing heard from the client within `session.client_timeout_ms`.
    HeartbeatTimeout,
    /// 4002: no SignalR handshake within `session.handshake_timeout_ms`.
    HandshakeTimeout,
    /// 4004: a resumed connection (SignalR stateful reconnect) could not be made whole; reconnect
    /// afresh (the client's automatic reconnect does).
    ResumeIncomplete,
    /// 4400: the client kept sending frames the server could not understand.
    TooManyBadFrames,
    /// 4401: the token expired during the connection; reconnect with a fresh token.
    TokenExpired,
    /// 4429: the client kept sending faster than `rate_limit` allows after being warned.
    RateLimited,
}

impl CloseCode {
    pub const ALL: [CloseCode; 12] = [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::ServerRestart,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::HandshakeTimeout,
        CloseCode::ResumeIncomplete,
        CloseCode::TooManyBadFrames,
        CloseCode::TokenExpired,
        CloseCode::RateLimited,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::ServerRestart => 1012,
            CloseCode::SlowConsumer => 4000,
            CloseCode::HeartbeatTimeout => 4001,
            CloseCode::HandshakeTimeout => 4002,
            CloseCode::ResumeIncomplete => 4004,
            CloseCode::TooManyBadFrames => 4400,
            CloseCode::TokenExpired => 4401,
            CloseCode::RateLimited => 4429,
        }
    }

    /// The reason text sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::InvalidPayload => "invalid payload data: text is not valid UTF-8",
            CloseCode::MessageTooBig => "frame too big",
            CloseCode::ServerRestart => "server restarting, reconnect",
            CloseCode::SlowConsumer => "slow consumer, reconnect and recover",
            CloseCode::HeartbeatTimeout => "heartbeat timeout",
            CloseCode::HandshakeTimeout => "handshake timeout",
            CloseCode::ResumeIncomplete => "could not resume the connection, reconnect",
            CloseCode::TooManyBadFrames => "too many bad frames",
            CloseCode::TokenExpired => "token expired",
            CloseCode::RateLimited => "rate limit exceeded",
        }
    }

    /// Whether a client may reconnect (SignalR `allowReconnect`). A rate-limit close allows it:
    /// the client's own reconnect delays slow it down, and forbidding it left a client that had
    /// only flushed a burst (a resumed connection's buffered calls) disconnected for good.
    pub fn reconnect(self) -> bool {
        matches!(
            self,
            CloseCode::ServerRestart
                | CloseCode::SlowConsumer
                | CloseCode::HeartbeatTimeout
                | CloseCode::HandshakeTimeout
                | CloseCode::ResumeIncomplete
                | CloseCode::RateLimited
        )
    }

    /// The metric label for this close.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::ServerRestart => "server_restart",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::HandshakeTimeout => "handshake_timeout",
            CloseCode::ResumeIncomplete => "resume_incomplete",
            CloseCode::TooManyBadFrames => "too_many_bad_frames",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::RateLimited => "rate_limited",
        }
    }
}

/// The `code` of an `error` / `subscription_error` frame (native protocol). SignalR completion
/// errors carry only the human-readable message, as ASP.NET Core hubs do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON (or MessagePack).
    BadJson,
    /// The frame's `type` (or hub method) is unknown.
    UnknownType,
    /// The frame is well-formed but its fields are missing or wrong.
    BadRequest,
    /// The channel name does not follow the grammar.
    BadChannel,
    /// The event name does not follow the grammar.
    BadEvent,
    /// The event's data is nested deeper than `payload.max_depth` or is larger than
    /// `payload.max_bytes`; nothing was published.
    BadPayload,
    /// The channel rules refuse this caller; the message names the rule.
    Forbidden,
    /// The connection already has `session.max_subscriptions` subscriptions.
    TooManySubscriptions,
    /// The connection is already subscribed to that channel.
    AlreadySubscribed,
    /// The connection is not subscribed to that channel.
    NotSubscribed,
    /// The client sent faster than `rate_limit` allows; the frame was not processed.
    RateLimited,
    /// The broker's mailbox stayed full; retry later.
    Busy,
    /// The cluster could not take the publish (Redis unreachable after retries).
    Unavailable,
    /// A tenant quota refused the request (subscriptions per connection, publishes per second).
    QuotaExceeded,
    /// Binary frames on a text protocol.
    UnsupportedFrame,
    /// Something failed inside the server.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::BadEvent => "bad_event",
            ErrorCode::BadPayload => "bad_payload",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Why a stalled connection actor's connection was reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallReason {
    /// Its outbox filled under policy `disconnect` (as close code 4000 would say).
    SlowConsumer,
    /// The client was silent past `session.client_timeout_ms` too (as 4001 would say).
    HeartbeatTimeout,
    /// The client took nothing written to it within `session.write_timeout_ms`.
    WriteTimeout,
}

impl StallReason {
    pub const ALL: [StallReason; 3] = [
        StallReason::SlowConsumer,
        StallReason::HeartbeatTimeout,
        StallReason::WriteTimeout,
    ];

    /// The `reason` label in `switchyard_disconnects_total` (the close codes' labels where one
    /// applies, so a slow consumer is one series whichever side closed it).
    pub fn label(self) -> &'static str {
        match self {
            StallReason::SlowConsumer => CloseCode::SlowConsumer.label(),
            StallReason::HeartbeatTimeout => CloseCode::HeartbeatTimeout.label(),
            StallReason::WriteTimeout => "write_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::TooManySubscriptions,
            ErrorCode::Forbidden,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn application_codes_are_in_the_private_range() {
        for c in [
            CloseCode::SlowConsumer,
            CloseCode::HeartbeatTimeout,
            CloseCode::TokenExpired,
            CloseCode::RateLimited,
        ] {
            assert!((4000..5000).contains(&c.code()));
        }
    }
}
