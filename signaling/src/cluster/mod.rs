//! Several nodes sharing Redis and PostgreSQL.
//!
//! Nodes are homogeneous: each runs signaling and its own media server.
//! Redis holds what the nodes must agree on *now*:
//!
//! - **the node registry**: every node writes its status (address, state,
//!   load, the rooms it holds and who is in them) every
//!   [`HEARTBEAT`], under a key that lapses after [`NODE_TTL`]; a node
//!   whose key lapsed is dead to the others;
//! - **placement**: `room → node`, claimed with a compare-and-set script so
//!   that two nodes racing for a new room agree on one owner; the owner
//!   refreshes the claim with its heartbeat, and a claim naming a dead or
//!   draining node is taken over by the next node that needs the room;
//! - **admissions**: who a clinician let into a room, so that after the
//!   room moves (a node drained or lost) the patient goes straight back in;
//! - **the scheduler's lease**, so that one node at a time runs it;
//! - **the sign-in throttle's counts** (see [`sign_in_throttle`]);
//! - **room commands** on a pub/sub channel: close a room, show a waiting
//!   patient's answers, tell a clinician's sessions something, whichever
//!   node holds them.
//!
//! PostgreSQL holds everything that must survive (visits, links, the
//! outbox). A room itself lives on one node at a time, in memory: a
//! WebSocket that lands on another node is bridged to it (see [`bridge`]).

pub mod bridge;
pub mod sign_in_throttle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use teleconsult_protocol::ServerMessage;
use tracing::{info, warn};

use crate::app::App;
use crate::room_registry::Presence;

/// How often a node writes its status.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// A node whose status is older than this is dead to the others.
pub const NODE_TTL: Duration = Duration::from_millis(3000);
/// A placement lapses this long after its owner last refreshed it.
pub const PLACEMENT_TTL: Duration = Duration::from_secs(15);
/// Admissions are remembered this long after the last one in a room.
const ADMISSIONS_TTL_SECS: i64 = 24 * 3600;
/// Redis calls that take longer than this fail (a node must not hang on Redis).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Cluster settings (from `--redis`, `--node-id`, `--node-url`, `--redis-prefix`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The Redis URL.
    pub redis_url: String,
    /// This node's id; `None`: host name and port.
    pub node_id: Option<String>,
    /// Where other nodes reach this node's HTTP; `None`: the bound address.
    pub node_url: Option<String>,
    /// Prefix of every key and channel.
    pub prefix: String,
}

/// Why a cluster call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis refused, failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No live node accepts rooms (all draining, or none registered).
    #[error("no live node accepts rooms")]
    NoLiveNode,
}

/// A node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes new rooms.
    Active,
    /// Moving its calls away before it exits; takes no new rooms.
    Draining,
}

/// What a node says of itself every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: String,
    /// Where other nodes reach its HTTP listener.
    pub url: String,
    /// Active or draining.
    pub state: NodeState,
    /// Rooms it holds.
    pub rooms: usize,
    /// Seats in those rooms (in calls and waiting).
    pub participants: usize,
    /// Its process's CPU use over the last heartbeat, percent of one core.
    pub cpu_percent: f64,
    /// Who is in each of its rooms.
    pub presence: HashMap<String, Presence>,
    /// When it started (Unix seconds).
    pub started_at: i64,
}

impl NodeStatus {
    /// What placement compares: seats weigh most, rooms break ties.
    fn load(&self) -> usize {
        self.participants * 2 + self.rooms
    }
}

/// Something every node applies to the rooms and sessions it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomCommand {
    /// Close a room for everyone in it.
    CloseRoom {
        /// The room.
        room: String,
        /// The `room_closed` reason.
        reason: String,
    },
    /// A waiting patient answered the questionnaire: show the room's clinicians.
    QuestionnaireAnswered {
        /// The room.
        room: String,
        /// The answers.
        questionnaire: serde_json::Value,
        /// The red flags they raise.
        red_flags: Vec<String>,
    },
    /// Send a message to every session of a token subject.
    ToSubject {
        /// The subject (`clinician:<id>`).
        subject: String,
        /// The message.
        message: ServerMessage,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    command: RoomCommand,
}

/// This node's membership: its Redis connection, id and state.
pub struct Cluster {
    client: redis::Client,
    redis: ConnectionManager,
    prefix: String,
    /// This node's id.
    pub node_id: String,
    /// Where other nodes reach this node.
    pub node_url: String,
    draining: AtomicBool,
    /// Raised when draining starts (bridged sessions move at once).
    drain_signal: tokio::sync::watch::Sender<bool>,
    started_at: i64,
    /// The other nodes as last read (refreshed every heartbeat).
    peers: Mutex<Vec<NodeStatus>>,
    /// Proves a bridged WebSocket comes from a node of this cluster.
    bridge_key: String,
}

/// Compare-and-set a placement: `KEYS[1]` the room's key, `ARGV[1]` the
/// owner seen (empty: none), `ARGV[2]` the new owner, `ARGV[3]` the TTL in
/// milliseconds. Returns the owner after the call.
const PLACE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return current";

/// Refresh each claim in `KEYS` this node (`ARGV[1]`) holds, or take it if
/// it lapsed, for `ARGV[2]` milliseconds. Returns the owner of each after
/// the call. One round trip for every room a node holds.
const HOLD_SCRIPT: &str = r"
local owners = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current == false or current == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    owners[i] = ARGV[1]
  else
    owners[i] = current
  end
end
return owners";

/// Delete a key only if it still holds `ARGV[1]`.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl Cluster {
    /// Connects to Redis and registers this node. `http_addr` is the bound
    /// listener (for the default id and URL); `secret` the shared token secret.
    pub async fn join(
        settings: &ClusterSettings,
        http_addr: std::net::SocketAddr,
        secret: &str,
        now: i64,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        let node_id = settings.node_id.clone().unwrap_or_else(|| default_node_id(http_addr));
        let node_url = settings.node_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
        use sha2::Digest;
        let bridge_key = hex(&sha2::Sha256::digest([b"teleconsult/bridge\0".as_slice(), secret.as_bytes()].concat()));
        let cluster = Cluster {
            client,
            redis,
            prefix: settings.prefix.clone(),
            node_id,
            node_url,
            draining: AtomicBool::new(false),
            drain_signal: tokio::sync::watch::Sender::new(false),
            started_at: now,
            peers: Mutex::new(Vec::new()),
            bridge_key,
        };
        Ok(cluster)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
    }

    /// Whether this node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Raised (true) when this node starts draining.
    pub fn draining_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.drain_signal.subscribe()
    }

    /// Starts draining: takes no new rooms from now on (written at once),
    /// and sessions bridged through this node are told to move.
    pub async fn start_draining(&self, mut status: NodeStatus) {
        self.draining.store(true, Ordering::Relaxed);
        status.state = NodeState::Draining;
        self.drain_signal.send_replace(true);
        if let Err(e) = self.write_status(&status).await {
            warn!(error = %e, "could not announce draining; the next heartbeat will");
        }
    }

    /// Writes this node's status (a heartbeat).
    pub async fn write_status(&self, status: &NodeStatus) -> Result<(), ClusterError> {
        let json = serde_json::to_string(status).unwrap_or_default();
        let mut conn = self.conn();
        redis::pipe()
            .cmd("SET")
            .arg(self.key(&["node", &self.node_id]))
            .arg(json)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.key(&["nodes"]))
            .arg(&self.node_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes this node from the registry (a clean exit).
    pub async fn leave(&self) {
        let mut conn = self.conn();
        let _ = redis::pipe()
            .cmd("DEL")
            .arg(self.key(&["node", &self.node_id]))
            .ignore()
            .cmd("SREM")
            .arg(self.key(&["nodes"]))
            .arg(&self.node_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await;
    }

    /// Every live node (this one included), as Redis has them now.
    pub async fn live_nodes(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        let mut conn = self.conn();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.key(&["nodes"])).query_async(&mut conn).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&["node", id])).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            match value.and_then(|v| serde_json::from_str::<NodeStatus>(&v).ok()) {
                Some(status) => live.push(status),
                None => dead.push(id.clone()),
            }
        }
        if !dead.is_empty() {
            let _: Result<(), _> = redis::cmd("SREM").arg(self.key(&["nodes"])).arg(&dead).query_async(&mut conn).await;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    /// The other nodes as of the last heartbeat (for presence and the
    /// dashboard, which must not wait on Redis).
    pub fn peers(&self) -> Vec<NodeStatus> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Who is in `room` on another node, as of the last heartbeat.
    pub fn remote_presence(&self, room: &str) -> Option<Presence> {
        let peers = self.peers.lock().ok()?;
        peers.iter().filter(|n| n.id != self.node_id).find_map(|n| n.presence.get(room).copied())
    }

    /// The node a room lives on, placing it on the least-loaded active node
    /// if it has none, or if its node is dead, draining, or `unreachable`
    /// (this node just failed to reach it). Atomic: nodes racing for the
    /// same room agree on one owner.
    pub async fn place(&self, room: &str, unreachable: Option<&str>) -> Result<NodeStatus, ClusterError> {
        let key = self.key(&["room", room]);
        for _ in 0..4 {
            let mut conn = self.conn();
            let current: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            let nodes = self.live_nodes().await?;
            let usable = |n: &&NodeStatus| n.state == NodeState::Active && Some(n.id.as_str()) != unreachable;
            if let Some(owner) = &current
                && let Some(node) = nodes.iter().filter(usable).find(|n| &n.id == owner)
            {
                return Ok(node.clone());
            }
            // Least loaded; on a tie, the first by id (so that every node
            // would choose the same, and placement is predictable).
            let Some(chosen) = nodes.iter().filter(usable).min_by_key(|n| (n.load(), n.id.clone())).cloned() else {
                return Err(ClusterError::NoLiveNode);
            };
            let owner: String = redis::Script::new(PLACE_SCRIPT)
                .key(&key)
                .arg(current.as_deref().unwrap_or(""))
                .arg(&chosen.id)
                .arg(PLACEMENT_TTL.as_millis() as u64)
                .invoke_async(&mut conn)
                .await?;
            if owner == chosen.id {
                info!(room, node = %chosen.id, "room placed");
                return Ok(chosen);
            }
            // Another node placed it first: look again.
        }
        Err(ClusterError::NoLiveNode)
    }

    /// Refreshes this node's claim on each room it holds. Returns the rooms
    /// another node now owns (this node was taken for dead): their people
    /// must move.
    async fn hold_rooms(&self, rooms: &[String]) -> Result<Vec<String>, ClusterError> {
        let keys: Vec<String> = rooms.iter().map(|room| self.key(&["room", room])).collect();
        let owners = self.hold(&keys, PLACEMENT_TTL).await?;
        Ok(rooms.iter().zip(owners).filter(|(_, owner)| *owner != self.node_id).map(|(room, _)| room.clone()).collect())
    }

    /// Takes or keeps each of `keys` for this node for `ttl`; the owner of each after.
    async fn hold(&self, keys: &[String], ttl: Duration) -> Result<Vec<String>, ClusterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let hold = redis::Script::new(HOLD_SCRIPT);
        let mut script = hold.prepare_invoke();
        for key in keys {
            script.key(key);
        }
        let owners: Vec<String> =
            script.arg(&self.node_id).arg(ttl.as_millis() as u64).invoke_async(&mut self.conn()).await?;
        Ok(owners)
    }

    /// Deletes `key` if this node holds it.
    async fn release(&self, key: String) {
        let _: Result<i64, _> =
            redis::Script::new(RELEASE_SCRIPT).key(key).arg(&self.node_id).invoke_async(&mut self.conn()).await;
    }

    /// Gives up this node's claim on a room (it drained, or closed).
    pub async fn release_room(&self, room: &str) {
        self.release(self.key(&["room", room])).await;
    }

    /// Remembers that a clinician let `subject` into `room`.
    pub async fn record_admission(&self, room: &str, subject: &str) {
        let key = self.key(&["admitted", room]);
        let mut conn = self.conn();
        let result = redis::pipe()
            .cmd("SADD")
            .arg(&key)
            .arg(subject)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ADMISSIONS_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await;
        if let Err(e) = result {
            warn!(error = %e, room, "could not record an admission; after a move this person waits again");
        }
    }

    /// Whether a clinician let `subject` into `room` (on any node). A Redis
    /// failure answers no: the person waits to be admitted again.
    pub async fn was_admitted(&self, room: &str, subject: &str) -> bool {
        let mut conn = self.conn();
        redis::cmd("SISMEMBER")
            .arg(self.key(&["admitted", room]))
            .arg(subject)
            .query_async::<bool>(&mut conn)
            .await
            .unwrap_or(false)
    }

    /// Forgets a closed room's admissions.
    pub async fn forget_room(&self, room: &str) {
        let mut conn = self.conn();
        let _: Result<(), _> = redis::cmd("DEL").arg(self.key(&["admitted", room])).query_async(&mut conn).await;
    }

    /// Takes or keeps the lease `name` for `ttl`. True while this node holds it.
    pub async fn hold_lease(&self, name: &str, ttl: Duration) -> bool {
        let owners = self.hold(&[self.key(&["lease", name])], ttl).await;
        matches!(owners.as_deref(), Ok([owner]) if *owner == self.node_id)
    }

    /// Gives up the lease `name` if this node holds it.
    pub async fn release_lease(&self, name: &str) {
        self.release(self.key(&["lease", name])).await;
    }

    /// Sends a room command to every other node.
    pub async fn publish(&self, command: RoomCommand) {
        let envelope = Envelope { from: self.node_id.clone(), command };
        let Ok(text) = serde_json::to_string(&envelope) else { return };
        let mut conn = self.conn();
        if let Err(e) = redis::cmd("PUBLISH").arg(self.key(&["commands"])).arg(text).query_async::<i64>(&mut conn).await
        {
            warn!(error = %e, "could not send a room command to the other nodes");
        }
    }

    /// The header value that proves a bridged WebSocket comes from a node.
    pub fn bridge_proof(&self) -> &str {
        &self.bridge_key
    }

    /// The client address a bridging node vouches for, if the request
    /// carries a valid proof.
    pub fn bridged_client(&self, headers: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
        let proof = headers.get(bridge::PROOF_HEADER)?.to_str().ok()?;
        if !crate::secret::constant_time_eq(proof.as_bytes(), self.bridge_key.as_bytes()) {
            return None;
        }
        headers.get(bridge::CLIENT_HEADER)?.to_str().ok()?.parse().ok()
    }
}

/// The default node id: host name and HTTP port.
fn default_node_id(http_addr: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(48).collect();
    let host = if host.is_empty() { "node".to_string() } else { host };
    format!("{host}-{}", http_addr.port())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This node's status now.
pub fn status_now(app: &App, cluster: &Cluster, cpu_percent: f64) -> NodeStatus {
    let presence: HashMap<String, Presence> =
        app.rooms.room_sizes().into_iter().map(|(room, _)| (room.clone(), app.rooms.presence(&room))).collect();
    NodeStatus {
        id: cluster.node_id.clone(),
        url: cluster.node_url.clone(),
        state: if cluster.is_draining() { NodeState::Draining } else { NodeState::Active },
        rooms: presence.len(),
        participants: presence.values().map(|p| p.in_call + p.waiting).sum(),
        cpu_percent,
        presence,
        started_at: cluster.started_at,
    }
}

/// Runs the heartbeat and the command listener until shutdown.
pub fn spawn(app: Arc<App>, cluster: Arc<Cluster>) {
    let heartbeat_app = app.clone();
    let heartbeat_cluster = cluster.clone();
    tokio::spawn(async move { heartbeat(heartbeat_app, heartbeat_cluster).await });
    tokio::spawn(async move { listen(app, cluster).await });
}

async fn heartbeat(app: Arc<App>, cluster: Arc<Cluster>) {
    let mut shutdown = app.shutdown.clone();
    let mut ticker = tokio::time::interval(HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = CpuMeter::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => break,
        }
        let status = status_now(&app, &cluster, cpu.percent());
        if let Err(e) = cluster.write_status(&status).await {
            warn!(error = %e, "heartbeat failed; the other nodes take this one for dead in {:?}", NODE_TTL);
            continue;
        }
        let rooms: Vec<String> = status.presence.keys().cloned().collect();
        match cluster.hold_rooms(&rooms).await {
            Ok(lost) => {
                for room in lost {
                    // This node was taken for dead and the room placed
                    // elsewhere: one room must not live on two nodes.
                    warn!(room = %room, "room now placed on another node; moving its people there");
                    crate::visit_rooms::move_room(&app, &room, "node_lost").await;
                }
            }
            Err(e) => warn!(error = %e, "could not refresh room placements"),
        }
        match cluster.live_nodes().await {
            Ok(nodes) => {
                app.metrics.set_cluster_nodes(&nodes);
                if let Ok(mut peers) = cluster.peers.lock() {
                    *peers = nodes;
                }
            }
            Err(e) => warn!(error = %e, "could not read the node registry"),
        }
    }
}

/// Applies the other nodes' room commands to this node's rooms.
async fn listen(app: Arc<App>, cluster: Arc<Cluster>) {
    let mut shutdown = app.shutdown.clone();
    let channel = cluster.key(&["commands"]);
    loop {
        let pubsub = async {
            let mut pubsub = cluster.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = tokio::select! {
            p = pubsub => match p {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot subscribe to room commands; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            },
            _ = shutdown.changed() => return,
        };
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    let Ok(text) = message.get_payload::<String>() else { continue };
                    let Ok(envelope) = serde_json::from_str::<Envelope>(&text) else { continue };
                    if envelope.from != cluster.node_id {
                        apply(&app, envelope.command).await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        warn!("room command subscription ended; subscribing again");
    }
}

/// Applies a room command to this node's rooms and sessions.
pub async fn apply(app: &App, command: RoomCommand) {
    match command {
        RoomCommand::CloseRoom { room, reason } => crate::visit_rooms::close_local_room(app, &room, &reason).await,
        RoomCommand::QuestionnaireAnswered { room, questionnaire, red_flags } => {
            crate::join_api::show_answers_to_clinicians(app, &room, &questionnaire, &red_flags)
        }
        RoomCommand::ToSubject { subject, message } => {
            app.rooms.send_to_subject(&subject, &message);
        }
    }
}

/// The process's CPU use between two readings, from `/proc/self/stat`.
#[derive(Default)]
struct CpuMeter {
    last: Option<(std::time::Instant, f64)>,
}

impl CpuMeter {
    fn percent(&mut self) -> f64 {
        let Some(cpu_secs) = process_cpu_secs() else { return 0.0 };
        let now = std::time::Instant::now();
        let percent = match self.last {
            Some((at, before)) => {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 { 100.0 * (cpu_secs - before) / wall } else { 0.0 }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu_secs));
        (percent * 10.0).round() / 10.0
    }
}

/// User plus system CPU seconds of this process (Linux), assuming 100 ticks per second.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
