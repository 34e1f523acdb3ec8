//! Synthetic Teleconsult participants on webrtc-rs (a WebRTC stack
//! independent of the SFU's str0m), for integration tests, benchmarks and
//! load tests. They speak the public WebSocket protocol only.

pub mod baseline;
pub mod http_client;
pub mod junk_datagrams;
pub mod lossy_relay;
pub mod participant;
pub mod scenario;
pub mod server_process;
pub mod signaling_client;
pub mod synthetic_media;
pub mod webrtc_peer;

pub use participant::{Participant, ParticipantError, ParticipantOptions};
pub use signaling_client::{SignalingClient, SignalingError};
