//! The node's background actors over the store, started by [`crate::startup::Application::build`]:
//! the [`SessionTimeoutScheduler`] (always) and the [`ChangeFeedListener`] (Postgres, when
//! `[change_feed] enabled`). Both stop by themselves when the node shuts down.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use switchyard_actors::change_feed::{ChangeFeedListener, EntityMap, ListenerConfig};
use switchyard_actors::mailbox::ActorKind;
use switchyard_actors::metered::{Metered, SINGLE_INSTANCE};
use switchyard_actors::node::Node;
use switchyard_actors::scheduler::{SchedulerConfig, SessionTimeoutScheduler};

use crate::settings::Settings;
use crate::store::{PgChangeFeed, Store};

/// Why the background settings were refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("[scheduler] {0}")]
    Scheduler(String),
    #[error("[change_feed] {0}")]
    ChangeFeed(String),
    #[error(transparent)]
    Entities(#[from] switchyard_actors::change_feed::EntityMapError),
}

/// Addresses of the running background actors (for tests and the admin API).
#[derive(Clone)]
pub struct Background {
    pub scheduler: Metered<SessionTimeoutScheduler>,
    /// `None` on SQLite or when the change feed is disabled.
    pub change_listener: Option<Metered<ChangeFeedListener>>,
}

/// The change feed's table ↔ entity-type map and payload strategies, from `[change_feed]`.
pub fn entity_map(settings: &Settings) -> Result<EntityMap, BackgroundError> {
    let cf = &settings.change_feed;
    let default_payload = cf
        .default_payload
        .parse()
        .map_err(|e| BackgroundError::ChangeFeed(format!("default_payload: {e}")))?;
    Ok(EntityMap::new(
        cf.entity_types.clone(),
        default_payload,
        cf.full_payload_entity_types.clone(),
    )?)
}

fn positive(name: &str, v: u64) -> Result<Duration, String> {
    if v == 0 {
        Err(format!("{name} must be greater than 0"))
    } else {
        Ok(Duration::from_millis(v))
    }
}

/// Checks `[scheduler]` and `[change_feed]` before anything starts.
pub fn validate(settings: &Settings) -> Result<(), BackgroundError> {
    let s = &settings.scheduler;
    positive("scan_interval_ms", s.scan_interval_ms).map_err(BackgroundError::Scheduler)?;
    positive("inactive_timeout_secs", s.inactive_timeout_secs)
        .map_err(BackgroundError::Scheduler)?;
    positive("served_order_timeout_secs", s.served_order_timeout_secs)
        .map_err(BackgroundError::Scheduler)?;
    let cf = &settings.change_feed;
    positive("retry_interval_ms", cf.retry_interval_ms).map_err(BackgroundError::ChangeFeed)?;
    positive("poll_interval_ms", cf.poll_interval_ms).map_err(BackgroundError::ChangeFeed)?;
    if cf.batch_size == 0 {
        return Err(BackgroundError::ChangeFeed(
            "batch_size must be greater than 0".into(),
        ));
    }
    entity_map(settings)?;
    Ok(())
}

/// Starts the background actors on the current arbiter.
pub fn start(
    settings: &Settings,
    node: Arc<Node>,
    store: &Store,
    entities: Arc<EntityMap>,
) -> Background {
    let meter = node.metrics.meter(
        ActorKind::Scheduler,
        SINGLE_INSTANCE,
        Some(node.limits.clone()),
    );
    let scheduler = SessionTimeoutScheduler::new(
        node.clone(),
        Arc::new(store.clone()),
        SchedulerConfig {
            scan_interval: Duration::from_millis(settings.scheduler.scan_interval_ms),
        },
    )
    .start();
    let scheduler = Metered::new(scheduler, meter);
    let change_listener = if settings.change_feed.enabled {
        start_change_listener(settings, node, store, entities)
    } else {
        None
    };
    Background {
        scheduler,
        change_listener,
    }
}

/// Starts a [`ChangeFeedListener`] when the store runs on Postgres (whatever `enabled` says: tests
/// start one late, to show that changes made while none ran are relayed).
pub fn start_change_listener(
    settings: &Settings,
    node: Arc<Node>,
    store: &Store,
    entities: Arc<EntityMap>,
) -> Option<Metered<ChangeFeedListener>> {
    let cf = &settings.change_feed;
    let pool = store.postgres()?;
    let feed = PgChangeFeed::new(pool.clone(), cf.lock_key);
    let config = ListenerConfig {
        retry_interval: Duration::from_millis(cf.retry_interval_ms),
        poll_interval: Duration::from_millis(cf.poll_interval_ms),
        batch_size: cf.batch_size,
        retention: Duration::from_secs(cf.retention_secs),
        entities,
    };
    let meter = node.metrics.meter(
        ActorKind::ChangeFeed,
        SINGLE_INSTANCE,
        Some(node.limits.clone()),
    );
    let addr = ChangeFeedListener::new(node, Arc::new(feed), config).start();
    Some(Metered::new(addr, meter))
}
