//! The sans-IO heart of a media worker: rooms, participants, peers and
//! forwarding, with no sockets, no clock and no channels of its own.
//!
//! The worker (see `worker.rs`) feeds it datagrams, commands and timeouts,
//! each with a `now`, and takes what it leaves in [`MediaCore::transmits`]
//! and [`MediaCore::events`], as str0m's `poll_output` does. Tests drive it
//! the same way on simulated time.
//!
//! Rooms, participants and peers live in slabs and refer to each other by
//! index, so the packet path clones no id and allocates nothing of its own.
//! A forwarded packet goes straight from the publisher's drain into every
//! subscriber's `Rtc` through the track's fan-out table (rebuilt when
//! negotiation changes who receives what); subscribers are drained once per
//! batch of input, not once per packet. Work that restructures rooms
//! (tracks coming and going, removals) is queued as an [`Action`] and run
//! after the peer that caused it has been drained.
//!
//! Every call into str0m with something a peer sent runs under
//! `catch_unwind`: a panic costs that participant its media connections
//! (it is told, and may come back), never the worker.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use slab::Slab;
use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Mid, Pt, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn};

use crate::api::{
    Connection, ParticipantEvent, ParticipantId, ParticipantStats, RemovedReason, RoomId, SfuError, SubscribedTrack,
    TrackKind, VideoPreference, WorkerStats,
};
use crate::forward::{KeyframeThrottle, SeqRewriter};
use crate::simulcast::{Pick, RateMeter};

mod events;
mod forwarding;
mod layers;
mod negotiation;
mod sdp;
mod stats;
mod timers;

use stats::PeerMediaStats;
use timers::{Timer, Timers};

/// How long a peer whose timeout fired without sending anything waits
/// before its next timeout, when str0m asks for one at the same instant.
const PACING_TICK: Duration = Duration::from_millis(1);

/// How often silent participants are looked for.
const SILENCE_CHECK: Duration = Duration::from_millis(500);
/// Silence from a peer this long, then a datagram: a network that came back
/// (subscribers send RTCP every second and STUN checks every few).
const HEARD_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// How long a subscriber's sent packets are kept to answer its NACKs.
/// str0m keeps three seconds; libwebrtc keeps its own sent packets for
/// max(1 s, 3 × RTT), and a resend later than that comes after the
/// receiver has given up on the frame. Three seconds of every subscriber's
/// video was most of the server's memory in a clinic's busy hour.
const RTX_CACHE_AGE: Duration = Duration::from_secs(1);
/// The packet cap of that cache: over two seconds of a 4 Mbit/s video.
const RTX_CACHE_PACKETS: usize = 1000;
/// str0m's default: resends are dropped while they exceed 15% of the stream.
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// Settings the core needs.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// Candidates every peer advertises (their bases are the worker's sockets).
    pub candidates: Vec<Candidate>,
    /// Bound address → the address announced for it in SDP (1:1 NAT).
    pub announce: Vec<(std::net::IpAddr, std::net::IpAddr)>,
    /// TURN relay addresses (see `SfuConfig::relay_ips`).
    pub relay_ips: Vec<std::net::IpAddr>,
    pub max_participants: usize,
    pub peer_timeout: Duration,
    pub keyframe_interval: Duration,
    pub stats_interval: Duration,
    pub max_tracks: usize,
    pub max_sdp_bytes: usize,
    /// Bandwidth estimation on subscribe connections, starting from this
    /// estimate (bits per second); `None` turns it off (tests that set the
    /// estimate themselves).
    pub initial_estimate_bps: Option<u64>,
}

/// A datagram to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// UDP, or TCP (ICE-TCP: sent as an RFC 4571 frame on the connection
    /// from `destination`).
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Something for the worker to pass on to one participant's event stream.
#[derive(Debug)]
pub(crate) enum CoreEvent {
    /// Deliver `event` to the participant with this key.
    To(u64, ParticipantEvent),
    /// The participant is gone: close its event stream.
    Forget(u64),
}

type RoomIx = usize;
type PartIx = usize;
type PeerIx = usize;

/// One worker's rooms and peers.
pub(crate) struct MediaCore {
    config: CoreConfig,
    rtc_config: RtcConfig,
    /// As `rtc_config`, with bandwidth estimation (and so pacing) on, for
    /// the subscribe connections of rooms that ask for it: the estimate
    /// chooses simulcast layers.
    subscribe_config: RtcConfig,
    room_index: FxHashMap<RoomId, RoomIx>,
    rooms: Slab<Room>,
    participants: Slab<Participant>,
    peers: Slab<Peer>,
    /// Remote address → peer, learnt from packets a peer accepted.
    by_source: FxHashMap<SocketAddr, PeerIx>,
    /// Local ICE ufrag → peer, to route a STUN request from a new address
    /// without asking every peer.
    by_ufrag: FxHashMap<String, PeerIx>,
    timers: Timers,
    actions: VecDeque<Action>,
    /// Peers written to since they were last drained.
    dirty: Vec<PeerIx>,
    /// Datagrams waiting to be sent by the worker.
    pub transmits: Vec<Outgoing>,
    /// Events waiting to be passed on by the worker.
    pub events: Vec<CoreEvent>,
    /// Counters for metrics.
    pub counters: WorkerStats,
    next_serial: u64,
    next_silence_check: Instant,
    rng: u64,
    /// Datagrams routed by their STUN ufrag, and peers asked whether they
    /// accept a datagram (tests check junk costs neither).
    #[cfg(test)]
    ufrag_routes: u64,
    #[cfg(test)]
    accepts_calls: u64,
}

struct Room {
    id: RoomId,
    max_participants: usize,
    participants: Vec<PartIx>,
    /// Bandwidth estimation on its subscribe connections.
    bwe: bool,
}

struct Participant {
    id: ParticipantId,
    room: RoomIx,
    /// Unique for the worker's life: the key of its event stream, and a
    /// check that a slab index still means the same participant.
    serial: u64,
    publish: Option<PeerIx>,
    subscribe: Option<PeerIx>,
    tracks: Vec<TrackIn>,
    /// Identifies the current publish connection: part of every track id it
    /// publishes, so a rejoin never repeats an `msid` a subscriber's SDP
    /// still lists. Drawn from the worker-wide serial, so it stays unique
    /// even when the participant was removed and added again under the
    /// same id (a reload that closed the old connection first).
    generation: u64,
    /// When the participant (re)offered media; its peers' own
    /// `last_received` times count from here.
    last_activity: Instant,
    /// As a subscriber: how it wants each publisher's video (by publisher
    /// id, so a publisher's reconnect keeps it). At most one entry per
    /// member of the room.
    video_prefs: Vec<(ParticipantId, VideoPreference)>,
}

/// A track a participant publishes.
struct TrackIn {
    mid: Mid,
    kind: TrackKind,
    /// The msid track id subscribers see.
    track_id: String,
    /// Its encodings: one (rid `None`) for a plain track, or its simulcast
    /// layers from low to high, in the order the publisher's SDP lists them.
    layers: Vec<LayerIn>,
    /// Where its packets go: open tracks of subscribe connections.
    fanout: Vec<Fan>,
}

impl TrackIn {
    fn simulcast(&self) -> bool {
        self.layers.first().is_some_and(|l| l.rid.is_some())
    }
}

/// One encoding of a published track.
struct LayerIn {
    rid: Option<Rid>,
    keyframes: KeyframeThrottle,
    /// Received bitrate, and whether it is being sent at all.
    meter: RateMeter,
    /// Picture height, from its last keyframe (VP8).
    height: Option<u16>,
}

impl LayerIn {
    fn new(rid: Option<Rid>, keyframe_interval: Duration) -> Self {
        LayerIn { rid, keyframes: KeyframeThrottle::new(keyframe_interval), meter: RateMeter::default(), height: None }
    }
}

/// One destination of a published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fan {
    peer: PeerIx,
    out: usize,
}

struct Peer {
    rtc: Rtc,
    participant: PartIx,
    serial: u64,
    side: Side,
    /// When this peer's one timer entry is due.
    scheduled: Option<Instant>,
    /// When a datagram last arrived for this peer (the silence check reads it).
    last_received: Instant,
    /// The remote DTLS fingerprint line, to tell a renegotiation from a new
    /// peer connection.
    fingerprint: Option<String>,
    /// The local ICE ufrag, as registered in `by_ufrag`.
    ufrag: String,
    /// Whether it is in `dirty`.
    dirty: bool,
    /// Latest media stats, from str0m's stats events.
    stats: PeerMediaStats,
}

enum Side {
    Publish,
    Subscribe(Subscription),
}

#[derive(Default)]
struct Subscription {
    tracks: Slab<TrackOut>,
    pending: Option<SdpPendingOffer>,
    restart_ice: bool,
    connected: bool,
    /// The latest bandwidth estimate towards the subscriber, bits per second.
    estimate_bps: Option<u64>,
}

/// A remote track in one subscriber's subscribe connection.
struct TrackOut {
    /// The publisher (slot and serial) and its track.
    source: PartIx,
    source_serial: u64,
    source_mid: Mid,
    kind: TrackKind,
    /// The msid stream id (the publisher's participant id) and track id.
    stream_id: String,
    track_id: String,
    state: OutState,
    seq: SeqRewriter,
    /// Publisher PT → our PT, cached after the first packet.
    pt_map: Option<(Pt, Pt)>,
    /// Simulcast: the layer chosen for this subscriber (forwarding moves
    /// to it at its next keyframe), and the one forwarded now.
    target: Pick,
    current: Option<usize>,
    /// Simulcast: whether the subscriber was told the video is paused.
    told_paused: bool,
    /// When the last packet written to this track arrived, to carry the
    /// timestamps across a layer switch by the time that really passed.
    last_wallclock: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Waiting for the next offer.
    ToOpen,
    /// Offered; waiting for the answer.
    Negotiating(Mid),
    /// Negotiated: packets flow.
    Open(Mid),
    /// To be made inactive in the next offer.
    ToStop(Mid),
    /// Made inactive in the pending offer; dropped when it is answered.
    Stopping(Mid),
}

/// Work that restructures rooms, queued while a peer is drained.
enum Action {
    TrackPublished {
        participant: PartIx,
        serial: u64,
        mid: Mid,
        kind: TrackKind,
    },
    TrackUnpublished {
        participant: PartIx,
        serial: u64,
        mid: Mid,
    },
    KeyframeWanted {
        peer: PeerIx,
        serial: u64,
        sub_mid: Mid,
    },
    SubscriberConnected {
        participant: PartIx,
        serial: u64,
    },
    Connected {
        participant: PartIx,
        serial: u64,
        connection: Connection,
    },
    Negotiate {
        participant: PartIx,
        serial: u64,
    },
    /// Choose the subscriber's simulcast layers again (a new estimate).
    Reallocate {
        participant: PartIx,
        serial: u64,
    },
    /// The subscribe connection closed (the client dropped it, e.g. to
    /// start a fresh one): forget it, keep publishing.
    SubscribeClosed {
        participant: PartIx,
        serial: u64,
        peer: PeerIx,
    },
    Remove {
        participant: PartIx,
        serial: u64,
        reason: RemovedReason,
    },
}

/// A panic caught at the edge of str0m.
#[derive(Debug)]
struct Fault;

/// Runs `f` (a call into str0m with what a peer sent), turning a panic into
/// [`Fault`]. Every such call goes through here, so tests can also tell
/// str0m's allocations from ours.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Fault> {
    #[cfg(test)]
    return crate::alloc_count::in_str0m(|| catch_unwind(AssertUnwindSafe(f)).map_err(|_| Fault));
    #[cfg(not(test))]
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Fault)
}

impl MediaCore {
    pub(crate) fn new(config: CoreConfig, now: Instant, seed: u64) -> Self {
        let rtc_config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_stats_interval(Some(config.stats_interval));
        let initial = config.initial_estimate_bps.unwrap_or(crate::api::DEFAULT_INITIAL_ESTIMATE_BPS);
        let subscribe_config = rtc_config.clone().enable_bwe(Some(Bitrate::from(initial)));
        MediaCore {
            config,
            rtc_config,
            subscribe_config,
            room_index: FxHashMap::default(),
            rooms: Slab::new(),
            participants: Slab::new(),
            peers: Slab::new(),
            by_source: FxHashMap::default(),
            by_ufrag: FxHashMap::default(),
            timers: Timers::default(),
            actions: VecDeque::new(),
            dirty: Vec::new(),
            transmits: Vec::new(),
            events: Vec::new(),
            counters: WorkerStats::default(),
            next_serial: 1,
            next_silence_check: now + SILENCE_CHECK,
            rng: seed | 1,
            #[cfg(test)]
            ufrag_routes: 0,
            #[cfg(test)]
            accepts_calls: 0,
        }
    }

    /// When the core next needs [`handle_timeout`](Self::handle_timeout).
    pub(crate) fn next_wake(&self) -> Instant {
        match self.timers.next() {
            Some(t) => t.min(self.next_silence_check),
            None => self.next_silence_check,
        }
    }

    // ----- commands -------------------------------------------------------

    /// Creates a room (an existing one is left as it is). `bwe` turns
    /// bandwidth estimation on for its subscribers even where the server
    /// leaves it off.
    pub(crate) fn create_room(&mut self, room: RoomId, max_participants: Option<usize>, bwe: bool) {
        if self.room_index.contains_key(&room) {
            return;
        }
        let max = max_participants.unwrap_or(self.config.max_participants);
        let bwe = bwe || self.config.initial_estimate_bps.is_some();
        let ix = self.rooms.insert(Room { id: room.clone(), max_participants: max, participants: Vec::new(), bwe });
        self.room_index.insert(room, ix);
    }

    pub(crate) fn close_room(&mut self, now: Instant, room: &RoomId) -> Result<(), SfuError> {
        let ix = *self.room_index.get(room).ok_or(SfuError::RoomNotFound)?;
        for p in self.rooms[ix].participants.clone() {
            self.remove(now, p, Some(RemovedReason::RoomClosed));
        }
        self.remove_room_if_empty(ix, true);
        self.settle(now);
        Ok(())
    }

    /// Adds a participant with its first publish offer; returns the answer
    /// and the key its events will carry.
    pub(crate) fn add_participant(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: ParticipantId,
        offer: &str,
    ) -> Result<(String, u64), SfuError> {
        let offer = match guarded(|| sdp::checked_offer(offer, self.config.max_sdp_bytes, self.config.max_tracks)) {
            Ok(parsed) => parsed?,
            Err(Fault) => {
                self.counters.peer_faults += 1;
                warn!(room = %room_id, participant = %participant, "fault reading an offer; refused");
                return Err(SfuError::Fault);
            }
        };
        let room_ix = *self.room_index.get(room_id).ok_or(SfuError::RoomNotFound)?;
        let room = &self.rooms[room_ix];
        if room.participants.iter().any(|p| self.participants[*p].id == participant) {
            return Err(SfuError::ParticipantExists);
        }
        if room.participants.len() >= room.max_participants {
            return Err(SfuError::RoomFull);
        }
        let serial = self.serial();
        let pix = self.participants.insert(Participant {
            id: participant,
            room: room_ix,
            serial,
            publish: None,
            subscribe: None,
            tracks: Vec::new(),
            generation: serial,
            last_activity: now,
            video_prefs: Vec::new(),
        });
        self.rooms[room_ix].participants.push(pix);
        match self.new_publish_peer(now, pix, offer) {
            Ok(answer) => {
                // Everything already published in the room is offered to the newcomer.
                self.offer_existing_tracks(now, pix);
                self.actions.push_back(Action::Negotiate { participant: pix, serial });
                self.settle(now);
                Ok((answer, serial))
            }
            Err(e) => {
                self.remove(now, pix, None);
                self.settle(now);
                Err(e)
            }
        }
    }

    /// A new publish offer from a participant already in the room: an ICE
    /// restart or renegotiation on the same connection, or a new connection
    /// (after a page reload), which replaces the old one.
    pub(crate) fn publish_offer(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: &ParticipantId,
        offer: &str,
    ) -> Result<String, SfuError> {
        let pix = self.find(room_id, participant)?;
        let parsed = match guarded(|| sdp::checked_offer(offer, self.config.max_sdp_bytes, self.config.max_tracks)) {
            Ok(parsed) => parsed?,
            Err(Fault) => return Err(self.fault(now, pix)),
        };
        let fingerprint = sdp::fingerprint_of(offer);
        let p = &mut self.participants[pix];
        p.last_activity = now;
        if let Some(key) = p.publish
            && let Some(peer) = self.peers.get_mut(key)
            && peer.fingerprint == fingerprint
            && peer.rtc.is_alive()
        {
            let answer = match guarded(|| peer.rtc.sdp_api().accept_offer(parsed)) {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err(SfuError::InvalidSdp(e.to_string())),
                Err(Fault) => return Err(self.fault(now, pix)),
            };
            self.register_ufrag(key);
            self.drain(now, key);
            self.settle(now);
            return Ok(self.outgoing_sdp(&answer.to_sdp_string()));
        }
        // A new connection: its tracks replace the old connection's.
        if let Some(key) = self.participants[pix].publish.take() {
            self.drop_peer(key);
            let serial = self.participants[pix].serial;
            for mid in self.participants[pix].tracks.iter().map(|t| t.mid).collect::<Vec<_>>() {
                self.actions.push_back(Action::TrackUnpublished { participant: pix, serial, mid });
            }
            self.settle(now);
            self.participants[pix].generation = self.serial();
        }
        let answer = self.new_publish_peer(now, pix, parsed);
        self.settle(now);
        answer
    }

    pub(crate) fn answer_subscribe(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: &ParticipantId,
        answer: &str,
    ) -> Result<(), SfuError> {
        let pix = self.find(room_id, participant)?;
        let key = self.participants[pix].subscribe.ok_or(SfuError::NoPendingOffer)?;
        if answer.len() > self.config.max_sdp_bytes {
            return Err(SfuError::InvalidSdp(format!("larger than {} bytes", self.config.max_sdp_bytes)));
        }
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let peer = self.peers.get_mut(key).ok_or(SfuError::NoPendingOffer)?;
        let Side::Subscribe(sub) = &mut peer.side else { return Err(SfuError::NoPendingOffer) };
        let pending = sub.pending.take().ok_or(SfuError::NoPendingOffer)?;
        match guarded(|| peer.rtc.sdp_api().accept_answer(pending, answer)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // The offer is rolled back: everything in flight is offered again.
                roll_back(sub);
                return Err(SfuError::InvalidSdp(e.to_string()));
            }
            Err(Fault) => return Err(self.fault(now, pix)),
        }
        let opened = negotiation::settle_answered(sub);
        for k in &opened {
            if let Some(OutState::Open(mid)) = sub.tracks.get(*k).map(|t| t.state)
                && let Some(tx) = peer.rtc.direct_api().stream_tx_by_mid(mid, None)
            {
                tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, RTX_RATIO_CAP);
            }
        }
        let connected = sub.connected;
        self.register_ufrag(key);
        self.drain(now, key);
        self.rebuild_fanouts(self.participants[pix].room);
        // Choose layers first, so the keyframes asked for are of those.
        self.reallocate(now, pix, false);
        if connected {
            let wanted: Vec<_> = match self.peers.get(key) {
                Some(Peer { side: Side::Subscribe(sub), .. }) => opened
                    .iter()
                    .filter_map(|k| sub.tracks.get(*k))
                    .filter_map(|t| match t.target {
                        crate::simulcast::Pick::Layer(layer) => Some((t.source, t.source_mid, layer)),
                        crate::simulcast::Pick::Paused => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for (source, mid, layer) in wanted {
                self.keyframe_from(now, source, mid, layer);
            }
        }
        // Changes that arrived while the offer was out go in the next one.
        let serial = self.participants[pix].serial;
        self.actions.push_back(Action::Negotiate { participant: pix, serial });
        self.settle(now);
        Ok(())
    }

    /// Asks for a fresh subscribe offer. `new_connection` means the client
    /// built a new peer connection (so the old one is dropped); otherwise
    /// the offer restarts ICE on the existing one.
    pub(crate) fn restart_subscribe(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: &ParticipantId,
        new_connection: bool,
    ) -> Result<(), SfuError> {
        let pix = self.find(room_id, participant)?;
        match self.participants[pix].subscribe {
            Some(key) if new_connection => {
                self.drop_peer(key);
                self.participants[pix].subscribe = None;
                self.rebuild_fanouts(self.participants[pix].room);
                self.offer_existing_tracks(now, pix);
            }
            Some(key) => {
                if let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get_mut(key) {
                    sub.restart_ice = true;
                    // A lost offer must not block the restart.
                    if sub.pending.take().is_some() {
                        roll_back(sub);
                    }
                }
            }
            None => self.offer_existing_tracks(now, pix),
        }
        let serial = self.participants[pix].serial;
        self.actions.push_back(Action::Negotiate { participant: pix, serial });
        self.settle(now);
        Ok(())
    }

    pub(crate) fn trickle(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: &ParticipantId,
        connection: Connection,
        candidate: &str,
    ) -> Result<(), SfuError> {
        let pix = self.find(room_id, participant)?;
        let key = match connection {
            Connection::Publish => self.participants[pix].publish,
            Connection::Subscribe => self.participants[pix].subscribe,
        };
        let text = candidate.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        if text.is_empty() {
            // End-of-candidates: nothing to do for an ICE-lite server.
            return Ok(());
        }
        let c = match guarded(|| Candidate::from_sdp_string(text)) {
            Ok(Ok(c)) => c,
            Ok(Err(_)) => return Err(SfuError::InvalidCandidate),
            Err(Fault) => return Err(self.fault(now, pix)),
        };
        if let Some(key) = key
            && let Some(peer) = self.peers.get_mut(key)
        {
            if guarded(|| peer.rtc.add_remote_candidate(c)).is_err() {
                return Err(self.fault(now, pix));
            }
            self.drain(now, key);
            self.settle(now);
        }
        Ok(())
    }

    /// Removes a participant at the caller's request (it is not told).
    pub(crate) fn remove_participant(&mut self, now: Instant, room_id: &RoomId, participant: &ParticipantId) -> bool {
        let Ok(pix) = self.find(room_id, participant) else { return false };
        self.remove(now, pix, None);
        self.settle(now);
        true
    }

    pub(crate) fn shutdown(&mut self, now: Instant) {
        let all: Vec<PartIx> = self.participants.iter().map(|(ix, _)| ix).collect();
        for p in all {
            self.remove(now, p, Some(RemovedReason::Shutdown));
        }
        self.settle(now);
    }

    pub(crate) fn refresh_counters(&mut self) {
        self.counters.rooms = self.rooms.len() as u64;
        self.counters.participants = self.participants.len() as u64;
    }

    /// The tracks offered or open in a subscriber's subscribe connection.
    pub(crate) fn subscribed_tracks(
        &self,
        room_id: &RoomId,
        participant: &ParticipantId,
    ) -> Result<Vec<SubscribedTrack>, SfuError> {
        let pix = self.find(room_id, participant)?;
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.participants[pix].subscribe.map(|k| &self.peers[k])
        else {
            return Ok(Vec::new());
        };
        Ok(sub
            .tracks
            .iter()
            .filter_map(|(_, t)| match t.state {
                OutState::Negotiating(mid) | OutState::Open(mid) => Some(self.subscribed(t, mid)),
                _ => None,
            })
            .collect())
    }

    /// Media stats of every participant.
    pub(crate) fn participant_stats(&self) -> Vec<ParticipantStats> {
        self.participants
            .iter()
            .map(|(_, p)| {
                stats::of_participant(
                    &self.rooms[p.room].id,
                    &p.id,
                    p.publish.map(|k| &self.peers[k]),
                    p.subscribe.map(|k| &self.peers[k]),
                    &self.config.relay_ips,
                )
            })
            .collect()
    }

    // ----- input ----------------------------------------------------------

    /// One datagram arrived on the local address `destination`. Call
    /// [`settle`](Self::settle) after a batch of them.
    pub(crate) fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, buf: &[u8]) {
        self.receive(now, Protocol::Udp, source, destination, buf);
    }

    /// One RFC 4571 frame arrived on an ICE-TCP connection from `source`
    /// accepted on the local address `destination`. Call
    /// [`settle`](Self::settle) after it.
    pub(crate) fn handle_tcp_frame(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, buf: &[u8]) {
        self.receive(now, Protocol::Tcp, source, destination, buf);
    }

    /// One datagram (or, for TCP, one RFC 4571 frame) arrived.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.counters.datagrams_in += 1;
        let Ok(Ok(contents)) = guarded(|| DatagramRecv::try_from(buf)) else {
            self.counters.datagrams_dropped += 1;
            return;
        };
        let input = Input::Receive(now, Receive { proto, source, destination, contents });
        let Some(key) = self.route(source, buf, &input) else {
            self.counters.datagrams_dropped += 1;
            return;
        };
        let peer = &mut self.peers[key];
        let heard_again = now.saturating_duration_since(peer.last_received) >= HEARD_AGAIN_AFTER;
        peer.last_received = now;
        match guarded(|| peer.rtc.handle_input(input)) {
            // A datagram str0m refuses is dropped; only a fault takes the peer down.
            Ok(Ok(())) | Ok(Err(_)) => {}
            Err(Fault) => {
                let pix = peer.participant;
                self.fault(now, pix);
                return;
            }
        }
        self.drain(now, key);
        if heard_again {
            self.keyframes_after_silence(now, key);
        }
    }

    /// A peer heard from again after a silence (a network cut that ended):
    /// whatever video crossed the gap cannot be decoded without a keyframe.
    /// Ask at once rather than wait for the receiving browser, which may
    /// take seconds to give up on the frames it lost. A publisher that
    /// comes back needs a keyframe from itself; a subscriber that comes
    /// back needs one from everyone it receives.
    fn keyframes_after_silence(&mut self, now: Instant, key: PeerIx) {
        let Some(peer) = self.peers.get(key) else { return };
        // (publisher, track, simulcast layer): every layer of a returning
        // publisher; the layer each returning subscriber decodes or awaits.
        let wanted: Vec<(PartIx, Mid, usize)> = match &peer.side {
            Side::Publish => match self.participants.get(peer.participant) {
                Some(p) => p
                    .tracks
                    .iter()
                    .flat_map(|t| (0..t.layers.len().max(1)).map(move |layer| (peer.participant, t.mid, layer)))
                    .collect(),
                None => Vec::new(),
            },
            Side::Subscribe(sub) => sub
                .tracks
                .iter()
                .filter(|(_, t)| matches!(t.state, OutState::Open(_)) && self.is(t.source, t.source_serial))
                .filter_map(|(_, t)| match (t.current, t.target) {
                    (Some(layer), _) | (None, crate::simulcast::Pick::Layer(layer)) => {
                        Some((t.source, t.source_mid, layer))
                    }
                    (None, crate::simulcast::Pick::Paused) => None,
                })
                .collect(),
        };
        for (publisher, mid, layer) in wanted {
            self.keyframe_from(now, publisher, mid, layer);
        }
    }

    /// Which peer a datagram is for: the one its source address is known
    /// to belong to, or, for a STUN request, the peer whose ufrag it names.
    /// Anything else is junk and costs no scan of the peers.
    fn route(&mut self, source: SocketAddr, buf: &[u8], input: &Input) -> Option<PeerIx> {
        #[cfg(test)]
        {
            self.accepts_calls += u64::from(self.by_source.contains_key(&source));
        }
        if let Some(&key) = self.by_source.get(&source)
            && let Some(peer) = self.peers.get(key)
            && matches!(guarded(|| peer.rtc.accepts(input)), Ok(true))
        {
            return Some(key);
        }
        let key = guarded(|| {
            let message = str0m::ice::StunMessage::parse(buf).ok()?;
            let (local_ufrag, _) = message.split_username()?;
            self.by_ufrag.get(local_ufrag).copied()
        })
        .ok()??;
        #[cfg(test)]
        {
            self.ufrag_routes += 1;
        }
        let peer = self.peers.get(key)?;
        #[cfg(test)]
        {
            self.accepts_calls += 1;
        }
        if !matches!(guarded(|| peer.rtc.accepts(input)), Ok(true)) {
            return None;
        }
        self.by_source.insert(source, key);
        Some(key)
    }

    /// Drives timers: str0m's, deferred keyframe requests, and the silence check.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Peer(key, serial) => {
                    let Some(peer) = self.peers.get_mut(key).filter(|p| p.serial == serial) else { continue };
                    peer.scheduled = None;
                    self.counters.peer_timeouts += 1;
                    if guarded(|| peer.rtc.handle_input(Input::Timeout(now))).is_err() {
                        let pix = peer.participant;
                        self.fault(now, pix);
                        continue;
                    }
                    let sent_before = self.transmits.len();
                    self.drain(now, key);
                    // str0m's pacer (on with bandwidth estimation) sends one
                    // packet per timeout and asks for the next at once. A
                    // timeout at this same instant is honoured while it
                    // sends something; one that sends nothing would spin
                    // (time does not move within a call), so it waits a tick.
                    if let Some(peer) = self.peers.get_mut(key)
                        && self.transmits.len() == sent_before
                        && peer.scheduled.is_some_and(|t| t <= now)
                    {
                        let later = now + PACING_TICK;
                        self.timers.set(later, Timer::Peer(key, serial));
                        peer.scheduled = Some(later);
                    }
                }
                Timer::Keyframe(pix, serial, track, layer) => {
                    let Some(p) = self.participants.get_mut(pix).filter(|p| p.serial == serial) else { continue };
                    let Some(t) = p.tracks.get_mut(track) else { continue };
                    let Some(l) = t.layers.get_mut(layer) else { continue };
                    if l.keyframes.poll_deferred(now) {
                        let (publish, mid, rid) = (p.publish, t.mid, l.rid);
                        if let Some(key) = publish {
                            self.send_keyframe_request(now, key, mid, rid);
                        }
                    }
                }
            }
        }
        if now >= self.next_silence_check {
            self.next_silence_check = now + SILENCE_CHECK;
            self.remove_silent(now);
            // Layers start and stop, and their rates move, between estimates.
            self.reallocate_all(now);
        }
        self.settle(now);
    }

    /// Drains every peer written to, and runs queued actions, until quiet.
    pub(crate) fn settle(&mut self, now: Instant) {
        loop {
            while let Some(key) = self.dirty.pop() {
                self.drain(now, key);
            }
            let Some(action) = self.actions.pop_front() else { break };
            self.run(now, action);
        }
    }

    fn remove_silent(&mut self, now: Instant) {
        let timeout = self.config.peer_timeout;
        let silent: Vec<PartIx> = self
            .participants
            .iter()
            .filter(|(_, p)| {
                let last = [p.publish, p.subscribe]
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.peers.get(k))
                    .map(|peer| peer.last_received)
                    .fold(p.last_activity, Instant::max);
                now.saturating_duration_since(last) > timeout
            })
            .map(|(ix, _)| ix)
            .collect();
        for pix in silent {
            let p = &self.participants[pix];
            info!(room = %self.rooms[p.room].id, participant = %p.id, "participant silent past the peer timeout, removed");
            self.remove(now, pix, Some(RemovedReason::Timeout));
        }
    }

    // ----- peers ----------------------------------------------------------

    fn new_peer(&mut self, now: Instant, participant: PartIx, side: Side) -> PeerIx {
        // Subscribe connections of a room with bandwidth estimation get the
        // estimator and its pacer; the rest leave unpaced.
        let bwe = self.participants.get(participant).and_then(|p| self.rooms.get(p.room)).is_some_and(|r| r.bwe);
        let config = match side {
            Side::Subscribe(_) if bwe => &self.subscribe_config,
            _ => &self.rtc_config,
        };
        let mut rtc = config.clone().build(now);
        for c in &self.config.candidates {
            rtc.add_local_candidate(c.clone());
        }
        let serial = self.serial();
        let key = self.peers.insert(Peer {
            rtc,
            participant,
            serial,
            side,
            scheduled: None,
            last_received: now,
            fingerprint: None,
            ufrag: String::new(),
            dirty: false,
            stats: PeerMediaStats::default(),
        });
        self.register_ufrag(key);
        key
    }

    fn new_publish_peer(&mut self, now: Instant, participant: PartIx, offer: SdpOffer) -> Result<String, SfuError> {
        let fingerprint = sdp::fingerprint_of(&offer.to_sdp_string());
        let key = self.new_peer(now, participant, Side::Publish);
        let peer = &mut self.peers[key];
        peer.fingerprint = fingerprint;
        let answer = match guarded(|| peer.rtc.sdp_api().accept_offer(offer)) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                self.drop_peer(key);
                return Err(SfuError::InvalidSdp(e.to_string()));
            }
            Err(Fault) => {
                self.drop_peer(key);
                self.counters.peer_faults += 1;
                return Err(SfuError::Fault);
            }
        };
        self.participants[participant].publish = Some(key);
        self.register_ufrag(key);
        self.drain(now, key);
        Ok(self.outgoing_sdp(&answer.to_sdp_string()))
    }

    /// Keeps `by_ufrag` true after a peer's ICE credentials change.
    fn register_ufrag(&mut self, key: PeerIx) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        let Ok(ufrag) = guarded(|| peer.rtc.direct_api().local_ice_credentials().ufrag) else { return };
        if ufrag != peer.ufrag {
            let old = std::mem::replace(&mut peer.ufrag, ufrag.clone());
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(ufrag, key);
        }
    }

    fn drop_peer(&mut self, key: PeerIx) {
        if !self.peers.contains(key) {
            return;
        }
        let mut peer = self.peers.remove(key);
        let _ = guarded(|| peer.rtc.disconnect());
        self.timers.cancel(Timer::Peer(key, peer.serial));
        self.by_ufrag.remove(&peer.ufrag);
        self.by_source.retain(|_, k| *k != key);
    }

    /// Polls one peer until it has nothing more to say: transmits go to the
    /// outbox, packets are forwarded, other events become state or actions.
    fn drain(&mut self, now: Instant, key: PeerIx) {
        loop {
            let Some(peer) = self.peers.get_mut(key) else { return };
            let out = match guarded(|| peer.rtc.poll_output()) {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    let pix = peer.participant;
                    debug!(error = %e, "peer error");
                    self.queue_remove(pix, RemovedReason::ConnectionFailed);
                    return;
                }
                Err(Fault) => {
                    let pix = peer.participant;
                    self.fault(now, pix);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    peer.dirty = false;
                    if peer.scheduled != Some(t) {
                        self.timers.set(t, Timer::Peer(key, peer.serial));
                        peer.scheduled = Some(t);
                    }
                    if !peer.rtc.is_alive() {
                        let pix = peer.participant;
                        if matches!(peer.side, Side::Subscribe(_)) {
                            let serial = self.participants[pix].serial;
                            self.actions.push_back(Action::SubscribeClosed { participant: pix, serial, peer: key });
                        } else {
                            self.queue_remove(pix, RemovedReason::ConnectionFailed);
                        }
                    }
                    return;
                }
                Output::Transmit(t) => self.transmits.push(Outgoing {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Output::Event(e) => self.on_event(now, key, e),
            }
        }
    }

    fn run(&mut self, now: Instant, action: Action) {
        match action {
            Action::TrackPublished { participant, serial, mid, kind } => {
                if self.is(participant, serial) {
                    self.track_published(now, participant, mid, kind);
                }
            }
            Action::TrackUnpublished { participant, serial, mid } => {
                if self.is(participant, serial) {
                    self.track_unpublished(participant, mid);
                }
            }
            Action::KeyframeWanted { peer, serial, sub_mid } => self.keyframe_wanted(now, peer, serial, sub_mid),
            Action::SubscriberConnected { participant, serial } => {
                if self.is(participant, serial) {
                    for (source, mid, layer) in self.open_sources_of(participant) {
                        self.keyframe_from(now, source, mid, layer);
                    }
                }
            }
            Action::Negotiate { participant, serial } => {
                if self.is(participant, serial) {
                    self.negotiate(now, participant);
                }
            }
            Action::Reallocate { participant, serial } => {
                if self.is(participant, serial) {
                    self.reallocate(now, participant, true);
                }
            }
            Action::SubscribeClosed { participant, serial, peer } => {
                if self.is(participant, serial) && self.participants[participant].subscribe == Some(peer) {
                    debug!("subscribe connection closed by the client");
                    self.drop_peer(peer);
                    self.participants[participant].subscribe = None;
                    self.rebuild_fanouts(self.participants[participant].room);
                }
            }
            Action::Connected { participant, serial, connection } => {
                if self.is(participant, serial) {
                    self.events.push(CoreEvent::To(serial, ParticipantEvent::Connected(connection)));
                }
            }
            Action::Remove { participant, serial, reason } => {
                if self.is(participant, serial) {
                    self.remove(now, participant, Some(reason));
                }
            }
        }
    }

    /// Removes a participant now: its peers dropped, its tracks withdrawn
    /// from everyone's subscriptions, and (given a reason) told why.
    fn remove(&mut self, _now: Instant, pix: PartIx, reason: Option<RemovedReason>) {
        if !self.participants.contains(pix) {
            return;
        }
        let (publish, subscribe, serial, room) = {
            let p = &self.participants[pix];
            (p.publish, p.subscribe, p.serial, p.room)
        };
        for key in [publish, subscribe].into_iter().flatten() {
            self.drop_peer(key);
        }
        let mids: Vec<Mid> = self.participants[pix].tracks.iter().map(|t| t.mid).collect();
        for mid in mids {
            self.track_unpublished(pix, mid);
        }
        if let Some(reason) = reason {
            self.events.push(CoreEvent::To(serial, ParticipantEvent::Removed(reason)));
        }
        self.events.push(CoreEvent::Forget(serial));
        let p = self.participants.remove(pix);
        debug!(room = %self.rooms[room].id, participant = %p.id, reason = ?reason, "participant removed");
        self.rooms[room].participants.retain(|x| *x != pix);
        self.remove_room_if_empty(room, false);
        if self.rooms.contains(room) {
            self.rebuild_fanouts(room);
        }
    }

    /// A room closes when it is empty (or, `always`, when closed on purpose).
    fn remove_room_if_empty(&mut self, room: RoomIx, always: bool) {
        if self.rooms.get(room).is_some_and(|r| always || r.participants.is_empty()) {
            let r = self.rooms.remove(room);
            self.room_index.remove(&r.id);
            if !always {
                info!(room = %r.id, "room empty, closed");
            }
        }
    }

    fn queue_remove(&mut self, pix: PartIx, reason: RemovedReason) {
        if let Some(p) = self.participants.get(pix) {
            self.actions.push_back(Action::Remove { participant: pix, serial: p.serial, reason });
        }
    }

    /// A panic at the edge of str0m: the participant loses its media
    /// connections (and is told), nobody else notices.
    /// An SDP as the client must see it: candidates in every live section,
    /// on the announced addresses.
    fn outgoing_sdp(&self, sdp: &str) -> String {
        sdp::announce_addresses(&sdp::candidates_in_every_section(sdp), &self.config.announce)
    }

    fn fault(&mut self, _now: Instant, pix: PartIx) -> SfuError {
        self.counters.peer_faults += 1;
        if let Some(p) = self.participants.get(pix) {
            warn!(room = %self.rooms[p.room].id, participant = %p.id, "media fault; participant's media removed");
        }
        self.queue_remove(pix, RemovedReason::Fault);
        SfuError::Fault
    }

    // ----- helpers --------------------------------------------------------

    fn find(&self, room: &RoomId, participant: &ParticipantId) -> Result<PartIx, SfuError> {
        let r = self.room_index.get(room).ok_or(SfuError::RoomNotFound)?;
        self.rooms[*r]
            .participants
            .iter()
            .copied()
            .find(|p| self.participants[*p].id == *participant)
            .ok_or(SfuError::ParticipantNotFound)
    }

    /// Whether slot `pix` still holds the participant with `serial`.
    fn is(&self, pix: PartIx, serial: u64) -> bool {
        self.participants.get(pix).is_some_and(|p| p.serial == serial)
    }

    fn serial(&mut self) -> u64 {
        let s = self.next_serial;
        self.next_serial += 1;
        s
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough to vary initial sequence numbers.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn subscribed(&self, t: &TrackOut, mid: Mid) -> SubscribedTrack {
        SubscribedTrack {
            publisher: ParticipantId(t.stream_id.clone()),
            kind: t.kind,
            mid: mid.to_string(),
            track_id: t.track_id.clone(),
        }
    }

    /// Heap entries, for tests.
    #[cfg(test)]
    fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}

/// Puts everything an unanswered offer carried back to be offered again.
fn roll_back(sub: &mut Subscription) {
    for (_, t) in sub.tracks.iter_mut() {
        match t.state {
            OutState::Negotiating(_) => t.state = OutState::ToOpen,
            OutState::Stopping(mid) => t.state = OutState::ToStop(mid),
            _ => {}
        }
    }
}

#[cfg(test)]
mod sim_tests;
