//! [`SignalRCodec`]: one SignalR connection's [`WireCodec`]. It holds the connection's protocol
//! state (waiting for the handshake, open in JSON or MessagePack, or failed), reassembles records
//! across frames and turns each record into a [`Decoded`], and each outcome into a completion.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::framing::{Framing, FramingError, Reassembler, RECORD_SEPARATOR};
use super::handshake::{self, HandshakeError, HubProtocol};
use super::message::{Completion, HubMessage, RecordError};
use super::{hub, json, msgpack};
use crate::codec::{Decoded, InFrame, OutFrame, Outcome, ReplyTo, Request, WireCodec, WireFormat};
use crate::codes::{CloseCode, ErrorCode};
use crate::hub_arguments::ArgumentsDefault;
use crate::identity::Identity;

/// Stateful reconnect's view of what the client sent: its sequenced messages (types 1-5) are
/// numbered from 1; after a resume the client resends from a point it names, and duplicates are
/// dropped (mirroring the client's own `MessageBuffer`).
#[derive(Debug)]
struct Receiving {
    /// The number the next sequenced message carries.
    next: u64,
    /// The highest number acted on.
    latest: u64,
    /// After a resume: ignore everything until the client's Sequence record.
    awaiting_sequence: bool,
}

impl Receiving {
    fn new() -> Self {
        Self {
            next: 1,
            latest: 0,
            awaiting_sequence: false,
        }
    }

    /// Whether to act on `message` (false for duplicates and for anything before the
    /// client's Sequence after a resume).
    fn admit(&mut self, message: &HubMessage) -> Result<bool, String> {
        if self.awaiting_sequence {
            let HubMessage::Sequence { sequence_id } = message else {
                return Ok(false);
            };
            if *sequence_id > self.next {
                return Err(format!(
                    "the client resends from {sequence_id} but only {} messages arrived",
                    self.next - 1
                ));
            }
            self.awaiting_sequence = false;
            self.next = *sequence_id;
            return Ok(false);
        }
        if !message.is_sequenced() {
            return Ok(true);
        }
        let current = self.next;
        self.next += 1;
        if current <= self.latest {
            return Ok(false);
        }
        self.latest = current;
        Ok(true)
    }
}

/// The SignalR hub protocol codec for one connection.
#[derive(Debug)]
pub struct SignalRCodec {
    identity: Arc<Identity>,
    max_message_bytes: usize,
    /// The hub path's argument list for events whose publisher chose none.
    arguments_default: ArgumentsDefault,
    /// The transport carries text only (Server-Sent Events): MessagePack is refused at the handshake.
    text_only: bool,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Waiting for the handshake record; holds the part received so far.
    Handshake { pending: Vec<u8> },
    /// Handshake done: records flow in `protocol`.
    Open {
        protocol: HubProtocol,
        version: u32,
        records: Reassembler,
        receiving: Receiving,
    },
    /// A fatal error was reported; later frames are dropped. `protocol` is `None` when the
    /// handshake itself failed.
    Failed { protocol: Option<HubProtocol> },
}

impl SignalRCodec {
    /// A codec for a connection made by `identity`, refusing hub messages (and the handshake)
    /// longer than `max_message_bytes`.
    pub fn new(identity: Arc<Identity>, max_message_bytes: usize) -> Self {
        Self {
            identity,
            max_message_bytes,
            arguments_default: ArgumentsDefault::default(),
            text_only: false,
            state: State::Handshake {
                pending: Vec::new(),
            },
        }
    }

    /// This codec, for a hub path whose events carry `default` unless their publisher chose.
    pub fn with_arguments_default(mut self, default: ArgumentsDefault) -> Self {
        self.arguments_default = default;
        self
    }

    /// This codec, for a transport that carries text only (Server-Sent Events).
    pub fn text_only(mut self) -> Self {
        self.text_only = true;
        self
    }

    /// The protocol agreed in the handshake, if it is done.
    pub fn protocol(&self) -> Option<HubProtocol> {
        match &self.state {
            State::Handshake { .. } => None,
            State::Open { protocol, .. } => Some(*protocol),
            State::Failed { protocol } => *protocol,
        }
    }

    /// The protocol version the client asked for (2 = it may use stateful reconnect).
    pub fn protocol_version(&self) -> Option<u32> {
        match &self.state {
            State::Open { version, .. } => Some(*version),
            _ => None,
        }
    }

    fn decode_handshake(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        let State::Handshake { pending } = &mut self.state else {
            return;
        };
        pending.extend_from_slice(bytes);
        let Some(end) = pending.iter().position(|&b| b == RECORD_SEPARATOR) else {
            if pending.len() > self.max_message_bytes {
                let e = HandshakeError::TooBig {
                    max: self.max_message_bytes,
                };
                self.fail_handshake(e, out);
            }
            return;
        };
        let pending = std::mem::take(pending);
        let (record, rest) = pending.split_at(end);
        if record.len() > self.max_message_bytes {
            let e = HandshakeError::TooBig {
                max: self.max_message_bytes,
            };
            return self.fail_handshake(e, out);
        }
        match handshake::parse_request(record) {
            Err(e) => self.fail_handshake(e, out),
            Ok(agreed) if self.text_only && agreed.protocol == HubProtocol::MessagePack => {
                let e = HandshakeError::BinaryOnTextTransport(agreed.protocol.name().to_owned());
                self.fail_handshake(e, out)
            }
            Ok(agreed) => {
                let framing = match agreed.protocol {
                    HubProtocol::Json => Framing::Separated,
                    HubProtocol::MessagePack => Framing::LengthPrefixed,
                };
                self.state = State::Open {
                    protocol: agreed.protocol,
                    version: agreed.version,
                    records: Reassembler::new(framing, self.max_message_bytes),
                    receiving: Receiving::new(),
                };
                out.push(Decoded::request(
                    None,
                    Request::HandshakeComplete {
                        reply: handshake::success_reply(),
                    },
                ));
                // Records may follow the handshake in the same frame (after its separator).
                if let Some(rest) = rest.get(1..).filter(|r| !r.is_empty()) {
                    self.decode_records(rest, out);
                }
            }
        }
    }

    fn fail_handshake(&mut self, error: HandshakeError, out: &mut Vec<Decoded>) {
        self.state = State::Failed { protocol: None };
        out.push(Decoded::Fatal {
            close: error.close_code(),
            message: format!("SignalR handshake failed: {error}"),
            farewell: Some(error.reply()),
        });
    }

    /// Splits `bytes` into records of the agreed protocol and decodes each one.
    fn decode_records(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        let State::Open {
            protocol,
            records,
            receiving,
            ..
        } = &mut self.state
        else {
            return;
        };
        let protocol = *protocol;
        let identity = &self.identity;
        let fed = records.feed(bytes, &mut |record| {
            let message = match protocol {
                HubProtocol::Json => json::parse_record(record),
                HubProtocol::MessagePack => msgpack::parse_record(record),
            };
            if let Ok(m) = &message {
                match receiving.admit(m) {
                    Ok(true) => {}
                    Ok(false) => return ControlFlow::Continue(()),
                    Err(reason) => {
                        out.push(Decoded::Fatal {
                            close: CloseCode::ProtocolError,
                            farewell: Some(close_record(protocol, Some(&reason), false)),
                            message: reason,
                        });
                        return ControlFlow::Break(());
                    }
                }
            }
            if let Some(decoded) = interpret(identity, message) {
                out.push(decoded);
            }
            ControlFlow::Continue(())
        });
        if let Err(e) = fed {
            self.state = State::Failed {
                protocol: Some(protocol),
            };
            let close = match e {
                FramingError::TooBig { .. } => CloseCode::MessageTooBig,
                FramingError::BadLengthPrefix => CloseCode::ProtocolError,
            };
            let message = e.to_string();
            // After the handshake the farewell is a SignalR Close record, so the client reports
            // this reason rather than a bare WebSocket close.
            let farewell = Some(close_record(protocol, Some(&message), false));
            out.push(Decoded::Fatal {
                close,
                message,
                farewell,
            });
        }
    }
}

/// What the connection should do about one record.
fn interpret(identity: &Identity, message: Result<HubMessage, RecordError>) -> Option<Decoded> {
    let message = match message {
        Ok(m) => m,
        Err(e) => return Some(Decoded::reject(e.reply_to(), e.code(), e.to_string())),
    };
    Some(match message {
        HubMessage::Invocation {
            id,
            target,
            streams: true,
            ..
        } => Decoded::reject(
            id,
            ErrorCode::BadRequest,
            format!("streaming is not supported: '{target}' was invoked with upload streams"),
        ),
        HubMessage::Invocation {
            id, target, args, ..
        } => match hub::request(identity, &target, args) {
            Ok(request) => Decoded::request(id, request),
            Err(e) => Decoded::reject(id, e.code(), e.to_string()),
        },
        HubMessage::StreamInvocation { id, target } => Decoded::reject(
            id,
            ErrorCode::BadRequest,
            format!("streaming is not supported: '{target}' cannot be invoked as a stream"),
        ),
        HubMessage::Close { error } => {
            if let Some(error) = error {
                log::debug!("SignalR client closing with error: {error}");
            }
            Decoded::request(None, Request::Close)
        }
        HubMessage::Ack { sequence_id } => Decoded::request(None, Request::Ack { sequence_id }),
        // Pings only prove liveness (the connection counts every frame); a Sequence was handled by
        // `Receiving`; stream items, client completions and cancellations can only concern
        // streams, which were refused when they were opened.
        HubMessage::Ping
        | HubMessage::Sequence { .. }
        | HubMessage::StreamItem
        | HubMessage::Completion
        | HubMessage::CancelInvocation => Decoded::Ignore,
        // Later protocol revisions may add types, which peers are meant to skip. Reported (with
        // no reply address, so nothing is sent) so the connection can count it; never fatal.
        HubMessage::Unknown(t) => Decoded::reject(
            None,
            ErrorCode::UnknownType,
            format!("unknown hub message type {t}"),
        ),
    })
}

fn close_record(protocol: HubProtocol, error: Option<&str>, allow_reconnect: bool) -> OutFrame {
    match protocol {
        HubProtocol::Json => json::close(error, allow_reconnect),
        HubProtocol::MessagePack => msgpack::close(error, allow_reconnect),
    }
}

impl WireCodec for SignalRCodec {
    fn format(&self) -> WireFormat {
        self.protocol()
            .map_or(WireFormat::SignalRJson, HubProtocol::format)
    }

    fn arguments_default(&self) -> ArgumentsDefault {
        self.arguments_default
    }

    fn label(&self) -> &'static str {
        "signalr"
    }

    fn ready(&self) -> bool {
        self.protocol().is_some()
    }

    fn decode(&mut self, frame: InFrame<'_>, out: &mut Vec<Decoded>) {
        match (&self.state, frame) {
            // The handshake is JSON text whatever protocol it asks for. Clients using a binary
            // transfer format (the .NET and Java clients with MessagePack) send it in a binary
            // frame, so both kinds are accepted here.
            (State::Handshake { .. }, InFrame::Text(text)) => {
                self.decode_handshake(text.as_bytes(), out)
            }
            (State::Handshake { .. }, InFrame::Binary(bytes)) => self.decode_handshake(bytes, out),
            (
                State::Open {
                    protocol: HubProtocol::Json,
                    ..
                },
                InFrame::Text(text),
            ) => self.decode_records(text.as_bytes(), out),
            (
                State::Open {
                    protocol: HubProtocol::MessagePack,
                    ..
                },
                InFrame::Binary(bytes),
            ) => self.decode_records(bytes, out),
            // A frame of the other kind is refused but the connection lives: the frame is
            // self-contained, so skipping it leaves the record stream (and any partial record
            // kept from earlier frames) intact; closing would punish one stray frame.
            (State::Open { .. }, InFrame::Binary(_)) => out.push(Decoded::reject(
                None,
                ErrorCode::UnsupportedFrame,
                "binary frames are not part of the JSON hub protocol; send text frames",
            )),
            (State::Open { .. }, InFrame::Text(_)) => out.push(Decoded::reject(
                None,
                ErrorCode::UnsupportedFrame,
                "text frames are not part of the MessagePack hub protocol; send binary frames",
            )),
            (State::Failed { .. }, _) => {}
        }
    }

    fn encode(&self, reply_to: &ReplyTo, outcome: Outcome) -> Option<OutFrame> {
        // No invocation id: a fire-and-forget call, which must never be answered.
        let id = reply_to.as_ref()?;
        let completion: Completion = hub::completion(outcome);
        Some(match self.protocol() {
            Some(HubProtocol::MessagePack) => msgpack::completion(id, &completion),
            Some(HubProtocol::Json) | None => json::completion(id, &completion),
        })
    }

    fn keepalive(&self) -> Option<OutFrame> {
        // Nothing may precede the handshake reply.
        match &self.state {
            State::Open { protocol, .. } => Some(match protocol {
                HubProtocol::Json => json::ping(),
                HubProtocol::MessagePack => msgpack::ping(),
            }),
            _ => None,
        }
    }

    fn resumable(&self) -> bool {
        self.protocol_version()
            .is_some_and(|v| v >= handshake::STATEFUL_RECONNECT_VERSION)
    }

    fn received_sequence(&self) -> u64 {
        match &self.state {
            State::Open { receiving, .. } => receiving.latest,
            _ => 0,
        }
    }

    fn ack_frame(&self, sequence_id: u64) -> Option<OutFrame> {
        Some(match self.protocol()? {
            HubProtocol::Json => json::ack(sequence_id),
            HubProtocol::MessagePack => msgpack::ack(sequence_id),
        })
    }

    fn sequence_frame(&self, sequence_id: u64) -> Option<OutFrame> {
        Some(match self.protocol()? {
            HubProtocol::Json => json::sequence(sequence_id),
            HubProtocol::MessagePack => msgpack::sequence(sequence_id),
        })
    }

    fn begin_resume(&mut self) {
        if let State::Open {
            protocol,
            records,
            receiving,
            ..
        } = &mut self.state
        {
            let framing = match protocol {
                HubProtocol::Json => Framing::Separated,
                HubProtocol::MessagePack => Framing::LengthPrefixed,
            };
            *records = Reassembler::new(framing, self.max_message_bytes);
            receiving.awaiting_sequence = true;
        }
    }

    fn goodbye(&self, close: CloseCode) -> Option<OutFrame> {
        let protocol = self.protocol()?;
        // A normal closure is not an error: clients report any `error` as the reason the
        // connection failed.
        let error = (close != CloseCode::Normal).then(|| close.reason());
        Some(close_record(protocol, error, close.reconnect()))
    }
}
