//! [`SfuHandle`]: the async, cloneable face of the media workers, and their
//! supervisor.
//!
//! A worker thread that dies (a panic outside the core's own guards) is
//! taken out of placement at once, its rooms forgotten (their participants'
//! event streams close, which tells signaling to set their media up again),
//! and, after a short backoff, started afresh on the same port.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tracing::{error, info};

use crate::api::{
    Connection, ParticipantEvent, ParticipantId, ParticipantStats, RoomId, RoomOptions, SfuConfig, SfuError,
    WorkerHealth, WorkerStats,
};
use crate::core::MediaCore;
use crate::udp::SendBatch;
use crate::worker::{Command, MediaSocket, Worker, bind_sockets, bind_tcp_listeners};

/// Handle to the media plane. Cheap to clone; all clones drive the same workers.
///
/// Rooms are pinned to one worker (the live one with the fewest rooms when
/// the room is created). Every call is answered by that worker's thread.
#[derive(Clone)]
pub struct SfuHandle {
    inner: Arc<Inner>,
}

struct Inner {
    config: SfuConfig,
    workers: Vec<WorkerLink>,
    placement: Mutex<HashMap<RoomId, usize>>,
}

struct WorkerLink {
    commands: RwLock<UnboundedSender<Command>>,
    port: u16,
    stats: Arc<Mutex<WorkerStats>>,
    alive: AtomicBool,
    restarts: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SfuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuHandle").field("ports", &self.ports()).finish()
    }
}

/// First wait before a dead worker is restarted; doubled for each restart
/// after, up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF: Duration = Duration::from_millis(250);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts one worker thread on `port` (0: an ephemeral one). Returns its
/// command channel, its port and its thread. A panic that escapes the
/// worker is reported on `deaths` (with the worker's index).
fn spawn_worker(
    index: usize,
    port: u16,
    config: &SfuConfig,
    stats: Arc<Mutex<WorkerStats>>,
    deaths: std::sync::mpsc::Sender<usize>,
) -> Result<(UnboundedSender<Command>, u16, JoinHandle<()>), SfuError> {
    let (port, std_sockets) = bind_sockets(&config.media_ips, port)?;
    let local_addrs: Vec<_> = std_sockets.iter().map(|(a, _)| *a).collect();
    let tcp_port = config.ice_tcp_port.map(|p| if p == 0 { 0 } else { p.saturating_add(index as u16) });
    let std_listeners = match tcp_port {
        Some(p) => bind_tcp_listeners(&config.media_ips, p)?,
        None => Vec::new(),
    };
    let tcp_addrs: Vec<_> = std_listeners.iter().map(|(a, _)| *a).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let core_config = Worker::core_config(&local_addrs, &tcp_addrs, config);
    let seed = u64::from(port) ^ (Instant::now().elapsed().as_nanos() as u64) ^ (std::process::id() as u64) << 20;
    let thread = std::thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            let ran = catch_unwind(AssertUnwindSafe(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "cannot start media worker runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut sockets = Vec::new();
                    for (addr, s) in std_sockets {
                        match MediaSocket::new(addr, s) {
                            Ok(s) => sockets.push(s),
                            Err(e) => error!(error = %e, "cannot register media socket"),
                        }
                    }
                    let mut tcp_listeners = Vec::new();
                    for (addr, l) in std_listeners {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => tcp_listeners.push((addr, l)),
                            Err(e) => error!(error = %e, "cannot register ICE-TCP listener"),
                        }
                    }
                    let (tcp_events_tx, tcp_events) = mpsc::unbounded_channel();
                    let worker = Worker {
                        core: MediaCore::new(core_config, Instant::now(), seed),
                        sockets,
                        tcp_listeners,
                        tcp_events,
                        tcp_events_tx,
                        tcp_connections: HashMap::new(),
                        commands: rx,
                        shared: stats,
                        event_sinks: HashMap::new(),
                        send_scratch: SendBatch::new(),
                    };
                    worker.run().await;
                });
            }));
            if ran.is_err() {
                let _ = deaths.send(index);
            }
        })
        .map_err(|e| SfuError::Bind { addr: format!("worker {index}"), reason: e.to_string() })?;
    Ok((tx, port, thread))
}

impl SfuHandle {
    /// Binds the media sockets and starts the workers and their supervisor.
    ///
    /// Fails if a socket cannot be bound or the configuration is unusable.
    pub fn start(config: SfuConfig) -> Result<SfuHandle, SfuError> {
        if config.workers == 0 {
            return Err(SfuError::Config("workers must be at least 1"));
        }
        if config.media_ips.is_empty() {
            return Err(SfuError::Config("media_ips must name at least one address"));
        }
        if !config.public_ips.is_empty() && config.public_ips.len() != config.media_ips.len() {
            return Err(SfuError::Config("public_ips must name one address per media_ips address"));
        }
        let (deaths_tx, deaths) = std::sync::mpsc::channel();
        let mut workers = Vec::new();
        for index in 0..config.workers {
            let port = if config.port == 0 { 0 } else { config.port.saturating_add(index as u16) };
            let stats = Arc::new(Mutex::new(WorkerStats { worker: index, ..Default::default() }));
            let (tx, port, thread) = spawn_worker(index, port, &config, stats.clone(), deaths_tx.clone())?;
            if let Ok(mut s) = stats.lock() {
                s.port = port;
            }
            info!(worker = index, port, "media worker started");
            workers.push(WorkerLink {
                commands: RwLock::new(tx),
                port,
                stats,
                alive: AtomicBool::new(true),
                restarts: AtomicU64::new(0),
                thread: Mutex::new(Some(thread)),
            });
        }
        let inner = Arc::new(Inner { config, workers, placement: Mutex::new(HashMap::new()) });
        let supervised = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("media-supervisor".into())
            .spawn(move || supervise(supervised, deaths, deaths_tx))
            .map_err(|e| SfuError::Bind { addr: "supervisor".into(), reason: e.to_string() })?;
        Ok(SfuHandle { inner })
    }

    /// Each worker's state: alive, and how often it was restarted.
    pub fn worker_health(&self) -> Vec<WorkerHealth> {
        self.inner
            .workers
            .iter()
            .enumerate()
            .map(|(worker, w)| WorkerHealth {
                worker,
                port: w.port,
                alive: w.alive.load(Ordering::SeqCst),
                restarts: w.restarts.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// Makes a worker thread die on purpose, to exercise the supervisor.
    #[cfg(feature = "fault-injection")]
    pub fn inject_worker_panic(&self, worker: usize) {
        if let Some(w) = self.inner.workers.get(worker)
            && let Ok(commands) = w.commands.read()
        {
            let _ = commands.send(Command::Panic);
        }
    }

    /// The UDP port of each worker.
    pub fn ports(&self) -> Vec<u16> {
        self.inner.workers.iter().map(|w| w.port).collect()
    }

    /// Creates a room (idempotent: an existing room is left as it is).
    pub async fn create_room(&self, room: RoomId, options: RoomOptions) -> Result<(), SfuError> {
        let worker = self.place(&room)?;
        self.call(worker, |reply| Command::CreateRoom { room, options, reply }).await
    }

    /// Closes a room: every participant is removed and told `RoomClosed`.
    pub async fn close_room(&self, room: &RoomId) -> Result<(), SfuError> {
        let worker = self.worker_of(room)?;
        let result = self.call(worker, |reply| Command::CloseRoom { room: room.clone(), reply }).await?;
        if let Ok(mut placement) = self.inner.placement.lock() {
            placement.remove(room);
        }
        result
    }

    /// Adds a participant with the SDP offer of its publish connection.
    /// Returns the SDP answer and the participant's event stream, which
    /// soon carries the first subscribe offer if others publish already.
    pub async fn add_participant(
        &self,
        room: &RoomId,
        participant: ParticipantId,
        publish_offer: String,
    ) -> Result<(String, UnboundedReceiver<ParticipantEvent>), SfuError> {
        let worker = self.worker_of(room)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let answer = self
            .call(worker, |reply| Command::AddParticipant {
                room: room.clone(),
                participant,
                offer: publish_offer,
                events,
                reply,
            })
            .await??;
        Ok((answer, events_rx))
    }

    /// A further publish offer: renegotiation or ICE restart on the same
    /// connection, or a brand-new publish connection (recognised by its DTLS
    /// fingerprint), which replaces the old one.
    pub async fn publish_offer(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        offer: String,
    ) -> Result<String, SfuError> {
        let worker = self.worker_of(room)?;
        self.call(worker, |reply| Command::PublishOffer {
            room: room.clone(),
            participant: participant.clone(),
            offer,
            reply,
        })
        .await?
    }

    /// The participant's answer to the last subscribe offer.
    pub async fn answer_subscribe(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        answer: String,
    ) -> Result<(), SfuError> {
        let worker = self.worker_of(room)?;
        self.call(worker, |reply| Command::AnswerSubscribe {
            room: room.clone(),
            participant: participant.clone(),
            answer,
            reply,
        })
        .await?
    }

    /// How `subscriber` wants `publisher`'s video from now on: the tallest
    /// picture worth sending (a tile's size) and whether to keep it when
    /// the subscriber's link is too poor for every video. It applies to
    /// each of the publisher's simulcast video tracks, and outlasts the
    /// publisher's reconnects; single-layer tracks are not affected.
    ///
    /// Errors: [`SfuError::RoomNotFound`]; [`SfuError::ParticipantNotFound`]
    /// when either participant is not in the room;
    /// [`SfuError::InvalidPreference`] for a height of 0.
    pub async fn set_video_preference(
        &self,
        room: &RoomId,
        subscriber: &ParticipantId,
        publisher: &ParticipantId,
        preference: crate::api::VideoPreference,
    ) -> Result<(), SfuError> {
        let worker = self.worker_of(room)?;
        self.call(worker, |reply| Command::SetVideoPreference {
            room: room.clone(),
            subscriber: subscriber.clone(),
            publisher: publisher.clone(),
            preference,
            reply,
        })
        .await?
    }

    /// Asks for a new subscribe offer: an ICE restart, or (with
    /// `new_connection`) a fresh connection carrying every current track.
    pub async fn restart_subscribe(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        new_connection: bool,
    ) -> Result<(), SfuError> {
        let worker = self.worker_of(room)?;
        self.call(worker, |reply| Command::RestartSubscribe {
            room: room.clone(),
            participant: participant.clone(),
            new_connection,
            reply,
        })
        .await?
    }

    /// A trickled ICE candidate (`candidate:…` attribute text) from the client.
    pub async fn trickle(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        connection: Connection,
        candidate: String,
    ) -> Result<(), SfuError> {
        let worker = self.worker_of(room)?;
        self.call(worker, |reply| Command::Trickle {
            room: room.clone(),
            participant: participant.clone(),
            connection,
            candidate,
            reply,
        })
        .await?
    }

    /// Removes a participant; its tracks leave everyone's subscribe
    /// connection by renegotiation. A room left empty closes.
    pub async fn remove_participant(&self, room: &RoomId, participant: &ParticipantId) -> Result<(), SfuError> {
        let worker = self.worker_of(room)?;
        let removed = self
            .call(worker, |reply| Command::RemoveParticipant {
                room: room.clone(),
                participant: participant.clone(),
                reply,
            })
            .await?;
        if removed { Ok(()) } else { Err(SfuError::ParticipantNotFound) }
    }

    /// The remote tracks a participant's subscribe connection carries (or
    /// is being offered), e.g. to restate them after a signaling resume.
    pub async fn subscribed_tracks(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<Vec<crate::api::SubscribedTrack>, SfuError> {
        let worker = self.worker_of(room)?;
        self.call(worker, |reply| Command::SubscribedTracks {
            room: room.clone(),
            participant: participant.clone(),
            reply,
        })
        .await?
    }

    /// Media stats of every participant on every worker.
    pub async fn participant_stats(&self) -> Vec<ParticipantStats> {
        let mut all = Vec::new();
        for worker in 0..self.inner.workers.len() {
            if let Ok(stats) = self.call(worker, |reply| Command::Stats { reply }).await {
                all.extend(stats);
            }
        }
        all
    }

    /// Counters of each worker (refreshed every 250 ms).
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.inner
            .workers
            .iter()
            .filter_map(|w| {
                let mut stats = w.stats.lock().ok()?.clone();
                stats.restarts = w.restarts.load(Ordering::SeqCst);
                Some(stats)
            })
            .collect()
    }

    /// Removes everyone (each told `Shutdown`), stops the workers and joins
    /// their threads.
    pub async fn shutdown(&self) {
        for worker in 0..self.inner.workers.len() {
            let _ = self.call(worker, |reply| Command::Shutdown { reply }).await;
        }
        for link in &self.inner.workers {
            let thread = link.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
    }

    fn place(&self, room: &RoomId) -> Result<usize, SfuError> {
        let mut placement = self.inner.placement.lock().map_err(|_| SfuError::WorkerGone)?;
        if let Some(worker) = placement.get(room)
            && self.inner.workers[*worker].alive.load(Ordering::SeqCst)
        {
            return Ok(*worker);
        }
        // The live worker with the fewest rooms wins.
        let mut counts = vec![0usize; self.inner.workers.len()];
        for worker in placement.values() {
            counts[*worker] += 1;
        }
        let worker = counts
            .iter()
            .enumerate()
            .filter(|(i, _)| self.inner.workers[*i].alive.load(Ordering::SeqCst))
            .min_by_key(|(_, c)| **c)
            .map(|(i, _)| i)
            .ok_or(SfuError::WorkerGone)?;
        placement.insert(room.clone(), worker);
        Ok(worker)
    }

    fn worker_of(&self, room: &RoomId) -> Result<usize, SfuError> {
        let placement = self.inner.placement.lock().map_err(|_| SfuError::WorkerGone)?;
        placement.get(room).copied().ok_or(SfuError::RoomNotFound)
    }

    async fn call<T>(&self, worker: usize, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SfuError> {
        let link = self.inner.workers.get(worker).ok_or(SfuError::WorkerGone)?;
        let (reply, rx) = oneshot::channel();
        {
            let commands = link.commands.read().map_err(|_| SfuError::WorkerGone)?;
            commands.send(make(reply)).map_err(|_| SfuError::WorkerGone)?;
        }
        rx.await.map_err(|_| SfuError::WorkerGone)
    }
}

/// Restarts workers that die, until the handle is gone.
fn supervise(inner: Weak<Inner>, deaths: std::sync::mpsc::Receiver<usize>, deaths_tx: std::sync::mpsc::Sender<usize>) {
    while let Ok(index) = deaths.recv() {
        let Some(handle) = inner.upgrade() else { return };
        let Some(link) = handle.workers.get(index) else { continue };
        link.alive.store(false, Ordering::SeqCst);
        // Its rooms are gone with it; new ones go elsewhere meanwhile.
        if let Ok(mut placement) = handle.placement.lock() {
            placement.retain(|_, w| *w != index);
        }
        let restarts = link.restarts.load(Ordering::SeqCst);
        error!(worker = index, restarts, "media worker died; restarting it");
        let backoff = RESTART_BACKOFF.saturating_mul(1 << restarts.min(6)).min(RESTART_BACKOFF_MAX);
        drop(handle);
        std::thread::sleep(backoff);
        let Some(handle) = inner.upgrade() else { return };
        let link = &handle.workers[index];
        if let Ok(mut thread) = link.thread.lock()
            && let Some(old) = thread.take()
        {
            let _ = old.join();
        }
        // The dead thread's sockets are closed; its port is free again.
        let mut started = None;
        for _ in 0..50 {
            match spawn_worker(index, link.port, &handle.config, link.stats.clone(), deaths_tx.clone()) {
                Ok(s) => {
                    started = Some(s);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let Some((tx, _, thread)) = started else {
            error!(worker = index, "media worker could not be restarted; it stays out of placement");
            continue;
        };
        if let Ok(mut commands) = link.commands.write() {
            *commands = tx;
        }
        if let Ok(mut t) = link.thread.lock() {
            *t = Some(thread);
        }
        link.restarts.fetch_add(1, Ordering::SeqCst);
        link.alive.store(true, Ordering::SeqCst);
        info!(worker = index, port = link.port, "media worker restarted");
    }
}
