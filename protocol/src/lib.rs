//! Wire types of the Teleconsult signaling protocol, version 1.
//!
//! Every WebSocket frame is a JSON text object tagged by `"type"`. A request
//! that expects a reply carries an `"id"`, echoed in the reply (and in an
//! `error` caused by it). `docs/protocol.md` is the prose contract; these types
//! are the same contract in code, shared by the server and every Rust client.
//!
//! The server parses with [`ClientMessage`] and answers with [`ServerMessage`];
//! clients do the reverse. Unknown fields are ignored so that minor additions
//! stay compatible; an unknown `type` is an error (`unknown_type`).

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. A client sends it in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest text frame the server accepts, in bytes. SDP with a few
/// m-lines is ~5 kB; this leaves room without letting a peer make us buffer
/// megabytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerConnection {
    /// The connection the client offers, carrying its own audio and video.
    Publish,
    /// The connection the server offers, carrying everyone else's tracks.
    Subscribe,
}

/// The role a join token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A clinician leading the visit.
    Clinician,
    /// The patient the visit is for.
    Patient,
    /// Someone the visit invites: a family member or an interpreter.
    Guest,
}

impl Role {
    /// The lowercase name used on the wire and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Patient => "patient",
            Role::Guest => "guest",
        }
    }
}

/// Kind of a media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Opus audio.
    Audio,
    /// VP8 or H.264 video.
    Video,
}

/// An ICE candidate as browsers serialise `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line, e.g. `candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host`.
    pub candidate: String,
    /// The media section the candidate belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The index of that media section, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
}

/// A STUN or TURN server, shaped as a browser's `RTCIceServer`: hand it to
/// `RTCPeerConnection`'s `iceServers` as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:` and `turns:` URLs (RFC 7065), e.g. `turns:turn.example.org:443?transport=tcp`.
    pub urls: Vec<String>,
    /// TURN REST username, `<expiry unix seconds>:<participant id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// base64(HMAC-SHA1(shared secret, username)), good until the expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A participant as other participants see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Server-assigned id, stable for the participant's stay (including resumes).
    pub participant_id: String,
    /// Role granted by the join token.
    pub role: Role,
    /// The name to show, as given in the join token.
    pub display_name: String,
    /// Whether their microphone is muted.
    pub audio_muted: bool,
    /// Whether their camera is off.
    pub video_muted: bool,
    /// Whether they are in the call (false: in the waiting room).
    #[serde(default = "yes")]
    pub admitted: bool,
    /// Whether their hand is raised (group sessions).
    #[serde(default)]
    pub hand_raised: bool,
}

fn yes() -> bool {
    true
}

/// One remote track in the subscribe connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The participant publishing this track.
    pub participant_id: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// The media section (`a=mid`) carrying it in the subscribe connection.
    pub mid: String,
    /// The `msid` track id in the subscribe SDP.
    pub track_id: String,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message on every connection.
    Hello {
        /// Request id, echoed in `welcome`.
        #[serde(default)]
        id: Option<String>,
        /// Protocol version the client speaks; must equal [`PROTOCOL_VERSION`].
        protocol: u32,
    },
    /// Take a seat in the room the token names.
    Join {
        #[serde(default)]
        id: Option<String>,
        /// A join JWT.
        token: String,
    },
    /// Take back a seat after the WebSocket dropped, within the grace period.
    Resume {
        #[serde(default)]
        id: Option<String>,
        /// The `resume_token` from `joined` (or the last `resumed`).
        resume_token: String,
    },
    /// SDP offer for the publish connection: the first one, an ICE restart, or
    /// a renegotiation.
    PublishOffer {
        #[serde(default)]
        id: Option<String>,
        sdp: String,
    },
    /// SDP answer to a `subscribe_offer`.
    SubscribeAnswer {
        #[serde(default)]
        id: Option<String>,
        sdp: String,
    },
    /// Ask the server for a fresh subscribe offer: an ICE restart on the
    /// existing connection, or, with `new_connection`, an offer for a brand-new
    /// connection (after a page reload) carrying every current track.
    SubscribeRestart {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        new_connection: bool,
    },
    /// A client ICE candidate (optional: the server learns addresses from checks).
    Trickle {
        #[serde(default)]
        id: Option<String>,
        connection: PeerConnection,
        candidate: IceCandidate,
    },
    /// Tell the room the client muted or unmuted a track.
    Mute {
        #[serde(default)]
        id: Option<String>,
        kind: TrackKind,
        muted: bool,
    },
    /// How large the client shows a remote participant's video: the
    /// server then sends a simulcast layer no taller than `height` (a
    /// single-layer video is sent as it comes).
    PreferredSize {
        #[serde(default)]
        id: Option<String>,
        /// Whose video.
        participant_id: String,
        /// The tile's height in device pixels (CSS height times
        /// `devicePixelRatio`); at least 1.
        height: u32,
        /// The tile is pinned: keep its video (lowest layer) when the link
        /// is too poor for every video; others pause first.
        #[serde(default)]
        pinned: bool,
    },
    /// Raise (or lower) one's own hand, to ask to speak in a group session.
    RaiseHand {
        #[serde(default)]
        id: Option<String>,
        raised: bool,
    },
    /// Clinicians only: lower a participant's raised hand.
    LowerHand {
        #[serde(default)]
        id: Option<String>,
        participant_id: String,
    },
    /// Clinicians only: ask everyone else in the call to mute their
    /// microphone (each client mutes and says so with `mute`; anyone may
    /// unmute again).
    MuteAll {
        #[serde(default)]
        id: Option<String>,
    },
    /// A text chat line to everyone in the call (not stored, not logged).
    Chat {
        #[serde(default)]
        id: Option<String>,
        text: String,
    },
    /// Clinicians only: let a waiting participant into the call.
    Admit {
        #[serde(default)]
        id: Option<String>,
        participant_id: String,
    },
    /// Clinicians only: turn a waiting participant away, with an optional message.
    Deny {
        #[serde(default)]
        id: Option<String>,
        participant_id: String,
        #[serde(default)]
        message: Option<String>,
    },
    /// Clinicians only: send a waiting participant a message ("5 minutes").
    AskToWait {
        #[serde(default)]
        id: Option<String>,
        participant_id: String,
        message: String,
    },
    /// Clinicians only: end the visit for everyone.
    EndVisit {
        #[serde(default)]
        id: Option<String>,
    },
    /// Leave the room for good.
    Leave {
        #[serde(default)]
        id: Option<String>,
    },
    /// Round-trip probe; answered with `pong`.
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
}

impl ClientMessage {
    /// The request id, if the client gave one.
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientMessage::Hello { id, .. }
            | ClientMessage::Join { id, .. }
            | ClientMessage::Resume { id, .. }
            | ClientMessage::PublishOffer { id, .. }
            | ClientMessage::SubscribeAnswer { id, .. }
            | ClientMessage::SubscribeRestart { id, .. }
            | ClientMessage::Trickle { id, .. }
            | ClientMessage::Mute { id, .. }
            | ClientMessage::PreferredSize { id, .. }
            | ClientMessage::RaiseHand { id, .. }
            | ClientMessage::LowerHand { id, .. }
            | ClientMessage::MuteAll { id }
            | ClientMessage::Chat { id, .. }
            | ClientMessage::Admit { id, .. }
            | ClientMessage::Deny { id, .. }
            | ClientMessage::AskToWait { id, .. }
            | ClientMessage::EndVisit { id }
            | ClientMessage::Leave { id }
            | ClientMessage::Ping { id } => id.as_deref(),
        }
    }

    /// The wire name of the message type, for metrics and logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Hello { .. } => "hello",
            ClientMessage::Join { .. } => "join",
            ClientMessage::Resume { .. } => "resume",
            ClientMessage::PublishOffer { .. } => "publish_offer",
            ClientMessage::SubscribeAnswer { .. } => "subscribe_answer",
            ClientMessage::SubscribeRestart { .. } => "subscribe_restart",
            ClientMessage::Trickle { .. } => "trickle",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::PreferredSize { .. } => "preferred_size",
            ClientMessage::RaiseHand { .. } => "raise_hand",
            ClientMessage::LowerHand { .. } => "lower_hand",
            ClientMessage::MuteAll { .. } => "mute_all",
            ClientMessage::Chat { .. } => "chat",
            ClientMessage::Admit { .. } => "admit",
            ClientMessage::Deny { .. } => "deny",
            ClientMessage::AskToWait { .. } => "ask_to_wait",
            ClientMessage::EndVisit { .. } => "end_visit",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Ping { .. } => "ping",
        }
    }
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Reply to `hello`.
    Welcome {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        protocol: u32,
        /// Seconds a dropped connection may take to `resume`.
        resume_grace_secs: u64,
    },
    /// Reply to `join`: the client now holds a seat.
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room_id: String,
        participant_id: String,
        role: Role,
        /// Secret for `resume`; rotated on every resume.
        resume_token: String,
        /// Whether the seat is in the call; false means the waiting room.
        admitted: bool,
        /// Everyone else already in the room.
        participants: Vec<ParticipantInfo>,
        /// TURN servers with credentials that expire with the join token;
        /// absent when the server has no TURN configured.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// Reply to `resume`. It restates everything a client may have missed
    /// while it was away: who is in the room and which remote tracks its
    /// subscribe connection carries now (a `track_added` or `track_removed`
    /// sent during the drop is not replayed one by one). A subscribe offer
    /// still waiting for an answer follows as `subscribe_offer`.
    Resumed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room_id: String,
        participant_id: String,
        role: Role,
        resume_token: String,
        admitted: bool,
        participants: Vec<ParticipantInfo>,
        /// The remote tracks now in the subscribe connection (empty before
        /// media started).
        #[serde(default)]
        tracks: Vec<TrackInfo>,
        /// Whether the media server still holds this seat's media. False
        /// after `publish_offer` was never sent, or when the media was
        /// removed while the socket was down (a `media_removed` the client
        /// missed): a client in the call then publishes again.
        #[serde(default)]
        media: bool,
        /// Fresh TURN credentials (absent without TURN).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// To clinicians: someone is in the waiting room (sent on arrival, when
    /// a clinician joins, and when the questionnaire changes).
    ParticipantWaiting {
        participant: ParticipantInfo,
        /// Seconds since they arrived.
        waited_secs: u64,
        /// The visit's questionnaire answers, if the patient gave them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        questionnaire: Option<serde_json::Value>,
        /// Answers that need attention: `fever`, `breathlessness`, `pain`.
        #[serde(default)]
        red_flags: Vec<String>,
    },
    /// To a waiting participant: you are in the call; send `publish_offer`.
    Admitted {
        participants: Vec<ParticipantInfo>,
        /// Fresh TURN credentials for the media connections about to be
        /// made (absent without TURN): a wait may outlast the join token's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// To a waiting participant: the clinician turned you away. The socket closes.
    Denied {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// To a waiting participant: a message from the clinician ("5 minutes").
    WaitMessage { message: String },
    /// To a clinician, wherever they are connected: something needs attention.
    /// `kind` is `red_flags` (a patient's questionnaire; `detail` lists them).
    Notice { kind: String, visit_id: String, detail: String },
    /// A chat line from someone in the call (the sender gets it too).
    ChatMessage { participant_id: String, display_name: String, text: String },
    /// Reply to `publish_offer`.
    PublishAnswer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        sdp: String,
    },
    /// The server's offer for the subscribe connection. The client answers
    /// with `subscribe_answer`.
    SubscribeOffer { sdp: String },
    /// Someone took a seat.
    ParticipantJoined { participant: ParticipantInfo },
    /// Someone left, was removed, or their resume grace ran out.
    ParticipantLeft {
        participant_id: String,
        /// `left`, `timeout`, `denied` (to clinicians only) or `removed`
        /// (a withdrawn credential).
        reason: String,
    },
    /// A remote track now flows in the subscribe connection.
    TrackAdded { track: TrackInfo },
    /// A remote track was removed from the subscribe connection.
    TrackRemoved { track: TrackInfo },
    /// A remote video was paused because your link is too poor for it
    /// (`paused: true`; its audio goes on), or flows again. Sent only for
    /// simulcast videos.
    VideoPaused { track: TrackInfo, paused: bool },
    /// Someone muted or unmuted.
    MuteChanged { participant_id: String, kind: TrackKind, muted: bool },
    /// A participant raised or lowered their hand, or a clinician lowered it.
    HandChanged { participant_id: String, raised: bool },
    /// A clinician asked everyone to mute: mute the microphone and send `mute`.
    MuteRequested,
    /// The server dropped this participant's media connections (`timeout`:
    /// no packet for too long; `connection_failed`; `fault`: the media
    /// server failed on this participant's data; `worker_restarted`: the
    /// room's media worker was restarted). The seat is kept: send a new
    /// `publish_offer` (from a new connection) to come back.
    MediaRemoved { reason: String },
    /// The room is closing; the server closes the socket after this.
    RoomClosed {
        /// `server_shutdown`, `visit_ended`, `visit_cancelled`, `room_closed`
        /// or `shutdown` (the media server stopped).
        reason: String,
    },
    /// The room moves to another server node (this one is draining, or the
    /// room's node was lost). The server closes the socket after this (close
    /// code 4010). The client drops its media, opens a new WebSocket (to the
    /// same address) and joins again with a join token: its admission is
    /// kept, so a patient already in the call goes straight back in.
    Move {
        /// `node_draining` or `node_lost`.
        reason: String,
    },
    /// Reply to `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Generic acknowledgement of a request that has no other reply.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A request failed. `code` is stable; `message` is for people.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
    },
}

/// Stable error codes of the WebSocket protocol. See `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not an object with a string `type`.
    BadJson,
    /// The `type` is not one this protocol version knows.
    UnknownType,
    /// The message is well-formed JSON but a field is missing or has the wrong type.
    BadMessage,
    /// The frame is larger than [`MAX_MESSAGE_BYTES`]; the connection is closed.
    MessageTooLarge,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// `hello` carried a protocol version the server does not speak.
    UnsupportedVersion,
    /// A message other than `hello` arrived first.
    HelloRequired,
    /// `join` or `resume` arrived on a connection that already holds a seat.
    AlreadyJoined,
    /// The message needs a seat; send `join` first.
    NotJoined,
    /// The join token is malformed, unsigned, or signed with the wrong key or algorithm.
    InvalidToken,
    /// The join token has expired.
    TokenExpired,
    /// The room already holds its maximum number of participants.
    RoomFull,
    /// The room is closed or closing.
    RoomClosed,
    /// The resume token is unknown or its grace period has ended.
    ResumeFailed,
    /// The SDP did not parse or could not be applied.
    InvalidSdp,
    /// A `subscribe_answer` arrived when no subscribe offer was pending.
    NoPendingOffer,
    /// The ICE candidate did not parse.
    InvalidCandidate,
    /// The message needs media, but no `publish_offer` has been accepted yet.
    MediaNotStarted,
    /// The client sends too many messages; slow down.
    RateLimited,
    /// Media needs admission from the waiting room first.
    NotAdmitted,
    /// The role may not do this (e.g. a patient sending `admit`).
    Forbidden,
    /// No participant with that id in this room.
    ParticipantNotFound,
    /// The participant is not in the waiting room.
    NotWaiting,
    /// The visit is over or cancelled.
    VisitClosed,
    /// The waiting room holds its maximum number of people; try again later.
    WaitingRoomFull,
    /// A clinician turned this link away; it opens again only if a clinician
    /// lets it back in.
    LinkDenied,
    /// The link was withdrawn (its visit cancelled, or the guest link revoked).
    LinkRevoked,
    /// The staff account was disabled.
    AccountDisabled,
    /// The same link or staff account joined again from another connection,
    /// which now holds the seat. This connection closes.
    SeatReplaced,
    /// A publish offer carries more tracks than a participant may publish.
    TooManyTracks,
    /// A `preferred_size` with a height of 0.
    InvalidSize,
    /// No node of the cluster can take the room now (none live, or the
    /// cluster's shared state is unreachable); try again in a moment.
    ClusterUnavailable,
    /// Something failed on the server; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// The snake_case wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomClosed => "room_closed",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NoPendingOffer => "no_pending_offer",
            ErrorCode::InvalidCandidate => "invalid_candidate",
            ErrorCode::MediaNotStarted => "media_not_started",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotAdmitted => "not_admitted",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ParticipantNotFound => "participant_not_found",
            ErrorCode::NotWaiting => "not_waiting",
            ErrorCode::VisitClosed => "visit_closed",
            ErrorCode::WaitingRoomFull => "waiting_room_full",
            ErrorCode::LinkDenied => "link_denied",
            ErrorCode::LinkRevoked => "link_revoked",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::SeatReplaced => "seat_replaced",
            ErrorCode::TooManyTracks => "too_many_tracks",
            ErrorCode::InvalidSize => "invalid_size",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text frame could not become a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// `bad_json`, `unknown_type` or `bad_message`.
    pub code: ErrorCode,
    /// What was wrong, without echoing the frame.
    pub message: String,
    /// The request's `id`, when the frame was a JSON object with a string
    /// `id`, so that the error answers the request it is about.
    pub id: Option<String>,
}

/// Longest request id echoed back, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// The `id` of a frame that is not decoded in full (it came too fast, or
/// it is too large), so that the error still answers its request. Other
/// fields are skipped without being kept.
pub fn request_id_of(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct OnlyId {
        id: Option<String>,
    }
    serde_json::from_str::<OnlyId>(text).ok()?.id.filter(|i| i.chars().count() <= MAX_ID_CHARS)
}

/// Parses one client text frame, telling apart broken JSON, an unknown
/// `type` and a known type with bad fields, so each gets its own code.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError {
        code: ErrorCode::BadJson,
        message: format!("not valid JSON: {e}"),
        id: None,
    })?;
    let id = value.get("id").and_then(|i| i.as_str()).filter(|i| i.chars().count() <= MAX_ID_CHARS).map(str::to_owned);
    let Some(kind) = value.get("type").and_then(|t| t.as_str()).map(str::to_owned) else {
        return Err(DecodeError {
            code: ErrorCode::BadJson,
            message: "expected a JSON object with a string \"type\"".into(),
            id,
        });
    };
    const KNOWN: [&str; 19] = [
        "chat",
        "raise_hand",
        "lower_hand",
        "mute_all",
        "admit",
        "deny",
        "ask_to_wait",
        "end_visit",
        "hello",
        "join",
        "resume",
        "publish_offer",
        "subscribe_answer",
        "subscribe_restart",
        "trickle",
        "mute",
        "preferred_size",
        "leave",
        "ping",
    ];
    if !KNOWN.contains(&kind.as_str()) {
        return Err(DecodeError {
            code: ErrorCode::UnknownType,
            // The type is echoed truncated so a hostile peer cannot bloat logs.
            message: format!("unknown message type {:?}", kind.chars().take(32).collect::<String>()),
            id,
        });
    }
    let message: ClientMessage = serde_json::from_value(value).map_err(|e| DecodeError {
        code: ErrorCode::BadMessage,
        message: format!("invalid {kind} message: {e}"),
        id: id.clone(),
    })?;
    if message.id().is_some_and(|i| i.chars().count() > MAX_ID_CHARS) {
        return Err(DecodeError {
            code: ErrorCode::BadMessage,
            message: format!("id must have at most {MAX_ID_CHARS} characters"),
            id: None,
        });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_messages() {
        let m = decode_client_message(r#"{"type":"hello","protocol":1}"#).unwrap();
        assert_eq!(m, ClientMessage::Hello { id: None, protocol: 1 });
        let m = decode_client_message(
            r#"{"type":"trickle","id":"7","connection":"publish","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}"#,
        )
        .unwrap();
        assert_eq!(m.id(), Some("7"));
        assert_eq!(m.type_name(), "trickle");
    }

    #[test]
    fn tells_apart_the_three_decode_failures() {
        assert_eq!(decode_client_message("{not json").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(decode_client_message("[1,2]").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(decode_client_message(r#"{"type":"dance"}"#).unwrap_err().code, ErrorCode::UnknownType);
        assert_eq!(decode_client_message(r#"{"type":"hello"}"#).unwrap_err().code, ErrorCode::BadMessage);
        // The request id is echoed whenever it can be read.
        assert_eq!(decode_client_message(r#"{"type":"dance","id":"7"}"#).unwrap_err().id.as_deref(), Some("7"));
        assert_eq!(decode_client_message(r#"{"type":"join","id":"8"}"#).unwrap_err().id.as_deref(), Some("8"));
        assert_eq!(decode_client_message(r#"{"id":"9"}"#).unwrap_err().id.as_deref(), Some("9"));
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(MAX_ID_CHARS + 1));
        assert_eq!(decode_client_message(&long).unwrap_err().id, None);
        assert_eq!(request_id_of(&long), None);
        assert_eq!(
            request_id_of(r#"{"type":"chat","id":"c7","text":"hi","extra":[1,{"a":2}]}"#).as_deref(),
            Some("c7")
        );
        assert_eq!(request_id_of(r#"{"type":"chat","id":7}"#), None);
        assert_eq!(request_id_of("not json"), None);
        assert_eq!(
            decode_client_message(r#"{"type":"mute","kind":"smell","muted":true}"#).unwrap_err().code,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn error_code_wire_form_matches_as_str() {
        for code in [ErrorCode::BadJson, ErrorCode::RoomFull, ErrorCode::NoPendingOffer, ErrorCode::Internal] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn server_messages_are_tagged_snake_case() {
        let m = ServerMessage::Error { id: Some("3".into()), code: ErrorCode::RoomFull, message: "full".into() };
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "room_full");
        let back: ServerMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}

/// Property tests: whatever text arrives, decoding answers with a message or
/// a coded error, never a panic; and every message a client can send
/// survives the round trip through JSON.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn any_id() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9_-]{0,70}")
    }

    fn any_client_message() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (any_id(), any::<u32>()).prop_map(|(id, protocol)| ClientMessage::Hello { id, protocol }),
            (any_id(), ".{0,200}").prop_map(|(id, token)| ClientMessage::Join { id, token }),
            (any_id(), ".{0,80}").prop_map(|(id, resume_token)| ClientMessage::Resume { id, resume_token }),
            (any_id(), ".{0,500}").prop_map(|(id, sdp)| ClientMessage::PublishOffer { id, sdp }),
            (any_id(), any::<bool>())
                .prop_map(|(id, new_connection)| ClientMessage::SubscribeRestart { id, new_connection }),
            (any_id(), any::<bool>(), any::<bool>()).prop_map(|(id, audio, muted)| ClientMessage::Mute {
                id,
                kind: if audio { TrackKind::Audio } else { TrackKind::Video },
                muted
            }),
            (any_id(), ".{0,100}").prop_map(|(id, text)| ClientMessage::Chat { id, text }),
            (any_id(), ".{0,40}", any::<u32>(), any::<bool>()).prop_map(|(id, participant_id, height, pinned)| {
                ClientMessage::PreferredSize { id, participant_id, height, pinned }
            }),
            (any_id(), ".{0,40}", proptest::option::of(".{0,60}"))
                .prop_map(|(id, participant_id, message)| ClientMessage::Deny { id, participant_id, message }),
            any_id().prop_map(|id| ClientMessage::Leave { id }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_decodes_or_is_refused_with_a_code(text in ".{0,300}") {
            if let Err(e) = decode_client_message(&text) {
                prop_assert!(matches!(e.code, ErrorCode::BadJson | ErrorCode::UnknownType | ErrorCode::BadMessage));
            }
        }

        #[test]
        fn json_objects_with_any_fields_never_panic(
            kind in prop_oneof![
                Just("join".to_string()),
                Just("trickle".to_string()),
                Just("mute".to_string()),
                Just("preferred_size".to_string()),
                Just("admit".to_string()),
                ".{0,12}"
            ],
            keys in proptest::collection::vec("[a-z_]{1,12}", 0..6),
            values in proptest::collection::vec(prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!(1)),
                Just(serde_json::json!("x")), Just(serde_json::json!([1, {"a": 2}])), Just(serde_json::json!({"candidate": 5}))], 0..6),
        ) {
            let mut object = serde_json::Map::new();
            object.insert("type".into(), serde_json::json!(kind));
            for (k, v) in keys.into_iter().zip(values) {
                object.insert(k, v);
            }
            let _ = decode_client_message(&serde_json::Value::Object(object).to_string());
        }

        #[test]
        fn every_client_message_survives_the_round_trip(message in any_client_message()) {
            let text = serde_json::to_string(&message).unwrap();
            match decode_client_message(&text) {
                Ok(back) => prop_assert_eq!(back, message),
                // Only an over-long id is refused, and then without echoing it.
                Err(e) => prop_assert!(e.code == ErrorCode::BadMessage && e.id.is_none()),
            }
        }
    }
}
