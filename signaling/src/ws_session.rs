//! One WebSocket session at `/ws`, speaking protocol v1.
//!
//! A session reads client frames, checks each against the session's state
//! (hello first, a seat for media messages), and writes replies and events
//! through an outbound queue drained by a writer task. Whatever a client
//! sends, the worst it can get is an `error` and, for oversized frames, a
//! closed socket: never a panic, never harm to other seats.
//!
//! Its life is bounded: `hello` must come within `ws_hello_timeout`; the
//! server pings, and a client silent for `ws_idle_timeout` is closed (its
//! seat waits for a resume, as after any drop); a client whose queue fills
//! is closed with the resume code rather than silently losing messages.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use teleconsult_protocol::{
    ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ParticipantInfo, PeerConnection, Role,
    ServerMessage, TrackInfo, decode_client_message,
};
use teleconsult_sfu::{Connection, ParticipantEvent, ParticipantId, RemovedReason, RoomId, SfuError};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::app::App;
use crate::join_token::{JoinClaims, TokenError};
use crate::room_registry::{Outbound, Outbox, SeatError, SeatRef, SeatRequest, close_code};
use crate::security_log::SecurityEvent;
use crate::store::VisitStatus;
use crate::visit_rooms::{RoomProfile, audit_if_visit};

/// Longest note a clinician may send a waiting participant, in characters.
const MAX_NOTE_CHARS: usize = 500;
/// Longest chat line, in characters.
const MAX_CHAT_CHARS: usize = 1000;

/// Outbound queue depth per session. A client that lets it fill is too
/// slow: it is closed with the resume code and catches up on resume.
const OUTBOX_DEPTH: usize = 256;

/// Token bucket: sustained messages per second, and burst.
const RATE_PER_SEC: f64 = 20.0;
const RATE_BURST: f64 = 60.0;

/// Runs a session to completion. `client` is the client's address, for the
/// security log only.
pub async fn run(socket: WebSocket, app: Arc<App>, client: IpAddr) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut rx, overflow) = Outbox::new(OUTBOX_DEPTH);

    let mut writer = tokio::spawn(async move {
        loop {
            let out = tokio::select! {
                out = rx.recv() => out,
                // The queue is full: what is in it no longer matters; the
                // client resumes and gets the state afresh.
                _ = overflow.notified() => Some(Outbound::Close(close_code::TOO_SLOW_RESUME, "too slow; resume".into())),
            };
            let Some(out) = out else { break };
            let closing = matches!(out, Outbound::Close(..));
            // A client that stops reading blocks this send once the kernel's
            // buffers are full; the queue overflowing meanwhile ends the wait.
            let written = tokio::select! {
                written = write(&mut sink, out) => written,
                _ = overflow.notified() => {
                    // The close frame may never get through a stuck socket:
                    // try briefly, then drop the connection.
                    let close = Outbound::Close(close_code::TOO_SLOW_RESUME, "too slow; resume".into());
                    let _ = tokio::time::timeout(Duration::from_secs(1), write(&mut sink, close)).await;
                    false
                }
            };
            if !written || closing {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    });

    let mut session = Session {
        app: app.clone(),
        outbox: outbox.clone(),
        client,
        hello: false,
        seat: None,
        role: None,
        subject: String::new(),
        bucket: RATE_BURST,
        last_refill: Instant::now(),
        upstream: None,
        profile: RoomProfile::default(),
    };
    let mut shutdown = app.shutdown.clone();
    let idle = app.config.ws_idle_timeout;
    let hello_deadline = tokio::time::sleep(app.config.ws_hello_timeout);
    tokio::pin!(hello_deadline);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + idle / 3, idle / 3);
    let mut last_heard = Instant::now();
    app.metrics.ws_connections(1);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                last_heard = Instant::now();
                match frame {
                    Message::Text(text) => {
                        if !session.handle_text(text.as_str()).await || session.upstream.is_some() {
                            break;
                        }
                    }
                    Message::Binary(_) => session.error(None, ErrorCode::BinaryNotSupported, "binary frames are not part of the protocol"),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            _ = &mut hello_deadline, if !session.hello => {
                session.error(None, ErrorCode::HelloRequired, "no hello in time; closing");
                outbox.close(close_code::HELLO_TIMEOUT, "no hello in time");
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    outbox.close(close_code::IDLE_RESUME, "no frame for too long; resume");
                    break;
                }
                outbox.ping();
            }
            // The writer ended: the socket failed, or it was closed for being too slow.
            _ = &mut writer => break,
            _ = shutdown.changed() => {
                session.send(ServerMessage::RoomClosed { reason: "server_shutdown".into() });
                outbox.close(1001, "server shutting down");
                break;
            }
        }
    }
    if let Some(upstream) = session.upstream.take() {
        app.metrics.ws_bridged(1);
        relay(upstream, &mut stream, &outbox, &app, &mut writer, last_heard).await;
        app.metrics.ws_bridged(-1);
    }
    session.on_socket_closed().await;
    drop(session);
    drop(outbox);
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
    }
    writer.abort();
    app.metrics.ws_connections(-1);
}

/// Writes one outbound frame; false if the socket failed.
async fn write(sink: &mut SplitSink<WebSocket, Message>, out: Outbound) -> bool {
    let frame = match out {
        Outbound::Message(m) => match serde_json::to_string(&m) {
            Ok(text) => Message::Text(Utf8Bytes::from(text)),
            Err(_) => return true,
        },
        Outbound::Text(text) => Message::Text(Utf8Bytes::from(text)),
        Outbound::Ping => Message::Ping(Default::default()),
        Outbound::Close(code, reason) => {
            Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason.into_owned()) }))
        }
    };
    sink.send(frame).await.is_ok()
}

/// Relays a bridged session: the client's frames to the room's node, and
/// its frames to the client, until either side ends. If the room's node
/// goes away without closing (it died) or this node drains, the client is
/// told to `move` and joins again, through any node.
async fn relay(
    mut upstream: crate::cluster::bridge::Upstream,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    outbox: &Outbox,
    app: &App,
    writer: &mut tokio::task::JoinHandle<()>,
    mut last_heard: Instant,
) {
    use tokio_tungstenite::tungstenite::Message as Up;
    let mut shutdown = app.shutdown.clone();
    let mut draining = app.cluster.as_ref().map(|c| c.draining_signal());
    let idle = app.config.ws_idle_timeout;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + idle / 3, idle / 3);
    // The room's node answers our pings: silence this long means it is gone
    // (a machine that lost power closes no socket).
    let mut upstream_heard = Instant::now();
    let moved = |reason: &str| {
        outbox.send(ServerMessage::Move { reason: reason.to_string() });
        outbox.close(close_code::MOVED, "room moved; join again");
    };
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                last_heard = Instant::now();
                let sent = match frame {
                    Message::Text(text) => upstream.send(Up::text(text.as_str())).await,
                    Message::Binary(_) => {
                        outbox.send(ServerMessage::Error {
                            id: None,
                            code: ErrorCode::BinaryNotSupported,
                            message: "binary frames are not part of the protocol".into(),
                        });
                        Ok(())
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => Ok(()),
                };
                if sent.is_err() {
                    moved("node_lost");
                    return;
                }
            }
            frame = upstream.next() => match frame {
                Some(Ok(Up::Text(text))) => {
                    upstream_heard = Instant::now();
                    outbox.text(text.as_str().to_owned());
                }
                Some(Ok(Up::Close(Some(close)))) => {
                    outbox.close_with(u16::from(close.code), close.reason.as_str().to_owned());
                    return;
                }
                Some(Ok(Up::Close(None))) => {
                    outbox.close(1000, "closed");
                    return;
                }
                Some(Ok(_)) => upstream_heard = Instant::now(),
                // The room's node went away without a word: it died.
                Some(Err(_)) | None => {
                    debug!("room's node lost; moving the client");
                    moved("node_lost");
                    return;
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    outbox.close(close_code::IDLE_RESUME, "no frame for too long; resume");
                    break;
                }
                outbox.ping();
                // Keeps the room's node from taking this bridge for idle.
                if upstream_heard.elapsed() > idle || upstream.send(Up::Ping(Default::default())).await.is_err() {
                    moved("node_lost");
                    return;
                }
            }
            _ = &mut *writer => break,
            _ = async { match draining.as_mut() { Some(d) => { let _ = d.wait_for(|v| *v).await; } None => std::future::pending().await } } => {
                moved("node_draining");
                break;
            }
            _ = shutdown.changed() => {
                moved("node_draining");
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), upstream.close(None)).await;
}

struct Session {
    app: Arc<App>,
    outbox: Outbox,
    client: IpAddr,
    hello: bool,
    seat: Option<SeatRef>,
    /// The seat's role and token subject (for authorization and audit).
    role: Option<Role>,
    subject: String,
    bucket: f64,
    last_refill: Instant,
    /// Set when the room lives on another node: this session becomes a relay.
    upstream: Option<crate::cluster::bridge::Upstream>,
    /// The seat's room's limits and media path, read once at join or resume.
    profile: RoomProfile,
}

/// Where a session's room lives.
enum Route {
    /// On this node (or there is no cluster).
    Here,
    /// On another node; `Session::upstream` is open to it.
    Bridged,
    /// Nowhere now; the client was told.
    Failed,
}

impl Session {
    fn send(&self, message: ServerMessage) {
        self.outbox.send(message);
    }

    fn error(&self, id: Option<String>, code: ErrorCode, message: &str) {
        self.app.metrics.ws_error(code.as_str());
        self.send(ServerMessage::Error { id, code, message: message.to_string() });
    }

    fn security(&self, event: SecurityEvent, fields: serde_json::Value) {
        self.app.security.record(self.app.clock.now(), event, Some(self.client), fields);
    }

    fn rate_ok(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_refill).as_secs_f64();
        self.last_refill = now;
        self.bucket = (self.bucket + elapsed * RATE_PER_SEC).min(RATE_BURST);
        if self.bucket >= 1.0 {
            self.bucket -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handles one text frame. Returns false when the session must end.
    async fn handle_text(&mut self, text: &str) -> bool {
        if text.len() > MAX_MESSAGE_BYTES {
            let id = teleconsult_protocol::request_id_of(text);
            self.error(id, ErrorCode::MessageTooLarge, "message larger than 65536 bytes; closing");
            self.outbox.close(1009, "message too large");
            return false;
        }
        if !self.rate_ok() {
            let id = teleconsult_protocol::request_id_of(text);
            self.error(id, ErrorCode::RateLimited, "too many messages; slow down");
            return true;
        }
        let message = match decode_client_message(text) {
            Ok(m) => m,
            Err(e) => {
                self.error(e.id, e.code, &e.message);
                return true;
            }
        };
        self.app.metrics.ws_message(message.type_name());
        let id = message.id().map(str::to_owned);
        if !self.hello && !matches!(message, ClientMessage::Hello { .. }) {
            self.error(id, ErrorCode::HelloRequired, "send hello first");
            return true;
        }
        match message {
            ClientMessage::Hello { id, protocol } => {
                if protocol != PROTOCOL_VERSION {
                    self.error(
                        id,
                        ErrorCode::UnsupportedVersion,
                        &format!("this server speaks protocol {PROTOCOL_VERSION}"),
                    );
                    self.outbox.close(close_code::UNSUPPORTED_VERSION, "unsupported protocol version");
                    return false;
                }
                self.hello = true;
                self.send(ServerMessage::Welcome {
                    id,
                    protocol: PROTOCOL_VERSION,
                    resume_grace_secs: self.app.config.resume_grace.as_secs(),
                });
            }
            ClientMessage::Join { id, token } => self.join(id, &token, text).await,
            ClientMessage::Resume { id, resume_token } => self.resume(id, &resume_token, text).await,
            ClientMessage::Ping { id } => self.send(ServerMessage::Pong { id }),
            other => {
                let Some(seat) = self.seat.clone() else {
                    self.error(id, ErrorCode::NotJoined, "join a room first");
                    return true;
                };
                return self.seated(seat, other).await;
            }
        }
        true
    }

    /// Finds the node that holds `room`, placing the room if it has none.
    /// Another node: opens the bridge to it and sends it `frame` (the
    /// client's `join` or `resume`), trying another node if it cannot be
    /// reached.
    async fn route(&mut self, id: &Option<String>, room: &str, frame: &str) -> Route {
        let Some(cluster) = self.app.cluster.clone() else { return Route::Here };
        let mut unreachable: Option<String> = None;
        for _ in 0..3 {
            let node = match cluster.place(room, unreachable.as_deref()).await {
                Ok(node) => node,
                // Redis is out: a room this node already holds carries on.
                Err(_) if self.app.rooms.presence(room) != Default::default() => return Route::Here,
                Err(e) => {
                    tracing::warn!(error = %e, room, "cannot place a room");
                    break;
                }
            };
            if node.id == cluster.node_id {
                return Route::Here;
            }
            match crate::cluster::bridge::connect(&cluster, &node.url, self.client).await {
                Ok(mut upstream) => {
                    use tokio_tungstenite::tungstenite::Message as Up;
                    if upstream.send(Up::text(frame)).await.is_ok() {
                        debug!(room, node = %node.id, "session bridged to the room's node");
                        self.upstream = Some(upstream);
                        return Route::Bridged;
                    }
                    unreachable = Some(node.id);
                }
                Err(e) => {
                    tracing::warn!(room, node = %node.id, error = %e, "room's node unreachable; placing the room again");
                    unreachable = Some(node.id);
                }
            }
        }
        self.error(
            id.clone(),
            ErrorCode::ClusterUnavailable,
            "no server node can take this room now; try again in a moment",
        );
        Route::Failed
    }

    async fn join(&mut self, id: Option<String>, token: &str, frame: &str) {
        if self.seat.is_some() {
            return self.error(id, ErrorCode::AlreadyJoined, "this connection already holds a seat");
        }
        let claims = match self.app.keys.verify_join(token) {
            Ok(c) => c,
            Err(TokenError::Expired) => return self.error(id, ErrorCode::TokenExpired, "the join token has expired"),
            Err(_) => return self.error(id, ErrorCode::InvalidToken, "the join token is not valid"),
        };
        if let Err((code, why)) = credential_still_good(&self.app, &claims).await {
            let event = if code == ErrorCode::AccountDisabled {
                SecurityEvent::DisabledAccountUsed
            } else {
                SecurityEvent::LinkRefused
            };
            if code != ErrorCode::VisitClosed && code != ErrorCode::Internal {
                self.security(event, serde_json::json!({ "subject": claims.sub, "code": code.as_str() }));
            }
            return self.error(id, code, why);
        }
        match self.route(&id, &claims.room, frame).await {
            Route::Here => {}
            Route::Bridged | Route::Failed => return,
        }
        // Clinicians go straight in; patients and guests wait to be admitted,
        // unless a clinician let them in before (on any node: the room may
        // have moved since).
        let mut admitted = claims.role == Role::Clinician || claims.admitted;
        if !admitted && let Some(cluster) = &self.app.cluster {
            admitted = cluster.was_admitted(&claims.room, &claims.sub).await;
        }
        let profile = RoomProfile::of(&self.app, &claims.room).await;
        let taken = self.app.rooms.join(SeatRequest {
            room: claims.room.clone(),
            participant_id: crate::secret::random_id("p"),
            role: claims.role,
            display_name: claims.name.clone(),
            subject: claims.sub.clone(),
            admitted,
            limits: profile.limits(&self.app.config),
            outbox: self.outbox.clone(),
        });
        let taken = match taken {
            Ok(t) => t,
            Err(SeatError::RoomFull) => return self.error(id, ErrorCode::RoomFull, "the room is full"),
            Err(SeatError::WaitingRoomFull) => {
                return self.error(id, ErrorCode::WaitingRoomFull, "the waiting room is full; try again in a moment");
            }
            Err(_) => return self.error(id, ErrorCode::Internal, "could not take a seat"),
        };
        let seat = taken.seat.clone();
        let took_over = taken.replaced.is_some();
        if let Some(old) = taken.replaced {
            // The same link or account joined again: the older connection is
            // told and closed, and its media goes (the new page brings its own).
            if let Some(outbox) = &old.outbox {
                outbox.send(ServerMessage::Error {
                    id: None,
                    code: ErrorCode::SeatReplaced,
                    message: "you joined from another window or device".into(),
                });
                outbox.close(close_code::SEAT_REPLACED, "joined elsewhere");
            }
            if old.in_sfu {
                let _ = self
                    .app
                    .sfu
                    .remove_participant(&RoomId(seat.room.clone()), &ParticipantId(seat.participant.clone()))
                    .await;
            }
        }
        info!(room = %seat.room, participant = %seat.participant, role = claims.role.as_str(), admitted = taken.admitted, took_over, "joined");
        audit_if_visit(
            &self.app,
            &seat.room,
            &claims.sub,
            "joined",
            Some(format!("{} {}", seat.participant, claims.role.as_str())),
        )
        .await;
        self.role = Some(claims.role);
        self.subject = claims.sub.clone();
        self.profile = profile;
        self.send(ServerMessage::Joined {
            id,
            room_id: seat.room.clone(),
            participant_id: seat.participant.clone(),
            role: claims.role,
            resume_token: taken.resume_token,
            admitted: taken.admitted,
            participants: taken.others,
            // The credentials expire with the join token that earned them.
            ice_servers: self.app.ice_servers(&seat.participant, claims.exp),
        });
        if let Some(me) = self.app.rooms.info(&seat.room, &seat.participant) {
            if taken.admitted {
                // A takeover keeps the participant: the others know it already.
                if !took_over {
                    self.app.rooms.broadcast(
                        &seat.room,
                        Some(&seat.participant),
                        &ServerMessage::ParticipantJoined { participant: me },
                    );
                }
            } else {
                let message = waiting_message(&self.app, &seat.room, me, 0).await;
                self.app.rooms.send_to_clinicians(&seat.room, &message);
            }
        }
        if claims.role == Role::Clinician {
            // Show the clinician who is already waiting.
            for (info, waited) in self.app.rooms.waiting(&seat.room) {
                self.send(waiting_message(&self.app, &seat.room, info, waited).await);
            }
        }
        self.seat = Some(seat);
    }

    async fn resume(&mut self, id: Option<String>, resume_token: &str, frame: &str) {
        if self.seat.is_some() {
            return self.error(id, ErrorCode::AlreadyJoined, "this connection already holds a seat");
        }
        if let Some(room) = crate::room_registry::room_of_resume_token(resume_token) {
            match self.route(&id, room, frame).await {
                Route::Here => {}
                Route::Bridged | Route::Failed => return,
            }
        }
        let Ok(resumed) = self.app.rooms.resume(resume_token, self.outbox.clone()) else {
            return self.error(id, ErrorCode::ResumeFailed, "unknown resume token, or the grace period has ended");
        };
        let seat = resumed.seat.clone();
        self.profile = RoomProfile::of(&self.app, &seat.room).await;
        info!(room = %seat.room, participant = %seat.participant, "resumed");
        self.role = Some(resumed.me.role);
        self.subject = resumed.subject.clone();
        // Whatever was missed while away is restated whole: the people, the
        // tracks the subscribe connection carries now, and an unanswered offer.
        let tracks = if resumed.in_sfu {
            self.app
                .sfu
                .subscribed_tracks(&RoomId(seat.room.clone()), &ParticipantId(seat.participant.clone()))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(track_info)
                .collect()
        } else {
            Vec::new()
        };
        self.send(ServerMessage::Resumed {
            id,
            room_id: seat.room.clone(),
            participant_id: seat.participant.clone(),
            role: resumed.me.role,
            resume_token: resumed.resume_token,
            admitted: resumed.me.admitted,
            participants: resumed.others,
            tracks,
            media: resumed.in_sfu,
            ice_servers: self
                .app
                .ice_servers(&seat.participant, crate::join_token::unix_now() + crate::turn::FRESH_CREDENTIAL_TTL),
        });
        if let Some(sdp) = resumed.pending_offer {
            self.send(ServerMessage::SubscribeOffer { sdp });
        }
        if resumed.me.role == Role::Clinician {
            for (info, waited) in self.app.rooms.waiting(&seat.room) {
                self.send(waiting_message(&self.app, &seat.room, info, waited).await);
            }
        }
        self.seat = Some(seat);
    }

    /// Messages that need a seat. Returns false when the session must end.
    async fn seated(&mut self, seat: SeatRef, message: ClientMessage) -> bool {
        // A seat taken over by another connection (a resume, the same link
        // joining again) is no longer this socket's to act on, even before
        // its close frame goes out.
        if !self.app.rooms.holds(&seat) {
            self.seat = None;
            self.error(
                message.id().map(str::to_owned),
                ErrorCode::SeatReplaced,
                "this seat is now held by another connection",
            );
            self.outbox.close(close_code::SEAT_REPLACED, "seat held by another connection");
            return false;
        }
        let room = RoomId(seat.room.clone());
        let participant = ParticipantId(seat.participant.clone());
        let admitted = self.app.rooms.info(&seat.room, &seat.participant).is_some_and(|i| i.admitted);
        let clinician = self.role == Some(Role::Clinician);
        let needs_media = matches!(
            message,
            ClientMessage::Chat { .. }
                | ClientMessage::PublishOffer { .. }
                | ClientMessage::SubscribeAnswer { .. }
                | ClientMessage::SubscribeRestart { .. }
                | ClientMessage::Trickle { .. }
                | ClientMessage::Mute { .. }
                | ClientMessage::PreferredSize { .. }
                | ClientMessage::RaiseHand { .. }
                | ClientMessage::MuteAll { .. }
                | ClientMessage::LowerHand { .. }
        );
        if needs_media && !admitted {
            self.error(message.id().map(str::to_owned), ErrorCode::NotAdmitted, "wait until the clinician admits you");
            return true;
        }
        let clinician_only = matches!(
            message,
            ClientMessage::Admit { .. }
                | ClientMessage::Deny { .. }
                | ClientMessage::AskToWait { .. }
                | ClientMessage::EndVisit { .. }
                | ClientMessage::LowerHand { .. }
                | ClientMessage::MuteAll { .. }
        );
        if clinician_only && !clinician {
            self.security(
                SecurityEvent::ActionForbidden,
                serde_json::json!({ "subject": self.subject, "room": seat.room, "action": message.type_name() }),
            );
            self.error(message.id().map(str::to_owned), ErrorCode::Forbidden, "only a clinician may do this");
            return true;
        }
        let in_sfu = self.app.rooms.with_seat(&seat.room, &seat.participant, |s| s.in_sfu).unwrap_or(false);
        if !in_sfu && matches!(message, ClientMessage::SubscribeAnswer { .. } | ClientMessage::SubscribeRestart { .. })
        {
            let id = message.id().map(str::to_owned);
            return match message {
                ClientMessage::SubscribeAnswer { .. } => {
                    self.error(id, ErrorCode::NoPendingOffer, "no subscribe offer is pending");
                    true
                }
                _ => {
                    self.error(id, ErrorCode::MediaNotStarted, "send publish_offer first");
                    true
                }
            };
        }
        let sfu = &self.app.sfu;
        match message {
            ClientMessage::PublishOffer { id, sdp } => {
                let result = if in_sfu {
                    sfu.publish_offer(&room, &participant, sdp).await
                } else {
                    let options = self.profile.media_options(&self.app.config);
                    match sfu.create_room(room.clone(), options).await {
                        Ok(()) => match sfu.add_participant(&room, participant.clone(), sdp).await {
                            Ok((answer, events)) => {
                                let generation = self
                                    .app
                                    .rooms
                                    .with_seat(&seat.room, &seat.participant, |s| {
                                        s.in_sfu = true;
                                        s.media_generation += 1;
                                        s.media_generation
                                    })
                                    .unwrap_or(0);
                                tokio::spawn(pump_media_events(self.app.clone(), seat.clone(), generation, events));
                                Ok(answer)
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(sdp) => self.send(ServerMessage::PublishAnswer { id, sdp }),
                    Err(e) => self.sfu_error(id, e),
                }
            }
            ClientMessage::SubscribeAnswer { id, sdp } => match sfu.answer_subscribe(&room, &participant, sdp).await {
                Ok(()) => {
                    self.app.rooms.with_seat(&seat.room, &seat.participant, |s| s.pending_subscribe_offer = None);
                    self.send(ServerMessage::Ack { id });
                }
                Err(SfuError::ParticipantNotFound) => {
                    self.error(id, ErrorCode::NoPendingOffer, "no subscribe offer is pending")
                }
                Err(e) => self.sfu_error(id, e),
            },
            ClientMessage::SubscribeRestart { id, new_connection } => {
                match sfu.restart_subscribe(&room, &participant, new_connection).await {
                    Ok(()) => self.send(ServerMessage::Ack { id }),
                    Err(e) => self.sfu_error(id, e),
                }
            }
            ClientMessage::Trickle { id, connection, candidate } => {
                let connection = match connection {
                    PeerConnection::Publish => Connection::Publish,
                    PeerConnection::Subscribe => Connection::Subscribe,
                };
                match sfu.trickle(&room, &participant, connection, candidate.candidate).await {
                    // Trickle before the connection exists is harmless: ICE-lite learns addresses from checks.
                    Ok(()) | Err(SfuError::ParticipantNotFound) | Err(SfuError::RoomNotFound) => {}
                    Err(e) => self.sfu_error(id, e),
                }
            }
            ClientMessage::Mute { id, kind, muted } => {
                if self.app.rooms.set_muted(&seat.room, &seat.participant, kind, muted).is_some() {
                    self.app.rooms.broadcast(
                        &seat.room,
                        Some(&seat.participant),
                        &ServerMessage::MuteChanged { participant_id: seat.participant.clone(), kind, muted },
                    );
                }
                self.send(ServerMessage::Ack { id });
            }
            ClientMessage::RaiseHand { id, raised } => {
                if self.app.rooms.set_hand(&seat.room, &seat.participant, raised) == Some(true) {
                    self.app.rooms.broadcast(
                        &seat.room,
                        Some(&seat.participant),
                        &ServerMessage::HandChanged { participant_id: seat.participant.clone(), raised },
                    );
                }
                self.send(ServerMessage::Ack { id });
            }
            ClientMessage::LowerHand { id, participant_id } => {
                match self.app.rooms.set_hand(&seat.room, &participant_id, false) {
                    None => {
                        self.error(id, ErrorCode::ParticipantNotFound, "no such participant in the call");
                        return true;
                    }
                    Some(true) => self.app.rooms.broadcast(
                        &seat.room,
                        Some(&seat.participant),
                        &ServerMessage::HandChanged { participant_id, raised: false },
                    ),
                    Some(false) => {}
                }
                self.send(ServerMessage::Ack { id });
            }
            ClientMessage::MuteAll { id } => {
                // Everyone else in the call (not the waiting room) is asked;
                // their clients mute and announce it with `mute`.
                self.app.rooms.broadcast(&seat.room, Some(&seat.participant), &ServerMessage::MuteRequested);
                self.send(ServerMessage::Ack { id });
            }
            ClientMessage::PreferredSize { id, participant_id, height, pinned } => {
                if height == 0 {
                    self.error(id, ErrorCode::InvalidSize, "a preferred height must be at least 1 pixel");
                    return true;
                }
                if !in_sfu {
                    self.error(id, ErrorCode::MediaNotStarted, "send a publish_offer first");
                    return true;
                }
                let preference = teleconsult_sfu::VideoPreference {
                    max_height: Some(u16::try_from(height).unwrap_or(u16::MAX)),
                    keep: pinned,
                };
                let publisher = ParticipantId(participant_id);
                match sfu.set_video_preference(&room, &participant, &publisher, preference).await {
                    Ok(()) => self.send(ServerMessage::Ack { id }),
                    // We are in the media room (checked above): the other one is not.
                    Err(SfuError::ParticipantNotFound) => {
                        self.error(id, ErrorCode::ParticipantNotFound, "no such participant in the call")
                    }
                    Err(SfuError::InvalidPreference) => {
                        self.error(id, ErrorCode::InvalidSize, "a preferred height must be at least 1 pixel")
                    }
                    Err(e) => self.sfu_error(id, e),
                }
            }
            ClientMessage::Chat { id, text } => {
                if text.trim().is_empty() || text.chars().count() > MAX_CHAT_CHARS {
                    self.error(id, ErrorCode::BadMessage, "chat text must have 1 to 1000 characters");
                    return true;
                }
                let display_name =
                    self.app.rooms.info(&seat.room, &seat.participant).map(|i| i.display_name).unwrap_or_default();
                self.app.rooms.broadcast(
                    &seat.room,
                    None,
                    &ServerMessage::ChatMessage { participant_id: seat.participant.clone(), display_name, text },
                );
                self.send(ServerMessage::Ack { id });
            }
            ClientMessage::Admit { id, participant_id } => {
                let in_call = self.profile.limits(&self.app.config).in_call;
                match self.app.rooms.admit(&seat.room, &participant_id, in_call) {
                    Ok((info, others, waited)) => {
                        self.app.metrics.admitted_after(waited);
                        if let Some(subject) =
                            self.app.rooms.with_seat(&seat.room, &participant_id, |s| s.subject.clone())
                        {
                            if let Some(cluster) = &self.app.cluster {
                                cluster.record_admission(&seat.room, &subject).await;
                            }
                            // An enrolled patient came to their class.
                            if self.profile.group {
                                crate::group_sessions::record_attendance(&self.app, &subject).await;
                            }
                        }
                        self.app.rooms.send_to(
                            &seat.room,
                            &participant_id,
                            ServerMessage::Admitted {
                                participants: others,
                                ice_servers: self.app.ice_servers(
                                    &participant_id,
                                    crate::join_token::unix_now() + crate::turn::FRESH_CREDENTIAL_TTL,
                                ),
                            },
                        );
                        self.app.rooms.broadcast(
                            &seat.room,
                            Some(&participant_id),
                            &ServerMessage::ParticipantJoined { participant: info },
                        );
                        let detail = format!("{participant_id} waited_secs={}", waited.as_secs());
                        audit_if_visit(&self.app, &seat.room, &self.subject, "admitted", Some(detail)).await;
                        info!(room = %seat.room, participant = %participant_id, "admitted");
                        self.send(ServerMessage::Ack { id });
                    }
                    Err(e) => self.seat_error(id, e),
                }
            }
            ClientMessage::Deny { id, participant_id, message } => {
                match self.check_waiting(&seat.room, &participant_id, message.as_deref().unwrap_or("")) {
                    Err((code, why)) => self.error(id, code, why),
                    Ok(()) => {
                        self.app.rooms.send_to(&seat.room, &participant_id, ServerMessage::Denied { message });
                        let target = self.app.rooms.leave(&seat.room, &participant_id);
                        if let Some(outbox) = target.as_ref().and_then(|t| t.outbox.as_ref()) {
                            outbox.close(close_code::DENIED, "denied");
                        }
                        // The link stays out until a clinician lets it back in.
                        if let Some(link_id) = target.as_ref().and_then(|t| t.subject.strip_prefix("link:")) {
                            let now = self.app.clock.now();
                            if let Err(e) = self.app.store.set_link_denied(link_id, Some(now)).await {
                                tracing::error!(error = %e, room = %seat.room, "could not record the denial");
                            }
                        }
                        self.app.rooms.send_to_clinicians(
                            &seat.room,
                            &ServerMessage::ParticipantLeft {
                                participant_id: participant_id.clone(),
                                reason: "denied".into(),
                            },
                        );
                        audit_if_visit(&self.app, &seat.room, &self.subject, "denied", Some(participant_id.clone()))
                            .await;
                        self.send(ServerMessage::Ack { id });
                    }
                }
            }
            ClientMessage::AskToWait { id, participant_id, message } => {
                match self.check_waiting(&seat.room, &participant_id, &message) {
                    Err((code, why)) => self.error(id, code, why),
                    Ok(()) => {
                        self.app.rooms.send_to(&seat.room, &participant_id, ServerMessage::WaitMessage { message });
                        self.send(ServerMessage::Ack { id });
                    }
                }
            }
            ClientMessage::EndVisit { id } => {
                let clinician_id = self.subject.strip_prefix("clinician:").unwrap_or(&self.subject).to_string();
                let visit = self.app.store.visit_by_id(&seat.room).await.ok().flatten();
                if visit.as_ref().is_some_and(|v| !matches!(v.status, VisitStatus::Scheduled | VisitStatus::InProgress))
                {
                    self.error(id, ErrorCode::VisitClosed, "the visit is already over");
                    return true;
                }
                // Acknowledge first: closing the room closes this socket too.
                self.send(ServerMessage::Ack { id: id.clone() });
                if visit.is_some() {
                    if let Err(e) = crate::visits::end(&self.app, &clinician_id, &seat.room).await {
                        self.error(id, ErrorCode::VisitClosed, &e.message);
                        return true;
                    }
                } else {
                    crate::visit_rooms::close_room(&self.app, &seat.room, "visit_ended").await;
                }
                self.seat = None;
                return false;
            }
            ClientMessage::Leave { id } => {
                self.send(ServerMessage::Ack { id });
                leave_room(&self.app, &seat.room, &seat.participant, "left").await;
                self.seat = None;
                self.outbox.close(1000, "left");
                return false;
            }
            // Handled before a seat is needed.
            ClientMessage::Hello { .. }
            | ClientMessage::Join { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Ping { .. } => {}
        }
        true
    }

    /// The target of `deny` or `ask_to_wait` must be in the waiting room,
    /// and the clinician's note short.
    fn check_waiting(&self, room: &str, participant_id: &str, note: &str) -> Result<(), (ErrorCode, &'static str)> {
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err((ErrorCode::BadMessage, "message is longer than 500 characters"));
        }
        match self.app.rooms.info(room, participant_id) {
            None => Err((ErrorCode::ParticipantNotFound, "no such participant")),
            Some(info) if info.admitted => Err((ErrorCode::NotWaiting, "the participant is not waiting")),
            Some(_) => Ok(()),
        }
    }

    fn seat_error(&self, id: Option<String>, e: SeatError) {
        match e {
            SeatError::NotWaiting => self.error(id, ErrorCode::NotWaiting, "the participant is not waiting"),
            SeatError::RoomFull => self.error(id, ErrorCode::RoomFull, "the call is full"),
            _ => self.error(id, ErrorCode::ParticipantNotFound, "no such participant"),
        }
    }

    fn sfu_error(&self, id: Option<String>, e: SfuError) {
        let code = match &e {
            SfuError::RoomFull => ErrorCode::RoomFull,
            SfuError::InvalidSdp(_) => ErrorCode::InvalidSdp,
            SfuError::NoPendingOffer => ErrorCode::NoPendingOffer,
            SfuError::InvalidCandidate => ErrorCode::InvalidCandidate,
            SfuError::RoomNotFound => ErrorCode::RoomClosed,
            SfuError::ParticipantNotFound => ErrorCode::MediaNotStarted,
            SfuError::TooManyTracks { .. } => ErrorCode::TooManyTracks,
            SfuError::WorkerGone | SfuError::Fault => ErrorCode::Internal,
            _ => ErrorCode::Internal,
        };
        let message = match &e {
            // str0m's SDP errors describe the SDP, not the peer; keep them short.
            SfuError::InvalidSdp(why) => format!("invalid SDP: {}", why.chars().take(200).collect::<String>()),
            other => other.to_string(),
        };
        self.error(id, code, &message);
    }

    /// The socket is gone: keep the seat for the grace period, then free it.
    async fn on_socket_closed(&mut self) {
        let Some(seat) = self.seat.take() else { return };
        if !self.app.rooms.detach(&seat, Instant::now()) {
            return;
        }
        debug!(room = %seat.room, participant = %seat.participant, "socket dropped; seat held for resume");
        let app = self.app.clone();
        let grace = app.config.resume_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if app.rooms.still_detached(&seat) {
                info!(room = %seat.room, participant = %seat.participant, "resume grace ended; seat freed");
                leave_room(&app, &seat.room, &seat.participant, "timeout").await;
            }
        });
    }
}

/// Whether a join token's credential still holds: the visit is open, the
/// link neither revoked nor denied, the staff account active. Tokens are
/// short-lived, but what they stand for can be withdrawn sooner.
async fn credential_still_good(app: &App, claims: &JoinClaims) -> Result<(), (ErrorCode, &'static str)> {
    let internal = (ErrorCode::Internal, "could not check the credential");
    match app.store.visit_by_id(&claims.room).await {
        Ok(Some(v)) if !v.status.is_live() => {
            return Err((ErrorCode::VisitClosed, "this visit is over or cancelled"));
        }
        Ok(_) => {}
        Err(_) => return Err(internal),
    }
    if let Some(link_id) = claims.sub.strip_prefix("link:") {
        match app.store.link_by_id(link_id).await {
            Ok(Some(link)) if link.revoked_at.is_some() => {
                return Err((ErrorCode::LinkRevoked, "this link has been withdrawn"));
            }
            Ok(Some(link)) if link.denied_at.is_some() => {
                return Err((ErrorCode::LinkDenied, "the clinician has turned this link away"));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err((ErrorCode::LinkRevoked, "this link has been withdrawn")),
            Err(_) => return Err(internal),
        }
    }
    if let Some(clinician_id) = claims.sub.strip_prefix("clinician:") {
        match app.store.clinician_by_id(clinician_id).await {
            Ok(Some(c)) if c.active => {}
            Ok(_) => return Err((ErrorCode::AccountDisabled, "this account is disabled")),
            Err(_) => return Err(internal),
        }
    }
    Ok(())
}

/// Closes the seats held under a withdrawn credential (a disabled account,
/// a revoked or denied link): each is told why, closed, and freed.
pub async fn withdraw_seats(app: &App, subject: &str, code: ErrorCode, why: &'static str) -> usize {
    let seats = app.rooms.seats_of_subject(subject);
    for (room, participant) in &seats {
        app.rooms.send_to(room, participant, ServerMessage::Error { id: None, code, message: why.to_string() });
        if let Some(outbox) = app.rooms.with_seat(room, participant, |s| s.outbox.clone()).flatten() {
            outbox.close(close_code::CREDENTIAL_WITHDRAWN, "credential withdrawn");
        }
        leave_room(app, room, participant, "removed").await;
    }
    seats.len()
}

/// Frees a seat: media removed, everyone told, audited.
pub async fn leave_room(app: &App, room: &str, participant: &str, reason: &str) {
    let Some(seat) = app.rooms.leave(room, participant) else { return };
    audit_if_visit(app, room, &seat.subject, "left", Some(format!("{participant} {reason}"))).await;
    if seat.in_sfu {
        let _ = app.sfu.remove_participant(&RoomId(room.to_string()), &ParticipantId(participant.to_string())).await;
    }
    info!(room = %room, participant = %participant, reason, "left");
    let left = ServerMessage::ParticipantLeft { participant_id: participant.to_string(), reason: reason.to_string() };
    if seat.info.admitted {
        app.rooms.broadcast(room, None, &left);
    } else {
        app.rooms.send_to_clinicians(room, &left);
    }
}

/// A `participant_waiting` message, with the visit's questionnaire for patients.
async fn waiting_message(app: &App, room: &str, participant: ParticipantInfo, waited_secs: u64) -> ServerMessage {
    let questionnaire = if participant.role == Role::Patient {
        app.store.visit_by_id(room).await.ok().flatten().and_then(|v| v.questionnaire)
    } else {
        None
    };
    let red_flags = questionnaire
        .as_ref()
        .and_then(|q| serde_json::from_value::<crate::questionnaire::Answers>(q.clone()).ok())
        .map(|a| a.red_flags(&app.config.red_flags).into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    ServerMessage::ParticipantWaiting { participant, waited_secs, questionnaire, red_flags }
}

/// Relays one participant's media events to whichever session holds its
/// seat. If the stream ends without the sfu saying why (its worker died),
/// the seat's media is marked gone and the client told to set it up again.
async fn pump_media_events(
    app: Arc<App>,
    seat: SeatRef,
    generation: u64,
    mut events: mpsc::UnboundedReceiver<ParticipantEvent>,
) {
    let mut told = false;
    while let Some(event) = events.recv().await {
        let message = match event {
            ParticipantEvent::SubscribeOffer { sdp } => {
                app.rooms.with_seat(&seat.room, &seat.participant, |s| s.pending_subscribe_offer = Some(sdp.clone()));
                ServerMessage::SubscribeOffer { sdp }
            }
            ParticipantEvent::TrackAdded(t) => ServerMessage::TrackAdded { track: track_info(t) },
            ParticipantEvent::TrackRemoved(t) => ServerMessage::TrackRemoved { track: track_info(t) },
            ParticipantEvent::VideoPaused { track, paused } => {
                ServerMessage::VideoPaused { track: track_info(track), paused }
            }
            ParticipantEvent::Connected(Connection::Subscribe) => {
                // Remote media now reaches the seat: its join time ends here.
                let subject =
                    app.rooms.with_seat(&seat.room, &seat.participant, |s| s.subject.clone()).unwrap_or_default();
                if let Some(link_id) = subject.strip_prefix("link:") {
                    app.metrics.media_connected(link_id);
                }
                continue;
            }
            ParticipantEvent::Connected(_) => continue,
            ParticipantEvent::Removed(reason) => {
                told = true;
                app.rooms.with_seat(&seat.room, &seat.participant, |s| {
                    s.in_sfu = false;
                    s.pending_subscribe_offer = None;
                });
                if reason == RemovedReason::RoomClosed || reason == RemovedReason::Shutdown {
                    ServerMessage::RoomClosed { reason: reason.as_str().into() }
                } else {
                    ServerMessage::MediaRemoved { reason: reason.as_str().into() }
                }
            }
            _ => continue,
        };
        app.rooms.send_to(&seat.room, &seat.participant, message);
    }
    if told {
        return;
    }
    // Ended unannounced: only the seat's current media session matters.
    let lost = app
        .rooms
        .with_seat(&seat.room, &seat.participant, |s| {
            let current = s.in_sfu && s.media_generation == generation;
            if current {
                s.in_sfu = false;
                s.pending_subscribe_offer = None;
            }
            current
        })
        .unwrap_or(false);
    if lost {
        info!(room = %seat.room, participant = %seat.participant, "media session lost with its worker");
        app.rooms.send_to(
            &seat.room,
            &seat.participant,
            ServerMessage::MediaRemoved { reason: RemovedReason::WorkerRestarted.as_str().into() },
        );
    }
}

fn track_info(t: teleconsult_sfu::SubscribedTrack) -> TrackInfo {
    TrackInfo {
        participant_id: t.publisher.0,
        kind: match t.kind {
            teleconsult_sfu::TrackKind::Audio => teleconsult_protocol::TrackKind::Audio,
            teleconsult_sfu::TrackKind::Video => teleconsult_protocol::TrackKind::Video,
        },
        mid: t.mid,
        track_id: t.track_id,
    }
}
