//! The relay loop: take the lease, relay the outbox in order through the node's one publish path,
//! mark rows relayed once the broker accepted them, give the lease up on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{
    entity_draft, ChangeFeed, ChangeLease, EntityDraftError, EntityMap, OutboxChange,
    PUBLISH_SOURCE,
};
use crate::node::Node;
use crate::shutdown::Shutdown;
use crate::storage::StorageError;

/// The listener's settings (from `[change_feed]`).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// How often a node without the lease tries to take it, and the back-off after errors.
    pub retry_interval: Duration,
    /// The holder reads the outbox at least this often, wake-up or not.
    pub poll_interval: Duration,
    /// Changes read per round trip.
    pub batch_size: usize,
    /// Relayed changes are kept this long (for inspection), then deleted.
    pub retention: Duration,
    pub entities: Arc<EntityMap>,
}

/// Sent by the relay loop to its actor when it takes or loses the lease; no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseChanged {
    pub leading: bool,
}

/// Sent by the relay loop to its actor after a batch was relayed; no reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Relayed {
    pub count: u64,
}

/// Where the relay loop reports to (its listener actor).
pub struct Reports {
    pub lease: crate::metered::MeteredRecipient<LeaseChanged>,
    pub relayed: crate::metered::MeteredRecipient<Relayed>,
}

/// How often the holder prunes relayed outbox rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Try to lead; while leading, relay; on shutdown give the lease up and end.
pub(super) async fn relay_loop(
    node: Arc<Node>,
    feed: Arc<dyn ChangeFeed>,
    config: ListenerConfig,
    me: Reports,
    mut shutdown: Shutdown,
) {
    let mut last_error: Option<String> = None;
    while !shutdown.is_shutdown() {
        match feed.try_lead().await {
            Ok(Some(mut lease)) => {
                log::info!("node {}: holding the change-feed lease; relaying", node.id);
                me.lease.do_send(LeaseChanged { leading: true });
                let outcome = lead(&mut *lease, &node, &config, &me, &mut shutdown).await;
                lease.release().await;
                me.lease.do_send(LeaseChanged { leading: false });
                match outcome {
                    Ok(()) => log::info!("node {}: change-feed lease released", node.id),
                    Err(e) => log::warn!("node {}: change-feed lease lost: {e}", node.id),
                }
                last_error = None;
            }
            Ok(None) => last_error = None,
            Err(e) => {
                // Log a failure once until it changes, not on every retry.
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    log::warn!("node {}: change feed unavailable: {text}", node.id);
                }
                last_error = Some(text);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.retry_interval) => {}
            _ = shutdown.recv() => {}
        }
    }
}

/// Relays until shutdown (`Ok`) or until the lease fails (`Err`).
async fn lead(
    lease: &mut dyn ChangeLease,
    node: &Node,
    config: &ListenerConfig,
    me: &Reports,
    shutdown: &mut Shutdown,
) -> Result<(), StorageError> {
    let mut last_prune = Instant::now();
    loop {
        loop {
            let batch = lease.pending(config.batch_size.max(1)).await?;
            let full_batch = batch.len() >= config.batch_size.max(1);
            let (done, refused) = relay_batch(node, &config.entities, batch).await;
            let count = done.len() as u64;
            if !done.is_empty() {
                lease.mark_relayed(done).await?;
                me.relayed.do_send(Relayed { count });
            }
            if let Some(e) = refused {
                // The broker is full or stopping: keep the rest for later, in order.
                log::warn!("change feed: publish refused, retrying later: {e}");
                tokio::time::sleep(config.retry_interval).await;
                break;
            }
            if !full_batch {
                break;
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let pruned = lease.prune(config.retention).await?;
            if pruned > 0 {
                log::debug!("change feed: pruned {pruned} relayed outbox rows");
            }
        }
        if shutdown.is_shutdown() {
            return Ok(());
        }
        tokio::select! {
            woke = lease.wait_for_changes(config.poll_interval) => woke?,
            _ = shutdown.recv() => return Ok(()),
        }
    }
}

/// Publishes a batch in order. Returns the ids to mark relayed (published, or unusable and
/// skipped) and, if the broker refused one, why (that change and the rest stay pending).
async fn relay_batch(
    node: &Node,
    entities: &EntityMap,
    batch: Vec<OutboxChange>,
) -> (Vec<i64>, Option<crate::node::PublishError>) {
    let mut done = Vec::with_capacity(batch.len());
    for change in batch {
        let draft = match entity_draft(entities, &change, &node.payload) {
            Ok(d) => d,
            Err(EntityDraftError::Payload(e)) => {
                // Refused for good (it would be refused again): counted, logged, not retried.
                node.metrics
                    .bad_payloads
                    .with_label_values(&[PUBLISH_SOURCE, e.reason()])
                    .inc();
                log::warn!(
                    "change feed: refusing outbox row {} ({} {:?}, tenant {:?}): {e}",
                    change.id,
                    change.table,
                    change.entity_id,
                    change.tenant_key
                );
                done.push(change.id);
                continue;
            }
            Err(why) => {
                log::warn!(
                    "change feed: skipping outbox row {} ({} {:?}): {why}",
                    change.id,
                    change.table,
                    change.entity_id
                );
                done.push(change.id);
                continue;
            }
        };
        match node.publish(draft, PUBLISH_SOURCE).await {
            Ok(_) => {
                log::debug!(
                    "change feed: {} {} {} (tenant {:?})",
                    change.table,
                    change.entity_id,
                    change.change.as_str(),
                    change.tenant_key
                );
                done.push(change.id)
            }
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}
