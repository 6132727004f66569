//! Online backfill of one table while the stream runs, with watermarks in the WAL (DBLog,
//! Debezium's incremental snapshots): no gap and no stale overwrite.
//!
//! `veil backfill TABLE` writes a request into the WAL (`pg_logical_emit_message`, never a table
//! of ours that would itself be published). The stream, meeting it in order, plans the table as
//! it is now and starts a worker on a connection of its own. For each chunk the worker writes a
//! low watermark, reads the next rows by primary key (keyset, `LIMIT`), hands them over, and
//! writes a high watermark. Between the two watermarks the stream remembers the keys of the
//! table's rows that changed; at the high watermark it publishes what is queued, drops the
//! chunk's rows whose key changed (the log has a value at least as new), and publishes the rest
//! as upserts in a transaction of their own committed just before the high watermark's end LSN —
//! ordered with the log, fenced by the sink like any transaction.
//!
//! A table without a primary key is read whole between one pair of watermarks and published as
//! one transaction that empties dev's copy and inserts every row: a short sub-epoch of its own.
//! When anything changed the table inside that window, it is read again (a few times, then the
//! backfill fails and says so).
//!
//! A chunk read under another registry version than the stream's, or one a scanner hit held,
//! is read again. While the stream is held, nothing is published: the worker waits at its high
//! watermark.
//!
//! **Durability.** Each job's position (keyset, keys to read again, rows) after every chunk is
//! kept with the stream's state in `_veil.backfills` (unlogged, never published), and while a
//! job runs the stream confirms no further than the newest position the broker acknowledged. A
//! restart resumes the slot at or before a kept position, continues the job from there, and
//! decodes again every change after it (keys that moved): nothing lost, nothing stale.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::error::StreamError;
use super::pipeline::{Scanned, Streamer};
use super::watermark::{Chunk, Ended, Job, Outcome, Position, Row, Window, key_text};
use crate::deid::gate::{RowValue, TablePlan};
use crate::error::{Classify, ErrorClass};
use crate::pg::catalog;
use crate::pg::lsn::fmt_lsn;
use crate::proto::{self, envelope::Event};

pub const REQUEST_PREFIX: &str = "veil.backfill.request";
pub const LOW_PREFIX: &str = "veil.backfill.low";
pub const HIGH_PREFIX: &str = "veil.backfill.high";
/// Rows per chunk.
const CHUNK_ROWS: i64 = 2000;
/// A table without a primary key is read whole, in memory: up to this many rows (the
/// planner's estimate) and this many bytes of table (heap and TOAST; the stream's memory).
const WHOLE_TABLE_MAX_ROWS: f64 = 1_000_000.0;
const WHOLE_TABLE_MAX_BYTES: i64 = 128 << 20;
/// Reads of a keyless table a window may spoil before the backfill gives up.
const WHOLE_TABLE_TRIES: u32 = 30;
/// Restarts of a worker after a transient error (a dropped connection) before the job fails.
const WORKER_RESTARTS: u32 = 5;
/// The request content that continues a job from its kept position.
const RESUME: &str = "resume";

/// `veil backfill TABLE`: writes the request into production's WAL, where the running stream
/// (or the next one to start) meets it in order. The table must be decided in the registry.
pub async fn request(cfg: &crate::config::Config, table: &str) -> Result<(), StreamError> {
    let registry = crate::deid::registry::Registry::load(&cfg.registry.dir)
        .map_err(|e| StreamError::Config(crate::error::ConfigError::Invalid(e.to_string())))?;
    let entry = registry.table(table).ok_or_else(|| {
        StreamError::Config(crate::error::ConfigError::Invalid(format!(
            "{table} has no registry decision: decide it first (veil registry pending)"
        )))
    })?;
    if entry.blocked {
        return Err(StreamError::Config(crate::error::ConfigError::Invalid(
            format!("{table} is blocked in the registry: nothing of it is published"),
        )));
    }
    let target = cfg.source()?.dsn.parse()?;
    let client = crate::pg::tls::connect(&target)
        .await
        .map_err(StreamError::Connect)?;
    let who = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let content = format!("{table}\ton demand (veil backfill, OS user {who})");
    let lsn: String = client
        .query_one(
            "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)::text",
            &[&REQUEST_PREFIX, &content],
        )
        .await
        .map_err(pg("write the backfill request"))?
        .get(0);
    println!(
        "backfill of {table} requested at LSN {lsn}; the stream reads it chunk by chunk \
         (progress in its log, veil_backfill_rows_total and veil_backfill_remaining_rows; one \
         audit record when it ends)"
    );
    Ok(())
}

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StreamError {
    move |e| StreamError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// `SELECT <every column as text, NULL where not read> FROM [ONLY] <table> AS src`: ordering
/// and the keyset compare the table's columns (`src.<key>`), not the text output columns of the
/// same names.
fn select_of(plan: &TablePlan, partitioned: bool) -> String {
    super::snapshot::plan_select(plan, partitioned, true, " AS src")
}

/// Watermark content: table, the worker's run and the chunk's number.
fn watermark(table: &str, run: u64, no: u64) -> String {
    format!("{table}\t{run:x}\t{no}")
}

fn parse_watermark(text: &str) -> Option<(String, u64, u64)> {
    let mut it = text.rsplitn(3, '\t');
    let no = it.next()?.parse().ok()?;
    let run = u64::from_str_radix(it.next()?, 16).ok()?;
    Some((it.next()?.to_owned(), run, no))
}

impl Streamer {
    /// A backfill message met in the WAL at `lsn`.
    pub(super) async fn backfill_message(
        &mut self,
        prefix: &str,
        content: &[u8],
        lsn: u64,
    ) -> Result<(), StreamError> {
        let text = String::from_utf8_lossy(content).into_owned();
        match prefix {
            REQUEST_PREFIX => {
                let (table, reason) = text
                    .trim()
                    .split_once('\t')
                    .unwrap_or((text.trim(), "on demand"));
                self.backfill_request(table, reason, lsn).await
            }
            LOW_PREFIX | HIGH_PREFIX => {
                let Some((table, run, no)) = parse_watermark(&text) else {
                    tracing::warn!(
                        prefix,
                        "backfill watermark without table, run and chunk: ignored"
                    );
                    return Ok(());
                };
                if prefix == LOW_PREFIX {
                    self.backfill_low(table, run, no)
                } else {
                    self.backfill_high(table, run, no, lsn).await
                }
            }
            _ => Ok(()),
        }
    }

    /// Writes a backfill request for `table` into the WAL: after a decision opened or changed
    /// it (met in order, after what the decision released), or to continue a job. A failure is
    /// logged, never fatal; `false` then.
    pub(super) async fn request_backfill(&mut self, table: &str, reason: &str) -> bool {
        let content = format!("{table}\t{reason}");
        match self
            .catalog
            .execute(
                "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)",
                &[&REQUEST_PREFIX, &content],
            )
            .await
        {
            Ok(_) => {
                tracing::info!(table, reason, "backfill requested");
                true
            }
            Err(e) => {
                tracing::warn!(table, error = %crate::pg::errors::PgError::new("request a backfill", &e),
                                     "backfill not requested; run `veil backfill` for this table");
                false
            }
        }
    }

    /// Continues a kept job from `p` (a request written now takes it up in order); a job that
    /// cannot be continued fails (it must not hold the confirmed position back).
    async fn continue_job(&mut self, table: &str, p: Position) -> Result<(), StreamError> {
        self.backfill.resume.insert(table.to_owned(), p);
        if !self.request_backfill(table, RESUME).await {
            self.fail_job(table, "its continuation could not be requested".into())
                .await?;
        }
        Ok(())
    }

    /// How far the stream may confirm `lsn` while backfills run (see [`Job::confirm_cap`]).
    pub fn confirmable(&self, lsn: u64) -> u64 {
        let acked = self.publisher.acked_lsn();
        self.backfill
            .jobs
            .values()
            .map(|j| j.confirm_cap(acked))
            .fold(lsn, u64::min)
    }

    /// At start: the jobs a predecessor kept. Resuming (`resume_lsn`), each continues from its
    /// newest position at or before the slot's confirmed LSN (a request written now takes it
    /// up in order); a new epoch drops them all (its snapshot copies every table).
    pub async fn load_backfills(&mut self, slot_prefix: &str, resume_lsn: Option<u64>) {
        let like = format!("{}\\_e%", slot_prefix.replace('_', "\\_"));
        let rows = match self
            .catalog
            .query(
                "SELECT slot, tbl, state::text FROM _veil.backfills WHERE slot LIKE $1",
                &[&like],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %crate::pg::errors::PgError::new("read _veil.backfills", &e),
                               "backfill state not readable (run `veil setup` again): no backfill resumes");
                return;
            }
        };
        let mut resume = Vec::new();
        for r in rows {
            let (slot, table, state): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let job = if slot == self.slot_name {
                let parsed = serde_json::from_str::<Job>(&state);
                if parsed.is_err() {
                    tracing::warn!(table = %table, "kept backfill state unreadable (another veil version?): the backfill does not resume; run `veil backfill` for this table");
                }
                parsed.ok()
            } else {
                None
            };
            let at = match (&job, resume_lsn) {
                (Some(j), Some(lsn)) => j.resume_at(lsn),
                _ => None,
            };
            match (job, at) {
                (Some(mut job), Some(p)) => {
                    tracing::info!(table = %table, rows = p.rows, chunk = p.no, again = p.again.len(),
                                   "backfill resumes from its kept position");
                    job.positions = if p.high_lsn > 0 {
                        vec![p.clone()]
                    } else {
                        Vec::new()
                    };
                    job.finished_lsn = None;
                    self.backfill.jobs.insert(table.clone(), job);
                    self.backfill.resume.insert(table.clone(), p);
                    resume.push(table);
                }
                _ => {
                    let _ = self
                        .catalog
                        .execute(
                            "DELETE FROM _veil.backfills WHERE slot = $1 AND tbl = $2",
                            &[&slot, &table],
                        )
                        .await;
                }
            }
        }
        for table in resume {
            if let Some(p) = self.backfill.resume.get(&table).cloned()
                && let Err(e) = self.continue_job(&table, p).await
            {
                tracing::warn!(table = %table, error = %e, "backfill not continued");
            }
        }
    }

    /// Keeps a job's state with the stream's (`_veil.backfills`).
    async fn persist_job(&mut self, table: &str) {
        let Some(job) = self.backfill.jobs.get(table) else {
            return;
        };
        let state = serde_json::to_string(job).unwrap_or_default();
        if let Err(e) = self
            .catalog
            .execute(
                "INSERT INTO _veil.backfills (slot, tbl, state) VALUES ($1, $2, $3::text::jsonb) \
                 ON CONFLICT (slot, tbl) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
                &[&self.slot_name, &table, &state],
            )
            .await
            && !self.backfill.unkept_said
        {
            self.backfill.unkept_said = true;
            tracing::warn!(table, error = %crate::pg::errors::PgError::new("keep the backfill's position", &e),
                           "backfill positions not kept (run `veil setup` again): a restart does not resume backfills");
        }
    }

    async fn forget_job(&mut self, table: &str) {
        self.backfill.jobs.remove(table);
        self.backfill.moved.remove(table);
        self.backfill.resume.remove(table);
        metrics::gauge!(crate::metrics::BACKFILL_REMAINING, "table" => table.to_owned()).set(0.0);
        metrics::gauge!(crate::metrics::BACKFILL_ETA, "table" => table.to_owned()).set(0.0);
        let _ = self
            .catalog
            .execute(
                "DELETE FROM _veil.backfills WHERE slot = $1 AND tbl = $2",
                &[&self.slot_name, &table],
            )
            .await;
    }

    /// The audit record of a job that ended: `outcome` is "complete" or what stopped it.
    async fn audit_backfill(&mut self, table: &str, outcome: String) -> Result<(), StreamError> {
        let Some(job) = self.backfill.jobs.get(table) else {
            return Ok(());
        };
        let body = proto::audit_record::Body::Backfilled(proto::Backfilled {
            table: table.to_owned(),
            rows: job.rows(),
            registry_version: job.registry_version.clone(),
            reason: job.reason.clone(),
            chunks: job.positions.last().map_or(0, |p| p.no),
            retries: job.retries,
            request_lsn: job.request_lsn,
            finished_lsn: job.finished_lsn.unwrap_or(0),
            seconds: (super::hold::now_us() - job.started_at_us).max(0) as f64 / 1e6,
            outcome,
            whole_table: job.key_idx.is_empty(),
        });
        self.audit(body).await
    }

    /// A job that cannot go on: logged, counted, audited, forgotten.
    async fn fail_job(&mut self, table: &str, why: String) -> Result<(), StreamError> {
        tracing::warn!(table, why = %why, "backfill failed; run `veil backfill` for this table once the cause is fixed");
        metrics::counter!(crate::metrics::BACKFILL_FAILURES, "table" => table.to_owned())
            .increment(1);
        self.audit_backfill(table, format!("failed: {why}")).await?;
        self.forget_job(table).await;
        Ok(())
    }

    /// Between reads of the log: workers that ended, jobs whose last chunk the broker
    /// acknowledged, the running gauge.
    pub async fn backfill_housekeeping(&mut self) -> Result<(), StreamError> {
        while let Ok(Ended { table, run, result }) = self.backfill.ended.1.try_recv() {
            let Some(job) = self.backfill.jobs.get_mut(&table) else {
                continue;
            };
            if job.run != run {
                continue;
            }
            let Err(e) = result else { continue };
            if e.class() == ErrorClass::Transient && job.restarts < WORKER_RESTARTS {
                job.restarts += 1;
                tracing::warn!(table = %table, error = %e, restart = job.restarts,
                               "backfill worker stopped; it continues from its position");
                let p = job.positions.last().cloned().unwrap_or_default();
                self.continue_job(&table, p).await?;
            } else {
                self.fail_job(&table, e.to_string()).await?;
            }
        }
        // A job with neither a worker nor a continuation on its way would hold the confirmed
        // position back for ever: it fails, and says so.
        let orphans: Vec<String> = self
            .backfill
            .jobs
            .iter()
            .filter(|(t, j)| {
                j.finished_lsn.is_none()
                    && !self.backfill.resume.contains_key(*t)
                    && self
                        .backfill
                        .running
                        .get(*t)
                        .is_none_or(|h| h.is_finished())
            })
            .map(|(t, _)| t.clone())
            .collect();
        for table in orphans {
            self.fail_job(&table, "its worker is gone".into()).await?;
        }
        let acked = self.publisher.acked_lsn();
        let done: Vec<String> = self
            .backfill
            .jobs
            .iter()
            .filter(|(_, j)| j.finished_lsn.is_some_and(|f| f <= acked))
            .map(|(t, _)| t.clone())
            .collect();
        for table in done {
            self.forget_job(&table).await;
        }
        metrics::gauge!(crate::metrics::BACKFILLS_RUNNING).set(self.backfill.jobs.len() as f64);
        Ok(())
    }

    /// Starts (or continues) a worker for `table`, planned as it is now.
    async fn backfill_request(
        &mut self,
        table: &str,
        reason: &str,
        lsn: u64,
    ) -> Result<(), StreamError> {
        if let Some(h) = self.backfill.running.get(table)
            && !h.is_finished()
        {
            tracing::info!(table, "backfill already running; request ignored");
            return Ok(());
        }
        let Some(target) = self.backfill.target.clone() else {
            return Ok(());
        };
        let resume = self.backfill.resume.remove(table);
        if reason == RESUME && resume.is_none() {
            // A resume a predecessor wrote, met again: its job is not kept any more.
            return Ok(());
        }
        let found = self
            .catalog
            .query_opt(
                "SELECT c.oid, c.relkind = 'p', \
                        greatest(c.reltuples, pg_catalog.pg_stat_get_live_tuples(c.oid), 0)::float8, \
                        pg_catalog.pg_table_size(c.oid) \
                 FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)",
                &[&table],
            )
            .await
            .map_err(pg("look up the table to backfill"))?;
        let Some(found) = found else {
            tracing::warn!(
                table,
                "backfill requested for a table production does not have: ignored"
            );
            if self.backfill.jobs.contains_key(table) {
                self.fail_job(table, "the table is gone".into()).await?;
            }
            return Ok(());
        };
        let (oid, partitioned, estimate, bytes): (u32, bool, f64, i64) =
            (found.get(0), found.get(1), found.get(2), found.get(3));
        // The table as it is now; the stream's own plan must describe the same shape.
        let mut info = catalog::describe_table(&self.catalog, oid, None).await?;
        catalog::bind_to_shape_log(&self.catalog, &mut info, None, false).await?;
        let keys = info.identity_keys();
        let plan = self.plan_or_hold(&info, &keys).await?;
        if let Some(known) = self.plans.get(&oid)
            && (known.columns.len() != plan.columns.len()
                || known
                    .columns
                    .iter()
                    .zip(&plan.columns)
                    .any(|(a, b)| a.name != b.name || a.type_name != b.type_name))
        {
            tracing::warn!(
                table,
                "backfill: the table's shape changed since the stream planned it; request ignored (request it again once the change has streamed)"
            );
            if self.backfill.jobs.contains_key(table) {
                self.fail_job(
                    table,
                    "the table's shape changed since the stream planned it".into(),
                )
                .await?;
            }
            return Ok(());
        }
        if plan.blocked {
            tracing::warn!(table, "backfill of a blocked table: ignored");
            if self.backfill.jobs.contains_key(table) {
                self.fail_job(table, "the table is blocked".into()).await?;
            }
            return Ok(());
        }
        let key_idx: Vec<usize> = info
            .primary_key
            .iter()
            .filter_map(|k| plan.columns.iter().position(|c| &c.name == k))
            .collect();
        self.remember_described(oid, info.clone(), keys);
        if !self.plans.contains_key(&oid) {
            self.publish_schema_if_changed(&plan).await?;
            self.remember_schema(&plan);
        }
        let run = rand::random::<u64>().max(1);
        let start = match (resume, self.backfill.jobs.get_mut(table)) {
            (Some(p), Some(job)) => {
                job.run = run;
                job.key_idx = key_idx.clone();
                job.registry_version = plan.registry_version.clone();
                p
            }
            _ => {
                self.backfill.jobs.insert(
                    table.to_owned(),
                    Job {
                        run,
                        reason: reason.to_owned(),
                        request_lsn: lsn,
                        started_at_us: super::hold::now_us(),
                        key_idx: key_idx.clone(),
                        registry_version: plan.registry_version.clone(),
                        estimate: estimate.max(0.0) as u64,
                        positions: Vec::new(),
                        finished_lsn: None,
                        retries: 0,
                        restarts: 0,
                        rereading: None,
                    },
                );
                self.backfill.moved.remove(table);
                Position::default()
            }
        };
        if key_idx.is_empty() && (estimate > WHOLE_TABLE_MAX_ROWS || bytes > WHOLE_TABLE_MAX_BYTES)
        {
            return self
                .fail_job(
                    table,
                    format!(
                        "no primary key, about {estimate:.0} rows in {} MiB: too large to copy \
                         whole (at most {WHOLE_TABLE_MAX_ROWS:.0} rows and {} MiB); give it a \
                         primary key",
                        bytes >> 20,
                        WHOLE_TABLE_MAX_BYTES >> 20
                    ),
                )
                .await;
        }
        self.persist_job(table).await;
        let key_types: Vec<String> = key_idx
            .iter()
            .map(|&i| plan.columns[i].type_name.clone())
            .collect();
        let key_names: Vec<String> = key_idx
            .iter()
            .map(|&i| format!("src.{}", crate::pg::quote::ident(&plan.columns[i].name)))
            .collect();
        let tx = self
            .backfill
            .chunks
            .get_or_insert_with(|| mpsc::channel(2))
            .0
            .clone();
        let worker = Worker {
            target,
            table: table.to_owned(),
            run,
            select: select_of(&plan, partitioned),
            partitioned,
            registry_version: plan.registry_version.clone(),
            key_idx,
            key_types,
            key_names,
            start,
            tx,
            ended: self.backfill.ended.0.clone(),
        };
        tracing::info!(table, registry = %plan.registry_version, reason, whole_table = worker.key_idx.is_empty(),
                       from_chunk = worker.start.no, "backfill starts");
        metrics::counter!(crate::metrics::BACKFILL_ROWS, "table" => table.to_owned()).increment(0);
        metrics::counter!(crate::metrics::BACKFILL_FAILURES, "table" => table.to_owned())
            .increment(0);
        metrics::gauge!(crate::metrics::BACKFILLS_RUNNING).set(self.backfill.jobs.len() as f64);
        let handle = tokio::spawn(worker.run());
        self.backfill.running.insert(table.to_owned(), handle);
        Ok(())
    }

    fn backfill_low(&mut self, table: String, run: u64, no: u64) -> Result<(), StreamError> {
        let Some(job) = self.backfill.jobs.get(&table).filter(|j| j.run == run) else {
            return Ok(());
        };
        let key_idx = job.key_idx.clone();
        self.backfill.windows.insert(
            table,
            Window {
                run,
                no,
                key_idx,
                changed: HashSet::new(),
                reread: HashSet::new(),
                spoiled: false,
            },
        );
        Ok(())
    }

    /// The high watermark of chunk `no` at `lsn`: everything before it goes out, then the
    /// chunk's rows the window did not change, as one transaction committed at `lsn`.
    async fn backfill_high(
        &mut self,
        table: String,
        run: u64,
        no: u64,
        lsn: u64,
    ) -> Result<(), StreamError> {
        // What was decoded before the watermark is published before the chunk.
        self.flush_rows().await?;
        if let Some((_, rx)) = self.backfill.chunks.as_mut() {
            while let Ok(c) = rx.try_recv() {
                self.backfill
                    .pending
                    .insert((c.table.clone(), c.run, c.no), c);
            }
        }
        let window = self.backfill.windows.remove(&table);
        let Some(chunk) = self.backfill.pending.remove(&(table.clone(), run, no)) else {
            // A watermark of a worker this process does not run (a run before a restart).
            return Ok(());
        };
        let Some(window) = window.filter(|w| w.run == run && w.no == no) else {
            let _ = chunk.done.send(Outcome::Again(None));
            return Ok(());
        };
        let Some(oid) = self
            .plans
            .values()
            .find(|p| p.qualified == table)
            .map(|p| p.oid)
        else {
            let _ = chunk.done.send(Outcome::Stop);
            return self
                .fail_job(&table, "the stream no longer plans the table".into())
                .await;
        };
        let plan = self.current_plan_for_backfill(oid).await?;
        if plan.blocked {
            let _ = chunk.done.send(Outcome::Stop);
            return self
                .fail_job(&table, "the table was blocked meanwhile".into())
                .await;
        }
        // The chunk must have been read as the stream's plan reads the table now: under the
        // same registry version, and the same columns by the same names (a rename — say two
        // columns swapping names — keeps the version but would put one column's values under
        // the other's decision).
        let select = select_of(&plan, chunk.partitioned);
        if plan.registry_version != chunk.registry_version || select != chunk.select {
            self.note_retry(&table);
            let again = (select, plan.registry_version.clone());
            let _ = chunk.done.send(Outcome::Again(Some(again)));
            return Ok(());
        }
        if window.spoiled || (chunk.whole && !window.changed.is_empty()) {
            // Truncated inside the window, or a keyless table changed while it was read (which
            // rows, nobody can say): the chunk may hold rows production no longer has.
            self.note_retry(&table);
            let _ = chunk.done.send(Outcome::Again(None));
            return Ok(());
        }
        let mut again = Vec::new();
        let rows: Vec<Row> = if chunk.whole {
            chunk.rows
        } else {
            // Rows the window changed are dropped (the log has a newer value, and dev got it
            // — as an upsert when whole). Of those, a row the change could not bring to dev
            // alone is read again (a row outside the chunk dev holds already, or is read later).
            chunk
                .rows
                .into_iter()
                .filter(|r| {
                    let key: Row = window.key_idx.iter().map(|&i| r[i].clone()).collect();
                    if window.reread.contains(&key) {
                        again.push(key_text(&key));
                    }
                    !window.changed.contains(&key)
                })
                .collect()
        };
        let out = if plan.columns.is_empty() {
            vec![Vec::new(); rows.len()]
        } else {
            let p = plan.clone();
            let scanned = self
                .transform_and_scan(
                    &rows,
                    |values, store, misses| {
                        Ok(p.transform(values.iter().map(RowValue::from), lsn, store, misses)?)
                    },
                    |_| p.clone(),
                    |r: &Vec<proto::Value>| r.as_slice(),
                )
                .await?;
            match scanned {
                Scanned::Clean(out) => out,
                Scanned::Decided => {
                    // Read the chunk again under the decision (its rows are then scanned whole).
                    self.note_retry(&table);
                    let plan = self.current_plan_for_backfill(oid).await?;
                    let again = (
                        select_of(&plan, chunk.partitioned),
                        plan.registry_version.clone(),
                    );
                    let _ = chunk.done.send(Outcome::Again(Some(again)));
                    return Ok(());
                }
            }
        };
        // Keys moved meanwhile: the row may be one dev lacks, its new key behind the keyset.
        for key in self.backfill.moved.remove(&table).unwrap_or_default() {
            again.push(key_text(&key));
        }
        let n = out.len();
        tracing::debug!(table = %table, chunk = no, published = n, read_again = again.len(), lsn = %fmt_lsn(lsn), "backfill chunk");
        // `lsn` is the END of the watermark's record (pgoutput reports a message by its end
        // LSN), and the next transaction's commit record may start right there: the chunk's
        // transaction takes `lsn - 1` as its commit LSN — after every commit before the
        // watermark, before every commit after it — so the sink's fence never mistakes the next
        // transaction for a replay. Its end LSN (what counts as confirmed) is `lsn`. A chunk
        // with no row still goes out (empty): the broker's acknowledgement of it is what lets
        // the job's position, and so the slot, move on.
        let commit_lsn = lsn.saturating_sub(1);
        self.publish(
            proto::Phase::Stream,
            Event::Begin(proto::Begin {
                commit_lsn,
                commit_time_us: super::hold::now_us(),
                xid: 0,
            }),
            None,
        )
        .await?;
        if chunk.whole {
            self.publish(
                proto::Phase::Stream,
                Event::Truncate(proto::Truncate {
                    tables: vec![plan.qualified.clone()],
                    cascade: false,
                    restart_identity: false,
                }),
                None,
            )
            .await?;
        }
        let op = if chunk.whole {
            proto::Op::Insert
        } else {
            proto::Op::Upsert
        };
        self.publish_rows(
            proto::Phase::Stream,
            &plan,
            op,
            out.into_iter().map(|row| (row, Vec::new(), false)),
        )
        .await?;
        self.publish_commit(proto::Commit {
            commit_lsn,
            end_lsn: lsn,
            commit_time_us: super::hold::now_us(),
            rows: n as u64,
        })
        .await?;
        metrics::counter!(crate::metrics::BACKFILL_ROWS, "table" => plan.qualified.clone())
            .increment(n as u64);
        let acked = self.publisher.acked_lsn();
        let finished = chunk.exhausted && again.is_empty();
        if let Some(job) = self.backfill.jobs.get_mut(&table) {
            let rows = job.rows() + n as u64;
            job.advance(
                Position {
                    high_lsn: lsn,
                    no,
                    next: chunk.next,
                    exhausted: chunk.exhausted,
                    again: again.clone(),
                    rows,
                },
                acked,
            );
            let secs = (super::hold::now_us() - job.started_at_us).max(1) as f64 / 1e6;
            let rate = rows as f64 / secs;
            let left = job.estimate.saturating_sub(rows);
            let eta = if finished || rate <= 0.0 {
                0.0
            } else {
                left as f64 / rate
            };
            metrics::gauge!(crate::metrics::BACKFILL_REMAINING, "table" => table.clone())
                .set(if finished { 0.0 } else { left as f64 });
            metrics::gauge!(crate::metrics::BACKFILL_ETA, "table" => table.clone()).set(eta);
            if chunk.exhausted {
                job.rereading = Some(again.iter().cloned().collect());
            }
            if finished {
                job.finished_lsn = Some(lsn);
                tracing::info!(table = %table, rows, chunks = no, secs = format!("{secs:.1}"),
                               rows_per_sec = rate.round() as u64, lsn = %fmt_lsn(lsn), "backfill complete");
            } else if no.is_multiple_of(10) {
                tracing::info!(table = %table, rows, estimate = job.estimate, chunks = no,
                               rows_per_sec = rate.round() as u64, eta_secs = eta.round() as u64,
                               "backfill in progress");
            }
        }
        if finished {
            self.audit_backfill(&table, "complete".into()).await?;
        }
        self.persist_job(&table).await;
        let _ = chunk.done.send(Outcome::Published(again));
        Ok(())
    }

    fn note_retry(&mut self, table: &str) {
        if let Some(j) = self.backfill.jobs.get_mut(table) {
            j.retries += 1;
        }
    }

    async fn current_plan_for_backfill(&mut self, oid: u32) -> Result<Arc<TablePlan>, StreamError> {
        let plan = self.plans[&oid].clone();
        if plan.registry_version == self.registry.version {
            return Ok(plan);
        }
        self.replan(oid).await
    }
}

/// After the low watermark: waits until every transaction in progress now has ended. One whose
/// commit record precedes the watermark may not be visible yet (its commit is still being
/// flushed, or a synchronous standby has yet to confirm it): its change would be in neither the
/// chunk (read too early) nor the window (decoded before it), and the chunk's older row would
/// overwrite it in dev. Bounded: a transaction still open after 10 s is idle or long-running,
/// not in the middle of its commit.
async fn wait_for_commits_in_flight(client: &tokio_postgres::Client) -> Result<(), StreamError> {
    let xids: Vec<String> = client
        .query_one(
            "SELECT coalesce(array_agg(x::text), '{}') \
             FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) AS x",
            &[],
        )
        .await
        .map_err(pg("list the transactions in progress"))?
        .get(0);
    if xids.is_empty() {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM unnest($1::text[]) AS t \
                 WHERE pg_catalog.pg_xact_status(t::xid8) = 'in progress'",
                &[&xids],
            )
            .await
            .map_err(pg("wait for the transactions in progress"))?
            .get(0);
        if open == 0 || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn query_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[String],
) -> Result<Vec<Row>, StreamError> {
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as _).collect();
    Ok(client
        .query(sql, &refs)
        .await
        .map_err(pg("read a backfill chunk"))?
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i).map(String::into_bytes))
                .collect()
        })
        .collect())
}

/// Reads one table chunk by chunk between watermarks.
struct Worker {
    target: crate::pg::tls::PgTarget,
    table: String,
    run: u64,
    select: String,
    partitioned: bool,
    registry_version: String,
    /// Primary-key column positions; empty: the table is read whole.
    key_idx: Vec<usize>,
    key_types: Vec<String>,
    key_names: Vec<String>,
    /// Where it starts (a resumed job: its kept position).
    start: Position,
    tx: mpsc::Sender<Chunk>,
    ended: mpsc::UnboundedSender<Ended>,
}

impl Worker {
    async fn run(self) {
        let (table, run, ended) = (self.table.clone(), self.run, self.ended.clone());
        let result = self.chunks().await;
        if let Err(e) = &result {
            tracing::debug!(table = %table, error = %e, "backfill worker ended");
        }
        let _ = ended.send(Ended { table, run, result });
    }

    async fn chunks(mut self) -> Result<(), StreamError> {
        let client = crate::pg::tls::connect(&self.target)
            .await
            .map_err(StreamError::Connect)?;
        catalog::prepare_session(&client).await?;
        client
            .batch_execute(&format!(
                "{}; SET application_name = 'veil backfill'; SET synchronous_commit = on",
                crate::pg::value_format_sql()
            ))
            .await
            .map_err(pg("set the value format"))?;
        // A message outside a transaction is written but not flushed, and the walsender sends
        // only flushed WAL: the high watermark would wait for the WAL writer (200 ms by default,
        // per chunk). So the high watermark's statement also takes a transaction id: its commit
        // (synchronous in this session) flushes the WAL up to and past the watermark. An empty
        // transaction, which pgoutput does not send.
        let emit = |prefix: &'static str, no: u64| {
            let content = watermark(&self.table, self.run, no);
            let client = &client;
            let sql = if prefix == HIGH_PREFIX {
                "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2), pg_catalog.txid_current()"
            } else {
                "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)"
            };
            async move {
                client
                    .execute(sql, &[&prefix, &content])
                    .await
                    .map_err(pg("write a backfill watermark"))
            }
        };
        let whole = self.key_idx.is_empty();
        let mut last = self.start.next.take();
        let mut exhausted = self.start.exhausted;
        let mut again = std::mem::take(&mut self.start.again);
        let mut no = self.start.no;
        let mut rounds_after_end = 0u32;
        let mut whole_tries = 0u32;
        let order = self.key_names.join(", ");
        let cast = |first: usize| {
            self.key_types
                .iter()
                .enumerate()
                .map(|(i, t)| format!("${}::text::{t}", first + i))
                .collect::<Vec<_>>()
                .join(", ")
        };
        loop {
            no += 1;
            emit(LOW_PREFIX, no).await?;
            wait_for_commits_in_flight(&client).await?;
            let mut rows: Vec<Row> = Vec::new();
            let mut read = 0usize;
            if whole {
                rows = query_rows(&client, &self.select, &[]).await?;
            } else if !exhausted {
                let (sql, params): (String, Vec<String>) = match &last {
                    None => (
                        format!("{} ORDER BY {order} LIMIT {CHUNK_ROWS}", self.select),
                        Vec::new(),
                    ),
                    Some(k) => (
                        format!(
                            "{} WHERE ({order}) > ({}) ORDER BY {order} LIMIT {CHUNK_ROWS}",
                            self.select,
                            cast(1)
                        ),
                        k.clone(),
                    ),
                };
                rows = query_rows(&client, &sql, &params).await?;
                read = rows.len();
            }
            // Rows a window changed while dev may lack them: read again, by key.
            if !whole {
                for chunk in again.chunks(500) {
                    let width = self.key_types.len();
                    let tuples: Vec<String> = (0..chunk.len())
                        .map(|j| format!("({})", cast(1 + j * width)))
                        .collect();
                    let sql = format!("{} WHERE ({order}) IN ({})", self.select, tuples.join(", "));
                    let params: Vec<String> = chunk.iter().flatten().cloned().collect();
                    rows.extend(query_rows(&client, &sql, &params).await?);
                }
            }
            // Where the job stands once this chunk is published.
            let next = (read > 0)
                .then(|| rows.get(read - 1))
                .flatten()
                .map(|r| key_text(&self.key_idx.iter().map(|&i| r[i].clone()).collect::<Row>()))
                .or_else(|| last.clone());
            let now_exhausted = whole || exhausted || (read as i64) < CHUNK_ROWS;
            let (done, outcome) = oneshot::channel();
            let chunk = Chunk {
                table: self.table.clone(),
                run: self.run,
                no,
                registry_version: self.registry_version.clone(),
                select: self.select.clone(),
                partitioned: self.partitioned,
                whole,
                next: next.clone(),
                exhausted: now_exhausted,
                rows,
                done,
            };
            if self.tx.send(chunk).await.is_err() {
                return Err(StreamError::Protocol(
                    "the stream stopped during a backfill".into(),
                ));
            }
            emit(HIGH_PREFIX, no).await?;
            // No time limit: while the stream is held it publishes nothing, and the chunk
            // waits here; when the stream stops, the chunk is dropped and this ends.
            match outcome.await {
                Ok(Outcome::Published(redo)) => {
                    again = redo;
                    last = next;
                    exhausted = now_exhausted;
                    if exhausted {
                        if again.is_empty() {
                            return Ok(());
                        }
                        rounds_after_end += 1;
                        if rounds_after_end > 100 {
                            return Err(StreamError::Protocol(format!(
                                "{} rows kept changing during 100 windows",
                                again.len()
                            )));
                        }
                    }
                }
                Ok(Outcome::Again(plan)) => {
                    if let Some((select, version)) = plan {
                        self.select = select;
                        self.registry_version = version;
                    } else if whole {
                        whole_tries += 1;
                        if whole_tries >= WHOLE_TABLE_TRIES {
                            return Err(StreamError::Protocol(format!(
                                "the table (no primary key) changed during each of {WHOLE_TABLE_TRIES} \
                                 reads; give it a primary key, or backfill it when it is quieter"
                            )));
                        }
                        // Production writes it: wait a little longer each time.
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(whole_tries)))
                            .await;
                    }
                }
                Ok(Outcome::Stop) => return Ok(()),
                Err(_) => {
                    return Err(StreamError::Protocol(
                        "the stream dropped a backfill chunk".into(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_name_table_run_and_chunk() {
        let w = watermark("public.odd\tname", 0xabc, 7);
        assert_eq!(
            parse_watermark(&w),
            Some(("public.odd\tname".into(), 0xabc, 7))
        );
        assert_eq!(parse_watermark("public.t\t3"), None);
    }
}
