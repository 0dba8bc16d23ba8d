//! The integration test binary: every file below drives a real node over real sockets.

mod helpers;
mod hub_client;
mod redis_server;

mod admin;
mod admin_console;
mod auth;
mod azure_rest;
mod change_feed;
mod chat;
mod cluster;
mod compat_seed004;
mod compat_seeds;
mod delivery;
mod dining_sessions;
mod domain_events;
mod hardening_auth;
mod hardening_frames;
mod hardening_policy;
mod hardening_replies;
mod isolation;
mod native_bad_input;
mod operations;
mod payload_limits;
mod policy_matrix;
mod redis_restart;
mod rest;
mod rules;
mod session_scheduler;
mod shutdown;
mod signalr;
mod slow_consumer;
mod tcp_proxy;
