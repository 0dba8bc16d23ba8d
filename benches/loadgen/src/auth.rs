//! Minting the HS256 JWTs Switchyard verifies: `sub`, `tenantKey`, `role`, `iat`, `exp`.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

use crate::payload::now_micros;

/// Token lifetime: long enough for any benchmark run.
const TOKEN_LIFETIME_SECS: u64 = 3600;
const MICROS_PER_SEC: u64 = 1_000_000;

/// The publisher's role.
pub const SERVICE_ROLE: &str = "Service";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(rename = "tenantKey")]
    tenant_key: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs tokens with one shared secret.
pub struct TokenMinter {
    key: EncodingKey,
    tenant: String,
}

impl TokenMinter {
    pub fn new(secret: &str, tenant: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            tenant: tenant.to_owned(),
        }
    }

    /// A token for `user` with `role` in this tenant, valid for an hour.
    pub fn mint(&self, user: &str, role: &str) -> String {
        let iat = now_micros() / MICROS_PER_SEC;
        let claims = Claims {
            sub: user,
            tenant_key: &self.tenant,
            role,
            iat,
            exp: iat + TOKEN_LIFETIME_SECS,
        };
        encode(&Header::default(), &claims, &self.key).expect("HS256 signing cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn minted_token_verifies_with_the_same_secret() {
        let token = TokenMinter::new("s3cret", "bench").mint("u1", "Customer");
        let data = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::default(),
        )
        .unwrap();
        assert_eq!(data.claims["tenantKey"], "bench");
        assert_eq!(data.claims["role"], "Customer");
        assert_eq!(data.claims["sub"], "u1");
    }
}
