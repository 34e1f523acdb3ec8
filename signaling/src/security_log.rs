//! The security event log: one JSON object per line for each failed
//! sign-in, lockout, refresh-token replay, refused link, refused action and
//! use of a disabled account, for a SIEM to ingest.
//!
//! Like every log here it carries no names, no tokens and no raw addresses:
//! staff and links by id, unknown emails as a keyed hash (so repeated
//! attempts on one address can be correlated without storing it), client
//! addresses cut to their network ([`crate::client_addr::anonymised`]).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityEvent {
    /// A sign-in failed (unknown email, wrong password, disabled account).
    SignInFailed,
    /// A sign-in was refused because of earlier failures.
    SignInThrottled,
    /// A sign-in was refused because password checks are saturated.
    SignInBusy,
    /// A used refresh token came back: its family was revoked.
    RefreshReplayed,
    /// A link was refused (unknown, revoked, denied, expired…).
    LinkRefused,
    /// An authenticated caller tried something its role or ownership forbids.
    ActionForbidden,
    /// A disabled account's token or seat was refused or closed.
    DisabledAccountUsed,
    /// A WebSocket was refused: a foreign origin, or too many from one address.
    WebSocketRefused,
}

impl SecurityEvent {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEvent::SignInFailed => "sign_in_failed",
            SecurityEvent::SignInThrottled => "sign_in_throttled",
            SecurityEvent::SignInBusy => "sign_in_busy",
            SecurityEvent::RefreshReplayed => "refresh_replayed",
            SecurityEvent::LinkRefused => "link_refused",
            SecurityEvent::ActionForbidden => "action_forbidden",
            SecurityEvent::DisabledAccountUsed => "disabled_account_used",
            SecurityEvent::WebSocketRefused => "websocket_refused",
        }
    }
}

/// Where security events go.
pub struct SecurityLog {
    file: Option<Mutex<std::fs::File>>,
    key: [u8; 32],
}

impl std::fmt::Debug for SecurityLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityLog").field("file", &self.file.is_some()).finish()
    }
}

impl SecurityLog {
    /// Appends to `path` (created if missing) or, without a path, writes to
    /// the process log at target `security`. `key` keys the hashes.
    pub fn open(path: Option<&Path>, key: [u8; 32]) -> std::io::Result<SecurityLog> {
        let file = match path {
            Some(p) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
            None => None,
        };
        Ok(SecurityLog { file, key })
    }

    /// A keyed, shortened hash of something that must not be logged as is
    /// (an email typed at sign-in): equal inputs give equal hashes.
    pub fn pseudonym(&self, value: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(value.as_bytes());
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Records one event at `now` (Unix seconds), from `address` if known,
    /// with id-only `fields`.
    pub fn record(&self, now: i64, event: SecurityEvent, address: Option<IpAddr>, fields: Value) {
        let mut line = Map::new();
        line.insert("at".into(), json!(crate::timefmt::rfc3339(now)));
        line.insert("event".into(), json!(event.as_str()));
        if let Some(ip) = address {
            line.insert("network".into(), json!(crate::client_addr::anonymised(ip)));
        }
        if let Value::Object(extra) = fields {
            line.extend(extra);
        }
        let text = Value::Object(line).to_string();
        match &self.file {
            Some(file) => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                if writeln!(file, "{text}").is_err() {
                    tracing::error!("cannot write the security log");
                }
            }
            None => tracing::warn!(target: "security", event = event.as_str(), "{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines_without_raw_addresses() {
        let path = std::env::temp_dir().join(format!("tc-security-{}.log", rand::random::<u32>()));
        let log = SecurityLog::open(Some(&path), [7; 32]).unwrap();
        let who = log.pseudonym("someone@hopital.fr");
        assert_eq!(who, log.pseudonym("someone@hopital.fr"));
        assert_ne!(who, log.pseudonym("other@hopital.fr"));
        log.record(0, SecurityEvent::SignInFailed, Some("198.51.100.77".parse().unwrap()), json!({ "email": who }));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "sign_in_failed");
        assert_eq!(v["network"], "198.51.100.0/24");
        assert!(!text.contains("198.51.100.77") && !text.contains("someone"));
        let _ = std::fs::remove_file(path);
    }
}
