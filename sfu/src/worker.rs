//! The I/O shell around [`MediaCore`]: one thread, one UDP port, the clock.
//!
//! A worker binds one socket per advertised address, all on the same port
//! (so the kernel tells us which local address a datagram arrived on, which
//! str0m needs), and runs a single-threaded Tokio runtime that waits on the
//! sockets, the command channel and the core's next timeout.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::api::{Connection, ParticipantEvent, ParticipantId, ParticipantStats, RoomId, SfuError, WorkerStats};
use crate::core::{CoreConfig, CoreEvent, MediaCore};

/// A request from the handle to a worker. Each carries its reply channel.
pub(crate) enum Command {
    CreateRoom {
        room: RoomId,
        max_participants: Option<usize>,
        reply: oneshot::Sender<()>,
    },
    CloseRoom {
        room: RoomId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    AddParticipant {
        room: RoomId,
        participant: ParticipantId,
        offer: String,
        events: UnboundedSender<ParticipantEvent>,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    PublishOffer {
        room: RoomId,
        participant: ParticipantId,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    AnswerSubscribe {
        room: RoomId,
        participant: ParticipantId,
        answer: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    RestartSubscribe {
        room: RoomId,
        participant: ParticipantId,
        new_connection: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Trickle {
        room: RoomId,
        participant: ParticipantId,
        connection: Connection,
        candidate: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    RemoveParticipant {
        room: RoomId,
        participant: ParticipantId,
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<Vec<ParticipantStats>>,
    },
    SubscribedTracks {
        room: RoomId,
        participant: ParticipantId,
        reply: oneshot::Sender<Result<Vec<crate::api::SubscribedTrack>, SfuError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// How often the shared counters are refreshed.
const COUNTER_REFRESH: Duration = Duration::from_millis(250);
/// Most datagrams read in one wake-up before timers get a turn.
const READ_BATCH: usize = 64;
/// Requested socket buffer size, each way.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

pub(crate) struct Worker {
    pub core: MediaCore,
    pub sockets: Vec<(SocketAddr, UdpSocket)>,
    pub commands: UnboundedReceiver<Command>,
    pub shared: Arc<Mutex<WorkerStats>>,
    /// Each participant's event stream, by the key the core gave it.
    pub event_sinks: std::collections::HashMap<u64, UnboundedSender<ParticipantEvent>>,
}

/// Binds one std socket per address on `port` (0 = the first bind picks it).
pub(crate) fn bind_sockets(
    ips: &[std::net::IpAddr],
    port: u16,
) -> Result<(u16, Vec<(SocketAddr, std::net::UdpSocket)>), SfuError> {
    let mut port = port;
    let mut sockets = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let bind_error = |e: std::io::Error| SfuError::Bind { addr: addr.to_string(), reason: e.to_string() };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_error)?;
        // One socket carries every call of the worker: the default 208 KiB
        // buffer overflows in bursts at ~20k packets/s. The kernel caps this
        // at net.core.rmem_max / wmem_max (see docs/operations.md).
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        socket.bind(&addr.into()).map_err(bind_error)?;
        let socket: std::net::UdpSocket = socket.into();
        socket.set_nonblocking(true).map_err(|e| SfuError::Bind { addr: addr.to_string(), reason: e.to_string() })?;
        let local =
            socket.local_addr().map_err(|e| SfuError::Bind { addr: addr.to_string(), reason: e.to_string() })?;
        port = local.port();
        sockets.push((local, socket));
    }
    Ok((port, sockets))
}

impl Worker {
    pub(crate) fn core_config(local_addrs: Vec<SocketAddr>, config: &crate::api::SfuConfig) -> CoreConfig {
        CoreConfig {
            candidates: local_addrs.iter().filter_map(|a| str0m::Candidate::host(*a, "udp").ok()).collect(),
            max_participants: config.max_participants,
            peer_timeout: config.peer_timeout,
            keyframe_interval: config.keyframe_interval,
            stats_interval: config.stats_interval,
            max_tracks: config.max_tracks_per_participant,
            max_sdp_bytes: config.max_sdp_bytes,
        }
    }

    /// Runs until shutdown or until the handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let mut last_refresh = Instant::now();
        let mut batch_started: Option<Instant> = None;
        loop {
            let wake = self.core.next_wake();
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    if let Command::Shutdown { reply } = command {
                        self.core.shutdown(Instant::now());
                        self.flush().await;
                        let _ = reply.send(());
                        break;
                    }
                    self.apply(command);
                }
                received = recv_any(&self.sockets, &mut buf) => {
                    if let Ok((index, len, source)) = received {
                        batch_started = Some(Instant::now());
                        let local = self.sockets[index].0;
                        self.core.handle_datagram(Instant::now(), source, local, &buf[..len]);
                        // Read what else is queued before sending, so bursts are batched.
                        for _ in 0..READ_BATCH {
                            let Some((index, len, source)) = try_recv_any(&self.sockets, &mut buf) else { break };
                            let local = self.sockets[index].0;
                            self.core.handle_datagram(Instant::now(), source, local, &buf[..len]);
                            if self.core.transmits.len() > 256 {
                                break;
                            }
                        }
                        self.core.settle(Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if now >= self.core.next_wake() {
                self.core.handle_timeout(now);
            }
            self.flush().await;
            if let Some(t) = batch_started.take() {
                self.core.counters.turnaround.observe(&crate::api::TURNAROUND_BUCKETS_SECS, t.elapsed().as_secs_f64());
            }
            if now.duration_since(last_refresh) >= COUNTER_REFRESH {
                last_refresh = now;
                self.publish_counters();
            }
        }
        self.publish_counters();
        debug!(port = self.sockets.first().map(|s| s.0.port()), "media worker stopped");
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        let core = &mut self.core;
        match command {
            Command::CreateRoom { room, max_participants, reply } => {
                core.create_room(room, max_participants);
                let _ = reply.send(());
            }
            Command::CloseRoom { room, reply } => {
                let _ = reply.send(core.close_room(now, &room));
            }
            Command::AddParticipant { room, participant, offer, events, reply } => {
                let result = core.add_participant(now, &room, participant, &offer).map(|(answer, key)| {
                    self.event_sinks.insert(key, events);
                    answer
                });
                let _ = reply.send(result);
            }
            Command::PublishOffer { room, participant, offer, reply } => {
                let _ = reply.send(core.publish_offer(now, &room, &participant, &offer));
            }
            Command::AnswerSubscribe { room, participant, answer, reply } => {
                let _ = reply.send(core.answer_subscribe(now, &room, &participant, &answer));
            }
            Command::RestartSubscribe { room, participant, new_connection, reply } => {
                let _ = reply.send(core.restart_subscribe(now, &room, &participant, new_connection));
            }
            Command::Trickle { room, participant, connection, candidate, reply } => {
                let _ = reply.send(core.trickle(now, &room, &participant, connection, &candidate));
            }
            Command::RemoveParticipant { room, participant, reply } => {
                let _ = reply.send(core.remove_participant(now, &room, &participant));
            }
            Command::Stats { reply } => {
                let _ = reply.send(core.participant_stats());
            }
            Command::SubscribedTracks { room, participant, reply } => {
                let _ = reply.send(core.subscribed_tracks(&room, &participant));
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Passes the core's events on to the participants' streams.
    fn pass_events(&mut self) {
        for event in self.core.events.drain(..) {
            match event {
                CoreEvent::To(key, e) => {
                    if let Some(sink) = self.event_sinks.get(&key) {
                        let _ = sink.send(e);
                    }
                }
                CoreEvent::Forget(key) => {
                    self.event_sinks.remove(&key);
                }
            }
        }
    }

    /// Sends everything in the core's outbox.
    async fn flush(&mut self) {
        self.pass_events();
        for out in self.core.transmits.drain(..) {
            let socket = self
                .sockets
                .iter()
                .find(|(local, _)| *local == out.source)
                .or_else(|| self.sockets.iter().find(|(local, _)| local.is_ipv4() == out.destination.is_ipv4()))
                .map(|(_, s)| s);
            let Some(socket) = socket else {
                self.core.counters.send_errors += 1;
                continue;
            };
            let sent = match socket.try_send_to(&out.contents, out.destination) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    socket.send_to(&out.contents, out.destination).await.map(|_| ())
                }
                other => other.map(|_| ()),
            };
            if let Err(e) = sent {
                self.core.counters.send_errors += 1;
                // The kind only: the error text may carry the peer's address.
                debug!(kind = ?e.kind(), "udp send failed");
            }
        }
    }

    fn publish_counters(&mut self) {
        self.core.refresh_counters();
        match self.shared.lock() {
            Ok(mut shared) => {
                let (worker, port) = (shared.worker, shared.port);
                *shared = WorkerStats { worker, port, ..self.core.counters.clone() };
            }
            Err(_) => warn!("worker counters lock poisoned"),
        }
    }
}

/// Waits for a datagram on any of the sockets.
async fn recv_any(sockets: &[(SocketAddr, UdpSocket)], buf: &mut [u8]) -> io::Result<(usize, usize, SocketAddr)> {
    poll_fn(|cx| {
        for (index, (_, socket)) in sockets.iter().enumerate() {
            let mut read = ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut read) {
                Poll::Ready(Ok(source)) => return Poll::Ready(Ok((index, read.filled().len(), source))),
                // An ICMP error surfacing on an unconnected socket: the caller
                // ignores it and polls again.
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => continue,
            }
        }
        Poll::Pending
    })
    .await
}

fn try_recv_any(sockets: &[(SocketAddr, UdpSocket)], buf: &mut [u8]) -> Option<(usize, usize, SocketAddr)> {
    for (index, (_, socket)) in sockets.iter().enumerate() {
        if let Ok((len, source)) = socket.try_recv_from(buf) {
            return Some((index, len, source));
        }
    }
    None
}
