//! Switchyard's actors, the messages between them, the envelope, the channel grammar and the wire
//! codecs. This crate knows nothing of HTTP routes, configuration files or SQL text: the server
//! (`src/`) builds a [`node::Node`] from its settings and hands it to every actor.

pub mod channel;
pub mod codec;
pub mod codes;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod rules;
