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
    /// First UDP port for media; worker N listens on port + N. 0 picks free
    /// ports. Default 50000.
    #[arg(long, env = "TELECONSULT_MEDIA_PORT")]
    pub media_port: Option<u16>,
    /// Number of media workers (one UDP port each). Default 1.
    #[arg(long, env = "TELECONSULT_MEDIA_WORKERS")]
    pub media_workers: Option<usize>,
    /// Addresses advertised as ICE candidates (and bound), comma-separated.
    /// Default: 127.0.0.1 plus the host's non-loopback addresses.
    #[arg(long, env = "TELECONSULT_MEDIA_IPS", value_delimiter = ',')]
    pub media_ips: Option<Vec<IpAddr>>,
    /// Addresses advertised in ICE candidates instead of the bound
    /// `media_ips`, one for one in the same order (1:1 NAT, as on cloud
    /// hosts). Default: advertise the bound addresses.
    #[arg(long, env = "TELECONSULT_MEDIA_PUBLIC_IPS", value_delimiter = ',')]
    pub media_public_ips: Option<Vec<IpAddr>>,
    /// First TCP port for ICE over TCP, straight to the media server, for
    /// browsers that cannot send UDP; worker N uses port + N. Default: none
    /// (UDP only).
    #[arg(long, env = "TELECONSULT_ICE_TCP_PORT")]
    pub ice_tcp_port: Option<u16>,
    /// TURN servers handed to browsers, comma-separated `turn:` and `turns:`
    /// URLs. Default: none (no TURN).
    #[arg(long, env = "TELECONSULT_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Option<Vec<String>>,
    /// The secret shared with the TURN servers (coturn's `static-auth-secret`
    /// with `use-auth-secret`), at least 16 bytes.
    #[arg(long, env = "TELECONSULT_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Most participants in one room. Default 6.
    #[arg(long, env = "TELECONSULT_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// Seconds a dropped WebSocket may take to resume its seat. Default 30.
    #[arg(long, env = "TELECONSULT_RESUME_GRACE_SECS")]
    pub resume_grace_secs: Option<u64>,
    /// Seconds without any media packet before a participant's media is
    /// dropped. Default 20.
    #[arg(long, env = "TELECONSULT_PEER_TIMEOUT_SECS")]
    pub peer_timeout_secs: Option<u64>,
    /// Secret that signs tokens (at least 32 bytes). Default: random at
    /// start, so tokens do not survive a restart.
    #[arg(long, env = "TELECONSULT_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Log format: `text` or `json`. Default text.
    #[arg(long, env = "TELECONSULT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// The database: a SQLite file path or `sqlite:` URL (one node), or a
    /// `postgres://` URL (one node or several). Default `teleconsult.db`.
    #[arg(long, env = "TELECONSULT_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Most open database connections. Default 8 (SQLite), 16 (PostgreSQL).
    #[arg(long, env = "TELECONSULT_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Seconds a request waits for a free database connection before it is
    /// answered 503. Default 10.
    #[arg(long, env = "TELECONSULT_DB_ACQUIRE_TIMEOUT_SECS")]
    pub db_acquire_timeout_secs: Option<u64>,
    /// Public base URL, used in patient links. Default `http://<http-addr>`.
    #[arg(long, env = "TELECONSULT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Minutes before a visit's start that its links open. Default 30.
    #[arg(long, env = "TELECONSULT_LINK_OPENS_BEFORE_MINS")]
    pub link_opens_before_mins: Option<i64>,
    /// Minutes after a visit's end that its links stay valid. Default 120.
    #[arg(long, env = "TELECONSULT_LINK_CLOSES_AFTER_MINS")]
    pub link_closes_after_mins: Option<i64>,
    /// Token required (as `Authorization: Bearer`) for `/metrics` on the main
    /// listener. Default: none (open).
    #[arg(long, env = "TELECONSULT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// A separate listen address serving only `/metrics`, without a token
    /// (bind it to an internal interface).
    #[arg(long, env = "TELECONSULT_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Where reminders are POSTed (the hospital's SMS or email gateway),
    /// `http://host:port/path`. Default: no reminders.
    #[arg(long, env = "TELECONSULT_REMINDER_WEBHOOK")]
    pub reminder_webhook: Option<String>,
    /// How often the scheduler's background worker runs, milliseconds. Default 15000.
    #[arg(long, env = "TELECONSULT_SCHEDULER_TICK_MS")]
    pub scheduler_tick_ms: Option<u64>,
    /// Questionnaire symptoms that are red flags, comma-separated, from
    /// fever, cough, breathlessness, fatigue. Default "fever,breathlessness".
    #[arg(long, env = "TELECONSULT_RED_FLAG_SYMPTOMS", value_delimiter = ',')]
    pub red_flag_symptoms: Option<Vec<String>>,
    /// Pain (0–10) at or above which the questionnaire is a red flag. Default 7.
    #[arg(long, env = "TELECONSULT_RED_FLAG_PAIN")]
    pub red_flag_pain: Option<u8>,
    /// Most people in a room's waiting room (apart from the call). Default 8.
    #[arg(long, env = "TELECONSULT_MAX_WAITING")]
    pub max_waiting: Option<usize>,
    /// Reverse proxies whose `X-Forwarded-For` is believed, as addresses or
    /// CIDR blocks, comma-separated (e.g. `127.0.0.1,10.0.0.0/8`). Default:
    /// none (the TCP peer is the client).
    #[arg(long, env = "TELECONSULT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Browser origins allowed to open `/ws`, comma-separated. Default: the
    /// public URL's origin.
    #[arg(long, env = "TELECONSULT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Most simultaneous WebSockets from one client address. Default 50.
    #[arg(long, env = "TELECONSULT_WS_MAX_PER_ADDRESS")]
    pub ws_max_per_address: Option<usize>,
    /// Seconds a new WebSocket has to send `hello`. Default 10.
    #[arg(long, env = "TELECONSULT_WS_HELLO_TIMEOUT_SECS")]
    pub ws_hello_timeout_secs: Option<u64>,
    /// Seconds without any frame from a client before its WebSocket is
    /// closed (the server pings at a third of this). Default 45.
    #[arg(long, env = "TELECONSULT_WS_IDLE_TIMEOUT_SECS")]
    pub ws_idle_timeout_secs: Option<u64>,
    /// Password checks run at the same time (each takes a core for ~50 ms).
    /// Default 1.
    #[arg(long, env = "TELECONSULT_PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,
    /// File the security events are appended to, as JSON lines (failed
    /// sign-ins, lockouts, refresh replays, refused links, denied actions).
    /// Default: the log, at target `security`.
    #[arg(long, env = "TELECONSULT_SECURITY_LOG")]
    pub security_log: Option<PathBuf>,
    /// The clinic's IANA time zone, for clinicians who set none and for the
    /// local times of imported CSV files. Default Europe/Paris.
    #[arg(long, env = "TELECONSULT_CLINIC_TIME_ZONE")]
    pub clinic_time_zone: Option<String>,
    /// How far ahead a red flag books the patient's follow-up, hours. Default 72.
    #[arg(long, env = "TELECONSULT_URGENT_HORIZON_HOURS")]
    pub urgent_horizon_hours: Option<i64>,
    /// Seconds one reminder delivery may take before it is abandoned and
    /// retried. Default 10.
    #[arg(long, env = "TELECONSULT_REMINDER_TIMEOUT_SECS")]
    pub reminder_timeout_secs: Option<u64>,
    /// Most reminder deliveries in flight at once. Default 8.
    #[arg(long, env = "TELECONSULT_REMINDER_CONCURRENCY")]
    pub reminder_concurrency: Option<usize>,
    /// Missed monitoring check-ins in a row before the clinician is told.
    /// Default 2 (a clinician may set another per enrolment).
    #[arg(long, env = "TELECONSULT_MONITORING_MISSED_AFTER")]
    pub monitoring_missed_after: Option<u32>,
    /// Days a patient's name, contact, hospital number and answers are kept
    /// after their last visit or monitoring day. Default 90.
    #[arg(long, env = "TELECONSULT_RETENTION_PATIENT_DAYS")]
    pub retention_patient_days: Option<i64>,
    /// Days audit events are kept. Default 1095 (three years).
    #[arg(long, env = "TELECONSULT_RETENTION_AUDIT_DAYS")]
    pub retention_audit_days: Option<i64>,
    /// Redis URL (`redis://host:port/db`): run as one node of a cluster
    /// sharing this Redis and a PostgreSQL `--db`. Default: none (a single
    /// node, nothing shared).
    #[arg(long, env = "TELECONSULT_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// This node's id in the cluster (letters, digits, `-`, `_`). Default:
    /// the host name and HTTP port.
    #[arg(long, env = "TELECONSULT_NODE_ID")]
    pub node_id: Option<String>,
    /// The URL other nodes reach this node's HTTP listener at, for
    /// WebSockets bridged to its rooms. Default `http://<http-addr>`.
    #[arg(long, env = "TELECONSULT_NODE_URL")]
    pub node_url: Option<String>,
    /// Prefix of every Redis key and channel, so that several clusters (or
    /// test runs) can share one Redis. Default `teleconsult`.
    #[arg(long, env = "TELECONSULT_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Seconds a draining node (SIGTERM) gives its calls to move to other
    /// nodes before it exits. Default 30.
    #[arg(long, env = "TELECONSULT_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Create demo accounts, a demo visit and a demo room, and print how to use them.
    #[arg(long)]
    pub demo: bool,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The TOML file: the same settings, by the same names as the flags (with
/// underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_addr: Option<SocketAddr>,
    media_port: Option<u16>,
    media_workers: Option<usize>,
    media_ips: Option<Vec<IpAddr>>,
    media_public_ips: Option<Vec<IpAddr>>,
    ice_tcp_port: Option<u16>,
    turn_urls: Option<Vec<String>>,
    turn_secret: Option<String>,
    max_participants: Option<usize>,
    resume_grace_secs: Option<u64>,
    peer_timeout_secs: Option<u64>,
    token_secret: Option<String>,
    log_format: Option<LogFormat>,
    db: Option<String>,
    db_max_connections: Option<u32>,
    db_acquire_timeout_secs: Option<u64>,
    public_url: Option<String>,
    link_opens_before_mins: Option<i64>,
    link_closes_after_mins: Option<i64>,
    metrics_token: Option<String>,
    metrics_addr: Option<SocketAddr>,
    reminder_webhook: Option<String>,
    scheduler_tick_ms: Option<u64>,
    red_flag_symptoms: Option<Vec<String>>,
    red_flag_pain: Option<u8>,
    max_waiting: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    ws_max_per_address: Option<usize>,
    ws_hello_timeout_secs: Option<u64>,
    ws_idle_timeout_secs: Option<u64>,
    password_hash_concurrency: Option<usize>,
    security_log: Option<PathBuf>,
    clinic_time_zone: Option<String>,
    urgent_horizon_hours: Option<i64>,
    reminder_timeout_secs: Option<u64>,
    reminder_concurrency: Option<usize>,
    monitoring_missed_after: Option<u32>,
    retention_patient_days: Option<i64>,
    retention_audit_days: Option<i64>,
    redis: Option<String>,
    node_id: Option<String>,
    node_url: Option<String>,
    redis_prefix: Option<String>,
    drain_timeout_secs: Option<u64>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// First media UDP port (0 picks ephemeral ports).
    pub media_port: u16,
    /// Media worker count.
    pub media_workers: usize,
    /// Advertised (and bound) candidate addresses.
    pub media_ips: Vec<IpAddr>,
    /// True when `media_ips` was not set, this is not a demo, and the host
    /// has several addresses: `serve` refuses to guess which ones patients
    /// can reach (advertising every internal address leaks the network's
    /// layout and slows ICE).
    pub media_ips_to_choose: bool,
    /// Addresses advertised instead of `media_ips`, pairwise (empty: advertise `media_ips`).
    pub media_public_ips: Vec<IpAddr>,
    /// First ICE-TCP port, when ICE over TCP is on.
    pub ice_tcp_port: Option<u16>,
    /// TURN servers and their shared secret, when configured.
    pub turn: Option<crate::turn::TurnServers>,
    /// Room capacity.
    pub max_participants: usize,
    /// Resume grace period.
    pub resume_grace: Duration,
    /// Silent-peer timeout.
    pub peer_timeout: Duration,
    /// Token secret, if configured.
    pub token_secret: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// The database location (see [`ServeArgs::db`]).
    pub db: String,
    /// The database connection pool.
    pub db_pool: crate::store::PoolSettings,
    /// Public base URL (no trailing slash); `None`: `http://` plus the bound address.
    pub public_url: Option<String>,
    /// Links open this long before the visit's start (seconds).
    pub link_opens_before: i64,
    /// Links close this long after the visit's end (seconds).
    pub link_closes_after: i64,
    /// Token for `/metrics` on the main listener.
    pub metrics_token: Option<String>,
    /// Separate, token-free `/metrics` listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Reminder webhook URL.
    pub reminder_webhook: Option<String>,
    /// Scheduler worker period.
    pub scheduler_tick: Duration,
    /// Which questionnaire answers are red flags.
    pub red_flags: crate::questionnaire::RedFlagRules,
    /// Waiting-room capacity, apart from the call.
    pub max_waiting: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// Browser origins allowed on `/ws` (`None`: the public URL's origin).
    pub allowed_origins: Option<Vec<String>>,
    /// WebSockets per client address.
    pub ws_max_per_address: usize,
    /// Time to send `hello`.
    pub ws_hello_timeout: Duration,
    /// Time without a frame before a WebSocket is closed.
    pub ws_idle_timeout: Duration,
    /// Concurrent password checks.
    pub password_hash_concurrency: usize,
    /// Security event file (JSON lines), if any.
    pub security_log: Option<PathBuf>,
    /// The clinic's IANA time zone (default for clinicians and CSV times).
    pub clinic_time_zone: String,
    /// How far ahead a red flag books the follow-up (seconds).
    pub urgent_horizon: i64,
    /// One reminder delivery's time limit.
    pub reminder_timeout: Duration,
    /// Most reminder deliveries in flight at once.
    pub reminder_concurrency: usize,
    /// Missed check-ins in a row before the clinician is told (default per enrolment).
    pub monitoring_missed_after: u32,
    /// How long each kind of data is kept.
    pub retention: crate::store::RetentionPolicy,
    /// Cluster membership, when `--redis` is set.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// How long a draining node waits for its calls to move.
    pub drain_timeout: Duration,
    /// Whether to create the demo data.
    pub demo: bool,
}

/// Settings that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid setting {name}: {why}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        why: &'static str,
    },
}

impl ServeArgs {
    /// Merges flags and variables (already in `self`) over the file and defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|source| ConfigError::Parse { path: path.clone(), source })?
            }
            None => FileConfig::default(),
        };
        let config = Config {
            http_addr: self.http_addr.or(file.http_addr).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            media_port: self.media_port.or(file.media_port).unwrap_or(50000),
            media_workers: self.media_workers.or(file.media_workers).unwrap_or(1),
            media_ips_to_choose: self.media_ips.is_none()
                && file.media_ips.is_none()
                && !self.demo
                && host_addresses().len() > 1,
            media_ips: self.media_ips.or(file.media_ips).unwrap_or_else(default_media_ips),
            media_public_ips: self.media_public_ips.or(file.media_public_ips).unwrap_or_default(),
            ice_tcp_port: self.ice_tcp_port.or(file.ice_tcp_port),
            turn: match (self.turn_urls.or(file.turn_urls), self.turn_secret.or(file.turn_secret)) {
                (None, None) => None,
                (Some(urls), Some(secret)) => {
                    let urls: Vec<String> =
                        urls.iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
                    if urls.is_empty() || !urls.iter().all(|u| crate::turn::valid_url(u)) {
                        return Err(ConfigError::Invalid {
                            name: "turn_urls",
                            why: "must be turn: or turns: URLs (host[:port][?transport=udp|tcp]), comma-separated",
                        });
                    }
                    if secret.len() < 16 {
                        return Err(ConfigError::Invalid { name: "turn_secret", why: "must be at least 16 bytes" });
                    }
                    Some(crate::turn::TurnServers::new(urls, &secret))
                }
                _ => {
                    return Err(ConfigError::Invalid { name: "turn_urls/turn_secret", why: "set both, or neither" });
                }
            },
            max_participants: self.max_participants.or(file.max_participants).unwrap_or(6),
            resume_grace: Duration::from_secs(self.resume_grace_secs.or(file.resume_grace_secs).unwrap_or(30)),
            peer_timeout: Duration::from_secs(self.peer_timeout_secs.or(file.peer_timeout_secs).unwrap_or(20)),
            token_secret: self.token_secret.or(file.token_secret),
            log_format: self.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            db: self.db.or(file.db).unwrap_or_else(|| "teleconsult.db".to_string()),
            db_pool: crate::store::PoolSettings {
                max_connections: self.db_max_connections.or(file.db_max_connections),
                acquire_timeout: Duration::from_secs(
                    self.db_acquire_timeout_secs.or(file.db_acquire_timeout_secs).unwrap_or(10).clamp(1, 300),
                ),
            },
            public_url: self.public_url.or(file.public_url).map(|u| u.trim_end_matches('/').to_string()),
            link_opens_before: 60 * self.link_opens_before_mins.or(file.link_opens_before_mins).unwrap_or(30),
            link_closes_after: 60 * self.link_closes_after_mins.or(file.link_closes_after_mins).unwrap_or(120),
            metrics_token: self.metrics_token.or(file.metrics_token),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            reminder_webhook: self.reminder_webhook.or(file.reminder_webhook),
            red_flags: crate::questionnaire::RedFlagRules {
                symptoms: self
                    .red_flag_symptoms
                    .or(file.red_flag_symptoms)
                    .unwrap_or_else(|| vec!["fever".into(), "breathlessness".into()]),
                pain_at_least: self.red_flag_pain.or(file.red_flag_pain).unwrap_or(7),
            },
            scheduler_tick: Duration::from_millis(
                self.scheduler_tick_ms.or(file.scheduler_tick_ms).unwrap_or(15_000).clamp(100, 3_600_000),
            ),
            max_waiting: self.max_waiting.or(file.max_waiting).unwrap_or(8),
            trusted_proxies: {
                let mut cidrs = Vec::new();
                for text in self.trusted_proxies.or(file.trusted_proxies).unwrap_or_default() {
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    cidrs.push(text.parse().map_err(|_| ConfigError::Invalid {
                        name: "trusted_proxies",
                        why: "each must be an address or a CIDR block, e.g. 10.0.0.0/8",
                    })?);
                }
                cidrs
            },
            allowed_origins: self.allowed_origins.or(file.allowed_origins).map(|list| {
                list.iter().map(|o| o.trim().trim_end_matches('/').to_string()).filter(|o| !o.is_empty()).collect()
            }),
            ws_max_per_address: self.ws_max_per_address.or(file.ws_max_per_address).unwrap_or(50),
            ws_hello_timeout: Duration::from_secs(
                self.ws_hello_timeout_secs.or(file.ws_hello_timeout_secs).unwrap_or(10).clamp(1, 300),
            ),
            ws_idle_timeout: Duration::from_secs(
                self.ws_idle_timeout_secs.or(file.ws_idle_timeout_secs).unwrap_or(45).clamp(3, 3600),
            ),
            password_hash_concurrency: self
                .password_hash_concurrency
                .or(file.password_hash_concurrency)
                .unwrap_or(1)
                .clamp(1, 64),
            security_log: self.security_log.or(file.security_log),
            clinic_time_zone: self
                .clinic_time_zone
                .or(file.clinic_time_zone)
                .unwrap_or_else(|| crate::zones::DEFAULT_ZONE.to_string()),
            urgent_horizon: 3600 * self.urgent_horizon_hours.or(file.urgent_horizon_hours).unwrap_or(72),
            reminder_timeout: Duration::from_secs(
                self.reminder_timeout_secs.or(file.reminder_timeout_secs).unwrap_or(10),
            ),
            reminder_concurrency: self.reminder_concurrency.or(file.reminder_concurrency).unwrap_or(8),
            monitoring_missed_after: self.monitoring_missed_after.or(file.monitoring_missed_after).unwrap_or(2),
            retention: crate::store::RetentionPolicy {
                patient_secs: 86_400 * self.retention_patient_days.or(file.retention_patient_days).unwrap_or(90),
                audit_secs: 86_400 * self.retention_audit_days.or(file.retention_audit_days).unwrap_or(1095),
            },
            cluster: match self.redis.or(file.redis) {
                None => None,
                Some(redis_url) => Some(crate::cluster::ClusterSettings {
                    redis_url,
                    node_id: self.node_id.or(file.node_id),
                    node_url: self.node_url.or(file.node_url).map(|u| u.trim_end_matches('/').to_string()),
                    prefix: self.redis_prefix.or(file.redis_prefix).unwrap_or_else(|| "teleconsult".to_string()),
                }),
            },
            drain_timeout: Duration::from_secs(
                self.drain_timeout_secs.or(file.drain_timeout_secs).unwrap_or(30).clamp(1, 3600),
            ),
            demo: self.demo,
        };
        if let Some(cluster) = &config.cluster {
            if !config.db.starts_with("postgres://") && !config.db.starts_with("postgresql://") {
                return Err(ConfigError::Invalid {
                    name: "redis/db",
                    why: "the nodes of a cluster share a PostgreSQL database: set db to a postgres:// URL",
                });
            }
            if config.token_secret.is_none() {
                return Err(ConfigError::Invalid {
                    name: "redis/token_secret",
                    why: "the nodes of a cluster must share token_secret, so that a token from one is good on all",
                });
            }
            if let Some(id) = &cluster.node_id
                && (id.is_empty()
                    || id.len() > 64
                    || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Err(ConfigError::Invalid { name: "node_id", why: "1 to 64 letters, digits, '-' or '_'" });
            }
            match &cluster.node_url {
                Some(url) if !url.starts_with("http://") => {
                    return Err(ConfigError::Invalid {
                        name: "node_url",
                        why: "must be an http:// URL the other nodes reach (on the internal network)",
                    });
                }
                // Other nodes cannot reach a wildcard address.
                None if config.http_addr.ip().is_unspecified() => {
                    return Err(ConfigError::Invalid {
                        name: "node_url",
                        why: "http_addr listens on every address: set node_url to the one the other nodes reach",
                    });
                }
                _ => {}
            }
            if cluster.prefix.is_empty() || cluster.prefix.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid { name: "redis_prefix", why: "must be non-empty, without spaces" });
            }
        }
        if !(1..=3660).contains(&(config.retention.patient_secs / 86_400))
            || !(30..=7320).contains(&(config.retention.audit_secs / 86_400))
            || config.retention.audit_secs < config.retention.patient_secs
        {
            return Err(ConfigError::Invalid {
                name: "retention_patient_days/retention_audit_days",
                why: "patient data 1 to 3660 days; audit 30 to 7320 days, and no shorter than patient data",
            });
        }
        if crate::zones::zone(&config.clinic_time_zone).is_none() {
            return Err(ConfigError::Invalid {
                name: "clinic_time_zone",
                why: "must be an IANA zone such as Europe/Paris",
            });
        }
        if !(1..=30 * 24).contains(&(config.urgent_horizon / 3600)) {
            return Err(ConfigError::Invalid { name: "urgent_horizon_hours", why: "must be 1 to 720" });
        }
        if !(1..=300).contains(&config.reminder_timeout.as_secs()) || !(1..=256).contains(&config.reminder_concurrency)
        {
            return Err(ConfigError::Invalid {
                name: "reminder_timeout_secs/reminder_concurrency",
                why: "timeout 1 to 300 seconds; concurrency 1 to 256",
            });
        }
        if !(1..=28).contains(&config.monitoring_missed_after) {
            return Err(ConfigError::Invalid { name: "monitoring_missed_after", why: "must be 1 to 28" });
        }
        if !(0..=7 * 24 * 3600).contains(&config.link_opens_before)
            || !(0..=7 * 24 * 3600).contains(&config.link_closes_after)
        {
            return Err(ConfigError::Invalid {
                name: "link_opens_before_mins/link_closes_after_mins",
                why: "must be 0 to 10080",
            });
        }
        if config.media_workers == 0 || config.media_workers > 64 {
            return Err(ConfigError::Invalid { name: "media_workers", why: "must be 1 to 64" });
        }
        if config.max_participants < 2 || config.max_participants > 50 {
            return Err(ConfigError::Invalid { name: "max_participants", why: "must be 2 to 50" });
        }
        if config.max_waiting == 0 || config.max_waiting > 100 {
            return Err(ConfigError::Invalid { name: "max_waiting", why: "must be 1 to 100" });
        }
        if config.ws_max_per_address == 0 {
            return Err(ConfigError::Invalid { name: "ws_max_per_address", why: "must be at least 1" });
        }
        if config.db.trim().is_empty() {
            return Err(ConfigError::Invalid { name: "db", why: "must name a SQLite file or a postgres:// URL" });
        }
        if config.db_pool.max_connections.is_some_and(|n| n == 0 || n > 1000) {
            return Err(ConfigError::Invalid { name: "db_max_connections", why: "must be 1 to 1000" });
        }
        if config.media_ips.is_empty() {
            return Err(ConfigError::Invalid { name: "media_ips", why: "must name at least one address" });
        }
        if !config.media_public_ips.is_empty() && config.media_public_ips.len() != config.media_ips.len() {
            return Err(ConfigError::Invalid {
                name: "media_public_ips",
                why: "must name one address per media_ips address, in the same order",
            });
        }
        if config.reminder_webhook.as_ref().is_some_and(|u| crate::webhook::parse_url(u).is_none()) {
            return Err(ConfigError::Invalid { name: "reminder_webhook", why: "must be http://host:port/path" });
        }
        if config
            .red_flags
            .symptoms
            .iter()
            .any(|s| !["fever", "cough", "breathlessness", "fatigue"].contains(&s.as_str()))
            || config.red_flags.pain_at_least > 11
        {
            return Err(ConfigError::Invalid {
                name: "red_flag_symptoms/red_flag_pain",
                why: "symptoms from fever, cough, breathlessness, fatigue; pain 0 to 11",
            });
        }
        if config.token_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(ConfigError::Invalid { name: "token_secret", why: "must be at least 32 bytes" });
        }
        Ok(config)
    }
}

/// 127.0.0.1 plus the host's non-loopback interface addresses.
pub fn default_media_ips() -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    for ip in host_addresses() {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// The host's interface addresses that a candidate could carry: not
/// loopback, not unspecified, not link-local IPv6 (which needs a scope id
/// that ICE candidates cannot carry).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut ips = Vec::new();
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        for interface in interfaces {
            let ip = interface.ip();
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

    fn cluster_args(db: &str, secret: Option<&str>, http: &str, node_url: Option<&str>) -> ServeArgs {
        ServeArgs {
            redis: Some("redis://127.0.0.1:6379".into()),
            db: Some(db.into()),
            token_secret: secret.map(str::to_string),
            http_addr: Some(http.parse().unwrap()),
            node_url: node_url.map(str::to_string),
            media_ips: Some(vec![IpAddr::from([127, 0, 0, 1])]),
            ..Default::default()
        }
    }

    #[test]
    fn a_cluster_needs_postgres_a_shared_secret_and_a_reachable_node_url() {
        let pg = "postgres://h/db";
        let secret = Some("a-secret-of-more-than-thirty-two-bytes-0123");
        assert!(cluster_args(pg, secret, "127.0.0.1:8080", None).resolve().is_ok());
        let sqlite = cluster_args("teleconsult.db", secret, "127.0.0.1:8080", None).resolve();
        assert!(matches!(sqlite, Err(ConfigError::Invalid { name: "redis/db", .. })));
        let no_secret = cluster_args(pg, None, "127.0.0.1:8080", None).resolve();
        assert!(matches!(no_secret, Err(ConfigError::Invalid { name: "redis/token_secret", .. })));
        let wildcard = cluster_args(pg, secret, "0.0.0.0:8080", None).resolve();
        assert!(matches!(wildcard, Err(ConfigError::Invalid { name: "node_url", .. })));
        assert!(cluster_args(pg, secret, "0.0.0.0:8080", Some("http://10.0.0.5:8080")).resolve().is_ok());
        let https = cluster_args(pg, secret, "127.0.0.1:8080", Some("https://n1:8443")).resolve();
        assert!(matches!(https, Err(ConfigError::Invalid { name: "node_url", .. })));
    }

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
        let args = ServeArgs { clinic_time_zone: Some("+01:00".into()), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Invalid { name: "clinic_time_zone", .. })));
    }

    #[test]
    fn turn_and_public_ips_are_checked() {
        let turn = |urls: &[&str], secret: &str| ServeArgs {
            turn_urls: Some(urls.iter().map(|u| u.to_string()).collect()),
            turn_secret: Some(secret.into()),
            ..Default::default()
        };
        assert!(
            turn(&["turn:127.0.0.1:3478", "turns:turn.example.org:443?transport=tcp"], "0123456789abcdef")
                .resolve()
                .unwrap()
                .turn
                .is_some()
        );
        assert!(matches!(
            turn(&["http://x"], "0123456789abcdef").resolve(),
            Err(ConfigError::Invalid { name: "turn_urls", .. })
        ));
        assert!(matches!(turn(&["turn:x"], "short").resolve(), Err(ConfigError::Invalid { name: "turn_secret", .. })));
        let half = ServeArgs { turn_urls: Some(vec!["turn:x".into()]), ..Default::default() };
        assert!(matches!(half.resolve(), Err(ConfigError::Invalid { name: "turn_urls/turn_secret", .. })));
        let ips = ServeArgs {
            media_ips: Some(vec![IpAddr::from([10, 0, 0, 5])]),
            media_public_ips: Some(vec![IpAddr::from([203, 0, 113, 7]), IpAddr::from([203, 0, 113, 8])]),
            ..Default::default()
        };
        assert!(matches!(ips.resolve(), Err(ConfigError::Invalid { name: "media_public_ips", .. })));
    }

    #[test]
    fn default_ips_include_loopback() {
        assert!(default_media_ips().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
