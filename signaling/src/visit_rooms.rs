//! Where visits meet live rooms: a visit's room id is the visit id. Ending
//! a visit closes its room for everyone; both the HTTP API and the
//! clinician's WebSocket use this one path.

use teleconsult_protocol::ServerMessage;
use teleconsult_sfu::RoomId;
use tracing::info;

use crate::app::App;
use crate::store::AuditEvent;

/// Closes a live room, on whichever node holds it: every seat is told
/// `room_closed` with `reason` and its socket closed, and the media room is
/// closed. A room with nobody in it is a no-op.
pub async fn close_room(app: &App, room: &str, reason: &str) {
    close_local_room(app, room, reason).await;
    if let Some(cluster) = &app.cluster {
        let command = crate::cluster::RoomCommand::CloseRoom { room: room.to_string(), reason: reason.to_string() };
        cluster.publish(command).await;
        cluster.release_room(room).await;
        cluster.forget_room(room).await;
    }
}

/// Tells everyone in a room this node holds to move to another node
/// (`move`, then close code 4010), and lets the room go: its seats, its
/// media, and its placement. They join again through any node; their
/// admission is kept in the cluster.
pub async fn move_room(app: &App, room: &str, reason: &'static str) {
    let seats = app.rooms.close_room(room);
    for seat in &seats {
        if let Some(outbox) = &seat.outbox {
            outbox.send(ServerMessage::Move { reason: reason.to_string() });
            outbox.close(crate::room_registry::close_code::MOVED, "room moved; join again");
        }
    }
    let _ = app.sfu.close_room(&RoomId(room.to_string())).await;
    if let Some(cluster) = &app.cluster {
        cluster.release_room(room).await;
    }
    app.metrics.room_moved(reason);
    info!(room, seats = seats.len(), reason, "room moved");
}

/// Closes a room if this node holds it (see [`close_room`]).
pub async fn close_local_room(app: &App, room: &str, reason: &str) {
    let seats = app.rooms.close_room(room);
    for seat in &seats {
        if let Some(outbox) = &seat.outbox {
            outbox.send(ServerMessage::RoomClosed { reason: reason.to_string() });
            outbox.close(1000, "room closed");
        }
    }
    // The media room may already be gone (emptied); that is fine.
    let _ = app.sfu.close_room(&RoomId(room.to_string())).await;
    info!(room, seats = seats.len(), reason, "room closed");
}

/// How many a group session's call holds: a dozen patients and their leader.
pub const GROUP_CALL_CAPACITY: usize = 13;
/// How many may wait to join a group session: the whole class at once.
pub const GROUP_WAITING_CAPACITY: usize = 12;

/// What sets a room's limits and media path: whether it is a group
/// session's (a visit of kind `group`) or a consultation's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomProfile {
    /// A group session: a class of twelve and its leader, simulcast, and
    /// bandwidth estimation so that each viewer gets what its link carries.
    pub group: bool,
}

impl RoomProfile {
    /// The profile of a visit of `kind`.
    pub fn for_kind(kind: crate::store::VisitKind) -> RoomProfile {
        RoomProfile { group: kind == crate::store::VisitKind::Group }
    }

    /// The profile of `room`, read from its visit. A room that is no visit,
    /// or a store failure, gets the consultation profile.
    pub async fn of(app: &App, room: &str) -> RoomProfile {
        match app.store.visit_by_id(room).await {
            Ok(Some(visit)) => RoomProfile::for_kind(visit.kind),
            _ => RoomProfile::default(),
        }
    }

    /// How many people the room holds, in the call and waiting: the
    /// configured limits, raised for a group session to a class of twelve
    /// and its leader.
    pub fn limits(self, config: &crate::config::Config) -> crate::room_registry::RoomLimits {
        let (in_call, waiting) = (config.max_participants, config.max_waiting);
        if self.group {
            crate::room_registry::RoomLimits {
                in_call: in_call.max(GROUP_CALL_CAPACITY),
                waiting: waiting.max(GROUP_WAITING_CAPACITY),
            }
        } else {
            crate::room_registry::RoomLimits { in_call, waiting }
        }
    }

    /// The media room's options: its capacity, and bandwidth estimation for
    /// a group session. Consultations keep the cheaper unpaced path.
    pub fn media_options(self, config: &crate::config::Config) -> teleconsult_sfu::RoomOptions {
        teleconsult_sfu::RoomOptions {
            max_participants: Some(self.limits(config).in_call),
            bandwidth_estimation: self.group,
        }
    }
}

/// Creates a visit's media room ahead of its first publisher (at its start,
/// or before it from the scheduler), so that nothing waits on it then. Not
/// in a cluster: there a room is placed on a node when first joined, and a
/// media room made here would likely sit on the wrong node.
pub async fn provision_media_room(
    app: &App,
    room: &str,
    profile: RoomProfile,
) -> Result<(), teleconsult_sfu::SfuError> {
    if app.cluster.is_some() {
        return Ok(());
    }
    app.sfu.create_room(RoomId(room.to_string()), profile.media_options(&app.config)).await
}

/// An audit event now, with no personal data.
pub fn audit_event(app: &App, actor: &str, action: &str, visit_id: &str, detail: Option<String>) -> AuditEvent {
    AuditEvent {
        at: app.clock.now(),
        actor: actor.to_string(),
        action: action.to_string(),
        visit_id: Some(visit_id.to_string()),
        detail,
    }
}

/// Records an audit event if `room` is a visit; logs (without personal
/// data) if the store fails, since a call must not fail for want of a log line.
pub async fn audit_if_visit(app: &App, room: &str, actor: &str, action: &str, detail: Option<String>) {
    match app.store.visit_by_id(room).await {
        Ok(Some(_)) => {
            if let Err(e) = app.store.audit(&audit_event(app, actor, action, room, detail)).await {
                tracing::error!(error = %e, room, action, "audit write failed");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, room, action, "audit lookup failed"),
    }
}
