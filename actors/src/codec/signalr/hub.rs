//! The hub's methods: which invocation targets map onto channel operations (and with which
//! arguments), and how each [`Outcome`] becomes a completion result. Targets match
//! case-insensitively, as ASP.NET Core's hub dispatcher does.
//!
//! | target | arguments | request |
//! | --- | --- | --- |
//! | `Ping` | none | [`Request::Ping`] |
//! | `JoinOrderChannel` | `orderId` (string or number) | subscribe `tenant:{t}:order:{orderId}` |
//! | `LeaveOrderChannel` | `orderId` | unsubscribe from it |
//! | `Subscribe` | `channel`, optional `since` (`{offset, epoch}` or null) | [`Request::Subscribe`] |
//! | `Unsubscribe` | `channel` | [`Request::Unsubscribe`] |
//! | `Publish` | `channel`, `event`, `data` (any JSON) | [`Request::Publish`] |
//! | anything else | any | [`Request::Invoke`], handed to the node's `HubMethods` (the chat methods) |

use std::sync::Arc;

use serde_json::{json, Value};

use super::message::Completion;
use crate::codec::{JsonArg, Outcome, Request};
use crate::codes::ErrorCode;
use crate::envelope::StreamPosition;
use crate::identity::Identity;
use crate::ids::validate_segment;

/// Why an invocation of a known method cannot become a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// Wrong number or types of arguments; the message gives the signature.
    #[error("{0}")]
    BadArguments(String),
    /// An `orderId` that cannot be part of a channel name.
    #[error("{0}")]
    BadChannel(String),
    /// The caller's identity does not allow the call; the message names the rule.
    #[error("{0}")]
    Forbidden(String),
}

impl HubError {
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::BadArguments(_) => ErrorCode::BadRequest,
            HubError::BadChannel(_) => ErrorCode::BadChannel,
            HubError::Forbidden(_) => ErrorCode::Forbidden,
        }
    }
}

/// The methods the codec maps itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Ping,
    JoinOrderChannel,
    LeaveOrderChannel,
    Subscribe,
    Unsubscribe,
    Publish,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::Ping,
        Method::JoinOrderChannel,
        Method::LeaveOrderChannel,
        Method::Subscribe,
        Method::Unsubscribe,
        Method::Publish,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Ping => "Ping",
            Method::JoinOrderChannel => "JoinOrderChannel",
            Method::LeaveOrderChannel => "LeaveOrderChannel",
            Method::Subscribe => "Subscribe",
            Method::Unsubscribe => "Unsubscribe",
            Method::Publish => "Publish",
        }
    }

    /// What the method expects, for error messages.
    fn expects(self) -> &'static str {
        match self {
            Method::Ping => "no arguments",
            Method::JoinOrderChannel | Method::LeaveOrderChannel => "1 argument (orderId: string)",
            Method::Subscribe => {
                "1 or 2 arguments (channel: string, since?: {offset: number, epoch: string})"
            }
            Method::Unsubscribe => "1 argument (channel: string)",
            Method::Publish => "3 arguments (channel: string, event: string, data: any)",
        }
    }

    fn lookup(target: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(target))
    }

    fn bad_arguments(self) -> HubError {
        HubError::BadArguments(format!("{} expects {}", self.name(), self.expects()))
    }
}

/// Turns an invocation into a request for the connection. `Publish`'s `data` stays JSON text for the
/// connection's payload check; the other arguments of the methods mapped here are small and parsed.
pub fn request(identity: &Identity, target: &str, args: Vec<JsonArg>) -> Result<Request, HubError> {
    let Some(method) = Method::lookup(target) else {
        return Ok(Request::Invoke {
            method: target.to_owned(),
            args,
        });
    };
    let bad = || method.bad_arguments();
    let mut args = args.into_iter();
    let (a, b, c, extra) = (args.next(), args.next(), args.next(), args.next());
    if extra.is_some() {
        return Err(bad());
    }
    let value = |arg: Option<JsonArg>| -> Result<Option<Value>, HubError> {
        arg.map(|a| serde_json::from_str(a.get()).map_err(|_| bad()))
            .transpose()
    };
    if method == Method::Publish {
        return match (value(a)?, value(b)?, c) {
            (Some(Value::String(channel)), Some(Value::String(event)), Some(data)) => {
                Ok(Request::Publish {
                    channel,
                    event,
                    data: Arc::from(data.into_raw()),
                })
            }
            _ => Err(bad()),
        };
    }
    match (method, value(a)?, value(b)?, value(c)?) {
        (Method::Ping, None, None, None) => Ok(Request::Ping),
        (Method::JoinOrderChannel, Some(order), None, None) => Ok(Request::Subscribe {
            channel: order_channel(identity, method, order)?,
            since: None,
        }),
        (Method::LeaveOrderChannel, Some(order), None, None) => Ok(Request::Unsubscribe {
            channel: order_channel(identity, method, order)?,
        }),
        (Method::Subscribe, Some(Value::String(channel)), since, None) => {
            let since = match since {
                None | Some(Value::Null) => None,
                Some(v) => Some(serde_json::from_value::<StreamPosition>(v).map_err(|_| bad())?),
            };
            Ok(Request::Subscribe { channel, since })
        }
        (Method::Unsubscribe, Some(Value::String(channel)), None, None) => {
            Ok(Request::Unsubscribe { channel })
        }
        _ => Err(bad()),
    }
}

/// `tenant:{t}:order:{orderId}` for the caller's tenant.
fn order_channel(identity: &Identity, method: Method, order: Value) -> Result<String, HubError> {
    let order_id = match order {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => return Err(method.bad_arguments()),
    };
    validate_segment(&order_id)
        .map_err(|e| HubError::BadChannel(format!("{}: orderId {e}", method.name())))?;
    let Some(tenant) = &identity.tenant else {
        return Err(HubError::Forbidden(format!(
            "{}: order channels (tenant:{{t}}:order:{{orderId}}) belong to a tenant, and this \
             token carries no tenantKey",
            method.name()
        )));
    };
    Ok(format!("tenant:{tenant}:order:{order_id}"))
}

/// The completion answering a request.
pub fn completion(outcome: Outcome) -> Completion {
    match outcome {
        Outcome::Pong => Completion::Result(Value::Bool(true)),
        Outcome::Subscribed {
            channel,
            offset,
            epoch,
            recovered,
            subscription_id: _,
        } => {
            let mut result = json!({"channel": channel, "offset": offset, "epoch": &*epoch});
            if let Some(r) = recovered {
                result["recovered"] = Value::Bool(r);
            }
            Completion::Result(result)
        }
        Outcome::Unsubscribed { .. } | Outcome::Done => Completion::Void,
        Outcome::Published { id, offset, epoch } => {
            Completion::Result(json!({"id": &*id, "offset": offset, "epoch": &*epoch}))
        }
        Outcome::Value(v) => Completion::Result(v),
        Outcome::SubscriptionError { reason, .. } => Completion::Error(reason),
        Outcome::Error { message, .. } => Completion::Error(message),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Role;
    use crate::ids::{TenantKey, UserId};

    pub(crate) fn staff(tenant: Option<&str>) -> Identity {
        Identity {
            user_id: UserId::parse("u1").unwrap(),
            tenant: tenant.map(|t| TenantKey::parse(t).unwrap()),
            role: if tenant.is_some() {
                Role::Staff
            } else {
                Role::Service
            },
            session_id: None,
            expires_at: None,
            issuer: None,
        }
    }

    fn map(target: &str, args: Value) -> Result<Request, HubError> {
        let Value::Array(args) = args else { panic!() };
        let args = args
            .iter()
            .map(|a| JsonArg(serde_json::value::to_raw_value(a).unwrap()))
            .collect();
        request(&staff(Some("acme")), target, args)
    }

    #[test]
    fn order_channels_use_the_callers_tenant() {
        for target in ["JoinOrderChannel", "joinorderchannel", "JOINORDERCHANNEL"] {
            assert!(matches!(
                map(target, json!(["o-1"])),
                Ok(Request::Subscribe { channel, since: None }) if channel == "tenant:acme:order:o-1"
            ));
        }
        assert!(matches!(
            map("JoinOrderChannel", json!([42])),
            Ok(Request::Subscribe { channel, .. }) if channel == "tenant:acme:order:42"
        ));
        assert!(matches!(
            map("leaveOrderChannel", json!(["o-1"])),
            Ok(Request::Unsubscribe { channel }) if channel == "tenant:acme:order:o-1"
        ));
    }

    #[test]
    fn order_channels_need_a_tenant_and_a_clean_id() {
        let o1 = JsonArg(serde_json::value::to_raw_value("o1").unwrap());
        let e = request(&staff(None), "JoinOrderChannel", vec![o1]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Forbidden);
        assert!(e.to_string().contains("tenantKey"), "{e}");
        let e = map("JoinOrderChannel", json!(["a:b"])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadChannel);
        let e = map("JoinOrderChannel", json!([""])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadChannel);
    }

    #[test]
    fn wrong_arguments_name_the_signature() {
        for (target, args) in [
            ("JoinOrderChannel", json!([])),
            ("JoinOrderChannel", json!(["a", "b"])),
            ("JoinOrderChannel", json!([{"id": 1}])),
            ("JoinOrderChannel", json!([null])),
            ("LeaveOrderChannel", json!([true])),
            ("Ping", json!([1])),
            ("Subscribe", json!([])),
            ("Subscribe", json!([1])),
            ("Subscribe", json!(["c", {"offset": "x"}])),
            ("Subscribe", json!(["c", null, 3])),
            ("Unsubscribe", json!(["c", "d"])),
            ("Publish", json!(["c", "E"])),
            ("Publish", json!(["c", 1, {}])),
            ("Publish", json!(["c", "E", {}, 4])),
        ] {
            let e = map(target, args.clone()).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{target} {args}");
        }
        assert_eq!(
            map("JoinOrderChannel", json!([])).unwrap_err().to_string(),
            "JoinOrderChannel expects 1 argument (orderId: string)"
        );
    }

    #[test]
    fn channel_methods_and_ping() {
        assert!(matches!(map("ping", json!([])), Ok(Request::Ping)));
        assert!(matches!(
            map("Subscribe", json!(["tenant:acme:broadcast"])),
            Ok(Request::Subscribe { channel, since: None }) if channel == "tenant:acme:broadcast"
        ));
        assert!(matches!(
            map("subscribe", json!(["user:u1", {"offset": 4, "epoch": "e"}])),
            Ok(Request::Subscribe {
                since: Some(StreamPosition { offset: 4, .. }),
                ..
            })
        ));
        assert!(matches!(
            map("UNSUBSCRIBE", json!(["user:u1"])),
            Ok(Request::Unsubscribe { channel }) if channel == "user:u1"
        ));
        match map("publish", json!(["c", "NewOrder", {"a": [1, 2]}])) {
            Ok(Request::Publish {
                channel,
                event,
                data,
            }) => {
                assert_eq!((channel.as_str(), event.as_str()), ("c", "NewOrder"));
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_targets_are_invocations_for_the_session() {
        assert!(matches!(
            map("SendMessage", json!(["conv-1", "hi"])),
            Ok(Request::Invoke { method, args }) if method == "SendMessage" && args.len() == 2
        ));
    }

    #[test]
    fn outcomes_become_completions() {
        assert_eq!(completion(Outcome::Pong), Completion::Result(json!(true)));
        assert_eq!(
            completion(Outcome::Subscribed {
                channel: "c".into(),
                subscription_id: 3,
                offset: 9,
                epoch: Arc::from("e"),
                recovered: None,
            }),
            Completion::Result(json!({"channel": "c", "offset": 9, "epoch": "e"}))
        );
        assert_eq!(
            completion(Outcome::Subscribed {
                channel: "c".into(),
                subscription_id: 3,
                offset: 9,
                epoch: Arc::from("e"),
                recovered: Some(false),
            }),
            Completion::Result(
                json!({"channel": "c", "offset": 9, "epoch": "e", "recovered": false})
            )
        );
        assert_eq!(
            completion(Outcome::Unsubscribed {
                channel: "c".into()
            }),
            Completion::Void
        );
        assert_eq!(completion(Outcome::Done), Completion::Void);
        assert_eq!(
            completion(Outcome::Published {
                id: Arc::from("i"),
                offset: 1,
                epoch: Arc::from("e"),
            }),
            Completion::Result(json!({"id": "i", "offset": 1, "epoch": "e"}))
        );
        assert_eq!(
            completion(Outcome::Value(json!([1]))),
            Completion::Result(json!([1]))
        );
        assert_eq!(
            completion(Outcome::SubscriptionError {
                channel: "c".into(),
                code: ErrorCode::Forbidden,
                reason: "not yours".into(),
            }),
            Completion::Error("not yours".into())
        );
        assert_eq!(
            completion(Outcome::Error {
                code: ErrorCode::BadRequest,
                message: "bad".into(),
            }),
            Completion::Error("bad".into())
        );
    }
}
