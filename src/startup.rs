//! Building and running one node: settings → verifier, metrics, limits, broker, tenant registry →
//! the HTTP server on a bound listener (port 0 gives a free port, read back for tests).
//!
//! Shutdown is a designed sequence ([`AppHandle::shutdown`]): stop accepting connections, tell
//! every session to close with 1012 "server restarting, reconnect", then let the HTTP server drain
//! for at most `server.shutdown_timeout_ms` before it force-closes what is left.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use switchyard_actors::broker::{BrokerConfig, BrokerHandle};
use switchyard_actors::ids::NodeId;
use switchyard_actors::mailbox::{ActorKind, ActorLimits};
use switchyard_actors::metrics::Metrics;
use switchyard_actors::node::Node;
use switchyard_actors::tenant_group::TenantRegistry;

use crate::auth::{GeneratedSecret, Verifier};
use crate::authorizer::StoreAuthorizer;
use crate::background::{self, Background};
use crate::problem::{bad_request, ApiError};
use crate::routes;
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
    pub store: Store,
    pub background: Background,
}

impl AppHandle {
    /// The shutdown sequence (see the module docs).
    pub async fn shutdown(&self) {
        let started = Instant::now();
        log::info!("node {}: shutting down", self.node.id);
        self.server.pause().await;
        self.node.begin_shutdown();
        self.server.stop(true).await;
        log::info!("node {}: stopped in {:?}", self.node.id, started.elapsed());
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
        let (verifier, generated) =
            Verifier::from_settings(&settings.auth, settings.is_development())?;
        if let Some(GeneratedSecret(secret)) = generated {
            log::warn!(
                "no JWT secret configured; generated one for this development run: {secret} \
                 (set SWITCHYARD__AUTH__JWT_SECRET to keep tokens valid across restarts)"
            );
        }
        background::validate(&settings)?;
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
        let broker = BrokerHandle::start(
            BrokerConfig {
                shards: settings.broker_shards(),
                history: settings.history_limits(),
                request_timeout: settings.publish_timeout(),
                origin: id.clone(),
            },
            limits.clone(),
            metrics.clone(),
        );
        let tenants =
            TenantRegistry::new(limits.clone(), metrics.clone(), settings.publish_timeout());
        let node = Arc::new(Node::new(
            id.clone(),
            broker,
            tenants,
            metrics,
            limits,
            settings.session_settings(),
            Arc::new(StoreAuthorizer::new(store.clone(), entities.clone())),
        ));
        let background = background::start(&settings, node.clone(), &store, entities);

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!("binding {}:{}", settings.server.host, settings.server.port)
            })?;
        let port = listener.local_addr()?.port();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shutdown_secs = Duration::from_millis(settings.server.shutdown_timeout_ms)
            .as_secs_f64()
            .ceil() as u64;
        let max_body = settings.server.max_body_bytes;
        let store_data = web::Data::new(store.clone());
        let state = web::Data::new(AppState {
            node: node.clone(),
            verifier: Arc::new(verifier),
            settings: Arc::new(settings),
        });
        let server = HttpServer::new(move || {
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
                .wrap(from_fn(observe))
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such route".into()))
                }))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(shutdown_secs)
        .listen(listener)?
        .run();
        log::info!("node {id} listening on port {port} ({workers} workers)");
        let handle = AppHandle {
            server: server.handle(),
            node,
            store,
            background,
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

    /// Runs until [`AppHandle::shutdown`] completes.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
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
