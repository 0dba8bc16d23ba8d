//! [`Refusal`]: the one answer the policy gives when it says no, and the wire error code it
//! carries on the native and SignalR protocols (HTTP maps it in the server's `problem.rs`).

use crate::codes::ErrorCode;
use crate::quotas::PublishQuotaExceeded;

use super::rules::RuleViolation;

/// Why the policy refused a subscribe or a publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The channel rules (or the stored-data lookup) refuse this caller; the message names the
    /// rule.
    #[error(transparent)]
    Forbidden(#[from] RuleViolation),
    /// The stored data the rule needs could not be read (the database failed); the message names
    /// the rule. Answered as a refusal like [`Refusal::Forbidden`]; a caller may retry.
    #[error(transparent)]
    Unchecked(RuleViolation),
    /// The tenant's publish quota is spent for now.
    #[error(transparent)]
    PublishQuota(#[from] PublishQuotaExceeded),
}

impl Refusal {
    /// The error code a native `error`/`subscription_error` frame or a SignalR completion carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Forbidden(_) | Refusal::Unchecked(_) => ErrorCode::Forbidden,
            Refusal::PublishQuota(_) => ErrorCode::QuotaExceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantKey;

    #[test]
    fn each_refusal_keeps_its_code_and_message() {
        let rule = RuleViolation {
            rule: "tenant:{t}:admins: Admin or Staff of tenant a only".into(),
        };
        let forbidden = Refusal::from(rule.clone());
        assert_eq!(forbidden.code(), ErrorCode::Forbidden);
        assert_eq!(forbidden.to_string(), rule.rule);
        let quota = Refusal::from(PublishQuotaExceeded {
            tenant: TenantKey::parse("a").unwrap(),
            limit: 3,
        });
        assert_eq!(quota.code(), ErrorCode::QuotaExceeded);
        assert_eq!(
            quota.to_string(),
            "tenant a may publish at most 3 events per second; retry shortly"
        );
    }
}
