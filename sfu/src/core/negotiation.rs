//! Who receives what: each subscriber's subscribe connection, its track
//! states and offers, and the fan-out tables the packet path reads.
//!
//! A subscriber has at most one offer outstanding. Tracks to open or stop
//! wait in `ToOpen`/`ToStop` until the next offer; an answer moves them to
//! `Open` (packets flow) or drops them. A track leaving is made inactive,
//! not stopped: a browser answering an offer whose every section is stopped
//! leaves out its DTLS fingerprint, which would end the whole session.
//! Track ids carry the publisher's connection generation, so a publisher
//! that reloads never repeats an `msid` an inactive section still lists.

use std::time::Instant;

use str0m::media::{Direction, MediaKind, Mid, Rids};

use super::{
    Action, CoreEvent, Fan, LayerIn, MediaCore, OutState, PartIx, Peer, Side, Subscription, TrackIn, TrackOut,
};
use crate::api::{ParticipantEvent, ParticipantId, SubscribedTrack, TrackKind};
use crate::forward::SeqRewriter;
use crate::simulcast::Pick;

impl MediaCore {
    /// A publisher's connection now carries a new track: every other
    /// participant of the room is offered it.
    pub(super) fn track_published(&mut self, now: Instant, publisher: PartIx, mid: Mid, kind: TrackKind) {
        let keyframe_interval = self.config.keyframe_interval;
        // Simulcast layers as the publisher's offer lists them (low to high,
        // as a browser's sendEncodings are given); a plain track has one.
        let rids: Vec<_> = self.participants[publisher]
            .publish
            .and_then(|key| self.peers.get(key))
            .and_then(|peer| match peer.rtc.media(mid)?.rids_rx() {
                Rids::Specific(rids) if kind == TrackKind::Video => Some(rids.iter().map(|r| Some(*r)).collect()),
                _ => None,
            })
            .unwrap_or_else(|| vec![None]);
        let p = &mut self.participants[publisher];
        if p.tracks.iter().any(|t| t.mid == mid) {
            return;
        }
        let track_id = format!("{}-{}-{}", p.id, p.generation, mid);
        p.tracks.push(TrackIn {
            mid,
            kind,
            track_id,
            layers: rids.into_iter().map(|rid| LayerIn::new(rid, keyframe_interval)).collect(),
            fanout: Vec::new(),
        });
        let room = p.room;
        let others: Vec<PartIx> = self.rooms[room].participants.iter().copied().filter(|x| *x != publisher).collect();
        for other in others {
            self.add_track_out(now, other, publisher, mid);
            let serial = self.participants[other].serial;
            self.actions.push_back(Action::Negotiate { participant: other, serial });
        }
    }

    /// A publisher's track is gone: it is stopped in every subscription
    /// (each subscriber told `TrackRemoved`) and leaves the fan-out.
    pub(super) fn track_unpublished(&mut self, publisher: PartIx, mid: Mid) {
        let Some(p) = self.participants.get_mut(publisher) else { return };
        p.tracks.retain(|t| t.mid != mid);
        let (room, serial) = (p.room, p.serial);
        let others: Vec<PartIx> = self.rooms[room].participants.iter().copied().filter(|x| *x != publisher).collect();
        for other in others {
            let (sub_key, other_serial) = (self.participants[other].subscribe, self.participants[other].serial);
            let Some(Peer { side: Side::Subscribe(sub), .. }) = sub_key.and_then(|k| self.peers.get_mut(k)) else {
                continue;
            };
            let mut removed = Vec::new();
            let mut forget = Vec::new();
            for (k, t) in sub.tracks.iter_mut() {
                if t.source != publisher || t.source_serial != serial || t.source_mid != mid {
                    continue;
                }
                match t.state {
                    OutState::ToOpen => forget.push(k),
                    OutState::Negotiating(m) | OutState::Open(m) => {
                        t.state = OutState::ToStop(m);
                        removed.push(SubscribedTrack {
                            publisher: ParticipantId(t.stream_id.clone()),
                            kind: t.kind,
                            mid: m.to_string(),
                            track_id: t.track_id.clone(),
                        });
                    }
                    OutState::ToStop(_) | OutState::Stopping(_) => {}
                }
            }
            for k in forget {
                sub.tracks.remove(k);
            }
            for t in removed {
                self.events.push(CoreEvent::To(other_serial, ParticipantEvent::TrackRemoved(t)));
            }
            self.actions.push_back(Action::Negotiate { participant: other, serial: other_serial });
        }
        self.rebuild_fanouts(room);
    }

    /// Queues every track already published in the room for a subscriber.
    pub(super) fn offer_existing_tracks(&mut self, now: Instant, subscriber: PartIx) {
        let room = self.participants[subscriber].room;
        let published: Vec<(PartIx, Mid)> = self.rooms[room]
            .participants
            .iter()
            .copied()
            .filter(|x| *x != subscriber)
            .flat_map(|x| self.participants[x].tracks.iter().map(move |t| (x, t.mid)))
            .collect();
        for (publisher, mid) in published {
            self.add_track_out(now, subscriber, publisher, mid);
        }
    }

    /// Adds a publisher's track to a subscriber's subscription (creating the
    /// subscribe connection on first need), to be offered next time.
    fn add_track_out(&mut self, now: Instant, subscriber: PartIx, publisher: PartIx, mid: Mid) {
        let initial_seq = (self.next_random() % 30_000) as u16 + 1;
        let Some(source) = self.participants.get(publisher) else { return };
        let Some(track) = source.tracks.iter().find(|t| t.mid == mid) else { return };
        let out = TrackOut {
            source: publisher,
            source_serial: source.serial,
            source_mid: mid,
            kind: track.kind,
            stream_id: source.id.0.clone(),
            track_id: track.track_id.clone(),
            state: OutState::ToOpen,
            seq: SeqRewriter::new(initial_seq),
            pt_map: None,
            target: Pick::Layer(0),
            current: None,
            told_paused: false,
            last_wallclock: None,
        };
        let key = match self.participants[subscriber].subscribe {
            Some(k) => k,
            None => {
                let k = self.new_peer(now, subscriber, Side::Subscribe(Subscription::default()));
                self.participants[subscriber].subscribe = Some(k);
                k
            }
        };
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get_mut(key) else { return };
        let already = sub.tracks.iter().any(|(_, t)| {
            t.source == out.source
                && t.source_serial == out.source_serial
                && t.source_mid == mid
                && !matches!(t.state, OutState::ToStop(_) | OutState::Stopping(_))
        });
        if !already {
            sub.tracks.insert(out);
        }
    }

    /// Sends a subscribe offer if something changed and none is pending.
    pub(super) fn negotiate(&mut self, now: Instant, participant: PartIx) {
        let (key, serial) = (self.participants[participant].subscribe, self.participants[participant].serial);
        let Some(key) = key else { return };
        let Some(peer) = self.peers.get_mut(key) else { return };
        let Side::Subscribe(sub) = &mut peer.side else { return };
        if sub.pending.is_some() {
            return;
        }
        let wants = sub.restart_ice
            || sub.tracks.iter().any(|(_, t)| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)));
        if !wants {
            return;
        }
        let restart = std::mem::take(&mut sub.restart_ice);
        let applied = super::guarded(|| {
            let mut api = peer.rtc.sdp_api();
            let mut added = Vec::new();
            for (_, t) in sub.tracks.iter_mut() {
                match t.state {
                    OutState::ToOpen => {
                        let kind = match t.kind {
                            TrackKind::Audio => MediaKind::Audio,
                            TrackKind::Video => MediaKind::Video,
                        };
                        let mid = api.add_media(
                            kind,
                            Direction::SendOnly,
                            Some(t.stream_id.clone()),
                            Some(t.track_id.clone()),
                            None,
                        );
                        t.state = OutState::Negotiating(mid);
                        added.push(SubscribedTrack {
                            publisher: ParticipantId(t.stream_id.clone()),
                            kind: t.kind,
                            mid: mid.to_string(),
                            track_id: t.track_id.clone(),
                        });
                    }
                    OutState::ToStop(mid) => {
                        api.set_direction(mid, Direction::Inactive);
                        t.state = OutState::Stopping(mid);
                    }
                    _ => {}
                }
            }
            if restart {
                api.ice_restart(true);
            }
            (api.apply(), added)
        });
        let (applied, added) = match applied {
            Ok(result) => result,
            Err(super::Fault) => {
                self.fault(now, participant);
                return;
            }
        };
        match applied {
            Some((offer, pending)) => {
                sub.pending = Some(pending);
                for t in added {
                    self.events.push(CoreEvent::To(serial, ParticipantEvent::TrackAdded(t)));
                }
                let sdp = self.outgoing_sdp(&offer.to_sdp_string());
                self.events.push(CoreEvent::To(serial, ParticipantEvent::SubscribeOffer { sdp }));
            }
            None => {
                // Nothing to negotiate after all (e.g. only stops of never-negotiated lines).
                let stopping: Vec<usize> = sub
                    .tracks
                    .iter()
                    .filter(|(_, t)| matches!(t.state, OutState::Stopping(_)))
                    .map(|(k, _)| k)
                    .collect();
                for k in stopping {
                    sub.tracks.remove(k);
                }
            }
        }
        self.register_ufrag(key);
        self.drain(now, key);
    }

    /// Rebuilds the fan-out table of every track published in a room from
    /// the subscriptions' open tracks. Runs on negotiation, never per packet.
    pub(super) fn rebuild_fanouts(&mut self, room: usize) {
        let Some(r) = self.rooms.get(room) else { return };
        let members = r.participants.clone();
        for &publisher in &members {
            let serial = self.participants[publisher].serial;
            let mut tables: Vec<(Mid, Vec<Fan>)> = Vec::new();
            for track in &self.participants[publisher].tracks {
                let mut fans = Vec::new();
                for &subscriber in members.iter().filter(|s| **s != publisher) {
                    let Some(key) = self.participants[subscriber].subscribe else { continue };
                    let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get(key) else { continue };
                    for (out, t) in sub.tracks.iter() {
                        if t.source == publisher
                            && t.source_serial == serial
                            && t.source_mid == track.mid
                            && matches!(t.state, OutState::Open(_))
                        {
                            fans.push(Fan { peer: key, out });
                        }
                    }
                }
                tables.push((track.mid, fans));
            }
            for (mid, fans) in tables {
                if let Some(t) = self.participants[publisher].tracks.iter_mut().find(|t| t.mid == mid) {
                    t.fanout = fans;
                }
            }
        }
    }

    /// The publisher tracks open in a subscriber's subscription, with the
    /// layer chosen for it (paused videos left out).
    pub(super) fn open_sources_of(&self, subscriber: PartIx) -> Vec<(PartIx, Mid, usize)> {
        let Some(key) = self.participants.get(subscriber).and_then(|p| p.subscribe) else { return Vec::new() };
        let Some(Peer { side: Side::Subscribe(sub), .. }) = self.peers.get(key) else { return Vec::new() };
        sub.tracks
            .iter()
            .filter(|(_, t)| matches!(t.state, OutState::Open(_)) && self.is(t.source, t.source_serial))
            .filter_map(|(_, t)| match t.target {
                Pick::Layer(layer) => Some((t.source, t.source_mid, layer)),
                Pick::Paused => None,
            })
            .collect()
    }
}

/// After an answer: negotiated tracks open (their keys returned, for
/// keyframe requests), stopped ones are dropped.
pub(super) fn settle_answered(sub: &mut Subscription) -> Vec<usize> {
    let mut opened = Vec::new();
    let mut dropped = Vec::new();
    for (k, t) in sub.tracks.iter_mut() {
        match t.state {
            OutState::Negotiating(mid) => {
                t.state = OutState::Open(mid);
                opened.push(k);
            }
            OutState::Stopping(_) => dropped.push(k),
            _ => {}
        }
    }
    for k in dropped {
        sub.tracks.remove(k);
    }
    opened
}
