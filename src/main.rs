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
    },
    /// Serve the same operations over HTTP with a bearer token (`[api]` section).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Block a column (removed from events and from dev) or a whole table.
    Block {
        #[arg(long)]
        config: PathBuf,
        /// schema.table.column or schema.table
        target: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
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
            match veil::source::setup::run(&cfg).await {
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
            match veil::devkit::demo::run(
                veil::devkit::demo::DemoOptions { duration, patients },
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
            match veil::devkit::bench::run(veil::devkit::bench::BenchOptions { patients, changes })
                .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veil bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Registry { command } => registry_command(command).await,
        Command::Audit { command } => audit_command(command).await,
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
            match veil::review::reveal::reveal_with_config(&cfg, &domain, &token, &ticket).await {
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
        Command::DevBroker => match veil::devkit::testkit::Broker::start() {
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

async fn registry_command(command: RegistryCommand) -> ExitCode {
    use veil::review::workflow as review;
    let fail = |what: &str, e: review::ReviewError| {
        eprintln!("veil registry {what}: {e}");
        ExitCode::from(1)
    };
    match command {
        RegistryCommand::Pending { .. } | RegistryCommand::Propose { .. } => {
            let (config, json, store) = match command {
                RegistryCommand::Pending { config, json } => (config, json, false),
                RegistryCommand::Propose { config } => (config, false, true),
                _ => unreachable!("matched above"),
            };
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let items = if store {
                review::propose(&cfg).await
            } else {
                review::pending(&cfg).await
            };
            let items = match items {
                Ok(i) => i,
                Err(e) => return fail("pending", e),
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&items).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            if items.is_empty() {
                println!("nothing pending: every published column has a decision");
            }
            for p in &items {
                let prop = p.proposal.as_ref();
                println!(
                    "{}.{} ({}) {:?}: propose {} {}{} — {}",
                    p.table,
                    p.column,
                    p.type_name,
                    p.why,
                    prop.map(|x| x.class.as_str()).unwrap_or("?"),
                    prop.and_then(|x| x.rule.clone()).unwrap_or_default(),
                    prop.and_then(|x| x.domain.clone())
                        .map(|d| format!("({d})"))
                        .unwrap_or_default(),
                    prop.map(|x| x.evidence()).unwrap_or_default()
                );
            }
            if store {
                println!(
                    "proposals stored in {}; accept them with `veil registry approve --all-proposed --by NAME`",
                    review::proposals_path(&cfg.registry.dir).display()
                );
            }
            ExitCode::SUCCESS
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
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if all_proposed {
                return match review::approve_all_proposed(&cfg, &by).await {
                    Ok(n) => {
                        println!("{n} proposals accepted by {by}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail("approve", e),
                };
            }
            let Some(target) = target else {
                eprintln!("veil registry approve: give schema.table.column or --all-proposed");
                return ExitCode::from(2);
            };
            let d = review::ColumnDecision {
                class,
                rule,
                domain,
                kind,
                entity,
                profile,
                by,
                reason,
            };
            match review::approve(&cfg, &target, &d).await {
                Ok(path) => {
                    println!("decision written to {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail("approve", e),
            }
        }
        RegistryCommand::Serve { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match veil::review::api::serve(&cfg, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veil registry serve: {e}");
                    ExitCode::from(2)
                }
            }
        }
        RegistryCommand::Block {
            config,
            target,
            by,
            reason,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match review::block(&cfg, &target, &by, &reason).await {
                Ok(path) => {
                    println!("decision written to {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail("block", e),
            }
        }
    }
}

async fn audit_command(command: AuditCommand) -> ExitCode {
    use veil::audit;
    let config = match &command {
        AuditCommand::Archive { config, .. }
        | AuditCommand::Verify { config }
        | AuditCommand::Query { config, .. }
        | AuditCommand::Prove { config, .. } => config.clone(),
    };
    let cfg = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let fail = |what: &str, e: audit::AuditError| {
        eprintln!("veil audit {what}: {e}");
        ExitCode::from(1)
    };
    match command {
        AuditCommand::Archive { export, .. } => match audit::archive(&cfg, export.as_deref()).await
        {
            Ok(r) => {
                println!(
                    "archived: {} records read, {} new, {} past retention removed, {} exported",
                    r.consumed, r.inserted, r.expired, r.exported
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail("archive", e),
        },
        AuditCommand::Verify { .. } => match audit::verify_archive(&cfg).await {
            Ok(p) if p.is_empty() => {
                println!(
                    "audit chains verified: no altered, inserted, missing or truncated record"
                );
                ExitCode::SUCCESS
            }
            Ok(p) => {
                for x in &p {
                    println!("FAILED: {x}");
                }
                ExitCode::from(1)
            }
            Err(e) => fail("verify", e),
        },
        AuditCommand::Query {
            from,
            to,
            table,
            json,
            ..
        } => match audit::query(&cfg, &from, &to, table.as_deref()).await {
            Ok(rows) => {
                for r in rows {
                    if json {
                        println!("{r}");
                    } else {
                        println!(
                            "{} {} {} {}",
                            r["at"].as_str().unwrap_or(""),
                            r["record_id"].as_str().unwrap_or(""),
                            r["kind"].as_str().unwrap_or(""),
                            r["body"]
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail("query", e),
        },
        AuditCommand::Prove { date, json, .. } => match audit::prove(&cfg, &date).await {
            Ok(report) => {
                let ok = report["chain"]["ok"] == true && report["scanner"]["clean"] == true;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    print!("{}", audit::prove_text(&report));
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => fail("prove", e),
        },
    }
}
