//! The command line: every command and its flags (clap). `dispatch` runs them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "De-identified, near-real-time copy of a production PostgreSQL database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    #[cfg(feature = "devkit")]
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
    #[cfg(feature = "devkit")]
    DevBroker,
    /// veil and native logical replication side by side on generated data; prints ratios.
    #[cfg(feature = "devkit")]
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
pub enum RegistryCommand {
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
        /// The date_token rule's other key columns, comma-separated (the tuple a date is
        /// unique within).
        #[arg(long, value_delimiter = ',')]
        with: Vec<String>,
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
pub struct TargetDecision {
    #[arg(long)]
    pub config: PathBuf,
    /// schema.table (block also takes schema.table.column)
    pub target: String,
    #[arg(long)]
    pub by: String,
    #[arg(long)]
    pub reason: String,
}

#[derive(Subcommand)]
pub enum AuditCommand {
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
pub enum VaultCommand {
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

#[cfg(feature = "devkit")]
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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
