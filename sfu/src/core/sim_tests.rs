//! The core on simulated time, with str0m clients and no sockets: every
//! datagram is handed across in memory and the clock only moves when the
//! test moves it. (str0m still draws random ICE credentials and SSRCs.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{CoreConfig, MediaCore};
use crate::api::{ParticipantEvent, ParticipantId, RoomId};

const SERVER: &str = "127.0.0.1:5000";

/// One simulated client connection (publish or subscribe).
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
    rtp_received: u64,
    ssrcs_seen: Vec<u32>,
    keyframe_requests: u64,
}

impl Client {
    fn new(now: Instant, addr: &str) -> Self {
        let mut rtc =
            Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_vp8(true).build(now);
        let addr: SocketAddr = addr.parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Client { rtc, addr, connected: false, rtp_received: 0, ssrcs_seen: Vec::new(), keyframe_requests: 0 }
    }
}

struct Sim {
    now: Instant,
    core: MediaCore,
    clients: Vec<Client>,
}

impl Sim {
    fn new() -> Self {
        let now = Instant::now();
        let config = CoreConfig {
            local_addrs: vec![SERVER.parse().unwrap()],
            max_participants: 6,
            peer_timeout: Duration::from_secs(20),
            keyframe_interval: Duration::from_millis(500),
            stats_interval: Duration::from_secs(1),
            max_tracks: 4,
            max_sdp_bytes: 32 * 1024,
        };
        Sim { now, core: MediaCore::new(config, now, 7), clients: Vec::new() }
    }

    /// Moves every datagram across until nothing is left, then advances the
    /// clock by `step` and fires due timers.
    fn run_for(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.exchange();
            self.now += step;
            let now = self.now;
            if now >= self.core.next_wake() {
                self.core.handle_timeout(now);
            }
            for c in &mut self.clients {
                let _ = c.rtc.handle_input(Input::Timeout(now));
            }
        }
        self.exchange();
    }

    fn exchange(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                loop {
                    let out = match self.clients[i].rtc.poll_output() {
                        Ok(o) => o,
                        Err(_) => break,
                    };
                    match out {
                        Output::Timeout(_) => break,
                        Output::Transmit(t) => {
                            moved = true;
                            let bytes: Vec<u8> = t.contents.into();
                            self.core.handle_datagram(self.now, t.source, t.destination, &bytes);
                        }
                        Output::Event(e) => {
                            let c = &mut self.clients[i];
                            match e {
                                Event::Connected => c.connected = true,
                                Event::RtpPacket(p) => {
                                    c.rtp_received += 1;
                                    if !c.ssrcs_seen.contains(&*p.header.ssrc) {
                                        c.ssrcs_seen.push(*p.header.ssrc);
                                    }
                                }
                                Event::KeyframeRequest(_) => c.keyframe_requests += 1,
                                _ => {}
                            }
                        }
                    }
                }
            }
            for out in std::mem::take(&mut self.core.outbox) {
                moved = true;
                if let Some(c) = self.clients.iter_mut().find(|c| c.addr == out.destination)
                    && let Ok(receive) = Receive::new(Protocol::Udp, out.source, out.destination, &out.contents)
                {
                    let _ = c.rtc.handle_input(Input::Receive(self.now, receive));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// A publish connection offering send-only audio and video; returns the
    /// client index, its mids and the participant's events.
    fn publish(
        &mut self,
        room: &RoomId,
        who: &str,
        addr: &str,
    ) -> (usize, Mid, Mid, UnboundedReceiver<ParticipantEvent>) {
        let mut c = Client::new(self.now, addr);
        let mut api = c.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, Some(who.into()), Some("a".into()), None);
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, Some(who.into()), Some("v".into()), None);
        let (offer, pending): (SdpOffer, SdpPendingOffer) = api.apply().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let answer =
            self.core.add_participant(self.now, room, ParticipantId(who.into()), &offer.to_sdp_string(), tx).unwrap();
        c.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        self.clients.push(c);
        (self.clients.len() - 1, audio, video, rx)
    }

    /// Answers every subscribe offer waiting in `events` on the subscribe
    /// client `sub` (created on the first offer).
    fn answer_offers(
        &mut self,
        room: &RoomId,
        who: &str,
        events: &mut UnboundedReceiver<ParticipantEvent>,
        sub: &mut Option<usize>,
        addr: &str,
    ) {
        while let Ok(event) = events.try_recv() {
            if let ParticipantEvent::SubscribeOffer { sdp } = event {
                let index = *sub.get_or_insert_with(|| {
                    self.clients.push(Client::new(self.now, addr));
                    self.clients.len() - 1
                });
                let answer =
                    self.clients[index].rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&sdp).unwrap()).unwrap();
                self.core
                    .answer_subscribe(self.now, room, &ParticipantId(who.into()), &answer.to_sdp_string())
                    .unwrap();
            }
        }
    }

    /// Writes one audio packet and one video packet on a publisher's mids.
    fn send_media(&mut self, index: usize, audio: Mid, video: Mid, n: u64) {
        let now = self.now;
        let rtc = &mut self.clients[index].rtc;
        let opus = rtc.codec_config().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt());
        let vp8 = rtc.codec_config().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt());
        let mut api = rtc.direct_api();
        if let (Some(pt), Some(tx)) = (opus, api.stream_tx_by_mid(audio, None)) {
            tx.write_rtp(RtpWrite::new(pt, (1000 + n).into(), (n * 960) as u32, now, vec![0xAAu8; 80]).marker(true));
        }
        if let (Some(pt), Some(tx)) = (vp8, api.stream_tx_by_mid(video, None)) {
            let payload = [&[0x10u8, 0x00][..], &[0x55u8; 600]].concat();
            tx.write_rtp(
                RtpWrite::new(pt, (5000 + n).into(), (n * 3000) as u32, now, payload).marker(true).nackable(true),
            );
        }
    }
}

#[test]
fn two_publishers_exchange_media_on_simulated_time() {
    let mut sim = Sim::new();
    let room = RoomId("room".into());
    sim.core.create_room(room.clone(), None);
    let (a, a_audio, a_video, mut a_events) = sim.publish(&room, "alice", "127.0.0.2:1000");
    let (b, b_audio, b_video, mut b_events) = sim.publish(&room, "bob", "127.0.0.3:1000");
    let (mut a_sub, mut b_sub) = (None, None);
    // Connect, negotiate subscriptions, and send 2 s of media at 50 packets/s each way.
    for n in 0..200u64 {
        sim.answer_offers(&room, "alice", &mut a_events, &mut a_sub, "127.0.0.2:2000");
        sim.answer_offers(&room, "bob", &mut b_events, &mut b_sub, "127.0.0.3:2000");
        if sim.clients[a].connected && sim.clients[b].connected {
            sim.send_media(a, a_audio, a_video, n);
            sim.send_media(b, b_audio, b_video, n);
        }
        sim.run_for(Duration::from_millis(20), Duration::from_millis(5));
    }
    let (a_sub, b_sub) =
        (a_sub.expect("alice was offered bob's tracks"), b_sub.expect("bob was offered alice's tracks"));
    assert!(sim.clients[a_sub].connected && sim.clients[b_sub].connected, "subscribe connections up");
    // Both tracks reach both subscribers' connections: about 2 tracks x 2
    // subscribers x 199 packets.
    let forwarded = sim.core.counters.packets_forwarded;
    assert!(forwarded >= 4 * 180, "both tracks forwarded to both subscribers ({forwarded})");
    let (to_alice, to_bob) = (sim.clients[a_sub].rtp_received, sim.clients[b_sub].rtp_received);
    assert!(to_alice > 150 && to_bob > 150, "media received both ways (alice {to_alice}, bob {to_bob})");
    // Subscribers see the SFU's own SSRCs, never the publishers'. (These str0m
    // clients surface RTP from only one of the two forwarded tracks, which is
    // not explained yet; webrtc-rs and Chromium, in the integration tests,
    // receive both audio and video.)
    let publisher_ssrcs: Vec<u32> = {
        let mut api = sim.clients[b].rtc.direct_api();
        [b_audio, b_video].iter().filter_map(|m| api.stream_tx_by_mid(*m, None).map(|s| *s.ssrc())).collect()
    };
    assert_eq!(publisher_ssrcs.len(), 2);
    for ssrc in &sim.clients[a_sub].ssrcs_seen {
        assert!(!publisher_ssrcs.contains(ssrc), "SSRC {ssrc} is rewritten per subscriber");
    }
    // A subscriber connecting made each publisher receive a keyframe request.
    assert!(sim.clients[a].keyframe_requests >= 1 && sim.clients[b].keyframe_requests >= 1);
    assert_eq!(sim.core.counters.peer_faults, 0);
}

#[test]
fn a_silent_participant_is_removed_after_the_peer_timeout() {
    let mut sim = Sim::new();
    let room = RoomId("room".into());
    sim.core.create_room(room.clone(), None);
    let (_a, _, _, _a_events) = sim.publish(&room, "alice", "127.0.0.2:1000");
    let (_b, _, _, mut b_events) = sim.publish(&room, "bob", "127.0.0.3:1000");
    sim.run_for(Duration::from_secs(1), Duration::from_millis(5));
    // Alice goes silent: her client stops being driven at all.
    sim.clients.remove(0);
    sim.run_for(Duration::from_secs(25), Duration::from_millis(50));
    let mut removed = false;
    while let Ok(event) = b_events.try_recv() {
        if let ParticipantEvent::TrackRemoved(t) = event {
            removed |= t.publisher.0 == "alice";
        }
    }
    assert!(removed, "alice's tracks were removed from bob's subscription");
    assert_eq!(sim.core.participant_stats().len(), 1, "only bob remains");
}
