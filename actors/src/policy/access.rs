//! Access: may this identity do this to this channel? The rules decide, and when they need stored
//! data the node's [`ChannelAuthorizer`] is asked. Every subscribe and every publish, whatever
//! entry point it came through, is checked by [`check`] (publishes through [`super::publish`]).

use std::future::Future;
use std::sync::{Arc, LazyLock};

use crate::channel::ChannelName;
use crate::identity::{Identity, Role};
use crate::ids::UserId;

use super::authorizer::ChannelAuthorizer;
use super::refusal::Refusal;
pub use super::rules::{decide, Action, Decision};

/// Checks `who` may do `action` on `channel`: the rules, then (for stored-data channels) the
/// authorizer. The rules are applied now; the returned future owns everything it needs, so an
/// actor can hold it across turns.
pub fn check(
    authorizer: &Arc<dyn ChannelAuthorizer>,
    who: Arc<Identity>,
    channel: ChannelName,
    action: Action,
) -> impl Future<Output = Result<(), Refusal>> + Send + 'static {
    let outcome = match decide(&who, channel.kind(), action) {
        Decision::Allow => Ok(None),
        Decision::Deny(rule) => Err(rule),
        Decision::Lookup => Ok(Some(authorizer.authorize(who, channel, action))),
    };
    async move {
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(lookup)) => lookup.await,
            Err(rule) => Err(Refusal::Forbidden(rule)),
        }
    }
}

/// The user id the Redis ingest stream publishes as (in logs and refusals).
const INGEST_USER: &str = "ingest";

/// Who publishes a draft from the Redis ingest stream. Appending to the stream takes the Redis
/// credentials, which a deployment gives to its back ends only, so the stream is a `Service`.
pub static INGEST_PUBLISHER: LazyLock<Identity> = LazyLock::new(|| Identity {
    user_id: UserId::parse(INGEST_USER).expect("a valid user id"),
    tenant: None,
    role: Role::Service,
    session_id: None,
    expires_at: None,
    issuer: None,
});

/// [`check`] for an entry point with no authorizer to ask (the ingest stream): the rules alone,
/// and a channel that needs stored data is refused.
pub fn check_without_lookup(
    who: &Identity,
    channel: &ChannelName,
    action: Action,
) -> Result<(), Refusal> {
    match decide(who, channel.kind(), action) {
        Decision::Allow => Ok(()),
        Decision::Deny(rule) => Err(rule.into()),
        Decision::Lookup => Err(super::rules::RuleViolation {
            rule: format!(
                "{channel}: checked against stored data, which this entry point cannot read"
            ),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NoLookups;

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[test]
    fn the_ingest_stream_may_publish_anywhere() {
        for c in [
            "tenant:a:admins",
            "tenant:a:user:u",
            "global:broadcast",
            "conversation:1",
        ] {
            assert_eq!(
                check_without_lookup(&INGEST_PUBLISHER, &name(c), Action::Publish),
                Ok(()),
                "{c}"
            );
        }
    }

    #[test]
    fn a_lookup_goes_to_the_authorizer() {
        use futures_util::FutureExt;

        let authorizer: Arc<dyn ChannelAuthorizer> = Arc::new(NoLookups);
        let mut who = INGEST_PUBLISHER.clone();
        who.role = Role::Customer;
        who.tenant = Some(crate::ids::TenantKey::parse("a").unwrap());
        let refused = check(
            &authorizer,
            Arc::new(who),
            name("conversation:1"),
            Action::Subscribe,
        )
        .now_or_never()
        .expect("NoLookups answers at once")
        .unwrap_err();
        assert!(refused.to_string().contains("does not have"), "{refused}");
    }
}
