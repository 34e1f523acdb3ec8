//! Teleconsult's control plane: the HTTP API, the `/ws` signaling protocol,
//! join tokens, live rooms and metrics, in front of the embedded sfu.
//!
//! The binary `teleconsult` (see `main.rs`) wraps [`server::start`].

#![deny(missing_docs)]

pub mod config;
pub mod http_error;
pub mod join_token;
pub mod metrics;
pub mod room_registry;
pub mod secret;
pub mod server;
pub mod web_assets;
pub mod ws_session;
