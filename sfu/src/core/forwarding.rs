//! The packet path: a publisher's RTP packet written into every subscriber
//! that receives its track, with each subscriber's own SSRC, payload type,
//! sequence numbers and timestamps; and keyframe requests relayed back to
//! publishers, throttled.
//!
//! Nothing here allocates: the fan-out table is read in place, the payload
//! is str0m's shared buffer, and written subscribers are only marked dirty,
//! to be drained once per batch of input.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};

use super::{Action, MediaCore, OutState, PartIx, PeerIx, Side, Timer};
use crate::api::TrackKind;
use crate::simulcast::Pick;

/// One packet from a publisher, as the subscribers' writers need it.
pub(super) struct Packet {
    pub source_ssrc: u32,
    pub params: PayloadParams,
    pub in_pt: Pt,
    pub seq_no: SeqNo,
    pub timestamp: u32,
    pub marker: bool,
    pub ext: ExtensionValues,
    pub payload: Arc<[u8]>,
    pub wallclock: Instant,
    pub video: bool,
    /// Simulcast: the packet's layer (its index in the track's layers), and
    /// whether it starts a keyframe, where a subscriber may switch to it.
    pub simulcast: bool,
    pub layer: usize,
    pub keyframe: bool,
}

/// Video RTP clock ticks per millisecond (90 kHz).
const VIDEO_TICKS_PER_MS: u128 = 90;

impl MediaCore {
    /// Writes `packet` of `publisher`'s track number `track` to every
    /// subscriber in its fan-out.
    pub(super) fn forward(&mut self, publisher: PartIx, track: usize, packet: &Packet) {
        let Some(p) = self.participants.get(publisher) else { return };
        let Some(t) = p.tracks.get(track) else { return };
        for fan in &t.fanout {
            let Some(peer) = self.peers.get_mut(fan.peer) else { continue };
            let Side::Subscribe(sub) = &mut peer.side else { continue };
            let Some(out) = sub.tracks.get_mut(fan.out) else { continue };
            let OutState::Open(out_mid) = out.state else { continue };
            if out.target == Pick::Paused {
                // A video paused for want of bandwidth, plain or simulcast
                // (audio is never paused: it is not in the allocation).
                continue;
            }
            if packet.simulcast && out.current != Some(packet.layer) {
                // Another layer than the one forwarded: only the chosen
                // layer, and only from a keyframe, can take over (the
                // subscriber's decoder has no reference frame of it).
                if out.target != Pick::Layer(packet.layer) || !packet.keyframe {
                    continue;
                }
                // The new layer's numbers continue the subscriber's: the
                // rewriter re-anchors on its SSRC, its timestamps moved on
                // by the time that really passed since the last packet.
                let ticks = out
                    .last_wallclock
                    .map_or(1, |at| packet.wallclock.saturating_duration_since(at).as_millis() * VIDEO_TICKS_PER_MS);
                out.seq.set_switch_advance(u32::try_from(ticks).unwrap_or(u32::MAX).max(1));
                out.current = Some(packet.layer);
            }
            let out_pt = match out.pt_map {
                Some((in_pt, out_pt)) if in_pt == packet.in_pt => out_pt,
                _ => {
                    let Some(local) = peer.rtc.codec_config().match_params(packet.params) else { continue };
                    let out_pt =
                        if packet.in_pt == packet.params.pt() { local.pt() } else { local.red().unwrap_or(local.pt()) };
                    out.pt_map = Some((packet.in_pt, out_pt));
                    out_pt
                }
            };
            let Some(rw) = out.seq.rewrite(packet.source_ssrc, *packet.seq_no, packet.timestamp) else { continue };
            out.last_wallclock = Some(packet.wallclock);
            let written = super::guarded(|| {
                let mut api = peer.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(out_mid, None) else { return false };
                tx.write_rtp(
                    RtpWrite::new(out_pt, rw.seq.into(), rw.timestamp, packet.wallclock, packet.payload.clone())
                        .marker(packet.marker)
                        .ext_vals(packet.ext.clone())
                        .nackable(packet.video),
                );
                true
            });
            match written {
                Ok(true) => {
                    self.counters.packets_forwarded += 1;
                    self.counters.bytes_forwarded += packet.payload.len() as u64;
                    if !peer.dirty {
                        peer.dirty = true;
                        self.dirty.push(fan.peer);
                    }
                }
                Ok(false) => {}
                Err(super::Fault) => {
                    // The subscriber's connection faulted; the publisher and
                    // everyone else carry on.
                    let pix = peer.participant;
                    self.counters.peer_faults += 1;
                    if let Some(s) = self.participants.get(pix) {
                        self.actions.push_back(Action::Remove {
                            participant: pix,
                            serial: s.serial,
                            reason: crate::api::RemovedReason::Fault,
                        });
                    }
                }
            }
        }
    }

    /// A subscriber asked (PLI/FIR) for a keyframe on one of its tracks.
    pub(super) fn keyframe_wanted(&mut self, now: Instant, peer: PeerIx, serial: u64, sub_mid: Mid) {
        let Some(subscriber) = self.peers.get(peer).filter(|p| p.serial == serial) else { return };
        let Side::Subscribe(sub) = &subscriber.side else { return };
        let Some((_, t)) = sub.tracks.iter().find(|(_, t)| t.state == OutState::Open(sub_mid)) else { return };
        if !self.is(t.source, t.source_serial) {
            return;
        }
        // The layer the subscriber decodes now, or the one it waits for.
        let layer = match (t.current, t.target) {
            (Some(layer), _) | (None, Pick::Layer(layer)) => layer,
            (None, Pick::Paused) => return,
        };
        let (source, mid) = (t.source, t.source_mid);
        self.keyframe_from(now, source, mid, layer);
    }

    /// Throttled keyframe request to one publisher track: at once, or, inside
    /// the throttle window, deferred to its end (never lost). Audio has no
    /// keyframes: a PLI for an audio stream is noise the publisher may
    /// mishandle (some stacks deliver a compound RTCP packet to the first
    /// SSRC's sender only, so a video PLI behind an audio one was lost).
    /// For a simulcast track, the request goes to one `layer` (each has its
    /// own throttle); a plain track has layer 0 only.
    pub(super) fn keyframe_from(&mut self, now: Instant, publisher: PartIx, mid: Mid, layer: usize) {
        let Some(p) = self.participants.get_mut(publisher) else { return };
        let (publish, serial) = (p.publish, p.serial);
        let Some((index, t)) = p.tracks.iter_mut().enumerate().find(|(_, t)| t.mid == mid) else { return };
        if t.kind != TrackKind::Video {
            return;
        }
        let Some(l) = t.layers.get_mut(layer) else { return };
        if l.keyframes.request(now) {
            let rid = l.rid;
            if let Some(key) = publish {
                self.send_keyframe_request(now, key, mid, rid);
            }
        } else if let Some(at) = l.keyframes.deferred_until() {
            self.timers.set(at, Timer::Keyframe(publisher, serial, index, layer));
        }
    }

    pub(super) fn send_keyframe_request(&mut self, now: Instant, key: PeerIx, mid: Mid, rid: Option<Rid>) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        let sent = super::guarded(|| match peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            Some(rx) => {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                true
            }
            None => false,
        });
        match sent {
            Ok(true) => self.counters.keyframe_requests += 1,
            Ok(false) => {}
            Err(super::Fault) => {
                let pix = peer.participant;
                self.fault(now, pix);
                return;
            }
        }
        self.drain(now, key);
    }
}
