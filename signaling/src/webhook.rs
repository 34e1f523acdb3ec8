//! Delivering reminders: an HTTP/1.1 POST of JSON to the hospital's gateway,
//! with an `Idempotency-Key` header so a retried delivery is recognised.
//! Plain HTTP only: put the gateway (or a TLS-terminating relay) on the
//! hospital's internal network.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (host:port, path) of an `http://` URL.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Some((authority, path.to_string()))
}

/// POSTs `body` with the idempotency key; Ok on a 2xx answer. The whole
/// exchange (connect, send, the status line) must end within `limit`: a
/// gateway that hangs costs one delivery that long, never more.
pub async fn post(url: &str, idempotency_key: &str, body: &str, limit: Duration) -> Result<(), String> {
    let (authority, path) = parse_url(url).ok_or("bad webhook URL")?;
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| e.kind().to_string())?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nIdempotency-Key: {idempotency_key}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.kind().to_string())?;
        // The status line is all that matters; stop reading once the head
        // is in, so a gateway that keeps the connection open costs nothing.
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") && response.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.map_err(|e| e.kind().to_string())?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
        let status_line = String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_string();
        match status_line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) {
            Some(code) if (200..300).contains(&code) => Ok(()),
            Some(code) => Err(format!("HTTP {code}")),
            None => Err("no HTTP status".to_string()),
        }
    };
    tokio::time::timeout(limit, attempt).await.map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_http_urls_only() {
        assert_eq!(
            super::parse_url("http://sms.internal:8025/send"),
            Some(("sms.internal:8025".into(), "/send".into()))
        );
        assert_eq!(super::parse_url("http://gw"), Some(("gw:80".into(), "/".into())));
        assert_eq!(super::parse_url("https://gw/x"), None);
        assert_eq!(super::parse_url("http://user@gw/x"), None);
    }
}
