//! `teleconsult probe`: a health check that needs no shell and no HTTP tool
//! in the container image (Docker's `HEALTHCHECK` runs it). It sends one
//! HTTP/1.1 GET to the server's own listener and succeeds on a 2xx status.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No connection, or the exchange did not complete in time.
    #[error("cannot reach {addr}")]
    Io {
        /// Where the probe connected.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not an HTTP status line.
    #[error("{addr}: not an HTTP answer")]
    NotHttp {
        /// Where the probe connected.
        addr: SocketAddr,
    },
    /// The server answered with a status other than 2xx.
    #[error("{path}: HTTP {status}")]
    Status {
        /// The path probed.
        path: String,
        /// The status code.
        status: u16,
    },
}

/// Where to connect to reach a listener bound to `listen`: a wildcard
/// address (0.0.0.0, ::) is reached on the loopback address of its family.
pub fn target_of(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `path` from the listener bound to `listen`; returns the status
/// code when it is 2xx.
pub fn probe(listen: SocketAddr, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let addr = target_of(listen);
    let io = |source| ProbeError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: teleconsult-probe\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all that matters; it fits in the first read.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]).map_err(io)? {
            0 => break,
            n => len += n,
        }
    }
    let status = parse_status(&head[..len]).ok_or(ProbeError::NotHttp { addr })?;
    if (200..300).contains(&status) { Ok(status) } else { Err(ProbeError::Status { path: path.to_string(), status }) }
}

/// The status code of an `HTTP/1.x NNN` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that answers `answer` to the first connection.
    fn answering(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        });
        addr
    }

    #[test]
    fn succeeds_on_2xx_only() {
        let ok = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(probe(ok, "/readyz", Duration::from_secs(2)).unwrap(), 200);
        let busy = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(matches!(probe(busy, "/readyz", Duration::from_secs(2)), Err(ProbeError::Status { status: 503, .. })));
        let junk = answering(b"SSH-2.0-OpenSSH\r\n");
        assert!(matches!(probe(junk, "/readyz", Duration::from_secs(2)), Err(ProbeError::NotHttp { .. })));
    }

    #[test]
    fn refused_connection_is_an_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(matches!(probe(port, "/healthz", Duration::from_secs(2)), Err(ProbeError::Io { .. })));
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(target_of("0.0.0.0:8080".parse().unwrap()), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(target_of("[::]:8080".parse().unwrap()), "[::1]:8080".parse().unwrap());
        assert_eq!(target_of("10.1.2.3:8080".parse().unwrap()), "10.1.2.3:8080".parse().unwrap());
    }
}
