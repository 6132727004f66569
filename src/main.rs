//! Thin CLI over the `veil` library: parses the command line, loads the config, dispatches to
//! the command, and maps the error's class to the exit code in one place
//! (`veil::error::ErrorClass::exit_code`): 0 done, 1 definite (needs a person), 2 bad usage or
//! config, 75 transient (`stream` and `sink` retry transient errors in process first; 75 once
//! `--max-retries` are used up: a supervisor should restart veil).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;
use veil::config::Config;
use veil::error::{ErrorClass, Failure};
use veil::supervise::with_retries;

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "De-identified, near-real-time copy of a production PostgreSQL database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Production side: snapshot + logical replication → gate → Kafka.
    Stream {
        #[arg(long)]
        config: PathBuf,
        /// Consecutive transient failures retried in process (backoff 1 s doubling to 60 s)
        /// before exiting 75; default: retry for ever.
        #[arg(long, env = "VEIL_MAX_RETRIES")]
        max_retries: Option<u32>,
    },
    /// Dev side: Kafka → dev PostgreSQL, whole transactions in commit order.
    Sink {
        #[arg(long)]
        config: PathBuf,
        /// As for `stream`.
        #[arg(long, env = "VEIL_MAX_RETRIES")]
        max_retries: Option<u32>,
    },
    /// Prepare production: publication, replica identities, DDL event trigger.
    Setup {
        #[arg(long)]
        config: PathBuf,
    },
    /// Re-sends a table's existing rows to dev while the stream runs (watermarks in the WAL,
    /// chunks by primary key, upserts).
    Backfill {
        #[arg(long)]
        config: PathBuf,
        /// `schema.table`
        table: String,
    },
    /// One screen for ops: the stream's slots (lag, retained WAL), what it is held on and since
    /// when, the sink's position in dev, the last audit window.
    Status {
        #[arg(long)]
        config: PathBuf,
    },
    /// Throwaway prod + dev clusters, broker, fake patients, stream and sink, live workload.
    Demo {
        /// Run this long (e.g. 60s, 5m), verify the dev copy and exit; default: until Ctrl-C.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Number of generated patients.
        #[arg(long, default_value_t = 2000)]
        patients: usize,
    },
    /// The reviewer workflow: what is pending, proposals, decisions.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// The audit trail: archive, verify, query, prove.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The vault (production side, compliance role only).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Run the local Kafka-protocol broker the demo uses and print its address.
    DevBroker,
    /// veil and native logical replication side by side on generated data; prints ratios.
    Bench {
        #[arg(long, default_value_t = 20000)]
        patients: usize,
        #[arg(long, default_value_t = 200000)]
        changes: usize,
        /// pgbench (TPC-B-like) transactions in the backlog phase; 0 skips it.
        #[arg(long, default_value_t = 20000)]
        backlog: usize,
        /// pgbench scale of the TPC-B-like tables (1 = 100,000 accounts).
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Seconds of the steady-state latency run (pgbench at half the slower of production's
        /// and native's rates; commit → visible in dev, p50 and p99); 0 skips it.
        #[arg(long, default_value_t = 15)]
        steady_secs: u64,
        /// MiB of one large transaction streamed at the end, with the process's peak resident
        /// memory (stream + sink); 0 skips it.
        #[arg(long, default_value_t = 0)]
        big_txn_mb: u64,
        /// After the burst, backfill pgbench_accounts (scale × 100,000 rows) online while the
        /// pipeline runs, and compare its rate with the initial copy's.
        #[arg(long)]
        backfill: bool,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Tables and columns production has and the registry does not decide, with the scanner's
    /// proposal and per-detector hit rates (never values).
    Pending {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Scan every pending column and store the proposals (for `approve --all-proposed`).
    Propose {
        #[arg(long)]
        config: PathBuf,
    },
    /// Record a decision for a column (its current production type is taken from the catalog).
    Approve {
        #[arg(long)]
        config: PathBuf,
        /// schema.table.column
        target: Option<String>,
        /// safe or sensitive (with --rule)
        #[arg(long, default_value = "sensitive")]
        class: String,
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        entity: Option<String>,
        /// safe_harbor or expert_determination (default: the table's, or the domain's)
        #[arg(long)]
        profile: Option<String>,
        /// Accept every stored proposal (bootstrap of an existing database).
        #[arg(long)]
        all_proposed: bool,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// A safe text column the in-flight scanner must not sample (a reviewed false positive).
        #[arg(long)]
        no_scan: bool,
        /// The redact rule's mode: spans (the default) or whole.
        #[arg(long)]
        mode: Option<String>,
    },
    /// Serve the same operations over HTTPS, each reviewer with a token of their own (`[api]`).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Make a reviewer's API token: prints the token (give it to that reviewer only) and the
    /// `[api.reviewers]` line that holds its digest.
    Token {
        /// The reviewer's name, as decisions will record it.
        name: String,
    },
    /// Block a column (removed from events and from dev) or a whole table.
    Block(TargetDecision),
    /// Lift a whole-table block (a loosening decision; the audit marks it).
    Unblock(TargetDecision),
}

/// A decision about one target, with who and why.
#[derive(Args)]
struct TargetDecision {
    #[arg(long)]
    config: PathBuf,
    /// schema.table (block also takes schema.table.column)
    target: String,
    #[arg(long)]
    by: String,
    #[arg(long)]
    reason: String,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Consume the audit topic into the archive (retention applied); optionally export JSON lines.
    Archive {
        #[arg(long)]
        config: PathBuf,
        /// Write every archived record as JSON lines, one file per day, into this directory.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// Check every chain: HMACs, links, sequence, tails against the journal's heads.
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
    /// Records between two times (dates or RFC 3339), optionally mentioning a table.
    Query {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The regulator's report for one day: windows, registry versions and rules, scanner
    /// results, holds and decisions, chain check.
    Prove {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        date: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Map a token back to its value. Writes the reveal log (who, ticket, domain, token hash)
    /// before printing the value; refuses without a ticket.
    Reveal {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        ticket: String,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 60s, 5m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in {s:?} (use s, m or h)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

fn retry_policy(max_retries: Option<u32>) -> veil::supervise::RetryPolicy {
    veil::supervise::RetryPolicy {
        max_retries,
        ..Default::default()
    }
}

fn load(path: &std::path::Path) -> Result<Config, Failure> {
    Ok(Config::load(path)?)
}

fn start_metrics(cfg: &Config) -> Result<(), Failure> {
    if let Some(listen) = &cfg.metrics.listen {
        veil::metrics::install(listen)
            .map_err(|e| Failure::new(ErrorClass::Usage, e.to_string()))?;
        tracing::info!(%listen, "metrics endpoint up");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"))
    };
    // The demo's terminal shows its own story; its logs (and the servers' notices) go to a
    // file, whose path it prints first.
    let demo_log = matches!(cli.command, Command::Demo { .. })
        .then(|| std::env::temp_dir().join(format!("veil-demo-{}.log", std::process::id())));
    match demo_log
        .as_ref()
        .and_then(|p| std::fs::File::create(p).ok())
    {
        Some(file) => {
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
            println!(
                "veil demo: logs go to {}",
                demo_log
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
    }
    let name = command_name(&cli.command);
    match dispatch(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            tracing::error!(error = %f.message, class = f.class.name(), "veil {name} stopped");
            eprintln!("veil {name}: {}", f.message);
            ExitCode::from(f.class.exit_code())
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Stream { .. } => "stream",
        Command::Sink { .. } => "sink",
        Command::Setup { .. } => "setup",
        Command::Status { .. } => "status",
        Command::Backfill { .. } => "backfill",
        Command::Demo { .. } => "demo",
        Command::Bench { .. } => "bench",
        Command::Registry { .. } => "registry",
        Command::Audit { .. } => "audit",
        Command::Vault { .. } => "vault reveal",
        Command::DevBroker => "dev-broker",
    }
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Stream {
            config,
            max_retries,
        } => {
            let cfg = load(&config)?;
            start_metrics(&cfg)?;
            {
                use std::io::IsTerminal;
                veil::source::snapshot::show_progress_bar(std::io::stderr().is_terminal());
            }
            let policy = retry_policy(max_retries);
            Ok(with_retries("stream", policy, shutdown_signal(), |stop| {
                veil::source::stream::run(&cfg, stop)
            })
            .await?)
        }
        Command::Sink {
            config,
            max_retries,
        } => {
            let cfg = load(&config)?;
            start_metrics(&cfg)?;
            let policy = retry_policy(max_retries);
            Ok(with_retries("sink", policy, shutdown_signal(), |stop| {
                veil::sink::run(&cfg, stop)
            })
            .await?)
        }
        Command::Setup { config } => Ok(veil::source::setup::command(&load(&config)?).await?),
        Command::Status { config } => Ok(veil::review::status::print(&load(&config)?).await?),
        Command::Backfill { config, table } => {
            Ok(veil::source::backfill::request(&load(&config)?, &table).await?)
        }
        Command::Demo { duration, patients } => Ok(veil::devkit::demo::run(
            veil::devkit::demo::DemoOptions { duration, patients },
            shutdown_signal(),
        )
        .await?),
        Command::Bench {
            patients,
            changes,
            backlog,
            scale,
            steady_secs,
            big_txn_mb,
            backfill,
        } => Ok(veil::devkit::bench::run(veil::devkit::bench::BenchOptions {
            patients,
            scale,
            changes,
            backlog,
            steady_secs,
            big_txn_mb,
            backfill,
        })
        .await?),
        Command::Registry { command } => registry(command).await,
        Command::Audit { command } => audit(command).await,
        Command::Vault {
            command:
                VaultCommand::Reveal {
                    config,
                    domain,
                    token,
                    ticket,
                },
        } => veil::review::reveal::command(&load(&config)?, &domain, &token, &ticket).await,
        Command::DevBroker => {
            let b = veil::devkit::testkit::Broker::start()
                .map_err(|e| Failure::new(ErrorClass::Definite, e.to_string()))?;
            println!("{}", b.bootstrap());
            let mut rx = shutdown_signal();
            let _ = rx.changed().await;
            drop(b);
            Ok(())
        }
    }
}

async fn registry(command: RegistryCommand) -> Result<(), Failure> {
    use veil::review::commands;
    match command {
        RegistryCommand::Pending { config, json } => {
            commands::pending(&load(&config)?, json, false).await
        }
        RegistryCommand::Propose { config } => {
            commands::pending(&load(&config)?, false, true).await
        }
        RegistryCommand::Approve {
            config,
            target,
            class,
            rule,
            domain,
            kind,
            entity,
            profile,
            all_proposed,
            by,
            reason,
            no_scan,
            mode,
        } => {
            let d = veil::review::workflow::ColumnDecision {
                class,
                rule,
                domain,
                kind,
                entity,
                profile,
                by,
                reason,
                scan: no_scan.then_some(false),
                mode,
                paths: Vec::new(),
            };
            commands::approve(&load(&config)?, target.as_deref(), all_proposed, &d).await
        }
        RegistryCommand::Serve { config } => {
            Ok(veil::review::api::serve(&load(&config)?, shutdown_signal()).await?)
        }
        RegistryCommand::Block(d) => {
            commands::block(&load(&d.config)?, &d.target, &d.by, &d.reason).await
        }
        RegistryCommand::Unblock(d) => {
            commands::unblock(&load(&d.config)?, &d.target, &d.by, &d.reason).await
        }
        RegistryCommand::Token { name } => commands::token(&name),
    }
}

async fn audit(command: AuditCommand) -> Result<(), Failure> {
    use veil::audit::commands;
    match command {
        AuditCommand::Archive { config, export } => {
            commands::archive(&load(&config)?, export.as_deref()).await
        }
        AuditCommand::Verify { config } => commands::verify(&load(&config)?).await,
        AuditCommand::Query {
            config,
            from,
            to,
            table,
            json,
        } => commands::query(&load(&config)?, &from, &to, table.as_deref(), json).await,
        AuditCommand::Prove { config, date, json } => {
            commands::prove(&load(&config)?, &date, json).await
        }
    }
}
