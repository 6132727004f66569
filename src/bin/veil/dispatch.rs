//! Runs each command: loads its config and calls the library (one call per command).

use tokio::sync::watch;
use veil::config::Config;
use veil::error::{ErrorClass, Failure};
use veil::supervise::with_retries;

use crate::args::{AuditCommand, Command, RegistryCommand, VaultCommand};

pub fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Stream { .. } => "stream",
        Command::Sink { .. } => "sink",
        Command::Setup { .. } => "setup",
        Command::Status { .. } => "status",
        Command::Backfill { .. } => "backfill",
        #[cfg(feature = "devkit")]
        Command::Demo { .. } => "demo",
        #[cfg(feature = "devkit")]
        Command::Bench { .. } => "bench",
        Command::Registry { .. } => "registry",
        Command::Audit { .. } => "audit",
        Command::Vault { .. } => "vault reveal",
        #[cfg(feature = "devkit")]
        Command::DevBroker => "dev-broker",
    }
}

pub async fn dispatch(command: Command) -> Result<(), Failure> {
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
        #[cfg(feature = "devkit")]
        Command::Demo { duration, patients } => Ok(veil::devkit::demo::run(
            veil::devkit::demo::DemoOptions { duration, patients },
            shutdown_signal(),
        )
        .await?),
        #[cfg(feature = "devkit")]
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
        #[cfg(feature = "devkit")]
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
            with,
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
                with,
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

pub fn shutdown_signal() -> watch::Receiver<bool> {
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
