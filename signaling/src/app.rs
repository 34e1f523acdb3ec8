//! The application's shared state: settings, keys, the store, live rooms,
//! the media plane and the clock. Every handler, session and background
//! task gets one `Arc<App>`; nothing else is global.

use std::sync::Arc;

use teleconsult_sfu::SfuHandle;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::join_token::TokenKeys;
use crate::metrics::Metrics;
use crate::room_registry::RoomRegistry;
use crate::secret::Sealer;
use crate::security_log::SecurityLog;
use crate::staff_auth::{LoginThrottle, PasswordChecks};
use crate::store::Store;

/// Everything the handlers share.
pub struct App {
    /// Resolved settings.
    pub config: Config,
    /// Token keys.
    pub keys: TokenKeys,
    /// Seals secrets the server keeps for a while (idempotent answers).
    pub sealer: Sealer,
    /// Seals patient-link tokens, so that reminders resend a visit's link
    /// instead of minting one per attempt (purpose `links`).
    pub link_sealer: Sealer,
    /// The media plane.
    pub sfu: SfuHandle,
    /// Live rooms and seats.
    pub rooms: RoomRegistry,
    /// Counters.
    pub metrics: Metrics,
    /// The durable store.
    pub store: Store,
    /// Wall-clock time (injectable for tests).
    pub clock: Arc<dyn Clock>,
    /// Failed-login slowdown.
    pub login_throttle: LoginThrottle,
    /// Password checks, a few at a time.
    pub password_checks: PasswordChecks,
    /// Security events.
    pub security: SecurityLog,
    /// Open WebSockets per client address.
    pub ws_per_address: crate::ws_limits::ConnectionCounter,
    /// Browser origins allowed on `/ws`.
    pub allowed_origins: Vec<String>,
    /// Whether a browser may also open `/ws` from the origin it reached the
    /// server at (no public URL and no list configured: a development or
    /// test server, perhaps on a wildcard address).
    pub same_host_origin: bool,
    /// Base URL for links (no trailing slash).
    pub public_url: String,
    /// Live snapshots for the ops dashboard.
    pub ops_snapshots: crate::ops_dashboard::Snapshots,
    /// Flips to true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// This node's cluster membership (`None`: a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl App {
    /// TURN servers with credentials for `participant` until `expires_unix`,
    /// or nothing when no TURN server is configured.
    pub fn ice_servers(&self, participant: &str, expires_unix: u64) -> Vec<teleconsult_protocol::IceServer> {
        self.config.turn.as_ref().map(|t| t.ice_servers(participant, expires_unix)).unwrap_or_default()
    }

    /// Who is in `room` now: on this node, or (in a cluster) on the node
    /// that holds it, as of its last heartbeat.
    pub fn presence(&self, room: &str) -> crate::room_registry::Presence {
        let here = self.rooms.presence(room);
        match &self.cluster {
            Some(cluster) if here == Default::default() => cluster.remote_presence(room).unwrap_or(here),
            _ => here,
        }
    }

    /// Rooms with someone in them: on this node, and (in a cluster) on every
    /// live node as of the last heartbeat.
    pub fn occupied_rooms(&self) -> std::collections::HashSet<String> {
        let mut rooms: std::collections::HashSet<String> =
            self.rooms.room_sizes().into_iter().map(|(room, _)| room).collect();
        if let Some(cluster) = &self.cluster {
            rooms.extend(cluster.peers().into_iter().flat_map(|node| node.presence.into_keys()));
        }
        rooms
    }

    /// Sends `message` to every session of `subject`, on every node.
    pub async fn tell_subject(&self, subject: &str, message: &teleconsult_protocol::ServerMessage) {
        self.rooms.send_to_subject(subject, message);
        if let Some(cluster) = &self.cluster {
            let command =
                crate::cluster::RoomCommand::ToSubject { subject: subject.to_string(), message: message.clone() };
            cluster.publish(command).await;
        }
    }

    /// A patient or guest link's URL.
    pub fn link_url(&self, token: &str) -> String {
        format!("{}/join/{token}", self.public_url)
    }

    /// How bookings make patient links.
    pub fn link_settings(&self) -> crate::visits::LinkSettings<'_> {
        crate::visits::LinkSettings { margins: self.link_margins(), sealer: &self.link_sealer }
    }

    /// How long links open before and stay valid after a visit (seconds).
    pub fn link_margins(&self) -> (i64, i64) {
        (self.config.link_opens_before, self.config.link_closes_after)
    }
}
