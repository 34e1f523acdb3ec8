//! Teleconsult's control plane: the HTTP API, the `/ws` signaling protocol,
//! join tokens, live rooms and metrics, in front of the embedded sfu.
//!
//! The binary `teleconsult` (see `main.rs`) wraps [`server::start`].

#![deny(missing_docs)]

pub mod accounts;
pub mod api_extract;
pub mod app;
pub mod auth_api;
pub mod calendar_feed;
pub mod client_addr;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod credential_guard;
pub mod follow_up_placement;
pub mod follow_ups;
pub mod follow_ups_api;
pub mod group_sessions;
pub mod group_sessions_api;
pub mod http_error;
pub mod idempotency;
pub mod input_checks;
pub mod join_api;
pub mod join_token;
pub mod metrics;
pub mod monitoring;
pub mod ops_dashboard;
pub mod probe;
pub mod questionnaire;
pub mod readiness;
pub mod reminders;
pub mod response_policy;
pub mod room_registry;
pub mod scheduler_worker;
pub mod secret;
pub mod security_log;
pub mod server;
pub mod staff_auth;
pub mod store;
pub mod timefmt;
pub mod turn;
pub mod urgent;
pub mod visit_import;
pub mod visit_rooms;
pub mod visits;
pub mod visits_api;
pub mod web_assets;
pub mod webhook;
pub mod ws_limits;
pub mod ws_session;
pub mod zones;
