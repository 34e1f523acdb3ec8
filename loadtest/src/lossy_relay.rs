//! A UDP relay on loopback that drops some of the server's RTP packets on
//! their way to one client: a lossy network, made deterministic, so tests
//! can show that NACK and retransmission repair the loss.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A running relay between one client and one server address.
pub struct LossyRelay {
    /// The relay's own address; the client sends here.
    pub addr: SocketAddr,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl LossyRelay {
    /// Relays between the first client that writes to it and `upstream`,
    /// dropping every `drop_every`-th server→client RTP packet whose payload
    /// type is `drop_pt` (RTCP, STUN, DTLS and other payload types pass).
    pub async fn start(upstream: SocketAddr, drop_pt: u8, drop_every: u64) -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut client: Option<SocketAddr> = None;
            let mut seen = 0u64;
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let packet = &buf[..len];
                if from == upstream {
                    let Some(to) = client else { continue };
                    if is_rtp_with_pt(packet, drop_pt) {
                        seen += 1;
                        if drop_every > 0 && seen.is_multiple_of(drop_every) {
                            counter.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let _ = socket.send_to(packet, to).await;
                } else {
                    client.get_or_insert(from);
                    if Some(from) == client {
                        let _ = socket.send_to(packet, upstream).await;
                    }
                }
            }
        });
        Ok(LossyRelay { addr, dropped, task })
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An SRTP packet (version 2, not RTCP) with payload type `pt`. The RTP
/// header is not encrypted, so the relay can read it.
fn is_rtp_with_pt(packet: &[u8], pt: u8) -> bool {
    packet.len() >= 12 && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1]) && packet[1] & 0x7f == pt
}

/// Rewrites the host candidates of `sdp` that point at `server` so they point
/// at `relay` instead.
pub fn redirect_candidates(sdp: &str, server: SocketAddr, relay: SocketAddr) -> String {
    let from = format!(" {} {} typ", server.ip(), server.port());
    let to = format!(" {} {} typ", relay.ip(), relay.port());
    sdp.replace(&from, &to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_rtp_by_payload_type() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp_with_pt(&rtp, 96));
        rtp[1] = 0x80 | 96; // marker bit set
        assert!(is_rtp_with_pt(&rtp, 96));
        assert!(!is_rtp_with_pt(&rtp, 111));
        rtp[1] = 200; // RTCP sender report
        assert!(!is_rtp_with_pt(&rtp, 72));
        assert!(!is_rtp_with_pt(&[0x16, 0xfe, 0xfd], 96), "DTLS");
    }

    #[test]
    fn redirects_only_the_server_candidate() {
        let sdp = "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=candidate:2 1 udp 1 10.0.0.1 50000 typ host\r\n";
        let out = redirect_candidates(sdp, "127.0.0.1:50000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap());
        assert!(out.contains("127.0.0.1 6000 typ host"));
        assert!(out.contains("10.0.0.1 50000 typ host"));
    }
}
