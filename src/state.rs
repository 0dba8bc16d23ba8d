//! What every route handler can reach: the node, the token verifier and the settings.

use std::sync::Arc;

use switchyard_actors::connection::Connections;
use switchyard_actors::node::Node;

use crate::admin_samples::Samples;
use crate::auth::Verifier;
use crate::azure_auth::AccessKeyVerifier;
use crate::hub_transports::HttpSessions;
use crate::negotiations::Negotiations;
use crate::settings::{HubArgumentDefaults, Settings};

pub struct AppState {
    pub node: Arc<Node>,
    /// What the node's WebSocket connections share (settings, parked connections, limits).
    pub connections: Arc<Connections>,
    pub verifier: Arc<Verifier>,
    pub settings: Arc<Settings>,
    /// SignalR connection tokens issued by negotiate.
    pub negotiations: Negotiations,
    /// Each hub path's default SignalR argument list (`signalr.default_arguments`).
    pub hub_arguments: HubArgumentDefaults,
    /// SignalR connections over Server-Sent Events and Long Polling.
    pub http_sessions: Arc<HttpSessions>,
    /// The node's recent figures for the console's charts (`[admin] sample_interval_ms`).
    pub samples: Arc<Samples>,
    /// Azure access-key tokens for the Azure-compatible REST API (`azure.access_key`), if set.
    pub azure_keys: Option<Arc<AccessKeyVerifier>>,
}
