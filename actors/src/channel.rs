//! The channel grammar: every channel name is parsed once into a typed [`Channel`].
//!
//! A malformed or unknown name is an error, never a new channel. The grammar (DESIGN.md):
//!
//! | name | kind |
//! | --- | --- |
//! | `tenant:{t}:broadcast` | every member of the tenant |
//! | `tenant:{t}:admins`, `tenant:{t}:admins:orders`, `tenant:{t}:admins:sessions` | Admin/Staff |
//! | `tenant:{t}:activity` | Admin/Staff: the tenant's live activity stream |
//! | `tenant:{t}:customer:{userId}` | one customer |
//! | `tenant:{t}:order:{orderId}` | one order's watchers |
//! | `tenant:{t}:user:{userId}` | one member of the tenant on all connections (chat, personal delivery) |
//! | `session:{sessionId}` | one dining session |
//! | `user:{userId}` | one user id on all connections, whatever the tenant (global) |
//! | `conversation:{id}` | chat participants |
//! | `connection:{connectionId}` | one SignalR hub connection (its negotiated `connectionId`): joined by that connection alone, addressed by the Azure-compatible REST API ([`crate::hub_commands`]) |
//! | `notifications:{EntityType}:{EntityId}` | database change feed |
//! | `global:broadcast` | everyone |

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::ids::{validate_segment, SegmentError, TenantKey};

/// How every change-feed channel name begins (`notifications:{EntityType}:{EntityId}`).
const NOTIFICATIONS_PREFIX: &str = "notifications:";

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 255;

/// What a channel name means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    TenantBroadcast {
        tenant: TenantKey,
    },
    TenantAdmins {
        tenant: TenantKey,
    },
    TenantAdminsOrders {
        tenant: TenantKey,
    },
    TenantAdminsSessions {
        tenant: TenantKey,
    },
    TenantActivity {
        tenant: TenantKey,
    },
    TenantCustomer {
        tenant: TenantKey,
        user: String,
    },
    TenantOrder {
        tenant: TenantKey,
        order: String,
    },
    /// One member of a tenant: what is addressed to that person (chat messages, partner
    /// presence). `user:{userId}` names a user id in every tenant at once; this one does not.
    TenantUser {
        tenant: TenantKey,
        user: String,
    },
    Session {
        session: String,
    },
    User {
        user: String,
    },
    Conversation {
        id: String,
    },
    /// One SignalR hub connection, by the `connectionId` its client knows: what the Azure-style
    /// REST API sends to that connection, and the commands it carries out (join, leave, close).
    Connection {
        id: String,
    },
    Notifications {
        entity_type: String,
        entity_id: String,
    },
    GlobalBroadcast,
}

impl Channel {
    /// The tenant this channel belongs to, if it is a tenant channel.
    pub fn tenant(&self) -> Option<&TenantKey> {
        match self {
            Channel::TenantBroadcast { tenant }
            | Channel::TenantAdmins { tenant }
            | Channel::TenantAdminsOrders { tenant }
            | Channel::TenantAdminsSessions { tenant }
            | Channel::TenantActivity { tenant }
            | Channel::TenantCustomer { tenant, .. }
            | Channel::TenantOrder { tenant, .. }
            | Channel::TenantUser { tenant, .. } => Some(tenant),
            _ => None,
        }
    }

    /// The name of an entity's change-feed channel, `notifications:{EntityType}:{EntityId}`: the
    /// one place that spells it. Not validated yet: parse it ([`ChannelName::parse`]).
    pub fn notifications_name(entity_type: &str, entity_id: &str) -> String {
        format!("{NOTIFICATIONS_PREFIX}{entity_type}:{entity_id}")
    }

    /// The entity type and id a change-feed channel name spells, the inverse of
    /// [`notifications_name`](Self::notifications_name). Not validated: it also reads a name that
    /// does not parse (a refused subscription's, to tell the client which entity was refused).
    pub fn entity_of_name(name: &str) -> Option<(&str, &str)> {
        name.strip_prefix(NOTIFICATIONS_PREFIX)?.split_once(':')
    }

    /// The canonical name of this channel.
    pub fn to_name(&self) -> String {
        match self {
            Channel::TenantBroadcast { tenant } => format!("tenant:{tenant}:broadcast"),
            Channel::TenantAdmins { tenant } => format!("tenant:{tenant}:admins"),
            Channel::TenantAdminsOrders { tenant } => format!("tenant:{tenant}:admins:orders"),
            Channel::TenantAdminsSessions { tenant } => format!("tenant:{tenant}:admins:sessions"),
            Channel::TenantActivity { tenant } => format!("tenant:{tenant}:activity"),
            Channel::TenantCustomer { tenant, user } => format!("tenant:{tenant}:customer:{user}"),
            Channel::TenantOrder { tenant, order } => format!("tenant:{tenant}:order:{order}"),
            Channel::TenantUser { tenant, user } => format!("tenant:{tenant}:user:{user}"),
            Channel::Session { session } => format!("session:{session}"),
            Channel::User { user } => format!("user:{user}"),
            Channel::Conversation { id } => format!("conversation:{id}"),
            Channel::Connection { id } => format!("connection:{id}"),
            Channel::Notifications {
                entity_type,
                entity_id,
            } => Channel::notifications_name(entity_type, entity_id),
            Channel::GlobalBroadcast => "global:broadcast".to_owned(),
        }
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} characters")]
    TooLong,
    #[error("unknown channel pattern {0:?}; see the channel table in docs/protocol.md")]
    UnknownPattern(String),
    #[error("channel segment {segment:?} {reason}")]
    BadSegment {
        segment: String,
        reason: SegmentError,
    },
}

/// A parsed channel name: the canonical text (shared, cheap to clone) plus its meaning.
///
/// Equality and hashing use the text only, so it can key maps on the fan-out path.
#[derive(Clone)]
pub struct ChannelName {
    name: Arc<str>,
    kind: Arc<Channel>,
}

impl ChannelName {
    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        let kind = parse_channel(name)?;
        Ok(Self {
            name: Arc::from(name),
            kind: Arc::new(kind),
        })
    }

    /// Builds the name of a channel from its meaning.
    pub fn from_channel(kind: Channel) -> Self {
        Self {
            name: Arc::from(kind.to_name()),
            kind: Arc::new(kind),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &Channel {
        &self.kind
    }

    pub fn tenant(&self) -> Option<&TenantKey> {
        self.kind.tenant()
    }
}

impl PartialEq for ChannelName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ChannelName {}

impl Hash for ChannelName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelName({:?})", &*self.name)
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

fn segment(s: &str) -> Result<String, ChannelError> {
    validate_segment(s).map_err(|reason| ChannelError::BadSegment {
        segment: s.to_owned(),
        reason,
    })?;
    Ok(s.to_owned())
}

fn tenant(s: &str) -> Result<TenantKey, ChannelError> {
    TenantKey::parse(s).map_err(|reason| ChannelError::BadSegment {
        segment: s.to_owned(),
        reason,
    })
}

fn parse_channel(name: &str) -> Result<Channel, ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    let parts: Vec<&str> = name.split(':').collect();
    let unknown = || ChannelError::UnknownPattern(name.to_owned());
    let channel = match parts.as_slice() {
        ["tenant", t, "broadcast"] => Channel::TenantBroadcast { tenant: tenant(t)? },
        ["tenant", t, "admins"] => Channel::TenantAdmins { tenant: tenant(t)? },
        ["tenant", t, "admins", "orders"] => Channel::TenantAdminsOrders { tenant: tenant(t)? },
        ["tenant", t, "admins", "sessions"] => Channel::TenantAdminsSessions { tenant: tenant(t)? },
        ["tenant", t, "activity"] => Channel::TenantActivity { tenant: tenant(t)? },
        ["tenant", t, "customer", u] => Channel::TenantCustomer {
            tenant: tenant(t)?,
            user: segment(u)?,
        },
        ["tenant", t, "order", o] => Channel::TenantOrder {
            tenant: tenant(t)?,
            order: segment(o)?,
        },
        ["tenant", t, "user", u] => Channel::TenantUser {
            tenant: tenant(t)?,
            user: segment(u)?,
        },
        ["session", s] => Channel::Session {
            session: segment(s)?,
        },
        ["user", u] => Channel::User { user: segment(u)? },
        ["conversation", c] => Channel::Conversation { id: segment(c)? },
        ["connection", c] => Channel::Connection { id: segment(c)? },
        ["notifications", ty, id] => Channel::Notifications {
            entity_type: segment(ty)?,
            entity_id: segment(id)?,
        },
        ["global", "broadcast"] => Channel::GlobalBroadcast,
        _ => return Err(unknown()),
    };
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantKey {
        TenantKey::parse(s).unwrap()
    }

    #[test]
    fn every_pattern_parses_and_round_trips() {
        let cases = [
            (
                "tenant:acme:broadcast",
                Channel::TenantBroadcast { tenant: t("acme") },
            ),
            (
                "tenant:acme:admins",
                Channel::TenantAdmins { tenant: t("acme") },
            ),
            (
                "tenant:acme:admins:orders",
                Channel::TenantAdminsOrders { tenant: t("acme") },
            ),
            (
                "tenant:acme:admins:sessions",
                Channel::TenantAdminsSessions { tenant: t("acme") },
            ),
            (
                "tenant:acme:activity",
                Channel::TenantActivity { tenant: t("acme") },
            ),
            (
                "tenant:acme:customer:u1",
                Channel::TenantCustomer {
                    tenant: t("acme"),
                    user: "u1".into(),
                },
            ),
            (
                "tenant:acme:order:o-9",
                Channel::TenantOrder {
                    tenant: t("acme"),
                    order: "o-9".into(),
                },
            ),
            (
                "tenant:acme:user:u1",
                Channel::TenantUser {
                    tenant: t("acme"),
                    user: "u1".into(),
                },
            ),
            (
                "session:s1",
                Channel::Session {
                    session: "s1".into(),
                },
            ),
            (
                "user:alice",
                Channel::User {
                    user: "alice".into(),
                },
            ),
            ("conversation:42", Channel::Conversation { id: "42".into() }),
            (
                "notifications:Team:team-123",
                Channel::Notifications {
                    entity_type: "Team".into(),
                    entity_id: "team-123".into(),
                },
            ),
            ("global:broadcast", Channel::GlobalBroadcast),
        ];
        for (name, expected) in cases {
            let parsed = ChannelName::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.kind(), &expected, "{name}");
            assert_eq!(expected.to_name(), name);
            assert_eq!(ChannelName::from_channel(expected), parsed);
        }
    }

    #[test]
    fn malformed_names_are_errors_not_new_channels() {
        for bad in [
            "tenant:acme",
            "tenant:acme:broadcast:extra",
            "tenant::broadcast",
            "tenant:acme:customer:",
            "tenant:acme:order",
            "tenant:acme:user",
            "tenant:acme:user:",
            "tenant::user:u1",
            "tenant:acme:user:u1:extra",
            "tenant:acme:user:a b",
            "tenant:acme:users:u1",
            "orders:1",
            "global",
            "global:everyone",
            "session:",
            "user:a b",
            "TENANT:acme:broadcast",
            ":",
        ] {
            assert!(
                ChannelName::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(ChannelName::parse(""), Err(ChannelError::Empty));
        assert_eq!(
            ChannelName::parse(&format!("user:{}", "x".repeat(300))),
            Err(ChannelError::TooLong)
        );
    }

    #[test]
    fn entity_names_read_back_even_when_they_do_not_parse() {
        let name = Channel::notifications_name("Team", "team-123");
        assert_eq!(Channel::entity_of_name(&name), Some(("Team", "team-123")));
        assert_eq!(
            Channel::entity_of_name("notifications:Team:a b"),
            Some(("Team", "a b"))
        );
        assert_eq!(Channel::entity_of_name("user:u1"), None);
        assert_eq!(Channel::entity_of_name("notifications:Team"), None);
    }

    #[test]
    fn tenant_is_known_for_tenant_channels_only() {
        assert_eq!(
            ChannelName::parse("tenant:acme:order:1").unwrap().tenant(),
            Some(&t("acme"))
        );
        assert_eq!(
            ChannelName::parse("tenant:acme:user:1").unwrap().tenant(),
            Some(&t("acme"))
        );
        assert_eq!(ChannelName::parse("user:1").unwrap().tenant(), None);
    }

    #[test]
    fn one_user_id_in_two_tenants_has_two_personal_channels() {
        let pets = ChannelName::from_channel(Channel::TenantUser {
            tenant: t("pets"),
            user: "bob".into(),
        });
        let other = ChannelName::parse("tenant:other:user:bob").unwrap();
        assert_eq!(pets.as_str(), "tenant:pets:user:bob");
        assert_ne!(pets, other);
        assert_ne!(pets, ChannelName::parse("user:bob").unwrap());
    }
}
