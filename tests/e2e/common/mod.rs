//! Shared helpers: an environment of prod + dev clusters, broker and registry; the expected
//! de-identified copy computed from prod through the library's own gate; row comparisons.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, SimpleQueryMessage};
use veil::config::Config;
use veil::devkit::testkit::{Broker, ClusterOptions, PgCluster};

pub struct Env {
    pub broker: Broker,
    pub prod: PgCluster,
    pub dev: PgCluster,
    pub registry: tempfile::TempDir,
    pub key_hex: String,
    pub cfg: Config,
}

/// The clinic's tables, as `datagen` loads them.
pub const DEMO_TABLES: &[&str] = &[
    "providers",
    "patients",
    "encounters",
    "observations",
    "medications",
];

pub const PROD_DB: &str = "clinic";
pub const DEV_DB: &str = "clinic_dev";
pub const VAULT_DB: &str = "veil_vault";
/// The audit archive database of configs written by `Env::write_config` (create it first).
pub const AUDIT_DB: &str = "veil_audit_archive";

/// Registry entries for the extra test tables (the demo registry covers the clinic tables).
pub const EXTRA_REGISTRY: &[(&str, &str)] = &[
    (
        "public.scratch.toml",
        r#"table = "public.scratch"
[columns]
id = { type = "integer", class = "sensitive", rule = "tokenize", domain = "scratch_id" }
v  = { type = "text", class = "sensitive", rule = "tokenize", domain = "scratch_v" }
"#,
    ),
    (
        "public.docs.toml",
        r#"table = "public.docs"
[columns]
id    = { type = "integer", class = "safe" }
big   = { type = "text", class = "sensitive", rule = "tokenize", domain = "doc" }
small = { type = "integer", class = "safe" }
"#,
    ),
    (
        "public.type_zoo.toml",
        r#"table = "public.type_zoo"
[columns]
id   = { type = "integer", class = "safe" }
b    = { type = "boolean", class = "safe" }
i2   = { type = "smallint", class = "safe" }
i4   = { type = "integer", class = "safe" }
i8   = { type = "bigint", class = "safe" }
n    = { type = "numeric", class = "safe" }
f4   = { type = "real", class = "safe" }
f8   = { type = "double precision", class = "safe" }
t    = { type = "text", class = "safe" }
vc   = { type = "character varying(20)", class = "safe" }
c    = { type = "character(5)", class = "safe" }
d    = { type = "date", class = "safe" }
ts   = { type = "timestamp without time zone", class = "safe" }
tstz = { type = "timestamp with time zone", class = "safe" }
tm   = { type = "time without time zone", class = "safe" }
iv   = { type = "interval", class = "safe" }
u    = { type = "uuid", class = "safe" }
by   = { type = "bytea", class = "safe" }
j    = { type = "json", class = "safe" }
jb   = { type = "jsonb", class = "safe" }
m    = { type = "public.mood", class = "safe" }
ai   = { type = "integer[]", class = "safe" }
at   = { type = "text[]", class = "safe" }
am   = { type = "public.mood[]", class = "safe" }
nul  = { type = "text", class = "safe" }
"#,
    ),
    (
        "public.blocked_audit.toml",
        r#"table = "public.blocked_audit"
blocked = true
"#,
    ),
];

pub const EXTRA_SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE scratch (id int PRIMARY KEY, v text);
CREATE TABLE docs (id int PRIMARY KEY, big text, small int);
CREATE TABLE type_zoo (
    id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8, t text,
    vc varchar(20), c char(5), d date, ts timestamp, tstz timestamptz, tm time, iv interval, u uuid,
    by bytea, j json, jb jsonb, m mood, ai int4[], at text[], am mood[], nul text);
CREATE TABLE blocked_audit (id int PRIMARY KEY, secret text);
";

/// A single `bigint` (a count) from `sql`.
pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Logs of the code under test, filtered by `VEIL_TEST_LOG` (off by default).
pub fn init_test_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("VEIL_TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

/// A reviewer's decision for a test: who and why are fixed.
pub fn decision(
    class: &str,
    rule: Option<&str>,
    domain: Option<&str>,
) -> veil::review::workflow::ColumnDecision {
    veil::review::workflow::ColumnDecision {
        class: class.into(),
        rule: rule.map(Into::into),
        domain: domain.map(Into::into),
        by: "kim".into(),
        reason: "test decision".into(),
        ..Default::default()
    }
}

pub async fn connect(dsn: &str) -> Client {
    veil::devkit::demo::connect(dsn).await.expect("connect")
}

impl Env {
    /// Clusters, broker, registry (demo tables + extra tables) and a config for them.
    pub fn start(prod_settings: &[(&str, &str)]) -> Env {
        let broker = Broker::start().expect("broker (install tansu: see README)");
        let prod = PgCluster::start_with(ClusterOptions {
            settings: prod_settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .expect("prod cluster");
        let dev = PgCluster::start().expect("dev cluster");
        prod.create_db(PROD_DB).unwrap();
        dev.create_db(DEV_DB).unwrap();
        prod.create_db(VAULT_DB).unwrap();
        let registry = tempfile::tempdir().unwrap();
        veil::devkit::demo::write_registry(registry.path()).unwrap();
        for (name, text) in EXTRA_REGISTRY {
            std::fs::write(registry.path().join(name), text).unwrap();
        }
        let key_hex = veil::devkit::demo::random_key_hex();
        let cfg = veil::devkit::demo::config_for(
            prod.dsn(PROD_DB),
            dev.dsn(DEV_DB),
            broker.bootstrap(),
            "veil.test.changes",
            registry.path(),
            key_hex.clone(),
            Some(prod.dsn(VAULT_DB)),
        );
        // Every test's snapshot is read by three connections, tables of more than four pages in
        // ranges.
        let mut cfg = cfg;
        if let Some(s) = cfg.source.as_mut() {
            s.snapshot_connections = 3;
            s.snapshot_range_pages = 4;
        }
        Env {
            broker,
            prod,
            dev,
            registry,
            key_hex,
            cfg,
        }
    }

    pub async fn prod_client(&self) -> Client {
        connect(&self.prod.dsn(PROD_DB)).await
    }
    pub async fn dev_client(&self) -> Client {
        connect(&self.dev.dsn(DEV_DB)).await
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.registry.path().to_owned()
    }

    /// Writes the config as a TOML file for the CLI.
    pub fn write_config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("veil.toml");
        let text = format!(
            "[source]\ndsn = {:?}\nslot = \"veil\"\npublication = \"veil_pub\"\nstatus_interval_secs = 1\n\
             heartbeat_interval_secs = 2\nspool_memory_bytes = 65536\n\
             snapshot_connections = 3\nsnapshot_range_pages = 4\n\n[kafka]\nbrokers = {:?}\ntopic = \"veil.test.changes\"\n\n\
             [registry]\ndir = {:?}\n\n[keys]\nmaster_key_file = {:?}\n\n[vault]\ndsn = {:?}\n\n[sink]\ndsn = {:?}\nbatch_max_rows = 500\n\n\
             [audit]\ntopic = \"veil.test.audit\"\nkey_file = {:?}\nsink_key_file = {:?}\njournal_dir = {:?}\nwindow_secs = 2\narchive_dsn = {:?}\n",
            self.prod.dsn(PROD_DB),
            self.broker.bootstrap(),
            self.registry.path(),
            dir.join("master.key"),
            self.prod.dsn(VAULT_DB),
            self.dev.dsn(DEV_DB),
            dir.join("audit.key"),
            dir.join("audit-sink.key"),
            dir.join("audit-journal"),
            self.prod.dsn(AUDIT_DB),
        );
        std::fs::write(dir.join("master.key"), &self.key_hex).unwrap();
        std::fs::write(dir.join("audit.key"), veil::devkit::demo::random_key_hex()).unwrap();
        std::fs::write(
            dir.join("audit-sink.key"),
            veil::devkit::demo::random_key_hex(),
        )
        .unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// `veil stream` and `veil sink` running in-process (see [`Env::run_stream_and_sink`]).
pub struct Running {
    pub stop: tokio::sync::watch::Sender<bool>,
    pub stream: tokio::task::JoinHandle<Result<(), veil::source::error::StreamError>>,
    pub sink: tokio::task::JoinHandle<Result<(), veil::sink::SinkError>>,
}

impl Running {
    /// An orderly stop; both must end without error.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.stream.await.unwrap().unwrap();
        self.sink.await.unwrap().unwrap();
    }
}

impl Env {
    /// The sink's config: no key, no source settings, no registry — the dev side cannot reveal
    /// anything.
    pub fn sink_config(&self) -> Config {
        let mut c = self.cfg.clone();
        c.keys = Default::default();
        c.source = None;
        c.registry = Default::default();
        c
    }

    /// The stream and the sink in-process, until [`Running::stop`].
    pub fn run_stream_and_sink(&self) -> Running {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let cfg = self.cfg.clone();
        let stream_rx = rx.clone();
        let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, stream_rx).await });
        let sink_cfg = self.sink_config();
        let sink = tokio::spawn(async move { veil::sink::run(&sink_cfg, rx).await });
        Running { stop, stream, sink }
    }
}

/// Runs a query through the simple protocol; every value as text.
pub async fn text_rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for m in c.simple_query(sql).await.expect(sql) {
        if let SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    out
}

/// The plan the stream makes for `table` under the env's registry and key, and the vault.
pub async fn gate_for(
    env: &Env,
    prod: &Client,
    table: &str,
) -> (veil::deid::gate::TablePlan, veil::deid::vault::Vault) {
    let registry = veil::deid::registry::Registry::load(env.registry.path()).unwrap();
    let master = veil::deid::tokenize::MasterKey::new(
        hex::decode(&env.key_hex).unwrap().try_into().unwrap(),
    );
    veil::pg::catalog::prepare_session(prod).await.unwrap();
    let oid: u32 = prod
        .query_one(
            "SELECT $1::text::regclass::oid",
            &[&format!("public.\"{table}\"")],
        )
        .await
        .unwrap()
        .get(0);
    let info = veil::pg::catalog::describe_table(prod, oid, None)
        .await
        .unwrap();
    let plan = veil::deid::gate::plan_table(
        PROD_DB,
        &info,
        &info.primary_key,
        &registry,
        &master,
        &std::sync::Arc::new(veil::deid::scanner::Scanner::standard()),
    )
    .unwrap();
    let vault = veil::deid::vault::Vault::connect(env.cfg.vault().unwrap(), &master)
        .await
        .unwrap();
    prod.batch_execute("SET search_path = public")
        .await
        .unwrap();
    (plan, vault)
}

/// One row (every column of the relation, as text) through the plan: the published values.
/// A value the stream has not seen yet is allocated as the stream would, so comparisons converge
/// once the stream catches up.
pub async fn through_gate(
    plan: &veil::deid::gate::TablePlan,
    vault: &veil::deid::vault::Vault,
    row: &[Option<Vec<u8>>],
) -> Vec<Option<String>> {
    let mut misses = Vec::new();
    let mut vals = plan
        .transform(
            row.iter().map(veil::deid::gate::RowValue::from),
            0,
            vault,
            &mut misses,
        )
        .unwrap();
    // As the stream does: a cache that starts over can evict this row's earlier hits, so
    // allocate (look up) again until the row has every token.
    let mut tries = 0;
    while !misses.is_empty() {
        tries += 1;
        assert!(tries <= 3, "the vault left a value without a token");
        vault.allocate(std::mem::take(&mut misses)).await.unwrap();
        vals = plan
            .transform(
                row.iter().map(veil::deid::gate::RowValue::from),
                0,
                vault,
                &mut misses,
            )
            .unwrap();
    }
    vals.into_iter()
        .map(|v| match v.kind {
            Some(veil::proto::value::Kind::Text(t)) => Some(t),
            _ => None,
        })
        .collect()
}

/// The de-identified copy dev must hold: every prod row of `table` through the gate, sorted.
/// Returns (published column names, rows).
pub async fn expected_copy(
    env: &Env,
    prod: &Client,
    table: &str,
) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let (plan, vault) = gate_for(env, prod, table).await;
    let cols: Vec<String> = plan
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let only = only(prod, table).await;
    let rows = text_rows(
        prod,
        &format!("SELECT {} FROM {only}{table}", cols.join(", ")),
    )
    .await;
    let rows: Vec<Vec<Option<Vec<u8>>>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.map(String::into_bytes)).collect())
        .collect();
    // As the stream does: one vault round trip for the values the cache has not seen, then
    // each row (a row whose hits the cache evicted meanwhile looks them up again).
    let mut misses = Vec::new();
    for r in &rows {
        plan.transform(
            r.iter().map(veil::deid::gate::RowValue::from),
            0,
            &vault,
            &mut misses,
        )
        .unwrap();
    }
    if !misses.is_empty() {
        vault.allocate(misses).await.unwrap();
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(through_gate(&plan, &vault, r).await);
    }
    out.sort();
    let names = plan.schema.columns.iter().map(|c| c.name.clone()).collect();
    (names, out)
}

/// `ONLY ` for a plain table (an inheritance parent's own rows, as veil publishes them), nothing
/// for a partitioned root (its rows are its partitions').
pub async fn only(prod: &Client, table: &str) -> &'static str {
    let partitioned: bool = prod
        .query_one(
            "SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = $1::text::regclass",
            &[&format!("public.{table}")],
        )
        .await
        .unwrap()
        .get(0);
    if partitioned { "" } else { "ONLY " }
}

/// What dev holds for `table` (published columns), sorted; None while the table is missing.
pub async fn dev_copy(
    dev: &Client,
    table: &str,
    cols: &[String],
) -> Option<Vec<Vec<Option<String>>>> {
    let q: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
    let msgs = dev
        .simple_query(&format!("SELECT {} FROM public.{table}", q.join(", ")))
        .await
        .ok()?;
    let mut rows: Vec<Vec<Option<String>>> = msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect();
    rows.sort();
    Some(rows)
}

/// Waits until `check` holds or `timeout` passes; returns whether it held.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check().await
}

/// Waits until dev equals the expected de-identified copy for every table in `tables`.
pub async fn assert_dev_matches(env: &Env, tables: &[&str], timeout: Duration) {
    if let Err(e) = dev_matches(env, tables, timeout).await {
        panic!("{e}");
    }
}

/// Like [`assert_dev_matches`], returning the difference instead of panicking.
pub async fn dev_matches(env: &Env, tables: &[&str], timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    loop {
        last.clear();
        // Fresh connections each round, and a cheap count comparison before the full one.
        let prod = env.prod_client().await;
        let dev = env.dev_client().await;
        for t in tables {
            let q = format!("SELECT count(*)::text FROM public.{t}");
            let p = format!(
                "SELECT count(*)::text FROM {}public.{t}",
                only(&prod, t).await
            );
            let (a, b) = (text_rows(&prod, &p).await, dev.simple_query(&q).await.ok());
            let b = b.and_then(|m| {
                m.into_iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
            });
            if Some(a[0][0].clone().unwrap_or_default()) != b {
                last.insert(
                    t.to_string(),
                    format!("count prod {:?}, dev {b:?}", a[0][0]),
                );
            }
        }
        if !last.is_empty() {
            if start.elapsed() > timeout {
                return Err(format!("dev never matched the expected copy: {last:?}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        for t in tables {
            let (cols, want) = expected_copy(env, &prod, t).await;
            let Some(have) = dev_copy(&dev, t, &cols).await else {
                last.insert(t.to_string(), "missing in dev".into());
                continue;
            };
            let (have, want) = (normalize_json(have), normalize_json(want));
            if have != want {
                // Multiset difference (the copies can be large).
                let mut counts: HashMap<&Vec<Option<String>>, i64> = HashMap::new();
                for r in &have {
                    *counts.entry(r).or_default() += 1;
                }
                for r in &want {
                    *counts.entry(r).or_default() -= 1;
                }
                let extra: i64 = counts.values().filter(|&&n| n > 0).sum();
                let missing: i64 = -counts.values().filter(|&&n| n < 0).sum::<i64>();
                // Which columns differ (their values compared as multisets), never the values.
                let differ: Vec<&String> = cols
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        let col = |rows: &Vec<Vec<Option<String>>>| {
                            let mut v: Vec<Option<String>> =
                                rows.iter().map(|r| r[*i].clone()).collect();
                            v.sort();
                            v
                        };
                        col(&have) != col(&want)
                    })
                    .map(|(_, c)| c)
                    .collect();
                last.insert(
                    t.to_string(),
                    format!(
                        "dev {} rows, expected {} ({missing} missing, {extra} unexpected; \
                         columns differing: {differ:?})",
                        have.len(),
                        want.len()
                    ),
                );
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("dev never matched the expected copy: {last:?}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Rows with every JSON object or array cell re-serialised (keys sorted, no spaces): dev's jsonb
/// orders keys its own way. Sorted again.
pub fn normalize_json(rows: Vec<Vec<Option<String>>>) -> Vec<Vec<Option<String>>> {
    let mut out: Vec<Vec<Option<String>>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| {
                    c.map(|v| {
                        let t = v.trim_start();
                        if (t.starts_with('{') || t.starts_with('['))
                            && let Ok(j) = serde_json::from_str::<serde_json::Value>(t)
                        {
                            return j.to_string();
                        }
                        v
                    })
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// PHI-free summary of every event in the topic (offset, epoch, run, seq, kind), for diagnosis.
pub fn dump_topic(env: &Env) -> String {
    use prost::Message as _;
    let kafka = env.cfg.kafka().unwrap();
    let mut out = String::new();
    for (offset, payload) in read_topic(kafka, &kafka.topic) {
        let batch = veil::proto::Envelope::decode(payload.as_slice()).unwrap();
        for e in veil::proto::unbatch(batch) {
            let kind = match &e.event {
                Some(veil::proto::envelope::Event::Begin(b)) => format!("begin {:X}", b.commit_lsn),
                Some(veil::proto::envelope::Event::Commit(c)) => {
                    format!("commit {:X}", c.commit_lsn)
                }
                Some(veil::proto::envelope::Event::Row(r)) => format!("row {}", r.table),
                Some(other) => format!("{:?}", std::mem::discriminant(other)),
                None => "none".into(),
            };
            out.push_str(&format!(
                "{offset} e{} run {:x} seq {} {kind}\n",
                e.epoch, e.run_id, e.seq
            ));
        }
    }
    out
}

/// Every message payload of the change topic, raw.
pub fn topic_payloads(env: &Env) -> Vec<Vec<u8>> {
    let kafka = env.cfg.kafka().unwrap();
    read_topic(kafka, &kafka.topic)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Every message of partition 0 of `topic`, as (offset, raw payload).
pub fn read_topic(kafka: &veil::config::KafkaConfig, topic: &str) -> Vec<(i64, Vec<u8>)> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = veil::kafka::client::client_config(kafka)
        .set("group.id", "veil-test-read")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut last = -1;
    while last < high - 1 && start.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            last = m.offset();
            out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

/// True when `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The `veil` binary running one command, its output appended to a log file; killed on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn start(what: &str, config: &std::path::Path, log: &std::path::Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_veil"))
            .args([what, "--config"])
            .arg(config)
            .env("RUST_LOG", "debug,rdkafka=warn,tokio_postgres=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { child }
    }
    /// SIGTERM: an orderly stop.
    pub fn term(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `Backfilled` audit records of `table` on the test audit topic.
pub fn backfill_records(env: &Env, table: &str) -> Vec<veil::proto::Backfilled> {
    use prost::Message;
    read_topic(env.cfg.kafka().unwrap(), "veil.test.audit")
        .into_iter()
        .filter_map(|(_, b)| veil::proto::AuditRecord::decode(b.as_slice()).ok())
        .filter_map(|r| match r.body {
            Some(veil::proto::audit_record::Body::Backfilled(b)) if b.table == table => Some(b),
            _ => None,
        })
        .collect()
}

/// A log line without its colour codes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A production writer for tests that change a table while veil works: runs the statement
/// `next(rng, n)` gives (`n`: statements so far), pausing `pause` after each, until
/// [`Writer::stop`], which says how many it ran.
pub struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<u32>,
}

impl Writer {
    pub async fn start(
        env: &Env,
        seed: u64,
        pause: Duration,
        mut next: impl FnMut(&mut veil::devkit::datagen::Rng, u32) -> String + Send + 'static,
    ) -> Writer {
        let c = env.prod_client().await;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut rng = veil::devkit::datagen::Rng::new(seed);
            let mut n = 0u32;
            while !*stopped.borrow_and_update() {
                c.batch_execute(&next(&mut rng, n)).await.unwrap();
                n += 1;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            n
        });
        Writer { stop, task }
    }

    pub async fn stop(self) -> u32 {
        self.stop.send(true).unwrap();
        self.task.await.unwrap()
    }
}
