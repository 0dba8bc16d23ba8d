//! HTTP errors: one typed enum for every route, rendered as RFC 9457 problem JSON
//! (`application/problem+json`) with a stable machine-readable `code`.
//!
//! A leaf: the errors of the node (the policy's refusals, the publish path's failures) become
//! problems here, one mapping each; the server's own errors convert next to where they are defined
//! (a refused token in `auth.rs`), so this module depends on none of the server's modules.

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use switchyard_actors::broker::BrokerError;
use switchyard_actors::node::PublishError;
use switchyard_actors::payload::PayloadError;
use switchyard_actors::policy::Refusal;

/// Every error a route can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A missing or refused token; `code` is `token_missing`, `token_expired` or `token_invalid`.
    #[error("{detail}")]
    Unauthorized { code: &'static str, detail: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// Event data beyond `payload.max_depth` or `payload.max_bytes`.
    #[error(transparent)]
    BadPayload(#[from] PayloadError),
    #[error("{0}")]
    NotFound(String),
    /// The resource is not in a state that allows the request (an ended dining session).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Temporarily unable to take the request (a full mailbox, a shutting-down node).
    #[error("{0}")]
    Busy(String),
    /// A required backend (Redis, the database) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// A refusal written by a layer below the routes (actix-web's 405, actix-cors), in its status.
    #[error("{detail}")]
    Http { status: StatusCode, detail: String },
}

impl ApiError {
    /// Stable identifier of the problem (`code` member, and the end of the `type` URI).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { code, .. } => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadPayload(_) => "bad_payload",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Busy(_) => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Http { status, .. } => match status.as_u16() {
                405 => "method_not_allowed",
                406 => "not_acceptable",
                413 => "payload_too_large",
                415 => "unsupported_media_type",
                431 => "header_too_large",
                _ => "http_error",
            },
        }
    }

    /// The problem document, serialized.
    pub fn problem_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.problem()).expect("a problem document always serializes")
    }

    /// The problem document, as a value (one event's result in a batch).
    pub fn problem_value(&self) -> serde_json::Value {
        serde_json::to_value(self.problem()).expect("a problem document always serializes")
    }

    fn problem(&self) -> Problem<'_> {
        Problem {
            kind: format!("urn:switchyard:problem:{}", self.code()),
            title: self.title(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            code: self.code(),
        }
    }

    /// The problem for a refusal some other layer wrote with `status` and a plain `detail`.
    pub fn from_status(status: StatusCode, detail: String) -> Self {
        match status.as_u16() {
            400 => ApiError::BadRequest(detail),
            403 => ApiError::Forbidden(detail),
            404 => ApiError::NotFound(detail),
            409 => ApiError::Conflict(detail),
            429 => ApiError::TooManyRequests(detail),
            500 => ApiError::Internal(detail),
            503 => ApiError::Unavailable(detail),
            _ => ApiError::Http { status, detail },
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::BadRequest(_) => "Bad request",
            ApiError::BadPayload(_) => "Payload refused",
            ApiError::NotFound(_) => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::TooManyRequests(_) => "Too many requests",
            ApiError::Busy(_) => "Busy",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::Internal(_) => "Internal error",
            ApiError::Http { status, .. } => status.canonical_reason().unwrap_or("Error"),
        }
    }
}

/// A refusal of the channel policy: 403 naming the rule, or 429 for a spent publish quota.
impl From<Refusal> for ApiError {
    fn from(refused: Refusal) -> Self {
        match refused {
            Refusal::Forbidden(rule) | Refusal::Unchecked(rule) => ApiError::Forbidden(rule.rule),
            Refusal::PublishQuota(q) => ApiError::TooManyRequests(q.to_string()),
        }
    }
}

/// The broker could not take the request: busy (a full mailbox) or unavailable, both 503.
impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Busy(_) => ApiError::Busy(e.to_string()),
            BrokerError::Stopped | BrokerError::Unavailable(_) => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

/// A publish the node's publish path could not take.
impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Broker(b) => b.into(),
        }
    }
}

/// The problem document.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
}

/// Seconds a client should wait before retrying a busy or unavailable request.
const RETRY_AFTER_SECS: &str = "1";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) | ApiError::BadPayload(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Http { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        res.content_type("application/problem+json");
        match self {
            ApiError::Unauthorized { .. } => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::Busy(_) | ApiError::Unavailable(_) | ApiError::TooManyRequests(_) => {
                res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            _ => {}
        }
        res.body(self.problem_body())
    }
}

/// Turns actix's body/query/path extraction failures into problem JSON.
pub fn bad_request(err: impl std::fmt::Display) -> actix_web::Error {
    ApiError::BadRequest(err.to_string()).into()
}

/// Middleware: every error response that is not JSON (actix-cors' refusals,
/// actix-web's own 405, an upgrade refused by the WebSocket handshake) becomes one, keeping its
/// status and its other headers (`Allow`, CORS), so a client sees one error format whatever layer
/// refused it.
pub async fn problem_json_everywhere(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = match next.call(req).await {
        Ok(res) => res,
        Err(e) if e.as_error::<ApiError>().is_some() => return Err(e),
        Err(e) => {
            let status = e.as_response_error().status_code();
            return Err(ApiError::from_status(status, e.to_string()).into());
        }
    };
    let status = res.status();
    // Problem JSON already, or a JSON document a route answers with on purpose (the readiness
    // probe's 503 carries its health report).
    let is_json = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/problem+json")
            || v.as_bytes().starts_with(b"application/json")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return Ok(res.map_into_boxed_body());
    }
    let (req, res) = res.into_parts();
    let headers = res.headers().clone();
    let text = body::to_bytes(res.into_body())
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|t| !t.trim().is_empty());
    let detail = text.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut problem = ApiError::from_status(status, detail).error_response();
    for (name, value) in headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(req, problem))
}
