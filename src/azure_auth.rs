//! Azure SignalR Service's own data-plane authentication, for the Azure-compatible REST API
//! (`routes/azure.rs`, through `caller::DataPlaneCaller`): a JWT signed HS256 with the `AccessKey` of an Azure connection string,
//! whose `aud` is the request's URL, as the Management SDK (transient mode) and Azure's REST
//! samples make it. With `azure.access_key` set, such a token is a `Service` identity (of the
//! tenant `azure.tenant_key`, if set), so a back end switches by pointing its connection string's
//! `Endpoint` at Switchyard. Off (empty key): only Switchyard's own tokens are taken.
//!
//! What is checked: the signature (the key's UTF-8 bytes, HS256 only), `exp` (with
//! `auth.leeway_secs`), `nbf` when present, and that `aud`'s path is the request's path (its
//! scheme and host are not compared: a proxy or a load balancer in front rewrites them).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use switchyard_actors::identity::{Identity, Role};
use switchyard_actors::ids::{TenantKey, UserId};

use crate::auth::AuthError;
use crate::settings::AzureSettings;

/// The user id an access-key caller acts as when its token names no server (`nameid`).
const DEFAULT_USER: &str = "azure-backend";

/// Why the `[azure]` settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AzureKeyError {
    #[error("azure.tenant_key: {0}")]
    Tenant(switchyard_actors::ids::SegmentError),
}

/// Verifies access-key tokens (see the module docs).
pub struct AccessKeyVerifier {
    key: DecodingKey,
    validation: Validation,
    tenant: Option<TenantKey>,
}

#[derive(Deserialize)]
struct AccessKeyClaims {
    aud: String,
    /// The SDK's server name (`ClaimTypes.NameIdentifier`, serialized as `nameid`).
    nameid: Option<String>,
}

impl AccessKeyVerifier {
    /// The verifier `[azure]` configures; `None` when no access key is set.
    pub fn from_settings(
        azure: &AzureSettings,
        leeway_secs: u64,
    ) -> Result<Option<Self>, AzureKeyError> {
        let secret = azure.access_key.expose_secret();
        if secret.is_empty() {
            return Ok(None);
        }
        let tenant = match azure.tenant_key.trim() {
            "" => None,
            t => Some(TenantKey::parse(t).map_err(AzureKeyError::Tenant)?),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_nbf = true;
        // `aud` is compared with the request below, not with a fixed value.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "aud"]);
        Ok(Some(Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            tenant,
        }))
    }

    /// Verifies `token` for a request to `path`.
    pub fn verify(&self, token: &str, path: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<AccessKeyClaims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    AuthError::BadSignature
                }
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                _ => AuthError::Malformed(e.to_string()),
            })?;
        if audience_path(&data.claims.aud) != Some(path) {
            return Err(AuthError::WrongAudience);
        }
        let user = data
            .claims
            .nameid
            .and_then(|n| UserId::parse(&n).ok())
            .unwrap_or_else(|| UserId::parse(DEFAULT_USER).expect("a valid user id"));
        Ok(Identity {
            user_id: user,
            tenant: self.tenant.clone(),
            role: Role::Service,
            session_id: None,
            expires_at: None,
            issuer: None,
        })
    }
}

/// The path of an `aud` URL (`https://host[:port]/api/hubs/x/:send?api-version=…` →
/// `/api/hubs/x/:send`).
fn audience_path(aud: &str) -> Option<&str> {
    let after_scheme = aud.split_once("://")?.1;
    let path_and_query = &after_scheme[after_scheme.find('/')?..];
    Some(path_and_query.split('?').next().unwrap_or(path_and_query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audience_path_ignores_scheme_host_and_query() {
        assert_eq!(
            audience_path("https://sy.example.com/api/hubs/chat/:send?api-version=2022-06-01"),
            Some("/api/hubs/chat/:send")
        );
        assert_eq!(
            audience_path("http://127.0.0.1:8080/api/hubs/chat/groups/tenant%3Aa%3Ab/:send"),
            Some("/api/hubs/chat/groups/tenant%3Aa%3Ab/:send")
        );
        assert_eq!(audience_path("not a url"), None);
        assert_eq!(audience_path("https://host-only"), None);
    }
}
