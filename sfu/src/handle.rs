//! [`SfuHandle`]: the async, cloneable face of the media workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tracing::info;

use crate::api::{
    Connection, ParticipantEvent, ParticipantId, ParticipantStats, RoomId, RoomOptions, SfuConfig, SfuError,
    WorkerStats,
};
use crate::core::MediaCore;
use crate::worker::{Command, Worker, bind_sockets};

/// Handle to the media plane. Cheap to clone; all clones drive the same workers.
///
/// Rooms are pinned to one worker (the one with the fewest rooms when the
/// room is created). Every call is answered by that worker's thread.
#[derive(Clone)]
pub struct SfuHandle {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Vec<WorkerLink>,
    placement: Mutex<HashMap<RoomId, usize>>,
}

struct WorkerLink {
    commands: UnboundedSender<Command>,
    port: u16,
    stats: Arc<Mutex<WorkerStats>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SfuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuHandle").field("ports", &self.ports()).finish()
    }
}

impl SfuHandle {
    /// Binds the media sockets and starts the workers.
    ///
    /// Fails if a socket cannot be bound or the configuration is unusable.
    pub fn start(config: SfuConfig) -> Result<SfuHandle, SfuError> {
        if config.workers == 0 {
            return Err(SfuError::Config("workers must be at least 1"));
        }
        if config.media_ips.is_empty() {
            return Err(SfuError::Config("media_ips must name at least one address"));
        }
        let mut workers = Vec::new();
        for index in 0..config.workers {
            let port = if config.port == 0 { 0 } else { config.port.saturating_add(index as u16) };
            let (port, std_sockets) = bind_sockets(&config.media_ips, port)?;
            let local_addrs: Vec<_> = std_sockets.iter().map(|(a, _)| *a).collect();
            let (tx, rx) = mpsc::unbounded_channel();
            let stats = Arc::new(Mutex::new(WorkerStats { worker: index, port, ..Default::default() }));
            let core_config = Worker::core_config(local_addrs, &config);
            let shared = stats.clone();
            let seed =
                u64::from(port) ^ (Instant::now().elapsed().as_nanos() as u64) ^ (std::process::id() as u64) << 20;
            let thread = std::thread::Builder::new()
                .name(format!("media-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start media worker runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let mut sockets = Vec::new();
                        for (addr, s) in std_sockets {
                            match tokio::net::UdpSocket::from_std(s) {
                                Ok(s) => sockets.push((addr, s)),
                                Err(e) => tracing::error!(error = %e, "cannot register media socket"),
                            }
                        }
                        let worker = Worker {
                            core: MediaCore::new(core_config, Instant::now(), seed),
                            sockets,
                            commands: rx,
                            shared,
                            event_sinks: Default::default(),
                        };
                        worker.run().await;
                    });
                })
                .map_err(|e| SfuError::Bind { addr: format!("worker {index}"), reason: e.to_string() })?;
            info!(worker = index, port, "media worker started");
            workers.push(WorkerLink { commands: tx, port, stats, thread: Mutex::new(Some(thread)) });
        }
        Ok(SfuHandle { inner: Arc::new(Inner { workers, placement: Mutex::new(HashMap::new()) }) })
    }

    /// The UDP port of each worker.
    pub fn ports(&self) -> Vec<u16> {
        self.inner.workers.iter().map(|w| w.port).collect()
    }

    /// Creates a room (idempotent: an existing room is left as it is).
    pub async fn create_room(&self, room: RoomId, options: RoomOptions) -> Result<(), SfuError> {
        let worker = self.place(&room);
        self.call(worker, |reply| Command::CreateRoom { room, max_participants: options.max_participants, reply }).await
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
        self.inner.workers.iter().filter_map(|w| w.stats.lock().ok().map(|s| s.clone())).collect()
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

    fn place(&self, room: &RoomId) -> usize {
        let Ok(mut placement) = self.inner.placement.lock() else { return 0 };
        if let Some(worker) = placement.get(room) {
            return *worker;
        }
        // Fewest rooms wins; counters lag by at most a refresh, which is fine for balance.
        let mut counts = vec![0usize; self.inner.workers.len()];
        for worker in placement.values() {
            counts[*worker] += 1;
        }
        let worker = counts.iter().enumerate().min_by_key(|(_, c)| **c).map(|(i, _)| i).unwrap_or(0);
        placement.insert(room.clone(), worker);
        worker
    }

    fn worker_of(&self, room: &RoomId) -> Result<usize, SfuError> {
        let placement = self.inner.placement.lock().map_err(|_| SfuError::WorkerGone)?;
        placement.get(room).copied().ok_or(SfuError::RoomNotFound)
    }

    async fn call<T>(&self, worker: usize, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SfuError> {
        let link = self.inner.workers.get(worker).ok_or(SfuError::WorkerGone)?;
        let (reply, rx) = oneshot::channel();
        link.commands.send(make(reply)).map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }
}
