//! `teleconsult`: run the server, or administer it.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use teleconsult_protocol::Role;
use teleconsult_signaling::accounts;
use teleconsult_signaling::app::App;
use teleconsult_signaling::config::{Config, LogFormat, ServeArgs};
use teleconsult_signaling::join_token::{TokenKeys, unix_now};
use teleconsult_signaling::store::{Specialty, StaffRole, Store};

#[derive(Parser)]
#[command(name = "teleconsult", version, about = "Teleconsultation server: signaling and media in one process")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Command {
    /// Run signaling and the embedded media server.
    Serve(ServeArgs),
    /// Check a running server's health (for container health checks): GET a
    /// path on its HTTP listener; exit 0 on a 2xx answer, 1 otherwise.
    Probe {
        /// The server's listen address (as `serve --http-addr`); a wildcard
        /// address is reached on loopback.
        #[arg(long, env = "TELECONSULT_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: std::net::SocketAddr,
        /// The path: `/readyz` (ready for work) or `/healthz` (alive).
        #[arg(default_value = "/readyz")]
        path: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Administration commands (they open the database directly).
    Admin {
        /// TOML settings file (for `db` and `token_secret`).
        #[arg(long, env = "TELECONSULT_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The database: a SQLite file or a `postgres://` URL. Default `teleconsult.db`.
        #[arg(long, env = "TELECONSULT_DB", global = true, hide_env_values = true)]
        db: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a staff account. The password is read from standard input
    /// (or prompted for on a terminal), never from the command line.
    CreateClinician {
        /// Login email.
        #[arg(long)]
        email: String,
        /// Name shown to patients.
        #[arg(long)]
        name: String,
        /// oncologist, surgeon, radiotherapist, psychologist, social_worker,
        /// nurse, apa_teacher, dietitian, physician or other.
        #[arg(long, value_parser = parse_specialty)]
        specialty: Specialty,
        /// clinician, admin or ops.
        #[arg(long, value_parser = parse_role, default_value = "clinician")]
        role: StaffRole,
    },
    /// List staff accounts.
    ListClinicians,
    /// Disable an account: it can no longer sign in, and its sessions end.
    DisableClinician {
        /// Login email.
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled account.
    EnableClinician {
        /// Login email.
        #[arg(long)]
        email: String,
    },
    /// Set a new password (read from standard input or a prompt); signs the
    /// account out everywhere.
    ResetPassword {
        /// Login email.
        #[arg(long)]
        email: String,
    },
    /// Write everything held about a patient as JSON (an access request;
    /// see docs/privacy.md). Audited.
    PatientExport {
        /// The hospital's patient number.
        #[arg(long)]
        hospital_number: String,
        /// Write to this file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a patient (an erasure request): future visits cancelled, name,
    /// contact, hospital number, answers and links removed; visits kept as
    /// pseudonymous rows for the figures. Audited; then every text column
    /// is searched to show nothing is left.
    PatientErase {
        /// The hospital's patient number.
        #[arg(long)]
        hospital_number: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Import scheduled teleconsultations from a CSV file (see docs/api.md):
    /// every row is checked; nothing is imported if any row is bad, unless
    /// --partial.
    ImportVisits {
        /// The CSV file.
        #[arg(long)]
        file: PathBuf,
        /// Import the good rows even if others are bad.
        #[arg(long)]
        partial: bool,
        /// Check and report every row, importing nothing.
        #[arg(long)]
        dry_run: bool,
        /// Base of the patient links printed (default http://127.0.0.1:8080).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        public_url: String,
    },
    /// Set a clinician's weekly availability.
    SetAvailability {
        /// Login email.
        #[arg(long)]
        email: String,
        /// Slot length in minutes.
        #[arg(long, default_value_t = 20)]
        slot_minutes: u16,
        /// Periods, e.g. "mon 09:00-12:30,thu 14:00-17:00".
        #[arg(long)]
        weekly: String,
        /// Days off, e.g. "2026-12-24,2026-12-25".
        #[arg(long, default_value = "")]
        days_off: String,
        /// The clinician's IANA time zone, e.g. Europe/Paris.
        #[arg(long, default_value = "Europe/Paris")]
        time_zone: String,
    },
    /// Print a join token for a room. Needs the server's token secret.
    MintToken {
        /// The server's token secret.
        #[arg(long, env = "TELECONSULT_TOKEN_SECRET", hide_env_values = true)]
        token_secret: Option<String>,
        /// Room id (a visit id, or any id for an ad-hoc room).
        #[arg(long)]
        room: String,
        /// clinician, patient or guest.
        #[arg(long, value_parser = parse_join_role)]
        role: Role,
        /// Display name shown to the others.
        #[arg(long)]
        name: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Skip the waiting room (for tests and ad-hoc rooms).
        #[arg(long)]
        admitted: bool,
    },
}

fn parse_specialty(s: &str) -> Result<Specialty, String> {
    s.parse().map_err(|_| {
        let all: Vec<&str> = Specialty::ALL.iter().map(|v| v.as_str()).collect();
        format!("expected one of {}", all.join(", "))
    })
}

fn parse_role(s: &str) -> Result<StaffRole, String> {
    s.parse().map_err(|_| "expected clinician, admin or ops".to_string())
}

fn parse_join_role(s: &str) -> Result<Role, String> {
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
        .unwrap_or_else(|_| EnvFilter::new("info,str0m=warn,is=warn,dimpl=warn,tower_http=warn,sqlx=warn"));
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
        Command::Admin { config, db, command } => admin(config, db, command).await,
        Command::Probe { http_addr, path, timeout_secs } => {
            match teleconsult_signaling::probe::probe(http_addr, &path, Duration::from_secs(timeout_secs)) {
                Ok(status) => println!("{path}: HTTP {status}"),
                Err(e) => {
                    let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                    eprintln!("probe failed: {e}{cause}");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve().context("settings")?;
    if config.media_ips_to_choose {
        let found: Vec<String> =
            teleconsult_signaling::config::host_addresses().iter().map(|ip| ip.to_string()).collect();
        bail!(
            "this host has several addresses ({}): set --media-ips (or TELECONSULT_MEDIA_IPS, or media_ips in the \
             settings file) to the ones patients' browsers can reach",
            found.join(", ")
        );
    }
    init_logs(config.log_format);
    let demo = config.demo;
    let server = teleconsult_signaling::server::start(config).await.context("starting the server")?;
    if demo {
        print_demo(&server.app).await?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    // In a cluster, calls move to other nodes first (bounded by --drain-timeout-secs).
    server.drain().await;
    server.shutdown().await;
    Ok(())
}

const DEMO_CLINICIAN: &str = "clinician@demo.teleconsult.test";
const DEMO_ADMIN: &str = "admin@demo.teleconsult.test";
const DEMO_OPS: &str = "ops@demo.teleconsult.test";
const DEMO_PASSWORD: &str = "demo-password";

/// Creates (once) demo accounts and a demo visit, and prints how to use them.
async fn print_demo(app: &App) -> anyhow::Result<()> {
    let now = app.clock.now();
    for (email, name, specialty, role) in [
        (DEMO_CLINICIAN, "Dr Claire Martin", Specialty::Oncologist, StaffRole::Clinician),
        (DEMO_ADMIN, "Demo Admin", Specialty::Other, StaffRole::Admin),
        (DEMO_OPS, "Demo Ops", Specialty::Other, StaffRole::Ops),
    ] {
        match accounts::create_clinician(&app.store, email, name, specialty, role, DEMO_PASSWORD, now).await {
            Ok(_) | Err(accounts::AccountError::EmailTaken) => {}
            Err(e) => bail!("creating demo account {email}: {e}"),
        }
    }
    let clinician = app.store.clinician_by_email(DEMO_CLINICIAN).await?.context("demo clinician")?;
    if app.store.availability_of(&clinician.id).await?.is_none() {
        use teleconsult_signaling::follow_up_placement::{Availability, WeeklyPeriod};
        let weekly =
            (0..5).map(|weekday| WeeklyPeriod { weekday, start_minute: 8 * 60, end_minute: 18 * 60 }).collect();
        app.store
            .set_availability(
                &clinician.id,
                &Availability {
                    slot_minutes: 20,
                    time_zone: app.config.clinic_time_zone.clone(),
                    weekly,
                    days_off: vec![],
                },
            )
            .await?;
    }
    let (visit_id, patient_url) = demo_visit(app, &clinician.id, now).await?;

    println!("Teleconsult demo — listening on {}", app.public_url);
    println!();
    println!("Staff accounts (password \"{DEMO_PASSWORD}\", for this demo database only):");
    println!("  clinician  {DEMO_CLINICIAN}");
    println!("  admin      {DEMO_ADMIN}");
    println!("  ops        {DEMO_OPS}");
    println!();
    println!("A follow-up visit {visit_id} with \"Demo Patient\" starts in 5 minutes. The patient's link:");
    println!("  {patient_url}");
    println!();
    println!("Media test room \"demo\" (no waiting room). Open each link in its own browser window:");
    let ttl = 12 * 3600;
    for (role, name, sub) in [
        (Role::Clinician, "Dr Demo", "demo-clinician"),
        (Role::Patient, "Demo Patient", "demo-patient"),
        (Role::Guest, "Demo Interpreter", "demo-guest"),
    ] {
        let token =
            app.keys.mint_join("demo", role, name, sub, unix_now(), ttl, true).context("minting a demo token")?;
        println!();
        println!("  {} ({name}):", role.as_str());
        println!("    {}/media-test/call.html#token={token}", app.public_url);
    }
    println!();
    println!("Tokens are signed with a key made at start-up unless --token-secret is set.");
    Ok(())
}

async fn demo_visit(app: &App, clinician_id: &str, now: i64) -> anyhow::Result<(String, String)> {
    use teleconsult_signaling::store::{NewVisit, Patient, VisitKind};
    let patient = Patient {
        id: teleconsult_signaling::secret::random_id("pt"),
        display_name: "Demo Patient".into(),
        hospital_id: Some("DEMO-0001".into()),
        contact: None,
        created_at: now,
    };
    use teleconsult_signaling::idempotency::{Answer, Idempotency};
    // A database kept from an earlier demo may hold a visit at that time:
    // take the next free 20 minutes.
    let mut start = now + 5 * 60;
    for _ in 0..100 {
        let new_visit = NewVisit {
            id: teleconsult_signaling::secret::random_id("v"),
            patient_id: patient.id.clone(),
            clinician_id: clinician_id.to_string(),
            scheduled_start: start,
            duration_minutes: 20,
            kind: VisitKind::FollowUp,
        };
        let booked =
            teleconsult_signaling::visits::book(app, "system", Some(&patient), &new_visit, &Idempotency::none(), |b| {
                Answer::created(serde_json::json!({ "url": app.link_url(&b.token) }))
            })
            .await;
        match booked {
            Ok(answer) => {
                let url = answer.body["url"].as_str().unwrap_or_default().to_string();
                return Ok((new_visit.id, url));
            }
            Err(e) if e.code == "slot_taken" => start += 20 * 60,
            Err(e) => bail!("booking the demo visit: {}", e.message),
        }
    }
    bail!("the demo clinician's calendar is full")
}

/// Reads a password: a prompt on a terminal, else one line of standard input.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

async fn admin(config: Option<PathBuf>, db: Option<String>, command: AdminCommand) -> anyhow::Result<()> {
    let mint_secret = match &command {
        AdminCommand::MintToken { token_secret, .. } => token_secret.clone(),
        _ => None,
    };
    let resolved: Config =
        ServeArgs { config, db, token_secret: mint_secret, ..Default::default() }.resolve().context("settings")?;
    let now = unix_now() as i64;
    if let AdminCommand::MintToken { room, role, name, ttl_secs, admitted, .. } = command {
        let Some(secret) = resolved.token_secret else {
            bail!(
                "no token secret: pass --token-secret, set TELECONSULT_TOKEN_SECRET, or put token_secret in the config file"
            );
        };
        let keys = TokenKeys::from_secret("k1", secret.as_bytes()).context("token secret")?;
        let sub = format!("admin-minted-{}", teleconsult_signaling::secret::random_id("t"));
        let token = keys.mint_join(&room, role, &name, &sub, unix_now(), ttl_secs, admitted).context("minting")?;
        println!("{token}");
        return Ok(());
    }
    let store = Store::open_with(&resolved.db, resolved.db_pool)
        .await
        .with_context(|| format!("opening {}", teleconsult_signaling::store::redacted(&resolved.db)))?;
    match command {
        AdminCommand::CreateClinician { email, name, specialty, role } => {
            let password = read_password("Password: ")?;
            let c = accounts::create_clinician(&store, &email, &name, specialty, role, &password, now).await?;
            println!("created {} {} ({}, {})", c.id, c.email, c.role.as_str(), c.specialty.as_str());
        }
        AdminCommand::ListClinicians => {
            for c in store.list_clinicians().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    c.id,
                    c.email,
                    c.role.as_str(),
                    c.specialty.as_str(),
                    if c.active { "active" } else { "disabled" },
                    c.display_name
                );
            }
        }
        AdminCommand::DisableClinician { email } => set_active(&store, &email, false, now).await?,
        AdminCommand::EnableClinician { email } => set_active(&store, &email, true, now).await?,
        AdminCommand::ResetPassword { email } => {
            let password = read_password("New password: ")?;
            accounts::reset_password(&store, &email, &password, now).await?;
            println!("password reset; the account is signed out everywhere");
        }
        AdminCommand::ImportVisits { file, partial, dry_run, public_url } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // Without the server's secret the links' tokens cannot be sealed
            // for it: reminders will then issue a fresh link once.
            let link_sealer = match &resolved.token_secret {
                Some(secret) => teleconsult_signaling::secret::Sealer::from_secret(secret.as_bytes(), "links"),
                None => teleconsult_signaling::secret::Sealer::random(),
            };
            let importer = teleconsult_signaling::visit_import::Importer {
                store: &store,
                now,
                public_url: &public_url,
                links: teleconsult_signaling::visits::LinkSettings {
                    margins: (resolved.link_opens_before, resolved.link_closes_after),
                    sealer: &link_sealer,
                },
                actor: "admin-cli".into(),
                clinic_zone: teleconsult_signaling::zones::zone_or_utc(&resolved.clinic_time_zone),
            };
            let answer = importer
                .import(&bytes, partial, dry_run, None)
                .await
                .map_err(|e| anyhow::anyhow!("{} ({})", e.message, e.code))?;
            let report = &answer.body["import"];
            let errors = report["errors"].as_array().cloned().unwrap_or_default();
            for e in &errors {
                println!(
                    "line {}: {}: {}",
                    e["line"],
                    e["field"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
            for v in report["visits"].as_array().into_iter().flatten() {
                println!(
                    "line {}: {} {}",
                    v["line"],
                    v["visit_id"].as_str().unwrap_or(""),
                    v["patient_link"].as_str().unwrap_or("")
                );
            }
            println!(
                "{} rows, {} imported, {} errors{}",
                report["rows"],
                report["imported"],
                errors.len(),
                if partial { " (partial)" } else { "" }
            );
            if !errors.is_empty() && !partial {
                bail!("nothing imported: fix the rows above, or use --partial");
            }
        }
        AdminCommand::SetAvailability { email, slot_minutes, weekly, days_off, time_zone } => {
            anyhow::ensure!(
                teleconsult_signaling::zones::zone(&time_zone).is_some(),
                "unknown time zone {time_zone:?} (an IANA name such as Europe/Paris)"
            );
            use teleconsult_signaling::follow_up_placement::{Availability, WeeklyPeriod};
            let email = accounts::normalise_email(&email)?;
            let account = store.clinician_by_email(&email).await?.context("no such account")?;
            let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            let mut periods = Vec::new();
            for item in weekly.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (day, span) = item.split_once(' ').context("periods look like \"mon 09:00-12:30\"")?;
                let weekday =
                    days.iter().position(|d| day.eq_ignore_ascii_case(d)).context("weekday must be mon..sun")? as u8;
                let (from, to) = span.split_once('-').context("a period is HH:MM-HH:MM")?;
                let minute = |t: &str| -> anyhow::Result<u16> {
                    let (h, m) = t.trim().split_once(':').context("a time is HH:MM")?;
                    Ok(h.parse::<u16>()? * 60 + m.parse::<u16>()?)
                };
                let (start_minute, end_minute) = (minute(from)?, minute(to)?);
                anyhow::ensure!(start_minute < end_minute && end_minute <= 24 * 60, "bad period {item}");
                periods.push(WeeklyPeriod { weekday, start_minute, end_minute });
            }
            anyhow::ensure!((5..=120).contains(&slot_minutes), "slot length must be 5 to 120 minutes");
            let days_off: Vec<String> =
                days_off.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            for d in &days_off {
                anyhow::ensure!(teleconsult_signaling::zones::parse_date(d).is_some(), "days off are YYYY-MM-DD ({d})");
            }
            let a = Availability { slot_minutes, time_zone, weekly: periods, days_off };
            store.set_availability(&account.id, &a).await?;
            println!("availability set for {} ({} periods)", account.email, a.weekly.len());
        }
        AdminCommand::PatientExport { hospital_number, out } => {
            let ids = store.patients_with_hospital_id(&hospital_number).await?;
            anyhow::ensure!(!ids.is_empty(), "no patient has this hospital number");
            let mut records = Vec::new();
            for id in &ids {
                records.push(store.patient_record(id).await?);
                store
                    .audit(&teleconsult_signaling::store::AuditEvent {
                        at: now,
                        actor: "admin-cli".into(),
                        action: "patient_exported".into(),
                        visit_id: None,
                        detail: Some(id.clone()),
                    })
                    .await?;
            }
            let export = serde_json::json!({
                "exported_at": teleconsult_signaling::timefmt::rfc3339(now),
                "hospital_number": hospital_number,
                "patients": records,
            });
            let text = serde_json::to_string_pretty(&export)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("{} patient record(s) written to {}", ids.len(), path.display());
                }
                None => println!("{text}"),
            }
        }
        AdminCommand::PatientErase { hospital_number, yes } => {
            anyhow::ensure!(yes, "erasing cannot be undone: run again with --yes");
            let ids = store.patients_with_hospital_id(&hospital_number).await?;
            anyhow::ensure!(!ids.is_empty(), "no patient has this hospital number");
            let mut names = Vec::new();
            for id in &ids {
                if let Some(p) = store.patient_by_id(id).await? {
                    names.push(p.display_name.clone());
                    names.extend(p.contact.clone());
                }
                let counts = store.erase_patient(id, "admin-cli", now).await?;
                eprintln!("erased {id}: {} links and {} check-ins removed", counts.links, counts.check_ins);
            }
            store.reclaim_space(10_000).await?;
            let mut left = Vec::new();
            for needle in names.iter().chain(std::iter::once(&hospital_number)).filter(|n| n.chars().count() >= 3) {
                left.extend(store.text_columns_containing(needle).await?);
            }
            // Never print the name itself: only where it was found.
            anyhow::ensure!(left.is_empty(), "some text columns still hold the patient's data: {left:?}");
            eprintln!("no text column holds the patient's name, contact or hospital number any more");
        }
        AdminCommand::MintToken { .. } => {}
    }
    Ok(())
}

async fn set_active(store: &Store, email: &str, active: bool, now: i64) -> anyhow::Result<()> {
    let email = accounts::normalise_email(email)?;
    let account = store.clinician_by_email(&email).await?.context("no such account")?;
    store.set_clinician_active(&account.id, active, now).await?;
    println!("{} {}", account.email, if active { "enabled" } else { "disabled" });
    Ok(())
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
