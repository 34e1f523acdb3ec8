//! What a peer's str0m events mean for the room: connections coming up,
//! tracks published and withdrawn, packets to forward, keyframe requests,
//! stats, and connections closing.

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::rtp::ExtensionValues;
use str0m::{Event, IceConnectionState};
use tracing::debug;

use super::forwarding::Packet;
use super::{Action, LayerIn, MediaCore, PeerIx, Side, stats};
use crate::api::{Connection, RemovedReason, TrackKind};

/// Most simulcast layers a track may have (browsers send up to three).
const MAX_LAYERS: usize = 4;

impl MediaCore {
    /// Handles one event of peer `key`, drained just now.
    pub(super) fn on_event(&mut self, now: Instant, key: PeerIx, event: Event) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        let pix = peer.participant;
        let Some(participant_serial) = self.participants.get(pix).map(|p| p.serial) else { return };
        let publish = matches!(peer.side, Side::Publish);
        match event {
            Event::Connected => {
                let connection = match &mut peer.side {
                    Side::Publish => Connection::Publish,
                    Side::Subscribe(sub) => {
                        sub.connected = true;
                        self.actions
                            .push_back(Action::SubscriberConnected { participant: pix, serial: participant_serial });
                        Connection::Subscribe
                    }
                };
                debug!(?connection, "connected");
                self.actions.push_back(Action::Connected { participant: pix, serial: participant_serial, connection });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Not fatal: the client may restart ICE. The silence timeout decides.
                debug!("ICE disconnected");
            }
            Event::MediaAdded(m) if publish => {
                if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                    let kind = match m.kind {
                        MediaKind::Audio => TrackKind::Audio,
                        MediaKind::Video => TrackKind::Video,
                    };
                    self.actions.push_back(Action::TrackPublished {
                        participant: pix,
                        serial: participant_serial,
                        mid: m.mid,
                        kind,
                    });
                }
            }
            Event::MediaChanged(m) if publish && !matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) => {
                self.actions.push_back(Action::TrackUnpublished {
                    participant: pix,
                    serial: participant_serial,
                    mid: m.mid,
                });
            }
            Event::RtpPacket(pkt) if publish => {
                let ssrc = pkt.header.ssrc;
                let Some((mid, rid)) = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid())) else {
                    return;
                };
                let in_pt = pkt.header.payload_type;
                let Some(params) = peer.rtc.codec_config().find(|p| p.pt() == in_pt || p.red() == Some(in_pt)).copied()
                else {
                    return;
                };
                let keyframe_interval = self.config.keyframe_interval;
                let p = &mut self.participants[pix];
                let Some(track) = p.tracks.iter().position(|t| t.mid == mid) else { return };
                let t = &mut p.tracks[track];
                let layer = match t.layers.iter().position(|l| l.rid == rid) {
                    Some(layer) => layer,
                    // A rid the offer did not list (a publisher offering no
                    // rids sends them anyway): it becomes a layer, above the rest.
                    None if rid.is_some() && t.layers.len() < MAX_LAYERS => {
                        t.layers.retain(|l| l.rid.is_some());
                        t.layers.push(LayerIn::new(rid, keyframe_interval));
                        t.layers.len() - 1
                    }
                    None => return,
                };
                let simulcast = t.simulcast();
                let l = &mut t.layers[layer];
                l.meter.record(now, pkt.payload.len());
                // Keyframes matter only where a subscriber may switch layers.
                let keyframe = simulcast
                    && match params.spec().codec {
                        Codec::Vp8 => crate::simulcast::vp8_keyframe(&pkt.payload),
                        Codec::H264 => crate::simulcast::h264_keyframe(&pkt.payload),
                        _ => None,
                    }
                    .inspect(|k| l.height = k.height.or(l.height))
                    .is_some();
                // Forward only what the subscriber's side can use: never the
                // publisher's mid/rid/twcc, which belong to its own session.
                let packet = Packet {
                    source_ssrc: *ssrc,
                    params,
                    in_pt,
                    seq_no: pkt.seq_no,
                    timestamp: pkt.header.timestamp,
                    marker: pkt.header.marker,
                    ext: ExtensionValues {
                        audio_level: pkt.header.ext_vals.audio_level,
                        voice_activity: pkt.header.ext_vals.voice_activity,
                        video_orientation: pkt.header.ext_vals.video_orientation,
                        ..Default::default()
                    },
                    payload: pkt.payload,
                    wallclock: pkt.timestamp,
                    video: params.spec().codec.is_video(),
                    simulcast,
                    layer,
                    keyframe,
                };
                self.forward(pix, track, &packet);
            }
            Event::KeyframeRequest(req) if !publish => {
                self.actions.push_back(Action::KeyframeWanted { peer: key, serial: peer.serial, sub_mid: req.mid });
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) if !publish => {
                self.on_estimate(key, estimate.as_u64());
            }
            Event::PeerStats(s) => stats::on_peer_stats(peer, &mut self.counters, s),
            Event::MediaIngressStats(s) => stats::on_ingress(peer, &mut self.counters, s),
            Event::MediaEgressStats(s) => stats::on_egress(peer, &mut self.counters, s),
            Event::Closed => {
                self.actions.push_back(Action::Remove {
                    participant: pix,
                    serial: participant_serial,
                    reason: RemovedReason::ConnectionFailed,
                });
            }
            _ => {}
        }
    }
}
