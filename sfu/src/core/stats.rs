//! Media statistics: str0m's per-peer and per-track reports, kept per peer
//! and summed per participant; and the worker's loss and RTT histograms.

use std::collections::HashMap;
use std::time::Duration;

use str0m::media::{MediaKind, Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::Peer;
use crate::api::{LOSS_BUCKETS, MediaPath, ParticipantId, ParticipantStats, RTT_BUCKETS_SECS, RoomId, WorkerStats};

/// The latest reports of one peer.
#[derive(Default)]
pub(super) struct PeerMediaStats {
    /// By media section and simulcast layer (each layer reports apart).
    ingress: HashMap<(Mid, Option<Rid>), IngressSample>,
    egress: HashMap<Mid, EgressSample>,
    rtt: Option<Duration>,
    /// The selected candidate pair: its protocol and the remote address.
    selected: Option<(str0m::net::Protocol, std::net::SocketAddr)>,
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

pub(super) fn on_peer_stats(peer: &mut Peer, counters: &mut WorkerStats, s: PeerStats) {
    if let Some(pair) = &s.selected_candidate_pair {
        peer.stats.selected = Some((pair.protocol, pair.remote.addr));
    }
    if let Some(rtt) = s.rtt {
        peer.stats.rtt = Some(rtt);
        counters.rtt.observe(&RTT_BUCKETS_SECS, rtt.as_secs_f64());
    }
}

pub(super) fn on_ingress(peer: &mut Peer, counters: &mut WorkerStats, s: MediaIngressStats) {
    if let Some(loss) = s.loss {
        counters.loss.observe(&LOSS_BUCKETS, f64::from(loss));
    }
    let video = peer.rtc.media(s.mid).is_some_and(|m| m.kind() == MediaKind::Video);
    peer.stats.ingress.insert(
        (s.mid, s.rid),
        IngressSample { packets: s.packets, bytes: s.bytes, loss: s.loss, jitter: s.jitter, video },
    );
}

pub(super) fn on_egress(peer: &mut Peer, counters: &mut WorkerStats, s: MediaEgressStats) {
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

/// One participant's figures, from its publish and subscribe peers.
pub(super) fn of_participant(
    room: &RoomId,
    participant: &ParticipantId,
    publish: Option<&Peer>,
    subscribe: Option<&Peer>,
    relay_ips: &[std::net::IpAddr],
) -> ParticipantStats {
    let mut s =
        ParticipantStats { room: Some(room.clone()), participant: Some(participant.clone()), ..Default::default() };
    let max = |a: Option<f32>, b: Option<f32>| match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    if let Some(peer) = publish {
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
    if let Some(peer) = subscribe {
        for e in peer.stats.egress.values() {
            s.packets_out += e.packets;
            s.bytes_out += e.bytes;
            s.nacks_received += e.nacks;
            s.keyframe_requests_received += e.keyframe_requests;
            s.loss_out = max(s.loss_out, e.loss);
            s.rtt = s.rtt.or(e.rtt).or(peer.stats.rtt);
        }
    }
    let selected = publish.and_then(|p| p.stats.selected).or_else(|| subscribe.and_then(|p| p.stats.selected));
    s.path = selected.map(|(protocol, remote)| path_of(protocol, remote, relay_ips));
    s
}

/// A relay is told by where the media comes from: the TURN server's
/// address. Anything else is direct, over the pair's protocol.
fn path_of(protocol: str0m::net::Protocol, remote: std::net::SocketAddr, relay_ips: &[std::net::IpAddr]) -> MediaPath {
    if relay_ips.contains(&remote.ip()) {
        MediaPath::Relay
    } else if protocol == str0m::net::Protocol::Udp {
        MediaPath::Udp
    } else {
        MediaPath::Tcp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_by_protocol_and_source() {
        let turn: std::net::IpAddr = "198.51.100.9".parse().unwrap();
        let from = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(path_of(str0m::net::Protocol::Udp, from("192.0.2.1:5000"), &[turn]), MediaPath::Udp);
        assert_eq!(path_of(str0m::net::Protocol::Tcp, from("192.0.2.1:5000"), &[turn]), MediaPath::Tcp);
        assert_eq!(path_of(str0m::net::Protocol::Udp, from("198.51.100.9:49200"), &[turn]), MediaPath::Relay);
    }
}
