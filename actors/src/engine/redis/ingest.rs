//! The ingest stream: how a process that is not a Switchyard node (a background job in any
//! language) publishes through Redis. On a single Redis it appends a draft to `{prefix}:ingest`:
//!
//! ```text
//! XADD switchyard:ingest * event '{"channel":"tenant:acme:admins","event":"TenantCreated","data":{…}}'
//! ```
//!
//! On a Redis Cluster the stream is spread over `redis.cluster_ingest_streams` streams
//! `{prefix}:{i<n>}:ingest`, each in its own hash tag so they land on different shards; a draft
//! goes to stream `n = fnv1a32(channel) mod streams` ([`super::keys::ingest_stream_of`]), so all
//! drafts of one channel are in one stream, in order. With 4 streams, `tenant:acme:admins` is
//! stream 3:
//!
//! ```text
//! XADD switchyard:{i3}:ingest * event '{"channel":"tenant:acme:admins","event":"TenantCreated","data":{…}}'
//! ```
//!
//! An optional `arguments` (`"message"`, `"data"` or an array) chooses what SignalR clients receive
//! ([`crate::hub_arguments`]), as on `POST /api/v1/publish`.
//!
//! Every node reads every stream in one consumer group, so each entry is published exactly once
//! (through the same atomic publish step, idempotent by `id` when given), then acknowledged and
//! deleted. Each stream has its own reader on its own connection: a blocking `XREADGROUP` holds
//! its connection (on a cluster, a cluster connection of its own, whose link to the stream's shard
//! the read holds), and one stream's wait
//! must neither stall the command connection nor another stream's reader. Drafts appended
//! before any node ran are published when the first one starts.
//! Entries a dead node had claimed are taken over after [`CLAIM_IDLE`]; a node that comes back
//! under the same id (a restart), or whose reading session failed mid-entry, first takes up the
//! entries still pending on its own name, at once.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Cluster, ClusterError};
use crate::channel::ChannelName;
use crate::envelope::{Draft, EventName};
use crate::hub_arguments::{BadArguments, HubArguments};
use crate::payload::{PayloadError, PayloadLimits};
use crate::policy::access::{self, Action, INGEST_PUBLISHER};
use crate::policy::Refusal;

/// `switchyard_bad_payloads_total{source}` of a refused entry's data.
const PAYLOAD_SOURCE: &str = "ingest";

/// The consumer group every node joins.
pub const GROUP: &str = "switchyard";
/// Entries read per round.
const BATCH: usize = 100;
/// How long a read blocks waiting for entries.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries pending this long on a consumer are claimed by another.
const CLAIM_IDLE: Duration = Duration::from_secs(30);

/// The entry's `event` field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestDraft {
    channel: String,
    event: String,
    data: Box<RawValue>,
    /// Optional idempotency key: the same id is published once.
    id: Option<String>,
    /// Optional SignalR argument list (read as raw text, like `data`).
    arguments: Option<Box<RawValue>>,
}

/// Why an ingest entry was refused (logged and counted, then acknowledged: it can never succeed).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("entry has no `event` field")]
    Missing,
    #[error("entry is not a valid draft: {0}")]
    Json(#[from] serde_json::Error),
    #[error("channel: {0}")]
    Channel(#[from] crate::channel::ChannelError),
    #[error("event: {0}")]
    Event(#[from] crate::envelope::BadEventName),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("{0}")]
    Arguments(BadArguments),
    /// The policy refused the stream's publisher ([`INGEST_PUBLISHER`], a Service) this channel.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

fn parse(fields: &[(String, String)], limits: &PayloadLimits) -> Result<Draft, IngestError> {
    let text = fields
        .iter()
        .find(|(k, _)| k == "event")
        .map(|(_, v)| v)
        .ok_or(IngestError::Missing)?;
    // `data` is read as raw text (no depth limit while parsing), so the payload check, not the
    // parser, is what refuses deep data.
    let d: IngestDraft = serde_json::from_str(text)?;
    let channel = ChannelName::parse(&d.channel)?;
    access::check_without_lookup(&INGEST_PUBLISHER, &channel, Action::Publish)?;
    let arguments = d
        .arguments
        .map(|raw| HubArguments::read(raw, |list| limits.check(list)))
        .transpose()
        .map_err(|e| match e {
            // A list beyond the payload limits is refused and counted like data.
            BadArguments::Payload(p) => IngestError::Payload(p),
            shape => IngestError::Arguments(shape),
        })?;
    let mut draft = Draft::new(channel, EventName::parse(&d.event)?, limits.check(d.data)?)
        .with_arguments(arguments);
    if let Some(id) = d.id.filter(|i| !i.is_empty()) {
        draft.id = std::sync::Arc::from(id);
    }
    Ok(draft)
}

type Entries = Vec<(String, Vec<(String, String)>)>;

/// A stream entry's id and its text fields.
fn entry(id: redis::streams::StreamId) -> (String, Vec<(String, String)>) {
    let fields = id
        .map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), redis::from_redis_value_ref::<String>(v).ok()?)))
        .collect();
    (id.id, fields)
}

impl Cluster {
    /// Consumes every ingest stream until the future is dropped, one reader each.
    pub async fn run_ingest(self) {
        let readers = self
            .keys()
            .ingest_streams()
            .into_iter()
            .map(|stream| self.clone().run_ingest_stream(stream));
        futures_util::future::join_all(readers).await;
    }

    /// Consumes one ingest stream until the future is dropped; reconnects with back-off.
    async fn run_ingest_stream(self, stream: String) {
        let mut delay = self.config().reconnect_min;
        loop {
            match self.ingest_session(&stream).await {
                Ok(()) => {}
                Err(e) => {
                    log::warn!("ingest stream {stream}: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config().reconnect_max);
                    continue;
                }
            }
            delay = self.config().reconnect_min;
        }
    }

    async fn ingest_session(&self, stream: &str) -> Result<(), ClusterError> {
        // A dedicated connection per stream: blocking reads must not stall the command pool or
        // each other. Its response timeout must outlast the blocking read.
        let mut conn = self
            .target()
            .dedicated(BLOCK + self.config().command_timeout)
            .await?;
        let consumer = self.node().0.to_string();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            // From the start: drafts appended before any node ever ran are published too.
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(e.into());
            }
        }
        // This consumer's own pending entries first (read but not acknowledged: by this node
        // before a restart, or by a session that failed on them): they must not wait CLAIM_IDLE.
        loop {
            let opts = redis::streams::StreamReadOptions::default()
                .group(GROUP, &consumer)
                .count(BATCH);
            let own: Option<redis::streams::StreamReadReply> =
                redis::AsyncCommands::xread_options(&mut conn, &[stream], &["0"], &opts).await?;
            let entries: Entries = own
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .map(entry)
                .collect();
            if entries.is_empty() {
                break;
            }
            log::info!(
                "ingest stream {stream}: taking up {} entries pending on this node",
                entries.len()
            );
            for (id, fields) in entries {
                self.ingest_one(&id, &fields).await?;
                self.acknowledge(&mut conn, stream, &id).await?;
            }
        }
        loop {
            let claimed: (String, redis::streams::StreamRangeReply) = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(&consumer)
                .arg(CLAIM_IDLE.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await
                .map(
                    |(next, range, _deleted): (
                        String,
                        redis::streams::StreamRangeReply,
                        redis::Value,
                    )| (next, range),
                )?;
            let mut entries: Entries = claimed.1.ids.into_iter().map(entry).collect();
            let opts = redis::streams::StreamReadOptions::default()
                .group(GROUP, &consumer)
                .count(BATCH)
                .block(BLOCK.as_millis() as usize);
            let read: Option<redis::streams::StreamReadReply> =
                redis::AsyncCommands::xread_options(&mut conn, &[stream], &[">"], &opts).await?;
            if let Some(r) = read {
                entries.extend(r.keys.into_iter().flat_map(|k| k.ids).map(entry));
            }
            for (id, fields) in entries {
                self.ingest_one(&id, &fields).await?;
                self.acknowledge(&mut conn, stream, &id).await?;
            }
        }
    }

    /// Acknowledges and deletes a published entry, so the stream only ever holds unpublished
    /// drafts.
    async fn acknowledge(
        &self,
        conn: &mut super::connection::Conn,
        stream: &str,
        id: &str,
    ) -> Result<(), ClusterError> {
        let _: () = redis::pipe()
            .cmd("XACK")
            .arg(stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(stream)
            .arg(id)
            .ignore()
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Publishes one entry; a refused entry is logged and counted, a Redis failure is returned
    /// (the entry stays pending and is retried).
    async fn ingest_one(&self, id: &str, fields: &[(String, String)]) -> Result<(), ClusterError> {
        match parse(fields, &self.config().payload) {
            Ok(draft) => {
                self.publish(&draft).await?;
                self.metrics().published.with_label_values(&["redis"]).inc();
                Ok(())
            }
            Err(IngestError::Payload(e)) => {
                log::warn!("ingest: refused entry {id}: {e}");
                self.metrics()
                    .bad_payloads
                    .with_label_values(&[PAYLOAD_SOURCE, e.reason()])
                    .inc();
                Ok(())
            }
            Err(e) => {
                log::warn!("ingest: refused entry {id}: {e}");
                self.metrics()
                    .bad_frames
                    .with_label_values(&["ingest"])
                    .inc();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &str) -> Vec<(String, String)> {
        vec![("event".into(), v.into())]
    }

    const LIMITS: PayloadLimits = PayloadLimits {
        max_depth: 2,
        max_bytes: 100,
    };

    fn parse(fields: &[(String, String)]) -> Result<Draft, IngestError> {
        super::parse(fields, &LIMITS)
    }

    #[test]
    fn drafts_parse_and_bad_ones_are_refused() {
        let d = parse(&f(
            r#"{"channel":"tenant:a:admins","event":"TenantCreated","data":{"k":1},"id":"job-7"}"#,
        ))
        .unwrap();
        assert_eq!(&*d.id, "job-7");
        assert_eq!(d.channel.as_str(), "tenant:a:admins");
        assert!(matches!(parse(&[]), Err(IngestError::Missing)));
        assert!(matches!(parse(&f("{")), Err(IngestError::Json(_))));
        assert!(matches!(
            parse(&f(r#"{"channel":"x","event":"E","data":1}"#)),
            Err(IngestError::Channel(_))
        ));
        assert!(matches!(
            parse(&f(r#"{"channel":"user:u","event":"bad name","data":1}"#)),
            Err(IngestError::Event(_))
        ));
        assert!(matches!(
            parse(&f(r#"{"channel":"user:u","event":"E","data":[[[1]]]}"#)),
            Err(IngestError::Payload(PayloadError::TooDeep { max: 2 }))
        ));
    }

    #[test]
    fn drafts_may_choose_the_signalr_arguments() {
        let draft = |arguments: &str| {
            parse(&f(&format!(
                r#"{{"channel":"user:u","event":"E","data":{{"k":1}},"arguments":{arguments}}}"#
            )))
        };
        assert_eq!(
            draft(r#""data""#).unwrap().arguments,
            Some(HubArguments::Data)
        );
        assert_eq!(
            draft(r#""message""#).unwrap().arguments,
            Some(HubArguments::Message)
        );
        let list = draft(r#"["c1","u"]"#).unwrap().arguments.unwrap();
        assert_eq!(list.list().unwrap().get(), r#"["c1","u"]"#);
        assert!(matches!(draft(r#""bare""#), Err(IngestError::Arguments(_))));
        assert!(matches!(
            draft("[[[1]]]"),
            Err(IngestError::Payload(PayloadError::TooDeep { max: 2 }))
        ));
        let none = parse(&f(r#"{"channel":"user:u","event":"E","data":1}"#)).unwrap();
        assert_eq!(none.arguments, None);
    }
}
