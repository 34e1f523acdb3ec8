//! The I/O shell around [`MediaCore`]: one thread, one UDP port, the clock,
//! and the channels.
//!
//! A worker binds one socket per advertised address, all on the same port
//! (so it knows which local address a datagram arrived on, which str0m
//! needs), and runs a single-threaded Tokio runtime that waits on the
//! sockets, the command channel and the core's next timer (one `Sleep`,
//! reset in place). Datagrams come in and go out in batches (`recvmmsg`,
//! `sendmmsg`); the core settles once per batch.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::api::{
    Connection, ParticipantEvent, ParticipantId, ParticipantStats, RoomId, SfuError, VideoPreference, WorkerStats,
};
use crate::core::{CoreConfig, CoreEvent, MediaCore, Outgoing};
use crate::tcp::{TcpConnection, TcpEvent};
use crate::udp::{BATCH, RecvBatch, SendBatch, recv_batch, send_batch};

/// A request from the handle to a worker. Each carries its reply channel.
pub(crate) enum Command {
    CreateRoom {
        room: RoomId,
        options: crate::api::RoomOptions,
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
    SetVideoPreference {
        room: RoomId,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        preference: VideoPreference,
        reply: oneshot::Sender<Result<(), SfuError>>,
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
    /// Makes the worker thread die, to prove the supervisor restarts it.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// How often the shared counters are refreshed.
const COUNTER_REFRESH: Duration = Duration::from_millis(250);
/// Most batches read in one wake-up before timers and sends get a turn.
const READ_BATCHES: usize = 4;
/// Requested socket buffer size, each way.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// One bound media socket.
pub(crate) struct MediaSocket {
    pub local: SocketAddr,
    pub socket: AsyncFd<std::net::UdpSocket>,
    batch: RecvBatch,
}

impl MediaSocket {
    /// Wraps a bound, non-blocking socket (inside a Tokio runtime).
    pub fn new(local: SocketAddr, socket: std::net::UdpSocket) -> io::Result<Self> {
        // SAFETY: the std socket is owned by the AsyncFd from here on, so its
        // descriptor stays open and the same for the AsyncFd's whole life.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(MediaSocket { local, socket, batch: RecvBatch::new() })
    }
}

pub(crate) struct Worker {
    pub core: MediaCore,
    pub sockets: Vec<MediaSocket>,
    /// ICE-TCP listeners, one per media address (empty without ICE-TCP).
    pub tcp_listeners: Vec<(SocketAddr, tokio::net::TcpListener)>,
    /// Frames and closes from the connection tasks.
    pub tcp_events: UnboundedReceiver<TcpEvent>,
    pub tcp_events_tx: UnboundedSender<TcpEvent>,
    /// Open ICE-TCP connections, by the client's address.
    pub tcp_connections: HashMap<SocketAddr, TcpConnection>,
    pub commands: UnboundedReceiver<Command>,
    pub shared: Arc<Mutex<WorkerStats>>,
    /// Each participant's event stream, by the key the core gave it.
    pub event_sinks: HashMap<u64, UnboundedSender<ParticipantEvent>>,
    pub send_scratch: SendBatch,
}

/// Binds one passive ICE-TCP listener per address on `port` (0 = the first
/// bind picks it).
pub(crate) fn bind_tcp_listeners(
    ips: &[std::net::IpAddr],
    port: u16,
) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, SfuError> {
    let mut port = port;
    let mut listeners = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let bind_error = |e: std::io::Error| SfuError::Bind { addr: format!("tcp {addr}"), reason: e.to_string() };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(bind_error)?;
        // A restarted worker binds its port again at once.
        let _ = socket.set_reuse_address(true);
        socket.bind(&addr.into()).map_err(bind_error)?;
        socket.listen(128).map_err(bind_error)?;
        let listener: std::net::TcpListener = socket.into();
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        port = local.port();
        listeners.push((local, listener));
    }
    Ok(listeners)
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
        socket.set_nonblocking(true).map_err(bind_error)?;
        let local = socket.local_addr().map_err(bind_error)?;
        port = local.port();
        sockets.push((local, socket));
    }
    Ok((port, sockets))
}

impl Worker {
    pub(crate) fn core_config(
        local_addrs: &[SocketAddr],
        tcp_addrs: &[SocketAddr],
        config: &crate::api::SfuConfig,
    ) -> CoreConfig {
        let tcp = tcp_addrs.iter().filter_map(|a| {
            // Passive: clients connect to us (RFC 6544); an ICE-lite server never connects out.
            str0m::Candidate::builder().tcp().host(*a).tcptype(str0m::net::TcpType::Passive).build().ok()
        });
        CoreConfig {
            candidates: local_addrs.iter().filter_map(|a| str0m::Candidate::host(*a, "udp").ok()).chain(tcp).collect(),
            announce: config.media_ips.iter().copied().zip(config.public_ips.iter().copied()).collect(),
            relay_ips: config.relay_ips.clone(),
            max_participants: config.max_participants,
            peer_timeout: config.peer_timeout,
            keyframe_interval: config.keyframe_interval,
            stats_interval: config.stats_interval,
            max_tracks: config.max_tracks_per_participant,
            max_sdp_bytes: config.max_sdp_bytes,
            initial_estimate_bps: config.initial_estimate_bps,
        }
    }

    /// Runs until shutdown or until the handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut last_refresh = Instant::now();
        let sleep = tokio::time::sleep_until(self.core.next_wake().into());
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().reset(self.core.next_wake().into());
            let mut batch_started = None;
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
                index = poll_fn(|cx| poll_recv(&mut self.sockets, cx)) => {
                    batch_started = Some(Instant::now());
                    self.read(index);
                }
                accepted = poll_fn(|cx| poll_accept(&self.tcp_listeners, cx)) => {
                    self.accept(accepted);
                }
                Some(event) = self.tcp_events.recv() => {
                    self.tcp_event(event);
                }
                _ = &mut sleep => {}
            }
            self.core.counters.wakes += 1;
            let now = Instant::now();
            if now >= self.core.next_wake() {
                self.core.handle_timeout(now);
            }
            self.flush().await;
            if let Some(t) = batch_started {
                self.core.counters.turnaround.observe(&crate::api::TURNAROUND_BUCKETS_SECS, t.elapsed().as_secs_f64());
            }
            if now.duration_since(last_refresh) >= COUNTER_REFRESH {
                last_refresh = now;
                self.publish_counters();
            }
        }
        self.publish_counters();
        debug!(port = self.sockets.first().map(|s| s.local.port()), "media worker stopped");
    }

    /// Hands the batch just read on socket `index` to the core, reads a few
    /// more batches while they are there, then lets the core settle once.
    fn read(&mut self, index: usize) {
        let Some(socket) = self.sockets.get_mut(index) else { return };
        for round in 0..READ_BATCHES {
            if round > 0 && recv_batch(socket.socket.get_ref(), &mut socket.batch).is_err() {
                // Drained (or an ICMP error surfacing): the next wake will come.
                break;
            }
            let now = Instant::now();
            for (source, contents) in socket.batch.datagrams() {
                self.core.handle_datagram(now, source, socket.local, contents);
            }
        }
        self.core.settle(Instant::now());
    }

    /// Takes an ICE-TCP connection (or refuses it, past the cap).
    fn accept(&mut self, accepted: (SocketAddr, tokio::net::TcpStream, SocketAddr)) {
        let (local, stream, remote) = accepted;
        if self.tcp_connections.len() >= crate::tcp::MAX_CONNECTIONS {
            return;
        }
        let connection = crate::tcp::start(stream, local, remote, self.tcp_events_tx.clone(), crate::tcp::IDLE_TIMEOUT);
        self.tcp_connections.insert(remote, connection);
    }

    fn tcp_event(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Frame { local, remote, contents } => {
                let now = Instant::now();
                self.core.handle_tcp_frame(now, remote, local, &contents);
                self.core.settle(now);
            }
            TcpEvent::Closed { remote } => {
                self.tcp_connections.remove(&remote);
            }
        }
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        let core = &mut self.core;
        match command {
            Command::CreateRoom { room, options, reply } => {
                core.create_room(room, options.max_participants, options.bandwidth_estimation);
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
            Command::SetVideoPreference { room, subscriber, publisher, preference, reply } => {
                let _ = reply.send(core.set_video_preference(now, &room, &subscriber, &publisher, preference));
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
            #[cfg(feature = "fault-injection")]
            Command::Panic => panic!("injected media worker fault"),
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

    /// Passes events on and sends everything in the core's outbox, in
    /// batches per socket.
    async fn flush(&mut self) {
        self.pass_events();
        let mut transmits = std::mem::take(&mut self.core.transmits);
        if !self.tcp_connections.is_empty() {
            // ICE-TCP packets go on their connection, framed; the rest is UDP.
            transmits.retain(|t| {
                if t.proto == str0m::net::Protocol::Udp {
                    return true;
                }
                let sent = self.tcp_connections.get(&t.destination).is_some_and(|c| c.send(&t.contents));
                if !sent {
                    self.core.counters.send_errors += 1;
                }
                false
            });
        }
        let mut start = 0;
        while start < transmits.len() {
            // A run of datagrams leaving from the same local address.
            let source = transmits[start].source;
            let end = transmits[start..].iter().position(|t| t.source != source).map_or(transmits.len(), |n| start + n);
            let Some(socket) = self.socket_for(source, transmits[start].destination) else {
                self.core.counters.send_errors += (end - start) as u64;
                start = end;
                continue;
            };
            start = self.send_run(socket, &transmits[start..end]).await + start;
        }
        transmits.clear();
        // Keep the grown buffer for the next flush.
        self.core.transmits = transmits;
    }

    fn socket_for(&self, source: SocketAddr, destination: SocketAddr) -> Option<usize> {
        self.sockets
            .iter()
            .position(|s| s.local == source)
            .or_else(|| self.sockets.iter().position(|s| s.local.is_ipv4() == destination.is_ipv4()))
    }

    /// Sends a run of datagrams from one socket; returns how many were handled.
    async fn send_run(&mut self, index: usize, run: &[Outgoing]) -> usize {
        let mut done = 0;
        let mut datagrams: [(SocketAddr, &[u8]); BATCH] = [(SocketAddr::from(([0, 0, 0, 0], 0)), &[]); BATCH];
        while done < run.len() {
            let n = (run.len() - done).min(BATCH);
            for (slot, out) in datagrams.iter_mut().zip(&run[done..done + n]) {
                *slot = (out.destination, out.contents.as_slice());
            }
            let socket = &self.sockets[index].socket;
            match send_batch(socket.get_ref(), &mut self.send_scratch, &datagrams[..n]) {
                Ok(sent) => done += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The send buffer is full: wait until it drains.
                    if let Ok(mut guard) = socket.writable().await {
                        guard.clear_ready();
                    }
                }
                Err(e) => {
                    // One bad destination fails the call: skip it and go on.
                    self.core.counters.send_errors += 1;
                    // The kind only: the error text may carry the peer's address.
                    debug!(kind = ?e.kind(), "udp send failed");
                    done += 1;
                }
            }
        }
        run.len()
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

/// Waits until one of the ICE-TCP listeners has a connection; returns
/// (local address, stream, client address). Pending forever without listeners.
fn poll_accept(
    listeners: &[(SocketAddr, tokio::net::TcpListener)],
    cx: &mut std::task::Context<'_>,
) -> Poll<(SocketAddr, tokio::net::TcpStream, SocketAddr)> {
    for (local, listener) in listeners {
        // An accept error (out of descriptors, a reset before accept) is
        // skipped; a few in a row ask for another wake instead of spinning.
        for _ in 0..16 {
            match listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, remote))) => return Poll::Ready((*local, stream, remote)),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => break,
            }
        }
    }
    Poll::Pending
}

/// Waits until a batch could be read from one of the sockets; returns the
/// socket's index (its batch holds the datagrams).
fn poll_recv(sockets: &mut [MediaSocket], cx: &mut std::task::Context<'_>) -> Poll<usize> {
    for (index, s) in sockets.iter_mut().enumerate() {
        // Pending registers this task's waker; an error means the socket is
        // unusable and is skipped.
        while let Poll::Ready(Ok(mut guard)) = s.socket.poll_read_ready(cx) {
            match guard.try_io(|fd| recv_batch(fd.get_ref(), &mut s.batch)) {
                Ok(Ok(_)) => return Poll::Ready(index),
                // An ICMP error surfacing on an unconnected socket: read on.
                Ok(Err(_)) => continue,
                // Drained: readiness is cleared; poll again to register.
                Err(_would_block) => continue,
            }
        }
    }
    Poll::Pending
}
