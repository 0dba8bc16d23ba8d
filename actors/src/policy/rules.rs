//! The channel table (DESIGN.md): who may subscribe to and publish on which channel, and the
//! channels a hub connection joins on connect.
//!
//! [`decide`] is the one function of the verified [`Identity`], the parsed [`Channel`] and the
//! [`Action`]. Channels whose rule needs a database row (conversations, entity notifications)
//! answer [`Decision::Lookup`]; [`super::access::check`] then asks the node's
//! [`super::ChannelAuthorizer`].

use crate::channel::{Channel, ChannelName};
use crate::identity::{Identity, Role};

/// What the caller wants to do with the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

/// A refusal, naming the rule that refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct RuleViolation {
    /// Human-readable statement of the rule, e.g. "tenant:{t}:admins: Admin or Staff of tenant t only".
    pub rule: String,
}

impl RuleViolation {
    fn new(rule: impl Into<String>) -> Self {
        Self { rule: rule.into() }
    }
}

/// The outcome of a rule check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(RuleViolation),
    /// The rule depends on stored data (conversation participants, an entity's tenant).
    Lookup,
}

fn allow_if(ok: bool, rule: impl FnOnce() -> String) -> Decision {
    if ok {
        Decision::Allow
    } else {
        Decision::Deny(RuleViolation::new(rule()))
    }
}

/// May `who` do `action` on `channel`? Allow, deny naming the rule, or look the answer up in stored
/// data.
pub fn decide(who: &Identity, channel: &Channel, action: Action) -> Decision {
    match action {
        Action::Subscribe => can_subscribe(who, channel),
        Action::Publish => can_publish(who, channel),
    }
}

/// May `who` subscribe to `channel`?
fn can_subscribe(who: &Identity, channel: &Channel) -> Decision {
    // Joined by its own connection on connect (`connection/membership.rs`), never by a request:
    // not even Service may listen in on another connection's traffic.
    if let Channel::Connection { .. } = channel {
        return Decision::Deny(RuleViolation::new(format!(
            "{}: joined by that SignalR connection itself only",
            pattern(channel)
        )));
    }
    if who.role == Role::Service {
        return Decision::Allow;
    }
    match channel {
        Channel::TenantBroadcast { tenant } | Channel::TenantOrder { tenant, .. } => {
            allow_if(who.is_member_of(tenant), || {
                format!("{}: members of tenant {tenant} only", pattern(channel))
            })
        }
        Channel::TenantAdmins { tenant }
        | Channel::TenantAdminsOrders { tenant }
        | Channel::TenantAdminsSessions { tenant } => allow_if(who.is_staff_of(tenant), || {
            format!(
                "{}: Admin or Staff of tenant {tenant} only",
                pattern(channel)
            )
        }),
        // Summaries only (who connected, what flowed where; never payloads): operators watch
        // every tenant's activity from the admin console.
        Channel::TenantActivity { tenant } => allow_if(
            who.is_staff_of(tenant) || who.role == Role::Operator,
            || {
                format!(
                    "{}: Admin or Staff of tenant {tenant}, or Operator, only",
                    pattern(channel)
                )
            },
        ),
        Channel::TenantCustomer { tenant, user } => allow_if(
            who.is_staff_of(tenant) || (who.is_member_of(tenant) && who.user_id.as_str() == user),
            || {
                format!(
                    "{}: that customer or Admin/Staff of tenant {tenant} only",
                    pattern(channel)
                )
            },
        ),
        // Private to one person: not even the tenant's Admin/Staff (chat messages travel here).
        Channel::TenantUser { tenant, user } => allow_if(
            who.is_member_of(tenant) && who.user_id.as_str() == user,
            || format!("{}: that member of tenant {tenant} only", pattern(channel)),
        ),
        Channel::Session { session } => allow_if(
            who.role == Role::Customer
                && who.session_id.as_ref().map(|s| s.as_str()) == Some(session.as_str()),
            || {
                format!(
                    "{}: the customer whose token carries that sessionId only",
                    pattern(channel)
                )
            },
        ),
        Channel::User { user } => allow_if(who.user_id.as_str() == user, || {
            format!("{}: that user only", pattern(channel))
        }),
        Channel::GlobalBroadcast => Decision::Allow,
        Channel::Connection { .. } => unreachable!("refused above"),
        Channel::Conversation { .. } | Channel::Notifications { .. } => {
            if who.role == Role::Operator {
                Decision::Deny(RuleViolation::new(format!(
                    "{}: Operator tokens carry no tenant data",
                    pattern(channel)
                )))
            } else {
                Decision::Lookup
            }
        }
    }
}

/// May `who` publish to `channel` (REST or a client `publish` frame)?
fn can_publish(who: &Identity, channel: &Channel) -> Decision {
    if who.role == Role::Service {
        return Decision::Allow;
    }
    match channel {
        Channel::TenantBroadcast { tenant } => allow_if(who.is_staff_of(tenant), || {
            format!(
                "{}: Service, or Admin/Staff of tenant {tenant} only",
                pattern(channel)
            )
        }),
        Channel::Conversation { .. } if who.role != Role::Operator => Decision::Lookup,
        _ => Decision::Deny(RuleViolation::new(format!(
            "{}: only Service may publish",
            pattern(channel)
        ))),
    }
}

/// The channels a SignalR hub connection joins on connect (the seeds' hub `OnConnectedAsync`),
/// plus, for members of a tenant, their personal channel `tenant:{t}:user:{sub}` (where chat
/// delivers). `user:{sub}` stays for every non-Operator token: it is the global channel a back end
/// addresses by user id alone.
pub fn default_channels(who: &Identity) -> Vec<ChannelName> {
    let mut out = Vec::new();
    if let Some(tenant) = who.tenant.clone().filter(|_| who.role.is_tenant_bound()) {
        out.push(ChannelName::from_channel(Channel::TenantBroadcast {
            tenant: tenant.clone(),
        }));
        if who.role.is_tenant_staff() {
            out.push(ChannelName::from_channel(Channel::TenantAdmins { tenant }));
        }
    }
    if who.role == Role::Customer {
        if let Some(session) = &who.session_id {
            out.push(ChannelName::from_channel(Channel::Session {
                session: session.as_str().to_owned(),
            }));
        }
    }
    // Before `user:{sub}`: when a tight subscription quota refuses the last default channel, the
    // one chat needs is kept.
    if let Some(tenant) = who.tenant.clone().filter(|_| who.role.is_tenant_bound()) {
        out.push(ChannelName::from_channel(Channel::TenantUser {
            tenant,
            user: who.user_id.as_str().to_owned(),
        }));
    }
    if who.role != Role::Operator {
        out.push(ChannelName::from_channel(Channel::User {
            user: who.user_id.as_str().to_owned(),
        }));
    }
    out
}

/// The pattern a channel matches, used to name the rule in refusals.
fn pattern(channel: &Channel) -> &'static str {
    match channel {
        Channel::TenantBroadcast { .. } => "tenant:{t}:broadcast",
        Channel::TenantAdmins { .. } => "tenant:{t}:admins",
        Channel::TenantAdminsOrders { .. } => "tenant:{t}:admins:orders",
        Channel::TenantAdminsSessions { .. } => "tenant:{t}:admins:sessions",
        Channel::TenantActivity { .. } => "tenant:{t}:activity",
        Channel::TenantCustomer { .. } => "tenant:{t}:customer:{userId}",
        Channel::TenantOrder { .. } => "tenant:{t}:order:{orderId}",
        Channel::TenantUser { .. } => "tenant:{t}:user:{userId}",
        Channel::Session { .. } => "session:{sessionId}",
        Channel::User { .. } => "user:{userId}",
        Channel::Conversation { .. } => "conversation:{id}",
        Channel::Connection { .. } => "connection:{connectionId}",
        Channel::Notifications { .. } => "notifications:{EntityType}:{EntityId}",
        Channel::GlobalBroadcast => "global:broadcast",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionKey, TenantKey, UserId};

    fn who(role: Role, tenant: Option<&str>, user: &str, session: Option<&str>) -> Identity {
        Identity {
            user_id: UserId::parse(user).unwrap(),
            tenant: tenant.map(|t| TenantKey::parse(t).unwrap()),
            role,
            session_id: session.map(|s| SessionKey::parse(s).unwrap()),
            expires_at: None,
            issuer: None,
        }
    }

    fn ch(name: &str) -> Channel {
        ChannelName::parse(name).unwrap().kind().clone()
    }

    fn allowed(d: Decision) -> bool {
        match d {
            Decision::Allow => true,
            Decision::Deny(v) => {
                assert!(!v.rule.is_empty());
                false
            }
            Decision::Lookup => panic!("unexpected lookup"),
        }
    }

    #[test]
    fn subscribe_table() {
        let admin_a = who(Role::Admin, Some("a"), "adm", None);
        let staff_a = who(Role::Staff, Some("a"), "stf", None);
        let cust_a = who(Role::Customer, Some("a"), "c1", Some("s1"));
        let admin_b = who(Role::Admin, Some("b"), "adm", None);
        let service = who(Role::Service, None, "svc", None);
        let operator = who(Role::Operator, None, "ops", None);

        // (identity, channel, allowed)
        let cases: Vec<(&Identity, &str, bool)> = vec![
            (&cust_a, "tenant:a:broadcast", true),
            (&admin_b, "tenant:a:broadcast", false),
            (&operator, "tenant:a:broadcast", false),
            (&service, "tenant:a:broadcast", true),
            (&admin_a, "tenant:a:admins", true),
            (&staff_a, "tenant:a:admins:orders", true),
            (&staff_a, "tenant:a:admins:sessions", true),
            (&cust_a, "tenant:a:admins", false),
            (&admin_b, "tenant:a:admins", false),
            (&cust_a, "tenant:a:customer:c1", true),
            (&cust_a, "tenant:a:customer:c2", false),
            (&admin_a, "tenant:a:customer:c2", true),
            (&admin_b, "tenant:a:customer:c1", false),
            (&cust_a, "tenant:a:order:o1", true),
            (&admin_b, "tenant:a:order:o1", false),
            (&cust_a, "session:s1", true),
            (&cust_a, "session:s2", false),
            (&admin_a, "session:s1", false),
            (&cust_a, "user:c1", true),
            (&cust_a, "user:c2", false),
            (&admin_a, "global:broadcast", true),
            (&operator, "global:broadcast", true),
            (&admin_a, "tenant:a:activity", true),
            (&cust_a, "tenant:a:activity", false),
            (&admin_b, "tenant:a:activity", false),
            (&operator, "tenant:a:activity", true),
            // The personal channel: that member only, in that tenant only.
            (&cust_a, "tenant:a:user:c1", true),
            (&cust_a, "tenant:a:user:c2", false),
            (&cust_a, "tenant:b:user:c1", false),
            (&admin_a, "tenant:a:user:adm", true),
            (&staff_a, "tenant:a:user:stf", true),
            (&admin_a, "tenant:a:user:c1", false),
            (&staff_a, "tenant:a:user:c1", false),
            (&admin_b, "tenant:a:user:adm", false),
            (&operator, "tenant:a:user:ops", false),
            (&service, "tenant:a:user:c1", true),
            // A hub connection's own channel: no request joins it, whoever asks.
            (&service, "connection:abc", false),
            (&admin_a, "connection:abc", false),
            (&cust_a, "connection:abc", false),
        ];
        for (id, name, expect) in cases {
            assert_eq!(
                allowed(can_subscribe(id, &ch(name))),
                expect,
                "{:?} subscribe {name}",
                id.role
            );
        }
    }

    #[test]
    fn database_channels_need_a_lookup_except_for_operators() {
        let cust = who(Role::Customer, Some("a"), "c1", None);
        assert_eq!(
            can_subscribe(&cust, &ch("conversation:1")),
            Decision::Lookup
        );
        assert_eq!(
            can_subscribe(&cust, &ch("notifications:Team:t1")),
            Decision::Lookup
        );
        let ops = who(Role::Operator, None, "ops", None);
        assert!(matches!(
            can_subscribe(&ops, &ch("conversation:1")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn publish_table() {
        let admin_a = who(Role::Admin, Some("a"), "adm", None);
        let staff_a = who(Role::Staff, Some("a"), "stf", None);
        let cust_a = who(Role::Customer, Some("a"), "c1", None);
        let service = who(Role::Service, None, "svc", None);
        let operator = who(Role::Operator, None, "ops", None);
        assert!(allowed(can_publish(&admin_a, &ch("tenant:a:broadcast"))));
        assert!(allowed(can_publish(&staff_a, &ch("tenant:a:broadcast"))));
        assert!(!allowed(can_publish(&admin_a, &ch("tenant:b:broadcast"))));
        assert!(!allowed(can_publish(&admin_a, &ch("tenant:a:admins"))));
        assert!(!allowed(can_publish(&cust_a, &ch("tenant:a:broadcast"))));
        assert!(!allowed(can_publish(&admin_a, &ch("global:broadcast"))));
        assert!(!allowed(can_publish(&operator, &ch("global:broadcast"))));
        for name in [
            "global:broadcast",
            "tenant:z:admins",
            "session:x",
            "user:u",
            "tenant:z:user:u",
            "connection:abc",
        ] {
            assert!(allowed(can_publish(&service, &ch(name))), "{name}");
        }
        assert!(!allowed(can_publish(&admin_a, &ch("connection:abc"))));
        // Nobody but Service publishes on a personal channel, not even its owner or the
        // tenant's admin (chat events are made by the server).
        let owner = who(Role::Customer, Some("a"), "c1", None);
        for id in [&owner, &admin_a, &staff_a, &operator] {
            match can_publish(id, &ch("tenant:a:user:c1")) {
                Decision::Deny(v) => assert_eq!(
                    v.rule, "tenant:{t}:user:{userId}: only Service may publish",
                    "{:?}",
                    id.role
                ),
                other => panic!("{:?}: {other:?}", id.role),
            }
        }
    }

    #[test]
    fn refusals_name_the_rule() {
        let cust = who(Role::Customer, Some("a"), "c1", None);
        match can_subscribe(&cust, &ch("tenant:a:admins")) {
            Decision::Deny(v) => assert!(v.rule.contains("tenant:{t}:admins"), "{}", v.rule),
            other => panic!("{other:?}"),
        }
        // Another tenant's member with the same user id is told the personal channel's rule.
        let namesake = who(Role::Customer, Some("b"), "c1", None);
        match can_subscribe(&namesake, &ch("tenant:a:user:c1")) {
            Decision::Deny(v) => assert_eq!(
                v.rule,
                "tenant:{t}:user:{userId}: that member of tenant a only"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hub_default_channels_follow_the_seeds() {
        let names = |id: &Identity| -> Vec<String> {
            default_channels(id).iter().map(|c| c.to_string()).collect()
        };
        assert_eq!(
            names(&who(Role::Admin, Some("a"), "adm", None)),
            [
                "tenant:a:broadcast",
                "tenant:a:admins",
                "tenant:a:user:adm",
                "user:adm"
            ]
        );
        assert_eq!(
            names(&who(Role::Customer, Some("a"), "c1", Some("s1"))),
            [
                "tenant:a:broadcast",
                "session:s1",
                "tenant:a:user:c1",
                "user:c1"
            ]
        );
        assert_eq!(
            names(&who(Role::Staff, Some("a"), "s", None)),
            [
                "tenant:a:broadcast",
                "tenant:a:admins",
                "tenant:a:user:s",
                "user:s"
            ]
        );
        // No tenant, no personal channel of a tenant.
        assert_eq!(names(&who(Role::Service, None, "svc", None)), ["user:svc"]);
        assert_eq!(
            names(&who(Role::Service, Some("a"), "svc", None)),
            ["user:svc"]
        );
        assert!(names(&who(Role::Operator, None, "ops", None)).is_empty());
        // Every default channel passes the subscribe rules.
        for id in [
            who(Role::Admin, Some("a"), "adm", None),
            who(Role::Staff, Some("a"), "s", None),
            who(Role::Customer, Some("a"), "c1", Some("s1")),
        ] {
            for c in default_channels(&id) {
                assert_eq!(can_subscribe(&id, c.kind()), Decision::Allow, "{c}");
            }
        }
    }
}
