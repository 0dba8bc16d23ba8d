//! The caller's verified identity: what a JWT proved about who is on the other end.
//!
//! Verification lives in the server (`src/auth.rs`); this crate only consumes the result, so the
//! channel rules and the actors never see a raw token.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{SessionKey, TenantKey, UserId};

/// What a caller may do. The names are the `role` claim values, exactly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Role {
    /// A tenant's administrator.
    Admin,
    /// A tenant's staff member (same channel rights as `Admin`).
    Staff,
    /// A tenant's customer (a guest's phone at a table).
    Customer,
    /// A back-end publisher; may target any tenant.
    Service,
    /// A cluster operator: admin API, no tenant data.
    Operator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Staff,
        Role::Customer,
        Role::Service,
        Role::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::Staff => "Staff",
            Role::Customer => "Customer",
            Role::Service => "Service",
            Role::Operator => "Operator",
        }
    }

    /// Admin and Staff share every channel right.
    pub fn is_tenant_staff(self) -> bool {
        matches!(self, Role::Admin | Role::Staff)
    }

    /// Roles that belong to one tenant and must carry a `tenantKey`.
    pub fn is_tenant_bound(self) -> bool {
        matches!(self, Role::Admin | Role::Staff | Role::Customer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (expected Admin, Staff, Customer, Service or Operator)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Role names match case-insensitively: .NET issuers are not consistent about case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A caller whose token has been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    /// Present for tenant-bound roles; optional for `Service` and `Operator`.
    pub tenant: Option<TenantKey>,
    pub role: Role,
    /// A customer's dining session (`sessionId` claim).
    pub session_id: Option<SessionKey>,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The token's `iss` claim, if it had one.
    pub issuer: Option<String>,
}

impl Identity {
    /// Whether `other` was verified as the same principal: same user, tenant, role, dining session
    /// and issuer. Only the same principal may take over a connection somebody negotiated or
    /// parked; comparing the user alone let a namesake in another tenant (or with another role)
    /// take over a connection with its rights.
    pub fn same_principal(&self, other: &Identity) -> bool {
        self.user_id == other.user_id
            && self.tenant == other.tenant
            && self.role == other.role
            && self.session_id == other.session_id
            && self.issuer == other.issuer
    }

    /// Whether this caller is a member (any tenant-bound role) of `tenant`.
    pub fn is_member_of(&self, tenant: &TenantKey) -> bool {
        self.role.is_tenant_bound() && self.tenant.as_ref() == Some(tenant)
    }

    /// Whether this caller is Admin or Staff of `tenant`.
    pub fn is_staff_of(&self, tenant: &TenantKey) -> bool {
        self.role.is_tenant_staff() && self.tenant.as_ref() == Some(tenant)
    }

    /// Whether this caller may read `tenant`'s operational figures (connections, presence).
    pub fn may_watch_tenant(&self, tenant: &TenantKey) -> bool {
        self.is_staff_of(tenant) || matches!(self.role, Role::Service | Role::Operator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(tenant: &str, role: Role) -> Identity {
        Identity {
            user_id: UserId::parse("alice").unwrap(),
            tenant: Some(TenantKey::parse(tenant).unwrap()),
            role,
            session_id: None,
            expires_at: Some(1),
            issuer: None,
        }
    }

    #[test]
    fn the_same_principal_needs_user_tenant_role_session_and_issuer() {
        let owner = alice("acme", Role::Admin);
        let refreshed = Identity {
            expires_at: Some(2),
            ..owner.clone()
        };
        assert!(
            owner.same_principal(&refreshed),
            "a refreshed token is the same principal"
        );
        assert!(!owner.same_principal(&alice("globex", Role::Admin)));
        assert!(!owner.same_principal(&alice("acme", Role::Customer)));
        let other_issuer = Identity {
            issuer: Some("https://elsewhere".into()),
            ..owner.clone()
        };
        assert!(!owner.same_principal(&other_issuer));
        let seated = Identity {
            session_id: Some(SessionKey::parse("s1").unwrap()),
            ..owner.clone()
        };
        assert!(!owner.same_principal(&seated));
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert_eq!("Operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}
