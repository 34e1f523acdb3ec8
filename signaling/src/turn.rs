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
    fn urls_are_checked() {
        assert!(valid_url("turn:203.0.113.7:3478"));
        assert!(valid_url("turns:turn.example.org:443?transport=tcp"));
        assert!(!valid_url("stun:203.0.113.7"));
        assert!(!valid_url("turn:"));
        assert!(!valid_url("turn:host?transport=sctp"));
        assert!(!valid_url("https://turn.example.org/"));
    }
}
