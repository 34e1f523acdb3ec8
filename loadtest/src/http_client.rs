//! A minimal HTTP/1.1 client for the JSON API: one request per connection,
//! enough for tests and load tests on loopback (no TLS, no pooling).

use std::net::SocketAddr;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code (0: the request did not complete).
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// The API error code, if the body is an API error.
    pub fn code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `addr` and reads the whole response. Network
/// failures come back as status 0 with the error in `body`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return HttpResponse { status: 0, headers: Vec::new(), body: e.to_string() },
    };
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n", b.len()));
    } else {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    if let Some(b) = body {
        request.push_str(b);
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return HttpResponse { status: 0, headers: Vec::new(), body: e.to_string() };
    }
    if let Err(e) = stream.read_to_end(&mut raw).await {
        return HttpResponse { status: 0, headers: Vec::new(), body: e.to_string() };
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    HttpResponse { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
