//! `teleconsult`: run the server, or administer it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use teleconsult_protocol::Role;
use teleconsult_signaling::config::{LogFormat, ServeArgs};
use teleconsult_signaling::join_token::{TokenKeys, unix_now};

#[derive(Parser)]
#[command(name = "teleconsult", version, about = "Teleconsultation server: signaling and media in one process")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run signaling and the embedded media server.
    Serve(ServeArgs),
    /// Administration commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print a join token for a room. Needs the server's token secret
    /// (`--token-secret`, TELECONSULT_TOKEN_SECRET, or the config file).
    MintToken {
        /// TOML settings file holding `token_secret`.
        #[arg(long, env = "TELECONSULT_CONFIG")]
        config: Option<PathBuf>,
        /// The server's token secret.
        #[arg(long, env = "TELECONSULT_TOKEN_SECRET", hide_env_values = true)]
        token_secret: Option<String>,
        /// Room id.
        #[arg(long)]
        room: String,
        /// clinician, patient or guest.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Display name shown to the others.
        #[arg(long)]
        name: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "clinician" => Ok(Role::Clinician),
        "patient" => Ok(Role::Patient),
        "guest" => Ok(Role::Guest),
        _ => Err("expected clinician, patient or guest".into()),
    }
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // str0m at warn: its debug logs can carry peer addresses.
    let filter = EnvFilter::try_from_env("TELECONSULT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,str0m=warn,is=warn,dimpl=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Admin { command } => admin(command),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve().context("settings")?;
    init_logs(config.log_format);
    let demo = config.demo;
    let server = teleconsult_signaling::server::start(config).await.context("starting the server")?;
    if demo {
        print_demo(&server.app.keys, server.http_addr)?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Prints ready-to-use tokens and links for the demo room.
fn print_demo(keys: &TokenKeys, http_addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let now = unix_now();
    let ttl = 12 * 3600;
    let people = [
        (Role::Clinician, "Dr Demo", "demo-clinician"),
        (Role::Patient, "Demo Patient", "demo-patient"),
        (Role::Guest, "Demo Interpreter", "demo-guest"),
    ];
    println!("Demo room \"demo\" is ready. Open these links (each in its own browser window):");
    for (role, name, sub) in people {
        let token = keys.mint_join("demo", role, name, sub, now, ttl).context("minting a demo token")?;
        println!();
        println!("  {} ({name}):", role.as_str());
        println!("    http://{http_addr}/media-test/call.html#token={token}");
    }
    println!();
    println!("Tokens expire in 12 hours. Tokens are signed with a key made at start-up unless --token-secret is set.");
    Ok(())
}

fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::MintToken { config, token_secret, room, role, name, ttl_secs } => {
            let args = ServeArgs { config, token_secret, ..Default::default() };
            let resolved = args.resolve().context("settings")?;
            let Some(secret) = resolved.token_secret else {
                bail!("no token secret: pass --token-secret, set TELECONSULT_TOKEN_SECRET, or put token_secret in the config file");
            };
            let keys = TokenKeys::from_secret("k1", secret.as_bytes()).context("token secret")?;
            let sub = format!("admin-minted-{}", teleconsult_signaling::secret::random_id("t"));
            let token = keys.mint_join(&room, role, &name, &sub, unix_now(), ttl_secs).context("minting")?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
