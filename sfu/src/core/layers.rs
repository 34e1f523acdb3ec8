//! Which simulcast layer each subscriber receives: the subscriber's
//! bandwidth estimate and video preferences in, one [`Pick`] per simulcast
//! track out (applied by the packet path at the next keyframe), keyframe
//! requests for layers newly chosen, and `VideoPaused` events when a video
//! stops or resumes for lack of bandwidth.
//!
//! Plain (single-layer) videos flow as they come in rooms without an
//! estimate. In rooms with one they are one-layer demands like the rest:
//! a subscriber whose estimate cannot carry them all keeps its audio and
//! pauses videos, rather than letting the pacer queue grow without end
//! (a class of thirteen single-layer cameras at 1.2 Mbit/s queued seconds
//! of video and lost 60% of it; BENCHMARKS.md, "A class of thirteen").

use std::time::Instant;

use str0m::bwe::Bitrate;

use super::{Action, CoreEvent, MediaCore, OutState, PartIx, Peer, PeerIx, Side};
use crate::api::{ParticipantEvent, ParticipantId, RoomId, SfuError, SubscribedTrack, TrackKind, VideoPreference};
use crate::simulcast::{LayerSpec, NOMINAL_BPS, Pick, TrackDemand, allocate};

/// What an audio track is assumed to cost (Opus with RTP/SRTP overhead),
/// kept out of the video budget so audio is never starved.
const AUDIO_RESERVE_BPS: u64 = 50_000;

/// The share of a subscriber's estimate the chosen layers may fill.
const ESTIMATE_USED_PERCENT: u64 = 85;

/// One subscriber track as the allocation sees it.
struct Demand {
    out: usize,
    layers: Vec<LayerSpec>,
    max_height: Option<u16>,
    keep: bool,
    current: Option<usize>,
    /// A single-layer video (forwarded as it comes while not paused).
    plain: bool,
}

impl MediaCore {
    /// A new bandwidth estimate towards a subscriber: layers are chosen
    /// again once the peer has been drained.
    pub(super) fn on_estimate(&mut self, key: PeerIx, bps: u64) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        let Side::Subscribe(sub) = &mut peer.side else { return };
        sub.estimate_bps = Some(bps);
        let participant = peer.participant;
        if let Some(p) = self.participants.get(participant) {
            self.actions.push_back(Action::Reallocate { participant, serial: p.serial });
        }
    }

    /// How `subscriber` wants `publisher`'s video from now on.
    pub(crate) fn set_video_preference(
        &mut self,
        now: Instant,
        room: &RoomId,
        subscriber: &ParticipantId,
        publisher: &ParticipantId,
        preference: VideoPreference,
    ) -> Result<(), SfuError> {
        if preference.max_height == Some(0) {
            return Err(SfuError::InvalidPreference);
        }
        let pix = self.find(room, subscriber)?;
        self.find(room, publisher)?;
        let room_ix = self.participants[pix].room;
        let mut prefs = std::mem::take(&mut self.participants[pix].video_prefs);
        // Entries for people who left go, so the list stays within the room's size.
        prefs.retain(|(id, _)| {
            id != publisher && self.rooms[room_ix].participants.iter().any(|m| self.participants[*m].id == *id)
        });
        prefs.push((publisher.clone(), preference));
        self.participants[pix].video_prefs = prefs;
        self.reallocate(now, pix, true);
        self.settle(now);
        Ok(())
    }

    /// Chooses layers again for every subscriber (on the periodic tick:
    /// layers start, stop and change rate between estimates).
    pub(super) fn reallocate_all(&mut self, now: Instant) {
        // By slot, not by a collected list: this runs twice a second and
        // allocates nothing when no one sends simulcast.
        for pix in 0..self.participants.capacity() {
            if self.participants.get(pix).is_some_and(|p| p.subscribe.is_some()) {
                self.reallocate(now, pix, true);
            }
        }
    }

    /// Chooses a layer for each simulcast track `subscriber` receives. With
    /// `request_keyframes`, a chosen layer not yet forwarded gets a keyframe
    /// request (throttled per layer), since the switch waits for one.
    pub(super) fn reallocate(&mut self, now: Instant, subscriber: PartIx, request_keyframes: bool) {
        let Some(p) = self.participants.get(subscriber) else { return };
        let (serial, prefs) = (p.serial, &p.video_prefs);
        let Some(key) = p.subscribe else { return };
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get(key) else { return };
        let bwe = self.rooms.get(p.room).is_some_and(|r| r.bwe);
        let mut reserve = 0u64;
        let mut demands = Vec::new();
        for (out, t) in sub.tracks.iter() {
            if !matches!(t.state, OutState::Open(_) | OutState::Negotiating(_)) {
                continue;
            }
            let Some(source) = self.participants.get(t.source).filter(|s| s.serial == t.source_serial) else {
                continue;
            };
            let Some(track) = source.tracks.iter().find(|x| x.mid == t.source_mid) else { continue };
            if t.kind == TrackKind::Audio {
                reserve += AUDIO_RESERVE_BPS;
                continue;
            }
            let plain = !track.simulcast();
            if plain && !bwe {
                reserve += track.layers.first().and_then(|l| l.meter.rate_bps()).unwrap_or(0);
                continue;
            }
            let layers = track
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerSpec {
                    active: l.meter.active(now),
                    bitrate_bps: l.meter.rate_bps().unwrap_or(NOMINAL_BPS[i.min(NOMINAL_BPS.len() - 1)]),
                    height: l.height,
                })
                .collect();
            let preference =
                prefs.iter().find(|(id, _)| id.0 == t.stream_id).map(|(_, pref)| *pref).unwrap_or_default();
            demands.push(Demand {
                out,
                layers,
                max_height: preference.max_height,
                keep: preference.keep,
                current: t.current,
                plain,
            });
        }
        if demands.is_empty() {
            return;
        }
        // Headroom: the layers' meters are averages, and keyframes come in
        // bursts; filling the estimate to the brim keeps the pacer's queue
        // (and so the video's delay) from ever draining.
        let budget = sub.estimate_bps.map(|e| (e * ESTIMATE_USED_PERCENT / 100).saturating_sub(reserve));
        let views: Vec<TrackDemand<'_>> = demands
            .iter()
            .map(|d| TrackDemand { layers: &d.layers, max_height: d.max_height, keep: d.keep, current: d.current })
            .collect();
        let picks = allocate(budget, &views);
        // What the chosen layers cost, and what the best ones would: the
        // estimator probes towards the latter.
        let chosen: u64 = picks
            .iter()
            .zip(&demands)
            .filter_map(|(pick, d)| match pick {
                Pick::Layer(l) => d.layers.get(*l).map(|x| x.bitrate_bps),
                Pick::Paused => None,
            })
            .sum();
        let best: u64 = allocate(None, &views)
            .iter()
            .zip(&demands)
            .filter_map(|(pick, d)| match pick {
                Pick::Layer(l) => d.layers.get(*l).map(|x| x.bitrate_bps),
                Pick::Paused => None,
            })
            .sum();

        let Some(peer) = self.peers.get_mut(key) else { return };
        let Side::Subscribe(sub) = &mut peer.side else { return };
        let connected = sub.connected;
        let mut keyframes = Vec::new();
        for (pick, d) in picks.into_iter().zip(&demands) {
            let Some(t) = sub.tracks.get_mut(d.out) else { continue };
            t.target = pick;
            if pick == Pick::Paused {
                t.current = None;
            }
            let OutState::Open(mid) = t.state else { continue };
            let paused = pick == Pick::Paused;
            if paused != t.told_paused {
                t.told_paused = paused;
                let track = SubscribedTrack {
                    publisher: ParticipantId(t.stream_id.clone()),
                    kind: t.kind,
                    mid: mid.to_string(),
                    track_id: t.track_id.clone(),
                };
                self.events.push(CoreEvent::To(serial, ParticipantEvent::VideoPaused { track, paused }));
            }
            if let Pick::Layer(layer) = pick
                && t.current != Some(layer)
                && request_keyframes
                && connected
            {
                keyframes.push((t.source, t.source_mid, layer));
            }
            // A plain video flows again at once (its next packets); the
            // keyframe asked for above lets the subscriber decode it.
            if d.plain && pick == Pick::Layer(0) {
                t.current = Some(0);
            }
        }
        if bwe {
            let (minimum, desired) = (Bitrate::from(reserve + chosen), Bitrate::from(reserve + best));
            if super::guarded(|| peer.rtc.bwe().set_bitrate(minimum, desired)).is_ok() && !peer.dirty {
                // The pacer's timers moved: the peer is drained with the rest.
                peer.dirty = true;
                self.dirty.push(key);
            }
        }
        for (source, mid, layer) in keyframes {
            self.keyframe_from(now, source, mid, layer);
        }
    }

    /// Sets a subscriber's estimate as str0m's estimator would (tests whose
    /// simulated network cannot make the estimate move).
    #[cfg(test)]
    pub(super) fn inject_estimate(&mut self, now: Instant, room: &RoomId, subscriber: &ParticipantId, bps: u64) {
        let Ok(pix) = self.find(room, subscriber) else { return };
        let Some(key) = self.participants[pix].subscribe else { return };
        self.on_estimate(key, bps);
        self.settle(now);
    }
}
