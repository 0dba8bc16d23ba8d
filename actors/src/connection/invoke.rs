//! Hub methods the codec does not map itself: handing them to the node's
//! [`HubMethods`](crate::hub_methods::HubMethods) (the server's chat service), and applying what the
//! handler asks for this connection — join or leave a channel, push an event, publish one once
//! joined — before the
//! completion is written (through the connection core, as the request's one reply). The same path serves both protocols: a SignalR `Invocation` and a native
//! `invoke` frame both arrive as [`crate::codec::Request::Invoke`].

use std::collections::VecDeque;
use std::sync::Arc;

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;
use serde_json::Value;

use super::socket_context::SocketContext;
use super::tracked::Origin;
use super::Connection;
use crate::channel::ChannelName;
use crate::codec::{JsonArg, Outcome, ReplyTo};
use crate::codes::ErrorCode;
use crate::envelope::{Draft, Envelope};
use crate::hub_methods::{ConnectionAction, HubCall, HubMethodError};

/// A method's completion, written after its actions.
type Completion = (ReplyTo, Result<Option<Value>, HubMethodError>);

impl Connection {
    /// Hands `method` to the node's hub methods; "unknown method" when there are none or they do
    /// not know it. Every argument passes the payload check first (`bad_payload`), which also
    /// makes it safe to parse.
    pub(super) fn invoke(
        &mut self,
        ctx: &mut SocketContext<Self>,
        reply_to: ReplyTo,
        method: String,
        args: Vec<JsonArg>,
    ) {
        let args = match self.invoke_args(args) {
            Ok(args) => args,
            Err((code, message)) => {
                log::info!("{} {method}: {message}", self.log_ctx());
                return self.finish(ctx, reply_to, Outcome::Error { code, message });
            }
        };
        let unknown = format!("unknown method '{method}'");
        let call = HubCall {
            identity: self.identity.clone(),
            conn: self.conn,
            method,
            args,
        };
        let Some(reply) = self.node.hub_methods.as_ref().and_then(|m| m.invoke(call)) else {
            let outcome = Outcome::Error {
                code: ErrorCode::UnknownType,
                message: unknown,
            };
            return self.finish(ctx, reply_to, outcome);
        };
        self.hold(ctx, reply.into_actor(self), move |act, ctx, reply| {
            act.apply(ctx, reply.actions.into(), Some((reply_to, reply.result)))
        });
    }

    /// The arguments as values, each within the payload limits.
    fn invoke_args(&self, args: Vec<JsonArg>) -> Result<Vec<Value>, (ErrorCode, String)> {
        args.into_iter()
            .map(|arg| {
                let checked = self
                    .node
                    .check_payload(arg.into_raw(), self.codec.label())
                    .map_err(|e| (ErrorCode::BadPayload, e.to_string()))?;
                serde_json::from_str(checked.get())
                    .map_err(|e| (ErrorCode::BadRequest, format!("argument: {e}")))
            })
            .collect()
    }

    /// Tells the hub methods this connection is ready for events, and applies what they answer
    /// (the messages stored while the user was offline).
    pub(super) fn hub_connected(&mut self, ctx: &mut SocketContext<Self>) {
        let Some(methods) = self.node.hub_methods.clone() else {
            return;
        };
        let actions = methods.connected(self.identity.clone(), self.conn);
        ctx.spawn(
            actions
                .into_actor(self)
                .map(|actions, act, ctx| act.apply(ctx, actions.into(), None)),
        );
    }

    /// Applies `actions` in order, waiting for each join to be registered, then writes the
    /// completion. A failed join stops there and completes with its error. Actions without a
    /// completion are the connect-time ones ([`Self::hub_connected`]).
    fn apply(
        &mut self,
        ctx: &mut SocketContext<Self>,
        mut actions: VecDeque<ConnectionAction>,
        completion: Option<Completion>,
    ) {
        let origin = match completion {
            Some(_) => Origin::Push,
            None => Origin::ConnectPush,
        };
        while let Some(action) = actions.pop_front() {
            if self.core.is_closing() {
                return;
            }
            match action {
                ConnectionAction::Join(channel) => {
                    if let Some(joined) = self.join(channel) {
                        // Part of the request: later requests wait until the method completes.
                        self.hold(ctx, joined, move |act, ctx, res| match res {
                            Ok(()) => act.apply(ctx, actions, completion),
                            Err(e) => {
                                let failed = completion.map(|(to, _)| (to, Err(e)));
                                act.apply(ctx, VecDeque::new(), failed)
                            }
                        });
                        return;
                    }
                }
                ConnectionAction::Leave(channel) => {
                    self.leave_channel(&channel);
                }
                ConnectionAction::Push {
                    channel,
                    event,
                    data,
                    arguments,
                } => {
                    // Not part of the channel's stream: offset 0, no epoch.
                    let draft = Draft::new(channel, event, data).with_arguments(arguments);
                    let env = Envelope::new(draft, 0, Arc::from(""), self.node.id.clone());
                    self.write_envelope(ctx, &env, origin);
                }
                ConnectionAction::Publish { draft, source } => {
                    let node = self.node.clone();
                    let what = format!("{} on {}", draft.event, draft.channel);
                    let published = async move { node.publish(draft, source).await };
                    self.hold(ctx, published.into_actor(self), move |act, ctx, res| {
                        if let Err(e) = res {
                            log::warn!("{} {what} not published: {e}", act.log_ctx());
                        }
                        act.apply(ctx, actions, completion)
                    });
                    return;
                }
            }
        }
        if origin == Origin::ConnectPush {
            // The connect window closes: its pushes are out (`tracked.rs`).
            self.tracked.connected();
        }
        self.report_written();
        if let Some((reply_to, result)) = completion {
            let outcome = match result {
                Ok(Some(v)) => Outcome::Value(v),
                Ok(None) => Outcome::Done,
                Err(e) => Outcome::Error {
                    code: e.code,
                    message: e.message,
                },
            };
            self.finish(ctx, reply_to, outcome);
        }
    }

    /// Subscribes this connection to `channel` without a reply frame of its own (the method's
    /// completion answers), through the same path as a `subscribe` request (quota, limits, rules,
    /// authorizer, activity). `None` when it is already subscribed; otherwise a future that
    /// resolves once the broker registered it.
    fn join(
        &mut self,
        channel: ChannelName,
    ) -> Option<LocalBoxActorFuture<Self, Result<(), HubMethodError>>> {
        if self.subs().contains(&channel) {
            return None;
        }
        let joining = self.join_channel(channel.clone(), None);
        Some(
            joining
                .map(move |res, act, ctx| match res {
                    Ok(joined) => {
                        for env in joined.ready {
                            act.write_envelope(ctx, &env, Origin::Channel);
                        }
                        act.report_written();
                        Ok(())
                    }
                    Err(refused) if refused.code == ErrorCode::AlreadySubscribed => Ok(()),
                    Err(refused) => {
                        act.note_refused(channel.as_str(), &refused);
                        Err(HubMethodError::new(refused.code, refused.reason))
                    }
                })
                .boxed_local(),
        )
    }
}
