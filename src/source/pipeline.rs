//! The stream pipeline shared by the snapshot and the replication loop: plans (the gate) per
//! table, holds when the registry has no decision, transforms rows in batches against the vault,
//! scans a sample, and publishes envelopes to the [`EventSink`] in order.
//!
//! A hold waits through the [`KeepAlive`] capability the pipeline owns — it never reaches back
//! into the replication loop — and publishes nothing past the hold point.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

use super::error::StreamError;
use super::events::EventSink;
use super::hold::{HOLD_POLL, KeepAlive, now_us};
use super::pgoutput::{self, LogicalMessage, OldTuple, Relation};
use super::window::{self, WindowAcc};
use crate::audit::AuditLog;
use crate::config::ConfigError;
use crate::deid::gate::{self, GateError, TablePlan};
use crate::deid::registry::Registry;
use crate::deid::tokenize::{MasterKey, TokenStore, VaultRequest};
use crate::deid::vault::TokenVault;
use crate::pg::catalog;
use crate::pg::lsn::{PG_EPOCH_OFFSET_US, fmt_lsn};
use crate::proto::{self, envelope::Event};

/// Rows transformed (and their vault misses allocated) together.
pub const ROW_BATCH: usize = 4000;

/// The stream's stages, as [`crate::metrics::StageClock`] indexes.
pub const STAGES: &[&str] = &["decode", "transform", "vault", "publish"];
pub const DECODE: usize = 0;
pub const TRANSFORM: usize = 1;
pub const VAULT: usize = 2;
pub const PUBLISH: usize = 3;

/// Prefix of logical messages veil writes itself; every other message is dropped.
pub const HEARTBEAT_PREFIX: &str = "veil_heartbeat";
/// Prefix of the messages `veil setup`'s DDL event trigger writes (`{"tag", "object"}`).
pub const DDL_PREFIX: &str = "veil_ddl";

/// State of the stream shared by the snapshot and the replication loop.
pub struct Streamer {
    pub database: String,
    pub source_id: String,
    pub publication: String,
    pub slot_name: String,
    pub registry: Registry,
    pub master: MasterKey,
    pub(super) key_id: String,
    pub epoch: u64,
    pub(super) last_commit_lsn: u64,
    pub publisher: Box<dyn EventSink>,
    pub(super) catalog: tokio_postgres::Client,
    pub(super) plans: HashMap<u32, Arc<TablePlan>>,
    pub(super) published_schemas: HashMap<String, proto::TableSchema>,
    pub(super) txn: Option<TxnState>,
    pub(super) run_id: u64,
    pub(super) seq: u64,
    pub vault: Arc<dyn TokenVault>,
    /// Begins, row changes and commits decoded but not yet published, across transactions:
    /// their rows are transformed together (one vault round trip for the batch).
    pub(super) queue: Vec<Queued>,
    /// Row changes in `queue`.
    pub(super) queued_rows: usize,
    /// When the first and the last item of `queue` were queued.
    pub(super) queued_at: Option<(std::time::Instant, std::time::Instant)>,
    /// The commit LSN of the transaction being published from the queue (named by errors).
    pub(super) publishing_lsn: Option<u64>,
    pub registry_dir: std::path::PathBuf,
    pub(super) scanner: Arc<crate::deid::scanner::Scanner>,
    /// The scanner's sample and its holds (sticky until the column's decision changes).
    pub(super) scan: super::scan_hold::ScanHolds,
    /// The configured slot name (every epoch's slot starts with it): scanner holds are kept
    /// under it, so they outlive an epoch.
    pub(super) slot_prefix: String,
    /// Scanner holds made and not yet kept in `_veil.scan_holds`.
    pub(super) pending_holds: Vec<(String, String, String)>,
    /// Snapshot until the snapshot's end is published (a restart reads the phase of the topic's
    /// last event to know whether the snapshot finished).
    pub phase: proto::Phase,
    pub audit: Box<dyn AuditLog>,
    pub(super) window: WindowAcc,
    pub(super) window_secs: u64,
    pub(super) window_count: u64,
    /// What each planned table was planned from, to plan it again when the registry changes.
    pub(super) described: HashMap<u32, (catalog::TableInfo, Vec<String>)>,
    /// Partitions whose changes pgoutput sent under their own oid although the publication
    /// publishes via the root: partition oid → root oid (they take the root's plan).
    pub(super) partition_roots: HashMap<u32, u32>,
    /// Keeps the source from dropping a held stream (see `hold`).
    pub keepalive: Box<dyn KeepAlive>,
    /// How long a hold keeps the replication connection before releasing it.
    pub hold_release: std::time::Duration,
    /// Why this run started a new epoch (empty when it resumed one).
    pub new_epoch_reason: String,
    /// Shutdown requested (a hold returns `StoppedWhileHeld`).
    pub shutdown: watch::Receiver<bool>,
    /// WAL position of the message being decoded (`None` during the snapshot): where a table
    /// planned again under a new registry is bound to the shape log.
    pub(super) position: Option<u64>,
    /// The run lock's connection (`epoch::take_run_lock`): when it closes, nothing more is
    /// published.
    pub run_lock: Option<tokio_postgres::Client>,
    /// Busy time per stage ([`STAGES`]).
    pub clock: crate::metrics::StageClock,
    /// Online backfills (`source::backfill`).
    pub backfill: super::watermark::Backfills,
}

/// A published row change's values: new, old, whether the old row is whole.
pub(super) type PublishedRow = (Vec<proto::Value>, Vec<proto::Value>, bool);

/// What [`Streamer::transform_and_scan`] came to.
pub(super) enum Scanned<R> {
    /// Nothing found: these may be published.
    Clean(Vec<R>),
    /// The scanner held and the hit columns have new decisions: plan again, transform again.
    Decided,
}

/// What waits in the queue, in WAL order.
pub(super) enum Queued {
    Begin(proto::Begin),
    Row(QueuedRow),
    Commit(proto::Commit),
}

/// Items queued before the queue is published whatever else (transactions without rows).
pub const MAX_QUEUED: usize = 4 * ROW_BATCH;
/// The queue is published when nothing more was decoded for this long…
pub const QUEUE_IDLE: std::time::Duration = std::time::Duration::from_millis(2);
/// …and at the latest this long after its first item was queued.
pub const QUEUE_MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// A row change waiting for its batch to be transformed.
pub(super) struct QueuedRow {
    plan: Arc<TablePlan>,
    op: proto::Op,
    new: Option<pgoutput::TupleData>,
    old: Option<OldTuple>,
    lsn: u64,
}

pub(super) struct TxnState {
    pub(super) rows: u64,
    /// The commit LSN of the transaction being published (named by errors).
    pub(super) commit_lsn: u64,
}

impl Streamer {
    fn envelope(&mut self, phase: proto::Phase, event: Event) -> proto::Envelope {
        self.seq += 1;
        proto::Envelope {
            run_id: self.run_id,
            seq: self.seq,
            epoch: self.epoch,
            source_id: self.source_id.clone(),
            last_commit_lsn: self.last_commit_lsn,
            registry_version: self.registry.version.clone(),
            key_id: self.key_id.clone(),
            phase: phase as i32,
            event: Some(event),
        }
    }

    pub async fn publish(
        &mut self,
        phase: proto::Phase,
        event: Event,
        done_lsn: Option<u64>,
    ) -> Result<(), StreamError> {
        self.check_run_lock()?;
        let env = self.envelope(phase, event);
        let t = std::time::Instant::now();
        let sent = self.publisher.send(&env, done_lsn).await;
        self.clock.add(PUBLISH, t);
        if let Err(source) = sent {
            let lsn = self
                .publishing_lsn
                .or(self.txn.as_ref().map(|t| t.commit_lsn))
                .unwrap_or(env.last_commit_lsn);
            return Err(StreamError::PublishEvent {
                what: event_subject(&env),
                lsn: fmt_lsn(lsn),
                source,
            });
        }
        Ok(())
    }

    /// Another stream may take over once the run lock's connection closed: stop.
    fn check_run_lock(&self) -> Result<(), StreamError> {
        if self.run_lock.as_ref().is_some_and(|l| l.is_closed()) {
            return Err(StreamError::RunLockLost);
        }
        Ok(())
    }

    /// Writes one audit record (when auditing is configured).
    pub async fn audit(&mut self, body: proto::audit_record::Body) -> Result<(), StreamError> {
        self.audit.record(body).await?;
        Ok(())
    }

    /// The run's start: versions, key id and every column's rule under the registry.
    pub async fn audit_run_start(&mut self, config_hash: &str) -> Result<(), StreamError> {
        let body = proto::audit_record::Body::RunStart(proto::RunStart {
            run_id: self.run_id,
            source_id: self.source_id.clone(),
            epoch: self.epoch,
            config_hash: config_hash.to_owned(),
            registry_version: self.registry.version.clone(),
            key_id: self.key_id.clone(),
            rules: window::column_rules(&self.registry),
            new_epoch_reason: self.new_epoch_reason.clone(),
        });
        self.audit(body).await
    }

    /// Closes the current window: what was published, under which rules, and the scan.
    pub async fn close_window(&mut self) -> Result<(), StreamError> {
        let w = std::mem::replace(&mut self.window, WindowAcc::starting(now_us()));
        if w.is_empty() {
            self.window.start_us = w.start_us;
            return Ok(());
        }
        self.window_count += 1;
        let record = w.into_record(
            format!("{:x}-{}", self.run_id, self.window_count),
            self.run_id,
            self.epoch,
            now_us(),
            &self.registry.version,
            self.plans.values().map(|p| &**p),
        );
        self.audit(proto::audit_record::Body::Window(record)).await
    }

    /// Audit records for every column whose registry entry changed (who decided, when, why).
    /// Tables a decision opened or changed (not a block) are backfilled: their existing rows
    /// reach dev under the new decisions (`source::backfill`).
    async fn audit_decisions(&mut self, before: &Registry) -> Result<(), StreamError> {
        let mut refill: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for b in window::decisions(before, &self.registry) {
            if b.class != "blocked" {
                refill.entry(b.table.clone()).or_default().push(format!(
                    "{} {} by {}",
                    if b.column.is_empty() { "*" } else { &b.column },
                    if b.rule.is_empty() { &b.class } else { &b.rule },
                    b.reviewer
                ));
            }
            self.audit(proto::audit_record::Body::Decision(b)).await?;
        }
        if self.phase == proto::Phase::Stream && self.backfill.on_decision {
            for (table, what) in refill {
                if self.registry.table(&table).is_some_and(|e| !e.blocked) {
                    let reason = format!(
                        "decision in registry {}: {}",
                        self.registry.version,
                        what.join(", ")
                    );
                    let _ = self.request_backfill(&table, &reason).await;
                }
            }
        }
        Ok(())
    }

    /// Plans a table; when the gate says the registry has no decision for it (a new table or
    /// column, a changed type, a rule that does not fit), **holds**: publishes what came before,
    /// then waits — keeping the replication connection alive with status updates that never
    /// confirm past the hold point, so the slot keeps the WAL — until a registry change makes the
    /// plan succeed. A restart while held meets the same Relation again and holds again.
    pub async fn plan_or_hold(
        &mut self,
        info: &catalog::TableInfo,
        keys: &[String],
    ) -> Result<TablePlan, StreamError> {
        match self.try_plan(info, keys) {
            Ok(plan) => {
                self.check_vault(&plan)?;
                Ok(plan)
            }
            Err(problem) => {
                // Everything before the hold point goes out; nothing after it.
                self.flush_rows().await?;
                self.hold_until_planned(info, keys, problem).await
            }
        }
    }

    /// Plans a table with nothing queued (the caller flushed), holding if it does not plan.
    async fn plan_now(
        &mut self,
        info: &catalog::TableInfo,
        keys: &[String],
    ) -> Result<TablePlan, StreamError> {
        match self.try_plan(info, keys) {
            Ok(plan) => {
                self.check_vault(&plan)?;
                Ok(plan)
            }
            Err(problem) => self.hold_until_planned(info, keys, problem).await,
        }
    }

    fn try_plan(
        &self,
        info: &catalog::TableInfo,
        keys: &[String],
    ) -> Result<TablePlan, Box<GateError>> {
        Ok(gate::plan_table(
            &self.database,
            info,
            keys,
            &self.registry,
            &self.master,
            &self.scanner,
        )?)
    }

    /// The hold itself: recorded (log, metrics, audit), then waits for registry changes until
    /// the table plans. Never publishes: the caller published everything before the hold point.
    async fn hold_until_planned(
        &mut self,
        info: &catalog::TableInfo,
        keys: &[String],
        problem: Box<GateError>,
    ) -> Result<TablePlan, StreamError> {
        let (table, column, type_name) = problem.subject();
        tracing::warn!(
            table = %table,
            column = %column,
            type_name = %type_name,
            reason = %problem,
            registry_version = %self.registry.version,
            "stream HELD: no registry decision; nothing after this point is published \
             until a reviewer decides (veil registry pending / approve / block)"
        );
        metrics::counter!(crate::metrics::HOLDS, "table" => table.clone()).increment(1);
        metrics::gauge!(crate::metrics::HELD_ITEMS).set(1.0);
        let body = proto::audit_record::Body::Hold(proto::Hold {
            table: table.clone(),
            column: column.clone(),
            type_name: type_name.clone(),
            reason: problem.to_string(),
            registry_version: self.registry.version.clone(),
            cause: "schema".into(),
        });
        self.audit(body).await?;
        self.note_hold(Some((&table, &column, &type_name, &problem.to_string())))
            .await;
        let since = std::time::Instant::now();
        loop {
            self.wait_for_registry_change(Some(since)).await?;
            if let Ok(plan) = self.try_plan(info, keys) {
                self.check_vault(&plan)?;
                self.note_hold(None).await;
                tracing::warn!(
                    table = %plan.qualified,
                    registry_version = %self.registry.version,
                    held_secs = since.elapsed().as_secs(),
                    "hold released: the registry now has a decision; resuming"
                );
                metrics::gauge!(crate::metrics::HELD_ITEMS).set(0.0);
                metrics::gauge!(crate::metrics::HELD_SECONDS).set(0.0);
                self.resume_check()?;
                return Ok(plan);
            }
        }
    }

    /// After a hold: a released replication connection means nothing more is read here; the
    /// stream reads again from its confirmed LSN (the sink discards the half transaction).
    fn resume_check(&self) -> Result<(), StreamError> {
        if self.keepalive.released() {
            Err(StreamError::ResumeAfterRelease)
        } else {
            Ok(())
        }
    }

    /// Records (or clears) what the stream is held on in `_veil.held`, where `veil registry
    /// pending` finds a hold on a table production no longer has. Best effort: a setup older than
    /// the table, or a role that may not write it, only loses that listing.
    pub(super) async fn note_hold(&self, item: Option<(&str, &str, &str, &str)>) {
        let result = match item {
            Some((table, column, type_name, reason)) => {
                self.catalog
                    .execute(
                        "INSERT INTO _veil.held (slot, tbl, col, type_name, reason) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (slot) DO UPDATE SET tbl = $2, col = $3, type_name = $4, reason = $5, since = now()",
                        &[&self.slot_name, &table, &column, &type_name, &reason],
                    )
                    .await
            }
            None => {
                self.catalog
                    .execute("DELETE FROM _veil.held WHERE slot = $1", &[&self.slot_name])
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %crate::pg::errors::PgError::new("record the hold", &e), "hold not recorded in _veil.held");
        }
    }

    /// Waits (held) until the registry's files change, keeping the replication connection alive
    /// with status updates that confirm only what Kafka acknowledged.
    async fn wait_for_registry_change(
        &mut self,
        since: Option<std::time::Instant>,
    ) -> Result<(), StreamError> {
        // Everything published before the hold reaches the sink while it lasts.
        self.publisher.flush().await?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HOLD_POLL) => {}
                _ = self.shutdown.changed() => {}
            }
            if *self.shutdown.borrow() {
                return Err(StreamError::StoppedWhileHeld);
            }
            self.check_run_lock()?;
            let acked = self.publisher.acked_lsn();
            if let Some(t) = since {
                metrics::gauge!(crate::metrics::HELD_SECONDS).set(t.elapsed().as_secs_f64());
                if t.elapsed() >= self.hold_release && !self.keepalive.released() {
                    self.keepalive.release().await;
                    if self.keepalive.released() {
                        tracing::warn!(
                            held_secs = t.elapsed().as_secs(),
                            confirmed = %crate::pg::lsn::fmt_lsn(acked),
                            "still held: released the replication connection (the slot stays and \
                             keeps the WAL from the confirmed LSN); reading again from there once \
                             a reviewer decides"
                        );
                    }
                }
            }
            self.keepalive.keep_alive(self.confirmable(acked)).await?;
            self.observe_slot().await;
            match Registry::load(&self.registry_dir) {
                Ok(r) if r.version != self.registry.version => {
                    tracing::info!(from = %self.registry.version, to = %r.version, "registry changed");
                    let before = std::mem::replace(&mut self.registry, r);
                    self.audit_decisions(&before).await?;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "registry does not load; staying held");
                }
            }
        }
    }

    /// Scans the sampled rows of a batch about to be published (every row of a table that is
    /// held or whose held batch resumes: `scan_hold`) with the high-precision detectors. Returns
    /// (table, column, detector, count) of every hit; the hit columns are held from here on.
    pub fn scan_rows<'p>(
        &mut self,
        rows: impl Iterator<Item = (&'p TablePlan, &'p [proto::Value])>,
    ) -> Vec<(String, String, &'static str, usize)> {
        if self.scan.off() {
            return Vec::new();
        }
        let mut hits: std::collections::BTreeMap<(String, String, &'static str), usize> =
            std::collections::BTreeMap::new();
        let mut tables = std::collections::BTreeSet::new();
        for (plan, row) in rows {
            if !tables.contains(&plan.qualified) {
                tables.insert(plan.qualified.clone());
            }
            if !self
                .scan
                .sampled_iter(&plan.qualified, plan.scanned_iter(row))
            {
                continue;
            }
            self.window.scanned += 1;
            for (column, value) in plan.scanned_iter(row) {
                for d in self.scanner.strong_hits(value) {
                    *hits
                        .entry((plan.qualified.clone(), column.to_owned(), d.name()))
                        .or_default() += 1;
                }
            }
        }
        let pairs: Vec<(String, String)> = hits
            .keys()
            .map(|(t, c, _)| (t.clone(), c.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.pending_holds
            .extend(self.scan.scanned(tables, &pairs, &self.registry));
        hits.into_iter()
            .map(|((t, c, d), n)| (t, c, d, n))
            .collect()
    }

    /// A scanner hit in a column classified safe: nothing of the batch is published; the stream
    /// holds until **that column** has a new decision (reclassified, blocked, or `scan = false`
    /// for a reviewed false positive) — another registry change does not end it, and a restart
    /// stays held (the hold is kept in `_veil.scan_holds`). The caller transforms its batch again
    /// under the new plan; its tables are then scanned whole.
    pub async fn hold_for_scan(
        &mut self,
        hits: &[(String, String, &'static str, usize)],
    ) -> Result<(), StreamError> {
        for (table, column, detector, count) in hits {
            tracing::warn!(
                table = %table,
                column = %column,
                detector = %detector,
                count = *count,
                registry_version = %self.registry.version,
                "stream HELD: the scanner found {detector}-shaped values in a column classified safe; \
                 the batch is not published until the column is reclassified (or marked scan = false)"
            );
            metrics::counter!(crate::metrics::SCANNER_HITS, "table" => table.clone(), "column" => column.clone(), "detector" => *detector)
                .increment(*count as u64);
        }
        metrics::gauge!(crate::metrics::HELD_ITEMS).set(hits.len() as f64);
        for (table, column, detector, count) in hits {
            let body = proto::audit_record::Body::Hold(proto::Hold {
                table: table.clone(),
                column: column.clone(),
                type_name: String::new(),
                reason: format!("{count} {detector}-shaped values in a column classified safe"),
                registry_version: self.registry.version.clone(),
                cause: "scanner".into(),
            });
            self.audit(body).await?;
            *self
                .window
                .hits
                .entry((table.clone(), column.clone(), *detector))
                .or_default() += *count as u64;
        }
        self.keep_scan_holds().await?;
        let pairs: Vec<(String, String)> = hits
            .iter()
            .map(|(t, c, _, _)| (t.clone(), c.clone()))
            .collect();
        let since = std::time::Instant::now();
        loop {
            self.wait_for_registry_change(Some(since)).await?;
            self.release_scan_holds().await?;
            if !self.scan.any_held(&pairs) {
                break;
            }
            let still: Vec<String> = pairs
                .iter()
                .filter(|p| self.scan.any_held(std::slice::from_ref(p)))
                .map(|(t, c)| format!("{t}.{c}"))
                .collect();
            tracing::warn!(
                held = %still.join(", "),
                registry_version = %self.registry.version,
                "the registry changed but the held column has no new decision; staying held"
            );
        }
        metrics::gauge!(crate::metrics::HELD_ITEMS).set(0.0);
        metrics::gauge!(crate::metrics::HELD_SECONDS).set(0.0);
        self.resume_check()
    }

    /// Keeps the scanner holds made since the last call with the stream's state
    /// (`_veil.scan_holds`), so a restart while held stays held.
    async fn keep_scan_holds(&mut self) -> Result<(), StreamError> {
        for (table, column, fp) in std::mem::take(&mut self.pending_holds) {
            if let Err(e) = self
                .catalog
                .execute(
                    "INSERT INTO _veil.scan_holds (slot, tbl, col, decision) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (slot, tbl, col) DO NOTHING",
                    &[&self.slot_prefix, &table, &column, &fp],
                )
                .await
            {
                // Without it a restart would scan by the sample again: refuse to go on.
                return Err(StreamError::Postgres(crate::pg::errors::PgError::new(
                    "keep the scanner hold in _veil.scan_holds (run veil setup)",
                    &e,
                )));
            }
        }
        Ok(())
    }

    /// Ends the scanner holds whose column has a new decision in the loaded registry (and
    /// forgets them in `_veil.scan_holds`).
    pub(super) async fn release_scan_holds(&mut self) -> Result<(), StreamError> {
        for (table, column) in self.scan.release_decided(&self.registry) {
            tracing::warn!(table = %table, column = %column, registry_version = %self.registry.version,
                           "scanner hold ended: the column has a new decision");
            if let Err(e) = self
                .catalog
                .execute(
                    "DELETE FROM _veil.scan_holds WHERE slot = $1 AND tbl = $2 AND col = $3",
                    &[&self.slot_prefix, &table, &column],
                )
                .await
            {
                return Err(StreamError::Postgres(crate::pg::errors::PgError::new(
                    "forget the scanner hold in _veil.scan_holds",
                    &e,
                )));
            }
        }
        Ok(())
    }

    /// Loads the scanner holds a predecessor kept (and ends those decided meanwhile).
    pub async fn load_scan_holds(&mut self) -> Result<(), StreamError> {
        let rows = match self
            .catalog
            .query(
                "SELECT tbl, col, decision FROM _veil.scan_holds WHERE slot = $1",
                &[&self.slot_prefix],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // A setup older than this version, or a stream role that may not read it: the
                // stream runs, but a scanner hit then stops it (definite error naming the table)
                // instead of holding without a kept hold.
                tracing::warn!(
                    error = %crate::pg::errors::PgError::new("read _veil.scan_holds", &e),
                    "scanner holds cannot be kept across restarts (run veil setup, and grant the \
                     stream's role SELECT, INSERT, DELETE on _veil.scan_holds); a scanner hit \
                     will stop the stream"
                );
                return Ok(());
            }
        };
        for row in rows {
            let (table, column): (String, String) = (row.get(0), row.get(1));
            tracing::warn!(table = %table, column = %column,
                           "a scanner hold kept by a predecessor: every row of the table is scanned until the column has a new decision");
            self.scan.restore(table, column, row.get(2));
        }
        self.release_scan_holds().await
    }

    /// Plans a known table again under the current registry (holding if it does not plan).
    pub async fn replan(&mut self, oid: u32) -> Result<Arc<TablePlan>, StreamError> {
        let (info, keys) = self.described.get(&oid).cloned().ok_or_else(|| {
            StreamError::Protocol(format!("relation oid {oid} was never described"))
        })?;
        let plan = self.plan_now(&info, &keys).await?;
        self.publish_schema_if_changed(&plan).await?;
        self.remember_schema(&plan);
        Ok(self.plans[&oid].clone())
    }

    /// Reloads the registry when its files changed and plans every known table again (a
    /// stricter decision takes effect at once; a table that no longer plans holds the stream).
    pub async fn reload_registry(&mut self) -> Result<(), StreamError> {
        match Registry::load(&self.registry_dir) {
            Ok(r) if r.version != self.registry.version => {
                tracing::info!(from = %self.registry.version, to = %r.version, "registry changed; planning tables again");
                self.flush_rows().await?;
                let before = std::mem::replace(&mut self.registry, r);
                self.audit_decisions(&before).await?;
                self.release_scan_holds().await?;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "registry does not load; keeping the loaded version");
            }
        }
        self.replan_stale().await
    }

    /// Plans again every table whose plan an older registry made (the registry may also have
    /// changed while the stream was held on another table), holding where the new registry has
    /// no decision. Loops because a hold can end with yet another registry.
    async fn replan_stale(&mut self) -> Result<(), StreamError> {
        loop {
            let stale: Vec<u32> = self
                .plans
                .iter()
                .filter(|(oid, p)| {
                    p.registry_version != self.registry.version && self.described.contains_key(oid)
                })
                .map(|(oid, _)| *oid)
                .collect();
            if stale.is_empty() {
                return Ok(());
            }
            self.flush_rows().await?;
            for oid in stale {
                if self.renamed_or_reshaped_since_planned(oid).await? {
                    // Its next change comes with a Relation message that describes it anew;
                    // planning it now under an old name would apply another table's decisions.
                    tracing::info!(
                        oid,
                        "table renamed or reshaped since it was planned; planned again at its next change"
                    );
                    self.plans.remove(&oid);
                    self.described.remove(&oid);
                    continue;
                }
                self.replan(oid).await?;
            }
        }
    }

    /// Whether a described table has another name or other columns at the position being
    /// decoded than when it was described (the shape log tells; without one, never).
    async fn renamed_or_reshaped_since_planned(&self, oid: u32) -> Result<bool, StreamError> {
        let (Some(pos), Some((info, _))) = (self.position, self.described.get(&oid)) else {
            return Ok(false);
        };
        let mut now = info.clone();
        catalog::bind_to_shape_log(&self.catalog, &mut now, Some(pos), false).await?;
        let attnums =
            |i: &catalog::TableInfo| i.columns.iter().map(|c| c.attnum).collect::<Vec<_>>();
        Ok(now.qualified() != info.qualified() || attnums(&now) != attnums(info))
    }

    /// The plan of a relation, planned again first if the registry changed since.
    async fn current_plan(&mut self, oid: u32) -> Result<Arc<TablePlan>, StreamError> {
        let plan = self.plan(oid)?;
        if plan.registry_version == self.registry.version {
            return Ok(plan);
        }
        self.replan_stale().await?;
        self.plan(oid)
    }

    pub fn remember_described(&mut self, oid: u32, info: catalog::TableInfo, keys: Vec<String>) {
        self.described.insert(oid, (info, keys));
    }

    /// Reports the WAL the slot retains (`veil_slot_retained_wal_bytes`).
    pub async fn observe_slot(&self) {
        let row = self
            .catalog
            .query_opt(
                "SELECT (pg_catalog.pg_current_wal_lsn() - restart_lsn)::float8 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&self.slot_name],
            )
            .await;
        if let Ok(Some(row)) = row
            && let Some(b) = row.get::<_, Option<f64>>(0)
        {
            metrics::gauge!(crate::metrics::RETAINED_WAL_BYTES).set(b);
        }
    }

    /// The blocked marker of every table the registry blocks as a whole, once per run: dev
    /// empties whatever it holds of them (nothing, usually).
    pub async fn publish_blocked_markers(&mut self) -> Result<(), StreamError> {
        let blocked: Vec<String> = self
            .registry
            .tables
            .iter()
            .filter(|(_, e)| e.blocked)
            .map(|(t, _)| t.clone())
            .collect();
        for table in blocked {
            let (schema, name) = table.split_once('.').unwrap_or(("public", &table));
            let marker = proto::TableSchema {
                schema: schema.to_owned(),
                name: name.to_owned(),
                blocked: true,
                ..Default::default()
            };
            if self.published_schemas.get(&table) != Some(&marker) {
                self.publish(self.phase, Event::Schema(marker.clone()), None)
                    .await?;
                self.published_schemas.insert(table, marker);
            }
        }
        Ok(())
    }

    pub(super) async fn publish_schema_if_changed(
        &mut self,
        plan: &TablePlan,
    ) -> Result<(), StreamError> {
        // A blocked table publishes its marker once (dev empties its copy); an unblocked one
        // publishes its schema again.
        // A withheld table (its decisions belong to a table that takes its name later) has no
        // schema to publish.
        if plan.schema.name.is_empty() {
            return Ok(());
        }
        if self.published_schemas.get(&plan.qualified) != Some(&plan.schema) {
            if plan.blocked {
                tracing::warn!(table = %plan.qualified, "table blocked by the registry: dev's copy is emptied");
            } else {
                tracing::info!(table = %plan.qualified, "publishing table schema");
            }
            self.publish(self.phase, Event::Schema(plan.schema.clone()), None)
                .await?;
            metrics::counter!(crate::metrics::SCHEMA_CHANGES, "table" => plan.qualified.clone())
                .increment(1);
        }
        Ok(())
    }

    /// A plan whose columns need the vault cannot run without one.
    pub fn check_vault(&self, plan: &TablePlan) -> Result<(), StreamError> {
        let cols = plan.vault_columns();
        if !self.vault.holds_tokens() && !cols.is_empty() {
            return Err(StreamError::Config(ConfigError::Invalid(format!(
                "table {} columns {} use vault-held tokens, but no [vault] is configured",
                plan.qualified,
                cols.join(", ")
            ))));
        }
        Ok(())
    }

    /// Runs `f` over every item against the vault cache; the values that missed are allocated
    /// in one vault round trip and the items that missed are transformed again.
    pub async fn transform_batch<T, R>(
        &mut self,
        items: &[T],
        f: impl Fn(&T, &dyn TokenStore, &mut Vec<VaultRequest>) -> Result<R, Box<GateError>>,
    ) -> Result<Vec<R>, StreamError> {
        let started = std::time::Instant::now();
        let mut in_vault = std::time::Duration::ZERO;
        let out = self.transform_batch_timed(items, f, &mut in_vault).await;
        self.clock.add_duration(VAULT, in_vault);
        self.clock
            .add_duration(TRANSFORM, started.elapsed().saturating_sub(in_vault));
        out
    }

    async fn transform_batch_timed<T, R>(
        &self,
        items: &[T],
        f: impl Fn(&T, &dyn TokenStore, &mut Vec<VaultRequest>) -> Result<R, Box<GateError>>,
        in_vault: &mut std::time::Duration,
    ) -> Result<Vec<R>, StreamError> {
        let store: &dyn TokenStore = &*self.vault;
        let mut out = Vec::with_capacity(items.len());
        let mut misses = Vec::new();
        let mut missed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let before = misses.len();
            out.push(f(item, store, &mut misses)?);
            if misses.len() > before {
                missed.push(i);
            }
        }
        if missed.is_empty() {
            return Ok(out);
        }
        metrics::counter!(crate::metrics::VAULT_ROUND_TRIPS).increment(1);
        let t = std::time::Instant::now();
        self.vault.allocate(std::mem::take(&mut misses)).await?;
        *in_vault += t.elapsed();
        // Each missed item again. A batch larger than the vault cache makes the cache start
        // over, which can evict tokens this batch found in the first pass: such an item gets
        // its own (small) allocation — a lookup, for values the vault already has.
        for i in missed {
            let mut tries = 0;
            loop {
                out[i] = f(&items[i], store, &mut misses)?;
                if misses.is_empty() {
                    break;
                }
                tries += 1;
                if tries > 3 {
                    return Err(StreamError::Protocol(
                        "vault allocation left a value without a token".into(),
                    ));
                }
                metrics::counter!(crate::metrics::VAULT_ROUND_TRIPS).increment(1);
                let t = std::time::Instant::now();
                self.vault.allocate(std::mem::take(&mut misses)).await?;
                *in_vault += t.elapsed();
            }
        }
        Ok(out)
    }

    /// Transforms, scans and publishes everything queued (begins, row changes, commits of any
    /// number of transactions), in order. The rows of the whole queue are transformed together:
    /// their vault misses are allocated, and committed, in one round trip before any of them is
    /// published.
    pub(super) async fn flush_rows(&mut self) -> Result<(), StreamError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let mut queue = std::mem::take(&mut self.queue);
        self.queued_rows = 0;
        self.queued_at = None;
        loop {
            let scanned = {
                let queued: Vec<&QueuedRow> = queue
                    .iter()
                    .filter_map(|q| match q {
                        Queued::Row(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                self.transform_and_scan(
                    &queued,
                    |q, store, misses| {
                        let new = match &q.new {
                            Some(t) => q.plan.transform_tuple(t, q.lsn, store, misses)?,
                            None => Vec::new(),
                        };
                        let (old, full) = match &q.old {
                            None => (Vec::new(), false),
                            Some(OldTuple::Key(t)) => {
                                (q.plan.transform_tuple(t, q.lsn, store, misses)?, false)
                            }
                            Some(OldTuple::Full(t)) => {
                                (q.plan.transform_tuple(t, q.lsn, store, misses)?, true)
                            }
                        };
                        Ok((new, old, full))
                    },
                    |q| q.plan.clone(),
                    |r: &PublishedRow| r.0.as_slice(),
                )
                .await?
            };
            if let Scanned::Clean(rows) = scanned {
                let mut rows = rows.into_iter();
                for item in queue {
                    match item {
                        Queued::Begin(b) => {
                            self.publishing_lsn = Some(b.commit_lsn);
                            self.publish(proto::Phase::Stream, Event::Begin(b), None)
                                .await?;
                        }
                        Queued::Row(q) => {
                            let row = rows.next().ok_or_else(|| {
                                StreamError::Protocol("a queued row was not transformed".into())
                            })?;
                            self.publish_rows(proto::Phase::Stream, &q.plan, q.op, [row])
                                .await?;
                        }
                        Queued::Commit(c) => self.publish_commit(c).await?,
                    }
                }
                self.publishing_lsn = None;
                return Ok(());
            }
            // A decision ended the hold: plan the batch's tables again and transform it again.
            let oids: std::collections::BTreeSet<u32> = queue
                .iter()
                .filter_map(|q| match q {
                    Queued::Row(r) => Some(r.plan.oid),
                    _ => None,
                })
                .collect();
            for oid in oids {
                let plan = self.replan(oid).await?;
                for q in queue.iter_mut() {
                    if let Queued::Row(r) = q
                        && r.plan.oid == oid
                    {
                        r.plan = plan.clone();
                    }
                }
            }
        }
    }

    /// Queues one item; publishes the queue once it holds a batch of rows.
    async fn enqueue(&mut self, item: Queued) -> Result<(), StreamError> {
        let now = std::time::Instant::now();
        self.queued_at = Some(match self.queued_at {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
        if let Queued::Row(_) = item {
            self.queued_rows += 1;
            if let Some(t) = self.txn.as_mut() {
                t.rows += 1;
            }
        }
        self.queue.push(item);
        if self.queued_rows >= ROW_BATCH || self.queue.len() >= MAX_QUEUED {
            self.flush_rows().await?;
        }
        Ok(())
    }

    async fn queue_row(&mut self, mut row: QueuedRow) -> Result<(), StreamError> {
        if self.backfill.watching() {
            let old = match &row.old {
                Some(OldTuple::Key(t)) | Some(OldTuple::Full(t)) => Some(t),
                None => None,
            };
            // While a table is backfilled, dev may lack any row not yet read: an update whose
            // new row is whole (no unchanged TOAST value) goes out as an upsert — preceded by a
            // delete of the old key when the key moved — so dev holds the row after it whatever
            // it held before. Only an update dev cannot apply alone is read again.
            let upsert = row.op == proto::Op::Update
                && self.backfill.keyed_job(&row.plan.qualified)
                && row.new.as_ref().is_some_and(|t| {
                    !t.0.iter()
                        .any(|v| matches!(v, crate::pg::tuple::TupleValue::Unchanged))
                });
            let moved = self.backfill.note_change(
                &row.plan.qualified,
                row.new.as_ref(),
                old,
                row.op == proto::Op::Update && !upsert,
            );
            if upsert {
                if moved {
                    self.enqueue(Queued::Row(QueuedRow {
                        plan: row.plan.clone(),
                        op: proto::Op::Delete,
                        new: None,
                        old: row.old.take(),
                        lsn: row.lsn,
                    }))
                    .await?;
                }
                row.op = proto::Op::Upsert;
                row.old = None;
            }
        }
        self.enqueue(Queued::Row(row)).await
    }

    /// When the queue is due to be published (nothing decoded for [`QUEUE_IDLE`], or
    /// [`QUEUE_MAX_DELAY`] after its first item); `None` when it is empty.
    pub fn queue_deadline(&self) -> Option<tokio::time::Instant> {
        let (first, last) = self.queued_at?;
        let due = (last + QUEUE_IDLE).min(first + QUEUE_MAX_DELAY);
        Some(tokio::time::Instant::from_std(due))
    }

    /// Something decoded is not yet published (its WAL must not be confirmed).
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn remember_schema(&mut self, plan: &TablePlan) {
        self.published_schemas
            .insert(plan.qualified.clone(), plan.schema.clone());
        self.plans.insert(plan.oid, Arc::new(plan.clone()));
    }

    pub(super) async fn begin(
        &mut self,
        commit_lsn: u64,
        commit_time: i64,
        xid: u32,
    ) -> Result<(), StreamError> {
        self.txn = Some(TxnState {
            rows: 0,
            commit_lsn,
        });
        self.enqueue(Queued::Begin(proto::Begin {
            commit_lsn,
            commit_time_us: pg_time_to_unix_us(commit_time),
            xid,
        }))
        .await
    }

    pub(super) async fn commit(
        &mut self,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    ) -> Result<(), StreamError> {
        let rows = self.txn.take().map(|t| t.rows).unwrap_or(0);
        self.enqueue(Queued::Commit(proto::Commit {
            commit_lsn,
            end_lsn,
            commit_time_us: pg_time_to_unix_us(commit_time),
            rows,
        }))
        .await
    }

    /// A commit leaves the queue: its end LSN counts as done once Kafka acknowledged it and
    /// everything before it.
    pub(super) async fn publish_commit(&mut self, c: proto::Commit) -> Result<(), StreamError> {
        let (commit_lsn, end_lsn) = (c.commit_lsn, c.end_lsn);
        self.last_commit_lsn = commit_lsn;
        self.publish(proto::Phase::Stream, Event::Commit(c), Some(end_lsn))
            .await?;
        metrics::counter!(crate::metrics::TRANSACTIONS).increment(1);
        self.window.mark_lsn(commit_lsn);
        if now_us() - self.window.start_us >= self.window_secs as i64 * 1_000_000 {
            self.close_window().await?;
        }
        Ok(())
    }

    /// A `veil_ddl` message (written inside the DDL's transaction by the event trigger): the
    /// changed table is compared with the registry at once, so a schema change holds the stream
    /// at the DDL itself, before any row of the new shape and even if none ever comes.
    async fn ddl(&mut self, content: &[u8], lsn: u64) -> Result<(), StreamError> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
            tracing::warn!("ignoring a veil_ddl message that is not JSON");
            return Ok(());
        };
        let tag = v["tag"].as_str().unwrap_or("");
        let object = v["object"].as_str().unwrap_or("");
        if tag == "ALTER TYPE" {
            let labels = v["labels"].as_array().map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            });
            return self.enum_changed(json_oid(&v["oid"]), labels, lsn).await;
        }
        if !matches!(
            tag,
            "CREATE TABLE" | "ALTER TABLE" | "CREATE TABLE AS" | "SELECT INTO"
        ) {
            return Ok(());
        }
        // The table by its oid (messages of this version carry it), else by name; the catalog
        // as it is now: a table dropped since is no longer anyone's concern.
        let published = "c.relkind IN ('r', 'p') \
             AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables t WHERE t.pubname = $2 \
               AND (quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))::regclass = c.oid)";
        let by_oid = json_oid(&v["oid"]);
        let found = match by_oid {
            Some(o) => {
                self.catalog
                    .query_opt(
                        &format!("SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = $1 AND {published}"),
                        &[&o, &self.publication],
                    )
                    .await
            }
            None => {
                self.catalog
                    .query_opt(
                        &format!("SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1) AND {published}"),
                        &[&object, &self.publication],
                    )
                    .await
            }
        };
        let oid: Option<u32> = match found {
            Ok(row) => row.map(|r| r.get(0)),
            Err(e) => {
                let e = crate::pg::errors::PgError::new("look up DDL target", &e);
                if crate::error::Classify::class(&e) == crate::error::ErrorClass::Transient {
                    return Err(StreamError::Postgres(e));
                }
                // A name veil cannot resolve (a three-part identity, a forged message — any
                // role may write one): the Relation message before the table's next change
                // decides. The message's content is not logged.
                tracing::warn!(tag, lsn = %crate::pg::lsn::fmt_lsn(lsn), sqlstate = %e.code.as_deref().unwrap_or(""), "a veil_ddl message veil cannot use; the next Relation message decides");
                return Ok(());
            }
        };
        let Some(oid) = oid else { return Ok(()) };
        let mut info = match catalog::describe_table(&self.catalog, oid, None).await {
            Ok(info) => info,
            // Dropped since: no longer anyone's concern.
            Err(catalog::CatalogError::Missing(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let name_now = info.qualified();
        catalog::bind_to_shape_log(&self.catalog, &mut info, Some(lsn), true).await?;
        if info.qualified() != name_now {
            // Renamed again later: its rows come with Relation messages, each checked then.
            tracing::info!(table = %info.qualified(), now = %name_now, tag, "schema change of a table renamed since; checked at its next change");
            return Ok(());
        }
        let keys = info.identity_keys();
        tracing::info!(table = %info.qualified(), tag, "schema change seen; checking it against the registry");
        self.plan_or_hold(&info, &keys).await?;
        // The table's shape from here on: planning it again under a newer registry must use it.
        if self.described.contains_key(&oid) {
            self.described.insert(oid, (info, keys));
        }
        Ok(())
    }

    /// `ALTER TYPE` of an enum a published column uses (a label added or renamed): its whole
    /// label set, in order, published inside the transaction, so dev adds the labels before any
    /// row that uses them. The labels are the message's (as they were at this point of the WAL;
    /// messages of older setups carry none: the catalog's as they are now). Types no published
    /// column uses publish nothing (their labels are not dev's business).
    async fn enum_changed(
        &mut self,
        oid: Option<u32>,
        at_lsn: Option<Vec<String>>,
        lsn: u64,
    ) -> Result<(), StreamError> {
        let Some(oid) = oid else {
            return Ok(());
        };
        let row = self
            .catalog
            .query_opt(
                "SELECT format_type(t.oid, NULL), array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
                 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid \
                 WHERE t.oid = $1 GROUP BY t.oid",
                &[&oid],
            )
            .await
            .map_err(|e| StreamError::Postgres(crate::pg::errors::PgError::new("describe enum", &e)))?;
        // Not an enum, or dropped since.
        let Some(row) = row else { return Ok(()) };
        let name: String = row.get(0);
        let labels: Vec<String> = match at_lsn {
            Some(l) if !l.is_empty() => l,
            _ => row.get(1),
        };
        let used = self
            .published_schemas
            .values()
            .any(|s| s.enums.iter().any(|e| e.name == name));
        if !used {
            return Ok(());
        }
        tracing::info!(r#type = %name, labels = labels.len(), lsn = %crate::pg::lsn::fmt_lsn(lsn), "enum labels changed; publishing the label set");
        self.flush_rows().await?;
        let e = proto::EnumType { name, labels };
        for s in self.published_schemas.values_mut() {
            for known in s.enums.iter_mut().filter(|k| k.name == e.name) {
                known.labels = e.labels.clone();
            }
        }
        self.publish(proto::Phase::Stream, Event::EnumLabels(e), None)
            .await
    }

    /// Counts published rows for the audit window.
    pub fn count_rows(&mut self, table: &str, op: &'static str, n: u64) {
        self.window.count_rows(table, op, n);
    }

    /// Marks the snapshot's LSN in the window.
    pub fn window_lsn(&mut self, lsn: u64) {
        self.window.mark_lsn(lsn);
    }

    /// A Relation message at WAL position `lsn`: the table described (columns as the message
    /// gives them, attnums and history as the shape log had them at `lsn`) and planned.
    async fn relation(&mut self, rel: Relation, lsn: u64) -> Result<(), StreamError> {
        let cols: Vec<(String, u32, i32)> = rel
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
            .collect();
        let keys: Vec<String> = rel
            .columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.clone())
            .collect();
        // A partition of a root the publication publishes: its rows are the root's rows, under
        // the root's decisions (a partition is never a table of its own to hold).
        let oid = match self.published_root(rel.oid).await? {
            Some(root) => {
                self.partition_roots.insert(rel.oid, root);
                root
            }
            None => rel.oid,
        };
        let mut info = if oid == rel.oid {
            catalog::describe_relation(
                &self.catalog,
                oid,
                &rel.namespace,
                &rel.name,
                rel.replica_identity,
                &cols,
                &keys,
            )
            .await?
        } else {
            catalog::describe_table(&self.catalog, oid, Some(&cols)).await?
        };
        catalog::bind_to_shape_log(&self.catalog, &mut info, Some(lsn), false).await?;
        let plan = self.plan_or_hold(&info, &keys).await?;
        self.flush_rows().await?;
        self.publish_schema_if_changed(&plan).await?;
        self.remember_schema(&plan);
        self.described.insert(oid, (info, keys));
        Ok(())
    }

    /// The published root of a partition (`publish_via_partition_root`), if `oid` is one.
    async fn published_root(&self, oid: u32) -> Result<Option<u32>, StreamError> {
        let row = self
            .catalog
            .query_opt(
                "SELECT pg_catalog.pg_partition_root(c.oid)::oid FROM pg_catalog.pg_class c \
                 WHERE c.oid = $1 AND c.relispartition AND EXISTS (SELECT 1 FROM \
                 pg_catalog.pg_publication_tables t WHERE t.pubname = $2 AND \
                 (quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))::regclass \
                 = pg_catalog.pg_partition_root(c.oid))",
                &[&oid, &self.publication],
            )
            .await
            .map_err(|e| {
                StreamError::Postgres(crate::pg::errors::PgError::new(
                    "look up partition root",
                    &e,
                ))
            })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn plan(&self, oid: u32) -> Result<Arc<TablePlan>, StreamError> {
        let oid = self.partition_roots.get(&oid).copied().unwrap_or(oid);
        self.plans.get(&oid).cloned().ok_or_else(|| {
            StreamError::Protocol(format!(
                "change for relation oid {oid} before its Relation message"
            ))
        })
    }

    /// Publishes one row change of `plan`'s table, counted for the audit window and metrics.
    /// Publishes row changes of one table — the only place a published row is built
    /// (`tests/architecture.rs`): the stream, the snapshot and the backfill all come here, so
    /// the events metric and the audit window count every row the same way.
    pub(super) async fn publish_rows(
        &mut self,
        phase: proto::Phase,
        plan: &TablePlan,
        op: proto::Op,
        rows: impl IntoIterator<Item = PublishedRow>,
    ) -> Result<(), StreamError> {
        let mut n = 0u64;
        for (new, old, old_full) in rows {
            n += 1;
            self.publish(
                phase,
                Event::Row(proto::RowChange {
                    table: plan.qualified.clone(),
                    op: op as i32,
                    new_values: new,
                    old_values: old,
                    old_is_full: old_full,
                }),
                None,
            )
            .await?;
        }
        if n > 0 {
            self.count_rows(&plan.qualified, op.as_str_name(), n);
            metrics::counter!(crate::metrics::EVENTS, "table" => plan.qualified.clone(), "op" => op.as_str_name()).increment(n);
        }
        Ok(())
    }

    /// The step every batch of rows takes before it is published, whoever read them (the
    /// replication loop's queue, a snapshot batch, a backfill chunk): transformed under the
    /// current plans (the vault's misses allocated, and committed, in one round trip), then
    /// scanned; a scanner hit holds (`hold_for_scan`: until the hit column has a decision of its
    /// own) and returns [`Scanned::Decided`] — the caller plans its tables again and comes back
    /// with the same rows, which are then scanned whole.
    pub(super) async fn transform_and_scan<T, R>(
        &mut self,
        items: &[T],
        f: impl Fn(&T, &dyn TokenStore, &mut Vec<VaultRequest>) -> Result<R, Box<GateError>>,
        plan_of: impl Fn(&T) -> Arc<TablePlan>,
        values_of: impl Fn(&R) -> &[proto::Value],
    ) -> Result<Scanned<R>, StreamError> {
        let out = self.transform_batch(items, f).await?;
        let plans: Vec<Arc<TablePlan>> = items.iter().map(plan_of).collect();
        let hits = self.scan_rows(plans.iter().zip(&out).map(|(p, r)| (&**p, values_of(r))));
        if hits.is_empty() {
            return Ok(Scanned::Clean(out));
        }
        self.hold_for_scan(&hits).await?;
        Ok(Scanned::Decided)
    }

    /// Handles one message of a transaction (live or replayed from the spool).
    pub(super) async fn change(
        &mut self,
        msg: LogicalMessage,
        lsn: u64,
    ) -> Result<(), StreamError> {
        if lsn != 0 {
            self.position = Some(lsn);
        }
        match msg {
            LogicalMessage::Relation { relation, .. } => {
                let at = self.position.unwrap_or(lsn);
                self.relation(relation, at).await?
            }
            LogicalMessage::Insert {
                relation_oid, new, ..
            } => {
                let plan = self.current_plan(relation_oid).await?;
                if !plan.blocked {
                    self.queue_row(QueuedRow {
                        plan,
                        op: proto::Op::Insert,
                        new: Some(new),
                        old: None,
                        lsn,
                    })
                    .await?;
                }
            }
            LogicalMessage::Update {
                relation_oid,
                old,
                new,
                ..
            } => {
                let plan = self.current_plan(relation_oid).await?;
                if !plan.blocked {
                    self.queue_row(QueuedRow {
                        plan,
                        op: proto::Op::Update,
                        new: Some(new),
                        old,
                        lsn,
                    })
                    .await?;
                }
            }
            LogicalMessage::Delete {
                relation_oid, old, ..
            } => {
                let plan = self.current_plan(relation_oid).await?;
                if !plan.blocked {
                    self.queue_row(QueuedRow {
                        plan,
                        op: proto::Op::Delete,
                        new: None,
                        old: Some(old),
                        lsn,
                    })
                    .await?;
                }
            }
            LogicalMessage::Truncate {
                options,
                relation_oids,
                ..
            } => {
                let mut tables = Vec::new();
                for oid in relation_oids {
                    let plan = self.current_plan(oid).await?;
                    if !plan.blocked {
                        tables.push(plan.qualified.clone());
                    }
                }
                if !tables.is_empty() {
                    self.backfill.note_truncate(&tables);
                    self.flush_rows().await?;
                    if let Some(t) = self.txn.as_mut() {
                        t.rows += 1;
                    }
                    self.publish(
                        proto::Phase::Stream,
                        Event::Truncate(proto::Truncate {
                            tables,
                            cascade: options & 1 == 1,
                            restart_identity: options & 2 == 2,
                        }),
                        None,
                    )
                    .await?;
                }
            }
            LogicalMessage::Message {
                prefix,
                lsn,
                content,
                ..
            } => {
                if prefix == DDL_PREFIX {
                    self.ddl(&content, lsn).await?;
                } else if prefix.starts_with("veil.backfill.") {
                    self.backfill_message(&prefix, &content, lsn).await?;
                } else if prefix == HEARTBEAT_PREFIX {
                    self.flush_rows().await?;
                    self.publish(
                        proto::Phase::Stream,
                        Event::Heartbeat(proto::Heartbeat { lsn }),
                        None,
                    )
                    .await?;
                }
                // Any other logical message is not ours: dropped, never forwarded.
            }
            LogicalMessage::Type { .. } | LogicalMessage::Origin { .. } => {}
            other => {
                return Err(StreamError::Protocol(format!(
                    "unexpected message inside a transaction: {}",
                    message_name(&other)
                )));
            }
        }
        Ok(())
    }
}

fn message_name(m: &LogicalMessage) -> &'static str {
    match m {
        LogicalMessage::Begin { .. } => "Begin",
        LogicalMessage::Commit { .. } => "Commit",
        LogicalMessage::StreamStart { .. } => "Stream Start",
        LogicalMessage::StreamStop => "Stream Stop",
        LogicalMessage::StreamCommit { .. } => "Stream Commit",
        LogicalMessage::StreamAbort { .. } => "Stream Abort",
        _ => "change",
    }
}

/// An oid in a `veil_ddl` message: `json_build_object` writes the `oid` type as a string.
fn json_oid(v: &serde_json::Value) -> Option<u32> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|o| u32::try_from(o).ok())
}

/// What an event is about, for an error message: a table name or the event kind (never a value).
fn event_subject(env: &proto::Envelope) -> String {
    match &env.event {
        Some(Event::Row(r)) => format!("a row change of {}", r.table),
        Some(Event::Schema(s)) => format!("the schema of {}.{}", s.schema, s.name),
        Some(Event::Truncate(t)) => format!("a truncate of {}", t.tables.join(", ")),
        Some(Event::Begin(_)) => "a transaction begin".into(),
        Some(Event::Commit(_)) => "a transaction commit".into(),
        Some(_) => "a control event".into(),
        None => "an empty event".into(),
    }
}

fn pg_time_to_unix_us(t: i64) -> i64 {
    t + PG_EPOCH_OFFSET_US
}
