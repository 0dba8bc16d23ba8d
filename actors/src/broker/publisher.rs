//! [`Publisher`]: the node's one publish path ([`PublishPath`]): the broker engine, then
//! `switchyard_published_total{source}` and the activity record of the accepted event.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::BrokerHandle;
use crate::activity::{ActivitySink, Observe};
use crate::channel::{Channel, ChannelName};
use crate::engine::PublishAck;
use crate::envelope::{Draft, EventName};
use crate::metrics::Metrics;
use crate::presence;
use crate::publish_path::{PublishError, PublishPath};

/// The one publish path (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    broker: BrokerHandle,
    metrics: Arc<Metrics>,
    activity: ActivitySink,
}

impl Publisher {
    pub fn new(broker: BrokerHandle, metrics: Arc<Metrics>, activity: ActivitySink) -> Self {
        Self {
            broker,
            metrics,
            activity,
        }
    }

    /// Publishes `draft`; `source` labels `switchyard_published_total`. Presence announcements
    /// are not recorded as tenant activity: the recorder sees the connections they describe.
    pub async fn publish(
        &self,
        draft: Draft,
        source: &'static str,
    ) -> Result<PublishAck, PublishError> {
        let seen = (self.activity.is_active() && source != presence::PUBLISH_SOURCE)
            .then(|| (draft.channel.clone(), draft.event.clone(), draft.ts));
        let ack = self.broker.publish(draft).await?;
        self.metrics.published.with_label_values(&[source]).inc();
        if let Some((channel, event, ts)) = seen {
            self.record_published(channel, event, ts, &ack);
        }
        Ok(ack)
    }

    /// Publishes drafts keeping each channel's in their order ([`BrokerHandle::publish_run`]); one
    /// answer per draft, in order, each counted and recorded as [`publish`](Self::publish) does.
    pub async fn publish_run(
        &self,
        drafts: Vec<Draft>,
        source: &'static str,
    ) -> Vec<Result<PublishAck, PublishError>> {
        let record = self.activity.is_active() && source != presence::PUBLISH_SOURCE;
        let seen: Vec<_> = if record {
            drafts
                .iter()
                .map(|d| (d.channel.clone(), d.event.clone(), d.ts))
                .collect()
        } else {
            Vec::new()
        };
        let answers = self.broker.publish_run(drafts).await;
        let published = answers.iter().filter(|a| a.is_ok()).count();
        self.metrics
            .published
            .with_label_values(&[source])
            .inc_by(published as u64);
        // One message to the recorder for the run.
        let mut observed: Vec<Observe> = answers
            .iter()
            .zip(seen)
            .filter_map(|(answer, (channel, event, ts))| {
                Self::published(channel, event, ts, answer.as_ref().ok()?)
            })
            .collect();
        match observed.len() {
            0 => {}
            1 => self.activity.observe(observed.pop().expect("one")),
            _ => self.activity.observe(Observe::Batch(observed)),
        }
        answers
            .into_iter()
            .map(|a| a.map_err(PublishError::from))
            .collect()
    }

    /// Tells the activity recorder about an accepted event on a tenant channel.
    fn record_published(&self, channel: ChannelName, event: EventName, ts: u64, ack: &PublishAck) {
        if let Some(seen) = Self::published(channel, event, ts, ack) {
            self.activity.observe(seen);
        }
    }

    /// What the activity recorder is told of an accepted event: nothing unless it is on a
    /// tenant's channel, and nothing of activity summaries (they would describe themselves) or
    /// hub commands (the server's instructions to connections, not the tenant's events).
    fn published(
        channel: ChannelName,
        event: EventName,
        ts: u64,
        ack: &PublishAck,
    ) -> Option<Observe> {
        if matches!(channel.kind(), Channel::TenantActivity { .. }) || event.is_command() {
            return None;
        }
        let tenant = channel.tenant().cloned()?;
        Some(Observe::Published {
            tenant,
            channel,
            event,
            id: ack.id.clone(),
            offset: ack.offset,
            ts,
        })
    }
}

impl PublishPath for Publisher {
    fn publish(
        &self,
        draft: Draft,
        source: &'static str,
    ) -> BoxFuture<'static, Result<PublishAck, PublishError>> {
        let this = self.clone();
        async move { Publisher::publish(&this, draft, source).await }.boxed()
    }
}
