//! Synthetic Teleconsult participants for integration tests, benchmarks
//! and load tests, on webrtc-rs (a WebRTC stack independent of the SFU's
//! str0m, for interop) or on str0m (light, for capacity). They speak the
//! public WebSocket protocol only.

pub mod baseline;
pub mod http_client;
pub mod junk_datagrams;
pub mod lossy_relay;
pub mod participant;
pub mod scenario;
pub mod server_process;
pub mod signaling_client;
pub mod str0m_peer;
pub mod synthetic_media;
pub mod webrtc_peer;

pub use participant::{MediaStack, Participant, ParticipantError, ParticipantOptions};
pub use signaling_client::{SignalingClient, SignalingError};
