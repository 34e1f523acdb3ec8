//! The core on simulated time, with str0m clients and no sockets: every
//! datagram is handed across in memory and the clock only moves when the
//! test moves it. (str0m still draws random ICE credentials and SSRCs.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::{CoreConfig, CoreEvent, MediaCore};
use crate::api::{ParticipantEvent, ParticipantId, RemovedReason, RoomId};

const SERVER: &str = "127.0.0.1:5000";

/// One simulated client connection (publish or subscribe).
/// One packet a subscriber received: where it sits in its stream, and what
/// the test's publisher wrote into it (the layer's mark, and whether it is a
/// VP8 keyframe).
#[derive(Debug, Clone, Copy)]
struct Got {
    seq: u64,
    ts: u32,
    mark: u8,
    keyframe: bool,
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
    /// RTP packets received, per mid of this connection.
    rtp_by_mid: HashMap<Mid, u64>,
    ssrcs_seen: Vec<u32>,
    /// Keyframe requests received, by the mid they are for.
    keyframe_requests: HashMap<Mid, u64>,
    /// Keyframe requests received, by the simulcast layer they are for.
    layer_requests: HashMap<Option<Rid>, u64>,
    /// Every RTP packet received, by mid, in order of arrival.
    log: HashMap<Mid, Vec<Got>>,
    /// Whether the client is still driven (false: it went silent).
    alive: bool,
}

impl Client {
    fn new(now: Instant, addr: &str) -> Self {
        let mut rtc =
            Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false).enable_vp8(true).build(now);
        let addr: SocketAddr = addr.parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Client {
            rtc,
            addr,
            connected: false,
            rtp_by_mid: HashMap::new(),
            ssrcs_seen: Vec::new(),
            keyframe_requests: HashMap::new(),
            layer_requests: HashMap::new(),
            log: HashMap::new(),
            alive: true,
        }
    }
}

/// A participant as the test sees it: its publish client, its subscribe
/// client (once offered), and its events.
struct Person {
    who: String,
    key: u64,
    publish: usize,
    audio: Mid,
    video: Mid,
    subscribe: Option<usize>,
    sub_addr: String,
    events: Vec<ParticipantEvent>,
    offers_seen: Vec<String>,
}

struct Sim {
    now: Instant,
    core: MediaCore,
    clients: Vec<Client>,
    room: RoomId,
    people: Vec<Person>,
    /// Whether calls into the core count allocations, and how many so far.
    counting: bool,
    allocations: u64,
}

fn config() -> CoreConfig {
    CoreConfig {
        announce: Vec::new(),
        relay_ips: Vec::new(),
        candidates: vec![Candidate::host(SERVER.parse().unwrap(), "udp").unwrap()],
        max_participants: 6,
        peer_timeout: Duration::from_secs(20),
        keyframe_interval: Duration::from_millis(500),
        stats_interval: Duration::from_secs(1),
        max_tracks: 4,
        max_sdp_bytes: 32 * 1024,
        // Simulated subscribers run with bandwidth estimation on (as group
        // sessions will); the no-estimate case has its own config below.
        initial_estimate_bps: Some(1_000_000),
    }
}

impl Sim {
    fn new() -> Self {
        Sim::with_config(config())
    }

    fn with_config(config: CoreConfig) -> Self {
        let now = Instant::now();
        let mut core = MediaCore::new(config, now, 7);
        let room = RoomId("room".into());
        core.create_room(room.clone(), None, false);
        Sim { now, core, clients: Vec::new(), room, people: Vec::new(), counting: false, allocations: 0 }
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
                self.in_core(|core| core.handle_timeout(now));
            }
            for c in self.clients.iter_mut().filter(|c| c.alive) {
                let _ = c.rtc.handle_input(Input::Timeout(now));
            }
        }
        self.exchange();
    }

    /// Moves datagrams both ways until nothing is left. Each client is
    /// drained right after every input, as str0m requires (an undrained
    /// `Rtc` keeps only its latest packet event).
    fn exchange(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                moved |= self.drain_client(i);
            }
            let now = self.now;
            self.in_core(|core| core.settle(now));
            let transmits: Vec<_> = self.core.transmits.drain(..).collect();
            for out in transmits {
                moved = true;
                let Some(i) = self.clients.iter().position(|c| c.addr == out.destination && c.alive) else { continue };
                if let Ok(receive) = Receive::new(Protocol::Udp, out.source, out.destination, &out.contents) {
                    let _ = self.clients[i].rtc.handle_input(Input::Receive(self.now, receive));
                    self.drain_client(i);
                }
            }
            self.collect_events();
            if !moved {
                return;
            }
        }
    }

    /// Polls one client until it has nothing more to say; its datagrams go
    /// to the core. Returns whether it sent any.
    fn drain_client(&mut self, i: usize) -> bool {
        let mut sent = false;
        if !self.clients[i].alive {
            return false;
        }
        loop {
            let out = match self.clients[i].rtc.poll_output() {
                Ok(o) => o,
                Err(_) => break,
            };
            match out {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    sent = true;
                    let bytes: Vec<u8> = t.contents.into();
                    let now = self.now;
                    self.in_core(|core| core.handle_datagram(now, t.source, t.destination, &bytes));
                }
                Output::Event(e) => {
                    let c = &mut self.clients[i];
                    match e {
                        Event::Connected => c.connected = true,
                        Event::RtpPacket(p) => {
                            if let Some(mid) = c.rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid()) {
                                *c.rtp_by_mid.entry(mid).or_default() += 1;
                                let got = Got {
                                    seq: *p.seq_no,
                                    ts: p.header.timestamp,
                                    mark: p.payload.last().copied().unwrap_or(0),
                                    keyframe: crate::simulcast::vp8_keyframe(&p.payload).is_some(),
                                };
                                c.log.entry(mid).or_default().push(got);
                            }
                            if !c.ssrcs_seen.contains(&*p.header.ssrc) {
                                c.ssrcs_seen.push(*p.header.ssrc);
                            }
                        }
                        Event::KeyframeRequest(r) => {
                            *c.keyframe_requests.entry(r.mid).or_default() += 1;
                            *c.layer_requests.entry(r.rid).or_default() += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        sent
    }

    /// Runs one call into the core, counting its allocations when asked.
    fn in_core<T>(&mut self, f: impl FnOnce(&mut MediaCore) -> T) -> T {
        if !self.counting {
            return f(&mut self.core);
        }
        let (result, n) = crate::alloc_count::counting(|| f(&mut self.core));
        self.allocations += n;
        result
    }

    fn collect_events(&mut self) {
        let events: Vec<CoreEvent> = self.core.events.drain(..).collect();
        for event in events {
            if let CoreEvent::To(key, e) = event
                && let Some(p) = self.people.iter_mut().find(|p| p.key == key)
            {
                p.events.push(e);
            }
        }
    }

    /// A participant whose publish connection offers send-only audio and
    /// video; returns its index among the people.
    fn join(&mut self, who: &str, addr: &str, sub_addr: &str) -> usize {
        self.join_with(who, addr, sub_addr, None)
    }

    fn join_with(&mut self, who: &str, addr: &str, sub_addr: &str, simulcast: Option<Simulcast>) -> usize {
        let (client, audio, video, offer, pending) = self.publish_offer_with(who, addr, simulcast);
        let (answer, key) = self.core.add_participant(self.now, &self.room, ParticipantId(who.into()), &offer).unwrap();
        let c = &mut self.clients[client];
        c.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        self.people.push(Person {
            who: who.into(),
            key,
            publish: client,
            audio,
            video,
            subscribe: None,
            sub_addr: sub_addr.into(),
            events: Vec::new(),
            offers_seen: Vec::new(),
        });
        self.collect_events();
        self.people.len() - 1
    }

    /// A new client publishing audio and video; returns (client, mids, offer text, pending).
    fn publish_offer(&mut self, who: &str, addr: &str) -> (usize, Mid, Mid, String, SdpPendingOffer) {
        self.publish_offer_with(who, addr, None)
    }

    /// As `publish_offer`, the video optionally in simulcast layers.
    fn publish_offer_with(
        &mut self,
        who: &str,
        addr: &str,
        simulcast: Option<Simulcast>,
    ) -> (usize, Mid, Mid, String, SdpPendingOffer) {
        let mut c = Client::new(self.now, addr);
        let mut api = c.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, Some(who.into()), Some("a".into()), None);
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, Some(who.into()), Some("v".into()), simulcast);
        let (offer, pending): (SdpOffer, SdpPendingOffer) = api.apply().unwrap();
        self.clients.push(c);
        (self.clients.len() - 1, audio, video, offer.to_sdp_string(), pending)
    }

    /// Answers every subscribe offer a person has received.
    fn answer_offers(&mut self, person: usize) {
        let offers: Vec<String> = self.people[person]
            .events
            .iter()
            .filter_map(|e| match e {
                ParticipantEvent::SubscribeOffer { sdp } => Some(sdp.clone()),
                _ => None,
            })
            .collect();
        self.people[person].events.retain(|e| !matches!(e, ParticipantEvent::SubscribeOffer { .. }));
        for sdp in offers {
            let index = match self.people[person].subscribe {
                Some(i) => i,
                None => {
                    self.clients.push(Client::new(self.now, &self.people[person].sub_addr.clone()));
                    self.people[person].subscribe = Some(self.clients.len() - 1);
                    self.clients.len() - 1
                }
            };
            let Ok(answer) = self.clients[index].rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&sdp).unwrap())
            else {
                continue;
            };
            let who = ParticipantId(self.people[person].who.clone());
            // An offer overtaken by a newer one is refused; the newer one follows.
            let _ = self.core.answer_subscribe(self.now, &self.room, &who, &answer.to_sdp_string());
            self.people[person].offers_seen.push(sdp);
            self.collect_events();
        }
    }

    /// Writes one audio packet and one video packet from a person.
    fn send_media(&mut self, person: usize, n: u64) {
        let (index, audio, video) = (self.people[person].publish, self.people[person].audio, self.people[person].video);
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

    /// Everyone answers their offers and, once connected, sends a packet
    /// pair; then 20 ms pass.
    fn step(&mut self, n: u64) {
        for person in 0..self.people.len() {
            self.answer_offers(person);
        }
        for person in 0..self.people.len() {
            if self.clients[self.people[person].publish].connected && self.clients[self.people[person].publish].alive {
                self.send_media(person, n);
            }
        }
        self.run_for(Duration::from_millis(20), Duration::from_millis(5));
    }

    fn subscriber(&self, person: usize) -> &Client {
        &self.clients[self.people[person].subscribe.expect("offered a subscription")]
    }
}

#[test]
fn two_publishers_exchange_media_on_simulated_time() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let b = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..200u64 {
        sim.step(n);
    }
    let (to_alice, to_bob) = (sim.subscriber(a), sim.subscriber(b));
    assert!(to_alice.connected && to_bob.connected, "subscribe connections up");
    let forwarded = sim.core.counters.packets_forwarded;
    assert!(forwarded >= 4 * 180, "both tracks forwarded to both subscribers ({forwarded})");
    // Each subscriber receives both of the other's tracks, on two mids.
    for (who, c) in [("alice", to_alice), ("bob", to_bob)] {
        assert_eq!(c.rtp_by_mid.len(), 2, "{who} receives audio and video: {:?}", c.rtp_by_mid);
        assert!(c.rtp_by_mid.values().all(|n| *n > 150), "{who}: {:?}", c.rtp_by_mid);
    }
    // Subscribers see the SFU's own SSRCs, never the publishers'.
    let publisher_ssrcs: Vec<u32> = {
        let p = &sim.people[b];
        let mut api = sim.clients[p.publish].rtc.direct_api();
        [p.audio, p.video].iter().filter_map(|m| api.stream_tx_by_mid(*m, None).map(|s| *s.ssrc())).collect()
    };
    assert_eq!(publisher_ssrcs.len(), 2);
    for ssrc in &sim.subscriber(a).ssrcs_seen {
        assert!(!publisher_ssrcs.contains(ssrc), "SSRC {ssrc} is rewritten per subscriber");
    }
    // A subscriber connecting made each publisher receive a keyframe
    // request, for its video; never for audio, which has no keyframes.
    for who in [a, b] {
        let p = &sim.people[who];
        let requests = &sim.clients[p.publish].keyframe_requests;
        assert!(requests.get(&p.video).is_some_and(|n| *n >= 1), "{requests:?}");
        assert!(!requests.contains_key(&p.audio), "no keyframe request for audio: {requests:?}");
    }
    assert_eq!(sim.core.counters.peer_faults, 0);
    // str0m's timers fell due and were counted (its NACK check alone is every 33 ms).
    assert!(sim.core.counters.peer_timeouts >= 4 * 4_000 / 100, "{} str0m timeouts", sim.core.counters.peer_timeouts);
    // The timer heap stays near one entry per peer, however long the call.
    assert!(sim.core.timer_entries() <= 3 * 4, "{} timer entries for 4 peers", sim.core.timer_entries());
}

#[test]
fn a_silent_participant_is_removed_after_the_peer_timeout() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let b = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..50 {
        sim.step(n);
    }
    // Alice goes silent: her clients stop being driven at all.
    let alice_clients = [Some(sim.people[a].publish), sim.people[a].subscribe];
    for c in alice_clients.into_iter().flatten() {
        sim.clients[c].alive = false;
    }
    sim.run_for(Duration::from_secs(25), Duration::from_millis(50));
    let removed =
        sim.people[b].events.iter().any(|e| matches!(e, ParticipantEvent::TrackRemoved(t) if t.publisher.0 == "alice"));
    assert!(removed, "alice's tracks were removed from bob's subscription");
    assert!(sim.people[a].events.contains(&ParticipantEvent::Removed(RemovedReason::Timeout)));
    assert_eq!(sim.core.participant_stats().len(), 1, "only bob remains");
}

#[test]
fn a_subscriber_heard_again_after_a_cut_gets_keyframes_at_once() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let b = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..100 {
        sim.step(n);
    }
    let bob = &sim.people[b];
    let (bob_publish, bob_video) = (bob.publish, bob.video);
    // Alice's network is cut for 3 s: nothing of hers moves either way.
    let alice_clients: Vec<usize> =
        [Some(sim.people[a].publish), sim.people[a].subscribe].into_iter().flatten().collect();
    for &c in &alice_clients {
        sim.clients[c].alive = false;
    }
    for n in 100..250 {
        sim.step(n);
    }
    let before = sim.clients[bob_publish].keyframe_requests.get(&bob_video).copied().unwrap_or(0);
    // The network returns. Within 100 ms Bob is asked for a keyframe for
    // Alice, whose decoder lost its reference frames in the gap (her
    // browser would ask by itself only seconds later).
    for &c in &alice_clients {
        sim.clients[c].alive = true;
    }
    for n in 250..255 {
        sim.step(n);
    }
    let after = sim.clients[bob_publish].keyframe_requests.get(&bob_video).copied().unwrap_or(0);
    assert!(after > before, "bob was asked for a keyframe once alice was heard again ({before} -> {after})");
    // And not over and over: a steady call asks for none.
    for n in 255..400 {
        sim.step(n);
    }
    let steady = sim.clients[bob_publish].keyframe_requests.get(&bob_video).copied().unwrap_or(0);
    assert!(steady <= after + 1, "no keyframe requests in a steady call ({after} -> {steady})");
}

#[test]
fn the_packet_path_allocates_nothing_of_its_own() {
    // A consultation room (no estimate): the path that carries most calls.
    let mut sim = Sim::with_config(no_bwe());
    sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    sim.join("carol", "127.0.0.4:1000", "127.0.0.4:2000");
    // Warm up: connections, negotiation, buffers grown to their working size.
    for n in 0..300 {
        sim.step(n);
    }
    let before = sim.core.counters.packets_forwarded;
    sim.counting = true;
    let mut n = 300;
    while sim.core.counters.packets_forwarded - before < 10_000 {
        sim.step(n);
        n += 1;
    }
    sim.counting = false;
    let forwarded = sim.core.counters.packets_forwarded - before;
    assert_eq!(
        sim.allocations, 0,
        "{} allocations outside str0m while forwarding {forwarded} packets",
        sim.allocations
    );
}

#[test]
fn a_fault_in_one_participants_sdp_costs_only_that_participant() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    let c = sim.join("carol", "127.0.0.4:1000", "127.0.0.4:2000");
    for n in 0..100 {
        sim.step(n);
    }
    // A newcomer whose offer makes the SDP code panic is refused; nobody else notices.
    let (_, _, _, offer, _) = sim.publish_offer("dave", "127.0.0.5:1000");
    let poisoned = offer.replace("a=mid:", "a=x-teleconsult-inject-panic\r\na=mid:");
    let refused = sim.core.add_participant(sim.now, &sim.room.clone(), ParticipantId("dave".into()), &poisoned);
    assert!(matches!(refused, Err(crate::api::SfuError::Fault)), "{refused:?}");
    // Carol, already in the call, renegotiates with such an offer: she alone is removed.
    let room = sim.room.clone();
    let refused = sim.core.publish_offer(sim.now, &room, &ParticipantId("carol".into()), &poisoned);
    assert!(matches!(refused, Err(crate::api::SfuError::Fault)));
    let before = sim.core.counters.packets_forwarded;
    for n in 100..150 {
        sim.step(n);
    }
    assert!(sim.people[c].events.contains(&ParticipantEvent::Removed(RemovedReason::Fault)), "carol is told");
    assert_eq!(sim.core.participant_stats().len(), 2, "alice and bob remain");
    assert!(sim.core.counters.packets_forwarded > before + 150, "the others' call kept forwarding");
    assert!(sim.subscriber(a).rtp_by_mid.len() >= 2);
    assert_eq!(sim.core.counters.peer_faults, 2);
}

#[test]
fn junk_from_unknown_sources_asks_no_peer() {
    let mut sim = Sim::new();
    sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..100 {
        sim.step(n);
    }
    let (dropped, accepts, forwarded) =
        (sim.core.counters.datagrams_dropped, sim.core.accepts_calls, sim.core.counters.packets_forwarded);
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut x: u64 = 99;
    for i in 0..10_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let source = SocketAddr::from(([10, (x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8], (x >> 32) as u16 | 1));
        let datagram: Vec<u8> = match i % 3 {
            // A STUN binding request naming a ufrag nobody has.
            0 => {
                let mut stun = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
                stun.extend_from_slice(&x.to_be_bytes()[..4]);
                stun.extend_from_slice(&[0u8; 8]);
                stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
                stun.extend_from_slice(b"nobody:xy\0\0\0");
                stun
            }
            // RTP-shaped.
            1 => [&[0x80u8, 0x60][..], &x.to_be_bytes(), &[0u8; 100]].concat(),
            // DTLS-shaped.
            _ => [&[22u8, 0xfe, 0xfd][..], &x.to_be_bytes(), &[0u8; 60]].concat(),
        };
        sim.core.handle_datagram(sim.now, source, server, &datagram);
    }
    sim.core.settle(sim.now);
    assert_eq!(sim.core.counters.datagrams_dropped - dropped, 10_000, "all junk dropped");
    assert_eq!(sim.core.accepts_calls - accepts, 0, "no peer was asked about junk");
    for n in 100..150 {
        sim.step(n);
    }
    assert!(sim.core.counters.packets_forwarded > forwarded + 150, "the call carried on");
}

#[test]
fn a_publisher_that_reconnects_never_repeats_an_msid() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let b = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..100 {
        sim.step(n);
    }
    // Alice reloads: a new publish connection from a new client.
    let (client, audio, video, offer, pending) = sim.publish_offer("alice", "127.0.0.2:3000");
    let room = sim.room.clone();
    let answer = sim.core.publish_offer(sim.now, &room, &ParticipantId("alice".into()), &offer).unwrap();
    sim.clients[client].rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    sim.clients[sim.people[a].publish].alive = false;
    sim.people[a].publish = client;
    sim.people[a].audio = audio;
    sim.people[a].video = video;
    for n in 100..250 {
        sim.step(n);
    }
    let last = sim.people[b].offers_seen.last().expect("bob got new offers").clone();
    let msids: Vec<&str> = last.lines().filter(|l| l.starts_with("a=msid:")).collect();
    let mut unique = msids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), msids.len(), "no duplicate msid in {msids:?}");
    let generations: std::collections::BTreeSet<&str> =
        msids.iter().filter_map(|m| m.split_whitespace().nth(1)?.strip_prefix("alice-")?.split('-').next()).collect();
    assert_eq!(generations.len(), 2, "the old and the new tracks carry different generations: {msids:?}");
    // And bob receives alice's new tracks.
    let live = sim.subscriber(b).rtp_by_mid.len();
    assert!(live >= 4, "bob received on the old and the new mids ({live})");
    // Every live section of the offer carries candidates (a non-bundling client needs them).
    for section in last.split("\nm=").skip(1).filter(|s| s.split_whitespace().nth(1) != Some("0")) {
        assert!(section.contains("a=candidate:"), "a section without candidates");
    }
}

/// Property tests: hostile SDP and random datagrams against a live call.
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A live call between two people, once per test run (building one is
    /// the slow part), cloned by re-running the same warm-up.
    fn live_call() -> Sim {
        let mut sim = Sim::new();
        sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
        sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
        for n in 0..60 {
            sim.step(n);
        }
        sim
    }

    /// Mutates an SDP: cut, duplicate or garble lines; flip bytes.
    fn mutate(sdp: &str, edits: &[(u8, usize, u8)]) -> String {
        let mut lines: Vec<String> = sdp.lines().map(str::to_owned).collect();
        for (kind, at, byte) in edits {
            if lines.is_empty() {
                break;
            }
            let i = at % lines.len();
            match kind % 5 {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let copy = lines[i].clone();
                    lines.insert(i, copy);
                }
                2 => {
                    let mut bytes = lines[i].clone().into_bytes();
                    if !bytes.is_empty() {
                        let j = usize::from(*byte) % bytes.len();
                        bytes[j] = *byte;
                    }
                    lines[i] = String::from_utf8_lossy(&bytes).into_owned();
                }
                3 => lines[i] = lines[i].replace(|c: char| c.is_ascii_digit(), &byte.to_string()),
                _ => {
                    let keep = usize::from(*byte) % (lines[i].len() + 1);
                    let cut: String = lines[i].chars().take(keep).collect();
                    lines[i] = cut;
                }
            }
        }
        lines.join("\r\n") + "\r\n"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn hostile_offers_never_hurt_the_call(edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..12)) {
            let mut sim = live_call();
            let (_, _, _, offer, _) = sim.publish_offer("mallory", "127.0.0.9:1000");
            let hostile = mutate(&offer, &edits);
            let room = sim.room.clone();
            let _ = sim.core.add_participant(sim.now, &room, ParticipantId("mallory".into()), &hostile);
            let _ = sim.core.publish_offer(sim.now, &room, &ParticipantId("alice".into()), &hostile);
            let _ = sim.core.answer_subscribe(sim.now, &room, &ParticipantId("bob".into()), &hostile);
            sim.collect_events();
            let before = sim.core.counters.packets_forwarded;
            for n in 60..80 {
                sim.step(n);
            }
            // Bob's own media never stops; alice may have renegotiated.
            prop_assert!(sim.core.counters.packets_forwarded > before, "forwarding goes on");
        }

        #[test]
        fn random_datagrams_never_hurt_the_call(
            datagrams in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..1500), any::<u32>(), any::<bool>()), 1..60),
        ) {
            let mut sim = live_call();
            let server: SocketAddr = SERVER.parse().unwrap();
            // From strangers, and from the participants' own addresses.
            let known: Vec<SocketAddr> = sim.clients.iter().map(|c| c.addr).collect();
            for (bytes, from, own) in &datagrams {
                let source = if *own {
                    known[(*from as usize) % known.len()]
                } else {
                    SocketAddr::from(([10, 1, (from >> 8) as u8, *from as u8], (from >> 16) as u16 | 1))
                };
                sim.core.handle_datagram(sim.now, source, server, bytes);
            }
            sim.core.settle(sim.now);
            let before = sim.core.counters.packets_forwarded;
            for n in 60..80 {
                sim.step(n);
            }
            prop_assert!(sim.core.counters.packets_forwarded > before, "forwarding goes on");
        }
    }
}

/// Alice, Bob and Carol join with plain (single-layer) media and talk for
/// 200 steps; returns their indices.
fn three_in_a_call(sim: &mut Sim) -> Vec<usize> {
    let people: Vec<usize> = [("alice", 2), ("bob", 3), ("carol", 4)]
        .iter()
        .map(|(who, n)| sim.join(who, &format!("127.0.0.{n}:1000"), &format!("127.0.0.{n}:2000")))
        .collect();
    for n in 0..200 {
        sim.step(n);
    }
    people
}

#[test]
fn three_people_each_receive_both_others_on_their_own_tracks() {
    // Without an estimate (a consultation): every video as it comes. (The
    // simulated network moves no estimate, and the initial one would not
    // carry two plain videos; see the test after this one.)
    let mut sim = Sim::with_config(no_bwe());
    let people = three_in_a_call(&mut sim);
    for p in people {
        let got = &sim.subscriber(p).rtp_by_mid;
        assert_eq!(got.len(), 4, "{}: two others' audio and video, each on its own mid: {got:?}", sim.people[p].who);
        assert!(got.values().all(|n| (150..=210).contains(n)), "{}: {got:?}", sim.people[p].who);
    }
}

#[test]
fn subscribers_receive_on_the_ssrcs_their_offer_declares() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    sim.join("carol", "127.0.0.4:1000", "127.0.0.4:2000");
    for n in 0..100 {
        sim.step(n);
    }
    let offer = sim.people[a].offers_seen.last().unwrap().clone();
    let declared: Vec<u32> = offer
        .split("\nm=")
        .skip(1)
        .filter_map(|section| {
            section
                .lines()
                .find_map(|l| l.trim().strip_prefix("a=ssrc:"))
                .and_then(|l| l.split(' ').next()?.parse().ok())
        })
        .collect();
    let seen = &sim.subscriber(a).ssrcs_seen;
    eprintln!("declared {declared:?} seen {seen:?}");
    for ssrc in seen {
        assert!(declared.contains(ssrc), "SSRC {ssrc} was not declared in the offer ({declared:?})");
    }
}

#[test]
fn in_a_room_with_an_estimate_plain_videos_pause_and_resume_audio_never() {
    // Three single-layer publishers; each subscriber's estimate starts at
    // 1 Mbit/s, which the audio reserve and two plain videos overrun.
    let mut sim = Sim::new();
    let people = three_in_a_call(&mut sim);
    let paused = |sim: &Sim, p: usize| -> Vec<(String, bool)> {
        sim.people[p]
            .events
            .iter()
            .filter_map(|e| match e {
                ParticipantEvent::VideoPaused { track, paused } => Some((track.publisher.0.clone(), *paused)),
                _ => None,
            })
            .collect()
    };
    let alice = people[0];
    let told = paused(&sim, alice);
    assert!(told.iter().any(|(_, p)| *p), "alice is told a video paused: {told:?}");
    // Audio from both others flowed all along; one video stopped early.
    let counts: Vec<u64> = {
        let mut c: Vec<u64> = sim.subscriber(alice).rtp_by_mid.values().copied().collect();
        c.sort_unstable();
        c
    };
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts[1..].iter().all(|n| *n >= 190), "audio and one video flow: {counts:?}");
    assert!(counts[0] < 100, "a paused video stops: {counts:?}");
    let before = counts[0];

    // Her link turns out better: the paused video comes back. (str0m's own
    // estimator, which the simulated network cannot move, may take it away
    // again later: only the resume is asked for here.)
    let (room, alice_id) = (sim.room.clone(), ParticipantId("alice".into()));
    let now = sim.now;
    let events_before = told.len();
    sim.core.inject_estimate(now, &room, &alice_id, 20_000_000);
    for n in 200..300 {
        sim.step(n);
    }
    let told = paused(&sim, alice);
    assert!(told[events_before..].iter().any(|(_, p)| !*p), "and told it flows again: {told:?}");
    let mut counts: Vec<u64> = sim.subscriber(alice).rtp_by_mid.values().copied().collect();
    counts.sort_unstable();
    assert!(counts[0] >= before + 10, "the video flowed again: {counts:?} (from {before})");
    assert_eq!(sim.core.counters.peer_faults, 0);
}

#[test]
fn a_closed_subscribe_connection_costs_only_itself() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let b = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..50 {
        sim.step(n);
    }
    assert!(sim.subscriber(a).rtp_by_mid.values().all(|n| *n > 20));
    // Alice's browser drops its subscribe connection (a refused offer: it
    // starts a fresh one). Her publishing must go on for Bob.
    let old = sim.people[a].subscribe.take().unwrap();
    sim.clients[old].rtc.disconnect();
    sim.drain_client(old);
    sim.clients[old].alive = false;
    let to_bob_before: u64 = sim.subscriber(b).rtp_by_mid.values().sum();
    for n in 50..100 {
        sim.step(n);
    }
    let to_bob_after: u64 = sim.subscriber(b).rtp_by_mid.values().sum();
    assert!(to_bob_after > to_bob_before + 80, "Bob still receives Alice: {to_bob_before} -> {to_bob_after}");
    assert!(
        !sim.people[a].events.iter().any(|e| matches!(e, ParticipantEvent::Removed { .. })),
        "Alice is still in the room: {:?}",
        sim.people[a].events
    );
    // Her fresh connection gets every track again.
    let alice = ParticipantId("alice".into());
    let room = sim.room.clone();
    let now = sim.now;
    sim.core.restart_subscribe(now, &room, &alice, true).unwrap();
    for n in 100..200 {
        sim.step(n);
    }
    let fresh = sim.subscriber(a);
    assert_ne!(sim.people[a].subscribe, Some(old));
    assert_eq!(fresh.rtp_by_mid.len(), 2, "{:?}", fresh.rtp_by_mid);
    assert!(fresh.rtp_by_mid.values().all(|n| *n > 50), "{:?}", fresh.rtp_by_mid);
}

#[test]
fn a_publisher_removed_and_added_again_never_repeats_an_msid() {
    let mut sim = Sim::new();
    let a = sim.join("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let b = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..100 {
        sim.step(n);
    }
    let old_mids = [sim.people[a].audio.to_string(), sim.people[a].video.to_string()];
    // Alice's page unloads: her connections close and she leaves the media
    // room; the reloaded page adds her again under the same id, and, as a
    // browser does, numbers its sections as before (same mids).
    let room = sim.room.clone();
    let alice = ParticipantId("alice".into());
    let now = sim.now;
    assert!(sim.core.remove_participant(now, &room, &alice));
    sim.clients[sim.people[a].publish].alive = false;
    if let Some(sub) = sim.people[a].subscribe.take() {
        sim.clients[sub].alive = false;
    }
    for n in 100..120 {
        sim.step(n);
    }
    let (client, audio, video, offer, pending) = sim.publish_offer("alice", "127.0.0.2:3000");
    let (new_mids, old_mids) = ([audio.to_string(), video.to_string()], old_mids);
    let offer = offer.replace(&new_mids[0], &old_mids[0]).replace(&new_mids[1], &old_mids[1]);
    let (answer, key) = sim.core.add_participant(sim.now, &room, alice, &offer).unwrap();
    let answer = answer.replace(&old_mids[0], &new_mids[0]).replace(&old_mids[1], &new_mids[1]);
    sim.clients[client].rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    let p = &mut sim.people[a];
    (p.publish, p.audio, p.video, p.key) = (client, audio, video, key);
    for n in 120..200 {
        sim.step(n);
    }
    let last = sim.people[b].offers_seen.last().expect("bob got new offers").clone();
    let msids: Vec<&str> = last.lines().filter(|l| l.starts_with("a=msid:")).collect();
    let mut unique = msids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), msids.len(), "no duplicate msid in {msids:?}");
    assert_eq!(msids.len(), 4, "the old (inactive) and the new tracks are listed: {msids:?}");
}

// ----- simulcast ---------------------------------------------------------

/// The test publisher's layers, low to high: rid, picture height, payload
/// bytes per 20 ms frame (80, 240 and 480 kbit/s), and the mark its
/// packets end with.
const LAYERS: [(&str, u16, usize, u8); 3] = [("q", 180, 200, 1), ("h", 360, 600, 2), ("f", 720, 1200, 3)];

/// A publisher sending three VP8 layers, and what it has sent.
struct Layered {
    person: usize,
    /// Keyframe requests per layer already answered with a keyframe.
    answered: HashMap<Option<Rid>, u64>,
    /// Whether the publisher sends each layer (a publisher may stop its top ones).
    sending: [bool; 3],
}

impl Sim {
    /// Joins a participant whose video is sent in the three [`LAYERS`].
    fn join_layered(&mut self, who: &str, addr: &str, sub_addr: &str) -> Layered {
        let mut simulcast = Simulcast::new();
        for (rid, ..) in LAYERS {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        let person = self.join_with(who, addr, sub_addr, Some(simulcast));
        Layered { person, answered: HashMap::new(), sending: [true; 3] }
    }

    /// One 20 ms frame of a layered publisher: an audio packet, and one VP8
    /// packet per layer, a keyframe every 2 s or when the layer was asked
    /// for one. Each layer has its own sequence numbers and timestamp
    /// origin, as a browser's.
    fn send_layers(&mut self, layered: &mut Layered, n: u64) {
        let (index, audio, video) =
            (self.people[layered.person].publish, self.people[layered.person].audio, self.people[layered.person].video);
        let now = self.now;
        let c = &mut self.clients[index];
        if !c.connected {
            return;
        }
        let opus = c.rtc.codec_config().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt());
        let vp8 = c.rtc.codec_config().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt());
        let requests = c.layer_requests.clone();
        let mut api = c.rtc.direct_api();
        if let (Some(pt), Some(tx)) = (opus, api.stream_tx_by_mid(audio, None)) {
            tx.write_rtp(RtpWrite::new(pt, (1000 + n).into(), (n * 960) as u32, now, vec![0xAAu8; 80]).marker(true));
        }
        let Some(pt) = vp8 else { return };
        for (i, (rid, height, size, mark)) in LAYERS.into_iter().enumerate() {
            if !layered.sending[i] {
                continue;
            }
            let rid = Some(Rid::from(rid));
            let asked = requests.get(&rid).copied().unwrap_or(0);
            let answered = layered.answered.entry(rid).or_default();
            let keyframe = n.is_multiple_of(100) || asked > *answered;
            *answered = asked;
            let mut payload = vec![0x10u8];
            if keyframe {
                payload.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
                payload.extend_from_slice(&(height * 16 / 9).to_le_bytes());
                payload.extend_from_slice(&height.to_le_bytes());
            } else {
                payload.extend_from_slice(&[0x01, 0x00, 0x00]);
            }
            payload.resize(size, mark);
            let Some(tx) = api.stream_tx_by_mid(video, rid) else { continue };
            let seq = 20_000 * (i as u64 + 1) + n;
            let ts = (1_000_000 * (i as u32 + 1)).wrapping_add((n * 3000) as u32);
            tx.write_rtp(RtpWrite::new(pt, seq.into(), ts, now, payload).marker(true).nackable(true));
        }
    }

    /// Everyone answers their offers; the layered publisher sends a frame
    /// (nobody else sends media); then 20 ms pass.
    fn layered_step(&mut self, layered: &mut Layered, n: u64) {
        for person in 0..self.people.len() {
            self.answer_offers(person);
        }
        self.send_layers(layered, n);
        self.run_for(Duration::from_millis(20), Duration::from_millis(5));
    }

    /// What `person` has received of `publisher`'s video.
    fn video_log(&self, person: usize, publisher: &str) -> Vec<Got> {
        let mid = self.people[person]
            .events
            .iter()
            .find_map(|e| match e {
                ParticipantEvent::TrackAdded(t)
                    if t.publisher.0 == publisher && t.kind == crate::api::TrackKind::Video =>
                {
                    Some(t.mid.clone())
                }
                _ => None,
            })
            .expect("the video was offered");
        let client = self.subscriber(person);
        client.log.iter().find(|(m, _)| m.to_string() == mid).map(|(_, log)| log.clone()).unwrap_or_default()
    }
}

/// Layers received since `from` (an index into the log), each run once.
fn runs(log: &[Got], from: usize) -> Vec<u8> {
    let mut runs: Vec<u8> = Vec::new();
    for g in &log[from..] {
        if runs.last() != Some(&g.mark) {
            runs.push(g.mark);
        }
    }
    runs
}

/// The subscriber's stream is one stream whatever the layers: sequence
/// numbers without a gap or a step back, timestamps always moving forward
/// (by at most a frame and a bit), and every change of layer at a keyframe.
fn assert_continuous(log: &[Got], who: &str) {
    for pair in log.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert_eq!(b.seq, a.seq + 1, "{who}: sequence numbers continue across layers: {a:?} then {b:?}");
        let step = b.ts.wrapping_sub(a.ts);
        assert!((1..=3000).contains(&step), "{who}: timestamps move forward ({step} ticks): {a:?} then {b:?}");
        if a.mark != b.mark {
            assert!(b.keyframe, "{who}: a layer switch only at a keyframe: {a:?} then {b:?}");
        }
    }
}

fn no_bwe() -> CoreConfig {
    CoreConfig { initial_estimate_bps: None, ..config() }
}

#[test]
fn simulcast_follows_the_estimate_and_the_size_asked_with_one_continuous_stream() {
    // Estimates are set by the test: the simulated network has no
    // congestion for str0m's estimator to find.
    let mut sim = Sim::with_config(no_bwe());
    let mut alice = sim.join_layered("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let bob = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    let carol = sim.join("carol", "127.0.0.4:1000", "127.0.0.4:2000");
    let room = sim.room.clone();
    let (alice_id, bob_id, carol_id) =
        (ParticipantId("alice".into()), ParticipantId("bob".into()), ParticipantId("carol".into()));
    // Carol shows Alice in a small tile.
    let small = crate::api::VideoPreference { max_height: Some(200), keep: false };
    sim.core.set_video_preference(sim.now, &room, &carol_id, &alice_id, small).unwrap();
    let mut n = 0;
    let mut run = |sim: &mut Sim, alice: &mut Layered, steps: u64| {
        for _ in 0..steps {
            sim.layered_step(alice, n);
            n += 1;
        }
    };
    run(&mut sim, &mut alice, 150);
    // No estimate yet: Bob, who asked for nothing, gets the top layer.
    let log = sim.video_log(bob, "alice");
    assert!(log.len() > 100, "bob receives alice's video ({})", log.len());
    assert_eq!(log.last().map(|g| g.mark), Some(3), "the top layer: {:?}", runs(&log, 0));
    assert!(sim.core.counters.peer_faults == 0);

    // Bob's link degrades: 300 kbit/s, less the audio reserve, leaves room
    // for the low layer only.
    let before = sim.video_log(bob, "alice").len();
    let now = sim.now;
    sim.core.inject_estimate(now, &room, &bob_id, 300_000);
    run(&mut sim, &mut alice, 50);
    let log = sim.video_log(bob, "alice");
    assert_eq!(runs(&log, before - 1), vec![3, 1], "bob went down to the low layer once");
    let switch = log[before..].iter().position(|g| g.mark == 1).unwrap() + before;
    assert!(switch - before <= 3, "at the next keyframe, asked for at once ({} frames later)", switch - before);
    assert!(log[switch].keyframe);

    // It recovers: the top layer again.
    let before = log.len();
    let now = sim.now;
    sim.core.inject_estimate(now, &room, &bob_id, 3_000_000);
    run(&mut sim, &mut alice, 50);
    let log = sim.video_log(bob, "alice");
    // (From the last packet before: the switch may come with the first
    // packet after, as the publisher's layers leave in any order.)
    assert_eq!(runs(&log, before - 1), vec![1, 3], "bob went back up to the top layer");
    assert_continuous(&log, "bob");

    // Carol asked for a small picture: the low layer, whatever her estimate.
    let now = sim.now;
    sim.core.inject_estimate(now, &room, &carol_id, 10_000_000);
    run(&mut sim, &mut alice, 50);
    let log = sim.video_log(carol, "alice");
    assert!(log.len() > 200, "carol receives alice's video ({})", log.len());
    let settled = log.iter().position(|g| g.mark == 1).unwrap();
    assert_eq!(runs(&log, settled), vec![1], "carol only ever the low layer once it flowed");
    assert_continuous(&log, "carol");
    // Layers are asked for keyframes one by one, never all at once.
    let requests = &sim.clients[sim.people[alice.person].publish].layer_requests;
    assert!(requests.get(&Some(Rid::from("q"))).is_some_and(|n| *n >= 1), "{requests:?}");
    assert!(!requests.contains_key(&None), "no request without a layer: {requests:?}");

    // Alice's browser stops its top layer (its own estimate fell): Bob
    // drops to the middle one at its next keyframe.
    alice.sending[2] = false;
    let before = sim.video_log(bob, "alice").len();
    run(&mut sim, &mut alice, 100);
    let log = sim.video_log(bob, "alice");
    assert_eq!(runs(&log, before), vec![2], "the middle layer, the best left");
    assert_eq!(log[before].seq, log[before - 1].seq + 1, "the sequence continues over the silence");
    assert_continuous(&log[before..], "bob");
}

#[test]
fn under_a_poor_link_video_pauses_audio_flows_and_kept_video_stays() {
    let mut sim = Sim::with_config(no_bwe());
    let mut alice = sim.join_layered("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let bob = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    let room = sim.room.clone();
    let (alice_id, bob_id) = (ParticipantId("alice".into()), ParticipantId("bob".into()));
    let mut n = 0;
    let mut run = |sim: &mut Sim, alice: &mut Layered, steps: u64| {
        for _ in 0..steps {
            sim.layered_step(alice, n);
            n += 1;
        }
    };
    run(&mut sim, &mut alice, 100);
    let paused_events = |sim: &Sim| -> Vec<bool> {
        sim.people[bob]
            .events
            .iter()
            .filter_map(|e| match e {
                ParticipantEvent::VideoPaused { track, paused } if track.publisher.0 == "alice" => Some(*paused),
                _ => None,
            })
            .collect()
    };
    assert!(paused_events(&sim).is_empty());
    // 120 kbit/s: audio's reserve leaves less than the low layer's 80 and more.
    let now = sim.now;
    sim.core.inject_estimate(now, &room, &bob_id, 120_000);
    let (video_before, audio_before) = (sim.video_log(bob, "alice").len(), sim.subscriber(bob).rtp_by_mid.len());
    let audio_count = |sim: &Sim| -> u64 {
        let video = sim.video_log(bob, "alice").len() as u64;
        sim.subscriber(bob).rtp_by_mid.values().sum::<u64>() - video
    };
    let audio_at_pause = audio_count(&sim);
    run(&mut sim, &mut alice, 50);
    assert_eq!(paused_events(&sim), vec![true], "bob is told alice's video paused");
    assert!(sim.video_log(bob, "alice").len() <= video_before + 1, "no more video");
    assert!(audio_count(&sim) >= audio_at_pause + 45, "audio flows on");
    assert_eq!(sim.subscriber(bob).rtp_by_mid.len(), audio_before);

    // Bob's client keeps Alice (she leads the class): her low layer comes back.
    let keep = crate::api::VideoPreference { max_height: None, keep: true };
    sim.core.set_video_preference(sim.now, &room, &bob_id, &alice_id, keep).unwrap();
    let before = sim.video_log(bob, "alice").len();
    run(&mut sim, &mut alice, 50);
    let log = sim.video_log(bob, "alice");
    assert_eq!(paused_events(&sim), vec![true, false], "and told it flows again");
    assert_eq!(runs(&log, before), vec![1], "the low layer only");
    assert!(log[before].keyframe, "resumed at a keyframe");
    assert_eq!(log[before].seq, log[before - 1].seq + 1, "the sequence continues over the pause");
    assert_continuous(&log[before..], "bob");

    // Preferences are checked.
    let zero = crate::api::VideoPreference { max_height: Some(0), keep: false };
    assert_eq!(
        sim.core.set_video_preference(sim.now, &room, &bob_id, &alice_id, zero),
        Err(crate::api::SfuError::InvalidPreference)
    );
    let nobody = ParticipantId("nobody".into());
    assert_eq!(
        sim.core.set_video_preference(sim.now, &room, &bob_id, &nobody, keep),
        Err(crate::api::SfuError::ParticipantNotFound)
    );
}

#[test]
fn with_bandwidth_estimation_on_a_simulcast_subscriber_gets_estimates_and_video() {
    let mut sim = Sim::new();
    let mut alice = sim.join_layered("alice", "127.0.0.2:1000", "127.0.0.2:2000");
    let bob = sim.join("bob", "127.0.0.3:1000", "127.0.0.3:2000");
    for n in 0..200 {
        sim.layered_step(&mut alice, n);
    }
    let key = sim.core.participants.iter().find(|(_, p)| p.id.0 == "bob").and_then(|(_, p)| p.subscribe).unwrap();
    let super::Side::Subscribe(sub) = &sim.core.peers[key].side else { panic!("a subscribe peer") };
    assert!(sub.estimate_bps.is_some(), "str0m's estimator reported");
    let log = sim.video_log(bob, "alice");
    assert!(log.len() > 150, "bob receives alice's video through the pacer ({})", log.len());
    assert_continuous(&log, "bob");
}
