//! Live rooms as signaling sees them: who holds a seat, which WebSocket
//! currently speaks for each seat, and the resume secrets.
//!
//! A *seat* outlives its WebSocket: when the socket drops, the seat stays
//! for the resume grace period, with its media untouched, and a `resume`
//! re-attaches a new socket to it. Every seat attachment has an `epoch` so
//! that a stale socket closing late cannot detach a newer one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use teleconsult_protocol::{ParticipantInfo, Role, ServerMessage, TrackKind};
use tokio::sync::mpsc;

/// What a session task is told to do with its socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Send this message.
    Message(ServerMessage),
    /// Close the socket with this WebSocket close code and reason.
    Close(u16, &'static str),
}

/// Sender half of a session's outbound queue.
pub type Outbox = mpsc::Sender<Outbound>;

/// One seat in a room.
#[derive(Debug)]
pub struct Seat {
    /// What other participants see.
    pub info: ParticipantInfo,
    /// Subject of the join token, for audit (never shown).
    pub subject: String,
    /// The session currently attached, if any.
    pub outbox: Option<Outbox>,
    /// Attachment counter; bumped on every resume.
    pub epoch: u64,
    /// Current resume secret.
    pub resume_token: String,
    /// When the socket dropped, if it has.
    pub detached_at: Option<Instant>,
    /// Whether the sfu holds media connections for this seat.
    pub in_sfu: bool,
    /// The last subscribe offer not yet answered, resent on resume.
    pub pending_subscribe_offer: Option<String>,
    /// When the seat was taken (for waiting times).
    pub arrived_at: Instant,
}

/// Why a seat could not be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeatError {
    /// The room holds its maximum number of seats.
    #[error("the room is full")]
    RoomFull,
    /// Unknown or expired resume token.
    #[error("unknown resume token")]
    UnknownResumeToken,
    /// No such participant in the room.
    #[error("no such participant")]
    NotFound,
    /// The participant is not waiting.
    #[error("the participant is not waiting")]
    NotWaiting,
}

/// What a resume gives back: the seat, its new resume token, its info, the
/// others in the call, and a subscribe offer still waiting for an answer.
pub type Resumed = (SeatRef, String, ParticipantInfo, Vec<ParticipantInfo>, Option<String>);

/// A seat reference: room id, participant id and attachment epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatRef {
    /// Room id.
    pub room: String,
    /// Participant id.
    pub participant: String,
    /// Attachment epoch this session holds.
    pub epoch: u64,
}

/// All live rooms of this node.
#[derive(Debug, Default)]
pub struct RoomRegistry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<String, BTreeMap<String, Seat>>,
    /// resume token → (room, participant)
    resume: HashMap<String, (String, String)>,
}

impl RoomRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock must not take signaling down with it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a seat. Returns the seat reference, the resume token, and the
    /// other participants (for `joined`).
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        room: &str,
        participant_id: String,
        role: Role,
        display_name: String,
        subject: String,
        capacity: usize,
        admitted: bool,
        outbox: Outbox,
    ) -> Result<(SeatRef, String, Vec<ParticipantInfo>), SeatError> {
        let mut inner = self.lock();
        let seats = inner.rooms.entry(room.to_string()).or_default();
        if seats.len() >= capacity {
            if seats.is_empty() {
                inner.rooms.remove(room);
            }
            return Err(SeatError::RoomFull);
        }
        let others: Vec<ParticipantInfo> = seats.values().filter(|s| s.info.admitted).map(|s| s.info.clone()).collect();
        let resume_token = crate::secret::random_token();
        seats.insert(
            participant_id.clone(),
            Seat {
                info: ParticipantInfo {
                    participant_id: participant_id.clone(),
                    role,
                    display_name,
                    audio_muted: false,
                    video_muted: false,
                    admitted,
                },
                subject,
                outbox: Some(outbox),
                epoch: 1,
                resume_token: resume_token.clone(),
                detached_at: None,
                in_sfu: false,
                pending_subscribe_offer: None,
                arrived_at: Instant::now(),
            },
        );
        inner.resume.insert(resume_token.clone(), (room.to_string(), participant_id.clone()));
        Ok((SeatRef { room: room.to_string(), participant: participant_id, epoch: 1 }, resume_token, others))
    }

    /// Re-attaches a session to the seat a resume token names, rotating the
    /// token. The previous session, if still attached, is told to close.
    pub fn resume(&self, resume_token: &str, outbox: Outbox) -> Result<Resumed, SeatError> {
        let mut inner = self.lock();
        let (room, participant) = inner.resume.remove(resume_token).ok_or(SeatError::UnknownResumeToken)?;
        let new_token = crate::secret::random_token();
        let Some(seats) = inner.rooms.get_mut(&room) else { return Err(SeatError::UnknownResumeToken) };
        let others: Vec<ParticipantInfo> = seats
            .iter()
            .filter(|(id, s)| **id != participant && s.info.admitted)
            .map(|(_, s)| s.info.clone())
            .collect();
        let Some(seat) = seats.get_mut(&participant) else { return Err(SeatError::UnknownResumeToken) };
        if let Some(old) = seat.outbox.replace(outbox) {
            let _ = old.try_send(Outbound::Close(4000, "resumed elsewhere"));
        }
        seat.epoch += 1;
        seat.detached_at = None;
        seat.resume_token = new_token.clone();
        let me = seat.info.clone();
        let pending = seat.pending_subscribe_offer.clone();
        let seat_ref = SeatRef { room: room.clone(), participant: participant.clone(), epoch: seat.epoch };
        inner.resume.insert(new_token.clone(), (room, participant));
        Ok((seat_ref, new_token, me, others, pending))
    }

    /// Marks the seat detached if `seat` still holds it. Returns true if it did.
    pub fn detach(&self, seat: &SeatRef, now: Instant) -> bool {
        let mut inner = self.lock();
        let Some(s) = inner.rooms.get_mut(&seat.room).and_then(|r| r.get_mut(&seat.participant)) else {
            return false;
        };
        if s.epoch != seat.epoch {
            return false;
        }
        s.outbox = None;
        s.detached_at = Some(now);
        true
    }

    /// Whether the seat is still detached at the same epoch (grace expiry check).
    pub fn still_detached(&self, seat: &SeatRef) -> bool {
        let inner = self.lock();
        inner
            .rooms
            .get(&seat.room)
            .and_then(|r| r.get(&seat.participant))
            .is_some_and(|s| s.epoch == seat.epoch && s.outbox.is_none())
    }

    /// Frees a seat. Returns it if it existed.
    pub fn leave(&self, room: &str, participant: &str) -> Option<Seat> {
        let mut inner = self.lock();
        let seats = inner.rooms.get_mut(room)?;
        let seat = seats.remove(participant)?;
        if seats.is_empty() {
            inner.rooms.remove(room);
        }
        inner.resume.remove(&seat.resume_token);
        Some(seat)
    }

    /// Sends a message to everyone in the call (admitted seats) except `except`.
    pub fn broadcast(&self, room: &str, except: Option<&str>, message: &ServerMessage) {
        let inner = self.lock();
        let Some(seats) = inner.rooms.get(room) else { return };
        for (id, seat) in seats {
            if Some(id.as_str()) == except || !seat.info.admitted {
                continue;
            }
            if let Some(outbox) = &seat.outbox {
                // A peer too slow to drain its queue loses the message, not the room.
                let _ = outbox.try_send(Outbound::Message(message.clone()));
            }
        }
    }

    /// Sends to one seat's current session. Returns false if none is attached.
    pub fn send_to(&self, room: &str, participant: &str, message: ServerMessage) -> bool {
        let inner = self.lock();
        let Some(outbox) = inner.rooms.get(room).and_then(|r| r.get(participant)).and_then(|s| s.outbox.as_ref())
        else {
            return false;
        };
        outbox.try_send(Outbound::Message(message)).is_ok()
    }

    /// Runs `f` on a seat, if it exists.
    pub fn with_seat<T>(&self, room: &str, participant: &str, f: impl FnOnce(&mut Seat) -> T) -> Option<T> {
        let mut inner = self.lock();
        inner.rooms.get_mut(room).and_then(|r| r.get_mut(participant)).map(f)
    }

    /// Records a mute change; returns the participant info after it.
    pub fn set_muted(&self, room: &str, participant: &str, kind: TrackKind, muted: bool) -> Option<ParticipantInfo> {
        self.with_seat(room, participant, |seat| {
            match kind {
                TrackKind::Audio => seat.info.audio_muted = muted,
                TrackKind::Video => seat.info.video_muted = muted,
            }
            seat.info.clone()
        })
    }

    /// Sends a message to every clinician seat of the room.
    pub fn send_to_clinicians(&self, room: &str, message: &ServerMessage) {
        let inner = self.lock();
        let Some(seats) = inner.rooms.get(room) else { return };
        for seat in seats.values().filter(|s| s.info.role == Role::Clinician) {
            if let Some(outbox) = &seat.outbox {
                let _ = outbox.try_send(Outbound::Message(message.clone()));
            }
        }
    }

    /// Sends a message to every seat held under a token subject (e.g. every
    /// connection of one clinician). Returns how many got it.
    pub fn send_to_subject(&self, subject: &str, message: &ServerMessage) -> usize {
        let inner = self.lock();
        let mut sent = 0;
        for seat in inner.rooms.values().flat_map(|r| r.values()).filter(|s| s.subject == subject) {
            if let Some(outbox) = &seat.outbox
                && outbox.try_send(Outbound::Message(message.clone())).is_ok()
            {
                sent += 1;
            }
        }
        sent
    }

    /// Everyone in the waiting room, with seconds waited.
    pub fn waiting(&self, room: &str) -> Vec<(ParticipantInfo, u64)> {
        let inner = self.lock();
        let Some(seats) = inner.rooms.get(room) else { return Vec::new() };
        seats
            .values()
            .filter(|s| !s.info.admitted)
            .map(|s| (s.info.clone(), s.arrived_at.elapsed().as_secs()))
            .collect()
    }

    /// The role of every seat, by (room, participant).
    pub fn roles(&self) -> HashMap<(String, String), Role> {
        let inner = self.lock();
        inner
            .rooms
            .iter()
            .flat_map(|(room, seats)| seats.iter().map(move |(pid, s)| ((room.clone(), pid.clone()), s.info.role)))
            .collect()
    }

    /// Waiting seats per room (rooms with none are left out).
    pub fn waiting_counts(&self) -> HashMap<String, usize> {
        let inner = self.lock();
        inner
            .rooms
            .iter()
            .map(|(room, seats)| (room.clone(), seats.values().filter(|s| !s.info.admitted).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Live figures for metrics: rooms, seats in calls by role, waiting seats.
    pub fn figures(&self) -> crate::metrics::RoomFigures {
        let inner = self.lock();
        let mut figures = crate::metrics::RoomFigures { rooms: inner.rooms.len(), ..Default::default() };
        for seat in inner.rooms.values().flat_map(|r| r.values()) {
            if seat.info.admitted {
                *figures.in_call.entry(seat.info.role.as_str()).or_default() += 1;
            } else {
                figures.waiting += 1;
            }
        }
        figures
    }

    /// Lets a waiting participant into the call. Returns its info, the
    /// others in the call, and how long it waited.
    pub fn admit(
        &self,
        room: &str,
        participant: &str,
    ) -> Result<(ParticipantInfo, Vec<ParticipantInfo>, std::time::Duration), SeatError> {
        let mut inner = self.lock();
        let seats = inner.rooms.get_mut(room).ok_or(SeatError::NotFound)?;
        let others: Vec<ParticipantInfo> =
            seats.iter().filter(|(id, s)| *id != participant && s.info.admitted).map(|(_, s)| s.info.clone()).collect();
        let seat = seats.get_mut(participant).ok_or(SeatError::NotFound)?;
        if seat.info.admitted {
            return Err(SeatError::NotWaiting);
        }
        seat.info.admitted = true;
        Ok((seat.info.clone(), others, seat.arrived_at.elapsed()))
    }

    /// The info of a seat, if it exists.
    pub fn info(&self, room: &str, participant: &str) -> Option<ParticipantInfo> {
        self.with_seat(room, participant, |s| s.info.clone())
    }

    /// Removes every seat of a room and returns them (to tell them why).
    pub fn close_room(&self, room: &str) -> Vec<Seat> {
        let mut inner = self.lock();
        let seats = inner.rooms.remove(room).unwrap_or_default();
        for seat in seats.values() {
            inner.resume.remove(&seat.resume_token);
        }
        seats.into_values().collect()
    }

    /// Every room's id with its seat count.
    pub fn room_sizes(&self) -> Vec<(String, usize)> {
        self.lock().rooms.iter().map(|(id, seats)| (id.clone(), seats.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (Outbox, mpsc::Receiver<Outbound>) {
        mpsc::channel(8)
    }

    #[test]
    fn capacity_is_enforced() {
        let reg = RoomRegistry::default();
        for i in 0..2 {
            let (tx, _rx) = outbox();
            reg.join("r", format!("p{i}"), Role::Guest, "G".into(), "s".into(), 2, true, tx).unwrap();
        }
        let (tx, _rx) = outbox();
        assert_eq!(
            reg.join("r", "p3".into(), Role::Guest, "G".into(), "s".into(), 2, true, tx).unwrap_err(),
            SeatError::RoomFull
        );
    }

    #[test]
    fn resume_rotates_token_and_stale_detach_is_ignored() {
        let reg = RoomRegistry::default();
        let (tx, _rx) = outbox();
        let (seat, token, _) = reg.join("r", "p".into(), Role::Patient, "P".into(), "s".into(), 6, true, tx).unwrap();
        assert!(reg.detach(&seat, Instant::now()));
        let (tx2, _rx2) = outbox();
        let (seat2, token2, _, _, _) = reg.resume(&token, tx2).unwrap();
        assert_ne!(token, token2);
        assert_eq!(seat2.epoch, seat.epoch + 1);
        // The old token is spent.
        let (tx3, _rx3) = outbox();
        assert!(reg.resume(&token, tx3).is_err());
        // The old session closing late must not detach the resumed seat.
        assert!(!reg.detach(&seat, Instant::now()));
        assert!(!reg.still_detached(&seat2));
    }

    #[test]
    fn leave_frees_the_seat_and_the_token() {
        let reg = RoomRegistry::default();
        let (tx, _rx) = outbox();
        let (_, token, _) = reg.join("r", "p".into(), Role::Patient, "P".into(), "s".into(), 6, true, tx).unwrap();
        assert!(reg.leave("r", "p").is_some());
        assert!(reg.room_sizes().is_empty());
        let (tx, _rx) = outbox();
        assert!(reg.resume(&token, tx).is_err());
    }
}
