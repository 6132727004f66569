//! `veil demo`: everything on one machine. Throwaway prod and dev PostgreSQL 15 clusters, the
//! local broker, a generated patient data set, `veil setup`, stream and sink in-process, and a
//! live workload; prints a join in prod and in dev side by side (same shape, different
//! identifiers). With `--for`, runs that long, waits for dev to catch up, verifies the copy
//! (row counts, FK join counts and shapes, no original identifier in dev) and exits.

use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::{Config, Dsn, KafkaConfig, Secret, SinkConfig, SourceConfig};
use crate::devkit::datagen;
use crate::devkit::testkit::{Broker, PgCluster};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("starting {what}: {message}")]
    Start { what: &'static str, message: String },
    #[error("{0}")]
    Postgres(String),
    #[error("the stream stopped: {0}")]
    Stream(String),
    #[error("the sink stopped: {0}")]
    Sink(String),
    #[error("verification failed: {0}")]
    Verify(String),
}

fn pgerr(e: tokio_postgres::Error) -> DemoError {
    DemoError::Postgres(crate::pg::errors::describe(&e))
}

pub struct DemoOptions {
    pub duration: Option<Duration>,
    pub patients: usize,
}

/// The registry shipped in `schema-registry/`, embedded so the demo runs from anywhere.
pub const DEMO_REGISTRY: &[(&str, &str)] = &[
    (
        "public.providers.toml",
        include_str!("../../schema-registry/public.providers.toml"),
    ),
    (
        "public.patients.toml",
        include_str!("../../schema-registry/public.patients.toml"),
    ),
    (
        "public.encounters.toml",
        include_str!("../../schema-registry/public.encounters.toml"),
    ),
    (
        "public.observations.toml",
        include_str!("../../schema-registry/public.observations.toml"),
    ),
    (
        "public.medications.toml",
        include_str!("../../schema-registry/public.medications.toml"),
    ),
];

/// Writes the demo registry into `dir`.
pub fn write_registry(dir: &Path) -> std::io::Result<()> {
    for (name, text) in DEMO_REGISTRY {
        std::fs::write(dir.join(name), text)?;
    }
    std::fs::write(
        dir.join("restricted_zip3.txt"),
        include_str!("../../schema-registry/restricted_zip3.txt"),
    )
}

/// A fresh random master key (demo and tests only).
pub fn random_key_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A complete config for a source and a sink (used by the demo and the tests).
pub fn config_for(
    prod_dsn: String,
    dev_dsn: String,
    brokers: String,
    topic: &str,
    registry: &Path,
    key_hex: String,
    vault_dsn: Option<String>,
) -> Config {
    Config {
        source: Some(SourceConfig {
            dsn: Dsn(prod_dsn),
            slot: "veil".into(),
            publication: "veil_pub".into(),
            status_interval_secs: 1,
            heartbeat_interval_secs: 5,
            spool_dir: None,
            spool_memory_bytes: 1 << 20,
            hold_release_secs: 10,
            snapshot_connections: 2,
            snapshot_range_pages: 2048,
            backfill_on_decision: true,
        }),
        kafka: Some(KafkaConfig {
            brokers,
            topic: topic.into(),
            replication_factor: 1,
            options: Default::default(),
        }),
        registry: crate::config::RegistryConfig {
            dir: registry.to_owned(),
        },
        keys: crate::config::KeysConfig {
            master_key_file: None,
            master_key: Some(Secret(key_hex)),
        },
        sink: Some(SinkConfig {
            dsn: Dsn(dev_dsn),
            batch_max_rows: 5000,
            batch_max_ms: 25,
        }),
        vault: vault_dsn.map(|dsn| crate::config::VaultConfig {
            dsn: Dsn(dsn),
            cache_entries: 1_000_000,
            connections: 2,
        }),
        scanner: crate::config::ScannerConfig {
            in_flight_sample: 1.0,
            mrn_patterns: Vec::new(),
        },
        api: None,
        audit: None,
        metrics: Default::default(),
    }
}

/// The in-process stream task.
pub type StreamTask = tokio::task::JoinHandle<Result<(), crate::source::error::StreamError>>;
/// The in-process sink task.
pub type SinkTask = tokio::task::JoinHandle<Result<(), crate::sink::SinkError>>;

/// Runs `veil stream` and `veil sink` in-process until `stop` turns true.
pub fn spawn_pipeline(cfg: &Config, stop: watch::Receiver<bool>) -> (StreamTask, SinkTask) {
    let (scfg, srx) = (cfg.clone(), stop.clone());
    let stream = tokio::spawn(async move { crate::source::stream::run(&scfg, srx).await });
    let kcfg = cfg.clone();
    let sink = tokio::spawn(async move { crate::sink::run(&kcfg, stop).await });
    (stream, sink)
}

pub async fn connect(dsn: &str) -> Result<Client, DemoError> {
    let (c, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .map_err(pgerr)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

const TABLES: [&str; 5] = [
    "providers",
    "patients",
    "encounters",
    "observations",
    "medications",
];

async fn counts(c: &Client) -> Result<Vec<i64>, DemoError> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(
            c.query_one(&format!("SELECT count(*) FROM public.{t}"), &[])
                .await
                .map_err(pgerr)?
                .get(0),
        );
    }
    Ok(out)
}

const JOIN_SQL: &str = "SELECT p.id::text, p.family_name || ' ' || p.given_name, coalesce(p.ssn, '-'), count(e.id) \
     FROM public.patients p JOIN public.encounters e ON e.patient_id = p.id \
     GROUP BY p.id ORDER BY count(e.id) DESC, p.id LIMIT 6";

fn pad(s: &str, w: usize) -> String {
    // Width in characters, wide scripts count twice (good enough for a terminal table).
    let width: usize = s
        .chars()
        .map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 })
        .sum();
    let mut out: String = s.to_owned();
    if width > w {
        out = s.chars().take(w / 2).collect();
        return out;
    }
    out.push_str(&" ".repeat(w - width));
    out
}

/// The demo holds the key and the vault (it is both sides at once), so it can find each
/// production patient's dev row: the production row goes through the same plan the stream uses,
/// and the published id is the dev row's key.
pub struct Mapper {
    client: Client,
    plan: crate::deid::gate::TablePlan,
    vault: crate::deid::vault::Vault,
    /// `SELECT <every column as text> FROM public.patients WHERE id = $1`.
    select: String,
    id_at: usize,
}

impl Mapper {
    /// Plans `public.patients` as it is now (under the registry as it is now).
    pub async fn new(cfg: &Config, prod_dsn: &str) -> Result<Mapper, DemoError> {
        let fail = |e: String| DemoError::Verify(format!("mapping prod rows to dev rows: {e}"));
        let client = connect(prod_dsn).await?;
        crate::pg::catalog::prepare_session(&client)
            .await
            .map_err(|e| fail(e.to_string()))?;
        client
            .batch_execute(&crate::pg::value_format_sql())
            .await
            .map_err(pgerr)?;
        let oid: u32 = client
            .query_one("SELECT 'public.patients'::regclass::oid", &[])
            .await
            .map_err(pgerr)?
            .get(0);
        let info = crate::pg::catalog::describe_table(&client, oid, None)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let registry = crate::deid::registry::Registry::load(&cfg.registry.dir)
            .map_err(|e| fail(e.to_string()))?;
        let master = crate::deid::tokenize::MasterKey::from_config(&cfg.keys)
            .map_err(|e| fail(e.to_string()))?;
        let plan = crate::deid::gate::plan_table(
            "clinic",
            &info,
            &info.primary_key,
            &registry,
            &master,
            &std::sync::Arc::new(crate::deid::scanner::Scanner::standard()),
        )
        .map_err(|e| fail(e.to_string()))?;
        let vault_cfg = cfg.vault().map_err(|e| fail(e.to_string()))?;
        let vault = crate::deid::vault::Vault::connect(vault_cfg, &master)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let select = format!(
            "SELECT {} FROM public.patients WHERE id = $1::text::bigint",
            plan.columns
                .iter()
                .map(|c| format!("{}::text", crate::pg::quote::ident(&c.name)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let id_at = plan
            .schema
            .columns
            .iter()
            .position(|c| c.name == "id")
            .ok_or_else(|| fail("patients.id is not published".into()))?;
        Ok(Mapper {
            client,
            plan,
            vault,
            select,
            id_at,
        })
    }

    /// The dev id of production patient `id` (None: the row is gone).
    pub async fn dev_id(&self, id: &str) -> Result<Option<String>, DemoError> {
        let Some(row) = self
            .client
            .query_opt(&self.select, &[&id])
            .await
            .map_err(pgerr)?
        else {
            return Ok(None);
        };
        let values: Vec<Option<Vec<u8>>> = (0..row.len())
            .map(|i| row.get::<_, Option<String>>(i).map(String::into_bytes))
            .collect();
        let fail = |e: String| DemoError::Verify(format!("mapping a prod row to dev: {e}"));
        for _ in 0..4 {
            let mut misses = Vec::new();
            let out = self
                .plan
                .transform(
                    values.iter().map(crate::deid::gate::RowValue::from),
                    0,
                    &self.vault,
                    &mut misses,
                )
                .map_err(|e| fail(e.to_string()))?;
            if misses.is_empty() {
                return Ok(match out.get(self.id_at).and_then(|v| v.kind.as_ref()) {
                    Some(crate::proto::value::Kind::Text(t)) => Some(t.clone()),
                    _ => None,
                });
            }
            // Known to the vault already (the stream published the row); a lookup.
            self.vault
                .allocate(misses)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        Err(fail("the vault left a value without a token".into()))
    }
}

const DEV_ROW_SQL: &str = "SELECT p.id::text, p.family_name || ' ' || p.given_name, coalesce(p.ssn, '-'), count(e.id) \
     FROM public.patients p LEFT JOIN public.encounters e ON e.patient_id = p.id \
     WHERE p.id = $1::text::bigint GROUP BY p.id";

/// Prints the encounters-per-patient join in prod and, row by row, the same patients in dev.
pub async fn print_join(prod: &Client, dev: &Client, mapper: &Mapper) -> Result<(), DemoError> {
    let a = prod.query(JOIN_SQL, &[]).await.map_err(pgerr)?;
    println!();
    println!(
        "  {} | DEV (de-identified)  the same patients",
        pad("PRODUCTION  id / name / ssn / encounters", 60)
    );
    println!("  {}-+-{}", "-".repeat(60), "-".repeat(60));
    let fmt = |r: &tokio_postgres::Row| {
        format!(
            "{} {} {} {}",
            pad(&r.get::<_, String>(0), 19),
            pad(&r.get::<_, String>(1), 18),
            pad(&r.get::<_, String>(2), 12),
            r.get::<_, i64>(3)
        )
    };
    for r in &a {
        let id: String = r.get(0);
        let right = match mapper.dev_id(&id).await? {
            Some(dev_id) => match dev
                .query_opt(DEV_ROW_SQL, &[&dev_id])
                .await
                .map_err(pgerr)?
            {
                Some(d) => fmt(&d),
                None => "(not in dev yet)".into(),
            },
            None => "(deleted)".into(),
        };
        println!("  {} | {}", pad(&fmt(r), 60), right);
    }
    println!();
    Ok(())
}

/// Compares prod and dev: counts, FK join counts, join shapes, and that no original identifier
/// of prod appears in dev.
pub async fn verify(prod: &Client, dev: &Client) -> Result<String, DemoError> {
    let (pc, dc) = (counts(prod).await?, counts(dev).await?);
    if pc != dc {
        return Err(DemoError::Verify(format!(
            "row counts differ: prod {pc:?}, dev {dc:?} ({TABLES:?})"
        )));
    }
    let joins = [
        "SELECT count(*) FROM public.encounters e JOIN public.patients p ON p.id = e.patient_id",
        "SELECT count(*) FROM public.encounters e JOIN public.providers p ON p.id = e.provider_id",
        "SELECT count(*) FROM public.observations o JOIN public.encounters e ON e.id = o.encounter_id",
        "SELECT count(*) FROM public.medications m JOIN public.patients p ON p.id = m.patient_id",
        "SELECT count(*) FROM public.medications m JOIN public.encounters e ON e.id = m.encounter_id",
    ];
    for j in joins {
        let a: i64 = prod.query_one(j, &[]).await.map_err(pgerr)?.get(0);
        let b: i64 = dev.query_one(j, &[]).await.map_err(pgerr)?.get(0);
        if a != b {
            return Err(DemoError::Verify(format!(
                "join count differs ({j}): prod {a}, dev {b}"
            )));
        }
    }
    let shape = "SELECT coalesce(array_agg(n ORDER BY n), '{}') FROM (SELECT count(*) AS n FROM public.encounters GROUP BY patient_id) s";
    let a: Vec<i64> = prod.query_one(shape, &[]).await.map_err(pgerr)?.get(0);
    let b: Vec<i64> = dev.query_one(shape, &[]).await.map_err(pgerr)?.get(0);
    if a != b {
        return Err(DemoError::Verify(
            "encounters-per-patient distribution differs".into(),
        ));
    }
    let mut leaked = Vec::new();
    // Identifiers with a large value space: no original may appear anywhere in dev. (Names,
    // streets and cities are surrogates from word lists, so a real name can appear in dev for
    // another person by design; the end-to-end tests check them row by row.)
    for col in ["mrn", "ssn", "phone", "email"] {
        let vals: Vec<String> = prod
            .query(
                &format!(
                    "SELECT DISTINCT {col} FROM public.patients WHERE char_length({col}) >= 5"
                ),
                &[],
            )
            .await
            .map_err(pgerr)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let n: i64 = dev
            .query_one(
                &format!("SELECT count(*) FROM public.patients WHERE {col} = ANY($1)"),
                &[&vals],
            )
            .await
            .map_err(pgerr)?
            .get(0);
        if n > 0 {
            leaked.push(format!("patients.{col}: {n} rows"));
        }
    }
    let ids: i64 = dev
        .query_one(
            "SELECT count(*) FROM public.patients d WHERE d.id IN (SELECT generate_series(1, 100000))",
            &[],
        )
        .await
        .map_err(pgerr)?
        .get(0);
    let total: i64 = dev
        .query_one("SELECT count(*) FROM public.patients", &[])
        .await
        .map_err(pgerr)?
        .get(0);
    if total > 100 && ids * 10 > total {
        leaked.push(format!(
            "patients.id looks untokenized ({ids} of {total} ids are small integers)"
        ));
    }
    if !leaked.is_empty() {
        return Err(DemoError::Verify(format!(
            "original identifiers found in dev: {}",
            leaked.join("; ")
        )));
    }
    Ok(format!(
        "rows equal per table {TABLES:?} = {dc:?}; FK join counts and the encounters-per-patient \
         distribution equal; no original MRN, SSN, phone or e-mail found in dev"
    ))
}

/// Waits until dev matches prod (or the timeout passes).
pub async fn wait_caught_up(
    prod: &Client,
    dev: &Client,
    timeout: Duration,
) -> Result<Duration, DemoError> {
    let start = Instant::now();
    loop {
        if verify(prod, dev).await.is_ok() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return verify(prod, dev).await.map(|_| start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The reviewer the demo decides as.
const DEMO_REVIEWER: &str = "demo-reviewer";

/// The held-DDL story: a migration adds a column of SSNs while the workload runs; the stream
/// holds (nothing of the column, nor anything after it, leaves production); the proposal and its
/// evidence; the demo reviewer approves the proposed rule; the stream resumes and dev gets
/// tokens.
async fn held_column_story(
    cfg: &Config,
    prod: &Client,
    dev: &Client,
    review_port: u16,
    token: &str,
) -> Result<(), DemoError> {
    println!();
    println!(
        "  a migration adds patients.alt_ssn and fills it with each patient's SSN for 25 patients…"
    );
    prod.batch_execute(
        "ALTER TABLE public.patients ADD COLUMN alt_ssn text;
         UPDATE public.patients SET alt_ssn = ssn WHERE id IN (SELECT id FROM public.patients ORDER BY id LIMIT 25);",
    )
    .await
    .map_err(pgerr)?;
    let state = |cfg: &Config| {
        let cfg = cfg.clone();
        async move {
            crate::review::status::stream_state(&cfg)
                .await
                .map(|s| (s.state, s.held))
                .map_err(|e| DemoError::Verify(e.to_string()))
        }
    };
    let t = Instant::now();
    let held = loop {
        let (st, held) = state(cfg).await?;
        if st == "held" {
            break held;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(DemoError::Verify(
                "the stream did not hold on the new column".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for h in &held {
        println!(
            "  HELD on {}.{} ({}): no value of it, and nothing written after it, leaves production; \
             the slot keeps the WAL",
            h.table, h.column, h.type_name
        );
    }
    println!(
        "  review page: http://127.0.0.1:{review_port}/review  (sign in as {DEMO_REVIEWER} with {token})"
    );
    let pending = crate::review::workflow::pending(cfg)
        .await
        .map_err(|e| DemoError::Verify(e.to_string()))?;
    let item = pending
        .iter()
        .find(|p| p.table == "public.patients" && p.column == "alt_ssn")
        .ok_or_else(|| DemoError::Verify("alt_ssn is not pending".into()))?;
    let proposal = item
        .proposal
        .clone()
        .ok_or_else(|| DemoError::Verify("no proposal for alt_ssn".into()))?;
    let rates: Vec<String> = proposal
        .hit_rates
        .iter()
        .filter(|(_, r)| **r > 0.0)
        .map(|(d, r)| format!("{d} {:.0}%", r * 100.0))
        .collect();
    println!(
        "  proposal: {}, rule {}, domain {} — detectors {} of {} sampled values, name hint {}, confidence {}{}",
        proposal.class,
        proposal.rule.as_deref().unwrap_or("-"),
        proposal.domain.as_deref().unwrap_or("-"),
        rates.join(", "),
        proposal.sampled,
        proposal.name_hint.as_deref().unwrap_or("none"),
        proposal.confidence,
        if item.shares_domain_with.is_empty() {
            String::new()
        } else {
            format!("; joins {}", item.shares_domain_with.join(", "))
        }
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let decision = crate::review::workflow::ColumnDecision {
        class: proposal.class.clone(),
        rule: proposal.rule.clone(),
        domain: proposal.domain.clone(),
        kind: proposal.kind.clone(),
        entity: None,
        profile: None,
        by: DEMO_REVIEWER.into(),
        reason: "second SSN field of the patient; the proposed rule, as for patients.ssn".into(),
        scan: proposal.scan,
        mode: proposal.mode.clone(),
        paths: Vec::new(),
        with: Vec::new(),
    };
    crate::review::workflow::approve(cfg, "public.patients.alt_ssn", &decision)
        .await
        .map_err(|e| DemoError::Verify(e.to_string()))?;
    let t = Instant::now();
    loop {
        let in_dev: bool = dev
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
                   WHERE table_schema = 'public' AND table_name = 'patients' AND column_name = 'alt_ssn')",
                &[],
            )
            .await
            .map_err(pgerr)?
            .get(0);
        let (st, _) = state(cfg).await?;
        if st == "streaming" && in_dev {
            println!(
                "  approved by {DEMO_REVIEWER} (rule {}); the stream resumed {:.1}s later; dev has the column",
                proposal.rule.as_deref().unwrap_or("-"),
                t.elapsed().as_secs_f64()
            );
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(DemoError::Verify(
                "the stream did not resume after the approval".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Rows written from now on carry the column (existing rows wait for backfill).
    prod.batch_execute(
        "UPDATE public.patients SET alt_ssn = ssn WHERE id IN (SELECT id FROM public.patients ORDER BY id LIMIT 25)",
    )
    .await
    .map_err(pgerr)?;
    let t = Instant::now();
    loop {
        let n: i64 = dev
            .query_one(
                "SELECT count(*) FROM public.patients WHERE alt_ssn IS NOT NULL",
                &[],
            )
            .await
            .map_err(pgerr)?
            .get(0);
        if n >= 25 {
            let leaked: i64 = {
                let prod_ssns: Vec<String> = prod
                    .query(
                        "SELECT alt_ssn FROM public.patients WHERE alt_ssn IS NOT NULL",
                        &[],
                    )
                    .await
                    .map_err(pgerr)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                dev.query_one(
                    "SELECT count(*) FROM public.patients WHERE alt_ssn = ANY($1)",
                    &[&prod_ssns],
                )
                .await
                .map_err(pgerr)?
                .get(0)
            };
            println!(
                "  the next update of those 25 rows reached dev as SSN tokens ({leaked} equal to a production SSN)"
            );
            if leaked > 0 {
                return Err(DemoError::Verify("a production SSN reached dev".into()));
            }
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(DemoError::Verify("alt_ssn values did not reach dev".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!();
    Ok(())
}

pub async fn run(opts: DemoOptions, mut shutdown: watch::Receiver<bool>) -> Result<(), DemoError> {
    let start = |what: &'static str| {
        move |e: crate::devkit::testkit::TestkitError| DemoError::Start {
            what,
            message: e.to_string(),
        }
    };
    println!("veil demo: starting the broker and two PostgreSQL 15 clusters…");
    let broker = Broker::start().map_err(start("the broker"))?;
    let prod = PgCluster::start().map_err(start("the prod cluster"))?;
    let dev = PgCluster::start().map_err(start("the dev cluster"))?;
    prod.create_db("clinic")
        .map_err(start("the prod database"))?;
    dev.create_db("clinic_dev")
        .map_err(start("the dev database"))?;
    prod.create_db("veil_vault")
        .map_err(start("the vault database"))?;
    println!(
        "  broker {}  prod 127.0.0.1:{}  dev 127.0.0.1:{}",
        broker.bootstrap(),
        prod.port,
        dev.port
    );

    let prod_client = connect(&prod.dsn("clinic")).await?;
    let t0 = Instant::now();
    datagen::load(&prod_client, opts.patients, 42)
        .await
        .map_err(pgerr)?;
    let pc = counts(&prod_client).await?;
    println!(
        "  generated fake patients in {:.1}s: {:?} rows in {:?}",
        t0.elapsed().as_secs_f64(),
        pc,
        TABLES
    );

    let regdir = tempfile::tempdir().map_err(|e| DemoError::Start {
        what: "registry dir",
        message: e.to_string(),
    })?;
    write_registry(regdir.path()).map_err(|e| DemoError::Start {
        what: "registry",
        message: e.to_string(),
    })?;
    let mut cfg = config_for(
        prod.dsn("clinic"),
        dev.dsn("clinic_dev"),
        broker.bootstrap(),
        "veil.demo.changes",
        regdir.path(),
        random_key_hex(),
        Some(prod.dsn("veil_vault")),
    );
    // The audit trail: journal in a temp dir, archive in a database of the prod cluster.
    prod.create_db("veil_audit")
        .map_err(start("the audit archive database"))?;
    let journal = tempfile::tempdir().map_err(|e| DemoError::Start {
        what: "audit journal",
        message: e.to_string(),
    })?;
    cfg.audit = Some(crate::config::AuditConfig {
        topic: "veil.demo.audit".into(),
        key_file: None,
        key: Some(crate::config::Secret(random_key_hex())),
        // The sink signs its confirmations with its own key.
        sink_key_file: None,
        sink_key: Some(crate::config::Secret(random_key_hex())),
        journal_dir: journal.path().to_owned(),
        journal_segment_bytes: 16 << 20,
        journal_keep_segments: 32,
        window_secs: 10,
        archive_dsn: Some(Dsn(prod.dsn("veil_audit"))),
        retention_days: 2192,
    });
    let report = crate::source::setup::run(&cfg)
        .await
        .map_err(|e| DemoError::Start {
            what: "setup",
            message: e.to_string(),
        })?;
    println!(
        "  veil setup: {} tables published, DDL trigger installed, vault schema installed in a separate database",
        report.tables
    );
    let metrics_port = crate::devkit::testkit::free_port();
    if crate::metrics::install(&format!("127.0.0.1:{metrics_port}")).is_ok() {
        println!("  metrics: http://127.0.0.1:{metrics_port}/metrics");
    }
    // The review API and page, with one demo reviewer.
    let review_port = crate::devkit::testkit::free_port();
    let (reviewer_token, digest) = crate::review::api::new_reviewer_token();
    cfg.api = Some(crate::config::ApiConfig {
        listen: format!("127.0.0.1:{review_port}"),
        reviewers: [(DEMO_REVIEWER.to_owned(), digest)].into(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        reviewers_file: None,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut stream, mut sink) = spawn_pipeline(&cfg, stop_rx.clone());
    let api_cfg = cfg.clone();
    let api = tokio::spawn(async move { crate::review::api::serve(&api_cfg, stop_rx).await });

    let dev_client = connect(&dev.dsn("clinic_dev")).await?;
    let snap_start = Instant::now();
    let total: i64 = pc.iter().sum();
    // The snapshot as dev receives it: a bar on a terminal.
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "  snapshot {bar:40.cyan/blue} {pos}/{len} rows in dev  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        if stream.is_finished() || sink.is_finished() {
            break;
        }
        let in_dev: i64 = counts(&dev_client)
            .await
            .map(|c| c.iter().sum())
            .unwrap_or(0);
        bar.set_position(in_dev.max(0) as u64);
        if in_dev >= total && verify(&prod_client, &dev_client).await.is_ok() {
            break;
        }
        if snap_start.elapsed() > Duration::from_secs(300) {
            bar.abandon();
            return Err(DemoError::Verify(
                "snapshot did not reach dev within 5 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    println!(
        "  snapshot in dev after {:.1}s ({:.0} rows/s end to end, de-identified on the way)",
        snap_start.elapsed().as_secs_f64(),
        total as f64 / snap_start.elapsed().as_secs_f64()
    );
    let mapper = Mapper::new(&cfg, &prod.dsn("clinic")).await?;
    print_join(&prod_client, &dev_client, &mapper).await?;
    println!(
        "  the same patients, row for row: names and SSNs replaced (scripts kept: a Japanese name \
         stays Japanese), ids are tokens, and the encounters join the same way"
    );

    // Live workload.
    let (wl_stop_tx, mut wl_stop) = watch::channel(false);
    let prod_dsn = prod.dsn("clinic");
    let workload = tokio::spawn(async move {
        let mut c = connect(&prod_dsn).await?;
        let mut rng = datagen::Rng::new(7);
        let mut next = 1_000_000u64;
        let mut n = 0u64;
        loop {
            if *wl_stop.borrow() {
                break;
            }
            datagen::workload_step(&mut c, &mut rng, &mut next)
                .await
                .map_err(pgerr)?;
            n += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = wl_stop.changed() => {}
            }
        }
        Ok::<u64, DemoError>(n)
    });
    println!(
        "  live workload running (inserts, updates, deletes on all tables){}",
        match opts.duration {
            Some(d) => format!(" for {}s", d.as_secs()),
            None => "; Ctrl-C to stop".into(),
        }
    );

    let run_start = Instant::now();
    let mut next_print = Instant::now() + Duration::from_secs(10);
    // A third of the way in (or after 15 s), a migration adds a column of SSNs.
    let migrate_at = opts
        .duration
        .map(|d| d / 3)
        .unwrap_or(Duration::from_secs(15));
    let mut migrated = false;
    let failure = loop {
        if stream.is_finished() {
            break Some("stream");
        }
        if sink.is_finished() {
            break Some("sink");
        }
        if opts.duration.is_some_and(|d| run_start.elapsed() >= d) {
            break None;
        }
        if !migrated && run_start.elapsed() >= migrate_at {
            migrated = true;
            held_column_story(
                &cfg,
                &prod_client,
                &dev_client,
                review_port,
                &reviewer_token,
            )
            .await?;
            next_print = Instant::now() + Duration::from_secs(5);
        }
        if Instant::now() >= next_print {
            let (a, b) = (counts(&prod_client).await?, counts(&dev_client).await?);
            println!("  rows prod {a:?}  dev {b:?}  ({TABLES:?})");
            next_print = Instant::now() + Duration::from_secs(10);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { break None; } }
        }
    };
    let _ = wl_stop_tx.send(true);
    let txns = workload
        .await
        .map_err(|e| DemoError::Verify(e.to_string()))??;
    let elapsed = run_start.elapsed();
    if let Some(which) = failure {
        let _ = stop_tx.send(true);
        let msg = if which == "stream" {
            match (&mut stream).await {
                Ok(Err(e)) => e.to_string(),
                _ => "ended early".into(),
            }
        } else {
            match (&mut sink).await {
                Ok(Err(e)) => e.to_string(),
                _ => "ended early".into(),
            }
        };
        return Err(if which == "stream" {
            DemoError::Stream(msg)
        } else {
            DemoError::Sink(msg)
        });
    }
    let catch_up = wait_caught_up(&prod_client, &dev_client, Duration::from_secs(120)).await;
    let mapper = Mapper::new(&cfg, &prod.dsn("clinic")).await?;
    print_join(&prod_client, &dev_client, &mapper).await?;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), &mut stream).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), &mut sink).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), api).await;
    let lag = catch_up?;
    let report = verify(&prod_client, &dev_client).await?;
    println!(
        "  workload: {txns} transactions in {:.1}s ({:.0} txn/s); dev caught up {:.2}s after the workload stopped",
        elapsed.as_secs_f64(),
        txns as f64 / elapsed.as_secs_f64(),
        lag.as_secs_f64()
    );
    println!("  verified: {report}");
    // The regulator's question for today, answered from the audit archive alone.
    let archived = crate::audit::archive(&cfg, None)
        .await
        .map_err(|e| DemoError::Verify(e.to_string()))?;
    let today = crate::review::workflow::today_utc();
    let proof = crate::audit::prove(&cfg, &today)
        .await
        .map_err(|e| DemoError::Verify(e.to_string()))?;
    println!(
        "  audit: {} records archived; `veil audit prove --date {today}`:",
        archived.inserted
    );
    for line in crate::audit::prove_text(&proof).lines() {
        if line == "rules per column:" {
            println!(
                "    rules per column: {} columns (listed by `veil audit prove`)",
                proof["rules"].as_object().map(|m| m.len()).unwrap_or(0)
            );
        } else if !line.starts_with("  public.") {
            println!("    {line}");
        }
    }
    if proof["chain"]["ok"] != true || proof["scanner"]["clean"] != true {
        return Err(DemoError::Verify("the audit proof is not clean".into()));
    }
    println!("veil demo: OK");
    drop(broker);
    Ok(())
}

impl crate::error::Classify for DemoError {
    /// The demo and the bench run everything themselves: any failure is for a person to read.
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Definite
    }
}
