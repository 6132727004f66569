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
//! A chunk read under another registry version than the stream's, or one a scanner hit held,
//! is read again. Tables without a primary key are refused (for now), and so is a table the
//! registry blocks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::error::StreamError;
use super::pipeline::Streamer;
use super::watermark::{Chunk, Outcome, Row, Window};
use crate::deid::gate::{RowValue, TablePlan};
use crate::pg::catalog;
use crate::proto::{self, envelope::Event};

pub const REQUEST_PREFIX: &str = "veil.backfill.request";
pub const LOW_PREFIX: &str = "veil.backfill.low";
pub const HIGH_PREFIX: &str = "veil.backfill.high";
/// Rows per chunk.
const CHUNK_ROWS: i64 = 2000;
/// How long a worker waits for the stream to publish a chunk before it gives up.
const CHUNK_WAIT: Duration = Duration::from_secs(300);

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
    let lsn: String = client
        .query_one(
            "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)::text",
            &[&REQUEST_PREFIX, &table],
        )
        .await
        .map_err(pg("write the backfill request"))?
        .get(0);
    println!(
        "backfill of {table} requested at LSN {lsn}; the stream reads it chunk by chunk \
         (progress in its log and veil_backfill_rows_total)"
    );
    Ok(())
}

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StreamError {
    move |e| StreamError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// `SELECT <every column as text, NULL where not read> FROM ONLY <table> AS src`: ordering and
/// the keyset compare the table's columns (`src.<key>`), not the text output columns of the
/// same names.
fn select_of(plan: &TablePlan) -> String {
    super::snapshot::plan_select(plan, false, true, " AS src")
}

/// A key as the text the keyset query binds.
fn key_text(key: &[Option<Vec<u8>>]) -> Vec<String> {
    key.iter()
        .map(|v| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
        .collect()
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
            REQUEST_PREFIX => self.backfill_request(text.trim()).await,
            LOW_PREFIX | HIGH_PREFIX => {
                let Some((table, no)) = text
                    .split_once('\t')
                    .and_then(|(t, n)| Some((t.to_owned(), n.parse::<u64>().ok()?)))
                else {
                    tracing::warn!(
                        prefix,
                        "backfill watermark without table and chunk: ignored"
                    );
                    return Ok(());
                };
                if prefix == LOW_PREFIX {
                    self.backfill_low(table, no)
                } else {
                    self.backfill_high(table, no, lsn).await
                }
            }
            _ => Ok(()),
        }
    }

    /// Writes a backfill request for `table` into the WAL (after a decision opened or changed
    /// it): met in order, after what the decision released. A failure is logged, never fatal.
    pub(super) async fn request_backfill(&mut self, table: &str) {
        match self
            .catalog
            .execute(
                "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)",
                &[&REQUEST_PREFIX, &table],
            )
            .await
        {
            Ok(_) => tracing::info!(table, "backfill requested after a decision"),
            Err(e) => {
                tracing::warn!(table, error = %crate::pg::errors::PgError::new("request a backfill", &e),
                                     "backfill not requested; run `veil backfill` for this table")
            }
        }
    }

    /// Starts a worker for `table`, planned as it is now.
    async fn backfill_request(&mut self, table: &str) -> Result<(), StreamError> {
        if let Some(h) = self.backfill.running.get(table)
            && !h.is_finished()
        {
            tracing::info!(table, "backfill already running; request ignored");
            return Ok(());
        }
        let Some(target) = self.backfill.target.clone() else {
            return Ok(());
        };
        let oid: Option<u32> = self
            .catalog
            .query_opt("SELECT to_regclass($1)::oid", &[&table])
            .await
            .map_err(pg("look up the table to backfill"))?
            .and_then(|r| r.get::<_, Option<u32>>(0));
        let Some(oid) = oid else {
            tracing::warn!(
                table,
                "backfill requested for a table production does not have: ignored"
            );
            return Ok(());
        };
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
            return Ok(());
        }
        if plan.blocked {
            tracing::warn!(table, "backfill of a blocked table: ignored");
            return Ok(());
        }
        if info.primary_key.is_empty() {
            tracing::warn!(
                table,
                "backfill needs a primary key; this table has none: ignored"
            );
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
            select: select_of(&plan),
            registry_version: plan.registry_version.clone(),
            key_idx,
            key_types,
            key_names,
            tx,
        };
        tracing::info!(table, registry = %plan.registry_version, "backfill starts");
        metrics::counter!(crate::metrics::BACKFILL_ROWS, "table" => table.to_owned()).increment(0);
        self.backfill
            .keys
            .insert(table.to_owned(), worker.key_idx.clone());
        self.backfill.moved.remove(table);
        let handle = tokio::spawn(worker.run());
        self.backfill.running.insert(table.to_owned(), handle);
        Ok(())
    }

    fn backfill_low(&mut self, table: String, no: u64) -> Result<(), StreamError> {
        let Some(oid) = self
            .plans
            .values()
            .find(|p| p.qualified == table)
            .map(|p| p.oid)
        else {
            return Ok(());
        };
        let Some((info, _)) = self.described.get(&oid) else {
            return Ok(());
        };
        let plan = &self.plans[&oid];
        let key_idx = info
            .primary_key
            .iter()
            .filter_map(|k| plan.columns.iter().position(|c| &c.name == k))
            .collect();
        self.backfill.windows.insert(
            table,
            Window {
                no,
                key_idx,
                changed: HashSet::new(),
            },
        );
        Ok(())
    }

    /// The high watermark of chunk `no` at `lsn`: everything before it goes out, then the
    /// chunk's rows the window did not change, as one transaction committed at `lsn`.
    async fn backfill_high(&mut self, table: String, no: u64, lsn: u64) -> Result<(), StreamError> {
        // What was decoded before the watermark is published before the chunk.
        self.flush_rows().await?;
        if let Some((_, rx)) = self.backfill.chunks.as_mut() {
            while let Ok(c) = rx.try_recv() {
                self.backfill.pending.insert((c.table.clone(), c.no), c);
            }
        }
        let window = self.backfill.windows.remove(&table);
        let Some(chunk) = self.backfill.pending.remove(&(table.clone(), no)) else {
            // A watermark of a worker this process does not run (a run before a restart).
            return Ok(());
        };
        let Some(window) = window.filter(|w| w.no == no) else {
            let _ = chunk.done.send(Outcome::Again(None));
            return Ok(());
        };
        let Some(oid) = self
            .plans
            .values()
            .find(|p| p.qualified == table)
            .map(|p| p.oid)
        else {
            return Ok(());
        };
        let plan = self.current_plan_for_backfill(oid).await?;
        if plan.blocked {
            tracing::warn!(table = %table, "backfill: the table was blocked meanwhile; stopped");
            return Ok(());
        }
        if plan.registry_version != chunk.registry_version {
            let again = (select_of(&plan), plan.registry_version.clone());
            let _ = chunk.done.send(Outcome::Again(Some(again)));
            return Ok(());
        }
        let mut again = Vec::new();
        let rows: Vec<Row> = chunk
            .rows
            .into_iter()
            .filter(|r| {
                let key: Row = window.key_idx.iter().map(|&i| r[i].clone()).collect();
                if window.changed.contains(&key) {
                    again.push(key_text(&key));
                    false
                } else {
                    true
                }
            })
            .collect();
        let out = if plan.columns.is_empty() {
            vec![Vec::new(); rows.len()]
        } else {
            let p = plan.clone();
            self.transform_batch(&rows, |values, store, misses| {
                Ok(p.transform(values.iter().map(RowValue::from), lsn, store, misses)?)
            })
            .await?
        };
        let hits = self.scan_rows(out.iter().map(|r| (&*plan, r.as_slice())));
        if !hits.is_empty() {
            self.hold_for_scan(&hits).await?;
            let plan = self.current_plan_for_backfill(oid).await?;
            let again = (select_of(&plan), plan.registry_version.clone());
            let _ = chunk.done.send(Outcome::Again(Some(again)));
            return Ok(());
        }
        // Keys moved meanwhile: the row may be one dev lacks, its new key behind the keyset.
        for key in self.backfill.moved.remove(&table).unwrap_or_default() {
            again.push(key_text(&key));
        }
        let n = out.len();
        tracing::debug!(table = %table, chunk = no, published = n, read_again = again.len(), lsn = %crate::pg::lsn::fmt_lsn(lsn), "backfill chunk");
        if n == 0 {
            let _ = chunk.done.send(Outcome::Published(0, again));
            return Ok(());
        }
        // `lsn` is the END of the watermark's record (pgoutput reports a message by its end
        // LSN), and the next transaction's commit record may start right there: the chunk's
        // transaction takes `lsn - 1` as its commit LSN — after every commit before the
        // watermark, before every commit after it — so the sink's fence never mistakes the next
        // transaction for a replay. Its end LSN (what counts as confirmed) is `lsn`.
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
        for row in out {
            self.publish(
                proto::Phase::Stream,
                Event::Row(proto::RowChange {
                    table: plan.qualified.clone(),
                    op: proto::Op::Upsert as i32,
                    new_values: row,
                    old_values: Vec::new(),
                    old_is_full: false,
                }),
                None,
            )
            .await?;
        }
        self.count_rows(&plan.qualified, "UPSERT", n as u64);
        self.publish_commit(proto::Commit {
            commit_lsn,
            end_lsn: lsn,
            commit_time_us: super::hold::now_us(),
            rows: n as u64,
        })
        .await?;
        metrics::counter!(crate::metrics::BACKFILL_ROWS, "table" => plan.qualified.clone())
            .increment(n as u64);
        let _ = chunk.done.send(Outcome::Published(n, again));
        Ok(())
    }

    async fn current_plan_for_backfill(&mut self, oid: u32) -> Result<Arc<TablePlan>, StreamError> {
        let plan = self.plans[&oid].clone();
        if plan.registry_version == self.registry.version {
            return Ok(plan);
        }
        self.replan(oid).await
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
    select: String,
    registry_version: String,
    key_idx: Vec<usize>,
    key_types: Vec<String>,
    key_names: Vec<String>,
    tx: mpsc::Sender<Chunk>,
}

impl Worker {
    async fn run(self) {
        let table = self.table.clone();
        let started = std::time::Instant::now();
        match self.chunks().await {
            Ok(rows) => {
                tracing::info!(table = %table, rows, secs = started.elapsed().as_secs_f64(), "backfill complete")
            }
            Err(e) => tracing::warn!(table = %table, error = %e, "backfill stopped"),
        }
    }

    async fn chunks(mut self) -> Result<u64, StreamError> {
        let client = crate::pg::tls::connect(&self.target)
            .await
            .map_err(StreamError::Connect)?;
        catalog::prepare_session(&client).await?;
        client
            .batch_execute(&crate::pg::value_format_sql())
            .await
            .map_err(pg("set the value format"))?;
        let emit = |prefix: &'static str, no: u64| {
            let content = format!("{}\t{no}", self.table);
            let client = &client;
            async move {
                client
                    .execute(
                        "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)",
                        &[&prefix, &content],
                    )
                    .await
                    .map_err(pg("write a backfill watermark"))
            }
        };
        let mut last: Option<Vec<String>> = None;
        let mut exhausted = false;
        let mut again: Vec<Vec<String>> = Vec::new();
        let mut rounds_after_end = 0u32;
        let mut total = 0u64;
        let mut no = 0u64;
        let started = std::time::Instant::now();
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
            let mut rows: Vec<Row> = Vec::new();
            let mut read = 0usize;
            if !exhausted {
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
            for chunk in again.chunks(500) {
                let width = self.key_types.len();
                let tuples: Vec<String> = (0..chunk.len())
                    .map(|j| format!("({})", cast(1 + j * width)))
                    .collect();
                let sql = format!("{} WHERE ({order}) IN ({})", self.select, tuples.join(", "));
                let params: Vec<String> = chunk.iter().flatten().cloned().collect();
                rows.extend(query_rows(&client, &sql, &params).await?);
            }
            let next: Option<Vec<String>> = (read > 0)
                .then(|| rows.get(read - 1))
                .flatten()
                .map(|r| key_text(&self.key_idx.iter().map(|&i| r[i].clone()).collect::<Row>()));
            let (done, outcome) = oneshot::channel();
            let chunk = Chunk {
                table: self.table.clone(),
                no,
                registry_version: self.registry_version.clone(),
                rows,
                done,
            };
            if self.tx.send(chunk).await.is_err() {
                return Err(StreamError::Protocol(
                    "the stream stopped during a backfill".into(),
                ));
            }
            emit(HIGH_PREFIX, no).await?;
            match tokio::time::timeout(CHUNK_WAIT, outcome).await {
                Ok(Ok(Outcome::Published(n, redo))) => {
                    total += n as u64;
                    if no.is_multiple_of(10) {
                        let rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        tracing::info!(table = %self.table, rows = total, chunks = no,
                                       rows_per_sec = rate.round() as u64, "backfill in progress");
                    }
                    again = redo;
                    if !exhausted {
                        exhausted = (read as i64) < CHUNK_ROWS;
                        if next.is_some() {
                            last = next;
                        }
                    }
                    if exhausted {
                        if again.is_empty() {
                            return Ok(total);
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
                Ok(Ok(Outcome::Again(again))) => {
                    if let Some((select, version)) = again {
                        self.select = select;
                        self.registry_version = version;
                    }
                }
                Ok(Err(_)) => {
                    return Err(StreamError::Protocol(
                        "the stream dropped a backfill chunk".into(),
                    ));
                }
                Err(_) => {
                    return Err(StreamError::Protocol(format!(
                        "chunk {no} was not published within {} s",
                        CHUNK_WAIT.as_secs()
                    )));
                }
            }
        }
    }
}
