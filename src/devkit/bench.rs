//! `veil bench`: veil and PostgreSQL's native logical replication side by side, in one run, on
//! the same machine and the same data: the initial copy of a generated data set, a burst of row
//! changes (one large transaction), and the shape production has — a backlog of many small
//! transactions (an update and an insert each, TPC-B-like) written while both replicas were
//! stopped, then caught up. Prints rows per second (transactions per second for the backlog)
//! for both and their ratio. Measures; asserts nothing.

use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::devkit::demo::{DemoError, connect};
use crate::devkit::testkit::{Broker, PgCluster};

pub struct BenchOptions {
    pub patients: usize,
    /// pgbench scale of the TPC-B-like tables (1 = 100,000 accounts).
    pub scale: u32,
    pub changes: usize,
    /// Small transactions in the backlog (0: no backlog phase).
    pub backlog: usize,
}

async fn count(c: &Client, sql: &str) -> Result<i64, DemoError> {
    c.query_one(sql, &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))
}

const TOTAL: &str = "SELECT (SELECT count(*) FROM public.patients) + (SELECT count(*) FROM public.encounters) \
     + (SELECT count(*) FROM public.observations) + (SELECT count(*) FROM public.medications) \
     + (SELECT count(*) FROM public.providers) + (SELECT count(*) FROM public.pgbench_accounts) \
     + (SELECT count(*) FROM public.pgbench_branches) + (SELECT count(*) FROM public.pgbench_tellers) \
     + (SELECT count(*) FROM public.pgbench_history)";

/// pgbench's tables under Safe Harbor, the default profile: every id is a random token the vault
/// remembers, so each new `pgbench_history.id` is allocated in the vault (the cost production has).
const PGBENCH_REGISTRY: &[(&str, &str)] = &[
    (
        "public.pgbench_accounts.toml",
        r#"table = "public.pgbench_accounts"
profile = "safe_harbor"
reviewer = "veil bench"
[columns]
aid      = { type = "integer", class = "sensitive", rule = "tokenize", domain = "account_id", reason = "account number" }
bid      = { type = "integer", class = "sensitive", rule = "tokenize", domain = "branch_id", reason = "branch" }
abalance = { type = "integer", class = "safe", reason = "amount" }
filler   = { type = "character(84)", class = "safe", reason = "padding" }
"#,
    ),
    (
        "public.pgbench_branches.toml",
        r#"table = "public.pgbench_branches"
profile = "safe_harbor"
reviewer = "veil bench"
[columns]
bid      = { type = "integer", class = "sensitive", rule = "tokenize", domain = "branch_id", reason = "branch" }
bbalance = { type = "integer", class = "safe", reason = "amount" }
filler   = { type = "character(88)", class = "safe", reason = "padding" }
"#,
    ),
    (
        "public.pgbench_tellers.toml",
        r#"table = "public.pgbench_tellers"
profile = "safe_harbor"
reviewer = "veil bench"
[columns]
tid      = { type = "integer", class = "sensitive", rule = "tokenize", domain = "teller_id", reason = "teller" }
bid      = { type = "integer", class = "sensitive", rule = "tokenize", domain = "branch_id", reason = "branch" }
tbalance = { type = "integer", class = "safe", reason = "amount" }
filler   = { type = "character(84)", class = "safe", reason = "padding" }
"#,
    ),
    (
        "public.pgbench_history.toml",
        r#"table = "public.pgbench_history"
profile = "safe_harbor"
reviewer = "veil bench"
[columns]
id     = { type = "bigint", class = "sensitive", rule = "tokenize", domain = "history_id", reason = "key" }
tid    = { type = "integer", class = "sensitive", rule = "tokenize", domain = "teller_id", reason = "teller" }
bid    = { type = "integer", class = "sensitive", rule = "tokenize", domain = "branch_id", reason = "branch" }
aid    = { type = "integer", class = "sensitive", rule = "tokenize", domain = "account_id", reason = "account number" }
delta  = { type = "integer", class = "safe", reason = "amount" }
mtime  = { type = "timestamp without time zone", class = "sensitive", rule = "year_only", reason = "date" }
filler = { type = "character(22)", class = "safe", reason = "padding" }
"#,
    ),
];

/// Runs a PostgreSQL client program of the cluster's version.
fn pg_tool(bin: &str, args: &[&str]) -> Result<(), DemoError> {
    let out = std::process::Command::new(crate::devkit::testkit::pg_bin_dir().join(bin))
        .args(args)
        .output()
        .map_err(|e| DemoError::Start {
            what: "a PostgreSQL client program",
            message: format!("{bin}: {e}"),
        })?;
    if !out.status.success() {
        return Err(DemoError::Start {
            what: "a PostgreSQL client program",
            message: format!("{bin}: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// Waits until `dev` holds `want` rows in the demo tables; returns the time it took.
async fn until_rows(
    dev: &Client,
    want: i64,
    since: Instant,
    limit: Duration,
) -> Result<Duration, DemoError> {
    loop {
        if count(dev, TOTAL).await.unwrap_or(-1) == want {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(DemoError::Verify(format!(
                "did not reach {want} rows within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stage counters read from the process's own metrics (the ones `/metrics` exports).
#[derive(Default, Clone)]
struct StageSample(std::collections::BTreeMap<String, f64>);

impl StageSample {
    fn take(handle: &Option<metrics_exporter_prometheus::PrometheusHandle>) -> StageSample {
        let Some(h) = handle else {
            return StageSample::default();
        };
        let mut out = std::collections::BTreeMap::new();
        for line in h.render().lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let keep = name.starts_with(crate::metrics::STAGE_BUSY)
                || name.starts_with(crate::metrics::VAULT_ROUND_TRIPS)
                || name.starts_with(crate::metrics::TRANSACTIONS)
                || name.starts_with(crate::metrics::SINK_APPLIED_TXNS);
            if keep && let Ok(v) = value.parse::<f64>() {
                out.insert(name.to_owned(), v);
            }
        }
        StageSample(out)
    }

    fn since(&self, before: &StageSample) -> StageSample {
        StageSample(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    fn print(&self, title: &str) {
        if self.0.is_empty() {
            return;
        }
        println!("  busy time per stage ({title}):");
        for (k, v) in &self.0 {
            if let Some(rest) = k.strip_prefix(crate::metrics::STAGE_BUSY) {
                let label = rest
                    .replace("component=", "")
                    .replace("stage=", "")
                    .replace(['{', '}', '"'], "")
                    .replace(',', " ");
                println!("    {label:<24} {:>8.2} s", v / 1e6);
            }
        }
        println!(
            "    vault round trips {:.0} for {:.0} source transactions published, {:.0} applied",
            self.sum(crate::metrics::VAULT_ROUND_TRIPS),
            self.sum(crate::metrics::TRANSACTIONS),
            self.sum(crate::metrics::SINK_APPLIED_TXNS)
        );
    }

    /// The sum of every series of one metric.
    fn sum(&self, metric: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(metric))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Whether a veil slot of `p` confirmed WAL up to `lsn`.
async fn confirmed_past(p: &Client, lsn: &str) -> Result<bool, DemoError> {
    p.query_one(
        "SELECT coalesce(bool_or(confirmed_flush_lsn >= $1::text::pg_lsn), false) \
         FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE 'veil_e%'",
        &[&lsn],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))
}

pub async fn run(opts: BenchOptions) -> Result<(), DemoError> {
    // The stage counters come from this process's own metrics.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let start = |what: &'static str| {
        move |e: crate::devkit::testkit::TestkitError| DemoError::Start {
            what,
            message: e.to_string(),
        }
    };
    let broker = Broker::start().map_err(start("the broker"))?;
    let prod = PgCluster::start().map_err(start("the prod cluster"))?;
    let dev = PgCluster::start().map_err(start("the veil dev cluster"))?;
    let native = PgCluster::start().map_err(start("the native dev cluster"))?;
    prod.create_db("clinic").map_err(start("prod db"))?;
    dev.create_db("clinic_dev").map_err(start("dev db"))?;
    prod.create_db("veil_vault").map_err(start("vault db"))?;
    native
        .create_db("clinic_native")
        .map_err(start("native db"))?;
    let p = connect(&prod.dsn("clinic")).await?;
    crate::devkit::datagen::load(&p, opts.patients, 42)
        .await
        .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))?;
    // pgbench's tables (scale 1: 100,000 accounts), with a key on the history.
    let scale = opts.scale.max(1).to_string();
    pg_tool("pgbench", &["-i", "-q", "-s", &scale, &prod.dsn("clinic")])?;
    p.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
        .await
        .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))?;
    let rows = count(&p, TOTAL).await?;
    let regdir = tempfile::tempdir().map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
    crate::devkit::demo::write_registry(regdir.path()).map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
    for (name, text) in PGBENCH_REGISTRY {
        std::fs::write(regdir.path().join(name), text).map_err(|e| DemoError::Start {
            what: "registry",
            message: e.to_string(),
        })?;
    }
    let cfg = crate::devkit::demo::config_for(
        prod.dsn("clinic"),
        dev.dsn("clinic_dev"),
        broker.bootstrap(),
        "veil.bench.changes",
        regdir.path(),
        crate::devkit::demo::random_key_hex(),
        Some(prod.dsn("veil_vault")),
    );
    crate::source::setup::run(&cfg)
        .await
        .map_err(|e| DemoError::Start {
            what: "setup",
            message: e.to_string(),
        })?;
    println!(
        "veil bench: {rows} rows in 5 tables; then {} inserted rows in one burst",
        opts.changes
    );

    // Initial copy, veil.
    let d = connect(&dev.dsn("clinic_dev")).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let (stream, sink) = crate::devkit::demo::spawn_pipeline(&cfg, stop_rx);
    let veil_copy = until_rows(&d, rows, t0, Duration::from_secs(600)).await?;

    // Initial copy, native (schema first, as native replication needs it).
    let n = connect(&native.dsn("clinic_native")).await?;
    n.batch_execute(crate::devkit::datagen::SCHEMA_SQL)
        .await
        .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))?;
    pg_tool(
        "pgbench",
        &["-i", "-q", "-I", "dtp", &native.dsn("clinic_native")],
    )?;
    n.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
        .await
        .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))?;
    let t1 = Instant::now();
    n.batch_execute(&format!(
        "CREATE SUBSCRIPTION bench CONNECTION '{}' PUBLICATION veil_pub WITH (copy_data = true)",
        prod.dsn("clinic")
    ))
    .await
    .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))?;
    let native_copy = until_rows(&n, rows, t1, Duration::from_secs(600)).await?;

    // A burst of changes: both replicate the same WAL concurrently.
    let t2 = Instant::now();
    p.batch_execute(&format!(
        "INSERT INTO observations (encounter_id, code, value, unit, observed_at)
         SELECT 1 + (g % (SELECT count(*) FROM encounters)), '8867-4', g % 100, '/min', now()
         FROM generate_series(1, {}) g",
        opts.changes
    ))
    .await
    .map_err(|e| DemoError::Postgres(crate::pg::errors::describe(&e)))?;
    let want = rows + opts.changes as i64;
    let (veil_burst, native_burst) = tokio::join!(
        until_rows(&d, want, t2, Duration::from_secs(600)),
        until_rows(&n, want, t2, Duration::from_secs(600))
    );
    let (veil_burst, native_burst) = (veil_burst?, native_burst?);
    let _ = stop_tx.send(true);
    let _ = stream.await;
    let _ = sink.await;

    // The backlog: many small transactions written while both replicas are stopped. Round one:
    // veil (stream and sink together) catches up, then native does, one after the other (two
    // cores: running them at once would measure the contention). Round two, a second backlog of
    // the same size: the stages one at a time — pg_recvlogical reading it to /dev/null (the
    // decode limit), the stream alone (until PostgreSQL has its confirmation), the sink alone
    // (until dev holds every row).
    let mut backlog = None;
    let mut stages = None;
    if opts.backlog > 0 {
        let pg = |e: tokio_postgres::Error| DemoError::Postgres(crate::pg::errors::describe(&e));
        n.batch_execute("ALTER SUBSCRIPTION bench DISABLE")
            .await
            .map_err(pg)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dsn = prod.dsn("clinic");
        let txns = opts.backlog.to_string();
        let write_backlog = || {
            pg_tool(
                "pgbench",
                &["-n", "-c", "1", "-t", &txns, "-M", "prepared", &dsn],
            )
        };
        let t = Instant::now();
        write_backlog()?;
        let written = t.elapsed();
        let want1 = want + opts.backlog as i64;
        let before = StageSample::take(&metrics);
        let (stop_tx, stop_rx) = watch::channel(false);
        let t3 = Instant::now();
        let (stream, sink) = crate::devkit::demo::spawn_pipeline(&cfg, stop_rx);
        let veil_backlog = until_rows(&d, want1, t3, Duration::from_secs(1800)).await?;
        let _ = stop_tx.send(true);
        let _ = stream.await;
        let _ = sink.await;
        let veil_sample = StageSample::take(&metrics).since(&before);
        let t4 = Instant::now();
        n.batch_execute("ALTER SUBSCRIPTION bench ENABLE")
            .await
            .map_err(pg)?;
        let native_backlog = until_rows(&n, want1, t4, Duration::from_secs(1800)).await?;
        n.batch_execute("ALTER SUBSCRIPTION bench DISABLE")
            .await
            .map_err(pg)?;
        backlog = Some((written, veil_backlog, native_backlog, veil_sample));

        // Round two: the stages.
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.batch_execute(
            "SELECT pg_catalog.pg_create_logical_replication_slot('bench_decode', 'pgoutput')",
        )
        .await
        .map_err(pg)?;
        write_backlog()?;
        let end_lsn: String = p
            .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
            .await
            .map_err(pg)?
            .get(0);
        let want2 = want1 + opts.backlog as i64;
        let t5 = Instant::now();
        pg_tool(
            "pg_recvlogical",
            &[
                "-d",
                &prod.dsn("clinic"),
                "--slot",
                "bench_decode",
                "--start",
                "--endpos",
                &end_lsn,
                "-o",
                "proto_version=1",
                "-o",
                "publication_names=veil_pub",
                "-f",
                "/dev/null",
                "--no-loop",
            ],
        )?;
        let decode_limit = t5.elapsed();
        let _ = p
            .batch_execute("SELECT pg_catalog.pg_drop_replication_slot('bench_decode')")
            .await;
        let before = StageSample::take(&metrics);
        let (stop_stream, stop_rx) = watch::channel(false);
        let t6 = Instant::now();
        let scfg = cfg.clone();
        let stream = tokio::spawn(async move { crate::source::stream::run(&scfg, stop_rx).await });
        // First every transaction published (the in-process metric), then confirmed to
        // PostgreSQL (status updates come every second).
        let mut published_at = None;
        loop {
            if published_at.is_none()
                && metrics.is_some()
                && StageSample::take(&metrics)
                    .since(&before)
                    .sum(crate::metrics::TRANSACTIONS)
                    >= opts.backlog as f64
            {
                published_at = Some(t6.elapsed());
            }
            if confirmed_past(&p, &end_lsn).await? {
                break;
            }
            if t6.elapsed() > Duration::from_secs(1800) {
                return Err(DemoError::Verify(
                    "the stream did not confirm the backlog".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stream_stage = t6.elapsed();
        let (stop_sink, stop_rx) = watch::channel(false);
        let t7 = Instant::now();
        let kcfg = cfg.clone();
        let sink = tokio::spawn(async move { crate::sink::run(&kcfg, stop_rx).await });
        let sink_stage = until_rows(&d, want2, t7, Duration::from_secs(1800)).await?;
        let _ = stop_stream.send(true);
        let _ = stop_sink.send(true);
        let _ = stream.await;
        let _ = sink.await;
        let sample = StageSample::take(&metrics).since(&before);
        stages = Some((
            decode_limit,
            published_at.unwrap_or(stream_stage),
            stream_stage,
            sink_stage,
            sample,
        ));
    }
    let _ = n.batch_execute("DROP SUBSCRIPTION bench").await;

    let rate = |n: i64, d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!("{:<34} {:>14} {:>14} {:>8}", "", "veil", "native", "ratio");
    println!(
        "{:<34} {:>10.0} r/s {:>10.0} r/s {:>8.2}",
        format!("initial copy ({rows} rows)"),
        rate(rows, veil_copy),
        rate(rows, native_copy),
        rate(rows, veil_copy) / rate(rows, native_copy)
    );
    let c = opts.changes as i64;
    println!(
        "{:<34} {:>10.0} r/s {:>10.0} r/s {:>8.2}",
        format!("change burst ({c} inserts)"),
        rate(c, veil_burst),
        rate(c, native_burst),
        rate(c, veil_burst) / rate(c, native_burst)
    );
    if let Some((written, veil_backlog, native_backlog, sample)) = backlog {
        let b = opts.backlog as i64;
        println!(
            "{:<34} {:>10.0} t/s {:>10.0} t/s {:>8.2}",
            format!("backlog ({b} small transactions)"),
            rate(b, veil_backlog),
            rate(b, native_backlog),
            rate(b, veil_backlog) / rate(b, native_backlog)
        );
        println!(
            "(the backlog took production {:.1} s to write: {:.0} t/s; veil's time includes its start)",
            written.as_secs_f64(),
            rate(b, written)
        );
        sample.print("backlog, stream and sink together");
    }
    if let Some((decode_limit, published, stream_stage, sink_stage, sample)) = stages {
        let b = opts.backlog as i64;
        println!();
        println!("backlog by stage (a second backlog of {b} transactions, one stage at a time):");
        println!(
            "{:<34} {:>10.0} t/s",
            "pg_recvlogical to /dev/null",
            rate(b, decode_limit)
        );
        println!(
            "{:<34} {:>10.0} t/s {:>8.2} of pg_recvlogical",
            "veil stream alone (all published)",
            rate(b, published),
            rate(b, published) / rate(b, decode_limit)
        );
        println!(
            "{:<34} {:>10.0} t/s   (status updates every second)",
            "  … confirmed to PostgreSQL",
            rate(b, stream_stage),
        );
        println!(
            "{:<34} {:>10.0} t/s",
            "veil sink alone (to rows in dev)",
            rate(b, sink_stage)
        );
        sample.print("stream alone, then sink alone");
    }
    println!(
        "(veil: de-identified, through Kafka, into another cluster; native: plain copy. Times include \
         the 20 ms polling of the row counts; the veil backlog time includes the stream's start.)"
    );
    Ok(())
}
