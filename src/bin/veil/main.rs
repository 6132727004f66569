//! Thin CLI over the `veil` library: parses the command line (`args`), loads the config and
//! runs the command (`dispatch`), and maps the error's class to the exit code in one place
//! (`veil::error::ErrorClass::exit_code`): 0 done, 1 definite (needs a person), 2 bad usage or
//! config, 75 transient (`stream` and `sink` retry transient errors in process first; 75 once
//! `--max-retries` are used up: a supervisor should restart veil).

mod args;
mod dispatch;

use clap::Parser;
use std::process::ExitCode;

use args::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"))
    };
    // The demo's terminal shows its own story; its logs (and the servers' notices) go to a
    // file, whose path it prints first.
    #[cfg(feature = "devkit")]
    let demo = matches!(cli.command, args::Command::Demo { .. });
    #[cfg(not(feature = "devkit"))]
    let demo = false;
    let demo_log =
        demo.then(|| std::env::temp_dir().join(format!("veil-demo-{}.log", std::process::id())));
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
    let name = dispatch::command_name(&cli.command);
    match dispatch::dispatch(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            tracing::error!(error = %f.message, class = f.class.name(), "veil {name} stopped");
            eprintln!("veil {name}: {}", f.message);
            ExitCode::from(f.class.exit_code())
        }
    }
}
