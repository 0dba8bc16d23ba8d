//! Building and running one node: settings → verifier, metrics, limits, broker, tenant registry →
//! the HTTP server on a bound listener (port 0 gives a free port, read back for tests).
//!
//! Shutdown is a designed sequence ([`AppHandle::shutdown`], phases in
//! [`switchyard_actors::shutdown`]): stop accepting connections, tell every session to close with
//! 1012 "server restarting, reconnect" and every background task to finish, let the HTTP server
//! drain for at most `server.shutdown_timeout_ms` before it force-closes what is left, wait for the
//! background tasks (the change-feed lease released), then stop and join the node's own threads.
//! It returns only when all of that is done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App};
use anyhow::Context;
use switchyard_actors::activity::{ActivityRecorder, ActivitySink, AttachPublisher};
use switchyard_actors::broker::{BrokerConfig, BrokerHandle, Publisher};
use switchyard_actors::connection::watchdog::{ConnectionWatchdog, WatchdogSettings};
use switchyard_actors::connection::{conn_socket, Connections};
use switchyard_actors::connection_limits::ConnectionLimiter;
use switchyard_actors::engine::embedded::{EmbeddedEngine, EmbeddedPresence};
use switchyard_actors::engine::redis::bridge::{AttachShards, RedisBridge};
use switchyard_actors::engine::redis::{Cluster, RedisEngine, RedisPresence};
use switchyard_actors::engine::BrokerEngine;
use switchyard_actors::ids::NodeId;
use switchyard_actors::mailbox::{ActorKind, ActorLimits};
use switchyard_actors::metered::{Metered, SINGLE_INSTANCE};
use switchyard_actors::metrics::Metrics;
use switchyard_actors::node::Node;
use switchyard_actors::presence::{Announcer, PresenceEngine, PresenceHook};
use switchyard_actors::quotas::QuotaBook;
use switchyard_actors::shutdown::ShutdownController;
use switchyard_actors::tenant_group::{TenantGroups, TenantRegistry};

use crate::admin_samples::{self, Samples};
use crate::auth::{GeneratedSecret, Verifier};
use crate::authorizer::StoreAuthorizer;
use crate::azure_auth::AccessKeyVerifier;
use crate::background::{self, Background};
use crate::chat::{ChatConfig, ChatService};
use crate::http_server::{self, bind_listener, ServeOptions};
use crate::hub_transports::{HttpSessions, TransportSettings};
use crate::problem::{self, bad_request, ApiError};
use crate::routes;
use crate::routes::signalr::Negotiations;
use crate::settings::CorsSettings;
use crate::settings::Settings;
use crate::state::AppState;
use crate::store::{redact, SessionDefaults, Store};

/// A built, not yet running node.
pub struct Application {
    port: u16,
    server: Server,
    handle: AppHandle,
}

/// Controls a running node (shutdown) and exposes its shared state to tests.
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    pub node: Arc<Node>,
    /// What the node's WebSocket connections share (settings, parked connections, watchdog).
    pub connections: Arc<Connections>,
    pub store: Store,
    pub background: Background,
    /// How long the background tasks get to finish once told (`server.shutdown_timeout_ms`).
    drain_timeout: Duration,
    /// Held for the whole sequence, `true` once it ran: a second caller waits for the first one's
    /// sequence to end instead of starting another.
    stopped: Arc<tokio::sync::Mutex<bool>>,
}

impl AppHandle {
    /// The shutdown sequence (see the module docs). Returns when it is complete, also to a caller
    /// that arrives while another one runs it.
    pub async fn shutdown(&self) {
        let mut stopped = self.stopped.lock().await;
        if *stopped {
            return;
        }
        let started = Instant::now();
        let id = &self.node.id;
        log::info!("node {id}: shutting down");
        self.server.pause().await;
        let shutdown = &self.node.shutdown;
        shutdown.begin();
        // Graceful: this node's presence goes at once, not after its heartbeat expires.
        self.node.tenants.presence().node_stopping().await;
        self.server.stop(true).await;
        // The tasks were told with the sessions; they have had the drain's time already.
        let left = self.drain_timeout.saturating_sub(started.elapsed());
        let late = shutdown.wait_for_holders(left).await;
        if !late.is_empty() {
            log::warn!("node {id}: stopping without waiting longer for {late:?}");
        }
        // Last: the tasks above publish through these threads until they end.
        shutdown.stop_threads().await;
        *stopped = true;
        log::info!("node {id}: stopped in {:?}", started.elapsed());
    }
}

fn node_id(settings: &Settings) -> NodeId {
    let id = if settings.node.id.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "switchyard".to_owned());
        format!("{host}-{}", std::process::id())
    } else {
        settings.node.id.clone()
    };
    NodeId(Arc::from(id))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Bound first: a taken port is a clean start-up error, before any actor runs.
        let listener = bind_listener(&settings.server).with_context(|| {
            format!("binding {}:{}", settings.server.host, settings.server.port)
        })?;
        let port = listener.local_addr()?.port();
        let (verifier, generated) =
            Verifier::from_settings(&settings.auth, settings.is_development())?;
        if let Some(GeneratedSecret(secret)) = generated {
            log::warn!(
                "no JWT secret configured; generated one for this development run: {secret} \
                 (set SWITCHYARD__AUTH__JWT_SECRET to keep tokens valid across restarts)"
            );
        }
        let azure_keys =
            AccessKeyVerifier::from_settings(&settings.azure, settings.auth.leeway_secs)?
                .map(Arc::new);
        background::validate(&settings)?;
        let payload = settings.payload_limits()?;
        let hub_arguments = settings.hub_arguments()?;
        let chat_config = ChatConfig::from_settings(&settings.chat)?;
        let store = Store::open(
            &settings.database,
            SessionDefaults::from(&settings.scheduler),
        )
        .await
        .with_context(|| format!("opening the database {}", redact(&settings.database.url)))?;
        log::info!(
            "database {} ({:?}) migrated",
            redact(&settings.database.url),
            store.backend()
        );
        let entities = Arc::new(background::entity_map(&settings)?);
        let metrics = Arc::new(Metrics::new());
        let limits = Arc::new(ActorLimits::new(|k| settings.mailbox(k)));
        for kind in ActorKind::ALL {
            metrics
                .mailbox_capacity
                .with_label_values(&[kind.as_str()])
                .set(limits.get(kind).mailbox() as i64);
        }
        let id = node_id(&settings);
        let quotas = Arc::new(QuotaBook::new(settings.quota_defaults(), metrics.clone()));
        // Owns every thread started below; the node keeps it for its shutdown.
        let shutdown = ShutdownController::new();
        let activity = {
            let (config, limits, metrics) =
                (settings.activity_config(), limits.clone(), metrics.clone());
            let thread = shutdown.spawn_thread("activity recorder");
            let meter = metrics.meter(ActorKind::Activity, SINGLE_INSTANCE, Some(limits.clone()));
            let addr = ActivityRecorder::start_in_arbiter(&thread, move |_| {
                ActivityRecorder::new(config, limits, metrics)
            });
            Metered::new(addr, meter)
        };
        // Filled below with the chat service, which relays presence to conversation partners.
        let presence_hook = PresenceHook::default();
        // The engine, chosen once: Redis in cluster mode, else the embedded one.
        let cluster = match settings.cluster() {
            None => None,
            Some(cfg) => {
                let cluster = Cluster::new(cfg, id.clone(), metrics.clone())
                    .context("configuring Redis (cluster mode)")?;
                forget_previous_run(&cluster).await;
                let (bridge_cluster, bridge_limits) = (cluster.clone(), limits.clone());
                let thread = shutdown.spawn_thread("redis bridge");
                let meter = metrics.meter(
                    ActorKind::RedisBridge,
                    SINGLE_INSTANCE,
                    Some(limits.clone()),
                );
                let bridge = Metered::new(
                    RedisBridge::start_in_arbiter(&thread, move |_| {
                        RedisBridge::new(bridge_cluster, bridge_limits)
                    }),
                    meter,
                );
                log::info!("cluster mode: Redis prefix {:?}", settings.redis.prefix);
                let seeds = settings.redis.cluster_seed_urls().len();
                if seeds > 0 {
                    log::info!(
                        "Redis Cluster engine: {seeds} seed nodes, {} partitions (sharded pub/sub)",
                        settings.redis.cluster_partitions
                    );
                }
                Some((cluster, bridge))
            }
        };
        let request_timeout = settings.publish_timeout();
        let activity_sink = ActivitySink::new(activity.recipient(), metrics.clone());
        let broker = BrokerHandle::start(
            BrokerConfig {
                shards: settings.broker_shards(),
                history: settings.history_limits(),
                request_timeout,
                origin: id.clone(),
                interest: cluster.as_ref().map(|(_, bridge)| bridge.recipient()),
                activity: activity_sink.clone(),
            },
            limits.clone(),
            metrics.clone(),
            &shutdown,
            |shards| -> Arc<dyn BrokerEngine> {
                match &cluster {
                    None => Arc::new(EmbeddedEngine::new(shards)),
                    Some((cluster, bridge)) => {
                        bridge.do_send(AttachShards(shards.clone()));
                        Arc::new(RedisEngine::new(
                            cluster.clone(),
                            bridge.clone(),
                            shards,
                            request_timeout,
                        ))
                    }
                }
            },
        );
        let publisher = Publisher::new(broker.clone(), metrics.clone(), activity_sink.clone());
        activity.do_send(AttachPublisher(Arc::new(publisher.clone())));
        let announcer = Announcer::new(Arc::new(publisher.clone()), presence_hook.clone());
        let groups = TenantGroups::new(limits.clone(), metrics.clone(), request_timeout);
        let presence: Arc<dyn PresenceEngine> = match cluster {
            None => Arc::new(EmbeddedPresence::new(
                Arc::new(groups.clone()),
                announcer,
                Duration::from_millis(settings.presence.offline_grace_ms),
            )),
            Some((cluster, _)) => Arc::new(RedisPresence::start(
                cluster,
                announcer,
                shutdown.hold("presence janitor"),
            )),
        };
        let tenants = TenantRegistry::new(groups, presence);
        let sessions = settings.session_settings();
        let watchdog = ConnectionWatchdog::start_on(
            &shutdown.spawn_thread("connection watchdog"),
            WatchdogSettings {
                write_timeout: sessions.write_timeout,
                heartbeat_interval: sessions.heartbeat_interval,
                client_timeout: sessions.client_timeout,
            },
            metrics.clone(),
        );
        let node = Arc::new_cyclic(|node| {
            let chat = ChatService::new(store.clone(), node.clone(), chat_config);
            presence_hook.set(Arc::new(chat.clone()));
            Node::new(
                id.clone(),
                broker,
                publisher,
                tenants,
                metrics,
                limits,
                Arc::new(StoreAuthorizer::new(store.clone(), entities.clone())),
                quotas,
                payload,
                shutdown,
            )
            .with_hub_methods(Arc::new(chat))
            .with_activity(activity, activity_sink)
        });
        let connections = Arc::new(
            Connections::new(
                node.clone(),
                sessions,
                Duration::from_millis(settings.signalr.stateful_reconnect_grace_ms),
            )
            .with_limits(ConnectionLimiter::new(
                settings.connection_limits.max_per_user,
                settings.connection_limits.max_per_ip,
            ))
            .with_watchdog(watchdog),
        );
        if settings.admin.persist {
            routes::admin::apply_stored(&node, &store, |k| settings.mailbox(k))
                .await
                .context("applying stored actor limits and tenant quotas")?;
            reload_stored_changes(
                node.clone(),
                store.clone(),
                Duration::from_millis(settings.admin.reload_interval_ms.max(1)),
                Arc::new(settings.clone()),
            );
        }
        let samples = Arc::new(Samples::new(
            Duration::from_millis(settings.admin.sample_interval_ms),
            Duration::from_secs(settings.admin.sample_window_secs),
        ));
        admin_samples::run_sampler(node.clone(), connections.clone(), samples.clone());
        let background = background::start(&settings, node.clone(), &store, entities);

        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let drain_timeout = Duration::from_millis(settings.server.shutdown_timeout_ms);
        let shutdown_secs = drain_timeout.as_secs_f64().ceil() as u64;
        let max_body = settings.server.max_body_bytes;
        let hub_paths = settings.signalr.hub_paths.clone();
        let batch_body_bytes = settings.publish.max_batch_bytes;
        let cors = settings.cors.clone();
        let store_data = web::Data::new(store.clone());
        let app_connections = connections.clone();
        let state = web::Data::new(AppState {
            node: node.clone(),
            connections,
            verifier: Arc::new(verifier),
            negotiations: Negotiations::new(Duration::from_secs(
                settings.signalr.negotiate_ttl_secs,
            )),
            http_sessions: Arc::new(HttpSessions::new(TransportSettings::from(
                &settings.signalr,
            ))),
            settings: Arc::new(settings),
            hub_arguments,
            samples,
            azure_keys,
        });
        let http_errors = node.metrics.http_errors.clone();
        let options = ServeOptions {
            workers,
            shutdown_timeout_secs: shutdown_secs,
            http_errors,
            // Records each connection's socket, for the session watchdog to reset one that stalls.
            on_connect: conn_socket::on_connect,
        };
        let server = http_server::serve(listener, options, move || {
            App::new()
                .app_data(state.clone())
                .app_data(store_data.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(|e, _| bad_request(format_args!("request body: {e}"))),
                )
                .app_data(web::PathConfig::default().error_handler(|e, _| bad_request(e)))
                .app_data(web::QueryConfig::default().error_handler(|e, _| bad_request(e)))
                .wrap(cors_policy(&cors))
                .wrap(from_fn(problem::problem_json_everywhere))
                .wrap(from_fn(observe))
                .configure(|cfg| routes::configure(cfg, &hub_paths, batch_body_bytes))
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such route".into()))
                }))
        })?;
        log::info!("node {id} listening on port {port} ({workers} workers)");
        let handle = AppHandle {
            server: server.handle(),
            node,
            connections: app_connections,
            store,
            background,
            drain_timeout,
            stopped: Arc::default(),
        };
        Ok(Self {
            port,
            server,
            handle,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Runs until [`AppHandle::shutdown`] completes (the HTTP server stops in its middle).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        // Waits for the rest of the sequence (or runs it, had the server stopped by itself).
        self.handle.shutdown().await;
        Ok(())
    }
}

/// Re-reads stored admin changes every `every` until the node shuts down, so a change made
/// through another node sharing the database applies here too.
fn reload_stored_changes(node: Arc<Node>, store: Store, every: Duration, settings: Arc<Settings>) {
    let mut shutdown = node.shutdown.hold("admin reload");
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let defaults = |k| settings.mailbox(k);
                    if let Err(e) = routes::admin::apply_stored(&node, &store, defaults).await {
                        log::warn!("admin: stored changes not re-read: {e}");
                    }
                }
                _ = shutdown.recv() => return,
            }
        }
    });
}

/// Browser CORS for negotiate and the REST API: the allowed origin is echoed (never `*`),
/// credentials are allowed, and SignalR's request headers may be sent.
fn cors_policy(cfg: &CorsSettings) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "x-requested-with",
            "x-signalr-user-agent",
        ])
        .supports_credentials()
        .max_age(cfg.max_age_secs);
    if cfg.allowed_origins.is_empty() {
        cors = cors.allow_any_origin();
    }
    for origin in &cfg.allowed_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Counts error responses by status and logs each request without its query string (which may
/// carry an `access_token`).
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.path().to_owned());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await?;
    let status = res.status();
    if status.as_u16() >= 400 {
        if let Some(state) = state {
            state
                .node
                .metrics
                .http_errors
                .with_label_values(&[status.as_str()])
                .inc();
        }
    }
    log::debug!(
        "{method} {path} -> {} in {:?}",
        status.as_u16(),
        started.elapsed()
    );
    Ok(res)
}

/// A previous run under this node id (a crash, then a restart before any node found it dead: a
/// fixed `node.id`, as a StatefulSet gives) left its connections in the cluster's presence, kept
/// alive by this run's heartbeats under the same id: its users would stay online for good. They
/// go, with their `UserOffline`s after the grace period, before this run registers anyone. Tried
/// again with back-off for up to the node TTL (after which the previous run would have been found
/// dead anyway had this one not started): with Redis unreachable that long, the node starts
/// without it. The previous run's listener marks are cleared by the bridge's mark writer.
async fn forget_previous_run(cluster: &Cluster) {
    let config = cluster.config();
    let deadline = tokio::time::Instant::now() + config.node_ttl;
    let mut delay = config.reconnect_min;
    loop {
        match tokio::time::timeout(config.command_timeout, cluster.drop_own_presence()).await {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => {
                return log::info!(
                    "presence: removed {n} connections left by this node id's previous run"
                )
            }
            Ok(Err(e)) => log::warn!("presence: this node id's previous run not cleared: {e}"),
            Err(_) => log::warn!(
                "presence: this node id's previous run not cleared within {:?}",
                config.command_timeout
            ),
        }
        if tokio::time::Instant::now() + delay > deadline {
            return log::warn!("presence: starting without clearing this node id's previous run");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(config.reconnect_max);
    }
}
