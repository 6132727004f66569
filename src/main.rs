//! Thin CLI over the `veil` library.
//!
//! Exit codes: 0 done, 1 a definite error (needs a person: registry decision, config fix),
//! 2 bad usage or config, 75 a transient error (a supervisor should restart veil).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;

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
    },
    /// Dev side: Kafka → dev PostgreSQL, whole transactions in commit order.
    Sink {
        #[arg(long)]
        config: PathBuf,
    },
    /// Prepare production: publication, replica identities, DDL event trigger.
    Setup {
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

fn load(path: &std::path::Path) -> Result<veil::config::Config, ExitCode> {
    veil::config::Config::load(path).map_err(|e| {
        eprintln!("veil: {e}");
        ExitCode::from(2)
    })
}

fn start_metrics(cfg: &veil::config::Config) -> Result<(), ExitCode> {
    if let Some(listen) = &cfg.metrics.listen {
        veil::metrics::install(listen).map_err(|e| {
            eprintln!("veil: {e}");
            ExitCode::from(2)
        })?;
        tracing::info!(%listen, "metrics endpoint up");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Stream { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(code) = start_metrics(&cfg) {
                return code;
            }
            match veil::source::stream::run(&cfg, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, transient = e.is_transient(), "stream stopped");
                    eprintln!("veil stream: {e}");
                    ExitCode::from(if e.is_transient() { 75 } else { 1 })
                }
            }
        }
        Command::Sink { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(code) = start_metrics(&cfg) {
                return code;
            }
            match veil::sink::run(&cfg, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, transient = e.is_transient(), "sink stopped");
                    eprintln!("veil sink: {e}");
                    ExitCode::from(if e.is_transient() { 75 } else { 1 })
                }
            }
        }
        Command::Setup { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match veil::setup::run(&cfg).await {
                Ok(r) => {
                    println!(
                        "setup done: publication {}, DDL trigger installed, {} tables published{}",
                        if r.publication_created {
                            "created"
                        } else {
                            "already present"
                        },
                        r.tables,
                        if r.vault_installed {
                            ", vault schema and roles installed"
                        } else {
                            ""
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("veil setup: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Demo { duration, patients } => {
            match veil::demo::run(
                veil::demo::DemoOptions { duration, patients },
                shutdown_signal(),
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veil demo: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Bench { patients, changes } => {
            match veil::bench::run(veil::bench::BenchOptions { patients, changes }).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veil bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Vault {
            command:
                VaultCommand::Reveal {
                    config,
                    domain,
                    token,
                    ticket,
                },
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match veil::vault::reveal_with_config(&cfg, &domain, &token, &ticket).await {
                Ok(Some(value)) => {
                    println!("{value}");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!(
                        "veil vault reveal: no such token in domain {domain} (the attempt is logged)"
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("veil vault reveal: {e}");
                    ExitCode::from(if e.is_transient() { 75 } else { 1 })
                }
            }
        }
        Command::DevBroker => match veil::testkit::Broker::start() {
            Ok(b) => {
                println!("{}", b.bootstrap());
                let mut rx = shutdown_signal();
                let _ = rx.changed().await;
                drop(b);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("veil dev-broker: {e}");
                ExitCode::from(1)
            }
        },
    }
}
