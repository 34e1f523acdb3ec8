//! A synthetic participant: joins over the real WebSocket protocol, publishes
//! synthetic Opus-shaped audio and VP8-shaped video over a webrtc-rs publish
//! connection, and answers the server's subscribe offers, counting every
//! packet it receives.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use teleconsult_protocol::{ClientMessage, Role, ServerMessage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::signaling_client::{SignalingClient, SignalingError};
use crate::str0m_peer::{PublishOffer, SubscribeConnection};
use crate::synthetic_media::{
    Reception, TrackReception, VP8_KEYFRAME_PREFIX_LEN, build_payload, now_micros, parse_payload, vp8_keyframe_prefix,
};
use crate::webrtc_peer::{
    IceSettings, SIMULCAST_RIDS, build_peer, is_keyframe_request, local_simulcast_video, local_track,
    video_mid_and_extension_ids,
};

/// Codec prefix of synthetic video: a VP8 payload descriptor (start of
/// partition) and a byte whose low bit is VP8's inverse keyframe flag.
const VIDEO_PREFIX_LEN: usize = 2;
/// Largest RTP payload we write.
const MAX_PAYLOAD: usize = 1100;

/// How a synthetic participant behaves.
#[derive(Debug, Clone)]
pub struct ParticipantOptions {
    /// e.g. `ws://127.0.0.1:8080/ws`.
    pub ws_url: String,
    /// A join token.
    pub token: String,
    /// Publish audio (Opus-shaped, 50 packets/s).
    pub audio: bool,
    /// Video bitrate in bits/s; 0 publishes no video.
    pub video_bitrate_bps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// A keyframe at least this often.
    pub keyframe_interval: Duration,
    /// Negotiate the tracks but send no packets (a pure viewer, for benchmarks).
    pub send_nothing: bool,
    /// Reach the server's subscribe connection through a relay: (server media
    /// address, relay address). The server's candidates are rewritten.
    pub subscribe_via: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// Send media only through the TURN servers the server hands out
    /// (`iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// Publish video in three simulcast layers (rids `q`, `h`, `f`, marked
    /// by RTP header extensions as browsers do): `f` at
    /// `video_bitrate_bps`, `h` at a third of it, `q` at an eighth.
    pub simulcast: bool,
    /// Which WebRTC stack carries the media.
    pub stack: MediaStack,
}

/// The WebRTC stack a synthetic participant's media runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaStack {
    /// webrtc-rs: a WebRTC implementation independent of the SFU's, for
    /// interop; costs several times the server's CPU per packet.
    #[default]
    Webrtc,
    /// str0m, sans-IO, one task per connection: light enough that a
    /// capacity search measures the server (see [`crate::str0m_peer`]).
    Str0m,
}

impl ParticipantOptions {
    /// Audio and 500 kbit/s video at 30 fps, a keyframe every 3 s.
    pub fn new(ws_url: impl Into<String>, token: impl Into<String>) -> Self {
        ParticipantOptions {
            ws_url: ws_url.into(),
            token: token.into(),
            audio: true,
            video_bitrate_bps: 500_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(3),
            send_nothing: false,
            subscribe_via: None,
            relay_only: false,
            simulcast: false,
            stack: MediaStack::Webrtc,
        }
    }
}

/// Why a participant could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantError {
    /// Signaling failed.
    #[error("signaling: {0}")]
    Signaling(#[from] SignalingError),
    /// WebRTC failed.
    #[error("webrtc: {0}")]
    WebRtc(String),
}

impl From<webrtc::error::Error> for ParticipantError {
    fn from(e: webrtc::error::Error) -> Self {
        ParticipantError::WebRtc(e.to_string())
    }
}

/// State shared between the participant and its tasks.
#[derive(Default)]
pub(crate) struct Shared {
    reception: Mutex<Reception>,
    keyframe_requests: AtomicU64,
    /// A keyframe request came: one flag per simulcast layer (the first
    /// alone without simulcast), each cleared by its layer's sender.
    force_keyframe: [AtomicBool; 3],
    audio_sent: AtomicU32,
    video_sent: AtomicU32,
    events: Mutex<Vec<ServerMessage>>,
    last_subscribe_offer: Mutex<Option<String>>,
    subscribe_errors: AtomicU64,
    first_remote_packet_us: Mutex<Option<u64>>,
}

/// One synthetic participant.
pub struct Participant {
    /// Server-assigned id.
    pub participant_id: String,
    /// Room id.
    pub room_id: String,
    /// The role the token granted.
    pub role: Role,
    /// The signaling connection.
    pub signaling: Arc<SignalingClient>,
    /// The resume token from `joined`.
    pub resume_token: String,
    /// When `join` was sent (microseconds since the epoch).
    pub join_started_us: u64,
    /// TURN servers from `joined` (replace them with `admitted`'s, which
    /// are fresher, before `start_media`).
    pub ice_servers: Vec<teleconsult_protocol::IceServer>,
    shared: Arc<Shared>,
    publish_pc: Option<Arc<dyn PeerConnection>>,
    subscribe_pc: Arc<tokio::sync::Mutex<Option<Arc<dyn PeerConnection>>>>,
    /// The str0m subscribe connection, with [`MediaStack::Str0m`].
    str0m_subscribe: Arc<tokio::sync::Mutex<Option<SubscribeConnection>>>,
    publish_state: watch::Receiver<RTCPeerConnectionState>,
    tasks: Vec<JoinHandle<()>>,
}

struct PublishHandler {
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PublishHandler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
}

pub(crate) struct SubscribeHandler {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for SubscribeHandler {
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let publisher = track.stream_id().await.to_string();
        let video = track.kind().await == RtpCodecKind::Video;
        let shared = self.shared.clone();
        // Callbacks run on the connection's driver: read in a task of our own.
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        shared.record_rtp(&publisher, video, packet.header.sequence_number, &packet.payload);
                    }
                    TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
                    _ => {}
                }
            }
        });
    }
}

impl Shared {
    pub(crate) fn reception(&self) -> Reception {
        self.reception.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Records one RTP packet received from `publisher`'s audio or video,
    /// whichever stack received it: its synthetic sequence number and send
    /// time, and its RTP sequence number.
    pub(crate) fn record_rtp(&self, publisher: &str, video: bool, rtp_seq: u16, payload: &[u8]) {
        let now = now_micros();
        let keyframe_start = payload.len() > 1 && payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0;
        let prefix = match (video, keyframe_start) {
            (false, _) => 0,
            (true, true) => VP8_KEYFRAME_PREFIX_LEN,
            (true, false) => VIDEO_PREFIX_LEN,
        };
        let Some((seq, sent)) = parse_payload(payload, prefix) else { return };
        let keyframe = video && payload.get(1).is_some_and(|b| b & 1 == 0);
        if let Ok(mut first) = self.first_remote_packet_us.lock() {
            first.get_or_insert(now);
        }
        if let Ok(mut r) = self.reception.lock() {
            let key = (publisher.to_string(), if video { "video" } else { "audio" });
            let t = r.tracks.entry(key).or_default();
            t.record(seq, sent, now, keyframe);
            t.rtp.record(rtp_seq, payload.len());
        }
    }

    /// A keyframe request arrived: every layer sends one next.
    pub(crate) fn keyframe_requested(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::SeqCst);
        for layer in &self.force_keyframe {
            layer.store(true, Ordering::SeqCst);
        }
    }

    /// The next synthetic audio payload (~32 kbit/s Opus: 80 bytes every 20 ms).
    pub(crate) fn next_audio_payload(&self) -> (Vec<u8>, bool) {
        let n = self.audio_sent.fetch_add(1, Ordering::SeqCst);
        (build_payload(&[], n, now_micros(), 80), n == 0)
    }
}

/// The payloads of one synthetic video frame of `layer` and whether each
/// ends the frame. A keyframe starts with a VP8 keyframe header (size
/// included) and is about three times a delta frame's size; otherwise the
/// first packet has the S bit, and every packet the inverse keyframe bit.
pub(crate) fn video_frame(shared: &Shared, layer: &VideoLayer, fps: u32, keyframe: bool) -> Vec<(Vec<u8>, bool)> {
    let frame_bytes = (layer.bitrate_bps / 8 / fps.max(1)) as usize;
    let bytes = if keyframe { frame_bytes * 3 } else { frame_bytes }.max(60);
    let packets = bytes.div_ceil(MAX_PAYLOAD);
    let keyframe_prefix = vp8_keyframe_prefix(layer.size.0, layer.size.1);
    (0..packets)
        .map(|i| {
            let n = shared.video_sent.fetch_add(1, Ordering::SeqCst);
            let len = if i + 1 == packets { bytes - MAX_PAYLOAD * (packets - 1) } else { MAX_PAYLOAD };
            let delta_prefix = [if i == 0 { 0x10 } else { 0x00 }, if keyframe { 0x00 } else { 0x01 }];
            let prefix: &[u8] = if keyframe && i == 0 { &keyframe_prefix } else { &delta_prefix };
            (build_payload(prefix, n, now_micros(), len.max(prefix.len() + 16)), i + 1 == packets)
        })
        .collect()
}

/// When a layer sends keyframes: at the interval, and when asked.
#[derive(Debug, Default)]
pub(crate) struct KeyframeClock {
    last: Option<Instant>,
}

impl KeyframeClock {
    /// Whether the next frame of layer `index` is a keyframe.
    pub(crate) fn next_is_keyframe(&mut self, shared: &Shared, index: usize, interval: Duration) -> bool {
        let forced = shared.force_keyframe[index].swap(false, Ordering::SeqCst);
        let keyframe = forced || self.last.is_none_or(|t| t.elapsed() >= interval);
        if keyframe {
            self.last = Some(Instant::now());
        }
        keyframe
    }
}

impl Participant {
    /// Connects, says hello and joins with the token. Publishes nothing yet.
    pub async fn join(
        options: &ParticipantOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ServerMessage>), ParticipantError> {
        let (client, events) = SignalingClient::connect(&options.ws_url).await?;
        client.hello().await?;
        let join_started_us = now_micros();
        let reply = client.request(ClientMessage::Join { id: None, token: options.token.clone() }).await?;
        let ServerMessage::Joined { room_id, participant_id, role, resume_token, ice_servers, .. } = reply else {
            return Err(SignalingError::Unexpected(format!("{reply:?}")).into());
        };
        let (_, publish_state) = watch::channel(RTCPeerConnectionState::New);
        Ok((
            Participant {
                participant_id,
                room_id,
                role,
                signaling: Arc::new(client),
                resume_token,
                join_started_us,
                ice_servers,
                shared: Arc::new(Shared::default()),
                publish_pc: None,
                subscribe_pc: Arc::new(tokio::sync::Mutex::new(None)),
                str0m_subscribe: Arc::new(tokio::sync::Mutex::new(None)),
                publish_state,
                tasks: Vec::new(),
            },
            events,
        ))
    }

    /// Joins and starts media: publishes as `options` say and answers
    /// subscribe offers. Returns once the publish connection is up.
    pub async fn connect(options: &ParticipantOptions) -> Result<Self, ParticipantError> {
        let (mut p, events) = Self::join(options).await?;
        p.start_media(options, events).await?;
        Ok(p)
    }

    /// Starts the event loop (subscribe offers) and the publish connection.
    pub async fn start_media(
        &mut self,
        options: &ParticipantOptions,
        events: mpsc::UnboundedReceiver<ServerMessage>,
    ) -> Result<(), ParticipantError> {
        let subscriber = match options.stack {
            MediaStack::Webrtc => Subscriber::Webrtc {
                slot: self.subscribe_pc.clone(),
                via: options.subscribe_via,
                ice: self.ice(options),
            },
            MediaStack::Str0m => {
                if options.subscribe_via.is_some() || options.relay_only {
                    return Err(ParticipantError::WebRtc("relays and TURN need the webrtc-rs stack".into()));
                }
                Subscriber::Str0m { slot: self.str0m_subscribe.clone(), ws_url: options.ws_url.clone() }
            }
        };
        self.tasks.push(tokio::spawn(event_loop(events, self.signaling.clone(), self.shared.clone(), subscriber)));
        match options.stack {
            MediaStack::Webrtc => self.publish(options).await,
            MediaStack::Str0m => self.publish_on_str0m(options).await,
        }
    }

    async fn publish_on_str0m(&mut self, options: &ParticipantOptions) -> Result<(), ParticipantError> {
        let offer = PublishOffer::new(options, &self.participant_id).await?;
        let reply = self.signaling.request(ClientMessage::PublishOffer { id: None, sdp: offer.sdp.clone() }).await?;
        let ServerMessage::PublishAnswer { sdp, .. } = reply else {
            return Err(SignalingError::Unexpected(format!("{reply:?}")).into());
        };
        self.tasks.push(offer.start(&sdp, options, self.shared.clone()).await?);
        Ok(())
    }

    fn ice(&self, options: &ParticipantOptions) -> IceSettings {
        IceSettings { servers: self.ice_servers.clone(), relay_only: options.relay_only }
    }

    async fn publish(&mut self, options: &ParticipantOptions) -> Result<(), ParticipantError> {
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let pc = build_peer(Arc::new(PublishHandler { state: state_tx }), true, &self.ice(options)).await?;
        self.publish_state = state_rx;
        let audio_ssrc: u32 = rand::random();
        let video_ssrcs: [u32; 3] = rand::random();
        let send_only =
            || Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() });
        let stream_id = format!("synthetic-{}", self.participant_id);
        let mut audio_track = None;
        if options.audio {
            let track = local_track(RtpCodecKind::Audio, audio_ssrc, &stream_id);
            pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, send_only()).await?;
            audio_track = Some(track);
        }
        let mut video_track = None;
        if options.video_bitrate_bps > 0 {
            let track = if options.simulcast {
                local_simulcast_video(video_ssrcs, &stream_id)
            } else {
                local_track(RtpCodecKind::Video, video_ssrcs[0], &stream_id)
            };
            pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, send_only()).await?;
            video_track = Some(track);
        }
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        let layers = video_layers(options, video_ssrcs, &sdp)?;
        let reply = self.signaling.request(ClientMessage::PublishOffer { id: None, sdp }).await?;
        let ServerMessage::PublishAnswer { sdp, .. } = reply else {
            return Err(SignalingError::Unexpected(format!("{reply:?}")).into());
        };
        pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
        self.publish_pc = Some(pc.clone());
        self.wait_publish_connected(Duration::from_secs(10)).await?;

        if options.send_nothing {
            return Ok(());
        }
        if let Some(track) = audio_track {
            self.tasks.push(tokio::spawn(send_audio(track, audio_ssrc, self.shared.clone())));
        }
        if let Some(track) = video_track {
            self.tasks.push(tokio::spawn(watch_keyframe_requests(track.clone(), self.shared.clone())));
            for layer in layers {
                self.tasks.push(tokio::spawn(send_video(track.clone(), layer, options.clone(), self.shared.clone())));
            }
        }
        Ok(())
    }

    async fn wait_publish_connected(&mut self, limit: Duration) -> Result<(), ParticipantError> {
        let wait = self
            .publish_state
            .wait_for(|s| matches!(s, RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed));
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected => Ok(()),
            Ok(Ok(s)) => Err(ParticipantError::WebRtc(format!("publish connection {}", *s))),
            _ => Err(ParticipantError::WebRtc("publish connection did not connect in time".into())),
        }
    }

    /// Next synthetic sequence number to be sent on our audio or video track
    /// (so `[a, b)` between two calls is what was sent in between).
    pub fn sent_seq(&self, video: bool) -> u32 {
        if video {
            self.shared.video_sent.load(Ordering::SeqCst)
        } else {
            self.shared.audio_sent.load(Ordering::SeqCst)
        }
    }

    /// Distinct packets received from `publisher`'s track with synthetic
    /// sequence numbers in `[start, end)`.
    pub fn received_in(&self, publisher: &str, video: bool, start: u32, end: u32) -> u64 {
        let key = (publisher.to_string(), if video { "video" } else { "audio" });
        self.shared
            .reception
            .lock()
            .map(|r| r.tracks.get(&key).map(|t| t.seqs.count_in(start, end)).unwrap_or(0))
            .unwrap_or(0)
    }

    /// Packets received so far from `publisher` (both kinds, duplicates included).
    pub fn packets_from(&self, publisher: &str) -> u64 {
        self.shared
            .reception
            .lock()
            .map(|r| r.tracks.iter().filter(|((p, _), _)| p == publisher).map(|(_, t)| t.packets).sum())
            .unwrap_or(0)
    }

    /// A copy of everything received.
    pub fn reception(&self) -> Reception {
        self.shared.reception()
    }

    /// Reception of one remote track, if any packet arrived.
    pub fn track_reception(&self, publisher: &str, video: bool) -> Option<TrackReception> {
        let key = (publisher.to_string(), if video { "video" } else { "audio" });
        self.shared.reception.lock().ok().and_then(|r| r.tracks.get(&key).cloned())
    }

    /// Keyframe requests (PLI/FIR) received on our video track.
    pub fn keyframe_requests(&self) -> u64 {
        self.shared.keyframe_requests.load(Ordering::SeqCst)
    }

    /// The last subscribe offer's SDP.
    pub fn last_subscribe_offer(&self) -> Option<String> {
        self.shared.last_subscribe_offer.lock().ok().and_then(|o| o.clone())
    }

    /// Every server event (non-reply message) seen so far.
    pub fn events(&self) -> Vec<ServerMessage> {
        self.shared.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Subscribe offers that could not be applied.
    pub fn subscribe_errors(&self) -> u64 {
        self.shared.subscribe_errors.load(Ordering::SeqCst)
    }

    /// When the first remote media packet arrived (µs since the epoch).
    pub fn first_remote_packet_us(&self) -> Option<u64> {
        self.shared.first_remote_packet_us.lock().ok().and_then(|f| *f)
    }

    /// Round trip of a `ping`.
    pub async fn ping(&self) -> Result<Duration, SignalingError> {
        let t = Instant::now();
        self.signaling.request(ClientMessage::Ping { id: None }).await?;
        Ok(t.elapsed())
    }

    /// Leaves the room and closes the peer connections.
    pub async fn leave(mut self) {
        let _ = self.signaling.request(ClientMessage::Leave { id: None }).await;
        self.shutdown().await;
    }

    /// Closes peer connections and stops tasks without a `leave`.
    pub async fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(pc) = self.publish_pc.take() {
            let _ = pc.close().await;
        }
        if let Some(pc) = self.subscribe_pc.lock().await.take() {
            let _ = pc.close().await;
        }
        self.str0m_subscribe.lock().await.take();
        self.signaling.close();
    }
}

/// Where a participant's subscribe offers are answered.
enum Subscriber {
    Webrtc {
        slot: Arc<tokio::sync::Mutex<Option<Arc<dyn PeerConnection>>>>,
        /// (server media address, relay address) to redirect the server's candidates.
        via: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
        ice: IceSettings,
    },
    Str0m {
        slot: Arc<tokio::sync::Mutex<Option<SubscribeConnection>>>,
        ws_url: String,
    },
}

/// Answers subscribe offers and records events.
async fn event_loop(
    mut events: mpsc::UnboundedReceiver<ServerMessage>,
    signaling: Arc<SignalingClient>,
    shared: Arc<Shared>,
    subscriber: Subscriber,
) {
    while let Some(event) = events.recv().await {
        if let Ok(mut log) = shared.events.lock() {
            log.push(event.clone());
        }
        if let ServerMessage::SubscribeOffer { sdp } = event {
            if let Ok(mut last) = shared.last_subscribe_offer.lock() {
                *last = Some(sdp.clone());
            }
            let answered = match &subscriber {
                Subscriber::Webrtc { slot, via, ice } => {
                    let sdp = match via {
                        Some((server, relay)) => crate::lossy_relay::redirect_candidates(&sdp, *server, *relay),
                        None => sdp,
                    };
                    answer_subscribe(&signaling, &shared, slot, sdp, ice).await
                }
                Subscriber::Str0m { slot, ws_url } => answer_on_str0m(&signaling, &shared, slot, ws_url, sdp).await,
            };
            if answered.is_err() {
                shared.subscribe_errors.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

async fn answer_on_str0m(
    signaling: &SignalingClient,
    shared: &Arc<Shared>,
    slot: &tokio::sync::Mutex<Option<SubscribeConnection>>,
    ws_url: &str,
    sdp: String,
) -> Result<(), ParticipantError> {
    let mut slot = slot.lock().await;
    if slot.is_none() {
        *slot = Some(SubscribeConnection::open(ws_url, shared.clone()).await?);
    }
    let Some(connection) = slot.as_ref() else { return Ok(()) };
    let sdp = connection.answer(sdp).await?;
    signaling.request(ClientMessage::SubscribeAnswer { id: None, sdp }).await?;
    Ok(())
}

async fn answer_subscribe(
    signaling: &SignalingClient,
    shared: &Arc<Shared>,
    subscribe_pc: &tokio::sync::Mutex<Option<Arc<dyn PeerConnection>>>,
    sdp: String,
    ice: &IceSettings,
) -> Result<(), ParticipantError> {
    let mut slot = subscribe_pc.lock().await;
    let pc = match slot.as_ref() {
        Some(pc) => pc.clone(),
        None => {
            let pc = build_peer(Arc::new(SubscribeHandler { shared: shared.clone() }), false, ice).await?;
            *slot = Some(pc.clone());
            pc
        }
    };
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    // The server is ICE-lite and learns our address from our checks, so the
    // answer need not wait for candidates.
    let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
    signaling.request(ClientMessage::SubscribeAnswer { id: None, sdp }).await?;
    Ok(())
}

async fn watch_keyframe_requests(track: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>) {
    while let Some(event) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            shared.keyframe_requested();
        }
    }
}

async fn send_audio(track: Arc<TrackLocalStaticRTP>, ssrc: u32, shared: Arc<Shared>) {
    let mut seq: u16 = rand::random();
    let mut timestamp: u32 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (payload, first) = shared.next_audio_payload();
        if track.write_rtp(rtp_packet(111, seq, timestamp, ssrc, first, payload)).await.is_err() {
            break;
        }
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(960);
    }
}

/// One RTP packet (version 2, no extensions).
fn rtp_packet(
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: Vec<u8>,
) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            marker,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

/// One video stream a publisher sends: a single layer, or one simulcast
/// layer with the header extensions that name it.
#[derive(Debug, Clone)]
pub(crate) struct VideoLayer {
    /// Which keyframe-request flag it clears (0 without simulcast).
    pub index: usize,
    pub ssrc: u32,
    pub bitrate_bps: u32,
    /// The picture size its keyframes announce.
    pub size: (u16, u16),
    /// (`sdes:mid` id, mid, `sdes:rtp-stream-id` id, rid) for a simulcast layer.
    pub marks: Option<(u8, String, u8, &'static str)>,
}

impl VideoLayer {
    /// A single-layer video at the participant's bitrate.
    pub(crate) fn single(ssrc: u32, options: &ParticipantOptions) -> Self {
        VideoLayer { index: 0, ssrc, bitrate_bps: options.video_bitrate_bps, size: (1280, 720), marks: None }
    }
}

impl VideoLayer {
    /// The three simulcast layers, low to high: an eighth, a third and all of
    /// the participant's bitrate, unmarked and without an SSRC (str0m marks
    /// and numbers its own).
    pub(crate) fn simulcast(options: &ParticipantOptions) -> Vec<Self> {
        [(8, (320, 180)), (3, (640, 360)), (1, (1280, 720))]
            .into_iter()
            .enumerate()
            .map(|(index, (divisor, size))| VideoLayer {
                index,
                ssrc: 0,
                bitrate_bps: options.video_bitrate_bps / divisor,
                size,
                marks: None,
            })
            .collect()
    }
}

/// The video streams to send: one, or three simulcast layers marked with
/// the mid and extension ids of our own offer `sdp`.
fn video_layers(options: &ParticipantOptions, ssrcs: [u32; 3], sdp: &str) -> Result<Vec<VideoLayer>, ParticipantError> {
    if !options.simulcast {
        return Ok(vec![VideoLayer::single(ssrcs[0], options)]);
    }
    let (mid, mid_id, rid_id) = video_mid_and_extension_ids(sdp)
        .ok_or_else(|| ParticipantError::WebRtc("the simulcast offer has no mid or rid extension".into()))?;
    Ok(VideoLayer::simulcast(options)
        .into_iter()
        .zip(SIMULCAST_RIDS.iter().zip(ssrcs))
        .map(|(layer, (rid, ssrc))| VideoLayer { ssrc, marks: Some((mid_id, mid.clone(), rid_id, *rid)), ..layer })
        .collect())
}

pub(crate) async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    layer: VideoLayer,
    options: ParticipantOptions,
    shared: Arc<Shared>,
) {
    let fps = options.fps.max(1);
    let mut seq: u16 = rand::random();
    let mut timestamp: u32 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keyframes = KeyframeClock::default();
    loop {
        tick.tick().await;
        let keyframe = keyframes.next_is_keyframe(&shared, layer.index, options.keyframe_interval);
        for (payload, last) in video_frame(&shared, &layer, fps, keyframe) {
            let mut packet = rtp_packet(96, seq, timestamp, layer.ssrc, last, payload);
            if let Some((mid_id, mid, rid_id, rid)) = &layer.marks {
                let named = packet.header.set_extension(*mid_id, bytes::Bytes::copy_from_slice(mid.as_bytes()));
                if named
                    .and_then(|()| packet.header.set_extension(*rid_id, bytes::Bytes::from_static(rid.as_bytes())))
                    .is_err()
                {
                    return;
                }
            }
            if track.write_rtp(packet).await.is_err() {
                return;
            }
            seq = seq.wrapping_add(1);
        }
        timestamp = timestamp.wrapping_add(90_000 / fps);
    }
}
