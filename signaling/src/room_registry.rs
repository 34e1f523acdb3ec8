//! Live rooms as signaling sees them: who holds a seat, which WebSocket
//! currently speaks for each seat, and the resume secrets.
//!
//! A *seat* outlives its WebSocket: when the socket drops, the seat stays
//! for the resume grace period, with its media untouched, and a `resume`
//! re-attaches a new socket to it. Every seat attachment has an `epoch` so
//! that a stale socket closing late cannot detach a newer one.
//!
//! **One seat per credential.** A link, or a staff account, holds at most
//! one seat in a room: joining again (a second tab, a phone after the
//! laptop) takes the seat over, keeping its participant id and admission,
//! and the older connection is told and closed. So a leaked link cannot
//! fill a room, and a reload never leaves a ghost behind.
//!
//! **Two limits.** People in the call (admitted) and people in the waiting
//! room are counted apart, so a crowd of waiting guests never keeps the
//! clinician out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use teleconsult_protocol::{ParticipantInfo, Role, ServerMessage, TrackKind};
use tokio::sync::{Notify, mpsc};

/// What a session task is told to do with its socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Send this message.
    Message(ServerMessage),
    /// Send this text frame as it is (relayed from the room's node).
    Text(String),
    /// Close the socket with this WebSocket close code and reason.
    Close(u16, std::borrow::Cow<'static, str>),
    /// Send a WebSocket ping (the client's pong proves it is there).
    Ping,
}

/// WebSocket close codes the server uses (4000–4999 are the application's).
pub mod close_code {
    /// Another connection resumed this seat.
    pub const RESUMED_ELSEWHERE: u16 = 4000;
    /// `hello` carried an unsupported protocol version.
    pub const UNSUPPORTED_VERSION: u16 = 4001;
    /// No `hello` in time.
    pub const HELLO_TIMEOUT: u16 = 4002;
    /// A clinician turned the participant away.
    pub const DENIED: u16 = 4003;
    /// The credential was withdrawn: a revoked link, a disabled account.
    pub const CREDENTIAL_WITHDRAWN: u16 = 4004;
    /// The same link or account joined from another connection.
    pub const SEAT_REPLACED: u16 = 4005;
    /// The client read too slowly and its queue filled: resume to catch up.
    pub const TOO_SLOW_RESUME: u16 = 4008;
    /// Nothing came from the client for too long: resume if still there.
    pub const IDLE_RESUME: u16 = 4009;
    /// The room moved to another node (after a `move` message): join again.
    pub const MOVED: u16 = 4010;
}

/// Sending half of a session's outbound queue.
///
/// A full queue means the client reads too slowly. Rather than drop a
/// message silently (a lost subscribe offer would stall negotiation for
/// good), the session is told to close with [`close_code::TOO_SLOW_RESUME`];
/// the client resumes and is sent the current state afresh.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    overflow: Arc<Notify>,
}

impl Outbox {
    /// A queue of `depth` messages: the outbox, its receiver (for the
    /// session's writer), and the signal raised when it overflows.
    pub fn new(depth: usize) -> (Outbox, mpsc::Receiver<Outbound>, Arc<Notify>) {
        let (tx, rx) = mpsc::channel(depth);
        let overflow = Arc::new(Notify::new());
        (Outbox { tx, overflow: overflow.clone() }, rx, overflow)
    }

    /// Queues a message. Returns false if the session is gone or too slow
    /// (in which case it is told to close).
    pub fn send(&self, message: ServerMessage) -> bool {
        self.push(Outbound::Message(message))
    }

    /// Queues a close.
    pub fn close(&self, code: u16, reason: &'static str) -> bool {
        self.push(Outbound::Close(code, reason.into()))
    }

    /// Queues a text frame relayed as it is.
    pub fn text(&self, text: String) -> bool {
        self.push(Outbound::Text(text))
    }

    /// Queues a close with a reason relayed from elsewhere.
    pub fn close_with(&self, code: u16, reason: String) -> bool {
        self.push(Outbound::Close(code, reason.into()))
    }

    /// Queues a ping.
    pub fn ping(&self) -> bool {
        self.push(Outbound::Ping)
    }

    fn push(&self, out: Outbound) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// One seat in a room.
#[derive(Debug)]
pub struct Seat {
    /// What other participants see.
    pub info: ParticipantInfo,
    /// Subject of the join token (`link:<id>`, `clinician:<id>`): one seat
    /// per subject; used for audit, never shown.
    pub subject: String,
    /// The session currently attached, if any.
    pub outbox: Option<Outbox>,
    /// Attachment counter; bumped on every resume or takeover.
    pub epoch: u64,
    /// Current resume secret.
    pub resume_token: String,
    /// When the socket dropped, if it has.
    pub detached_at: Option<Instant>,
    /// Whether the sfu holds media connections for this seat.
    pub in_sfu: bool,
    /// Counts the seat's media sessions in the sfu, so that a stream that
    /// ends late is not mistaken for the current one's.
    pub media_generation: u64,
    /// The last subscribe offer not yet answered, resent on resume.
    pub pending_subscribe_offer: Option<String>,
    /// When the seat was taken (for waiting times).
    pub arrived_at: Instant,
}

/// Why a seat could not be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeatError {
    /// The call holds its maximum number of people.
    #[error("the room is full")]
    RoomFull,
    /// The waiting room holds its maximum number of people.
    #[error("the waiting room is full")]
    WaitingRoomFull,
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

/// How many people a room holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// People in the call (admitted seats).
    pub in_call: usize,
    /// People in the waiting room.
    pub waiting: usize,
}

/// A request for a seat.
#[derive(Debug)]
pub struct SeatRequest {
    /// The room.
    pub room: String,
    /// The participant id for a new seat (kept from the old seat on takeover).
    pub participant_id: String,
    /// The role the token grants.
    pub role: Role,
    /// The name the others see.
    pub display_name: String,
    /// The token's subject (one seat per subject).
    pub subject: String,
    /// Whether the seat goes straight into the call.
    pub admitted: bool,
    /// The room's limits.
    pub limits: RoomLimits,
    /// The session's outbound queue.
    pub outbox: Outbox,
}

/// A seat taken.
#[derive(Debug)]
pub struct Taken {
    /// The seat.
    pub seat: SeatRef,
    /// Its resume secret.
    pub resume_token: String,
    /// Whether it is in the call (a takeover keeps the old seat's admission).
    pub admitted: bool,
    /// Everyone else in the call.
    pub others: Vec<ParticipantInfo>,
    /// The seat this one took over, if the same subject held one: its
    /// session must be told and closed, and its media removed.
    pub replaced: Option<Seat>,
}

/// A seat resumed.
#[derive(Debug)]
pub struct Resumed {
    /// The seat, at its new epoch.
    pub seat: SeatRef,
    /// The rotated resume secret.
    pub resume_token: String,
    /// The seat's own info.
    pub me: ParticipantInfo,
    /// Everyone else in the call.
    pub others: Vec<ParticipantInfo>,
    /// A subscribe offer still waiting for an answer.
    pub pending_offer: Option<String>,
    /// Whether the sfu holds media for the seat.
    pub in_sfu: bool,
    /// The token's subject.
    pub subject: String,
}

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

/// A resume secret that names its room (`<room>.<secret>`), so that any
/// node of a cluster can tell which node to bridge a `resume` to. The
/// secret part is what makes it unguessable.
fn new_resume_token(room: &str) -> String {
    format!("{room}.{}", crate::secret::random_token())
}

/// The room a resume token names, if it is well formed.
pub fn room_of_resume_token(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(room, _)| room).filter(|room| !room.is_empty())
}

/// All live rooms of this node.
#[derive(Debug, Default)]
pub struct RoomRegistry {
    inner: Mutex<Inner>,
}

/// Who is in a room now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    /// Seats in the call.
    pub in_call: usize,
    /// Seats in the waiting room.
    pub waiting: usize,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<String, BTreeMap<String, Seat>>,
    /// resume token → (room, participant)
    resume: HashMap<String, (String, String)>,
    /// room → subjects a clinician let in. Someone who left and comes back
    /// through the same link goes straight into the call, not the waiting
    /// room again; forgotten when the room closes.
    admitted_before: HashMap<String, HashSet<String>>,
}

impl RoomRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock must not take signaling down with it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a seat, or takes over the seat its subject already holds.
    pub fn join(&self, request: SeatRequest) -> Result<Taken, SeatError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let seats = inner.rooms.entry(request.room.clone()).or_default();
        let existing = seats.iter().find(|(_, s)| s.subject == request.subject).map(|(id, _)| id.clone());
        let previous = existing.and_then(|id| seats.remove(&id));
        let participant_id = previous.as_ref().map(|p| p.info.participant_id.clone()).unwrap_or(request.participant_id);
        let admitted = request.admitted
            || previous.as_ref().is_some_and(|p| p.info.admitted)
            || inner.admitted_before.get(&request.room).is_some_and(|s| s.contains(&request.subject));
        let seats = inner.rooms.entry(request.room.clone()).or_default();
        let in_call = seats.values().filter(|s| s.info.admitted).count();
        let waiting = seats.len() - in_call;
        let refused = if admitted && in_call >= request.limits.in_call {
            Some(SeatError::RoomFull)
        } else if !admitted && waiting >= request.limits.waiting {
            Some(SeatError::WaitingRoomFull)
        } else {
            None
        };
        if let Some(error) = refused {
            match previous {
                // A takeover never loses the seat it was taking over.
                Some(p) => {
                    seats.insert(p.info.participant_id.clone(), p);
                }
                None if seats.is_empty() => {
                    inner.rooms.remove(&request.room);
                }
                None => {}
            }
            return Err(error);
        }
        if let Some(p) = &previous {
            inner.resume.remove(&p.resume_token);
        }
        let others: Vec<ParticipantInfo> = seats.values().filter(|s| s.info.admitted).map(|s| s.info.clone()).collect();
        let resume_token = new_resume_token(&request.room);
        let epoch = previous.as_ref().map(|p| p.epoch + 1).unwrap_or(1);
        seats.insert(
            participant_id.clone(),
            Seat {
                info: ParticipantInfo {
                    participant_id: participant_id.clone(),
                    role: request.role,
                    display_name: request.display_name,
                    audio_muted: false,
                    video_muted: false,
                    admitted,
                    hand_raised: false,
                },
                subject: request.subject,
                outbox: Some(request.outbox),
                epoch,
                resume_token: resume_token.clone(),
                detached_at: None,
                in_sfu: false,
                media_generation: previous.as_ref().map(|p| p.media_generation).unwrap_or(0),
                pending_subscribe_offer: None,
                arrived_at: previous.as_ref().map(|p| p.arrived_at).unwrap_or_else(Instant::now),
            },
        );
        inner.resume.insert(resume_token.clone(), (request.room.clone(), participant_id.clone()));
        Ok(Taken {
            seat: SeatRef { room: request.room, participant: participant_id, epoch },
            resume_token,
            admitted,
            others,
            replaced: previous,
        })
    }

    /// Re-attaches a session to the seat a resume token names, rotating the
    /// token. The previous session, if still attached, is told to close.
    pub fn resume(&self, resume_token: &str, outbox: Outbox) -> Result<Resumed, SeatError> {
        let mut inner = self.lock();
        let (room, participant) = inner.resume.remove(resume_token).ok_or(SeatError::UnknownResumeToken)?;
        let new_token = new_resume_token(&room);
        let Some(seats) = inner.rooms.get_mut(&room) else { return Err(SeatError::UnknownResumeToken) };
        let others: Vec<ParticipantInfo> = seats
            .iter()
            .filter(|(id, s)| **id != participant && s.info.admitted)
            .map(|(_, s)| s.info.clone())
            .collect();
        let Some(seat) = seats.get_mut(&participant) else { return Err(SeatError::UnknownResumeToken) };
        if let Some(old) = seat.outbox.replace(outbox) {
            old.close(close_code::RESUMED_ELSEWHERE, "resumed elsewhere");
        }
        seat.epoch += 1;
        seat.detached_at = None;
        seat.resume_token = new_token.clone();
        let resumed = Resumed {
            seat: SeatRef { room: room.clone(), participant: participant.clone(), epoch: seat.epoch },
            resume_token: new_token.clone(),
            me: seat.info.clone(),
            others,
            pending_offer: seat.pending_subscribe_offer.clone(),
            in_sfu: seat.in_sfu,
            subject: seat.subject.clone(),
        };
        inner.resume.insert(new_token, (room, participant));
        Ok(resumed)
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

    /// Whether `seat` still speaks for its seat (no takeover, no resume elsewhere).
    pub fn holds(&self, seat: &SeatRef) -> bool {
        let inner = self.lock();
        inner.rooms.get(&seat.room).and_then(|r| r.get(&seat.participant)).is_some_and(|s| s.epoch == seat.epoch)
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
                outbox.send(message.clone());
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
        outbox.send(message)
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

    /// Raises or lowers a participant's hand; `None` if they are not in the
    /// call (a waiting participant has no hand to raise). Returns whether
    /// it changed.
    pub fn set_hand(&self, room: &str, participant: &str, raised: bool) -> Option<bool> {
        self.with_seat(room, participant, |seat| {
            if !seat.info.admitted {
                return None;
            }
            let changed = seat.info.hand_raised != raised;
            seat.info.hand_raised = raised;
            Some(changed)
        })
        .flatten()
    }

    /// Sends a message to every clinician seat of the room.
    pub fn send_to_clinicians(&self, room: &str, message: &ServerMessage) {
        let inner = self.lock();
        let Some(seats) = inner.rooms.get(room) else { return };
        for seat in seats.values().filter(|s| s.info.role == Role::Clinician) {
            if let Some(outbox) = &seat.outbox {
                outbox.send(message.clone());
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
                && outbox.send(message.clone())
            {
                sent += 1;
            }
        }
        sent
    }

    /// Every (room, participant) held under a subject.
    pub fn seats_of_subject(&self, subject: &str) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .rooms
            .iter()
            .flat_map(|(room, seats)| {
                seats.iter().filter(|(_, s)| s.subject == subject).map(move |(id, _)| (room.clone(), id.clone()))
            })
            .collect()
    }

    /// Every distinct subject holding a seat.
    pub fn subjects(&self) -> Vec<String> {
        let inner = self.lock();
        let mut subjects: Vec<String> =
            inner.rooms.values().flat_map(|r| r.values()).map(|s| s.subject.clone()).collect();
        subjects.sort_unstable();
        subjects.dedup();
        subjects
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

    /// How many are in the call and in the waiting room of `room` now.
    pub fn presence(&self, room: &str) -> Presence {
        let inner = self.lock();
        let Some(seats) = inner.rooms.get(room) else { return Presence::default() };
        let in_call = seats.values().filter(|s| s.info.admitted).count();
        Presence { in_call, waiting: seats.len() - in_call }
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

    /// Lets a waiting participant into the call, if the call has room.
    /// Returns its info, the others in the call, and how long it waited.
    pub fn admit(
        &self,
        room: &str,
        participant: &str,
        in_call_limit: usize,
    ) -> Result<(ParticipantInfo, Vec<ParticipantInfo>, std::time::Duration), SeatError> {
        let mut inner = self.lock();
        let seats = inner.rooms.get_mut(room).ok_or(SeatError::NotFound)?;
        let others: Vec<ParticipantInfo> =
            seats.iter().filter(|(id, s)| *id != participant && s.info.admitted).map(|(_, s)| s.info.clone()).collect();
        let seat = seats.get_mut(participant).ok_or(SeatError::NotFound)?;
        if seat.info.admitted {
            return Err(SeatError::NotWaiting);
        }
        if others.len() >= in_call_limit {
            return Err(SeatError::RoomFull);
        }
        seat.info.admitted = true;
        let (info, waited, subject) = (seat.info.clone(), seat.arrived_at.elapsed(), seat.subject.clone());
        inner.admitted_before.entry(room.to_owned()).or_default().insert(subject);
        Ok((info, others, waited))
    }

    /// The info of a seat, if it exists.
    pub fn info(&self, room: &str, participant: &str) -> Option<ParticipantInfo> {
        self.with_seat(room, participant, |s| s.info.clone())
    }

    /// Removes every seat of a room and returns them (to tell them why).
    pub fn close_room(&self, room: &str) -> Vec<Seat> {
        let mut inner = self.lock();
        inner.admitted_before.remove(room);
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

    const LIMITS: RoomLimits = RoomLimits { in_call: 2, waiting: 2 };

    fn request(participant: &str, subject: &str, admitted: bool) -> (SeatRequest, mpsc::Receiver<Outbound>) {
        let (outbox, rx, _) = Outbox::new(8);
        let request = SeatRequest {
            room: "r".into(),
            participant_id: participant.into(),
            role: if admitted { Role::Clinician } else { Role::Guest },
            display_name: "X".into(),
            subject: subject.into(),
            admitted,
            limits: LIMITS,
            outbox,
        };
        (request, rx)
    }

    #[test]
    fn someone_let_in_who_leaves_comes_back_into_the_call_until_the_room_closes() {
        let reg = RoomRegistry::default();
        let (r, _rx) = request("g", "link:g", false);
        assert!(!reg.join(r).unwrap().admitted, "a guest waits first");
        reg.admit("r", "g", 6).unwrap();
        reg.leave("r", "g").unwrap();
        assert!(reg.room_sizes().is_empty());
        let (r, _rx) = request("g2", "link:g", false);
        assert!(reg.join(r).unwrap().admitted, "the same link comes back into the call");
        let (r, _rx) = request("h", "link:h", false);
        assert!(!reg.join(r).unwrap().admitted, "another link still waits");
        reg.close_room("r");
        let (r, _rx) = request("g3", "link:g", false);
        assert!(!reg.join(r).unwrap().admitted, "a closed room forgets");
    }

    #[test]
    fn the_call_and_the_waiting_room_have_their_own_limits() {
        let reg = RoomRegistry::default();
        let mut keep = Vec::new();
        for i in 0..2 {
            let (r, rx) = request(&format!("g{i}"), &format!("link:{i}"), false);
            reg.join(r).unwrap();
            keep.push(rx);
        }
        let (r, _rx) = request("g9", "link:9", false);
        assert_eq!(reg.join(r).unwrap_err(), SeatError::WaitingRoomFull);
        // A full waiting room never keeps the clinician out.
        let (r, _rx) = request("c", "clinician:c", true);
        reg.join(r).unwrap();
        reg.admit("r", "g0", LIMITS.in_call).unwrap();
        assert_eq!(reg.admit("r", "g1", LIMITS.in_call).unwrap_err(), SeatError::RoomFull);
    }

    #[test]
    fn one_subject_holds_one_seat_and_a_takeover_keeps_it() {
        let reg = RoomRegistry::default();
        let (r, _rx) = request("p1", "link:a", false);
        let first = reg.join(r).unwrap();
        reg.admit("r", "p1", LIMITS.in_call).unwrap();
        let mut last = first;
        for i in 0..7 {
            let (r, _rx) = request(&format!("p-new{i}"), "link:a", false);
            let taken = reg.join(r).unwrap();
            assert_eq!(taken.seat.participant, "p1", "the same seat, taken over");
            assert!(taken.admitted, "admission survives a rejoin through the same link");
            assert!(taken.replaced.is_some());
            assert!(!reg.holds(&last.seat), "the older connection no longer speaks for the seat");
            last = taken;
        }
        assert_eq!(reg.room_sizes(), vec![("r".to_string(), 1)]);
        // The replaced seat's resume token is spent.
        let (outbox, _rx, _) = Outbox::new(8);
        assert!(reg.resume(&first_token(&reg), outbox).is_ok(), "the current token resumes");
    }

    fn first_token(reg: &RoomRegistry) -> String {
        reg.with_seat("r", "p1", |s| s.resume_token.clone()).unwrap()
    }

    #[test]
    fn resume_rotates_token_and_stale_detach_is_ignored() {
        let reg = RoomRegistry::default();
        let (r, _rx) = request("p", "link:p", true);
        let taken = reg.join(r).unwrap();
        assert!(reg.detach(&taken.seat, Instant::now()));
        let (tx2, _rx2, _) = Outbox::new(8);
        let resumed = reg.resume(&taken.resume_token, tx2).unwrap();
        assert_ne!(taken.resume_token, resumed.resume_token);
        assert_eq!(resumed.seat.epoch, taken.seat.epoch + 1);
        // The old token is spent.
        let (tx3, _rx3, _) = Outbox::new(8);
        assert!(reg.resume(&taken.resume_token, tx3).is_err());
        // The old session closing late must not detach the resumed seat.
        assert!(!reg.detach(&taken.seat, Instant::now()));
        assert!(!reg.still_detached(&resumed.seat));
    }

    #[test]
    fn leave_frees_the_seat_and_the_token() {
        let reg = RoomRegistry::default();
        let (r, _rx) = request("p", "link:p", true);
        let taken = reg.join(r).unwrap();
        assert!(reg.leave("r", "p").is_some());
        assert!(reg.room_sizes().is_empty());
        let (tx, _rx, _) = Outbox::new(8);
        assert!(reg.resume(&taken.resume_token, tx).is_err());
    }

    #[test]
    fn a_full_outbox_asks_the_session_to_close() {
        let (outbox, _rx, overflow) = Outbox::new(1);
        assert!(outbox.send(ServerMessage::Pong { id: None }));
        let notified = overflow.notified();
        assert!(!outbox.send(ServerMessage::Pong { id: None }), "the second message does not fit");
        // The signal is stored for the session loop to pick up.
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut notified = std::pin::pin!(notified);
        assert!(notified.as_mut().poll(&mut cx).is_ready());
    }
}
