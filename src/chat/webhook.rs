//! The offline webhook: when a message is stored for a recipient with no open connection, the
//! host application is told (so it can send a push notification, as the seed's push service did).
//!
//! `POST {url}` with a JSON body `{"type":"chat.message.offline","tenantKey","recipientId",
//! "message":{…}}` (the message as `ReceiveMessage` carries it), and the headers
//! `X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>` (when a secret
//! is set), `X-Switchyard-Delivery: <message id>` (the same on every try, to deduplicate) and
//! `X-Switchyard-Attempt: <n>`. A network error, a timeout, 5xx or 429 is retried, the pause
//! doubling from `retry_delay_ms`, up to `attempts` tries in all; other answers end it. It runs
//! on its own task: the hub call that stored the message never waits for it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::settings::ChatWebhookSettings;

pub const SIGNATURE_HEADER: &str = "X-Switchyard-Signature";
pub const DELIVERY_HEADER: &str = "X-Switchyard-Delivery";
pub const ATTEMPT_HEADER: &str = "X-Switchyard-Attempt";
/// The body's `type`.
pub const OFFLINE_MESSAGE: &str = "chat.message.offline";

/// Why the webhook settings were refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("[chat.webhook] url {0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("[chat.webhook] {0} must be greater than 0")]
    Zero(&'static str),
}

/// A configured webhook.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    secret: SecretString,
    attempts: u32,
    retry_delay: Duration,
    timeout: Duration,
}

/// How one try ended.
enum Try {
    Delivered,
    Retry(String),
    GiveUp(String),
}

impl Webhook {
    /// The webhook of `[chat.webhook]`, or `None` when no URL is set.
    pub fn from_settings(s: &ChatWebhookSettings) -> Result<Option<Self>, WebhookConfigError> {
        let url = s.url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let parsed: actix_web::http::Uri = url
            .parse()
            .map_err(|_| WebhookConfigError::Url(url.into()))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(WebhookConfigError::Url(url.into()));
        }
        if s.attempts == 0 {
            return Err(WebhookConfigError::Zero("attempts"));
        }
        if s.timeout_ms == 0 {
            return Err(WebhookConfigError::Zero("timeout_ms"));
        }
        Ok(Some(Self {
            url: url.to_owned(),
            secret: s.secret.clone(),
            attempts: s.attempts,
            retry_delay: Duration::from_millis(s.retry_delay_ms),
            timeout: Duration::from_millis(s.timeout_ms),
        }))
    }

    /// The signature header's value for `body`, when a secret is set.
    pub fn signature(&self, body: &[u8]) -> Option<String> {
        sign(self.secret.expose_secret(), body)
    }

    /// Tells the host application about a message stored for an offline recipient, on a task of
    /// its own (see the module docs).
    pub fn notify_offline(&self, tenant: &str, recipient: &str, message: Value) {
        let message_id = message["id"].as_str().unwrap_or_default().to_owned();
        let conversation = message["conversationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let body = json!({
            "type": OFFLINE_MESSAGE,
            "tenantKey": tenant,
            "recipientId": recipient,
            "message": message,
        })
        .to_string();
        let ctx = format!("tenant={tenant} conversation={conversation} message={message_id}");
        let this = self.clone();
        actix::spawn(async move { this.deliver(body, message_id, ctx).await });
    }

    async fn deliver(self, body: String, message_id: String, ctx: String) {
        let signature = self.signature(body.as_bytes());
        let client = awc::Client::builder().timeout(self.timeout).finish();
        let mut pause = self.retry_delay;
        for attempt in 1..=self.attempts {
            let mut req = client
                .post(&self.url)
                .insert_header(("content-type", "application/json"))
                .insert_header((DELIVERY_HEADER, message_id.as_str()))
                .insert_header((ATTEMPT_HEADER, attempt.to_string()));
            if let Some(sig) = &signature {
                req = req.insert_header((SIGNATURE_HEADER, sig.as_str()));
            }
            let outcome = match req.send_body(body.clone()).await {
                Ok(res) if res.status().is_success() => Try::Delivered,
                Ok(res) if res.status().is_server_error() || res.status().as_u16() == 429 => {
                    Try::Retry(format!("answered {}", res.status()))
                }
                Ok(res) => Try::GiveUp(format!("answered {}", res.status())),
                Err(e) => Try::Retry(e.to_string()),
            };
            match outcome {
                Try::Delivered => {
                    log::debug!("chat webhook delivered ({ctx}, try {attempt})");
                    return;
                }
                Try::GiveUp(why) => {
                    log::warn!("chat webhook refused ({ctx}): {why}; not retried");
                    return;
                }
                Try::Retry(why) if attempt < self.attempts => {
                    log::info!(
                        "chat webhook try {attempt}/{} failed ({ctx}): {why}; retrying in {pause:?}",
                        self.attempts
                    );
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
                Try::Retry(why) => {
                    log::warn!(
                        "chat webhook gave up after {} tries ({ctx}): {why}",
                        self.attempts
                    );
                }
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, or `None` for an empty secret.
pub fn sign(secret: &str, body: &[u8]) -> Option<String> {
    if secret.is_empty() {
        return None;
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    Some(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_rfc_4231_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?").unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(sign("", b"x"), None);
    }

    #[test]
    fn settings_are_checked() {
        let mut s = ChatWebhookSettings {
            url: String::new(),
            secret: SecretString::from(""),
            attempts: 3,
            retry_delay_ms: 10,
            timeout_ms: 100,
        };
        assert!(Webhook::from_settings(&s).unwrap().is_none());
        s.url = "ftp://x".into();
        assert!(Webhook::from_settings(&s).is_err());
        s.url = "http://127.0.0.1:9/hook".into();
        assert!(Webhook::from_settings(&s).unwrap().is_some());
        s.attempts = 0;
        assert!(Webhook::from_settings(&s).is_err());
    }
}
