//! [`RedisEngine`]: publishing is one atomic step in Redis (offset, history, PUBLISH), and events
//! come back to every node — the publisher's too — through the [`RedisBridge`], so each node sees
//! one order per channel. If Redis stays unreachable after the retries, the event is still
//! delivered to this node's subscribers (under the shard's local epoch, so clients see the history
//! break) and the publisher gets [`BrokerError::Unavailable`]. With `redis.replica_acks`, a publish
//! that replicas did not confirm in time is refused too (it was delivered; a failover may lose it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::bridge::{BridgeStatus, RedisBridge, WhenListening};
use super::{Cluster, ClusterError};
use crate::channel::ChannelName;
use crate::engine::{
    BrokerEngine, BrokerError, EngineStatus, HistoryPage, PublishAck, Shards, Subscribed,
};
use crate::envelope::{Draft, StreamPosition};
use crate::history::Recovery;

/// The broker engine over Redis (see the module docs).
pub struct RedisEngine {
    cluster: Cluster,
    bridge: crate::metered::Metered<RedisBridge>,
    shards: Arc<dyn Shards>,
    /// How long a subscribe waits for the bridge to confirm its Redis subscription.
    request_timeout: Duration,
}

impl RedisEngine {
    pub fn new(
        cluster: Cluster,
        bridge: crate::metered::Metered<RedisBridge>,
        shards: Arc<dyn Shards>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            cluster,
            bridge,
            shards,
            request_timeout,
        }
    }
}

fn unavailable(e: ClusterError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl BrokerEngine for RedisEngine {
    fn publish(&self, draft: Draft) -> BoxFuture<'static, Result<PublishAck, BrokerError>> {
        let (cluster, shards) = (self.cluster.clone(), self.shards.clone());
        async move {
            match cluster.publish(&draft).await {
                Ok(ack) => Ok(ack),
                // Redis delivered it; only its durability is in doubt.
                Err(e @ ClusterError::NotReplicated { .. }) => {
                    log::warn!("publish to {}: {e}", draft.channel);
                    Err(unavailable(e))
                }
                Err(e) => {
                    // Local delivery goes on; the publisher learns it was not relayed.
                    cluster.metrics().unrelayed.inc();
                    log::warn!(
                        "publish to {} not relayed: {e}; delivering locally",
                        draft.channel
                    );
                    shards.append(draft).await?;
                    Err(unavailable(e))
                }
            }
        }
        .boxed()
    }

    fn subscribed(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        local: Subscribed,
    ) -> BoxFuture<'static, Subscribed> {
        let (cluster, bridge, timeout) = (
            self.cluster.clone(),
            self.bridge.clone(),
            self.request_timeout,
        );
        async move {
            let listening = bridge
                .send(WhenListening(channel.clone()))
                .timeout(timeout)
                .await
                .unwrap_or(false);
            if !listening {
                // Redis unreachable: serve locally; the subscription resumes when Redis returns.
                return local;
            }
            let history = cluster.config().history.size;
            match cluster.position(&channel, since.as_ref(), history).await {
                Ok(p) => Subscribed {
                    offset: p.offset,
                    epoch: p.epoch,
                    recovery: p.recovery,
                },
                Err(e) => {
                    log::warn!("position of {channel} unavailable: {e}; serving locally");
                    local
                }
            }
        }
        .boxed()
    }

    fn history(
        &self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> BoxFuture<'static, Result<HistoryPage, BrokerError>> {
        let cluster = self.cluster.clone();
        async move {
            let asked = since.is_some();
            let since = match since {
                Some(s) => s,
                None => {
                    let now = cluster
                        .position(&channel, None, 1)
                        .await
                        .map_err(unavailable)?;
                    StreamPosition {
                        offset: now.offset.saturating_sub(limit as u64),
                        epoch: now.epoch.to_string(),
                    }
                }
            };
            let p = cluster
                .position(&channel, Some(&since), limit)
                .await
                .map_err(unavailable)?;
            let recovery = p.recovery.unwrap_or(Recovery {
                recovered: false,
                replay: Vec::new(),
            });
            Ok(HistoryPage {
                offset: p.offset,
                epoch: p.epoch,
                recovered: asked.then_some(recovery.recovered),
                events: recovery.replay,
            })
        }
        .boxed()
    }

    fn listened_elsewhere(
        &self,
        channel: ChannelName,
    ) -> BoxFuture<'static, Result<bool, BrokerError>> {
        let cluster = self.cluster.clone();
        async move { cluster.listened(&channel).await.map_err(unavailable) }.boxed()
    }

    fn status(&self) -> BoxFuture<'static, EngineStatus> {
        let (bridge, timeout) = (self.bridge.clone(), self.request_timeout);
        async move {
            match bridge.send(BridgeStatus).timeout(timeout).await {
                Ok(s) => EngineStatus {
                    mode: "cluster",
                    connected: s.connected,
                    detail: serde_json::to_value(&s).unwrap_or_default(),
                },
                Err(e) => EngineStatus {
                    mode: "cluster",
                    connected: false,
                    detail: serde_json::json!({"connected": false, "lastError": e.to_string()}),
                },
            }
        }
        .boxed()
    }
}
