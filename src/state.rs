//! What every route handler can reach: the node, the token verifier and the settings.

use std::sync::Arc;

use switchyard_actors::connection::Connections;
use switchyard_actors::node::Node;

use crate::auth::Verifier;
use crate::azure_auth::AccessKeyVerifier;
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
    /// Azure access-key tokens for the Azure-compatible REST API (`azure.access_key`), if set.
    pub azure_keys: Option<Arc<AccessKeyVerifier>>,
}
