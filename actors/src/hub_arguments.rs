//! What a SignalR client's event invocation carries as its argument list, chosen by the back end
//! per publish and travelling with the event (in the envelope, across nodes).
//!
//! The seeds disagree: the restaurant front end (seed 001) reads every event as the notification
//! message `{id, type, tenantKey, channel, data, timestamp, offset}`; the tenant pages (seed 002)
//! and the chat store (seed 003) read the published object itself (`data => data.tenantName`);
//! the chat hub's typing and presence events are positional (`SendAsync("UserStartedTyping",
//! conversationId, userId)`). So a publish may say `"arguments"`:
//!
//! | value | the client's handler receives |
//! | --- | --- |
//! | `"message"` | `(message)`: the notification message |
//! | `"data"` | `(data)`: the published data itself |
//! | `[a, b, …]` | `(a, b, …)`: exactly these arguments |
//!
//! A publish that says nothing gets the rule of [`crate::chat_events::sent_bare`] (chat events on
//! chat channels carry their data), then the default of the hub path the client connected to
//! (`signalr.default_arguments`, [`ArgumentsDefault`]). The native protocol is not affected: its
//! `notification` frame always carries `data`.

use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::payload::{Payload, PayloadError};

/// The `arguments` value naming the notification message.
pub const MESSAGE: &str = "message";
/// The `arguments` value naming the bare data.
pub const DATA: &str = "data";

/// A publisher's choice of the SignalR argument list (see the module docs).
#[derive(Clone, Debug)]
pub enum HubArguments {
    /// `[notification message]`.
    Message,
    /// `[data]`.
    Data,
    /// This JSON array is the argument list.
    List(Arc<RawValue>),
}

/// Lists compare by their JSON text.
impl PartialEq for HubArguments {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HubArguments::List(a), HubArguments::List(b)) => a.get() == b.get(),
            (HubArguments::Message, HubArguments::Message) => true,
            (HubArguments::Data, HubArguments::Data) => true,
            _ => false,
        }
    }
}

/// Why a publisher's `arguments` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadArguments {
    #[error("arguments must be \"message\", \"data\" or an array of the invocation's arguments")]
    Shape,
    /// The argument list is judged like event data (`payload.max_depth`, `payload.max_bytes`).
    #[error("arguments: {0}")]
    Payload(#[from] PayloadError),
}

/// The first byte of JSON text that is not whitespace.
fn first_byte(text: &str) -> Option<u8> {
    text.bytes().find(|b| !b.is_ascii_whitespace())
}

impl HubArguments {
    /// Reads the `arguments` a publisher wrote (REST body, ingest draft): `"message"`, `"data"`,
    /// or an array, which `check` (the payload limits) must accept as it accepts data.
    pub fn read(
        raw: Box<RawValue>,
        check: impl FnOnce(Box<RawValue>) -> Result<Payload, PayloadError>,
    ) -> Result<Self, BadArguments> {
        match first_byte(raw.get()) {
            Some(b'[') => Ok(HubArguments::List(check(raw)?.into_raw())),
            Some(b'"') => match serde_json::from_str::<&str>(raw.get()) {
                Ok(MESSAGE) => Ok(HubArguments::Message),
                Ok(DATA) => Ok(HubArguments::Data),
                _ => Err(BadArguments::Shape),
            },
            _ => Err(BadArguments::Shape),
        }
    }

    /// Reads the `arguments` of an envelope (Redis, history). An envelope is trusted as it was
    /// stored, and a form this version does not know (written by a newer node) is `None`: the
    /// event is still delivered, with the hub's default.
    pub fn from_envelope(raw: Box<RawValue>) -> Option<Self> {
        match first_byte(raw.get()) {
            Some(b'[') => Some(HubArguments::List(Arc::from(raw))),
            _ => match serde_json::from_str::<&str>(raw.get()) {
                Ok(MESSAGE) => Some(HubArguments::Message),
                Ok(DATA) => Some(HubArguments::Data),
                _ => {
                    log::debug!("envelope arguments {} not known here", raw.get());
                    None
                }
            },
        }
    }

    /// An explicit argument list the server builds itself (chat events): a fixed shape.
    pub fn built(args: &impl Serialize) -> Self {
        HubArguments::List(Payload::built(args).into_raw())
    }

    /// The argument list's JSON text, when it is one.
    pub fn list(&self) -> Option<&RawValue> {
        match self {
            HubArguments::List(raw) => Some(raw),
            _ => None,
        }
    }

    /// Bytes the choice adds to an envelope (for the outbound queue's estimate).
    pub fn size(&self) -> usize {
        self.list().map_or(0, |l| l.get().len())
    }
}

impl Serialize for HubArguments {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HubArguments::Message => s.serialize_str(MESSAGE),
            HubArguments::Data => s.serialize_str(DATA),
            HubArguments::List(raw) => raw.serialize(s),
        }
    }
}

/// A hub path's argument list for events whose publisher chose none
/// (`[signalr] default_arguments`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgumentsDefault {
    /// The notification message (seed 001's front end).
    #[default]
    Message,
    /// The data itself (seeds 002 and 003).
    Data,
}

/// What one envelope's SignalR invocation carries, once the hub's default is applied: the two
/// encodings an envelope may need per format (so two frame-cache slots per SignalR format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgumentsShape {
    /// `[notification message]`.
    Message,
    /// The envelope's own arguments: its explicit list, or `[data]`.
    Own,
}

impl ArgumentsShape {
    /// The shape of an event with `chosen` arguments for a client of a hub with `default`;
    /// `chat_bare` is [`crate::chat_events::sent_bare`] for the event.
    pub fn resolve(
        chosen: Option<&HubArguments>,
        chat_bare: bool,
        default: ArgumentsDefault,
    ) -> Self {
        match chosen {
            Some(HubArguments::Message) => ArgumentsShape::Message,
            Some(HubArguments::Data | HubArguments::List(_)) => ArgumentsShape::Own,
            None if chat_bare || default == ArgumentsDefault::Data => ArgumentsShape::Own,
            None => ArgumentsShape::Message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadLimits;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn reads_the_three_forms_and_refuses_others() {
        let limits = PayloadLimits {
            max_depth: 3,
            max_bytes: 100,
        };
        let check = |r: Box<RawValue>| limits.check(r);
        assert_eq!(
            HubArguments::read(raw(r#""message""#), check),
            Ok(HubArguments::Message)
        );
        assert_eq!(
            HubArguments::read(raw(r#" "data""#), check),
            Ok(HubArguments::Data)
        );
        let list = HubArguments::read(raw(r#"["c1","bob"]"#), check).unwrap();
        assert_eq!(list.list().unwrap().get(), r#"["c1","bob"]"#);
        for bad in [r#""Data""#, r#""nope""#, "{}", "1", "null"] {
            assert_eq!(
                HubArguments::read(raw(bad), check),
                Err(BadArguments::Shape),
                "{bad}"
            );
        }
        assert!(matches!(
            HubArguments::read(raw("[[[[1]]]]"), check),
            Err(BadArguments::Payload(PayloadError::TooDeep { .. }))
        ));
    }

    #[test]
    fn envelopes_tolerate_forms_from_newer_nodes() {
        assert_eq!(
            HubArguments::from_envelope(raw(r#""data""#)),
            Some(HubArguments::Data)
        );
        assert_eq!(HubArguments::from_envelope(raw(r#""named""#)), None);
        assert_eq!(
            serde_json::to_string(&HubArguments::built(&("c1", "bob"))).unwrap(),
            r#"["c1","bob"]"#
        );
    }

    #[test]
    fn the_publisher_then_the_chat_rule_then_the_hub_decide() {
        use ArgumentsDefault as D;
        use ArgumentsShape as S;
        let list = HubArguments::built(&["x"]);
        assert_eq!(
            S::resolve(Some(&HubArguments::Message), true, D::Data),
            S::Message
        );
        assert_eq!(
            S::resolve(Some(&HubArguments::Data), false, D::Message),
            S::Own
        );
        assert_eq!(S::resolve(Some(&list), false, D::Message), S::Own);
        assert_eq!(S::resolve(None, true, D::Message), S::Own);
        assert_eq!(S::resolve(None, false, D::Data), S::Own);
        assert_eq!(S::resolve(None, false, D::Message), S::Message);
    }
}
