//! Typed configuration, loaded in layers with the `config` crate (documented in
//! `config/default.toml`, the single reference for every setting):
//! built-in defaults → `config/default.toml` → `config/{environment}.toml` →
//! `config/cloud/{cloud}.toml` → environment variables `SWITCHYARD__SECTION__KEY`.
//!
//! The defaults are compiled into the binary, so `switchyard` runs from any directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use switchyard_actors::activity::ActivityConfig;
use switchyard_actors::connection::ConnectionSettings;
use switchyard_actors::history::HistoryLimits;
use switchyard_actors::hub_arguments::{self, ArgumentsDefault};
use switchyard_actors::mailbox::{ActorKind, MailboxSettings, SlowConsumerPolicy};
use switchyard_actors::payload::{PayloadLimits, MAX_CONFIGURABLE_DEPTH};
use switchyard_actors::quotas::TenantQuotas;

/// The environment variable prefix; `__` separates every level below it.
pub const ENV_PREFIX: &str = "SWITCHYARD";
/// Selects `config/{environment}.toml`.
pub const ENV_ENVIRONMENT: &str = "SWITCHYARD__ENVIRONMENT";
/// Selects `config/cloud/{cloud}.toml`.
pub const ENV_CLOUD: &str = "SWITCHYARD__CLOUD";
/// Where the configuration files are (default `./config`).
pub const ENV_CONFIG_DIR: &str = "SWITCHYARD_CONFIG_DIR";

const BUILTIN_DEFAULTS: &str = include_str!("../config/default.toml");

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("configuration: cloud overlay {0} does not exist")]
    MissingCloud(PathBuf),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: String,
    pub server: ServerSettings,
    pub node: NodeSettings,
    pub auth: AuthSettings,
    pub session: SessionConfig,
    pub rate_limit: RateLimitConfig,
    pub actors: ActorsConfig,
    pub history: HistoryConfig,
    pub publish: PublishConfig,
    pub payload: PayloadSettings,
    pub redis: RedisSettings,
    pub presence: PresenceSettings,
    pub database: DatabaseSettings,
    pub signalr: SignalRSettings,
    pub cors: CorsSettings,
    pub scheduler: SchedulerSettings,
    pub change_feed: ChangeFeedSettings,
    pub chat: ChatSettings,
    pub activity: ActivitySettings,
    pub quotas: QuotaSettings,
    pub connection_limits: ConnectionLimitSettings,
    pub admin: AdminSettings,
    pub azure: AzureSettings,
}

/// `[azure]`: the Azure-compatible REST API's own authentication (`src/azure_auth.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct AzureSettings {
    /// The `AccessKey` of the Azure connection string back ends use; empty: only Switchyard's
    /// own Service tokens are taken.
    pub access_key: SecretString,
    /// The tenant an access-key caller speaks for (its `tenantKey`); empty: none.
    pub tenant_key: String,
}

/// `[quotas]`: every tenant's quotas unless it has its own.
#[derive(Debug, Clone, Deserialize)]
pub struct QuotaSettings {
    pub max_connections: usize,
    pub publishes_per_second: u32,
    pub max_subscriptions_per_connection: usize,
}

/// `[connection_limits]`: connections one caller may hold on one node (`0` = no limit).
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionLimitSettings {
    pub max_per_user: usize,
    pub max_per_ip: usize,
}

/// `[activity]`: what the activity recorder keeps per tenant and how fast it may stream.
#[derive(Debug, Clone, Deserialize)]
pub struct ActivitySettings {
    pub recent_events: usize,
    pub max_events_per_second: u32,
    pub rate_window_secs: u64,
    pub forget_after_secs: u64,
}

/// `[admin]`: how run-time changes made through the admin API are kept.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// Store actor limits and tenant quotas changed at run time in the database.
    pub persist: bool,
    /// How often each node re-reads stored changes (so a change made on one node reaches all).
    pub reload_interval_ms: u64,
    /// How often the node samples its figures for the console's charts.
    pub sample_interval_ms: u64,
    /// How far back the samples go (the ring buffer holds this window).
    pub sample_window_secs: u64,
}

/// `[chat]`: the chat hub's limits and the offline webhook (`docs/chat.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatSettings {
    pub max_content_chars: usize,
    pub send_rate_per_minute: u32,
    pub send_burst: u32,
    pub typing_timeout_ms: u64,
    pub max_participants: usize,
    pub history_page_size: u32,
    pub history_max_page_size: u32,
    pub max_pending_on_connect: u32,
    pub webhook: ChatWebhookSettings,
}

/// `[chat.webhook]`: the push-notification webhook for offline recipients.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatWebhookSettings {
    pub url: String,
    pub secret: SecretString,
    pub attempts: u32,
    pub retry_delay_ms: u64,
    pub timeout_ms: u64,
}

/// Hub path → the argument list of events whose publisher chose none (absent: `message`).
pub type HubArgumentDefaults = HashMap<String, ArgumentsDefault>;

#[derive(Debug, Clone, Deserialize)]
pub struct SignalRSettings {
    pub hub_paths: Vec<String>,
    /// `"{hub path}={message|data}"`: what events whose publisher chose no SignalR argument list
    /// carry on that hub path (others: `message`).
    pub default_arguments: Vec<String>,
    pub negotiate_ttl_secs: u64,
    pub stateful_reconnect: bool,
    pub stateful_reconnect_grace_ms: u64,
    pub stateful_reconnect_buffer_bytes: usize,
    /// The transports clients may use, listed by negotiate in ASP.NET Core's order.
    pub transports: Vec<HubTransport>,
    /// How long a Long Polling poll waits for messages before answering 200 with none.
    pub long_polling_timeout_ms: u64,
    /// A Long Polling connection with no poll for this long ends (ASP.NET Core's
    /// `DisconnectTimeout`).
    pub disconnect_timeout_ms: u64,
    /// Bytes a Long Polling connection queues for its next poll before its actor waits.
    pub long_polling_buffer_bytes: usize,
    /// Request bodies (SSE and Long Polling sends) queued for the connection actor before a
    /// send waits.
    pub send_queue_frames: usize,
    /// How often a Server-Sent Events response checks that its client is still connected.
    pub sse_disconnect_check_ms: u64,
}

/// A SignalR transport, named as in negotiate's `availableTransports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HubTransport {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

impl HubTransport {
    /// ASP.NET Core's order of preference (negotiate lists them so; clients try them so).
    pub const ALL: [HubTransport; 3] = [
        HubTransport::WebSockets,
        HubTransport::ServerSentEvents,
        HubTransport::LongPolling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HubTransport::WebSockets => "WebSockets",
            HubTransport::ServerSentEvents => "ServerSentEvents",
            HubTransport::LongPolling => "LongPolling",
        }
    }

    /// Negotiate's `transferFormats`: Server-Sent Events carry text only.
    pub fn transfer_formats(self) -> &'static [&'static str] {
        match self {
            HubTransport::ServerSentEvents => &["Text"],
            HubTransport::WebSockets | HubTransport::LongPolling => &["Text", "Binary"],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
    pub max_age_secs: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    /// Pending connections the kernel queues before the server accepts them.
    pub backlog: u32,
    pub shutdown_timeout_ms: u64,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeSettings {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub jwt_public_key_pem: String,
    pub jwt_public_key_file: String,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
    pub dev_tokens: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionConfig {
    pub max_frame_bytes: usize,
    pub heartbeat_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub max_subscriptions: usize,
    pub max_bad_frames: u32,
    pub close_on_token_expiry: bool,
    pub max_publishes_in_flight: usize,
    pub max_write_chunk_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitConfig {
    pub messages_per_second: u32,
    pub burst: u32,
    pub max_violations: u32,
    /// Roles whose connections are not rate-limited (back-end publishers).
    pub exempt_roles: Vec<switchyard_actors::identity::Role>,
}

/// One actor kind's `[actors.<kind>]` table.
#[derive(Debug, Clone, Deserialize)]
pub struct ActorConfig {
    pub mailbox: usize,
    #[serde(default = "default_policy")]
    pub policy: SlowConsumerPolicy,
    #[serde(default = "default_queued_bytes")]
    pub max_queued_bytes: usize,
}

fn default_policy() -> SlowConsumerPolicy {
    SlowConsumerPolicy::Disconnect
}

fn default_queued_bytes() -> usize {
    4 << 20
}

#[derive(Debug, Clone, Deserialize)]
pub struct BrokerActorConfig {
    pub mailbox: usize,
    pub shards: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActorsConfig {
    pub session: ActorConfig,
    pub broker: BrokerActorConfig,
    pub tenant_group: ActorConfig,
    pub redis_bridge: ActorConfig,
    pub scheduler: ActorConfig,
    pub pg_listener: ActorConfig,
    pub activity: ActorConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryConfig {
    pub size: usize,
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PublishConfig {
    pub timeout_ms: u64,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
}

/// `[payload]`: the bounds of every event's data.
#[derive(Debug, Clone, Deserialize)]
pub struct PayloadSettings {
    pub max_depth: usize,
    pub max_bytes: usize,
}

impl PayloadSettings {
    fn limits(&self) -> PayloadLimits {
        PayloadLimits {
            max_depth: self.max_depth,
            max_bytes: self.max_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: SecretString,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: String,
    pub password: SecretString,
    pub database: u32,
    pub prefix: String,
    pub publish_retry_attempts: u32,
    pub publish_retry_delay_ms: u64,
    pub command_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Redis Cluster seed nodes, `host:port` separated by commas; set = the Redis Cluster engine.
    pub cluster_nodes: String,
    pub cluster_partitions: u32,
    /// Ingest streams on a Redis Cluster (drafts spread over them by channel).
    pub cluster_ingest_streams: u32,
    pub replica_acks: u32,
    pub replica_ack_timeout_ms: u64,
}

impl RedisSettings {
    /// The Redis Cluster seed nodes as URLs (TLS, user name and password as for one Redis), or
    /// none when `cluster_nodes` is empty.
    pub fn cluster_seed_urls(&self) -> Vec<String> {
        use secrecy::ExposeSecret;
        let scheme = if self.tls { "rediss" } else { "redis" };
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let password = self.password.expose_secret();
        let auth = match (self.username.is_empty(), password.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!(":{}@", enc(password)),
            (false, _) => format!("{}:{}@", enc(&self.username), enc(password)),
        };
        self.cluster_nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| format!("{scheme}://{auth}{n}"))
            .collect()
    }

    /// The Redis URL for cluster mode, or `None` for embedded mode.
    pub fn connection_url(&self) -> Option<String> {
        use secrecy::ExposeSecret;
        let url = self.url.expose_secret().trim();
        if !url.is_empty() {
            return Some(url.to_owned());
        }
        if self.host.trim().is_empty() {
            return None;
        }
        let scheme = if self.tls { "rediss" } else { "redis" };
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let password = self.password.expose_secret();
        let auth = match (self.username.is_empty(), password.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!(":{}@", enc(password)),
            (false, _) => format!("{}:{}@", enc(&self.username), enc(password)),
        };
        Some(format!(
            "{scheme}://{auth}{}:{}/{}",
            self.host.trim(),
            self.port,
            self.database
        ))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PresenceSettings {
    pub node_ttl_secs: u64,
    pub heartbeat_interval_ms: u64,
    pub offline_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

/// `[scheduler]`: the session-timeout scheduler and the default dining-session timeouts.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerSettings {
    pub scan_interval_ms: u64,
    pub inactive_timeout_secs: u64,
    pub served_order_timeout_secs: u64,
    pub warn_before_secs: u64,
}

/// `[change_feed]`: the Postgres change outbox relay (ignored on SQLite).
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeFeedSettings {
    pub enabled: bool,
    pub lock_key: i64,
    pub retry_interval_ms: u64,
    pub poll_interval_ms: u64,
    pub batch_size: usize,
    pub retention_secs: u64,
    pub default_payload: String,
    pub full_payload_entity_types: Vec<String>,
    /// Table name → entity type; unmapped `mt_doc_x_y` tables become `XY`.
    pub entity_types: HashMap<String, String>,
}

impl Settings {
    /// Loads the layers from `$SWITCHYARD_CONFIG_DIR` (default `./config`) and the process
    /// environment.
    pub fn load() -> Result<Self, SettingsError> {
        let dir = std::env::var(ENV_CONFIG_DIR).unwrap_or_else(|_| "config".to_owned());
        Self::load_from(Path::new(&dir), std::env::vars().collect())
    }

    /// Loads the layers from `dir` with `env` standing in for the process environment.
    pub fn load_from(dir: &Path, env: HashMap<String, String>) -> Result<Self, SettingsError> {
        let environment = env
            .get(ENV_ENVIRONMENT)
            .cloned()
            .unwrap_or_else(|| "development".to_owned());
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(
                BUILTIN_DEFAULTS,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::from(dir.join("default.toml")).required(false))
            .add_source(config::File::from(dir.join(format!("{environment}.toml"))).required(false))
            .set_override("environment", environment.clone())?;
        if let Some(cloud) = env.get(ENV_CLOUD).filter(|c| !c.is_empty()) {
            let path = dir.join("cloud").join(format!("{cloud}.toml"));
            if !path.exists() {
                return Err(SettingsError::MissingCloud(path));
            }
            builder = builder.add_source(config::File::from(path));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("cors.allowed_origins")
                .with_list_parse_key("signalr.hub_paths")
                .with_list_parse_key("signalr.default_arguments")
                .with_list_parse_key("signalr.transports")
                .with_list_parse_key("rate_limit.exempt_roles")
                .with_list_parse_key("change_feed.full_payload_entity_types")
                .source(Some(env.into_iter().collect())),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    /// Production-like environments refuse to start without real keys.
    pub fn is_development(&self) -> bool {
        self.environment == "development"
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_timeout_ms)
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish.timeout_ms)
    }

    /// The default tenant quotas (`[quotas]`).
    pub fn quota_defaults(&self) -> TenantQuotas {
        let q = &self.quotas;
        TenantQuotas {
            max_connections: q.max_connections,
            publishes_per_second: q.publishes_per_second,
            max_subscriptions_per_connection: q.max_subscriptions_per_connection,
        }
    }

    pub fn activity_config(&self) -> ActivityConfig {
        let a = &self.activity;
        ActivityConfig {
            recent_events: a.recent_events,
            max_events_per_second: a.max_events_per_second,
            rate_window_secs: a.rate_window_secs.max(1),
            forget_after: Duration::from_secs(a.forget_after_secs),
        }
    }

    /// The payload limits, refused at start-up when they could not protect every reader.
    pub fn payload_limits(&self) -> Result<PayloadLimits, SettingsError> {
        let p = &self.payload;
        if p.max_depth == 0 || p.max_depth > MAX_CONFIGURABLE_DEPTH {
            return Err(SettingsError::Invalid(format!(
                "payload.max_depth must be between 1 and {MAX_CONFIGURABLE_DEPTH}, not {}",
                p.max_depth
            )));
        }
        if p.max_bytes == 0 {
            return Err(SettingsError::Invalid(
                "payload.max_bytes must be greater than 0".into(),
            ));
        }
        Ok(p.limits())
    }

    /// Each hub path's default SignalR argument list (`signalr.default_arguments`), refused at
    /// start-up when an entry is malformed or names a path that is not a hub.
    pub fn hub_arguments(&self) -> Result<HubArgumentDefaults, SettingsError> {
        let mut defaults = HubArgumentDefaults::new();
        for entry in &self.signalr.default_arguments {
            let bad = |why: &str| {
                SettingsError::Invalid(format!(
                    "signalr.default_arguments: {entry:?} {why} (expected \"<hub path>=message\" \
                     or \"<hub path>=data\")"
                ))
            };
            let (path, form) = entry.rsplit_once('=').ok_or_else(|| bad("has no '='"))?;
            let form = match form.trim() {
                hub_arguments::MESSAGE => ArgumentsDefault::Message,
                hub_arguments::DATA => ArgumentsDefault::Data,
                _ => return Err(bad("names an unknown form")),
            };
            let path = path.trim();
            if !self.signalr.hub_paths.iter().any(|p| p == path) {
                return Err(bad("is not one of signalr.hub_paths"));
            }
            defaults.insert(path.to_owned(), form);
        }
        Ok(defaults)
    }

    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history.size,
            ttl: Duration::from_secs(self.history.ttl_secs),
        }
    }

    pub fn session_settings(&self) -> ConnectionSettings {
        let s = &self.session;
        ConnectionSettings {
            max_frame_bytes: s.max_frame_bytes,
            heartbeat_interval: Duration::from_millis(s.heartbeat_interval_ms),
            client_timeout: Duration::from_millis(s.client_timeout_ms),
            write_timeout: Duration::from_millis(s.write_timeout_ms),
            handshake_timeout: Duration::from_millis(s.handshake_timeout_ms),
            max_subscriptions: s.max_subscriptions,
            rate_per_second: self.rate_limit.messages_per_second,
            rate_burst: self.rate_limit.burst,
            max_rate_violations: self.rate_limit.max_violations,
            rate_exempt_roles: self.rate_limit.exempt_roles.clone(),
            max_bad_frames: s.max_bad_frames,
            close_on_token_expiry: s.close_on_token_expiry,
            resume_buffer_bytes: self.signalr.stateful_reconnect_buffer_bytes,
            max_publishes_in_flight: s.max_publishes_in_flight,
            max_write_chunk_bytes: s.max_write_chunk_bytes,
        }
    }

    /// The configured mailbox limits of `kind` (the starting point of the live limits).
    pub fn mailbox(&self, kind: ActorKind) -> MailboxSettings {
        let a = &self.actors;
        let c = match kind {
            ActorKind::Connection => &a.session,
            ActorKind::Broker => {
                return MailboxSettings {
                    mailbox: a.broker.mailbox,
                    policy: default_policy(),
                    max_queued_bytes: default_queued_bytes(),
                }
            }
            ActorKind::TenantGroup => &a.tenant_group,
            ActorKind::RedisBridge => &a.redis_bridge,
            ActorKind::Scheduler => &a.scheduler,
            ActorKind::ChangeFeed => &a.pg_listener,
            ActorKind::Activity => &a.activity,
        };
        MailboxSettings {
            mailbox: c.mailbox,
            policy: c.policy,
            max_queued_bytes: c.max_queued_bytes,
        }
    }

    /// Cluster mode's configuration, or `None` for embedded mode.
    pub fn cluster(&self) -> Option<switchyard_actors::engine::redis::ClusterConfig> {
        let r = &self.redis;
        let p = &self.presence;
        let cluster_nodes = r.cluster_seed_urls();
        let url = match r.connection_url() {
            Some(url) => url,
            None if !cluster_nodes.is_empty() => String::new(),
            None => return None,
        };
        Some(switchyard_actors::engine::redis::ClusterConfig {
            url,
            cluster_nodes,
            cluster_partitions: r.cluster_partitions,
            cluster_ingest_streams: r.cluster_ingest_streams,
            replica_acks: r.replica_acks,
            replica_ack_timeout: Duration::from_millis(r.replica_ack_timeout_ms),
            prefix: r.prefix.clone(),
            publish_attempts: r.publish_retry_attempts,
            publish_retry_delay: Duration::from_millis(r.publish_retry_delay_ms),
            command_timeout: Duration::from_millis(r.command_timeout_ms),
            reconnect_min: Duration::from_millis(r.reconnect_min_ms),
            reconnect_max: Duration::from_millis(r.reconnect_max_ms),
            history: self.history_limits(),
            // Start-up refuses limits `payload_limits` refuses, before cluster mode is built.
            payload: self.payload.limits(),
            node_ttl: Duration::from_secs(p.node_ttl_secs),
            heartbeat: Duration::from_millis(p.heartbeat_interval_ms),
            offline_grace: Duration::from_millis(p.offline_grace_ms),
        })
    }

    /// Broker shards to start: the configured number, or one per core.
    pub fn broker_shards(&self) -> usize {
        match self.actors.broker.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn load(env: &[(&str, &str)]) -> Settings {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_from(
            &dir,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn defaults_then_environment_file_then_variables() {
        let s = load(&[]);
        assert_eq!(s.environment, "development");
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.session.max_frame_bytes, 32 * 1024);
        assert_eq!(s.session.max_subscriptions, 100);
        assert_eq!(s.session.write_timeout_ms, 5000);
        assert_eq!(s.actors.session.policy, SlowConsumerPolicy::Disconnect);
        assert_eq!(s.signalr.hub_paths, ["/hubs/notifications"]);
        assert!(s.cors.allowed_origins.is_empty());

        let s = load(&[(ENV_ENVIRONMENT, "production")]);
        assert_eq!(s.server.host, "0.0.0.0");
        assert!(!s.auth.dev_tokens);

        let s = load(&[
            ("SWITCHYARD__SERVER__PORT", "9123"),
            ("SWITCHYARD__AUTH__JWT_SECRET", "s3cret"),
            ("SWITCHYARD__ACTORS__SESSION__MAILBOX", "7"),
            ("SWITCHYARD__ACTORS__SESSION__POLICY", "drop"),
            ("SWITCHYARD__REDIS__URL", "redis://127.0.0.1:6380/2"),
            (
                "SWITCHYARD__CORS__ALLOWED_ORIGINS",
                "https://a.example,https://b.example",
            ),
            (
                "SWITCHYARD__SIGNALR__HUB_PATHS",
                "/hubs/notifications,/hubs/chat",
            ),
        ]);
        assert_eq!(
            s.cors.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(s.signalr.hub_paths, ["/hubs/notifications", "/hubs/chat"]);
        assert_eq!(s.server.port, 9123);
        assert_eq!(s.auth.jwt_secret.expose_secret(), "s3cret");
        assert_eq!(s.mailbox(ActorKind::Connection).mailbox, 7);
        assert_eq!(s.actors.session.policy, SlowConsumerPolicy::Drop);
        assert_eq!(s.redis.url.expose_secret(), "redis://127.0.0.1:6380/2");
    }

    #[test]
    fn hub_argument_defaults_are_per_hub_path_and_checked() {
        assert!(load(&[]).hub_arguments().unwrap().is_empty());
        let s = load(&[
            (
                "SWITCHYARD__SIGNALR__HUB_PATHS",
                "/hubs/notifications,/hubs/chat",
            ),
            (
                "SWITCHYARD__SIGNALR__DEFAULT_ARGUMENTS",
                "/hubs/chat=data, /hubs/notifications=message",
            ),
        ]);
        let d = s.hub_arguments().unwrap();
        assert_eq!(d["/hubs/chat"], ArgumentsDefault::Data);
        assert_eq!(d["/hubs/notifications"], ArgumentsDefault::Message);
        for bad in [
            "/hubs/chat=data",
            "/hubs/notifications=bare",
            "/hubs/notifications",
        ] {
            let e = load(&[("SWITCHYARD__SIGNALR__DEFAULT_ARGUMENTS", bad)])
                .hub_arguments()
                .unwrap_err();
            assert!(e.to_string().contains("signalr.default_arguments"), "{e}");
        }
    }

    #[test]
    fn redis_cluster_nodes_select_the_cluster_engine_with_tls_and_credentials() {
        let s = load(&[]);
        assert!(s.cluster().is_none(), "embedded by default");
        let s = load(&[
            (
                "SWITCHYARD__REDIS__CLUSTER_NODES",
                "10.0.0.1:7000, 10.0.0.2:7001,",
            ),
            ("SWITCHYARD__REDIS__TLS", "true"),
            ("SWITCHYARD__REDIS__USERNAME", "app"),
            ("SWITCHYARD__REDIS__PASSWORD", "p@ss"),
        ]);
        let c = s
            .cluster()
            .expect("cluster nodes alone select cluster mode");
        assert_eq!(
            c.cluster_nodes,
            [
                "rediss://app:p%40ss@10.0.0.1:7000",
                "rediss://app:p%40ss@10.0.0.2:7001"
            ]
        );
        assert_eq!(c.cluster_partitions, 64, "the documented default");
        assert_eq!(c.cluster_ingest_streams, 4, "the documented default");
        assert_eq!(c.replica_acks, 0);
        let s = load(&[
            ("SWITCHYARD__REDIS__CLUSTER_NODES", "h:1"),
            ("SWITCHYARD__REDIS__CLUSTER_PARTITIONS", "128"),
            ("SWITCHYARD__REDIS__REPLICA_ACKS", "1"),
            ("SWITCHYARD__REDIS__CLUSTER_INGEST_STREAMS", "8"),
        ]);
        let c = s.cluster().unwrap();
        assert_eq!(c.cluster_nodes, ["redis://h:1"]);
        assert_eq!((c.cluster_partitions, c.replica_acks), (128, 1));
        assert_eq!(c.cluster_ingest_streams, 8);
    }

    #[test]
    fn payload_limits_are_configured_and_bounded() {
        let limits = load(&[]).payload_limits().unwrap();
        assert_eq!((limits.max_depth, limits.max_bytes), (64, 65536));
        let s = load(&[("SWITCHYARD__PAYLOAD__MAX_DEPTH", "20")]);
        assert_eq!(s.payload_limits().unwrap().max_depth, 20);
        for (key, value) in [
            ("SWITCHYARD__PAYLOAD__MAX_DEPTH", "0"),
            ("SWITCHYARD__PAYLOAD__MAX_DEPTH", "101"),
            ("SWITCHYARD__PAYLOAD__MAX_BYTES", "0"),
        ] {
            let e = load(&[(key, value)]).payload_limits().unwrap_err();
            assert!(e.to_string().contains("payload.max_"), "{key}={value}: {e}");
        }
    }

    #[test]
    fn redis_urls_come_from_the_url_or_the_pieces() {
        assert!(load(&[]).cluster().is_none(), "no Redis = embedded mode");
        let s = load(&[("SWITCHYARD__REDIS__URL", "redis://h:1/2")]);
        assert_eq!(s.cluster().unwrap().url, "redis://h:1/2");
        let s = load(&[
            ("SWITCHYARD__CLOUD", "azure"),
            ("SWITCHYARD__REDIS__HOST", "cache.redis.cache.windows.net"),
            ("SWITCHYARD__REDIS__PASSWORD", "p@ss/word"),
        ]);
        assert_eq!(
            s.cluster().unwrap().url,
            "rediss://:p%40ss%2Fword@cache.redis.cache.windows.net:6380/0"
        );
        for cloud in ["local", "aws", "gcp", "upstash"] {
            load(&[("SWITCHYARD__CLOUD", cloud)]);
        }
    }

    #[test]
    fn scheduler_and_change_feed_settings_take_variables() {
        let s = load(&[]);
        assert_eq!(s.database.url, "sqlite://data/switchyard.db");
        assert_eq!(s.change_feed.entity_types["mt_doc_team"], "Team");
        assert!(s.change_feed.full_payload_entity_types.is_empty());
        let s = load(&[
            ("SWITCHYARD__SCHEDULER__SCAN_INTERVAL_MS", "100"),
            (
                "SWITCHYARD__CHANGE_FEED__FULL_PAYLOAD_ENTITY_TYPES",
                "Player,Team",
            ),
            (
                "SWITCHYARD__CHANGE_FEED__ENTITY_TYPES__MT_DOC_SQUAD",
                "Squad",
            ),
        ]);
        assert_eq!(s.scheduler.scan_interval_ms, 100);
        assert_eq!(s.change_feed.full_payload_entity_types, ["Player", "Team"]);
        assert_eq!(s.change_feed.entity_types["mt_doc_squad"], "Squad");
        assert_eq!(s.change_feed.entity_types["mt_doc_team"], "Team");
    }

    #[test]
    fn chat_settings_take_variables() {
        let s = load(&[]);
        assert_eq!(s.chat.max_content_chars, 4000);
        assert!(s.chat.webhook.url.is_empty());
        let s = load(&[
            ("SWITCHYARD__CHAT__MAX_CONTENT_CHARS", "100"),
            (
                "SWITCHYARD__CHAT__WEBHOOK__URL",
                "https://push.example/hook",
            ),
            ("SWITCHYARD__CHAT__WEBHOOK__SECRET", "k3y"),
        ]);
        assert_eq!(s.chat.max_content_chars, 100);
        assert_eq!(s.chat.webhook.url, "https://push.example/hook");
        assert_eq!(s.chat.webhook.secret.expose_secret(), "k3y");
        assert!(
            !format!("{s:?}").contains("k3y"),
            "the webhook secret does not print"
        );
    }

    #[test]
    fn an_unknown_cloud_overlay_is_an_error() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let err = Settings::load_from(&dir, [(ENV_CLOUD.to_owned(), "mars".to_owned())].into())
            .unwrap_err();
        assert!(matches!(err, SettingsError::MissingCloud(_)), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = load(&[("SWITCHYARD__AUTH__JWT_SECRET", "hunter2")]);
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
