//! ICE over TCP for the media worker (RFC 6544): a passive listener per
//! media address, and RFC 4571 framing (every STUN, DTLS, RTP or RTCP
//! packet preceded by its length as a 16-bit big-endian number).
//!
//! Each accepted connection runs as a task on the worker's own runtime: it
//! hands complete frames to the worker loop and writes the frames the worker
//! gives it. The core sees the same packets as over UDP, marked TCP.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Most TCP connections one worker keeps; more are refused (closed at
/// once), so that idle connections cannot exhaust the worker's descriptors.
pub(crate) const MAX_CONNECTIONS: usize = 2048;

/// A connection that sends nothing for this long is closed: ICE consent
/// checks alone arrive every few seconds, so only a dead or idle socket
/// (one held open to use up [`MAX_CONNECTIONS`]) stays this quiet.
pub(crate) const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection's queued outgoing bytes, past which frames are dropped (as
/// UDP would lose them) rather than buffered without end.
const MAX_QUEUED_FRAMES: usize = 4096;

/// What a connection task tells the worker.
pub(crate) enum TcpEvent {
    /// One frame arrived from `remote` on the local address `local`.
    Frame { local: SocketAddr, remote: SocketAddr, contents: Vec<u8> },
    /// The connection from `remote` ended.
    Closed { remote: SocketAddr },
}

/// The worker's handle on one connection.
pub(crate) struct TcpConnection {
    frames: UnboundedSender<Vec<u8>>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TcpConnection {
    /// Queues `contents` as one frame; false when it was dropped.
    pub(crate) fn send(&self, contents: &[u8]) -> bool {
        use std::sync::atomic::Ordering;
        let Ok(len) = u16::try_from(contents.len()) else { return false };
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED_FRAMES {
            return false;
        }
        let mut frame = Vec::with_capacity(contents.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(contents);
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.frames.send(frame).is_ok()
    }
}

/// Starts the task of an accepted connection; returns the worker's handle.
/// The connection closes after `idle` without a frame from the client.
pub(crate) fn start(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    events: UnboundedSender<TcpEvent>,
    idle: std::time::Duration,
) -> TcpConnection {
    let (frames, outgoing) = tokio::sync::mpsc::unbounded_channel();
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _ = stream.set_nodelay(true);
    tokio::spawn(run(stream, local, remote, events, outgoing, queued.clone(), idle));
    TcpConnection { frames, queued }
}

async fn run(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    events: UnboundedSender<TcpEvent>,
    mut outgoing: UnboundedReceiver<Vec<u8>>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    idle: std::time::Duration,
) {
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(idle, reader.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                // Closed, failed, or silent for too long.
                _ => break,
            }
            let len = usize::from(u16::from_be_bytes(len));
            if reader.read_exact(&mut buf[..len]).await.is_err() {
                break;
            }
            if events.send(TcpEvent::Frame { local, remote, contents: buf[..len].to_vec() }).is_err() {
                break;
            }
        }
    };
    let write = async {
        while let Some(frame) = outgoing.recv().await {
            queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    // Either side ending ends the connection.
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let _ = events.send(TcpEvent::Closed { remote });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_both_ways_per_rfc_4571() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(local).await.unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let conn = start(stream, local, remote, events_tx, IDLE_TIMEOUT);
        // Two frames in one write, the second split across writes.
        client.write_all(&[0, 3, b'a', b'b', b'c', 0, 2, b'x']).await.unwrap();
        client.write_all(b"y").await.unwrap();
        for want in [&b"abc"[..], &b"xy"[..]] {
            let Some(TcpEvent::Frame { contents, remote: from, .. }) = events.recv().await else { panic!("a frame") };
            assert_eq!((contents.as_slice(), from), (want, remote));
        }
        assert!(conn.send(b"hello"));
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x00\x05hello");
        drop(client);
        assert!(matches!(events.recv().await, Some(TcpEvent::Closed { .. })));
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(local).await.unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let _conn = start(stream, local, remote, events_tx, std::time::Duration::from_millis(200));
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await;
        assert!(matches!(closed, Ok(Some(TcpEvent::Closed { .. }))), "closed after the idle time");
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "the server hung up");
    }
}
