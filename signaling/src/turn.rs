//! Short-lived TURN credentials in the TURN REST scheme that coturn checks
//! with `use-auth-secret` (draft-uberti-behave-turn-rest):
//!
//! - username: `<expiry unix seconds>:<id>`;
//! - password: base64(HMAC-SHA1(shared secret, username)).
//!
//! coturn recomputes the password from the secret it shares with us and
//! refuses a username whose expiry has passed, so nothing is stored and a
//! leaked credential is good only until its expiry.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use teleconsult_protocol::IceServer;

/// How long credentials handed out on `admitted` and `resumed` last. Those
/// messages answer no join token, so there is no token expiry to follow;
/// this matches a link's join token (`LINK_JOIN_TOKEN_TTL`).
pub const FRESH_CREDENTIAL_TTL: u64 = crate::join_api::LINK_JOIN_TOKEN_TTL;

/// The TURN servers browsers are told about, and the secret shared with them.
#[derive(Clone)]
pub struct TurnServers {
    urls: Vec<String>,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TurnServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("TurnServers").field("urls", &self.urls).finish_non_exhaustive()
    }
}

impl TurnServers {
    /// `urls` are `turn:` and `turns:` URLs; `secret` is coturn's `static-auth-secret`.
    pub fn new(urls: Vec<String>, secret: &str) -> Self {
        Self { urls, secret: secret.as_bytes().to_vec() }
    }

    /// The `iceServers` entry for one participant: credentials for `id`
    /// that coturn accepts until `expires_unix` (seconds since the epoch).
    pub fn ice_servers(&self, id: &str, expires_unix: u64) -> Vec<IceServer> {
        let (username, credential) = credentials(&self.secret, id, expires_unix);
        vec![IceServer { urls: self.urls.clone(), username: Some(username), credential: Some(credential) }]
    }
}

impl TurnServers {
    /// The addresses of the TURN servers, resolved once: media relayed by
    /// them arrives from these addresses (coturn relays from the address it
    /// listens on unless its `relay-ip` says otherwise), which is how the
    /// media server tells a relayed participant. A name that does not
    /// resolve is skipped.
    pub async fn addresses(&self) -> Vec<std::net::IpAddr> {
        let mut ips = Vec::new();
        for url in &self.urls {
            let Some((host, port)) = host_and_port(url) else { continue };
            if let Ok(found) = tokio::net::lookup_host((host.as_str(), port)).await {
                for addr in found {
                    if !ips.contains(&addr.ip()) {
                        ips.push(addr.ip());
                    }
                }
            }
        }
        ips
    }
}

/// The host (without IPv6 brackets) and port of a `turn:`/`turns:` URL.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let secure = url.starts_with("turns:");
    let rest = url.strip_prefix("turn:").or_else(|| url.strip_prefix("turns:"))?;
    let authority = rest.split('?').next()?;
    let default_port = if secure { 5349 } else { 3478 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map(|p| p.parse().ok()).unwrap_or(Some(default_port))?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// The TURN REST username and password for `id`, valid until `expires_unix`.
pub fn credentials(secret: &[u8], id: &str, expires_unix: u64) -> (String, String) {
    let username = format!("{expires_unix}:{id}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let password = STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref());
    (username, password)
}

/// Checks a TURN URL's shape (RFC 7065): `turn:` or `turns:`, a host, an
/// optional port and `?transport=udp|tcp`.
pub fn valid_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("turn:").or_else(|| url.strip_prefix("turns:")) else {
        return false;
    };
    let (host_port, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    if query.is_some_and(|q| q != "transport=udp" && q != "transport=tcp") {
        return false;
    }
    !host_port.is_empty() && !host_port.contains(['/', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturns_scheme() {
        // Computed independently, as coturn does:
        // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //   b'north-wing-turn-secret', b'1767225600:p-3f9a1c2b7d4e', hashlib.sha1).digest()).decode())"
        let (user, pass) = credentials(b"north-wing-turn-secret", "p-3f9a1c2b7d4e", 1_767_225_600);
        assert_eq!(user, "1767225600:p-3f9a1c2b7d4e");
        assert_eq!(pass, "2BkUDeQidlX8Cz4fWBCwN1E7Moc=");
    }

    #[test]
    fn ice_servers_carry_every_url_and_the_expiry() {
        let turn = TurnServers::new(
            vec!["turn:turn.example.org:3478?transport=udp".into(), "turns:turn.example.org:443?transport=tcp".into()],
            "north-wing-turn-secret",
        );
        let servers = turn.ice_servers("p-1", 1_767_225_600);
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls.len(), 2);
        assert_eq!(servers[0].username.as_deref(), Some("1767225600:p-1"));
        assert!(!format!("{turn:?}").contains("north-wing"), "the secret stays out of Debug");
    }

    #[test]
    fn hosts_and_ports_of_urls() {
        assert_eq!(host_and_port("turn:203.0.113.7:3478?transport=udp"), Some(("203.0.113.7".into(), 3478)));
        assert_eq!(host_and_port("turns:turn.example.org"), Some(("turn.example.org".into(), 5349)));
        assert_eq!(host_and_port("turn:[2001:db8::7]:443?transport=tcp"), Some(("2001:db8::7".into(), 443)));
    }

    #[test]
    fn urls_are_checked() {
        assert!(valid_url("turn:203.0.113.7:3478"));
        assert!(valid_url("turns:turn.example.org:443?transport=tcp"));
        assert!(!valid_url("stun:203.0.113.7"));
        assert!(!valid_url("turn:"));
        assert!(!valid_url("turn:host?transport=sctp"));
        assert!(!valid_url("https://turn.example.org/"));
    }
}
