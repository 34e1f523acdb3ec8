//! A `teleconsult serve` child process for benchmarks: started on loopback
//! ports, measured from outside (CPU and memory from /proc, counters from
//! `/metrics`), and stopped with SIGTERM.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The clinician account a started server has.
pub const BENCH_EMAIL: &str = "loadtest@teleconsult.test";
/// Its password.
pub const BENCH_PASSWORD: &str = "load test password";

/// A running server.
pub struct ServerProcess {
    child: Child,
    binary: PathBuf,
    secret: String,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
}

impl ServerProcess {
    /// Starts `binary serve` on a free loopback port with media on 127.0.0.1,
    /// a fresh database and a fresh token secret, after creating the
    /// clinician account [`BENCH_EMAIL`] in that database. `extra` are more
    /// `serve` flags.
    pub async fn start(binary: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_media_port(binary, 0, extra).await
    }

    /// [`ServerProcess::start`] with media on a given UDP port (0: any).
    pub async fn start_with_media_port(binary: &Path, media_port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let secret: String = (0..48).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
        let db = std::env::temp_dir().join(format!("teleconsult-bench-{}-{port}.db", std::process::id()));
        let _ = std::fs::remove_file(&db);
        let mut create = Command::new(binary)
            .args([
                "admin",
                "create-clinician",
                "--email",
                BENCH_EMAIL,
                "--name",
                "Dr Load",
                "--specialty",
                "oncologist",
            ])
            .arg("--db")
            .arg(&db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("creating the load-test clinician")?;
        if let Some(mut stdin) = create.stdin.take() {
            use std::io::Write;
            stdin.write_all(format!("{BENCH_PASSWORD}\n").as_bytes())?;
        }
        anyhow::ensure!(create.wait()?.success(), "admin create-clinician failed");
        let child = Command::new(binary)
            .args([
                "serve",
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--media-port",
                &media_port.to_string(),
                "--media-ips",
                "127.0.0.1",
            ])
            .arg("--db")
            .arg(&db)
            .args(extra)
            .env("TELECONSULT_TOKEN_SECRET", &secret)
            .env("TELECONSULT_LOG", std::env::var("TELECONSULT_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server =
            ServerProcess { child, binary: binary.to_path_buf(), secret, base_url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if server.http_get("/healthz").await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("server did not become healthy within 20 s")
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base_url.replacen("http://", "ws://", 1))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Mints a join token (admitted: no waiting room) with `teleconsult admin mint-token`.
    pub fn mint_token(&self, room: &str, role: &str, name: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args([
                "admin",
                "mint-token",
                "--admitted",
                "--room",
                room,
                "--role",
                role,
                "--name",
                name,
                "--ttl-secs",
                "7200",
            ])
            .env("TELECONSULT_TOKEN_SECRET", &self.secret)
            .output()
            .context("running admin mint-token")?;
        if !out.status.success() {
            bail!("mint-token failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// CPU seconds (user + system) the server has used, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Sum of a metric's samples in `/metrics` (all label sets).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.http_get("/metrics").await?;
        Ok(sum_metric(&text, name))
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.base_url
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A GET on the server; the body of a 200, or an error.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<String> {
        let r = crate::http_client::request(self.http_addr(), "GET", path, &[], None).await;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.body.chars().take(200).collect::<String>());
        }
        Ok(r.body)
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        Ok(())
    }
}

/// Sums every sample of `name` in Prometheus text. Chunked transfer
/// framing lines, if any, do not parse as samples and are skipped.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_labelled_samples() {
        let text = "# HELP x y\nx{worker=\"0\"} 3\nx{worker=\"1\"} 4\nxy 9\n";
        assert_eq!(super::sum_metric(text, "x"), 7.0);
    }
}
