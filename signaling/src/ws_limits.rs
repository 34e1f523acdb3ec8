//! Who may open a WebSocket: browsers from an allowed origin, and at most
//! so many connections per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address. A [`ConnectionSlot`] holds one
/// and gives it back when dropped.
#[derive(Debug, Default, Clone)]
pub struct ConnectionCounter {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    counter: ConnectionCounter,
    address: IpAddr,
}

impl ConnectionCounter {
    /// Takes a slot for `address` if it has fewer than `max` open.
    pub fn acquire(&self, address: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(address).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot { counter: self.clone(), address })
    }

    /// Connections open from `address`.
    pub fn open_from(&self, address: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&address).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// The origins a browser may open `/ws` from: the configured list, or the
/// public URL's origin (with `localhost` and `127.0.0.1` treated alike when
/// the server only listens on loopback without a public URL).
pub fn allowed_origins(configured: Option<&[String]>, public_url: &str, public_url_set: bool) -> Vec<String> {
    if let Some(list) = configured {
        return list.to_vec();
    }
    let origin = origin_of(public_url);
    let mut origins = vec![origin.clone()];
    if !public_url_set {
        for (a, b) in [("127.0.0.1", "localhost"), ("localhost", "127.0.0.1")] {
            if origin.contains(&format!("//{a}:")) {
                origins.push(origin.replace(&format!("//{a}:"), &format!("//{b}:")));
            }
        }
    }
    origins
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase())
}

/// Whether a request's `Origin` may open `/ws`. No `Origin` header means
/// the client is not a browser (a native or test client), which the origin
/// check does not concern: it exists to stop other web sites from opening a
/// socket with a visitor's browser.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        None => true,
        Some(o) => {
            let o = o.trim_end_matches('/').to_ascii_lowercase();
            allowed.iter().any(|a| a.eq_ignore_ascii_case(&o))
        }
    }
}

/// Whether `origin` is `http://<host>`: the page came from the very address
/// the request reached (a same-origin request, whatever that address is).
pub fn origin_is_host(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (Some(o), Some(h)) => {
            let o = o.trim_end_matches('/');
            o.strip_prefix("http://").is_some_and(|rest| !h.is_empty() && rest.eq_ignore_ascii_case(h))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let counter = ConnectionCounter::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let a = counter.acquire(ip, 2).unwrap();
        let _b = counter.acquire(ip, 2).unwrap();
        assert!(counter.acquire(ip, 2).is_none());
        drop(a);
        assert!(counter.acquire(ip, 2).is_some());
    }

    #[test]
    fn origins_default_to_the_public_url() {
        let allowed = allowed_origins(None, "https://tc.hopital.fr/", true);
        assert_eq!(allowed, vec!["https://tc.hopital.fr".to_string()]);
        assert!(origin_allowed(Some("https://TC.hopital.fr"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example"), &allowed));
        assert!(origin_allowed(None, &allowed), "no Origin: not a browser");
        let local = allowed_origins(None, "http://127.0.0.1:8080", false);
        assert!(origin_allowed(Some("http://localhost:8080"), &local));
        assert!(!origin_allowed(Some("http://localhost:9999"), &local));
        let configured = allowed_origins(Some(&["https://a.fr".to_string()]), "https://b.fr", true);
        assert_eq!(configured, vec!["https://a.fr".to_string()]);
    }

    #[test]
    fn an_origin_matches_the_host_it_reached() {
        assert!(origin_is_host(Some("http://10.0.0.5:8080"), Some("10.0.0.5:8080")));
        assert!(!origin_is_host(Some("http://evil.example:8080"), Some("10.0.0.5:8080")));
        assert!(!origin_is_host(Some("https://10.0.0.5:8080"), Some("10.0.0.5:8080")));
        assert!(!origin_is_host(None, Some("10.0.0.5:8080")));
        assert!(!origin_is_host(Some("http://"), Some("")));
    }
}
