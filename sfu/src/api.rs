//! The types of the SFU's one public face: ids, options, events, stats and errors.

use std::net::IpAddr;
use std::time::Duration;

/// Opaque id of a room. The sfu gives it no meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub String);

/// Opaque id of a participant, unique within its room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub String);

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which of a participant's two peer connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Connection {
    /// Client-offered; carries the participant's own tracks to the sfu.
    Publish,
    /// Server-offered; carries everyone else's tracks to the participant.
    Subscribe,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio (Opus).
    Audio,
    /// Video (VP8 or H.264).
    Video,
}

/// Settings of the media plane.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Addresses advertised as ICE host candidates; one socket is bound per
    /// address, all on the worker's port.
    pub media_ips: Vec<IpAddr>,
    /// Addresses announced in SDP candidates instead of `media_ips`, one
    /// for one in the same order (1:1 NAT: the socket stays bound to the
    /// local address). Empty: announce `media_ips`.
    pub public_ips: Vec<IpAddr>,
    /// Addresses media arrives from when it is relayed by a TURN server
    /// (the TURN servers' relay addresses): such participants are counted
    /// as [`MediaPath::Relay`].
    pub relay_ips: Vec<IpAddr>,
    /// First TCP port for ICE over TCP (a passive candidate per media
    /// address; worker N uses `port + N`; 0 picks ephemeral ports). `None`:
    /// UDP only.
    pub ice_tcp_port: Option<u16>,
    /// First UDP port; worker N uses `port + N`. 0 picks an ephemeral port
    /// per worker.
    pub port: u16,
    /// Number of media workers (threads, one port each).
    pub workers: usize,
    /// Default room capacity.
    pub max_participants: usize,
    /// A participant none of whose connections has sent a packet for this
    /// long is removed.
    pub peer_timeout: Duration,
    /// Minimum spacing of keyframe requests to one publisher track.
    pub keyframe_interval: Duration,
    /// How often per-peer stats are refreshed.
    pub stats_interval: Duration,
    /// Most media sections one publish offer may carry (audio, camera,
    /// screen share, and one to spare).
    pub max_tracks_per_participant: usize,
    /// Largest SDP accepted from a client, in bytes.
    pub max_sdp_bytes: usize,
    /// Bandwidth estimation (with str0m's pacer) on subscribe connections,
    /// starting from this estimate in bits per second. The estimate chooses
    /// each subscriber's simulcast layers and pauses video on a poor link.
    /// `None` (the default) turns it off: packets leave unpaced, and layers
    /// follow only the sizes subscribers ask for. Off until measured with
    /// browsers: with clients that send no transport-wide feedback, the
    /// pacer held a 1.5 Mbit/s stream to the initial estimate (BENCHMARKS.md,
    /// "Forwarding").
    pub initial_estimate_bps: Option<u64>,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            media_ips: vec![IpAddr::from([127, 0, 0, 1])],
            public_ips: Vec::new(),
            relay_ips: Vec::new(),
            ice_tcp_port: None,
            port: 0,
            workers: 1,
            max_participants: 6,
            peer_timeout: Duration::from_secs(20),
            keyframe_interval: Duration::from_millis(500),
            stats_interval: Duration::from_secs(1),
            max_tracks_per_participant: 4,
            max_sdp_bytes: 32 * 1024,
            initial_estimate_bps: None,
        }
    }
}

/// Options of one room.
#[derive(Debug, Clone, Default)]
pub struct RoomOptions {
    /// Capacity; `None` uses [`SfuConfig::max_participants`].
    pub max_participants: Option<usize>,
    /// Bandwidth estimation (with str0m's pacer) on this room's subscribe
    /// connections, even where [`SfuConfig::initial_estimate_bps`] leaves it
    /// off: each subscriber's simulcast layers then follow its estimate as
    /// well as the sizes it asks for, and its video pauses on a poor link.
    /// For rooms with many publishers (group classes), where a phone on
    /// home broadband cannot take every full-rate stream; it costs CPU per
    /// forwarded packet (BENCHMARKS.md, "Bandwidth estimation on and off").
    pub bandwidth_estimation: bool,
}

/// The first estimate of a room whose bandwidth estimation was asked for
/// with [`RoomOptions::bandwidth_estimation`] when the server's
/// [`SfuConfig::initial_estimate_bps`] is unset.
pub const DEFAULT_INITIAL_ESTIMATE_BPS: u64 = 1_000_000;

/// A remote track as it appears in one subscriber's subscribe connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTrack {
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Its media section in the subscriber's subscribe connection.
    pub mid: String,
    /// The msid track id in the subscribe SDP (the msid stream id is the
    /// publisher's participant id).
    pub track_id: String,
}

/// How one subscriber wants a publisher's video, for publishers that send
/// simulcast (several layers of one camera); a single-layer track is
/// forwarded as it comes whatever this says.
///
/// Given with `SfuHandle::set_video_preference`. The sfu then forwards,
/// per subscriber and track, the highest layer no taller than `max_height`
/// that the subscriber's bandwidth estimate covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoPreference {
    /// The tallest picture wanted, in pixels (the tile's height on screen,
    /// times the device pixel ratio). `None`: no limit. The lowest layer is
    /// forwarded even when it is taller.
    pub max_height: Option<u16>,
    /// Keep this video when the link is too poor for everyone's: it gets its
    /// lowest layer while other videos are paused (audio always flows). The
    /// caller decides what deserves it (for example the person leading a
    /// group session, or a pinned tile).
    pub keep: bool,
}

/// Why the sfu removed a participant on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovedReason {
    /// No packet from any of its connections within the peer timeout.
    Timeout,
    /// Its peer connection failed (closed by the client, or a fatal DTLS error).
    ConnectionFailed,
    /// The room was closed.
    RoomClosed,
    /// The sfu is shutting down.
    Shutdown,
    /// A fault inside the media stack while handling this participant's
    /// data (caught: nobody else was affected). The client may reconnect.
    Fault,
    /// The media worker holding the room stopped and was restarted; the
    /// room's media must be set up again.
    WorkerRestarted,
}

impl RemovedReason {
    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovedReason::Timeout => "timeout",
            RemovedReason::ConnectionFailed => "connection_failed",
            RemovedReason::RoomClosed => "room_closed",
            RemovedReason::Shutdown => "shutdown",
            RemovedReason::Fault => "fault",
            RemovedReason::WorkerRestarted => "worker_restarted",
        }
    }
}

/// Something that happened to one participant, delivered on the channel
/// returned by `add_participant`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ParticipantEvent {
    /// A new offer for the subscribe connection; answer with
    /// `SfuHandle::answer_subscribe`.
    SubscribeOffer {
        /// SDP text.
        sdp: String,
    },
    /// A remote track was added to the subscribe connection (sent just before
    /// the offer that carries it).
    TrackAdded(SubscribedTrack),
    /// A remote track was removed from the subscribe connection.
    TrackRemoved(SubscribedTrack),
    /// One of the participant's connections completed ICE and DTLS.
    Connected(Connection),
    /// A simulcast video in the subscribe connection was paused because the
    /// participant's bandwidth estimate does not cover even its lowest layer
    /// (`paused: true`), or flows again (`paused: false`). Audio is never
    /// paused. A client may say so on the tile.
    VideoPaused {
        /// The track.
        track: SubscribedTrack,
        /// Whether it is paused now.
        paused: bool,
    },
    /// The sfu removed the participant; no more events follow.
    Removed(RemovedReason),
}

/// How a participant's media reaches the server, from the ICE candidate
/// pair its connection selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaPath {
    /// Straight to the server over UDP.
    Udp,
    /// Straight to the server over TCP (ICE-TCP).
    Tcp,
    /// Through a TURN server: the media comes from one of
    /// [`SfuConfig::relay_ips`]. How the browser reaches the TURN server
    /// (UDP, TCP or TLS) is not visible from here.
    Relay,
}

impl MediaPath {
    /// The lowercase name used in metrics and on the ops dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaPath::Udp => "udp",
            MediaPath::Tcp => "tcp",
            MediaPath::Relay => "relay",
        }
    }
}

/// Media counters of one participant, summed over its tracks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantStats {
    /// The room.
    pub room: Option<RoomId>,
    /// The participant.
    pub participant: Option<ParticipantId>,
    /// RTP packets received from the participant.
    pub packets_in: u64,
    /// RTP payload bytes received from the participant.
    pub bytes_in: u64,
    /// RTP packets sent to the participant.
    pub packets_out: u64,
    /// RTP payload bytes sent to the participant.
    pub bytes_out: u64,
    /// Fraction of the participant's packets lost on the way in (0..1), from our receiver side.
    pub loss_in: Option<f32>,
    /// Fraction of our packets the participant reports lost (0..1), from its receiver reports.
    pub loss_out: Option<f32>,
    /// Round-trip time, from RTCP or ICE.
    pub rtt: Option<Duration>,
    /// Inbound jitter, in RTP timestamp units of the video track (or audio if none).
    pub jitter: Option<u32>,
    /// NACKs the participant sent us (as a subscriber).
    pub nacks_received: u64,
    /// PLIs and FIRs the participant sent us (as a subscriber).
    pub keyframe_requests_received: u64,
    /// How the media arrives (publish connection first, else subscribe);
    /// `None` before a candidate pair is selected.
    pub path: Option<MediaPath>,
}

/// A cumulative histogram over fixed bucket bounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), plus one for values above
    /// the last bound.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
}

impl Histogram {
    /// Records one value against `bounds` (ascending upper bounds).
    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() + 1 {
            self.counts = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += value;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Upper bounds (seconds) of the batch-turnaround histogram.
pub const TURNAROUND_BUCKETS_SECS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1];
/// Upper bounds (fraction lost) of the loss histogram.
pub const LOSS_BUCKETS: [f64; 8] = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2];
/// Upper bounds (seconds) of the round-trip-time histogram.
pub const RTT_BUCKETS_SECS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0];

/// Counters of one media worker, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// The worker's UDP port.
    pub port: u16,
    /// Times this worker died and the supervisor restarted it. Kept by
    /// the supervisor: the other counters start again from zero.
    pub restarts: u64,
    /// Rooms on this worker.
    pub rooms: u64,
    /// Participants on this worker.
    pub participants: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams dropped: unparseable, or for no known peer.
    pub datagrams_dropped: u64,
    /// RTP packets written to subscribers.
    pub packets_forwarded: u64,
    /// RTP payload bytes written to subscribers.
    pub bytes_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// UDP sends that failed.
    pub send_errors: u64,
    /// Peers dropped after an internal fault (caught, never fatal to others).
    pub peer_faults: u64,
    /// NACKs received from subscribers (answered from the send buffer).
    pub nacks_received: u64,
    /// PLIs and FIRs received from subscribers.
    pub keyframe_requests_received: u64,
    /// Times the worker woke: a batch of datagrams, a timer, a command.
    pub wakes: u64,
    /// str0m timeouts handled, one per peer whose timer fell due.
    pub peer_timeouts: u64,
    /// Batch turnaround: from reading the first datagram of a batch to
    /// having sent everything it produced ([`TURNAROUND_BUCKETS_SECS`]).
    pub turnaround: Histogram,
    /// Loss fraction per track, from every stats report ([`LOSS_BUCKETS`]):
    /// ingress loss we saw, and egress loss subscribers reported.
    pub loss: Histogram,
    /// Round-trip time per peer, from every stats report ([`RTT_BUCKETS_SECS`]).
    pub rtt: Histogram,
}

/// One media worker's state, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHealth {
    /// Worker index.
    pub worker: usize,
    /// Its UDP port.
    pub port: u16,
    /// Whether it runs (false between a fault and its restart).
    pub alive: bool,
    /// How many times it was restarted after a fault.
    pub restarts: u64,
}

/// Why an `SfuHandle` call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuError {
    /// No room with that id.
    #[error("no such room")]
    RoomNotFound,
    /// The room holds its maximum number of participants.
    #[error("the room is full")]
    RoomFull,
    /// No participant with that id in the room.
    #[error("no such participant")]
    ParticipantNotFound,
    /// The participant is already in the room.
    #[error("participant already in the room")]
    ParticipantExists,
    /// The SDP did not parse or could not be applied.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// A subscribe answer arrived with no offer pending.
    #[error("no subscribe offer is pending")]
    NoPendingOffer,
    /// The ICE candidate did not parse.
    #[error("invalid ICE candidate")]
    InvalidCandidate,
    /// A publish offer carries more media sections than allowed.
    #[error("a participant may publish at most {max} tracks")]
    TooManyTracks {
        /// The limit.
        max: usize,
    },
    /// A UDP socket could not be bound.
    #[error("cannot bind media socket {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid sfu config: {0}")]
    Config(&'static str),
    /// The media worker has stopped (shutdown or fault).
    #[error("the media worker has stopped")]
    WorkerGone,
    /// A fault inside the media stack while handling this request (caught:
    /// nobody else was affected).
    #[error("the media server could not handle this")]
    Fault,
    /// A video preference names a height of 0.
    #[error("a preferred height must be at least 1 pixel")]
    InvalidPreference,
}
