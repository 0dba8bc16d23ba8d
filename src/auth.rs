//! JWT verification: tokens from `Authorization: Bearer …` or the `access_token` (or `token`) query parameter,
//! verified with a pinned algorithm (HS256 with a shared secret, or RS256 with the issuer's public
//! key), `exp`/`nbf` always checked, `iss`/`aud` when configured. The result is an [`Identity`];
//! nothing else in the server sees a token. Tokens and secrets are never logged.
//!
//! Claims: `sub` (or `userId`), `tenantKey`, `role` (or the .NET role claim URI), optional
//! `sessionId`, `exp`.

use actix_web::{web, HttpRequest};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use switchyard_actors::identity::{Identity, Role};
use switchyard_actors::ids::{SessionKey, TenantKey, UserId};

use crate::problem::ApiError;
use crate::settings::AuthSettings;

/// The .NET role claim type, accepted as an alias of `role`.
pub const DOTNET_ROLE_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/// Why a token was refused. The metric label and the problem `code` are [`AuthError::label`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send Authorization: Bearer <jwt> or the access_token query parameter")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's signature or algorithm does not match this server's key")]
    BadSignature,
    #[error("the token's issuer (iss) is missing or not the configured one")]
    WrongIssuer,
    #[error("the token's audience (aud) is missing or not the configured one")]
    WrongAudience,
    /// The header does not parse, typically an `alg` this server never accepts (`none`).
    #[error(
        "the token's header is not acceptable (this server verifies {expected} only): {detail}"
    )]
    BadHeader {
        expected: &'static str,
        detail: String,
    },
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's claims are not usable: {0}")]
    Claims(String),
}

impl AuthError {
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::BadHeader { .. } => "bad_header",
            AuthError::Malformed(_) => "malformed",
            AuthError::Claims(_) => "bad_claims",
        }
    }

    /// The problem `code` of a refused token: clients tell "log in" from "refresh" by it.
    pub fn problem_code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            _ => "token_invalid",
        }
    }
}

/// A refused token answers 401 with its problem code.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized {
            code: e.problem_code(),
            detail: e.to_string(),
        }
    }
}

/// Why the verifier could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no JWT key configured: set SWITCHYARD__AUTH__JWT_SECRET (HS256) or SWITCHYARD__AUTH__JWT_PUBLIC_KEY_FILE (RS256); only the development environment generates one")]
    NoKey,
    #[error("cannot read the JWT public key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the JWT public key is not a valid RSA PEM key: {0}")]
    BadPublicKey(jsonwebtoken::errors::Error),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "tenantKey")]
    tenant_key: Option<String>,
    role: Option<OneOrMany>,
    #[serde(rename = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")]
    dotnet_role: Option<OneOrMany>,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    exp: Option<u64>,
    iss: Option<String>,
}

/// Claims of a token minted by this server (dev tokens, `switchyard token`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MintClaims {
    pub sub: String,
    #[serde(rename = "tenantKey", skip_serializing_if = "Option::is_none")]
    pub tenant_key: Option<String>,
    pub role: String,
    #[serde(rename = "sessionId", skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub exp: u64,
    pub iat: u64,
}

/// Verifies tokens; built once from [`AuthSettings`].
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Present for HS256: lets the server mint tokens (development, CLI).
    signing: Option<EncodingKey>,
}

/// A key the development environment generated because none was configured.
pub struct GeneratedSecret(pub String);

impl Verifier {
    /// Builds the verifier. Outside development a missing key is an error; in development a
    /// random HS256 secret is generated and returned so the caller can log it.
    pub fn from_settings(
        auth: &AuthSettings,
        development: bool,
    ) -> Result<(Self, Option<GeneratedSecret>), KeyError> {
        let pem = if !auth.jwt_public_key_pem.trim().is_empty() {
            Some(auth.jwt_public_key_pem.clone())
        } else if !auth.jwt_public_key_file.trim().is_empty() {
            let path = auth.jwt_public_key_file.trim();
            Some(
                std::fs::read_to_string(path).map_err(|source| KeyError::KeyFile {
                    path: path.to_owned(),
                    source,
                })?,
            )
        } else {
            None
        };
        let (key, algorithm, signing, generated) = if let Some(pem) = pem {
            let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(KeyError::BadPublicKey)?;
            (key, Algorithm::RS256, None, None)
        } else {
            let configured = auth.jwt_secret.expose_secret();
            let (secret, generated) = if !configured.is_empty() {
                (configured.to_owned(), None)
            } else if development {
                let s = random_secret();
                (s.clone(), Some(GeneratedSecret(s)))
            } else {
                return Err(KeyError::NoKey);
            };
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
                Some(EncodingKey::from_secret(secret.as_bytes())),
                generated,
            )
        };
        // The algorithm is pinned: a token claiming any other `alg` is refused.
        let mut validation = Validation::new(algorithm);
        validation.leeway = auth.leeway_secs;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present: a token
        // without the claim proves nothing about who issued it or for whom.
        let mut required = vec!["exp"];
        if !auth.issuer.is_empty() {
            validation.set_issuer(&[auth.issuer.as_str()]);
            required.push("iss");
        }
        if auth.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[auth.audience.as_str()]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok((
            Self {
                key,
                validation,
                signing,
            },
            generated,
        ))
    }

    /// Verifies a token and turns its claims into an identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // The header first, so an unknown `alg` (`none`) is named as such, not as bad claims.
        jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::BadHeader {
                expected: self.algorithm_name(),
                detail: e.to_string(),
            },
            _ => AuthError::Malformed(e.to_string()),
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    AuthError::BadSignature
                }
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                    "iss" => AuthError::WrongIssuer,
                    "aud" => AuthError::WrongAudience,
                    _ => AuthError::Claims(format!("missing claim {c}")),
                },
                ErrorKind::Json(e) => AuthError::Claims(e.to_string()),
                _ => AuthError::Malformed(e.to_string()),
            },
        )?;
        identity_from(data.claims)
    }

    fn algorithm_name(&self) -> &'static str {
        match self.validation.algorithms.first() {
            Some(Algorithm::RS256) => "RS256",
            _ => "HS256",
        }
    }

    /// Signs `claims` with the server's HS256 secret; `None` when the server only verifies (RS256).
    pub fn mint(&self, claims: &MintClaims) -> Option<String> {
        let key = self.signing.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).ok()
    }
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Picks the most capable role when a token carries several (.NET emits an array then).
fn pick_role(claim: OneOrMany) -> Result<Role, AuthError> {
    let names = match claim {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    let roles: Vec<Role> = names.iter().filter_map(|n| n.parse().ok()).collect();
    [
        Role::Service,
        Role::Operator,
        Role::Admin,
        Role::Staff,
        Role::Customer,
    ]
    .into_iter()
    .find(|r| roles.contains(r))
    .ok_or_else(|| {
        AuthError::Claims(format!(
            "role {names:?} is not one of Admin, Staff, Customer, Service, Operator"
        ))
    })
}

fn identity_from(c: Claims) -> Result<Identity, AuthError> {
    let user = c
        .sub
        .or(c.user_id)
        .ok_or_else(|| AuthError::Claims("no sub (or userId) claim".into()))?;
    let user_id = UserId::parse(&user).map_err(|e| AuthError::Claims(format!("sub {e}")))?;
    let role_claim = c
        .role
        .or(c.dotnet_role)
        .ok_or_else(|| AuthError::Claims(format!("no role claim (role or {DOTNET_ROLE_CLAIM})")))?;
    let role = pick_role(role_claim)?;
    let tenant = match c.tenant_key.filter(|t| !t.is_empty()) {
        Some(t) => {
            Some(TenantKey::parse(&t).map_err(|e| AuthError::Claims(format!("tenantKey {e}")))?)
        }
        None if role.is_tenant_bound() => {
            return Err(AuthError::Claims(format!(
                "role {role} needs a tenantKey claim"
            )))
        }
        None => None,
    };
    let session_id = match c.session_id.filter(|s| !s.is_empty()) {
        Some(s) => {
            Some(SessionKey::parse(&s).map_err(|e| AuthError::Claims(format!("sessionId {e}")))?)
        }
        None => None,
    };
    Ok(Identity {
        user_id,
        tenant,
        role,
        session_id,
        expires_at: c.exp,
        issuer: c.iss,
    })
}

/// Query parameters a token may come in, in order: `access_token` (the SignalR clients), then
/// `token` (seed 004's SDK connects with `?token=<jwt>`).
const TOKEN_QUERY_PARAMETERS: [&str; 2] = ["access_token", "token"];

/// The token of a request: `Authorization: Bearer …` first, then the query parameters above.
pub fn token_of(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        if let Some(t) = h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            return Some(t.trim().to_owned());
        }
    }
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()?;
    TOKEN_QUERY_PARAMETERS
        .iter()
        .find_map(|name| query.get(*name).filter(|t| !t.is_empty()).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: SecretString::from(secret.to_owned()),
            jwt_public_key_pem: String::new(),
            jwt_public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 0,
            dev_tokens: false,
        }
    }

    fn sign(secret: &str, claims: serde_json::Value, alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn accepts_the_claim_aliases() {
        let (v, _) = Verifier::from_settings(&settings("k"), false).unwrap();
        let t = sign(
            "k",
            serde_json::json!({"userId":"u1","tenantKey":"acme",DOTNET_ROLE_CLAIM:["Customer","Admin"],"sessionId":"s1","exp":now()+60}),
            Algorithm::HS256,
        );
        let id = v.verify(&t).unwrap();
        assert_eq!(id.user_id.as_str(), "u1");
        assert_eq!(id.role, Role::Admin);
        assert_eq!(id.session_id.unwrap().as_str(), "s1");
    }

    #[test]
    fn refuses_bad_tokens_with_specific_reasons() {
        let (v, _) = Verifier::from_settings(&settings("k"), false).unwrap();
        let ok = serde_json::json!({"sub":"u","tenantKey":"a","role":"Admin","exp":now()+60});
        let cases = [
            (sign("other", ok.clone(), Algorithm::HS256), "bad_signature"),
            (sign("k", ok.clone(), Algorithm::HS384), "bad_signature"),
            (
                sign(
                    "k",
                    serde_json::json!({"sub":"u","tenantKey":"a","role":"Admin","exp":now()-120}),
                    Algorithm::HS256,
                ),
                "expired",
            ),
            (
                sign(
                    "k",
                    serde_json::json!({"sub":"u","tenantKey":"a","role":"Admin","exp":now()+60,"nbf":now()+600}),
                    Algorithm::HS256,
                ),
                "not_yet_valid",
            ),
            (
                sign(
                    "k",
                    serde_json::json!({"sub":"u","role":"Admin","exp":now()+60}),
                    Algorithm::HS256,
                ),
                "bad_claims",
            ),
            (
                sign(
                    "k",
                    serde_json::json!({"sub":"u","tenantKey":"a","role":"King","exp":now()+60}),
                    Algorithm::HS256,
                ),
                "bad_claims",
            ),
            (
                sign(
                    "k",
                    serde_json::json!({"sub":"u","tenantKey":"a","role":"Admin"}),
                    Algorithm::HS256,
                ),
                "bad_claims",
            ),
            ("not.a.jwt".to_owned(), "malformed"),
        ];
        for (token, label) in cases {
            assert_eq!(v.verify(&token).unwrap_err().label(), label);
        }
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut s = settings("k");
        s.issuer = "https://issuer".into();
        s.audience = "switchyard".into();
        let (v, _) = Verifier::from_settings(&s, false).unwrap();
        let claims = |iss: &str, aud: &str| serde_json::json!({"sub":"u","role":"Service","exp":now()+60,"iss":iss,"aud":aud});
        assert!(v
            .verify(&sign(
                "k",
                claims("https://issuer", "switchyard"),
                Algorithm::HS256
            ))
            .is_ok());
        assert_eq!(
            v.verify(&sign(
                "k",
                claims("https://evil", "switchyard"),
                Algorithm::HS256
            ))
            .unwrap_err(),
            AuthError::WrongIssuer
        );
        assert_eq!(
            v.verify(&sign(
                "k",
                claims("https://issuer", "other"),
                Algorithm::HS256
            ))
            .unwrap_err(),
            AuthError::WrongAudience
        );
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required_not_only_checked() {
        let mut s = settings("k");
        s.issuer = "https://issuer".into();
        s.audience = "switchyard".into();
        let (v, _) = Verifier::from_settings(&s, false).unwrap();
        let base = serde_json::json!({"sub":"u","role":"Service","exp":now()+60});
        let with = |extra: serde_json::Value| {
            let mut c = base.clone();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            sign("k", c, Algorithm::HS256)
        };
        let neither = v.verify(&with(serde_json::json!({}))).unwrap_err();
        assert!(
            matches!(neither, AuthError::WrongIssuer | AuthError::WrongAudience),
            "{neither:?}"
        );
        let cases = [
            (
                with(serde_json::json!({"iss":"https://issuer"})),
                AuthError::WrongAudience,
            ),
            (
                with(serde_json::json!({"aud":"switchyard"})),
                AuthError::WrongIssuer,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(v.verify(&token).unwrap_err(), expected);
        }
        let ok = v
            .verify(&with(
                serde_json::json!({"iss":"https://issuer","aud":"switchyard"}),
            ))
            .unwrap();
        assert_eq!(ok.issuer.as_deref(), Some("https://issuer"));
    }

    #[test]
    fn alg_none_is_refused_as_a_bad_header() {
        let (v, _) = Verifier::from_settings(&settings("k"), false).unwrap();
        let b64 = |v: serde_json::Value| {
            use std::fmt::Write;
            // base64url without padding, enough for a test token.
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = v.to_string().into_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    let _ = out.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        };
        let token = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg":"none","typ":"JWT"})),
            b64(serde_json::json!({"sub":"u","tenantKey":"a","role":"Admin","exp":now()+60}))
        );
        let err = v.verify(&token).unwrap_err();
        assert_eq!(err.label(), "bad_header");
        assert!(err.to_string().contains("HS256 only"), "{err}");
    }

    #[test]
    fn missing_key_is_fatal_outside_development_only() {
        assert!(matches!(
            Verifier::from_settings(&settings(""), false),
            Err(KeyError::NoKey)
        ));
        let (v, generated) = Verifier::from_settings(&settings(""), true).unwrap();
        let GeneratedSecret(secret) = generated.expect("a generated secret");
        assert_eq!(secret.len(), 64);
        let t = v
            .mint(&MintClaims {
                sub: "u".into(),
                tenant_key: Some("a".into()),
                role: "Staff".into(),
                session_id: None,
                exp: now() + 60,
                iat: now(),
            })
            .unwrap();
        assert_eq!(v.verify(&t).unwrap().role, Role::Staff);
    }
}
