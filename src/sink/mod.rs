//! `veil sink`: the dev side. Consumes the change topic (auto-commit off, partition assigned
//! explicitly at the offset stored in dev) and applies it to the dev database:
//!
//! - schema events create or alter tables (columns, primary/unique keys, enums; foreign keys once
//!   both ends exist);
//! - every source transaction is applied atomically, in commit order, under a savepoint inside a
//!   dev transaction that may batch several source transactions;
//! - the Kafka offset, epoch and last commit LSN are written to `veil_sink.checkpoint` inside the
//!   same dev transaction, so a crash or replay never loses or doubles a row;
//! - a transaction whose commit LSN is not above the checkpoint is a replay and is skipped; a half
//!   transaction (a Begin or StreamStart arriving before its Commit) is rolled back; a transaction
//!   whose predecessor is not the last applied one is a gap and stops the sink loudly;
//! - a newer epoch (a new snapshot) drops what the older epoch built.
//!
//! Values travel as text and are bound as text parameters cast to the column type
//! (`$1::text::<type>`), which works for every type with a text input function. The sink holds no
//! key and cannot reveal anything.

use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::config::{Config, ConfigError};
use crate::kafka::{admin, client};
use crate::proto::{self, envelope::Event, value::Kind};
use crate::source::pgoutput::fmt_lsn;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("connecting to the dev database: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("dev database ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error("malformed event at offset {offset}: {message}")]
    Decode { offset: i64, message: String },
    #[error(
        "gap in the change stream at offset {offset}: transaction {commit_lsn} follows {expected_prev} \
         but the last applied is {applied}; refusing to continue"
    )]
    Gap {
        offset: i64,
        commit_lsn: String,
        expected_prev: String,
        applied: String,
    },
    #[error(
        "epoch {epoch} at offset {offset} starts without a snapshot (last applied epoch {applied})"
    )]
    EpochWithoutSnapshot {
        epoch: u64,
        offset: i64,
        applied: u64,
    },
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },
    #[error("{op} on {table} at commit {lsn} matched no row in dev (dev diverged from the stream)")]
    Diverged {
        table: String,
        op: &'static str,
        lsn: String,
    },
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Kafka(_) | SinkError::Postgres { .. })
    }
}

fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
    let what = what.into();
    move |e| SinkError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// The table schemas recorded in `veil_sink.tables` (inside the current dev transaction).
async fn load_schemas(
    client: &Client,
) -> Result<HashMap<String, Arc<proto::TableSchema>>, SinkError> {
    let mut schemas = HashMap::new();
    for r in client
        .query("SELECT qualified, schema_pb FROM veil_sink.tables", &[])
        .await
        .map_err(pg("read table list"))?
    {
        let q: String = r.get(0);
        let b: Vec<u8> = r.get(1);
        let s = proto::TableSchema::decode(b.as_slice()).map_err(|e| SinkError::Schema {
            table: q.clone(),
            message: format!("stored schema unreadable: {e}"),
        })?;
        schemas.insert(q, Arc::new(s));
    }
    Ok(schemas)
}

/// `$n::text::<type>`: a text parameter cast to the column type.
fn cast_param(n: usize, type_name: &str) -> String {
    format!("${n}::text::{type_name}")
}

/// The dev-side bookkeeping tables.
const BOOTSTRAP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS veil_sink;
CREATE TABLE IF NOT EXISTS veil_sink.checkpoint (
    topic text PRIMARY KEY,
    kafka_offset bigint NOT NULL,
    epoch bigint NOT NULL,
    last_commit_lsn bigint NOT NULL,
    last_commit_time timestamptz,
    source_id text NOT NULL DEFAULT '',
    registry_version text NOT NULL DEFAULT '',
    run_id bigint NOT NULL DEFAULT 0,
    seq bigint NOT NULL DEFAULT 0,
    known_runs bigint[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS veil_sink.tables (
    qualified text PRIMARY KEY,
    schema_pb bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS veil_sink.pending_fks (
    qualified text NOT NULL,
    name text NOT NULL,
    fk_pb bytea NOT NULL,
    PRIMARY KEY (qualified, name)
);
";

#[derive(Debug, Clone, Default)]
struct Checkpoint {
    /// Offset of the last message covered (-1 = none).
    offset: i64,
    epoch: u64,
    last_commit_lsn: u64,
    last_commit_time_us: i64,
    source_id: String,
    registry_version: String,
    /// The stream run whose events are being applied, and the last event number seen of it.
    run_id: u64,
    seq: u64,
    /// Earlier runs: their late writes (a killed process's in-flight batch) are ignored.
    known_runs: Vec<u64>,
}

/// How many earlier runs the sink remembers.
const KNOWN_RUNS: usize = 64;

/// A statement queued for pipelined execution (sent in order, awaited together).
struct Queued {
    st: Statement,
    params: Vec<Option<String>>,
    /// For row changes: table, operation and commit LSN (for errors), and whether it must
    /// touch a row.
    what: Option<(String, &'static str, u64, bool)>,
}

/// How far before the checkpoint the sink starts fetching (see `run`).
const REWIND: i64 = 20_000;

/// Statements queued before the queue is drained (pipelining depth).
const PIPELINE_DEPTH: usize = 2000;

struct SrcTxn {
    commit_lsn: u64,
    skipping: bool,
}

/// Applies change events to the dev database.
pub struct Applier {
    client: Client,
    topic: String,
    ckpt: Checkpoint,
    /// The dev schema of every table veil manages (shared cheaply with the per-row path).
    schemas: HashMap<String, Arc<proto::TableSchema>>,
    stmts: HashMap<String, Statement>,
    in_dev_txn: bool,
    batch_rows: usize,
    src: Option<SrcTxn>,
    queue: Vec<Queued>,
    chain_unverified: bool,
    pub duplicates: u64,
    savepoint: Statement,
    release: Statement,
    pub applied_rows: u64,
    pub applied_txns: u64,
    /// Columns cleared or dropped in dev because their rule changed (for the audit trail).
    pub reclassified: Vec<proto::Reclassified>,
    pub skipped_txns: u64,
}

impl Applier {
    /// Connects, prepares the bookkeeping schema and loads the checkpoint.
    pub async fn connect(dsn: &crate::config::Dsn, topic: &str) -> Result<Self, SinkError> {
        let client = crate::pg::tls::connect(&dsn.parse()?)
            .await
            .map_err(SinkError::Connect)?;
        client
            .batch_execute(
                "SET session_replication_role = replica; SET synchronous_commit = on; \
                 SET client_min_messages = warning;",
            )
            .await
            .map_err(pg(
                "session settings (the sink role must be allowed to set session_replication_role)",
            ))?;
        client
            .batch_execute(BOOTSTRAP_SQL)
            .await
            .map_err(pg("bootstrap veil_sink"))?;
        let mut ckpt = Checkpoint {
            offset: -1,
            ..Default::default()
        };
        if let Some(r) = client
            .query_opt(
                "SELECT kafka_offset, epoch, last_commit_lsn, source_id, registry_version, run_id, seq, known_runs \
                 FROM veil_sink.checkpoint WHERE topic = $1",
                &[&topic],
            )
            .await
            .map_err(pg("read checkpoint"))?
        {
            ckpt.offset = r.get(0);
            ckpt.epoch = r.get::<_, i64>(1) as u64;
            ckpt.last_commit_lsn = r.get::<_, i64>(2) as u64;
            ckpt.source_id = r.get(3);
            ckpt.registry_version = r.get(4);
            ckpt.run_id = r.get::<_, i64>(5) as u64;
            ckpt.seq = r.get::<_, i64>(6) as u64;
            ckpt.known_runs = r.get::<_, Vec<i64>>(7).into_iter().map(|x| x as u64).collect();
        }
        let schemas = load_schemas(&client).await?;
        let savepoint = client
            .prepare("SAVEPOINT veil_src")
            .await
            .map_err(pg("prepare savepoint"))?;
        let release = client
            .prepare("RELEASE SAVEPOINT veil_src")
            .await
            .map_err(pg("prepare release"))?;
        Ok(Applier {
            savepoint,
            release,
            queue: Vec::new(),
            chain_unverified: false,
            duplicates: 0,
            client,
            topic: topic.to_owned(),
            ckpt,
            schemas,
            stmts: HashMap::new(),
            in_dev_txn: false,
            batch_rows: 0,
            src: None,
            applied_rows: 0,
            applied_txns: 0,
            reclassified: Vec::new(),
            skipped_txns: 0,
        })
    }

    /// Offset of the next message to read.
    pub fn next_offset(&self) -> i64 {
        self.ckpt.offset + 1
    }

    pub fn last_commit_lsn(&self) -> u64 {
        self.ckpt.last_commit_lsn
    }

    pub fn epoch(&self) -> u64 {
        self.ckpt.epoch
    }

    /// True when no source transaction is half applied (a batch may be committed).
    pub fn at_boundary(&self) -> bool {
        self.src.is_none()
    }

    pub fn pending_rows(&self) -> usize {
        self.batch_rows
    }

    async fn ensure_txn(&mut self) -> Result<(), SinkError> {
        if !self.in_dev_txn {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(pg("begin"))?;
            self.in_dev_txn = true;
        }
        Ok(())
    }

    /// Writes the checkpoint and commits the dev transaction (at a source-transaction boundary).
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        if !self.in_dev_txn || self.src.is_some() {
            return Ok(());
        }
        self.drain().await?;
        let t = self.ckpt.last_commit_time_us;
        self.client
            .execute(
                "INSERT INTO veil_sink.checkpoint AS c (topic, kafka_offset, epoch, last_commit_lsn, last_commit_time, \
                 source_id, registry_version, run_id, seq, known_runs, updated_at) \
                 VALUES ($1, $2, $3, $4, CASE WHEN $5::bigint = 0 THEN NULL ELSE to_timestamp($5::bigint / 1e6) END, \
                         $6, $7, $8, $9, $10, now()) \
                 ON CONFLICT (topic) DO UPDATE SET kafka_offset = EXCLUDED.kafka_offset, epoch = EXCLUDED.epoch, \
                 last_commit_lsn = EXCLUDED.last_commit_lsn, \
                 last_commit_time = COALESCE(EXCLUDED.last_commit_time, c.last_commit_time), \
                 source_id = EXCLUDED.source_id, registry_version = EXCLUDED.registry_version, \
                 run_id = EXCLUDED.run_id, seq = EXCLUDED.seq, known_runs = EXCLUDED.known_runs, updated_at = now()",
                &[
                    &self.topic,
                    &self.ckpt.offset,
                    &(self.ckpt.epoch as i64),
                    &(self.ckpt.last_commit_lsn as i64),
                    &t,
                    &self.ckpt.source_id,
                    &self.ckpt.registry_version,
                    &(self.ckpt.run_id as i64),
                    &(self.ckpt.seq as i64),
                    &self.ckpt.known_runs.iter().map(|&x| x as i64).collect::<Vec<i64>>(),
                ],
            )
            .await
            .map_err(pg("write checkpoint"))?;
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(pg("commit"))?;
        self.in_dev_txn = false;
        self.batch_rows = 0;
        metrics::gauge!(crate::metrics::SINK_LAST_COMMIT_LSN).set(self.ckpt.last_commit_lsn as f64);
        if t > 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            metrics::gauge!(crate::metrics::SINK_APPLY_LAG_SECONDS)
                .set((now - t).max(0) as f64 / 1e6);
        }
        Ok(())
    }

    async fn rollback_half_txn(&mut self, offset: i64) -> Result<(), SinkError> {
        if let Some(s) = self.src.take()
            && !s.skipping
        {
            // The half transaction's statements may still be queued; their errors do not
            // matter, the savepoint goes anyway.
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "error inside a half transaction that is being discarded");
            }
            tracing::warn!(offset, commit_lsn = %fmt_lsn(s.commit_lsn), "discarding a half transaction left by a stream restart");
            self.client
                .batch_execute("ROLLBACK TO SAVEPOINT veil_src; RELEASE SAVEPOINT veil_src")
                .await
                .map_err(pg("rollback half transaction"))?;
            // Statements prepared inside the savepoint survive; schema changes were undone.
            self.reload_schemas().await?;
        }
        Ok(())
    }

    async fn reload_schemas(&mut self) -> Result<(), SinkError> {
        self.stmts.clear();
        self.schemas = load_schemas(&self.client).await?;
        Ok(())
    }

    /// Applies one envelope read at `offset`.
    pub async fn apply(&mut self, offset: i64, env: proto::Envelope) -> Result<(), SinkError> {
        let Some(event) = env.event else {
            return Err(SinkError::Decode {
                offset,
                message: "envelope without event".into(),
            });
        };
        // Fence by run: duplicates and the late writes of a killed run are dropped; a missing
        // event inside a run is a gap.
        let mut new_run = false;
        if env.run_id == self.ckpt.run_id {
            if env.seq <= self.ckpt.seq {
                self.ckpt.offset = offset;
                self.duplicates += 1;
                metrics::counter!(crate::metrics::SINK_DUPLICATES).increment(1);
                return Ok(());
            }
            if env.seq != self.ckpt.seq + 1 {
                return Err(SinkError::Gap {
                    offset,
                    commit_lsn: format!("event #{}", env.seq),
                    expected_prev: format!("event #{}", self.ckpt.seq + 1),
                    applied: format!("event #{} of the same stream run", self.ckpt.seq),
                });
            }
        } else if self.ckpt.known_runs.contains(&env.run_id) {
            self.ckpt.offset = offset;
            self.duplicates += 1;
            metrics::counter!(crate::metrics::SINK_DUPLICATES).increment(1);
            tracing::debug!(offset, "late event of an earlier stream run ignored");
            return Ok(());
        } else {
            if env.seq != 1 {
                return Err(SinkError::Gap {
                    offset,
                    commit_lsn: format!("event #{} of a new stream run", env.seq),
                    expected_prev: "its event #1".into(),
                    applied: fmt_lsn(self.ckpt.last_commit_lsn),
                });
            }
            if self.ckpt.run_id != 0 {
                self.ckpt.known_runs.push(self.ckpt.run_id);
                if self.ckpt.known_runs.len() > KNOWN_RUNS {
                    self.ckpt.known_runs.remove(0);
                }
            }
            self.ckpt.run_id = env.run_id;
            new_run = true;
        }
        self.ckpt.seq = env.seq;
        if new_run {
            // The first transaction of a new run may name a predecessor from a stale view of the
            // topic's end; within the run, event numbers prove continuity.
            self.chain_unverified = true;
        }
        if env.epoch < self.ckpt.epoch {
            self.ckpt.offset = offset;
            return Ok(()); // an older epoch: superseded by a newer snapshot
        }
        if env.epoch > self.ckpt.epoch {
            let Event::SnapshotBegin(_) = &event else {
                return Err(SinkError::EpochWithoutSnapshot {
                    epoch: env.epoch,
                    offset,
                    applied: self.ckpt.epoch,
                });
            };
            self.start_epoch(env.epoch).await?;
        }
        self.ckpt.offset = offset;
        self.ckpt.source_id = env.source_id;
        self.ckpt.registry_version = env.registry_version;
        match event {
            Event::SnapshotBegin(b) => {
                tracing::info!(
                    epoch = env.epoch,
                    tables = b.tables.len(),
                    "snapshot begins"
                );
            }
            Event::SnapshotEnd(e) => {
                self.ensure_txn().await?;
                self.add_pending_fks().await?;
                tracing::info!(epoch = env.epoch, rows = e.rows, "snapshot applied");
            }
            Event::Schema(s) => {
                self.ensure_txn().await?;
                self.apply_schema(s).await?;
            }
            Event::StreamStart(_) => self.rollback_half_txn(offset).await?,
            Event::Begin(b) => {
                self.rollback_half_txn(offset).await?;
                if b.commit_lsn <= self.ckpt.last_commit_lsn {
                    self.skipped_txns += 1;
                    metrics::counter!(crate::metrics::SINK_SKIPPED_TXNS).increment(1);
                    self.src = Some(SrcTxn {
                        commit_lsn: b.commit_lsn,
                        skipping: true,
                    });
                    return Ok(());
                }
                if std::mem::take(&mut self.chain_unverified) {
                    if env.last_commit_lsn != self.ckpt.last_commit_lsn {
                        tracing::info!(
                            offset,
                            named = %fmt_lsn(env.last_commit_lsn),
                            applied = %fmt_lsn(self.ckpt.last_commit_lsn),
                            "first transaction of a new stream run names another predecessor; continuing from the last applied"
                        );
                    }
                } else if env.last_commit_lsn != self.ckpt.last_commit_lsn {
                    return Err(SinkError::Gap {
                        offset,
                        commit_lsn: fmt_lsn(b.commit_lsn),
                        expected_prev: fmt_lsn(env.last_commit_lsn),
                        applied: fmt_lsn(self.ckpt.last_commit_lsn),
                    });
                }
                self.ensure_txn().await?;
                let st = self.savepoint.clone();
                self.enqueue(st, Vec::new(), None).await?;
                self.src = Some(SrcTxn {
                    commit_lsn: b.commit_lsn,
                    skipping: false,
                });
            }
            Event::Commit(c) => match self.src.take() {
                Some(SrcTxn { skipping: true, .. }) => {}
                Some(SrcTxn {
                    skipping: false, ..
                }) => {
                    let st = self.release.clone();
                    self.enqueue(st, Vec::new(), None).await?;
                    self.ckpt.last_commit_lsn = c.commit_lsn;
                    self.ckpt.last_commit_time_us = c.commit_time_us;
                    tracing::debug!(offset, commit_lsn = %fmt_lsn(c.commit_lsn), rows = c.rows, "transaction applied");
                    self.applied_txns += 1;
                    metrics::counter!(crate::metrics::SINK_APPLIED_TXNS).increment(1);
                }
                None => {
                    // Commit of a transaction whose Begin we skipped as already applied (replayed
                    // tail) or never saw: nothing to do if it is not newer than the checkpoint.
                    if c.commit_lsn > self.ckpt.last_commit_lsn {
                        return Err(SinkError::Gap {
                            offset,
                            commit_lsn: fmt_lsn(c.commit_lsn),
                            expected_prev: "a Begin".into(),
                            applied: fmt_lsn(self.ckpt.last_commit_lsn),
                        });
                    }
                }
            },
            Event::Row(r) => {
                if self.src.as_ref().is_some_and(|s| s.skipping) {
                    return Ok(());
                }
                let snapshot = env.phase == proto::Phase::Snapshot as i32;
                if !snapshot && self.src.is_none() {
                    return Err(SinkError::Decode {
                        offset,
                        message: "row change outside a transaction".into(),
                    });
                }
                self.ensure_txn().await?;
                let lsn = self.src.as_ref().map(|s| s.commit_lsn).unwrap_or(0);
                self.apply_row(r, lsn).await?;
                self.batch_rows += 1;
                self.applied_rows += 1;
            }
            Event::Truncate(t) => {
                if self.src.as_ref().is_some_and(|s| s.skipping) {
                    return Ok(());
                }
                self.ensure_txn().await?;
                let names: Vec<String> = t
                    .tables
                    .iter()
                    .map(|n| crate::pg::quote::qualified(n))
                    .collect();
                let sql = format!(
                    "TRUNCATE {}{}{}",
                    names.join(", "),
                    if t.restart_identity {
                        " RESTART IDENTITY"
                    } else {
                        ""
                    },
                    if t.cascade { " CASCADE" } else { "" }
                );
                self.drain().await?;
                self.client
                    .batch_execute(&sql)
                    .await
                    .map_err(pg("truncate"))?;
                self.batch_rows += 1;
            }
            Event::Heartbeat(_) => {}
        }
        Ok(())
    }

    async fn start_epoch(&mut self, epoch: u64) -> Result<(), SinkError> {
        tracing::warn!(
            from = self.ckpt.epoch,
            to = epoch,
            "new epoch: dropping what the previous epoch built"
        );
        self.queue.clear();
        if self.in_dev_txn {
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(pg("rollback"))?;
            self.in_dev_txn = false;
        }
        self.src = None;
        self.ensure_txn().await?;
        let tables: Vec<String> = self.schemas.keys().cloned().collect();
        for t in tables {
            self.client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {} CASCADE",
                    crate::pg::quote::qualified(&t)
                ))
                .await
                .map_err(pg("drop table of old epoch"))?;
        }
        self.client
            .batch_execute("DELETE FROM veil_sink.tables; DELETE FROM veil_sink.pending_fks;")
            .await
            .map_err(pg("reset table list"))?;
        self.schemas.clear();
        self.stmts.clear();
        self.ckpt.epoch = epoch;
        self.ckpt.last_commit_lsn = 0;
        self.ckpt.last_commit_time_us = 0;
        Ok(())
    }

    async fn apply_schema(&mut self, s: proto::TableSchema) -> Result<(), SinkError> {
        self.drain().await?;
        let q = format!("{}.{}", s.schema, s.name);
        let table = crate::pg::quote::qualified(&q);
        let serr = |message: String| SinkError::Schema {
            table: q.clone(),
            message,
        };
        let mut sql = String::new();
        for e in &s.enums {
            let labels: Vec<String> = e
                .labels
                .iter()
                .map(|l| crate::pg::quote::literal(l))
                .collect();
            let (es, en) = e.name.split_once('.').unwrap_or(("public", &e.name));
            sql.push_str(&format!(
                "DO $veil$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE n.nspname = {} AND t.typname = {}) THEN CREATE SCHEMA IF NOT EXISTS {}; CREATE TYPE {} AS ENUM ({}); END IF; END $veil$;\n",
                crate::pg::quote::literal(es.trim_matches('"')),
                crate::pg::quote::literal(en.trim_matches('"')),
                crate::pg::quote::ident(es.trim_matches('"')),
                e.name,
                labels.join(", ")
            ));
            for l in &e.labels {
                sql.push_str(&format!(
                    "ALTER TYPE {} ADD VALUE IF NOT EXISTS {};\n",
                    e.name,
                    crate::pg::quote::literal(l)
                ));
            }
        }
        match self.schemas.get(&q) {
            None => {
                let mut cols: Vec<String> = s
                    .columns
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            crate::pg::quote::ident(&c.name),
                            c.type_name,
                            if c.not_null { " NOT NULL" } else { "" }
                        )
                    })
                    .collect();
                if !s.primary_key.is_empty() {
                    let pk: Vec<String> = s
                        .primary_key
                        .iter()
                        .map(|c| crate::pg::quote::ident(c))
                        .collect();
                    cols.push(format!("PRIMARY KEY ({})", pk.join(", ")));
                }
                for u in &s.unique_keys {
                    let uc: Vec<String> = u
                        .columns
                        .iter()
                        .map(|c| crate::pg::quote::ident(c))
                        .collect();
                    cols.push(format!(
                        "CONSTRAINT {} UNIQUE ({})",
                        crate::pg::quote::ident(&u.name),
                        uc.join(", ")
                    ));
                }
                sql.push_str(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE {} ({});\n",
                    crate::pg::quote::ident(&s.schema),
                    table,
                    cols.join(", ")
                ));
                tracing::info!(table = %q, columns = s.columns.len(), "creating dev table");
            }
            Some(old) => {
                let enum_ddl = sql.len();
                for c in &s.columns {
                    match old.columns.iter().find(|o| o.name == c.name) {
                        None => sql.push_str(&format!(
                            "ALTER TABLE {} ADD COLUMN {} {};\n",
                            table,
                            crate::pg::quote::ident(&c.name),
                            c.type_name
                        )),
                        Some(o) if o.type_name != c.type_name => sql.push_str(&format!(
                            "ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING {c}::text::{ty};\n",
                            t = table,
                            c = crate::pg::quote::ident(&c.name),
                            ty = c.type_name
                        )),
                        Some(o) if o.rule != c.rule || o.profile != c.profile => {
                            // Reclassified: what dev holds was made under the old rule (perhaps
                            // kept as is). Clear it; new changes arrive under the new rule.
                            let key = s.primary_key.contains(&c.name)
                                || s.unique_keys.iter().any(|u| u.columns.contains(&c.name))
                                || s.foreign_keys.iter().any(|f| f.columns.contains(&c.name));
                            if key {
                                return Err(serr(format!(
                                    "the rule of key column {} changed ({} → {}); dev must be rebuilt: \
                                     start a new epoch (drop the veil_e* slot) so the snapshot runs again",
                                    c.name, o.rule, c.rule
                                )));
                            }
                            tracing::warn!(
                                table = %q,
                                column = %c.name,
                                from = %o.rule,
                                to = %c.rule,
                                "column reclassified: clearing what dev holds of it (set to NULL)"
                            );
                            sql.push_str(&format!(
                                "ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL;\nUPDATE {t} SET {c} = NULL;\n",
                                t = table,
                                c = crate::pg::quote::ident(&c.name)
                            ));
                            self.reclassified.push(proto::Reclassified {
                                table: q.clone(),
                                column: c.name.clone(),
                                rule_before: o.rule.clone(),
                                rule_after: c.rule.clone(),
                                action: "cleared".into(),
                            });
                        }
                        _ => {}
                    }
                }
                for o in &old.columns {
                    if !s.columns.iter().any(|c| c.name == o.name) {
                        self.reclassified.push(proto::Reclassified {
                            table: q.clone(),
                            column: o.name.clone(),
                            rule_before: o.rule.clone(),
                            rule_after: "blocked or dropped".into(),
                            action: "dropped".into(),
                        });
                        sql.push_str(&format!(
                            "ALTER TABLE {} DROP COLUMN {};\n",
                            table,
                            crate::pg::quote::ident(&o.name)
                        ));
                    }
                }
                if sql.len() > enum_ddl {
                    tracing::info!(table = %q, "altering dev table");
                }
            }
        }
        if !sql.is_empty() {
            self.client
                .batch_execute(&sql)
                .await
                .map_err(|e| serr(pg("ddl")(e).to_string()))?;
        }
        for fk in &s.foreign_keys {
            self.client
                .execute(
                    "INSERT INTO veil_sink.pending_fks (qualified, name, fk_pb) VALUES ($1, $2, $3) \
                     ON CONFLICT (qualified, name) DO NOTHING",
                    &[&q, &fk.name, &fk.encode_to_vec()],
                )
                .await
                .map_err(pg("record pending fk"))?;
        }
        self.client
            .execute(
                "INSERT INTO veil_sink.tables (qualified, schema_pb) VALUES ($1, $2) \
                 ON CONFLICT (qualified) DO UPDATE SET schema_pb = EXCLUDED.schema_pb",
                &[&q, &s.encode_to_vec()],
            )
            .await
            .map_err(pg("record table"))?;
        self.stmts
            .retain(|k, _| !k.starts_with(&format!("{q}\u{0}")));
        self.schemas.insert(q, Arc::new(s));
        // Outside the snapshot, add foreign keys as soon as both ends exist.
        self.add_pending_fks().await
    }

    async fn add_pending_fks(&mut self) -> Result<(), SinkError> {
        let rows = self
            .client
            .query(
                "SELECT qualified, name, fk_pb FROM veil_sink.pending_fks",
                &[],
            )
            .await
            .map_err(pg("read pending fks"))?;
        for r in rows {
            let q: String = r.get(0);
            let name: String = r.get(1);
            let b: Vec<u8> = r.get(2);
            let Ok(fk) = proto::ForeignKey::decode(b.as_slice()) else {
                continue;
            };
            if !self.schemas.contains_key(&fk.ref_table) || !self.schemas.contains_key(&q) {
                continue;
            }
            let exists = self
                .client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)",
                    &[&name, &crate::pg::quote::qualified(&q)],
                )
                .await
                .map_err(pg("look up foreign key"))?
                .is_some();
            let cols: Vec<String> = fk
                .columns
                .iter()
                .map(|c| crate::pg::quote::ident(c))
                .collect();
            let refs: Vec<String> = fk
                .ref_columns
                .iter()
                .map(|c| crate::pg::quote::ident(c))
                .collect();
            if !exists {
                self.client
                .batch_execute(&format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) NOT VALID",
                    crate::pg::quote::qualified(&q),
                    crate::pg::quote::ident(&name),
                    cols.join(", "),
                    crate::pg::quote::qualified(&fk.ref_table),
                    refs.join(", ")
                ))
                .await
                .map_err(|e| SinkError::Schema {
                    table: q.clone(),
                    message: pg(format!("add foreign key {name}"))(e).to_string(),
                })?;
            }
            self.client
                .execute(
                    "DELETE FROM veil_sink.pending_fks WHERE qualified = $1 AND name = $2",
                    &[&q, &name],
                )
                .await
                .map_err(pg("clear pending fk"))?;
        }
        Ok(())
    }

    async fn enqueue(
        &mut self,
        st: Statement,
        params: Vec<Option<String>>,
        what: Option<(String, &'static str, u64, bool)>,
    ) -> Result<(), SinkError> {
        self.queue.push(Queued { st, params, what });
        if self.queue.len() >= PIPELINE_DEPTH {
            self.drain().await?;
        }
        Ok(())
    }

    /// Sends every queued statement in order (pipelined) and checks each result.
    pub async fn drain(&mut self) -> Result<(), SinkError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let queue = std::mem::take(&mut self.queue);
        let client = &self.client;
        let results = futures_util::future::join_all(
            queue
                .iter()
                .map(|q| client.execute_raw(&q.st, q.params.iter())),
        )
        .await;
        for (q, r) in queue.iter().zip(results) {
            match (r, &q.what) {
                (Err(e), Some((table, op, lsn, _))) => {
                    return Err(SinkError::Schema {
                        table: table.clone(),
                        message: pg(format!("{op} at commit {}", fmt_lsn(*lsn)))(e).to_string(),
                    });
                }
                (Err(e), None) => return Err(pg("savepoint")(e)),
                (Ok(0), Some((table, op, lsn, true))) => {
                    return Err(SinkError::Diverged {
                        table: table.clone(),
                        op,
                        lsn: fmt_lsn(*lsn),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn statement(
        &mut self,
        key: String,
        sql: impl FnOnce() -> String,
        nparams: usize,
    ) -> Result<Statement, SinkError> {
        if let Some(s) = self.stmts.get(&key) {
            return Ok(s.clone());
        }
        let types = vec![Type::TEXT; nparams];
        let st = self
            .client
            .prepare_typed(&sql(), &types)
            .await
            .map_err(pg("prepare"))?;
        self.stmts.insert(key, st.clone());
        Ok(st)
    }

    async fn apply_row(&mut self, r: proto::RowChange, lsn: u64) -> Result<(), SinkError> {
        let schema = self
            .schemas
            .get(&r.table)
            .cloned()
            .ok_or_else(|| SinkError::Schema {
                table: r.table.clone(),
                message: "row change before the table's schema event".into(),
            })?;
        let ncols = schema.columns.len();
        let table = crate::pg::quote::qualified(&r.table);
        let bad = |what: &str| SinkError::Schema {
            table: r.table.clone(),
            message: format!("{what} has the wrong number of values for {ncols} columns"),
        };
        let text = |v: &proto::Value| -> Option<String> {
            match &v.kind {
                Some(Kind::Text(t)) => Some(t.clone()),
                _ => None,
            }
        };
        let is_unchanged = |v: &proto::Value| matches!(v.kind, Some(Kind::Unchanged(_)));
        let op = proto::Op::try_from(r.op).unwrap_or(proto::Op::Unspecified);
        // Where clause: key columns by equality, or every column (identity full) by text equality.
        let key_idx: Vec<usize> = schema
            .primary_key
            .iter()
            .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
            .collect();
        match op {
            proto::Op::Insert => {
                if r.new_values.len() != ncols {
                    return Err(bad("insert"));
                }
                let key = format!("{}\u{0}I", r.table);
                let st = self
                    .statement(
                        key,
                        || {
                            let cols: Vec<String> = schema
                                .columns
                                .iter()
                                .map(|c| crate::pg::quote::ident(&c.name))
                                .collect();
                            let vals: Vec<String> = schema
                                .columns
                                .iter()
                                .enumerate()
                                .map(|(i, c)| cast_param(i + 1, &c.type_name))
                                .collect();
                            format!(
                                "INSERT INTO {table} ({}) VALUES ({})",
                                cols.join(", "),
                                vals.join(", ")
                            )
                        },
                        ncols,
                    )
                    .await?;
                let params: Vec<Option<String>> = r.new_values.iter().map(text).collect();
                self.enqueue(st, params, Some((r.table.clone(), "insert", lsn, false)))
                    .await?;
            }
            proto::Op::Update | proto::Op::Delete => {
                let is_update = op == proto::Op::Update;
                if is_update && r.new_values.len() != ncols {
                    return Err(bad("update"));
                }
                let old: &[proto::Value] = if r.old_values.is_empty() {
                    &r.new_values
                } else {
                    &r.old_values
                };
                if old.len() != ncols {
                    return Err(bad("old row"));
                }
                let full = r.old_is_full || key_idx.is_empty();
                let set_idx: Vec<usize> = if is_update {
                    (0..ncols)
                        .filter(|&i| !is_unchanged(&r.new_values[i]))
                        .collect()
                } else {
                    Vec::new()
                };
                if is_update && set_idx.is_empty() {
                    return Ok(()); // nothing changed that dev can see
                }
                let widx: Vec<usize> = if full {
                    (0..ncols).filter(|&i| !is_unchanged(&old[i])).collect()
                } else {
                    key_idx
                };
                let mask: String = set_idx.iter().map(|i| format!("{i},")).collect::<String>()
                    + "|"
                    + &widx.iter().map(|i| format!("{i},")).collect::<String>();
                let key = format!(
                    "{}\u{0}{}{}{}",
                    r.table,
                    if is_update { "U" } else { "D" },
                    if full { "F" } else { "K" },
                    mask
                );
                // The SQL is built only when the statement is not cached yet.
                let sql = || {
                    let col = |c: usize| crate::pg::quote::ident(&schema.columns[c].name);
                    let first = set_idx.len() + 1;
                    let wsql = if full {
                        let parts: Vec<String> = widx
                            .iter()
                            .enumerate()
                            .map(|(i, &c)| {
                                format!("{}::text IS NOT DISTINCT FROM ${}", col(c), first + i)
                            })
                            .collect();
                        format!(
                            "ctid = (SELECT ctid FROM {table} WHERE {} LIMIT 1)",
                            if parts.is_empty() {
                                "true".into()
                            } else {
                                parts.join(" AND ")
                            }
                        )
                    } else {
                        widx.iter()
                            .enumerate()
                            .map(|(i, &c)| {
                                format!(
                                    "{} = {}",
                                    col(c),
                                    cast_param(first + i, &schema.columns[c].type_name)
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    };
                    if is_update {
                        let set: Vec<String> = set_idx
                            .iter()
                            .enumerate()
                            .map(|(i, &c)| {
                                format!(
                                    "{} = {}",
                                    col(c),
                                    cast_param(i + 1, &schema.columns[c].type_name)
                                )
                            })
                            .collect();
                        format!("UPDATE {table} SET {} WHERE {wsql}", set.join(", "))
                    } else {
                        format!("DELETE FROM {table} WHERE {wsql}")
                    }
                };
                let st = self.statement(key, sql, set_idx.len() + widx.len()).await?;
                let mut params: Vec<Option<String>> =
                    set_idx.iter().map(|&i| text(&r.new_values[i])).collect();
                params.extend(widx.iter().map(|&i| text(&old[i])));
                self.enqueue(
                    st,
                    params,
                    Some((
                        r.table.clone(),
                        if is_update { "update" } else { "delete" },
                        lsn,
                        true,
                    )),
                )
                .await?;
            }
            proto::Op::Unspecified => {
                return Err(SinkError::Schema {
                    table: r.table.clone(),
                    message: "row change without an operation".into(),
                });
            }
        }
        Ok(())
    }
}

/// Runs `veil sink` until `shutdown` turns true or an error stops it.
pub async fn run(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<(), SinkError> {
    let sink = cfg.sink()?.clone();
    let kafka = cfg.kafka()?.clone();
    let mut applier = Applier::connect(&sink.dsn, &kafka.topic).await?;
    admin::ensure_topic(&kafka, &kafka.topic, false)
        .await
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
    let consumer: StreamConsumer =
        client::client_config_with(&kafka, &[("fetch.wait.max.ms", "50")])
            .set("group.id", format!("veil-sink-{}", kafka.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
    tracing::info!(topic = %kafka.topic, offset = applier.next_offset(), epoch = applier.epoch(),
                   last_commit = %fmt_lsn(applier.last_commit_lsn()), "sink started");
    // The sink's confirmations: its own audit chain, signed with its own key.
    let mut audit = match &cfg.audit {
        Some(a) => Some(SinkAudit {
            writer: crate::audit::AuditWriter::open(
                a,
                cfg.audit_key_for("sink/").map_err(SinkError::Config)?,
                &kafka,
                &format!("sink/{}", kafka.topic),
            )
            .await
            .map_err(|e| SinkError::Kafka(e.to_string()))?,
            every: Duration::from_secs(a.window_secs.max(1)),
            last: std::time::Instant::now(),
            txns: applier.applied_txns,
            rows: applier.applied_rows,
        }),
        None => None,
    };
    // Offsets of the change topic are contiguous (it is never compacted). The sink insists on
    // seeing every one of them: a broker that answers a fetch starting inside a record batch with
    // the next batch would otherwise skip events silently. So it starts a little before the
    // checkpoint (dropping what is applied), and re-fetches from before any hole it sees.
    let mut rewind = REWIND;
    // The next offset the sink must see.
    let mut expected = applier.next_offset();
    'assign: loop {
        let start = (expected - rewind).max(0);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&kafka.topic, 0, Offset::Offset(start))
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
        consumer
            .assign(&tpl)
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break 'assign; }
                    continue;
                }
                m = tokio::time::timeout(Duration::from_millis(100), consumer.recv()) => m,
            };
            match msg {
                Err(_) => {
                    // Idle: commit what is applied.
                    applier.flush().await?;
                    if let Some(a) = audit.as_mut() {
                        a.confirm(&mut applier, false).await?;
                    }
                }
                Ok(Err(e)) => return Err(SinkError::Kafka(e.to_string())),
                Ok(Ok(m)) => {
                    let offset = m.offset();
                    if offset < expected {
                        continue; // before the checkpoint: already applied
                    }
                    if offset > expected {
                        if start == 0 || rewind >= 1_000_000 {
                            return Err(SinkError::Gap {
                                offset,
                                commit_lsn: format!("offset {offset}"),
                                expected_prev: format!("offset {expected}"),
                                applied: "offsets the broker no longer has (retention?)".into(),
                            });
                        }
                        tracing::warn!(
                            expected,
                            got = offset,
                            "the broker skipped offsets; fetching again from earlier"
                        );
                        metrics::counter!(crate::metrics::SINK_REFETCHES).increment(1);
                        rewind = (rewind * 2).min(1_000_000);
                        continue 'assign;
                    }
                    expected = offset + 1;
                    let env =
                        proto::Envelope::decode(m.payload().unwrap_or_default()).map_err(|e| {
                            SinkError::Decode {
                                offset,
                                message: e.to_string(),
                            }
                        })?;
                    applier.apply(offset, env).await?;
                    if applier.at_boundary() && applier.pending_rows() >= sink.batch_max_rows {
                        applier.flush().await?;
                        if let Some(a) = audit.as_mut() {
                            a.confirm(&mut applier, false).await?;
                        }
                        let mut c = TopicPartitionList::new();
                        let _ = c.add_partition_offset(&kafka.topic, 0, Offset::Offset(offset + 1));
                        let _ = consumer.commit(&c, CommitMode::Async);
                    }
                }
            }
        }
    }
    applier.flush().await?;
    if let Some(a) = audit.as_mut() {
        a.confirm(&mut applier, true).await?;
    }
    tracing::info!(
        rows = applier.applied_rows,
        txns = applier.applied_txns,
        "sink stopped"
    );
    Ok(())
}

/// The sink's audit chain: a confirmation of what dev committed, once per window.
struct SinkAudit {
    writer: crate::audit::AuditWriter,
    every: Duration,
    last: std::time::Instant,
    txns: u64,
    rows: u64,
}

impl SinkAudit {
    /// After a dev commit: confirms what was applied since the last confirmation (only what is
    /// committed in dev is confirmed).
    async fn confirm(&mut self, applier: &mut Applier, force: bool) -> Result<(), SinkError> {
        // What was done to dev on reclassifications, once committed.
        if !applier.in_dev_txn {
            for r in std::mem::take(&mut applier.reclassified) {
                self.writer
                    .record(proto::audit_record::Body::Reclassified(r))
                    .await
                    .map_err(|e| SinkError::Kafka(e.to_string()))?;
            }
        }
        if !force && self.last.elapsed() < self.every {
            return Ok(());
        }
        if applier.in_dev_txn || applier.applied_txns == self.txns {
            self.last = std::time::Instant::now();
            return Ok(());
        }
        let body = proto::audit_record::Body::Applied(proto::Applied {
            source_id: applier.ckpt.source_id.clone(),
            epoch: applier.ckpt.epoch,
            last_commit_lsn: applier.ckpt.last_commit_lsn,
            transactions: applier.applied_txns - self.txns,
            rows: applier.applied_rows - self.rows,
            dataset_id: format!("{}/epoch {}", applier.ckpt.source_id, applier.ckpt.epoch),
        });
        self.writer
            .record(body)
            .await
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
        self.txns = applier.applied_txns;
        self.rows = applier.applied_rows;
        self.last = std::time::Instant::now();
        Ok(())
    }
}
