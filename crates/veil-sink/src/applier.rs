//! The applier: one dev connection, dev transactions that batch source transactions (each under
//! a savepoint once any of its statements reaches dev), the checkpoint written in the same dev
//! transaction as the rows it covers, and every envelope passed through the fencing table
//! (`fence`) before it touches dev. DDL and DML live in `ddl` and `dml`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_postgres::{Client, Statement};

use super::batch::Batchable;
pub use super::batch::Queued;
use super::error::{SinkError, pg};
use super::fence::{self, Admit, BeginVerdict, Checkpoint, SrcTxn};
use super::store::load_schemas;
use crate::pg::lsn::fmt_lsn;
use crate::proto::{self, envelope::Event};

/// What the consumer does after an envelope was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on with the next offset.
    Continue,
    /// Read again from this offset: the applier set the open source transaction aside and
    /// committed what precedes it (enum labels had to be added in a transaction of their own).
    ReadFrom(i64),
}

/// Statements queued before the queue is drained (pipelining depth).
pub const PIPELINE_DEPTH: usize = 2000;

/// Applies change events to the dev database.
pub struct Applier {
    pub(super) client: Client,
    pub(super) topic: String,
    pub(super) ckpt: Checkpoint,
    /// The dev schema of every table veil manages (shared cheaply with the per-row path).
    pub(super) schemas: HashMap<String, Arc<proto::TableSchema>>,
    pub(super) stmts: HashMap<String, Statement>,
    /// Multi-row shapes of row statements, by the same keys as `stmts`.
    pub(super) shapes: HashMap<String, Arc<Batchable>>,
    /// When the open dev transaction began (`None`: no dev transaction is open).
    pub(super) dev_txn_since: Option<std::time::Instant>,
    /// Rows and age after which a dev transaction commits at the next boundary.
    pub(super) batch_limits: (usize, std::time::Duration),
    pub(super) batch_rows: usize,
    pub(super) src: Option<SrcTxn>,
    pub(super) queue: Vec<Queued>,
    pub duplicates: u64,
    pub(super) savepoint: Statement,
    pub(super) release: Statement,
    pub applied_rows: u64,
    pub applied_txns: u64,
    /// Columns cleared or dropped in dev because their rule changed (for the audit trail).
    pub reclassified: Vec<proto::Reclassified>,
    /// Updates and deletes that matched no dev row, by table and operation: rows, first and
    /// last commit LSN (audited once committed).
    pub missing: std::collections::BTreeMap<(String, &'static str), (u64, u64, u64)>,
    pub skipped_txns: u64,
    /// The open source transaction's starting point: the checkpoint and counters before its
    /// Begin, and the Begin's offset — to set it aside when the stream holds inside it.
    pub(super) open: Option<(Checkpoint, u64, usize, i64)>,
    /// The dev transaction holds at least one whole source transaction not yet committed.
    pub(super) completed_in_batch: bool,
    /// Queue position of the open source transaction's first statement: errors of statements
    /// before it belong to whole transactions and always count.
    pub(super) src_queue_start: usize,
    /// The last schema event of each table met inside replayed (skipped) transactions, applied
    /// before the next transaction that is applied (mirrored in `veil_sink.deferred_schemas`).
    pub(super) deferred: std::collections::BTreeMap<String, proto::TableSchema>,
    /// Labels of dev's enum types, as read (cleared whenever dev's types may have changed).
    pub(super) enum_cache: HashMap<String, Vec<String>>,
    /// The pieces of a fragmented envelope read so far (never in the checkpoint: a restart
    /// reads them again from the first).
    pub(super) joiner: super::fragments::Joiner,
    /// The open source transaction's savepoint: taken only once one of its statements is about
    /// to reach dev. A small transaction whose Commit arrives while all its statements still
    /// wait in the queue needs none (discarding it drops them from the queue).
    pub(super) savepoint_state: Savepoint,
}

/// Where the open source transaction's savepoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Savepoint {
    /// No applied source transaction is open.
    None,
    /// Open, and nothing of it has reached dev yet: the savepoint goes in front of its first
    /// statement when the queue is sent.
    Pending,
    /// Taken in dev: discarding the transaction rolls back to it.
    Taken,
}

impl Applier {
    /// Connects, prepares the bookkeeping schema and loads the checkpoint.
    pub async fn connect(dsn: &crate::config::Dsn, topic: &str) -> Result<Self, SinkError> {
        let client = crate::pg::tls::connect(&dsn.parse()?)
            .await
            .map_err(SinkError::Connect)?;
        client
            .batch_execute(&format!(
                "SET session_replication_role = replica; SET synchronous_commit = on; \
                 SET client_min_messages = warning; {}",
                crate::pg::value_format_sql()
            ))
            .await
            .map_err(pg(
                "session settings (the sink role must be allowed to set session_replication_role)",
            ))?;
        client
            .batch_execute(super::store::BOOTSTRAP_SQL)
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
        let deferred = super::store::load_deferred(&client).await?;
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
            duplicates: 0,
            client,
            topic: topic.to_owned(),
            ckpt,
            schemas,
            stmts: HashMap::new(),
            shapes: HashMap::new(),
            dev_txn_since: None,
            batch_limits: (5000, std::time::Duration::from_millis(25)),
            batch_rows: 0,
            src: None,
            applied_rows: 0,
            applied_txns: 0,
            reclassified: Vec::new(),
            missing: std::collections::BTreeMap::new(),
            skipped_txns: 0,
            open: None,
            completed_in_batch: false,
            src_queue_start: 0,
            deferred,
            enum_cache: HashMap::new(),
            joiner: Default::default(),
            savepoint_state: Savepoint::None,
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

    /// A dev transaction is open.
    pub fn in_dev_txn(&self) -> bool {
        self.dev_txn_since.is_some()
    }

    /// How long the open dev transaction has been open (zero when none is).
    pub fn txn_age(&self) -> std::time::Duration {
        self.dev_txn_since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Commit the dev transaction after this many rows, or once it is open this long
    /// (`sink.batch_max_rows`, `sink.batch_max_ms`).
    pub fn set_batch_limits(&mut self, rows: usize, age: std::time::Duration) {
        self.batch_limits = (rows, age);
    }

    /// At a source-transaction boundary with a dev transaction due to commit.
    pub fn flush_due(&self) -> bool {
        self.in_dev_txn()
            && self.at_boundary()
            && (self.batch_rows >= self.batch_limits.0 || self.txn_age() >= self.batch_limits.1)
    }

    pub(super) async fn ensure_txn(&mut self) -> Result<(), SinkError> {
        if !self.in_dev_txn() {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(pg("begin"))?;
            self.dev_txn_since = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Writes the checkpoint and commits the dev transaction (at a source-transaction boundary).
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        if !self.in_dev_txn() || self.src.is_some() {
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
        self.dev_txn_since = None;
        self.batch_rows = 0;
        self.completed_in_batch = false;
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
        if fence::half_transaction(self.src.as_ref())
            && let Some(s) = self.src.take()
        {
            // Statements queued before its Begin belong to whole transactions: their errors
            // stop the sink (the checkpoint must never cover a transaction whose rows failed).
            tracing::warn!(offset, commit_lsn = %fmt_lsn(s.commit_lsn), "discarding a half transaction left by a stream restart");
            if self.discard_open_statements().await? {
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT veil_src; RELEASE SAVEPOINT veil_src")
                    .await
                    .map_err(pg("rollback half transaction"))?;
                // Statements prepared inside the savepoint survive; schema changes were undone.
                self.reload_schemas().await?;
            }
        }
        Ok(())
    }

    /// The open source transaction's statements go: those still queued are dropped (a savepoint
    /// not yet taken) or sent with their errors tolerated (the caller rolls back to the
    /// savepoint: returns true). Statements queued before its Begin belong to whole
    /// transactions: their errors stop the sink.
    async fn discard_open_statements(&mut self) -> Result<bool, SinkError> {
        let start = self.src_queue_start;
        let state = std::mem::replace(&mut self.savepoint_state, Savepoint::None);
        if state == Savepoint::Taken {
            self.drain_tolerating_from(start).await?;
            return Ok(true);
        }
        self.queue.truncate(start);
        self.drain().await?;
        Ok(false)
    }

    /// The stream holds inside a source transaction (it published the Begin, then met a table
    /// it may not publish): dev would not see the whole transactions before it until the hold
    /// ends. Sets the open one aside — back to its savepoint, the checkpoint and counters as
    /// before its Begin — so the caller can commit the rest, and returns the Begin's offset to
    /// read it again from. `None` when there is nothing to gain.
    pub async fn set_aside_open_txn(&mut self) -> Result<Option<i64>, SinkError> {
        let skipping = self.src.as_ref().is_none_or(|s| s.skipping);
        if skipping || !self.completed_in_batch || self.open.is_none() {
            return Ok(None);
        }
        let begin = self.abandon_open_txn().await?;
        tracing::debug!(
            offset = begin,
            "open source transaction set aside; committing what precedes it"
        );
        Ok(begin)
    }

    /// Rolls the open (applied) source transaction back to its savepoint and restores the
    /// checkpoint and counters as they were before its Begin; returns the Begin's offset.
    /// Errors of statements queued before its Begin count.
    pub(super) async fn abandon_open_txn(&mut self) -> Result<Option<i64>, SinkError> {
        if self.src.as_ref().is_none_or(|s| s.skipping) {
            return Ok(None);
        }
        let taken = self.discard_open_statements().await?;
        self.joiner = Default::default();
        let Some((ckpt, applied_rows, batch_rows, begin)) = self.open.take() else {
            return Ok(None);
        };
        if taken {
            self.client
                .batch_execute("ROLLBACK TO SAVEPOINT veil_src; RELEASE SAVEPOINT veil_src")
                .await
                .map_err(pg("set aside the open transaction"))?;
        }
        self.src = None;
        self.ckpt = ckpt;
        self.applied_rows = applied_rows;
        self.batch_rows = batch_rows;
        self.reload_schemas().await?;
        Ok(Some(begin))
    }

    pub(super) async fn reload_schemas(&mut self) -> Result<(), SinkError> {
        self.stmts.clear();
        self.shapes.clear();
        self.enum_cache.clear();
        self.schemas = load_schemas(&self.client).await?;
        Ok(())
    }

    /// Applies the envelope read at `offset` (a message of the change topic): the envelope
    /// its fragments make up, or each envelope of a batch in order. While a batch is applied
    /// only in part, the checkpoint names the offset before it: a restart reads the message
    /// again and the fencing drops the envelopes already applied.
    pub async fn apply(&mut self, offset: i64, env: proto::Envelope) -> Result<Next, SinkError> {
        let Some(env) = self.joiner.push(offset, env, self.ckpt.last_commit_lsn)? else {
            return Ok(Next::Continue);
        };
        let Some(Event::Batch(batch)) = env.event else {
            return self.apply_one(offset, env).await;
        };
        if batch.envelopes.is_empty() {
            return Err(SinkError::Decode {
                offset,
                message: "an empty batch".into(),
            });
        }
        let last = batch.envelopes.len() - 1;
        for (i, inner) in batch.envelopes.into_iter().enumerate() {
            if matches!(inner.event, Some(Event::Batch(_) | Event::Fragment(_))) {
                return Err(SinkError::Decode {
                    offset,
                    message: "a batch or a fragment inside a batch".into(),
                });
            }
            let next = self.apply_one(offset, inner).await?;
            if i < last && self.ckpt.offset >= offset {
                self.ckpt.offset = offset - 1;
            }
            if next != Next::Continue {
                // The message is read again from its first envelope (see above).
                return Ok(next);
            }
            // A batch rarely ends on a transaction boundary under a steady flow: the dev
            // transaction may commit at any boundary inside it (the checkpoint then names the
            // offset before the batch, and a restart drops what it holds as duplicates).
            if i < last && self.flush_due() {
                self.flush().await?;
            }
        }
        Ok(Next::Continue)
    }

    /// Applies one (whole, unbatched) envelope read at `offset`.
    async fn apply_one(&mut self, offset: i64, env: proto::Envelope) -> Result<Next, SinkError> {
        let Some(event) = env.event else {
            return Err(SinkError::Decode {
                offset,
                message: "envelope without event".into(),
            });
        };
        // Fence by run (duplicates and late writes dropped, gaps refused) and by epoch.
        let starts_snapshot = matches!(event, Event::SnapshotBegin(_));
        let before = matches!(event, Event::Begin(_)).then(|| self.ckpt.clone());
        match fence::admit(
            &mut self.ckpt,
            offset,
            env.run_id,
            env.seq,
            env.epoch,
            starts_snapshot,
        )? {
            Admit::Duplicate | Admit::LateRun => {
                self.duplicates += 1;
                metrics::counter!(crate::metrics::SINK_DUPLICATES).increment(1);
                return Ok(Next::Continue);
            }
            Admit::OlderEpoch => return Ok(Next::Continue),
            Admit::NewEpoch => self.start_epoch(env.epoch).await?,
            Admit::Apply => {}
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
                if self.src.as_ref().is_some_and(|t| t.skipping) {
                    // A replayed transaction's schema event: dev is already past it (applying it
                    // now would undo later changes, e.g. drop a column added since). The last one
                    // of each table is what the stream encodes its next rows with: applied before
                    // the next transaction that is applied.
                    self.defer_schema(s).await?;
                    return Ok(Next::Continue);
                }
                // Whatever the schema change writes to dev comes after the queued statements
                // (and after the open transaction's savepoint).
                self.drain().await?;
                self.forget_deferred(&format!("{}.{}", s.schema, s.name))
                    .await?;
                self.apply_schema(s).await?;
            }
            Event::StreamStart(_) => self.rollback_half_txn(offset).await?,
            Event::Begin(b) => {
                self.rollback_half_txn(offset).await?;
                if fence::begin(&mut self.ckpt, offset, b.commit_lsn, env.last_commit_lsn)?
                    == BeginVerdict::Replay
                {
                    self.skipped_txns += 1;
                    metrics::counter!(crate::metrics::SINK_SKIPPED_TXNS).increment(1);
                    self.src = Some(SrcTxn {
                        commit_lsn: b.commit_lsn,
                        skipping: true,
                    });
                    return Ok(Next::Continue);
                }
                self.ensure_txn().await?;
                self.apply_deferred().await?;
                self.src_queue_start = self.queue.len();
                self.savepoint_state = Savepoint::Pending;
                self.src = Some(SrcTxn {
                    commit_lsn: b.commit_lsn,
                    skipping: false,
                });
                if let Some(before) = before {
                    self.open = Some((before, self.applied_rows, self.batch_rows, offset));
                }
            }
            Event::Commit(c) => match self.src.take() {
                Some(SrcTxn { skipping: true, .. }) => {}
                Some(SrcTxn {
                    skipping: false, ..
                }) => {
                    if self.savepoint_state == Savepoint::Taken {
                        let st = self.release.clone();
                        self.enqueue(st, Vec::new(), None, None).await?;
                    }
                    self.savepoint_state = Savepoint::None;
                    self.ckpt.last_commit_lsn = c.commit_lsn;
                    self.ckpt.last_commit_time_us = c.commit_time_us;
                    self.completed_in_batch = true;
                    self.open = None;
                    tracing::debug!(offset, commit_lsn = %fmt_lsn(c.commit_lsn), rows = c.rows, "transaction applied");
                    self.applied_txns += 1;
                    metrics::counter!(crate::metrics::SINK_APPLIED_TXNS).increment(1);
                }
                // Commit of a transaction whose Begin we skipped as already applied (replayed
                // tail) or never saw: nothing to do if it is not newer than the checkpoint.
                None => fence::orphan_commit(&self.ckpt, offset, c.commit_lsn)?,
            },
            Event::Row(r) => {
                if self.src.as_ref().is_some_and(|s| s.skipping) {
                    return Ok(Next::Continue);
                }
                let snapshot = env.phase == proto::Phase::Snapshot as i32;
                if !snapshot && self.src.is_none() {
                    return Err(SinkError::Decode {
                        offset,
                        message: "row change outside a transaction".into(),
                    });
                }
                if let Some(labels) = self.unknown_enum_label(&r).await? {
                    return self.add_labels_and_reread(labels, offset, false).await;
                }
                self.ensure_txn().await?;
                let lsn = self.src.as_ref().map(|s| s.commit_lsn).unwrap_or(0);
                self.apply_row(r, lsn).await?;
                self.batch_rows += 1;
                self.applied_rows += 1;
            }
            Event::Truncate(t) => {
                if self.src.as_ref().is_some_and(|s| s.skipping) {
                    return Ok(Next::Continue);
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
            Event::Fragment(_) | Event::Batch(_) => {
                return Err(SinkError::Decode {
                    offset,
                    message: "a fragment or a batch inside joined fragments".into(),
                });
            }
            Event::EnumLabels(e) => {
                if self.src.as_ref().is_some_and(|s| s.skipping) {
                    // A replay: dev took these labels when it applied the transaction.
                    return Ok(Next::Continue);
                }
                return self.enum_labels(e, offset).await;
            }
        }
        Ok(Next::Continue)
    }

    async fn defer_schema(&mut self, s: proto::TableSchema) -> Result<(), SinkError> {
        let q = format!("{}.{}", s.schema, s.name);
        tracing::debug!(table = %q, "schema event of a replayed transaction deferred");
        super::store::save_schema(&self.client, "veil_sink.deferred_schemas", &q, &s).await?;
        self.deferred.insert(q, s);
        Ok(())
    }

    async fn forget_deferred(&mut self, q: &str) -> Result<(), SinkError> {
        if self.deferred.remove(q).is_some() {
            self.client
                .execute(
                    "DELETE FROM veil_sink.deferred_schemas WHERE qualified = $1",
                    &[&q],
                )
                .await
                .map_err(pg("clear deferred schema"))?;
        }
        Ok(())
    }

    /// The replay is over: the deferred schema events (the last of each table) are applied,
    /// outside any source transaction's savepoint. A schema dev already has changes nothing.
    async fn apply_deferred(&mut self) -> Result<(), SinkError> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let deferred = std::mem::take(&mut self.deferred);
        self.client
            .execute("DELETE FROM veil_sink.deferred_schemas", &[])
            .await
            .map_err(pg("clear deferred schemas"))?;
        for (q, s) in deferred {
            tracing::info!(table = %q, "applying the schema a replayed transaction carried");
            self.apply_schema(s).await?;
        }
        Ok(())
    }

    pub(super) async fn start_epoch(&mut self, epoch: u64) -> Result<(), SinkError> {
        tracing::warn!(
            from = self.ckpt.epoch,
            to = epoch,
            "new epoch: dropping what the previous epoch built"
        );
        self.queue.clear();
        if self.in_dev_txn() {
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(pg("rollback"))?;
            self.dev_txn_since = None;
        }
        self.src = None;
        self.savepoint_state = Savepoint::None;
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
            .batch_execute(
                "DELETE FROM veil_sink.tables; DELETE FROM veil_sink.pending_fks; \
                 DELETE FROM veil_sink.deferred_schemas;",
            )
            .await
            .map_err(pg("reset table list"))?;
        self.schemas.clear();
        self.deferred.clear();
        self.stmts.clear();
        self.shapes.clear();
        self.ckpt.epoch = epoch;
        self.ckpt.last_commit_lsn = 0;
        self.ckpt.last_commit_time_us = 0;
        Ok(())
    }
}
