//! Synthetic media on str0m: the light stack, for capacity searches that
//! must measure the server and not the load generator.
//!
//! Each connection (a participant's publish or subscribe connection) is one
//! sans-IO [`Rtc`] in RTP mode, driven by one task that owns its UDP socket
//! and one reusable timer. No decoding, no interceptors, no jitter buffers:
//! a received packet is read for its synthetic header and dropped, and a sent
//! packet is a payload handed to str0m with its sequence number and time.
//!
//! Why one socket per connection and not many peers on one socket: the SFU
//! tells its peers apart by their address, and load tests may use
//! 127.0.0.1 only, so every connection needs a port of its own.
//!
//! The webrtc-rs stack ([`crate::webrtc_peer`]) stays for interop runs: it
//! is a WebRTC implementation independent of the SFU's, which this is not.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::participant::{KeyframeClock, ParticipantError, ParticipantOptions, Shared, VideoLayer, video_frame};
use crate::webrtc_peer::SIMULCAST_RIDS;

/// Largest datagram read.
const DATAGRAM: usize = 2048;
/// Datagrams read per wake before str0m's timers get a turn.
const READ_BATCH: usize = 64;

fn rtc(now: Instant) -> Rtc {
    Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_vp8(true).build(now)
}

/// A socket on the address this machine uses to reach `server` (for a
/// server on loopback, 127.0.0.1).
async fn bind_towards(server: SocketAddr) -> Result<(UdpSocket, SocketAddr), ParticipantError> {
    let io = |e: std::io::Error| ParticipantError::WebRtc(format!("udp socket: {e}"));
    let ip = if server.ip().is_loopback() || server.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let probe = std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).map_err(io)?;
        probe.connect(server).map_err(io)?;
        probe.local_addr().map_err(io)?.ip()
    };
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(io)?;
    let local = socket.local_addr().map_err(io)?;
    Ok((socket, local))
}

/// The server's address as its WebSocket URL names it (`ws://host:port/ws`).
fn server_addr(ws_url: &str) -> SocketAddr {
    ws_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.parse().ok())
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
}

/// A publish connection being set up: its offer goes to the server, whose
/// answer [`PublishOffer::start`] takes.
pub(crate) struct PublishOffer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: str0m::change::SdpPendingOffer,
    audio: Option<Mid>,
    video: Option<Mid>,
    /// The offer's SDP.
    pub sdp: String,
}

impl PublishOffer {
    /// Offers send-only audio and video as `options` say, the video in three
    /// simulcast layers when asked.
    pub(crate) async fn new(options: &ParticipantOptions, stream_id: &str) -> Result<Self, ParticipantError> {
        let (socket, local) = bind_towards(server_addr(&options.ws_url)).await?;
        let mut rtc = rtc(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| ParticipantError::WebRtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let stream = Some(stream_id.to_string());
        let audio = options
            .audio
            .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, stream.clone(), Some("a".into()), None));
        let video = (options.video_bitrate_bps > 0).then(|| {
            let simulcast = options.simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in SIMULCAST_RIDS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            api.add_media(MediaKind::Video, Direction::SendOnly, stream, Some("v".into()), simulcast)
        });
        let (offer, pending) = api.apply().ok_or_else(|| ParticipantError::WebRtc("nothing to offer".into()))?;
        Ok(PublishOffer { rtc, socket, local, pending, audio, video, sdp: offer.to_sdp_string() })
    }

    /// Takes the server's answer, connects, and (unless `options` say send
    /// nothing) sends media until the returned task is aborted. Returns once
    /// connected.
    pub(crate) async fn start(
        mut self,
        answer: &str,
        options: &ParticipantOptions,
        shared: Arc<Shared>,
    ) -> Result<JoinHandle<()>, ParticipantError> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| ParticipantError::WebRtc(e.to_string()))?;
        self.rtc.sdp_api().accept_answer(self.pending, answer).map_err(|e| ParticipantError::WebRtc(e.to_string()))?;
        let media = (!options.send_nothing).then(|| MediaSchedule::new(&self.rtc, self.audio, self.video, options));
        let (connected_tx, connected_rx) = oneshot::channel();
        let connection = Connection {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            shared,
            tracks: HashMap::new(),
            connected: Some(connected_tx),
            media,
        };
        let task = tokio::spawn(connection.run(None));
        match tokio::time::timeout(Duration::from_secs(10), connected_rx).await {
            Ok(Ok(())) => Ok(task),
            _ => {
                task.abort();
                Err(ParticipantError::WebRtc("publish connection did not connect in time".into()))
            }
        }
    }
}

/// A subscribe offer and where its answer goes.
type OfferToAnswer = (String, oneshot::Sender<Result<String, ParticipantError>>);

/// A participant's subscribe connection: answers the server's offers and
/// records every packet received.
pub(crate) struct SubscribeConnection {
    offers: mpsc::Sender<OfferToAnswer>,
    task: JoinHandle<()>,
}

impl SubscribeConnection {
    /// Opens the connection's socket and task; nothing flows until the first
    /// offer is answered.
    pub(crate) async fn open(ws_url: &str, shared: Arc<Shared>) -> Result<Self, ParticipantError> {
        let (socket, local) = bind_towards(server_addr(ws_url)).await?;
        let mut rtc = rtc(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| ParticipantError::WebRtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let (offers, offers_rx) = mpsc::channel(4);
        let connection =
            Connection { rtc, socket, local, shared, tracks: HashMap::new(), connected: None, media: None };
        Ok(SubscribeConnection { offers, task: tokio::spawn(connection.run(Some(offers_rx))) })
    }

    /// Applies the server's offer; returns the answer's SDP.
    pub(crate) async fn answer(&self, offer: String) -> Result<String, ParticipantError> {
        let (tx, rx) = oneshot::channel();
        let gone = || ParticipantError::WebRtc("the subscribe connection has ended".into());
        self.offers.send((offer, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

impl Drop for SubscribeConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which publisher's audio or video each `mid` of a subscribe offer carries,
/// from its `a=mid` and `a=msid` lines (the stream id is the publisher).
fn tracks_of(offer: &str) -> HashMap<Mid, (String, bool)> {
    let mut tracks = HashMap::new();
    for section in offer.split("\nm=").skip(1) {
        let video = section.starts_with("video");
        let line = |prefix: &str| {
            section.lines().find_map(|l| l.trim_end().strip_prefix(prefix).map(|v| v.split(' ').next().unwrap_or(v)))
        };
        if let (Some(mid), Some(stream)) = (line("a=mid:"), line("a=msid:")) {
            tracks.insert(Mid::from(mid), (stream.to_string(), video));
        }
    }
    tracks
}

/// One str0m connection and its socket, driven by one task.
struct Connection {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    shared: Arc<Shared>,
    /// For a subscribe connection: mid → (publisher, video).
    tracks: HashMap<Mid, (String, bool)>,
    /// Told once, when the connection is up.
    connected: Option<oneshot::Sender<()>>,
    /// For a publish connection that sends: what to send when.
    media: Option<MediaSchedule>,
}

impl Connection {
    async fn run(mut self, mut offers: Option<mpsc::Receiver<OfferToAnswer>>) {
        let mut buf = vec![0u8; DATAGRAM];
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let Some(timeout) = self.drain().await else { return };
            let wake = self.media.as_ref().map_or(timeout, |m| m.next_due().min(timeout));
            sleep.as_mut().reset(tokio::time::Instant::from_std(wake));
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else { return };
                    if !self.receive(source, &buf[..n]).await {
                        return;
                    }
                    // Whatever else has arrived, without waking again.
                    for _ in 1..READ_BATCH {
                        let Ok((n, source)) = self.socket.try_recv_from(&mut buf) else { break };
                        if !self.receive(source, &buf[..n]).await {
                            return;
                        }
                    }
                }
                () = &mut sleep => {
                    let now = Instant::now();
                    if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                        return;
                    }
                    if let Some(media) = self.media.as_mut()
                        && self.connected.is_none()
                    {
                        media.send_due(&mut self.rtc, &self.shared, now);
                    }
                }
                offer = async { offers.as_mut()?.recv().await }, if offers.is_some() => {
                    let Some((sdp, reply)) = offer else { return };
                    let _ = reply.send(self.accept_offer(&sdp));
                }
            }
        }
    }

    /// One datagram in, then everything str0m has to say.
    async fn receive(&mut self, source: SocketAddr, datagram: &[u8]) -> bool {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, datagram) else { return true };
        if self.rtc.handle_input(Input::Receive(Instant::now(), receive)).is_err() {
            return false;
        }
        self.drain().await.is_some()
    }

    fn accept_offer(&mut self, sdp: &str) -> Result<String, ParticipantError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| ParticipantError::WebRtc(e.to_string()))?;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|e| ParticipantError::WebRtc(e.to_string()))?;
        self.tracks = tracks_of(sdp);
        Ok(answer.to_sdp_string())
    }

    /// Polls str0m until it only has a timeout to give: sends its datagrams
    /// and handles its events. `None`: the connection is over.
    async fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output().ok()? {
                // A connection str0m has closed (ICE failed for good) is over;
                // a passing disconnection is not, as for a browser.
                Output::Timeout(_) if !self.rtc.is_alive() => return None,
                Output::Timeout(at) => return Some(at),
                Output::Transmit(t) => {
                    // A full socket buffer drops the datagram, as the network would.
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(event) => match event {
                    Event::Connected => {
                        if let Some(tell) = self.connected.take() {
                            let _ = tell.send(());
                        }
                    }
                    Event::RtpPacket(packet) => {
                        let mid = self.rtc.direct_api().stream_rx(&packet.header.ssrc).map(|s| s.mid());
                        if let Some((publisher, video)) = mid.and_then(|m| self.tracks.get(&m)) {
                            self.shared.record_rtp(publisher, *video, packet.header.sequence_number, &packet.payload);
                        }
                    }
                    Event::KeyframeRequest(_) => self.shared.keyframe_requested(),
                    _ => {}
                },
            }
        }
    }
}

/// A publisher's streams: audio every 20 ms, video frames at the frame
/// rate, each simulcast layer with its own sequence numbers and clock.
struct MediaSchedule {
    audio: Option<Stream>,
    video: Vec<(Stream, VideoLayer, KeyframeClock)>,
    fps: u32,
    keyframe_interval: Duration,
}

/// One outgoing RTP stream.
struct Stream {
    mid: Mid,
    rid: Option<Rid>,
    pt: Pt,
    seq: u64,
    timestamp: u32,
    next: Instant,
    every: Duration,
}

impl MediaSchedule {
    fn new(rtc: &Rtc, audio: Option<Mid>, video: Option<Mid>, options: &ParticipantOptions) -> Self {
        let pt = |codec: Codec| rtc.codec_config().find(|p| p.spec().codec == codec).map(|p| p.pt());
        let now = Instant::now();
        let fps = options.fps.max(1);
        let stream = |mid: Mid, rid: Option<Rid>, pt: Pt, every: Duration| Stream {
            mid,
            rid,
            pt,
            // Below 2^16: str0m's receivers start their rollover counter at 0.
            seq: u64::from(rand::random::<u16>() / 2),
            timestamp: rand::random(),
            next: now,
            every,
        };
        let audio = audio.zip(pt(Codec::Opus)).map(|(mid, pt)| stream(mid, None, pt, Duration::from_millis(20)));
        let frame = Duration::from_secs_f64(1.0 / f64::from(fps));
        let video = match video.zip(pt(Codec::Vp8)) {
            None => Vec::new(),
            Some((mid, pt)) if options.simulcast => VideoLayer::simulcast(options)
                .into_iter()
                .zip(SIMULCAST_RIDS)
                .map(|(layer, rid)| (stream(mid, Some(Rid::from(rid)), pt, frame), layer, KeyframeClock::default()))
                .collect(),
            Some((mid, pt)) => {
                vec![(stream(mid, None, pt, frame), VideoLayer::single(0, options), KeyframeClock::default())]
            }
        };
        MediaSchedule { audio, video, fps, keyframe_interval: options.keyframe_interval }
    }

    fn next_due(&self) -> Instant {
        self.audio.iter().chain(self.video.iter().map(|(s, ..)| s)).map(|s| s.next).min().unwrap_or_else(|| {
            // Nothing to send: wake for str0m only.
            Instant::now() + Duration::from_secs(3600)
        })
    }

    /// Writes every packet due by `now`. A late wake sends one frame, not a
    /// burst of the missed ones (as a camera would).
    fn send_due(&mut self, rtc: &mut Rtc, shared: &Shared, now: Instant) {
        let mut api = rtc.direct_api();
        if let Some(audio) = self.audio.as_mut().filter(|s| s.next <= now)
            && let Some(tx) = api.stream_tx_by_mid(audio.mid, None)
        {
            let (payload, first) = shared.next_audio_payload();
            tx.write_rtp(RtpWrite::new(audio.pt, audio.seq.into(), audio.timestamp, now, payload).marker(first));
            audio.seq += 1;
            audio.advance(now, 960);
        }
        for (stream, layer, keyframes) in self.video.iter_mut().filter(|(s, ..)| s.next <= now) {
            let Some(tx) = api.stream_tx_by_mid(stream.mid, stream.rid) else {
                stream.advance(now, 0);
                continue;
            };
            let keyframe = keyframes.next_is_keyframe(shared, layer.index, self.keyframe_interval);
            for (payload, last) in video_frame(shared, layer, self.fps, keyframe) {
                tx.write_rtp(
                    RtpWrite::new(stream.pt, stream.seq.into(), stream.timestamp, now, payload)
                        .marker(last)
                        .nackable(true),
                );
                stream.seq += 1;
            }
            stream.advance(now, 90_000 / self.fps);
        }
    }
}

impl Stream {
    /// After a frame: the next time and timestamp.
    fn advance(&mut self, now: Instant, ticks: u32) {
        self.timestamp = self.timestamp.wrapping_add(ticks);
        self.next = (self.next + self.every).max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offers_mids_map_to_their_publishers() {
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                     m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:alice alice-1-0\r\na=sendonly\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:alice alice-1-1\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:bob bob-1-1\r\n\
                     m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=inactive\r\n";
        let tracks = tracks_of(offer);
        assert_eq!(tracks.get(&Mid::from("0")), Some(&("alice".to_string(), false)));
        assert_eq!(tracks.get(&Mid::from("1")), Some(&("alice".to_string(), true)));
        assert_eq!(tracks.get(&Mid::from("2")), Some(&("bob".to_string(), true)));
        assert_eq!(tracks.len(), 3, "a section without an msid carries nobody");
    }

    #[test]
    fn the_server_address_comes_from_the_websocket_url() {
        assert_eq!(server_addr("ws://127.0.0.1:8080/ws"), "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(server_addr("ws://[::1]:9/ws"), "[::1]:9".parse::<SocketAddr>().unwrap());
    }
}
