//! The Azure-compatible data plane (`/api/hubs/{hub}/…`, `src/routes/azure.rs`): who may call
//! it and what a caller may address. Its sends and hub commands are publishes like any other and
//! are then admitted by [`super::publish::admit`] (the rules, then the tenant's publish quota);
//! this file adds what the data plane needs on top:
//!
//! - the caller is a back end: a `Service` token (Azure's data plane takes the service's access
//!   key, which only back ends hold);
//! - a `Service` token that carries a `tenantKey` speaks for that tenant alone: it addresses only
//!   channels of its tenant (a group of another tenant, or a channel of no tenant, is refused), and
//!   its tenant is where the hub's broadcast and users are (`tenant:{t}:broadcast`,
//!   `tenant:{t}:user:{u}`). A token without `tenantKey` may address any channel as `Service`
//!   may, and names users by `user:{u}`;
//! - a group is a channel, but not a connection's own channel (`connection:{id}` is addressed by
//!   the connection routes, and only commands and sends travel there).

use crate::channel::{Channel, ChannelError, ChannelName};
use crate::identity::{Identity, Role};
use crate::ids::TenantKey;

use super::refusal::Refusal;
use super::rules::RuleViolation;

fn refuse(rule: String) -> Refusal {
    Refusal::Forbidden(RuleViolation { rule })
}

/// The data plane is for back ends: `Service` tokens only.
pub fn caller(who: &Identity) -> Result<(), Refusal> {
    if who.role == Role::Service {
        Ok(())
    } else {
        Err(refuse(format!(
            "the Azure-compatible REST API is for back ends: Service tokens only (this token's role is {})",
            who.role
        )))
    }
}

/// The tenant a caller speaks for (its token's `tenantKey`), if any.
pub fn tenant(who: &Identity) -> Option<&TenantKey> {
    who.tenant.as_ref()
}

/// May `who` address `group` (send to it, add connections to it, ask whether it has any)?
pub fn group(who: &Identity, group: &ChannelName) -> Result<(), Refusal> {
    if let Channel::Connection { .. } = group.kind() {
        return Err(refuse(
            "connection:{connectionId} is not a group: address a connection with /connections/{connectionId}".into(),
        ));
    }
    match (tenant(who), group.tenant()) {
        (None, _) => Ok(()),
        (Some(mine), Some(theirs)) if mine == theirs => Ok(()),
        (Some(mine), _) => Err(refuse(format!(
            "a Service token of tenant {mine} addresses the channels of tenant {mine} only (group {group})"
        ))),
    }
}

/// The channel of a hub's broadcast: `tenant:{t}:broadcast` of the caller's tenant; `None` for a
/// caller of no tenant (there is no hub-wide channel every hub connection joins across tenants).
pub fn hub_channel(who: &Identity) -> Option<ChannelName> {
    tenant(who).map(|t| ChannelName::from_channel(Channel::TenantBroadcast { tenant: t.clone() }))
}

/// The channel of a user's connections: `tenant:{t}:user:{u}` for a caller of tenant `t`,
/// `user:{u}` for a caller of no tenant (both joined by every hub connection on connect); an
/// error when `user` cannot be a channel segment.
pub fn user_channel(who: &Identity, user: &str) -> Result<ChannelName, ChannelError> {
    let user = user.to_owned();
    let kind = match tenant(who) {
        Some(t) => Channel::TenantUser {
            tenant: t.clone(),
            user,
        },
        None => Channel::User { user },
    };
    ChannelName::parse(&kind.to_name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;

    fn who(role: Role, tenant: Option<&str>) -> Identity {
        Identity {
            user_id: UserId::parse("svc").unwrap(),
            tenant: tenant.map(|t| TenantKey::parse(t).unwrap()),
            role,
            session_id: None,
            expires_at: None,
            issuer: None,
        }
    }

    fn ch(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[test]
    fn service_tokens_only_and_a_tenants_token_stays_in_its_tenant() {
        assert!(caller(&who(Role::Service, None)).is_ok());
        for role in [Role::Admin, Role::Staff, Role::Customer, Role::Operator] {
            assert!(caller(&who(role, Some("a"))).is_err(), "{role}");
        }
        let a = who(Role::Service, Some("a"));
        let any = who(Role::Service, None);
        assert!(group(&a, &ch("tenant:a:order:1")).is_ok());
        assert!(group(&a, &ch("tenant:b:order:1")).is_err());
        assert!(group(&a, &ch("global:broadcast")).is_err());
        assert!(group(&any, &ch("tenant:b:order:1")).is_ok());
        assert!(group(&any, &ch("connection:x")).is_err());
        assert_eq!(hub_channel(&a).unwrap().as_str(), "tenant:a:broadcast");
        assert!(hub_channel(&any).is_none());
        assert_eq!(
            user_channel(&a, "bob").unwrap().as_str(),
            "tenant:a:user:bob"
        );
        assert_eq!(user_channel(&any, "bob").unwrap().as_str(), "user:bob");
        assert!(user_channel(&a, "b:ob").is_err());
    }
}
