//! The sans-IO heart of a media worker: rooms, participants, peers and
//! forwarding, with no sockets and no clock of its own.
//!
//! The worker (see `worker.rs`) feeds it datagrams, commands and timeouts,
//! each with a `now`, and sends what it leaves in the outbox. Tests can drive
//! it the same way on simulated time.
//!
//! Every str0m `Rtc` must be drained (`poll_output` until `Timeout`) after
//! each mutation. Work that touches *other* peers (forwarding a packet,
//! relaying a keyframe request) is queued as an [`Action`] while one peer is
//! drained and run afterwards, so no two peers are ever borrowed at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use crate::api::{
    Connection, LOSS_BUCKETS, ParticipantEvent, ParticipantId, ParticipantStats, RTT_BUCKETS_SECS, RemovedReason,
    RoomId, SfuError, SubscribedTrack, TrackKind, WorkerStats,
};
use crate::forward::{KeyframeThrottle, SeqRewriter};

/// How often silent participants are looked for.
const SILENCE_CHECK: Duration = Duration::from_millis(500);

/// Settings the core needs.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub local_addrs: Vec<SocketAddr>,
    pub max_participants: usize,
    pub peer_timeout: Duration,
    pub keyframe_interval: Duration,
    pub stats_interval: Duration,
    pub max_tracks: usize,
    pub max_sdp_bytes: usize,
}

/// A datagram to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

type PeerKey = u64;

/// One worker's rooms and peers.
pub(crate) struct MediaCore {
    config: CoreConfig,
    rtc_config: RtcConfig,
    rooms: HashMap<RoomId, Room>,
    peers: HashMap<PeerKey, Peer>,
    /// Remote address → peer, learnt from the first packet that a peer accepted.
    by_source: HashMap<SocketAddr, PeerKey>,
    next_key: PeerKey,
    actions: VecDeque<Action>,
    /// Datagrams waiting to be sent by the worker.
    pub outbox: Vec<Outgoing>,
    /// Counters for metrics.
    pub counters: WorkerStats,
    next_wake: Instant,
    next_silence_check: Instant,
    rng: u64,
}

struct Room {
    max_participants: usize,
    participants: BTreeMap<ParticipantId, Participant>,
}

struct Participant {
    publish: Option<PeerKey>,
    subscribe: Option<PeerKey>,
    events: UnboundedSender<ParticipantEvent>,
    tracks_in: Vec<TrackIn>,
    /// When the participant (re)offered media; its peers' own
    /// `last_received` times count from here.
    last_activity: Instant,
}

/// A track the participant publishes.
struct TrackIn {
    mid: Mid,
    kind: TrackKind,
    keyframes: KeyframeThrottle,
}

struct Peer {
    rtc: Rtc,
    room: RoomId,
    participant: ParticipantId,
    side: Side,
    timeout: Instant,
    /// When a datagram last arrived for this peer (the silence check reads it).
    last_received: Instant,
    /// The remote DTLS fingerprint line, to tell a renegotiation from a new
    /// peer connection.
    fingerprint: Option<String>,
    /// Latest media stats, per mid, from str0m's stats events.
    stats: PeerMediaStats,
}

#[derive(Default)]
struct PeerMediaStats {
    ingress: HashMap<Mid, IngressSample>,
    egress: HashMap<Mid, EgressSample>,
    rtt: Option<Duration>,
}

#[derive(Clone, Copy)]
struct IngressSample {
    packets: u64,
    bytes: u64,
    loss: Option<f32>,
    jitter: u32,
    video: bool,
}

#[derive(Clone, Copy)]
struct EgressSample {
    packets: u64,
    bytes: u64,
    nacks: u64,
    keyframe_requests: u64,
    loss: Option<f32>,
    rtt: Option<Duration>,
}

enum Side {
    Publish,
    Subscribe(Subscription),
}

#[derive(Default)]
struct Subscription {
    tracks: Vec<TrackOut>,
    pending: Option<SdpPendingOffer>,
    restart_ice: bool,
    connected: bool,
}

/// A remote track in one subscriber's subscribe connection.
struct TrackOut {
    publisher: ParticipantId,
    source_mid: Mid,
    kind: TrackKind,
    track_id: String,
    state: OutState,
    seq: SeqRewriter,
    /// Publisher PT → our PT, cached after the first packet.
    pt_map: Option<(Pt, Pt)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Waiting for the next offer.
    ToOpen,
    /// Offered; waiting for the answer.
    Negotiating(Mid),
    /// Negotiated: packets flow.
    Open(Mid),
    /// To be stopped in the next offer.
    ToStop(Mid),
    /// Stopped in the pending offer; dropped when it is answered.
    Stopping(Mid),
}

/// Work that crosses peers, queued while a peer is drained.
enum Action {
    /// Boxed: a forwarded packet is much larger than the other actions.
    Forward(Box<Forward>),
    TrackPublished {
        room: RoomId,
        publisher: ParticipantId,
        mid: Mid,
        kind: TrackKind,
    },
    TrackUnpublished {
        room: RoomId,
        publisher: ParticipantId,
        mid: Mid,
    },
    KeyframeWanted {
        room: RoomId,
        subscriber: ParticipantId,
        sub_mid: Mid,
    },
    SubscriberConnected {
        room: RoomId,
        subscriber: ParticipantId,
    },
    Connected {
        room: RoomId,
        participant: ParticipantId,
        connection: Connection,
    },
    Negotiate {
        room: RoomId,
        participant: ParticipantId,
    },
    Remove {
        room: RoomId,
        participant: ParticipantId,
        reason: RemovedReason,
    },
}

struct Forward {
    room: RoomId,
    publisher: ParticipantId,
    mid: Mid,
    source_ssrc: u32,
    params: PayloadParams,
    in_pt: Pt,
    seq_no: SeqNo,
    timestamp: u32,
    marker: bool,
    ext: ExtensionValues,
    payload: Arc<[u8]>,
    wallclock: Instant,
    video: bool,
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
        MediaCore {
            config,
            rtc_config,
            rooms: HashMap::new(),
            peers: HashMap::new(),
            by_source: HashMap::new(),
            next_key: 1,
            actions: VecDeque::new(),
            outbox: Vec::new(),
            counters: WorkerStats::default(),
            next_wake: now,
            next_silence_check: now + SILENCE_CHECK,
            rng: seed | 1,
        }
    }

    /// When the core next needs `handle_timeout`.
    pub(crate) fn next_wake(&self) -> Instant {
        self.next_wake
    }

    // ----- commands -------------------------------------------------------

    pub(crate) fn create_room(&mut self, room: RoomId, max_participants: Option<usize>) {
        let max = max_participants.unwrap_or(self.config.max_participants);
        self.rooms.entry(room).or_insert_with(|| Room { max_participants: max, participants: BTreeMap::new() });
    }

    pub(crate) fn close_room(&mut self, now: Instant, room: &RoomId) -> Result<(), SfuError> {
        let Some(r) = self.rooms.get(room) else { return Err(SfuError::RoomNotFound) };
        let ids: Vec<ParticipantId> = r.participants.keys().cloned().collect();
        for id in ids {
            self.remove_participant(now, room, &id, Some(RemovedReason::RoomClosed));
        }
        self.rooms.remove(room);
        Ok(())
    }

    pub(crate) fn add_participant(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: ParticipantId,
        offer: &str,
        events: UnboundedSender<ParticipantEvent>,
    ) -> Result<String, SfuError> {
        let offer = self.checked_offer(offer)?;
        let room = self.rooms.get_mut(room_id).ok_or(SfuError::RoomNotFound)?;
        if room.participants.contains_key(&participant) {
            return Err(SfuError::ParticipantExists);
        }
        if room.participants.len() >= room.max_participants {
            return Err(SfuError::RoomFull);
        }
        room.participants.insert(
            participant.clone(),
            Participant { publish: None, subscribe: None, events, tracks_in: Vec::new(), last_activity: now },
        );
        let answer = self.new_publish_peer(now, room_id, &participant, offer);
        if answer.is_err() {
            if let Some(room) = self.rooms.get_mut(room_id) {
                room.participants.remove(&participant);
            }
        } else {
            // Everything already published in the room is offered to the newcomer.
            self.offer_existing_tracks(now, room_id, &participant);
            self.actions.push_back(Action::Negotiate { room: room_id.clone(), participant: participant.clone() });
            self.run_actions(now);
        }
        answer
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
        let p = self.participant_mut(room_id, participant)?;
        let existing = p.publish;
        p.last_activity = now;
        let fingerprint = fingerprint_of(offer);
        let parsed = self.checked_offer(offer)?;
        if let Some(key) = existing
            && let Some(peer) = self.peers.get_mut(&key)
            && peer.fingerprint == fingerprint
            && peer.rtc.is_alive()
        {
            let answer = peer.rtc.sdp_api().accept_offer(parsed).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
            self.drain(key);
            self.run_actions(now);
            return Ok(answer.to_sdp_string());
        }
        // A new connection: its tracks replace the old connection's.
        if let Some(key) = existing {
            self.drop_peer(key);
            let published: Vec<Mid> = self
                .participant_mut(room_id, participant)
                .map(|p| p.tracks_in.iter().map(|t| t.mid).collect())
                .unwrap_or_default();
            for mid in published {
                self.actions.push_back(Action::TrackUnpublished {
                    room: room_id.clone(),
                    publisher: participant.clone(),
                    mid,
                });
            }
            self.run_actions(now);
        }
        self.new_publish_peer(now, room_id, participant, parsed)
    }

    pub(crate) fn answer_subscribe(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: &ParticipantId,
        answer: &str,
    ) -> Result<(), SfuError> {
        let key = self.participant_mut(room_id, participant)?.subscribe.ok_or(SfuError::NoPendingOffer)?;
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let peer = self.peers.get_mut(&key).ok_or(SfuError::NoPendingOffer)?;
        let Side::Subscribe(sub) = &mut peer.side else { return Err(SfuError::NoPendingOffer) };
        let pending = sub.pending.take().ok_or(SfuError::NoPendingOffer)?;
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending, answer) {
            // The offer is rolled back: everything in flight goes back to be offered again.
            for t in &mut sub.tracks {
                match t.state {
                    OutState::Negotiating(_) => t.state = OutState::ToOpen,
                    OutState::Stopping(mid) => t.state = OutState::ToStop(mid),
                    _ => {}
                }
            }
            return Err(SfuError::InvalidSdp(e.to_string()));
        }
        let mut opened = Vec::new();
        sub.tracks.retain_mut(|t| match t.state {
            OutState::Negotiating(mid) => {
                t.state = OutState::Open(mid);
                opened.push((t.publisher.clone(), t.source_mid, t.kind));
                true
            }
            OutState::Stopping(_) => false,
            _ => true,
        });
        let connected = sub.connected;
        self.drain(key);
        if connected {
            self.request_keyframes_for(now, room_id, &opened);
        }
        // Changes that arrived while the offer was out go in the next one.
        self.actions.push_back(Action::Negotiate { room: room_id.clone(), participant: participant.clone() });
        self.run_actions(now);
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
        let key = self.participant_mut(room_id, participant)?.subscribe;
        if let Some(key) = key {
            if new_connection {
                self.drop_peer(key);
                self.participant_mut(room_id, participant)?.subscribe = None;
                self.offer_existing_tracks(now, room_id, participant);
            } else if let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get_mut(&key) {
                sub.restart_ice = true;
                // A lost offer must not block the restart.
                if sub.pending.take().is_some() {
                    for t in &mut sub.tracks {
                        match t.state {
                            OutState::Negotiating(_) => t.state = OutState::ToOpen,
                            OutState::Stopping(mid) => t.state = OutState::ToStop(mid),
                            _ => {}
                        }
                    }
                }
            }
        } else {
            self.offer_existing_tracks(now, room_id, participant);
        }
        self.actions.push_back(Action::Negotiate { room: room_id.clone(), participant: participant.clone() });
        self.run_actions(now);
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
        let p = self.participant_mut(room_id, participant)?;
        let key = match connection {
            Connection::Publish => p.publish,
            Connection::Subscribe => p.subscribe,
        };
        let text = candidate.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        if text.is_empty() {
            // End-of-candidates: nothing to do for an ICE-lite server.
            return Ok(());
        }
        let c = Candidate::from_sdp_string(text).map_err(|_| SfuError::InvalidCandidate)?;
        if let Some(key) = key
            && let Some(peer) = self.peers.get_mut(&key)
        {
            peer.rtc.add_remote_candidate(c);
            self.drain(key);
            self.run_actions(now);
        }
        Ok(())
    }

    /// Removes a participant. `reason` is `None` when the caller asked (the
    /// caller already knows); otherwise the participant is told why.
    pub(crate) fn remove_participant(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: &ParticipantId,
        reason: Option<RemovedReason>,
    ) -> bool {
        let Some(room) = self.rooms.get_mut(room_id) else { return false };
        let Some(p) = room.participants.remove(participant) else { return false };
        for key in [p.publish, p.subscribe].into_iter().flatten() {
            self.drop_peer(key);
        }
        if let Some(reason) = reason {
            let _ = p.events.send(ParticipantEvent::Removed(reason));
        }
        for t in &p.tracks_in {
            self.actions.push_back(Action::TrackUnpublished {
                room: room_id.clone(),
                publisher: participant.clone(),
                mid: t.mid,
            });
        }
        debug!(room = %room_id, participant = %participant, reason = ?reason, "participant removed");
        self.run_actions(now);
        // A room closes when it is empty.
        if self.rooms.get(room_id).is_some_and(|r| r.participants.is_empty()) {
            self.rooms.remove(room_id);
            info!(room = %room_id, "room empty, closed");
        }
        true
    }

    pub(crate) fn shutdown(&mut self, now: Instant) {
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let ids: Vec<ParticipantId> =
                self.rooms.get(&room).map(|r| r.participants.keys().cloned().collect()).unwrap_or_default();
            for id in ids {
                self.remove_participant(now, &room, &id, Some(RemovedReason::Shutdown));
            }
        }
    }

    pub(crate) fn participant_stats(&self) -> Vec<ParticipantStats> {
        let mut all = Vec::new();
        for (room_id, room) in &self.rooms {
            for (pid, p) in &room.participants {
                let mut s = ParticipantStats {
                    room: Some(room_id.clone()),
                    participant: Some(pid.clone()),
                    ..Default::default()
                };
                let max = |a: Option<f32>, b: Option<f32>| match (a, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
                if let Some(peer) = p.publish.and_then(|k| self.peers.get(&k)) {
                    for i in peer.stats.ingress.values() {
                        s.packets_in += i.packets;
                        s.bytes_in += i.bytes;
                        s.loss_in = max(s.loss_in, i.loss);
                        if i.video || s.jitter.is_none() {
                            s.jitter = Some(i.jitter);
                        }
                    }
                    s.rtt = peer.stats.rtt;
                }
                if let Some(peer) = p.subscribe.and_then(|k| self.peers.get(&k)) {
                    for e in peer.stats.egress.values() {
                        s.packets_out += e.packets;
                        s.bytes_out += e.bytes;
                        s.nacks_received += e.nacks;
                        s.keyframe_requests_received += e.keyframe_requests;
                        s.loss_out = max(s.loss_out, e.loss);
                        s.rtt = s.rtt.or(e.rtt).or(peer.stats.rtt);
                    }
                }
                all.push(s);
            }
        }
        all
    }

    pub(crate) fn refresh_counters(&mut self) {
        self.counters.rooms = self.rooms.len() as u64;
        self.counters.participants = self.rooms.values().map(|r| r.participants.len() as u64).sum();
    }

    // ----- input ----------------------------------------------------------

    /// One datagram arrived on the local address `destination`.
    pub(crate) fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, buf: &[u8]) {
        self.counters.datagrams_in += 1;
        let Ok(contents) = DatagramRecv::try_from(buf) else {
            self.counters.datagrams_dropped += 1;
            return;
        };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        let cached =
            self.by_source.get(&source).copied().filter(|k| self.peers.get(k).is_some_and(|p| p.rtc.accepts(&input)));
        let key = cached.or_else(|| {
            let found = self.peers.iter().find(|(_, p)| p.rtc.accepts(&input)).map(|(k, _)| *k);
            if let Some(k) = found {
                self.by_source.insert(source, k);
            }
            found
        });
        let Some(key) = key else {
            self.counters.datagrams_dropped += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else { return };
        // Hot path: no lookups or allocations beyond str0m's own work.
        peer.last_received = now;
        let ok = catch_unwind(AssertUnwindSafe(|| peer.rtc.handle_input(input))).map(|r| r.is_ok()).unwrap_or(false);
        if !ok {
            // A datagram str0m refuses is dropped; only a fault takes the peer down.
            debug!(room = %peer.room, participant = %peer.participant, "datagram rejected by peer");
        }
        self.drain(key);
        self.run_actions(now);
    }

    /// Drives timers: str0m's, keyframe deferrals, and the silence check.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerKey> = self.peers.iter().filter(|(_, p)| p.timeout <= now).map(|(k, _)| *k).collect();
        for key in due {
            if let Some(peer) = self.peers.get_mut(&key) {
                let _ = catch_unwind(AssertUnwindSafe(|| peer.rtc.handle_input(Input::Timeout(now))));
                self.drain(key);
            }
        }
        self.run_actions(now);

        // Deferred keyframe requests whose throttle window has passed.
        let mut due_keyframes = Vec::new();
        for (room_id, room) in &mut self.rooms {
            for (pid, p) in &mut room.participants {
                for t in &mut p.tracks_in {
                    if t.keyframes.poll_deferred(now) {
                        due_keyframes.push((room_id.clone(), pid.clone(), t.mid, p.publish));
                    }
                }
            }
        }
        for (_, _, mid, publish) in due_keyframes {
            if let Some(key) = publish {
                self.send_keyframe_request(key, mid);
            }
        }

        if now >= self.next_silence_check {
            self.next_silence_check = now + SILENCE_CHECK;
            let timeout = self.config.peer_timeout;
            let mut silent = Vec::new();
            for (room_id, room) in &self.rooms {
                for (pid, p) in &room.participants {
                    let last = [p.publish, p.subscribe]
                        .into_iter()
                        .flatten()
                        .filter_map(|k| self.peers.get(&k))
                        .map(|peer| peer.last_received)
                        .fold(p.last_activity, Instant::max);
                    if now.saturating_duration_since(last) > timeout {
                        silent.push((room_id.clone(), pid.clone()));
                    }
                }
            }
            for (room, pid) in silent {
                info!(room = %room, participant = %pid, "participant silent past the peer timeout, removed");
                self.remove_participant(now, &room, &pid, Some(RemovedReason::Timeout));
            }
        }
        self.recompute_wake();
    }

    fn recompute_wake(&mut self) {
        let mut wake = self.next_silence_check;
        for p in self.peers.values() {
            wake = wake.min(p.timeout);
        }
        for room in self.rooms.values() {
            for p in room.participants.values() {
                for t in &p.tracks_in {
                    if let Some(at) = t.keyframes.deferred_until() {
                        wake = wake.min(at);
                    }
                }
            }
        }
        self.next_wake = wake;
    }

    // ----- peers ----------------------------------------------------------

    fn new_peer(&mut self, now: Instant, room: &RoomId, participant: &ParticipantId, side: Side) -> PeerKey {
        let mut rtc = self.rtc_config.clone().build(now);
        for addr in &self.config.local_addrs {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        self.peers.insert(
            key,
            Peer {
                rtc,
                room: room.clone(),
                participant: participant.clone(),
                side,
                timeout: now,
                last_received: now,
                fingerprint: None,
                stats: PeerMediaStats::default(),
            },
        );
        key
    }

    fn new_publish_peer(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
        offer: SdpOffer,
    ) -> Result<String, SfuError> {
        let fingerprint = fingerprint_of(&offer.to_sdp_string());
        let key = self.new_peer(now, room, participant, Side::Publish);
        let peer = self.peers.get_mut(&key).ok_or(SfuError::WorkerGone)?;
        peer.fingerprint = fingerprint;
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                self.peers.remove(&key);
                return Err(SfuError::InvalidSdp(e.to_string()));
            }
        };
        if let Ok(p) = self.participant_mut(room, participant) {
            p.publish = Some(key);
        }
        self.drain(key);
        self.run_actions(now);
        Ok(answer.to_sdp_string())
    }

    fn drop_peer(&mut self, key: PeerKey) {
        if let Some(mut peer) = self.peers.remove(&key) {
            peer.rtc.disconnect();
        }
        self.by_source.retain(|_, k| *k != key);
    }

    /// Polls one peer until it has nothing more to say, queuing transmits
    /// and cross-peer actions.
    fn drain(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let mut faulted = false;
        loop {
            let out = match catch_unwind(AssertUnwindSafe(|| peer.rtc.poll_output())) {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    debug!(room = %peer.room, participant = %peer.participant, error = %e, "peer error");
                    faulted = true;
                    break;
                }
                Err(_) => {
                    warn!(room = %peer.room, participant = %peer.participant, "peer faulted; dropping it");
                    self.counters.peer_faults += 1;
                    faulted = true;
                    break;
                }
            };
            match out {
                Output::Timeout(t) => {
                    peer.timeout = t;
                    if t < self.next_wake {
                        self.next_wake = t;
                    }
                    break;
                }
                Output::Transmit(t) => self.outbox.push(Outgoing {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Output::Event(e) => handle_event(peer, e, &mut self.actions, &mut self.counters),
            }
        }
        if faulted || !peer.rtc.is_alive() {
            let (room, participant) = (peer.room.clone(), peer.participant.clone());
            self.actions.push_back(Action::Remove { room, participant, reason: RemovedReason::ConnectionFailed });
        }
    }

    fn run_actions(&mut self, now: Instant) {
        while let Some(action) = self.actions.pop_front() {
            match action {
                Action::Forward(f) => self.forward(*f),
                Action::TrackPublished { room, publisher, mid, kind } => {
                    self.track_published(now, &room, &publisher, mid, kind)
                }
                Action::TrackUnpublished { room, publisher, mid } => self.track_unpublished(&room, &publisher, mid),
                Action::KeyframeWanted { room, subscriber, sub_mid } => {
                    self.keyframe_wanted(now, &room, &subscriber, sub_mid)
                }
                Action::SubscriberConnected { room, subscriber } => {
                    let open = self.open_tracks_of(&room, &subscriber);
                    self.request_keyframes_for(now, &room, &open);
                }
                Action::Negotiate { room, participant } => self.negotiate(&room, &participant),
                Action::Connected { room, participant, connection } => {
                    if let Some(p) = self.rooms.get(&room).and_then(|r| r.participants.get(&participant)) {
                        let _ = p.events.send(ParticipantEvent::Connected(connection));
                    }
                }
                Action::Remove { room, participant, reason } => {
                    self.remove_participant(now, &room, &participant, Some(reason));
                }
            }
        }
    }

    // ----- tracks and negotiation ----------------------------------------

    fn track_published(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        publisher: &ParticipantId,
        mid: Mid,
        kind: TrackKind,
    ) {
        let keyframe_interval = self.config.keyframe_interval;
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        let Some(p) = room.participants.get_mut(publisher) else { return };
        if p.tracks_in.iter().any(|t| t.mid == mid) {
            return;
        }
        p.tracks_in.push(TrackIn { mid, kind, keyframes: KeyframeThrottle::new(keyframe_interval) });
        let others: Vec<ParticipantId> = room.participants.keys().filter(|id| *id != publisher).cloned().collect();
        for other in others {
            self.add_track_out(now, room_id, &other, publisher, mid, kind);
            self.actions.push_back(Action::Negotiate { room: room_id.clone(), participant: other });
        }
    }

    fn track_unpublished(&mut self, room_id: &RoomId, publisher: &ParticipantId, mid: Mid) {
        if let Some(p) = self.rooms.get_mut(room_id).and_then(|r| r.participants.get_mut(publisher)) {
            p.tracks_in.retain(|t| t.mid != mid);
        }
        let Some(room) = self.rooms.get(room_id) else { return };
        let others: Vec<(ParticipantId, Option<PeerKey>)> = room
            .participants
            .iter()
            .filter(|(id, _)| *id != publisher)
            .map(|(id, p)| (id.clone(), p.subscribe))
            .collect();
        for (other, key) in others {
            let Some(Peer { side: Side::Subscribe(sub), .. }) = key.and_then(|k| self.peers.get_mut(&k)) else {
                continue;
            };
            let mut removed = Vec::new();
            sub.tracks.retain_mut(|t| {
                if &t.publisher != publisher || t.source_mid != mid {
                    return true;
                }
                match t.state {
                    OutState::ToOpen => false,
                    OutState::Negotiating(m) | OutState::Open(m) => {
                        t.state = OutState::ToStop(m);
                        removed.push(SubscribedTrack {
                            publisher: t.publisher.clone(),
                            kind: t.kind,
                            mid: m.to_string(),
                            track_id: t.track_id.clone(),
                        });
                        true
                    }
                    OutState::ToStop(_) | OutState::Stopping(_) => true,
                }
            });
            if let Some(p) = self.rooms.get(room_id).and_then(|r| r.participants.get(&other)) {
                for t in removed {
                    let _ = p.events.send(ParticipantEvent::TrackRemoved(t));
                }
            }
            self.actions.push_back(Action::Negotiate { room: room_id.clone(), participant: other });
        }
    }

    /// Queues every track already published in the room for a subscriber.
    fn offer_existing_tracks(&mut self, now: Instant, room_id: &RoomId, subscriber: &ParticipantId) {
        let Some(room) = self.rooms.get(room_id) else { return };
        let published: Vec<(ParticipantId, Mid, TrackKind)> = room
            .participants
            .iter()
            .filter(|(id, _)| *id != subscriber)
            .flat_map(|(id, p)| p.tracks_in.iter().map(move |t| (id.clone(), t.mid, t.kind)))
            .collect();
        for (publisher, mid, kind) in published {
            self.add_track_out(now, room_id, subscriber, &publisher, mid, kind);
        }
    }

    fn add_track_out(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        subscriber: &ParticipantId,
        publisher: &ParticipantId,
        mid: Mid,
        kind: TrackKind,
    ) {
        let initial_seq = (self.next_random() % 30_000) as u16 + 1;
        let Some(p) = self.rooms.get(room_id).and_then(|r| r.participants.get(subscriber)) else { return };
        let key = match p.subscribe {
            Some(k) => k,
            None => {
                let k = self.new_peer(now, room_id, subscriber, Side::Subscribe(Subscription::default()));
                if let Some(p) = self.rooms.get_mut(room_id).and_then(|r| r.participants.get_mut(subscriber)) {
                    p.subscribe = Some(k);
                }
                k
            }
        };
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get_mut(&key) else { return };
        if sub.tracks.iter().any(|t| {
            &t.publisher == publisher
                && t.source_mid == mid
                && !matches!(t.state, OutState::ToStop(_) | OutState::Stopping(_))
        }) {
            return;
        }
        sub.tracks.push(TrackOut {
            publisher: publisher.clone(),
            source_mid: mid,
            kind,
            track_id: format!("{publisher}-{mid}"),
            state: OutState::ToOpen,
            seq: SeqRewriter::new(initial_seq),
            pt_map: None,
        });
    }

    /// Sends a subscribe offer if something changed and none is pending.
    fn negotiate(&mut self, room_id: &RoomId, participant: &ParticipantId) {
        let Some(p) = self.rooms.get(room_id).and_then(|r| r.participants.get(participant)) else { return };
        let events = p.events.clone();
        let Some(key) = p.subscribe else { return };
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let Side::Subscribe(sub) = &mut peer.side else { return };
        if sub.pending.is_some() {
            return;
        }
        let wants =
            sub.restart_ice || sub.tracks.iter().any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)));
        if !wants {
            return;
        }
        let mut api = peer.rtc.sdp_api();
        let mut added = Vec::new();
        for t in &mut sub.tracks {
            match t.state {
                OutState::ToOpen => {
                    let kind = match t.kind {
                        TrackKind::Audio => MediaKind::Audio,
                        TrackKind::Video => MediaKind::Video,
                    };
                    let mid = api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(t.publisher.0.clone()),
                        Some(t.track_id.clone()),
                        None,
                    );
                    t.state = OutState::Negotiating(mid);
                    added.push(SubscribedTrack {
                        publisher: t.publisher.clone(),
                        kind: t.kind,
                        mid: mid.to_string(),
                        track_id: t.track_id.clone(),
                    });
                }
                OutState::ToStop(mid) => {
                    // Inactive, not stopped: a browser answering an offer whose
                    // every section is stopped (port 0) leaves out its DTLS
                    // fingerprint, which ends the whole session. An inactive
                    // section keeps the session up for the tracks to come.
                    api.set_direction(mid, Direction::Inactive);
                    t.state = OutState::Stopping(mid);
                }
                _ => {}
            }
        }
        if sub.restart_ice {
            api.ice_restart(true);
            sub.restart_ice = false;
        }
        match api.apply() {
            Some((offer, pending)) => {
                sub.pending = Some(pending);
                for t in added {
                    let _ = events.send(ParticipantEvent::TrackAdded(t));
                }
                let _ = events.send(ParticipantEvent::SubscribeOffer { sdp: offer.to_sdp_string() });
            }
            None => {
                // Nothing to negotiate after all (e.g. only stops of never-negotiated lines).
                sub.tracks.retain(|t| !matches!(t.state, OutState::Stopping(_)));
            }
        }
        self.drain(key);
    }

    fn open_tracks_of(&self, room_id: &RoomId, subscriber: &ParticipantId) -> Vec<(ParticipantId, Mid, TrackKind)> {
        let Some(key) = self.rooms.get(room_id).and_then(|r| r.participants.get(subscriber)).and_then(|p| p.subscribe)
        else {
            return Vec::new();
        };
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get(&key) else { return Vec::new() };
        sub.tracks
            .iter()
            .filter(|t| matches!(t.state, OutState::Open(_)))
            .map(|t| (t.publisher.clone(), t.source_mid, t.kind))
            .collect()
    }

    // ----- keyframes ------------------------------------------------------

    fn request_keyframes_for(&mut self, now: Instant, room_id: &RoomId, tracks: &[(ParticipantId, Mid, TrackKind)]) {
        for (publisher, mid, kind) in tracks {
            if *kind == TrackKind::Video {
                self.keyframe_from(now, room_id, publisher, *mid);
            }
        }
    }

    /// A subscriber asked for a keyframe on one of its tracks.
    fn keyframe_wanted(&mut self, now: Instant, room_id: &RoomId, subscriber: &ParticipantId, sub_mid: Mid) {
        let Some(key) = self.rooms.get(room_id).and_then(|r| r.participants.get(subscriber)).and_then(|p| p.subscribe)
        else {
            return;
        };
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get(&key) else { return };
        let Some(t) = sub.tracks.iter().find(|t| t.state == OutState::Open(sub_mid)) else { return };
        let (publisher, mid) = (t.publisher.clone(), t.source_mid);
        self.keyframe_from(now, room_id, &publisher, mid);
    }

    /// Throttled keyframe request to one publisher track.
    fn keyframe_from(&mut self, now: Instant, room_id: &RoomId, publisher: &ParticipantId, mid: Mid) {
        let Some(p) = self.rooms.get_mut(room_id).and_then(|r| r.participants.get_mut(publisher)) else { return };
        let Some(t) = p.tracks_in.iter_mut().find(|t| t.mid == mid) else { return };
        let send_now = t.keyframes.request(now);
        let publish = p.publish;
        if send_now && let Some(key) = publish {
            self.send_keyframe_request(key, mid);
        } else if let Some(at) = t.keyframes.deferred_until() {
            self.next_wake = self.next_wake.min(at);
        }
    }

    fn send_keyframe_request(&mut self, key: PeerKey, mid: Mid) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.counters.keyframe_requests += 1;
        }
        self.drain(key);
    }

    // ----- forwarding -----------------------------------------------------

    fn forward(&mut self, f: Forward) {
        let Some(room) = self.rooms.get(&f.room) else { return };
        let subscribers: Vec<PeerKey> =
            room.participants.iter().filter(|(id, _)| **id != f.publisher).filter_map(|(_, p)| p.subscribe).collect();
        for key in subscribers {
            let Some(peer) = self.peers.get_mut(&key) else { continue };
            let Side::Subscribe(sub) = &mut peer.side else { continue };
            let Some(t) = sub.tracks.iter_mut().find(|t| t.publisher == f.publisher && t.source_mid == f.mid) else {
                continue;
            };
            let OutState::Open(out_mid) = t.state else { continue };
            let out_pt = match t.pt_map {
                Some((in_pt, out_pt)) if in_pt == f.in_pt => out_pt,
                _ => {
                    let Some(local) = peer.rtc.codec_config().match_params(f.params) else { continue };
                    let out_pt = if f.in_pt == f.params.pt() { local.pt() } else { local.red().unwrap_or(local.pt()) };
                    t.pt_map = Some((f.in_pt, out_pt));
                    out_pt
                }
            };
            let Some(rw) = t.seq.rewrite(f.source_ssrc, *f.seq_no, f.timestamp) else { continue };
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else { continue };
            tx.write_rtp(
                RtpWrite::new(out_pt, rw.seq.into(), rw.timestamp, f.wallclock, f.payload.clone())
                    .marker(f.marker)
                    .ext_vals(f.ext.clone())
                    .nackable(f.video),
            );
            self.counters.packets_forwarded += 1;
            self.counters.bytes_forwarded += f.payload.len() as u64;
            self.drain(key);
        }
    }

    // ----- helpers --------------------------------------------------------

    /// Parses a client's offer within the limits: its size, and how many
    /// media sections it carries (a peer offering 165 audio sections gets
    /// an error, not 165 tracks).
    fn checked_offer(&self, sdp: &str) -> Result<SdpOffer, SfuError> {
        if sdp.len() > self.config.max_sdp_bytes {
            return Err(SfuError::InvalidSdp(format!("larger than {} bytes", self.config.max_sdp_bytes)));
        }
        let sections = sdp.lines().filter(|l| l.starts_with("m=")).count();
        if sections > self.config.max_tracks {
            return Err(SfuError::TooManyTracks { max: self.config.max_tracks });
        }
        parse_offer(sdp)
    }

    /// The tracks offered or open in a subscriber's subscribe connection.
    pub(crate) fn subscribed_tracks(
        &self,
        room_id: &RoomId,
        participant: &ParticipantId,
    ) -> Result<Vec<SubscribedTrack>, SfuError> {
        let room = self.rooms.get(room_id).ok_or(SfuError::RoomNotFound)?;
        let p = room.participants.get(participant).ok_or(SfuError::ParticipantNotFound)?;
        let Some(Peer { side: Side::Subscribe(sub), .. }) = p.subscribe.and_then(|k| self.peers.get(&k)) else {
            return Ok(Vec::new());
        };
        Ok(sub
            .tracks
            .iter()
            .filter_map(|t| match t.state {
                OutState::Negotiating(mid) | OutState::Open(mid) => Some(SubscribedTrack {
                    publisher: t.publisher.clone(),
                    kind: t.kind,
                    mid: mid.to_string(),
                    track_id: t.track_id.clone(),
                }),
                _ => None,
            })
            .collect())
    }

    fn participant_mut(&mut self, room: &RoomId, participant: &ParticipantId) -> Result<&mut Participant, SfuError> {
        self.rooms
            .get_mut(room)
            .ok_or(SfuError::RoomNotFound)?
            .participants
            .get_mut(participant)
            .ok_or(SfuError::ParticipantNotFound)
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
}

/// Turns one str0m event of a peer into state changes and queued actions.
fn handle_event(peer: &mut Peer, event: Event, actions: &mut VecDeque<Action>, counters: &mut WorkerStats) {
    match event {
        Event::Connected => {
            let connection = match &mut peer.side {
                Side::Publish => Connection::Publish,
                Side::Subscribe(sub) => {
                    sub.connected = true;
                    actions.push_back(Action::SubscriberConnected {
                        room: peer.room.clone(),
                        subscriber: peer.participant.clone(),
                    });
                    Connection::Subscribe
                }
            };
            debug!(room = %peer.room, participant = %peer.participant, ?connection, "connected");
            actions.push_back(Action::Connected {
                room: peer.room.clone(),
                participant: peer.participant.clone(),
                connection,
            });
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            // Not fatal: the client may restart ICE. The silence timeout decides.
            debug!(room = %peer.room, participant = %peer.participant, "ICE disconnected");
        }
        Event::MediaAdded(m) if matches!(peer.side, Side::Publish) => {
            if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                let kind = match m.kind {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                actions.push_back(Action::TrackPublished {
                    room: peer.room.clone(),
                    publisher: peer.participant.clone(),
                    mid: m.mid,
                    kind,
                });
            }
        }
        Event::MediaChanged(m)
            if matches!(peer.side, Side::Publish)
                && !matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) =>
        {
            actions.push_back(Action::TrackUnpublished {
                room: peer.room.clone(),
                publisher: peer.participant.clone(),
                mid: m.mid,
            });
        }
        Event::RtpPacket(pkt) if matches!(peer.side, Side::Publish) => {
            let ssrc = pkt.header.ssrc;
            let Some(mid) = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else { return };
            let in_pt = pkt.header.payload_type;
            let Some(params) = peer.rtc.codec_config().find(|p| p.pt() == in_pt || p.red() == Some(in_pt)).copied()
            else {
                return;
            };
            // Forward only what the subscriber's side can use: never the
            // publisher's mid/rid/twcc, which belong to its own session.
            let ext = ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                video_orientation: pkt.header.ext_vals.video_orientation,
                ..Default::default()
            };
            actions.push_back(Action::Forward(Box::new(Forward {
                room: peer.room.clone(),
                publisher: peer.participant.clone(),
                mid,
                source_ssrc: *ssrc,
                params,
                in_pt,
                seq_no: pkt.seq_no,
                timestamp: pkt.header.timestamp,
                marker: pkt.header.marker,
                ext,
                payload: pkt.payload,
                wallclock: pkt.timestamp,
                video: params.spec().codec.is_video(),
            })));
        }
        Event::KeyframeRequest(req) if matches!(peer.side, Side::Subscribe(_)) => {
            actions.push_back(Action::KeyframeWanted {
                room: peer.room.clone(),
                subscriber: peer.participant.clone(),
                sub_mid: req.mid,
            });
        }
        Event::PeerStats(s) => {
            if let Some(rtt) = s.rtt {
                peer.stats.rtt = Some(rtt);
                counters.rtt.observe(&RTT_BUCKETS_SECS, rtt.as_secs_f64());
            }
        }
        Event::MediaIngressStats(s) => {
            if let Some(loss) = s.loss {
                counters.loss.observe(&LOSS_BUCKETS, f64::from(loss));
            }
            let video = peer.rtc.media(s.mid).is_some_and(|m| m.kind() == MediaKind::Video);
            peer.stats.ingress.insert(
                s.mid,
                IngressSample { packets: s.packets, bytes: s.bytes, loss: s.loss, jitter: s.jitter, video },
            );
        }
        Event::MediaEgressStats(s) => {
            // str0m's counts are per mid since the start; the worker's are totals.
            let (nacks_before, kf_before) =
                peer.stats.egress.get(&s.mid).map(|e| (e.nacks, e.keyframe_requests)).unwrap_or((0, 0));
            counters.nacks_received += s.nacks.saturating_sub(nacks_before);
            counters.keyframe_requests_received += (s.plis + s.firs).saturating_sub(kf_before);
            if let Some(loss) = s.loss {
                counters.loss.observe(&LOSS_BUCKETS, f64::from(loss));
            }
            peer.stats.egress.insert(
                s.mid,
                EgressSample {
                    packets: s.packets,
                    bytes: s.bytes,
                    nacks: s.nacks,
                    keyframe_requests: s.plis + s.firs,
                    loss: s.loss,
                    rtt: s.rtt,
                },
            );
        }
        Event::Closed => {
            actions.push_back(Action::Remove {
                room: peer.room.clone(),
                participant: peer.participant.clone(),
                reason: RemovedReason::ConnectionFailed,
            });
        }
        _ => {}
    }
}

fn parse_offer(sdp: &str) -> Result<SdpOffer, SfuError> {
    SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))
}

/// The first `a=fingerprint:` line of an SDP, to recognise its DTLS identity.
fn fingerprint_of(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=fingerprint:").map(|f| f.trim().to_ascii_lowercase()))
}

#[cfg(test)]
mod sim_tests;
