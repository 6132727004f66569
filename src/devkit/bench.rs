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
     + (SELECT count(*) FROM public.providers)";

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

pub async fn run(opts: BenchOptions) -> Result<(), DemoError> {
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
    let rows = count(&p, TOTAL).await?;
    let regdir = tempfile::tempdir().map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
    crate::devkit::demo::write_registry(regdir.path()).map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
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

    // The backlog: many small transactions written while both replicas are stopped, then both
    // started at once.
    let mut backlog = None;
    if opts.backlog > 0 {
        let pg = |e: tokio_postgres::Error| DemoError::Postgres(crate::pg::errors::describe(&e));
        n.batch_execute("ALTER SUBSCRIPTION bench DISABLE")
            .await
            .map_err(pg)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = Instant::now();
        p.batch_execute(&format!(
            "DO $bench$ BEGIN FOR i IN 1..{} LOOP
               UPDATE observations SET value = value + 1 WHERE id = 1 + (i * 7919) % {rows_obs};
               INSERT INTO observations (encounter_id, code, value, unit, observed_at)
                 VALUES (1 + i % {rows_enc}, '8867-4', i % 100, '/min', now());
               COMMIT;
             END LOOP; END $bench$",
            opts.backlog,
            rows_obs = count(&p, "SELECT count(*) FROM observations").await?.max(1),
            rows_enc = count(&p, "SELECT count(*) FROM encounters").await?.max(1),
        ))
        .await
        .map_err(pg)?;
        let written = t.elapsed();
        let want = want + opts.backlog as i64;
        let (stop_tx, stop_rx) = watch::channel(false);
        let t3 = Instant::now();
        let (stream, sink) = crate::devkit::demo::spawn_pipeline(&cfg, stop_rx);
        n.batch_execute("ALTER SUBSCRIPTION bench ENABLE")
            .await
            .map_err(pg)?;
        let (veil_backlog, native_backlog) = tokio::join!(
            until_rows(&d, want, t3, Duration::from_secs(1800)),
            until_rows(&n, want, t3, Duration::from_secs(1800))
        );
        backlog = Some((written, veil_backlog?, native_backlog?));
        let _ = stop_tx.send(true);
        let _ = stream.await;
        let _ = sink.await;
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
    if let Some((written, veil_backlog, native_backlog)) = backlog {
        let b = opts.backlog as i64;
        println!(
            "{:<34} {:>10.0} t/s {:>10.0} t/s {:>8.2}",
            format!("backlog ({b} small transactions)"),
            rate(b, veil_backlog),
            rate(b, native_backlog),
            rate(b, veil_backlog) / rate(b, native_backlog)
        );
        println!(
            "(the backlog took production {:.1} s to write: {:.0} t/s)",
            written.as_secs_f64(),
            rate(b, written)
        );
    }
    println!(
        "(veil: de-identified, through Kafka, into another cluster; native: plain copy. Times include \
         the 20 ms polling of the row counts; the veil backlog time includes the stream's start.)"
    );
    Ok(())
}
