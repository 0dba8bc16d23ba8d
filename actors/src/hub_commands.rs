//! Hub commands: what a back end asks of one SignalR hub connection through the
//! Azure-compatible REST API (`src/routes/azure.rs`) — join a group, leave it, leave every group,
//! close — wherever in the cluster that connection is.
//!
//! A command travels as an event, through the node's one publish path, so it reaches the
//! connection's node the way every event does (Redis pub/sub in cluster mode): no second relay.
//! For one connection it goes on the connection's own channel `connection:{connectionId}`
//! (`Channel::Connection`); for every connection of a user, a group or a hub it goes on that
//! channel (`tenant:{t}:user:{u}`, the group, `tenant:{t}:broadcast`), and each hub connection
//! that receives it carries it out. Its event name starts with `$`, which no publisher can give
//! (`EventName::parse` refuses it), so a command is always the server's own; a connection carries
//! it out instead of writing it to the client (`connection/commands.rs`), a connection that is not
//! a hub connection ignores it, and a command replayed from history (a subscribe with `since`) is
//! never carried out again, except on the connection's own channel (a stateful reconnect's
//! resume catches up with what it missed).
//!
//! | event | data | the connection |
//! | --- | --- | --- |
//! | `$addToGroup` | `{"group": channel}` | joins the channel through the one join path (quota, limits, the channel rules for its own identity) |
//! | `$removeFromGroup` | `{"group": channel}` | leaves it |
//! | `$removeFromAllGroups` | `{}` | leaves every channel but the ones it joined on connect |
//! | `$close` | `{"reason": text or null, "excluded": [connectionId, …]}` | closes (1000, a SignalR `Close` record), logging the reason, unless its id is excluded |

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{ChannelError, ChannelName};

/// `$addToGroup`.
pub const ADD_TO_GROUP: &str = "$addToGroup";
/// `$removeFromGroup`.
pub const REMOVE_FROM_GROUP: &str = "$removeFromGroup";
/// `$removeFromAllGroups`.
pub const REMOVE_FROM_ALL_GROUPS: &str = "$removeFromAllGroups";
/// `$close`.
pub const CLOSE: &str = "$close";

const NAMES: [&str; 4] = [
    ADD_TO_GROUP,
    REMOVE_FROM_GROUP,
    REMOVE_FROM_ALL_GROUPS,
    CLOSE,
];

/// The command name `name` spells, as a `'static` name (the envelope reader's check).
pub fn command_name(name: &str) -> Option<&'static str> {
    NAMES.into_iter().find(|n| *n == name)
}

/// Whether `name` is a hub command's event name.
pub fn is_command_name(name: &str) -> bool {
    command_name(name).is_some()
}

/// One command for a hub connection (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubCommand {
    AddToGroup(ChannelName),
    RemoveFromGroup(ChannelName),
    RemoveFromAllGroups,
    Close {
        reason: Option<String>,
        /// Connections (by `connectionId`) that stay open.
        excluded: Vec<String>,
    },
}

/// Why a command event could not be read (written by a newer node, or damaged).
#[derive(Debug, thiserror::Error)]
pub enum BadCommand {
    #[error("{0} is not a hub command")]
    Unknown(String),
    #[error("command data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("command group: {0}")]
    Group(#[from] ChannelError),
}

#[derive(Serialize, Deserialize)]
struct GroupData<'a> {
    #[serde(borrow)]
    group: &'a str,
}

#[derive(Serialize, Deserialize)]
struct CloseData {
    reason: Option<String>,
    #[serde(default)]
    excluded: Vec<String>,
}

impl HubCommand {
    /// The command's event name.
    pub fn name(&self) -> &'static str {
        match self {
            HubCommand::AddToGroup(_) => ADD_TO_GROUP,
            HubCommand::RemoveFromGroup(_) => REMOVE_FROM_GROUP,
            HubCommand::RemoveFromAllGroups => REMOVE_FROM_ALL_GROUPS,
            HubCommand::Close { .. } => CLOSE,
        }
    }

    /// The command's event data.
    pub fn data(&self) -> serde_json::Value {
        match self {
            HubCommand::AddToGroup(g) | HubCommand::RemoveFromGroup(g) => {
                serde_json::json!({ "group": g.as_str() })
            }
            HubCommand::RemoveFromAllGroups => serde_json::json!({}),
            HubCommand::Close { reason, excluded } => {
                serde_json::json!({ "reason": reason, "excluded": excluded })
            }
        }
    }

    /// Reads the command an event named `name` with `data` carries.
    pub fn read(name: &str, data: &RawValue) -> Result<Self, BadCommand> {
        let group = || -> Result<ChannelName, BadCommand> {
            let d: GroupData = serde_json::from_str(data.get())?;
            Ok(ChannelName::parse(d.group)?)
        };
        Ok(match name {
            ADD_TO_GROUP => HubCommand::AddToGroup(group()?),
            REMOVE_FROM_GROUP => HubCommand::RemoveFromGroup(group()?),
            REMOVE_FROM_ALL_GROUPS => HubCommand::RemoveFromAllGroups,
            CLOSE => {
                let d: CloseData = serde_json::from_str(data.get())?;
                HubCommand::Close {
                    reason: d.reason,
                    excluded: d.excluded,
                }
            }
            other => return Err(BadCommand::Unknown(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_their_event() {
        let group = ChannelName::parse("tenant:a:order:o1").unwrap();
        for cmd in [
            HubCommand::AddToGroup(group.clone()),
            HubCommand::RemoveFromGroup(group),
            HubCommand::RemoveFromAllGroups,
            HubCommand::Close {
                reason: Some("bye".into()),
                excluded: vec!["c1".into()],
            },
            HubCommand::Close {
                reason: None,
                excluded: vec![],
            },
        ] {
            let data = RawValue::from_string(cmd.data().to_string()).unwrap();
            assert!(is_command_name(cmd.name()));
            assert_eq!(HubCommand::read(cmd.name(), &data).unwrap(), cmd);
        }
        let bad = RawValue::from_string(r#"{"group":"nope"}"#.into()).unwrap();
        assert!(matches!(
            HubCommand::read(ADD_TO_GROUP, &bad),
            Err(BadCommand::Group(_))
        ));
        assert!(!is_command_name("NewOrder"));
        assert!(!is_command_name("$other"));
    }
}
