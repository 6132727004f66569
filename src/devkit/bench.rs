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
    /// Seconds of the steady-state latency run (0: none; needs the backlog phase's rates).
    pub steady_secs: u64,
    /// MiB of the one large transaction whose memory use is measured (0: none).
    pub big_txn_mb: u64,
    /// Backfill pgbench_accounts online after the burst.
    pub backfill: bool,
}

async fn count(c: &Client, sql: &str) -> Result<i64, DemoError> {
    c.query_one(sql, &[]).await.map(|r| r.get(0)).map_err(pg)
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

/// A table of wide rows for the large-transaction phase (one safe text column).
const BLOB_TABLE: &str = "CREATE TABLE bench_blob (id bigserial PRIMARY KEY, body text NOT NULL)";
const BLOB_REGISTRY: (&str, &str) = (
    "public.bench_blob.toml",
    r#"table = "public.bench_blob"
profile = "safe_harbor"
reviewer = "veil bench"
[columns]
id   = { type = "bigint", class = "safe", reason = "generated key of bench rows" }
body = { type = "text", class = "safe", reason = "generated filler" }
"#,
);

/// Resident memory of this process (stream and sink run in it), in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A PostgreSQL error as the bench reports it (never a row value).
fn pg(e: tokio_postgres::Error) -> DemoError {
    DemoError::Postgres(crate::pg::errors::describe(&e))
}

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
                || name.starts_with(crate::metrics::VAULT_ALLOCATED)
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
            "    vault: {:.0} new tokens in {:.0} round trips; {:.0} source transactions published, {:.0} applied",
            self.sum(crate::metrics::VAULT_ALLOCATED),
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
    .map_err(pg)
}

/// Marker deltas of the latency probes (pgbench's own deltas lie within ±5000).
const PROBE_BASE: i32 = -1_000_000;

/// Commit in production → visible in `watch`, for probe rows written every 20 ms for `secs`
/// while pgbench runs at `rate` transactions per second (two clients). A probe is a
/// `pgbench_history` row whose `delta` (kept as is) is a marker; it counts as committed when
/// its INSERT returned, and as visible when a 5 ms poll of `watch` first finds it.
async fn steady_latency(
    p: &Client,
    watch: &Client,
    dsn: &str,
    rate: u64,
    secs: u64,
    first_marker: i32,
) -> Result<Vec<Duration>, DemoError> {
    let mut load = std::process::Command::new(crate::devkit::testkit::pg_bin_dir().join("pgbench"))
        .args([
            "-n",
            "-c",
            "2",
            "-j",
            "2",
            "-R",
            &rate.to_string(),
            "-T",
            &secs.to_string(),
            "-M",
            "prepared",
            dsn,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| DemoError::Start {
            what: "a PostgreSQL client program",
            message: format!("pgbench: {e}"),
        })?;
    let insert = p
        .prepare(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, $1, now())",
        )
        .await
        .map_err(pg)?;
    let poll = watch
        .prepare("SELECT delta FROM pgbench_history WHERE delta <= $1 AND delta > $2")
        .await
        .map_err(pg)?;
    let started = Instant::now();
    let mut committed: Vec<Instant> = Vec::new();
    let mut seen: Vec<Option<Instant>> = Vec::new();
    let mut next_probe = started;
    let mut unseen_from = 0usize;
    loop {
        let now = Instant::now();
        let writing = now.duration_since(started) < Duration::from_secs(secs);
        if writing && now >= next_probe {
            let marker = first_marker - committed.len() as i32;
            p.execute(&insert, &[&marker]).await.map_err(pg)?;
            committed.push(Instant::now());
            seen.push(None);
            next_probe += Duration::from_millis(20);
        }
        if unseen_from < committed.len() {
            let upper = first_marker - unseen_from as i32;
            let lower = first_marker - committed.len() as i32;
            for r in watch.query(&poll, &[&upper, &lower]).await.map_err(pg)? {
                let k = (first_marker - r.get::<_, i32>(0)) as usize;
                if let Some(s) = seen.get_mut(k)
                    && s.is_none()
                {
                    *s = Some(Instant::now());
                }
            }
            while unseen_from < seen.len() && seen[unseen_from].is_some() {
                unseen_from += 1;
            }
        }
        if !writing && unseen_from == committed.len() {
            break;
        }
        if now.duration_since(started) > Duration::from_secs(secs + 120) {
            return Err(DemoError::Verify(
                "latency probes did not all reach the replica within 120 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tokio::task::spawn_blocking(move || load.wait()).await;
    Ok(committed
        .iter()
        .zip(&seen)
        .filter_map(|(c, s)| s.map(|s| s.duration_since(*c)))
        .collect())
}

/// The `q`-quantile of `v` (sorted in place), in milliseconds.
fn quantile_ms(v: &mut [Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
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
    // Production commits as production does: WAL is written at commit, so a walsender sees a
    // commit at once (test clusters turn synchronous_commit off for speed, which delays every
    // replica by up to wal_writer_delay). fsync stays off: this measures replication, not disks.
    for sql in [
        "ALTER SYSTEM SET synchronous_commit = on",
        "SELECT pg_catalog.pg_reload_conf()",
    ] {
        p.batch_execute(sql).await.map_err(pg)?;
    }
    crate::devkit::datagen::load(&p, opts.patients, 42)
        .await
        .map_err(pg)?;
    // pgbench's tables (scale 1: 100,000 accounts), with a key on the history.
    let scale = opts.scale.max(1).to_string();
    pg_tool("pgbench", &["-i", "-q", "-s", &scale, &prod.dsn("clinic")])?;
    p.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
        .await
        .map_err(pg)?;
    p.batch_execute(BLOB_TABLE).await.map_err(pg)?;
    let rows = count(&p, TOTAL).await?;
    let regdir = tempfile::tempdir().map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
    crate::devkit::demo::write_registry(regdir.path()).map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
    for (name, text) in PGBENCH_REGISTRY.iter().chain([&BLOB_REGISTRY]) {
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
    let copy_before = StageSample::take(&metrics);
    let t0 = Instant::now();
    let (stream, sink) = crate::devkit::demo::spawn_pipeline(&cfg, stop_rx);
    let veil_copy = until_rows(&d, rows, t0, Duration::from_secs(600)).await?;
    let copy_sample = StageSample::take(&metrics).since(&copy_before);

    // Initial copy, native (schema first, as native replication needs it).
    let n = connect(&native.dsn("clinic_native")).await?;
    n.batch_execute(crate::devkit::datagen::SCHEMA_SQL)
        .await
        .map_err(pg)?;
    pg_tool(
        "pgbench",
        &["-i", "-q", "-I", "dtp", &native.dsn("clinic_native")],
    )?;
    n.batch_execute("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
        .await
        .map_err(pg)?;
    n.batch_execute(BLOB_TABLE).await.map_err(pg)?;
    let t1 = Instant::now();
    n.batch_execute(&format!(
        "CREATE SUBSCRIPTION bench CONNECTION '{}' PUBLICATION veil_pub WITH (copy_data = true)",
        prod.dsn("clinic")
    ))
    .await
    .map_err(pg)?;
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
    .map_err(pg)?;
    let want = rows + opts.changes as i64;
    let (veil_burst, native_burst) = tokio::join!(
        until_rows(&d, want, t2, Duration::from_secs(600)),
        until_rows(&n, want, t2, Duration::from_secs(600))
    );
    let (veil_burst, native_burst) = (veil_burst?, native_burst?);

    // An online backfill of the largest table while the pipeline runs (dev holds every row:
    // each is replaced by an upsert, as after a stricter rule).
    let mut backfilled = None;
    if opts.backfill {
        let table = "public.pgbench_accounts";
        let n_rows = count(&p, "SELECT count(*) FROM pgbench_accounts").await?;
        let before = StageSample::take(&metrics);
        let t = Instant::now();
        crate::source::backfill::request(&cfg, table)
            .await
            .map_err(|e| DemoError::Start {
                what: "backfill request",
                message: e.to_string(),
            })?;
        // Done when dev applied the transaction of the last chunk (the job's state names its
        // high watermark; the chunk commits one below it).
        let finished = "SELECT coalesce(max((state->>'finished_lsn')::bigint), 0) FROM _veil.backfills \
                        WHERE tbl = 'public.pgbench_accounts'";
        let mut last = 0i64;
        loop {
            if last == 0 {
                last = count(&p, finished).await?;
            }
            if last > 0
                && count(
                    &d,
                    "SELECT coalesce(max(last_commit_lsn), 0) FROM veil_sink.checkpoint",
                )
                .await?
                    >= last - 1
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(3600) {
                return Err(DemoError::Start {
                    what: "backfill",
                    message: "did not end within an hour".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        backfilled = Some((
            n_rows,
            t.elapsed(),
            StageSample::take(&metrics).since(&before),
        ));
    }
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
        let mut first_at = None;
        loop {
            if published_at.is_none() && metrics.is_some() {
                let n = StageSample::take(&metrics)
                    .since(&before)
                    .sum(crate::metrics::TRANSACTIONS);
                if first_at.is_none() && n >= 1.0 {
                    first_at = Some(t6.elapsed());
                }
                if n >= opts.backlog as f64 {
                    published_at = Some(t6.elapsed());
                }
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
            first_at.unwrap_or_default(),
            published_at.unwrap_or(stream_stage),
            stream_stage,
            sink_stage,
            sample,
        ));
    }
    // Round three: steady state at half the slower of production's own write rate (one
    // client) and native's apply rate, veil first, then native, each with its own probes.
    let mut steady = None;
    if let (Some((written, _, native_backlog, _)), true) = (&backlog, opts.steady_secs > 0) {
        let b = opts.backlog as f64;
        let rate = ((b / written.as_secs_f64()).min(b / native_backlog.as_secs_f64()) / 2.0)
            .max(1.0) as u64;
        let index = "CREATE INDEX IF NOT EXISTS bench_probe ON pgbench_history (delta)";
        d.batch_execute(index).await.map_err(pg)?;
        n.batch_execute(index).await.map_err(pg)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stream, sink) = crate::devkit::demo::spawn_pipeline(&cfg, stop_rx);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let dsn = prod.dsn("clinic");
        let mut veil_lat = steady_latency(&p, &d, &dsn, rate, opts.steady_secs, PROBE_BASE).await?;
        let _ = stop_tx.send(true);
        let _ = stream.await;
        let _ = sink.await;
        n.batch_execute("ALTER SUBSCRIPTION bench ENABLE")
            .await
            .map_err(pg)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let second = PROBE_BASE - 1_000_000;
        let mut native_lat = steady_latency(&p, &n, &dsn, rate, opts.steady_secs, second).await?;
        let q = |v: &mut Vec<Duration>| {
            (
                quantile_ms(v, 0.5),
                quantile_ms(v, 0.99),
                quantile_ms(v, 1.0),
                v.len(),
            )
        };
        steady = Some((rate, q(&mut veil_lat), q(&mut native_lat)));
    }
    let _ = n.batch_execute("DROP SUBSCRIPTION bench").await;

    // Last, one large transaction (rows of 1 KiB) through veil, with this process's resident
    // memory (stream and sink both run in it) sampled every 100 ms.
    let mut big = None;
    if opts.big_txn_mb > 0 {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stream, sink) = crate::devkit::demo::spawn_pipeline(&cfg, stop_rx);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let baseline = rss_bytes();
        let n_rows = opts.big_txn_mb * 1024;
        let writer = connect(&prod.dsn("clinic")).await?;
        let t = Instant::now();
        let write = tokio::spawn(async move {
            writer
                .batch_execute(&format!(
                    "INSERT INTO bench_blob (body) SELECT repeat(md5(g::text), 32) \
                     FROM generate_series(1, {n_rows}) g"
                ))
                .await
                .map(|_| Instant::now())
        });
        let mut peak = baseline;
        loop {
            peak = peak.max(rss_bytes());
            if count(&d, "SELECT count(*) FROM bench_blob")
                .await
                .unwrap_or(0)
                >= n_rows as i64
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(3600) {
                return Err(DemoError::Verify(
                    "the large transaction did not reach dev within an hour".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let total = t.elapsed();
        let committed = match write.await {
            Ok(Ok(at)) => at.duration_since(t),
            Ok(Err(e)) => return Err(pg(e)),
            Err(e) => return Err(DemoError::Verify(format!("writer task: {e}"))),
        };
        let _ = stop_tx.send(true);
        let _ = stream.await;
        let _ = sink.await;
        big = Some((n_rows, committed, total, baseline, peak));
    }

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
    copy_sample.print("initial copy");
    if let Some((n_rows, took, sample)) = &backfilled {
        println!(
            "{:<34} {:>10.0} r/s {:>14} {:>8}",
            format!("online backfill ({n_rows} rows)"),
            rate(*n_rows, *took),
            "",
            ""
        );
        println!(
            "  ({:.1} s from the request to the last chunk acknowledged; {:.2}× the initial copy's rate)",
            took.as_secs_f64(),
            rate(*n_rows, *took) / rate(rows, veil_copy)
        );
        sample.print("online backfill");
    }
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
    if let Some((decode_limit, first, published, stream_stage, sink_stage, sample)) = stages {
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
            "{:<34} {:>10.0} t/s {:>8.2} of pg_recvlogical (after its first {:.2} s: start, slot, topic tail)",
            "  … once publishing",
            rate(b - 1, published.saturating_sub(first)),
            rate(b - 1, published.saturating_sub(first)) / rate(b, decode_limit),
            first.as_secs_f64()
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
    if let Some((n_rows, committed, total, baseline, peak)) = big {
        println!();
        println!(
            "one transaction of {} MiB ({n_rows} rows of 1 KiB): committed in production after {:.1} s, \
             all in dev after {:.1} s; resident memory of the process (stream + sink) {} MiB at \
             start, {} MiB at most",
            opts.big_txn_mb,
            committed.as_secs_f64(),
            total.as_secs_f64(),
            baseline >> 20,
            peak >> 20
        );
    }
    if let Some((rate, v, n)) = steady {
        println!();
        println!(
            "steady state: pgbench at {rate} t/s for {} s; probe commits in production → visible in the replica:",
            opts.steady_secs
        );
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>8}",
            "", "p50 ms", "p99 ms", "max ms", "probes"
        );
        for (name, (p50, p99, max, count)) in [("veil", v), ("native", n)] {
            println!("{name:<34} {p50:>8.1} {p99:>8.1} {max:>8.1} {count:>8}");
        }
    }
    println!(
        "(veil: de-identified, through Kafka, into another cluster; native: plain copy. Times include \
         the 20 ms polling of the row counts; the veil backlog time includes the stream's start.)"
    );
    Ok(())
}
