//! Server settings, merged from flags, environment variables and a TOML file.
//!
//! Precedence, highest first: command-line flag, `TELECONSULT_*` environment
//! variable, the TOML file given by `--config`, then the built-in default.
//! Flags and variables are handled by clap (each flag names its variable);
//! [`ServeArgs::resolve`] fills what is still missing from the file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Flags of `teleconsult serve`. Every field is optional so that a missing
/// flag can fall through to the file and then the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML settings file (lowest precedence after defaults).
    #[arg(long, env = "TELECONSULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address. Default 127.0.0.1:8080.
    #[arg(long, env = "TELECONSULT_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// First UDP port for media; worker N listens on port + N. Default 50000.
    #[arg(long, env = "TELECONSULT_MEDIA_PORT")]
    pub media_port: Option<u16>,
    /// Address the media sockets bind to. Default 0.0.0.0.
    #[arg(long, env = "TELECONSULT_MEDIA_BIND")]
    pub media_bind: Option<IpAddr>,
    /// Number of media workers (one UDP socket each). Default 1.
    #[arg(long, env = "TELECONSULT_MEDIA_WORKERS")]
    pub media_workers: Option<usize>,
    /// Addresses advertised as ICE candidates, comma-separated. Default:
    /// 127.0.0.1 plus the host's non-loopback interface addresses.
pub fn default_media_ips() -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        for interface in interfaces {
            let ip = interface.ip();
            // Link-local IPv6 needs a scope id that ICE candidates cannot carry.
            let link_local_v6 = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if !ip.is_loopback() && !ip.is_unspecified() && !link_local_v6 && !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("tc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(&path, "media_port = 40000\nmax_participants = 4\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), max_participants: Some(3), ..Default::default() };
        let c = args.resolve().unwrap();
        assert_eq!(c.media_port, 40000, "file beats default");
        assert_eq!(c.max_participants, 3, "flag beats file");
        assert_eq!(c.http_addr.port(), 8080, "default");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let args = ServeArgs { config: Some(path), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn rejects_out_of_range() {
        let args = ServeArgs { media_workers: Some(0), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Invalid { name: "media_workers", .. })));
        let args = ServeArgs { token_secret: Some("short".into()), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Invalid { name: "token_secret", .. })));
    }

    #[test]
    fn default_ips_include_loopback() {
        assert!(default_media_ips().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
