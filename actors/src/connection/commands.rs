//! Carrying out a hub command ([`crate::hub_commands`]) that reached this connection as an event
//! on one of its channels (its own, or its user's, a group's, the hub's): joins and leaves are
//! queued as requests of the connection's own (no reply), so they take the one join path in
//! request order; a close closes. A connection without an own channel (native `/ws`) is not
//! addressed by commands and ignores any it sees.

use actix::prelude::*;

use super::socket_context::SocketContext;
use super::Connection;
use crate::channel::Channel;
use crate::codes::CloseCode;
use crate::envelope::Envelope;
use crate::hub_commands::HubCommand;

impl Connection {
    /// Carries out the command `env` holds, after the current turn (the outbox drain that found
    /// it goes on writing the events around it first).
    pub(super) fn hub_command(&mut self, ctx: &mut SocketContext<Self>, env: &Envelope) {
        if self.own_channel.is_none() {
            return;
        }
        let cmd = match HubCommand::read(env.event.as_str(), &env.data) {
            Ok(cmd) => cmd,
            Err(e) => {
                log::warn!(
                    "{} hub command on {} ignored: {e}",
                    self.log_ctx(),
                    env.channel
                );
                return;
            }
        };
        // One spawned future carries out every command of this turn, in arrival order: actix
        // may run futures spawned in one turn in another order than they were spawned.
        self.commands.push_back(cmd);
        if self.commands.len() == 1 {
            ctx.spawn(fut::ready(()).map(|_, act: &mut Self, ctx| {
                while let Some(cmd) = act.commands.pop_front() {
                    act.run_command(ctx, cmd);
                }
            }));
        }
    }

    /// This hub connection's `connectionId`.
    fn own_id(&self) -> Option<&str> {
        match self.own_channel.as_ref()?.kind() {
            Channel::Connection { id } => Some(id),
            _ => None,
        }
    }

    fn run_command(&mut self, ctx: &mut SocketContext<Self>, cmd: HubCommand) {
        if self.core.is_closing() {
            return;
        }
        log::debug!("{} hub command {cmd:?}", self.log_ctx());
        match cmd {
            // Queued whatever the connection has now: a command's turn comes after the requests
            // queued before it (an add the command before it queued, say), and that is when it
            // is judged. Adding a connection to a group it is in is refused as any second
            // subscribe is (`already_subscribed`); removing it from one it is not in, likewise.
            HubCommand::AddToGroup(group) => self.core.queue_resubscribe(&group, None),
            HubCommand::RemoveFromGroup(group) => {
                if Some(&group) != self.own_channel.as_ref() {
                    self.core.queue_unsubscribe(&group);
                }
            }
            // The channels joined on connect stay: they are the user's and the hub's, not groups
            // (Azure's own user and hub addressing).
            HubCommand::RemoveFromAllGroups => self.core.queue_leave_groups(),
            HubCommand::Close { reason, excluded } => {
                if excluded.iter().any(|id| Some(id.as_str()) == self.own_id()) {
                    return;
                }
                log::info!(
                    "{} closed by the back end: {}",
                    self.log_ctx(),
                    reason.as_deref().unwrap_or("no reason given")
                );
                return self.close(ctx, CloseCode::Normal);
            }
        }
        self.run_requests(ctx);
    }
}
