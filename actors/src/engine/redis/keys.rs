//! Every Redis key and pub/sub channel name, built from the configured prefix in one place
//! (documented in `docs/cluster.md`).

use crate::channel::ChannelName;
use crate::ids::{NodeId, TenantKey};

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel carrying a channel's envelopes: `{prefix}:ch:{channel}`.
    pub fn pubsub(&self, channel: &str) -> String {
        format!("{}:ch:{channel}", self.prefix)
    }

    /// The Switchyard channel of a pub/sub channel name, if it is one of ours.
    pub fn channel_of_pubsub<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub.strip_prefix(&self.prefix)?.strip_prefix(":ch:")
    }

    /// `{prefix}:{<channel>}:offset`, the channel's last assigned offset.
    pub fn offset(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:offset", self.prefix)
    }

    /// `{prefix}:{<channel>}:epoch`, the channel's history generation.
    pub fn epoch(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:epoch", self.prefix)
    }

    /// `{prefix}:{<channel>}:history`, the channel's bounded history stream (entry id
    /// `<offset>-0`, field `e` = the envelope).
    pub fn history(&self, channel: &ChannelName) -> String {
        format!("{}:{{{channel}}}:history", self.prefix)
    }

    /// `{prefix}:{<channel>}:seen:{id}`, marks an idempotent publish as done.
    pub fn seen(&self, channel: &ChannelName, id: &str) -> String {
        format!("{}:{{{channel}}}:seen:{id}", self.prefix)
    }

    /// `{prefix}:ingest`: the stream other processes append drafts to.
    pub fn ingest(&self) -> String {
        format!("{}:ingest", self.prefix)
    }

    /// `{prefix}:nodes`: sorted set of node ids scored by their last heartbeat (ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// `{prefix}:node:{node}:tenants`: tenants a node has presence entries for.
    pub fn node_tenants(&self, node: &NodeId) -> String {
        format!("{}:node:{node}:tenants", self.prefix)
    }

    /// `{prefix}:presence:{t}:node:{node}`: a node's connections of a tenant.
    pub fn presence_conns(&self, tenant: &TenantKey, node: &NodeId) -> String {
        format!("{}:presence:{tenant}:node:{node}", self.prefix)
    }

    /// `{prefix}:presence:{t}:users`: connections per user across the cluster.
    pub fn presence_users(&self, tenant: &TenantKey) -> String {
        format!("{}:presence:{tenant}:users", self.prefix)
    }

    /// `{prefix}:presence:pending-offline`: sorted set of "tenant\tuser" scored by the time
    /// their UserOffline is due.
    pub fn presence_pending(&self) -> String {
        format!("{}:presence:pending-offline", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let k = Keys::new("sy");
        let ch = ChannelName::parse("tenant:a:broadcast").unwrap();
        assert_eq!(k.pubsub(ch.as_str()), "sy:ch:tenant:a:broadcast");
        assert_eq!(
            k.channel_of_pubsub("sy:ch:tenant:a:broadcast"),
            Some("tenant:a:broadcast")
        );
        assert_eq!(k.channel_of_pubsub("other:ch:x"), None);
        assert_eq!(k.offset(&ch), "sy:{tenant:a:broadcast}:offset");
    }
}
