//! The one envelope every event travels in: inside a node, on Redis and in history.
//!
//! `{v, id, channel, event, data, ts, offset, epoch, origin}`, plus `arguments` when the publisher
//! chose the SignalR argument list ([`HubArguments`]). `arguments` is optional and added at the
//! end, so the version stays 1: a node that does not know it ignores it (and delivers with its
//! hub's default). `data` stays raw JSON text from the
//! moment it is accepted, so it is never parsed again on the fan-out path. Each wire format's frame is
//! encoded at most once per node ([`Envelope::frame`]) and the same [`Bytes`] are handed to every
//! connection that speaks that format.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::hub_arguments::HubArguments;
use crate::ids::NodeId;
use crate::payload::Payload;

/// How many encodings of one event an envelope can cache: the native frame, and two per SignalR
/// format (the notification message, and the event's own arguments; see
/// [`crate::codec::notification_ws_frame`]).
pub const FRAME_SLOTS: usize = 5;

/// Version of the envelope's serialized form (`v`).
pub const ENVELOPE_VERSION: u8 = 1;

/// The envelope's (and a publisher's) field naming the SignalR argument list.
pub const ARGUMENTS_FIELD: &str = "arguments";

/// Longest event name accepted.
pub const MAX_EVENT_LEN: usize = 128;

/// An event name (`NewOrder`, `OrderStatusChanged`, …): letters, digits, `_`, `-`, `.`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventName(Arc<str>);

/// Why an event name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event name must be 1-{MAX_EVENT_LEN} characters of letters, digits, '_', '-' or '.'")]
pub struct BadEventName;

impl EventName {
    pub fn parse(s: &str) -> Result<Self, BadEventName> {
        let ok = !s.is_empty()
            && s.len() <= MAX_EVENT_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(BadEventName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of a hub command ([`crate::hub_commands`]): `$` and a name no publisher can
    /// give ([`parse`](Self::parse) refuses `$`), so only the server makes these events.
    fn command(name: &'static str) -> Self {
        debug_assert!(crate::hub_commands::is_command_name(name));
        Self(Arc::from(name))
    }

    /// The event name of `cmd`.
    pub fn of_command(cmd: &crate::hub_commands::HubCommand) -> Self {
        Self::command(cmd.name())
    }

    /// Whether this is a hub command's name rather than a client event. Checked per delivery, so
    /// only the first byte: no parsed name has a `$` (`parse` refuses it, `from_json` takes only
    /// the command names), and every command name starts with one.
    pub fn is_command(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventName({:?})", &*self.0)
    }
}

/// An event accepted from a publisher, before the broker gives it an offset. Its data is a
/// [`Payload`]: it passed the one payload validation, whichever way it came in.
#[derive(Clone, Debug)]
pub struct Draft {
    pub id: Arc<str>,
    pub channel: ChannelName,
    pub event: EventName,
    pub data: Payload,
    /// Publish time, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The SignalR argument list the publisher chose; `None`: the hub's default.
    pub arguments: Option<HubArguments>,
}

impl Draft {
    /// A new event with a fresh time-ordered id and the current time.
    pub fn new(channel: ChannelName, event: EventName, data: Payload) -> Self {
        // The id's text on the stack: one allocation per event (its `Arc`), not two.
        let mut uuid_text = uuid::Uuid::encode_buffer();
        Self {
            id: Arc::from(
                &*uuid::Uuid::now_v7()
                    .hyphenated()
                    .encode_lower(&mut uuid_text),
            ),
            channel,
            event,
            data,
            ts: now_millis(),
            arguments: None,
        }
    }

    /// This draft, with the SignalR argument list its publisher chose.
    pub fn with_arguments(mut self, arguments: Option<HubArguments>) -> Self {
        self.arguments = arguments;
        self
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A channel's position: the offset of the last event seen, in a named history generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// An event with its place in its channel's history.
pub struct Envelope {
    pub id: Arc<str>,
    pub channel: ChannelName,
    pub event: EventName,
    /// The data as stored: checked when it was published here, but an envelope read from Redis
    /// may predate the payload limits, so nothing that reads it may assume it parses.
    pub data: Arc<RawValue>,
    pub ts: u64,
    /// The channel's sequence number for this event: 1, 2, 3, … within one epoch.
    pub offset: u64,
    /// The history generation; it changes when history is lost.
    pub epoch: Arc<str>,
    /// The node that accepted the publish.
    pub origin: NodeId,
    /// The SignalR argument list the publisher chose; `None`: the hub's default.
    pub arguments: Option<HubArguments>,
    /// WebSocket frames, encoded on first use, one slot per wire format (the codecs own the
    /// slots: [`crate::codec::notification_ws_frame`]).
    frames: [OnceLock<Bytes>; FRAME_SLOTS],
}

impl Envelope {
    pub fn new(draft: Draft, offset: u64, epoch: Arc<str>, origin: NodeId) -> Self {
        Self {
            id: draft.id,
            channel: draft.channel,
            event: draft.event,
            data: draft.data.into_raw(),
            ts: draft.ts,
            offset,
            epoch,
            origin,
            arguments: draft.arguments,
            frames: Default::default(),
        }
    }

    /// The frame cached in `slot`, encoded by `encode` on first use and then shared by every
    /// recipient. `slot` is below [`FRAME_SLOTS`].
    pub fn cached_frame(&self, slot: usize, encode: impl FnOnce(&Envelope) -> Bytes) -> &Bytes {
        self.frames[slot].get_or_init(|| encode(self))
    }

    /// Bytes this event occupies in a connection's outbound queue, for the per-connection byte bound.
    /// Counted before any frame exists, so it is an estimate of the largest format.
    pub fn queued_size(&self) -> usize {
        self.data.get().len()
            + self.arguments.as_ref().map_or(0, HubArguments::size)
            + self.channel.as_str().len()
            + self.event.as_str().len()
            + 160
    }

    /// The serialized envelope (history, Redis).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// Reads an envelope written by [`Envelope::to_json`] (or by another publisher following
    /// the documented Redis wire format).
    pub fn from_json(text: &str) -> Result<Self, EnvelopeError> {
        let rec: EnvelopeRecord = serde_json::from_str(text)?;
        if rec.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(rec.v));
        }
        let channel = ChannelName::parse(&rec.channel)?;
        // A hub command as the server wrote it, or an event name as any publisher may give it.
        let event = match crate::hub_commands::command_name(&rec.event) {
            Some(name) => EventName::command(name),
            None => EventName::parse(&rec.event)?,
        };
        Ok(Self {
            id: Arc::from(rec.id),
            channel,
            event,
            data: Arc::from(rec.data),
            ts: rec.ts,
            offset: rec.offset,
            epoch: Arc::from(rec.epoch),
            origin: NodeId(Arc::from(rec.origin)),
            arguments: rec.arguments.and_then(HubArguments::from_envelope),
            frames: Default::default(),
        })
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("event", &self.event)
            .field("offset", &self.offset)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = if self.arguments.is_some() { 10 } else { 9 };
        let mut st = s.serialize_struct("Envelope", fields)?;
        st.serialize_field("v", &ENVELOPE_VERSION)?;
        st.serialize_field("id", &*self.id)?;
        st.serialize_field("channel", &self.channel)?;
        st.serialize_field("event", &self.event)?;
        st.serialize_field("data", &*self.data)?;
        st.serialize_field("ts", &self.ts)?;
        st.serialize_field("offset", &self.offset)?;
        st.serialize_field("epoch", &*self.epoch)?;
        st.serialize_field("origin", &self.origin)?;
        if let Some(arguments) = &self.arguments {
            st.serialize_field(ARGUMENTS_FIELD, arguments)?;
        }
        st.end()
    }
}

#[derive(Deserialize)]
struct EnvelopeRecord {
    v: u8,
    id: String,
    channel: String,
    event: String,
    data: Box<RawValue>,
    ts: u64,
    offset: u64,
    epoch: String,
    origin: String,
    #[serde(default)]
    arguments: Option<Box<RawValue>>,
}

/// A serialized envelope that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("envelope channel: {0}")]
    Channel(#[from] crate::channel::ChannelError),
    #[error("envelope event: {0}")]
    Event(#[from] BadEventName),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Envelope {
        let draft = Draft {
            id: Arc::from("e1"),
            channel: ChannelName::parse("tenant:acme:broadcast").unwrap(),
            event: EventName::parse("NewOrder").unwrap(),
            data: Payload::built(&serde_json::json!({"orderId": "o1", "total": 12.5})),
            ts: 1_700_000_000_123,
            arguments: None,
        };
        Envelope::new(draft, 7, Arc::from("ep1"), NodeId(Arc::from("n1")))
    }

    #[test]
    fn round_trips_through_json() {
        let env = sample();
        let text = env.to_json();
        assert_eq!(
            text,
            r#"{"v":1,"id":"e1","channel":"tenant:acme:broadcast","event":"NewOrder","data":{"orderId":"o1","total":12.5},"ts":1700000000123,"offset":7,"epoch":"ep1","origin":"n1"}"#
        );
        let back = Envelope::from_json(&text).unwrap();
        assert_eq!(back.to_json(), text);
    }

    #[test]
    fn arguments_travel_at_the_end_and_older_readers_ignore_them() {
        let mut env = sample();
        env.arguments = Some(HubArguments::built(&("c1", "bob")));
        let text = env.to_json();
        assert!(
            text.ends_with(r#","origin":"n1","arguments":["c1","bob"]}"#),
            "{text}"
        );
        let back = Envelope::from_json(&text).unwrap();
        assert_eq!(back.arguments, env.arguments);
        assert_eq!(back.to_json(), text);
        // What a node without the field reads: the same envelope, the same version.
        #[derive(Deserialize)]
        struct Older {
            v: u8,
            offset: u64,
        }
        let older: Older = serde_json::from_str(&text).unwrap();
        assert_eq!((older.v, older.offset), (ENVELOPE_VERSION, 7));
        env.arguments = Some(HubArguments::Data);
        let back = Envelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back.arguments, Some(HubArguments::Data));
    }

    #[test]
    fn refuses_bad_envelopes() {
        assert!(Envelope::from_json("{").is_err());
        let wrong_version = sample().to_json().replace(r#""v":1"#, r#""v":9"#);
        assert!(matches!(
            Envelope::from_json(&wrong_version),
            Err(EnvelopeError::Version(9))
        ));
        let bad_channel = sample().to_json().replace("tenant:acme:broadcast", "nope");
        assert!(matches!(
            Envelope::from_json(&bad_channel),
            Err(EnvelopeError::Channel(_))
        ));
    }

    #[test]
    fn frames_are_encoded_once_and_shared() {
        let env = sample();
        let a = env.cached_frame(0, |_| Bytes::from_static(b"one")).clone();
        let b = env.cached_frame(0, |_| Bytes::from_static(b"two")).clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a re-encoding");
    }

    #[test]
    fn event_names_are_checked() {
        assert!(EventName::parse("OrderStatusChanged").is_ok());
        assert!(EventName::parse("a.b-c_d").is_ok());
        assert!(EventName::parse("").is_err());
        assert!(EventName::parse("bad name").is_err());
        assert!(EventName::parse(&"x".repeat(MAX_EVENT_LEN + 1)).is_err());
    }
}
