//! Teleconsult's media server: a selective forwarding unit (SFU) on str0m.
//!
//! The sfu knows rooms, participants, tracks and forwarding, and nothing of
//! visits, people or tokens. Its one face is [`SfuHandle`].
//!
//! Each participant has two peer connections: *publish* (the client offers
//! its audio and video) and *subscribe* (the sfu offers everyone else's
//! tracks and renegotiates as they come and go). Every peer of a media
//! worker shares the worker's UDP port, with ICE-lite and DTLS-SRTP.
//! Forwarding is in RTP mode: packets are not depacketized; each subscriber
//! gets its own SSRC, payload type and sequence numbers, and str0m answers
//! NACKs from its send buffer on each hop.

#![deny(missing_docs)]

#[cfg(test)]
mod alloc_count;
mod api;
mod core;
mod forward;
mod handle;
mod simulcast;
mod tcp;
mod udp;
mod worker;

pub use api::{
    Connection, DEFAULT_INITIAL_ESTIMATE_BPS, Histogram, LOSS_BUCKETS, MediaPath, ParticipantEvent, ParticipantId,
    ParticipantStats, RTT_BUCKETS_SECS, RemovedReason, RoomId, RoomOptions, SfuConfig, SfuError, SubscribedTrack,
    TURNAROUND_BUCKETS_SECS, TrackKind, VideoPreference, WorkerHealth, WorkerStats,
};
pub use forward::{KeyframeThrottle, Rewritten, SeqRewriter};
pub use handle::SfuHandle;

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: alloc_count::CountingAllocator = alloc_count::CountingAllocator;
