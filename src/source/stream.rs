//! `veil stream`: the production-side loop. Recovers the run epoch from the topic's last
//! envelope, creates a slot and runs the snapshot when a new epoch starts (first run, or a
//! snapshot that never finished, or a lost slot), then reads pgoutput, passes every change
//! through the gate and publishes it. The LSN confirmed to PostgreSQL is the end of the last
//! commit whose events Kafka acknowledged; only when nothing is in flight does it move to the
//! server's WAL position from a keepalive, so an idle slot does not pin WAL. A periodic
//! heartbeat message keeps the slot moving too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use super::conn::ReplicationConn;
use super::conn::SourceError;
use super::spool::Spool;
use crate::config::{Config, ConfigError};
use crate::deid::gate::{self, GateError, TablePlan};
use crate::deid::registry::{Registry, RegistryError};
use crate::deid::tokenize::{MasterKey, TokenStore, VaultRequest};
use crate::deid::vault::{NoVault, Vault, VaultError};
use crate::kafka::admin;
use crate::kafka::error::BrokerError;
use crate::kafka::producer::Publisher;
use crate::pg::catalog::{self, CatalogError};
use crate::proto::{self, envelope::Event};
use crate::source::pgoutput::{
    self, LogicalMessage, OldTuple, PG_EPOCH_OFFSET_US, Relation, ReplicationMessage, fmt_lsn,
};

/// Rows transformed (and their vault misses allocated) together.
const ROW_BATCH: usize = 1000;

/// Prefix of logical messages veil writes itself; every other message is dropped.
pub const HEARTBEAT_PREFIX: &str = "veil_heartbeat";
/// Prefix of the messages `veil setup`'s DDL event trigger writes (`{"tag", "object"}`).
pub const DDL_PREFIX: &str = "veil_ddl";

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("source database ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Gate(Box<GateError>),
    #[error(transparent)]
    Publish(#[from] BrokerError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("pgoutput: {0}")]
    Decode(#[from] pgoutput::DecodeError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("replication slot {0} is in use by another process (is another veil stream running?)")]
    SlotBusy(String),
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Shutdown was requested while the stream was held (not a failure).
    #[error("stopped while held")]
    StoppedWhileHeld,
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl From<GateError> for StreamError {
    fn from(e: GateError) -> Self {
        StreamError::Gate(Box::new(e))
    }
}

impl StreamError {
    /// Transient errors are worth a restart from the confirmed LSN; the others need a person
    /// (a registry decision, a config fix) and must not be retried in a loop.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Source(e) => matches!(e, SourceError::Io(_) | SourceError::Closed),
            StreamError::Publish(_)
            | StreamError::Postgres(..)
            | StreamError::Spool(_)
            | StreamError::SlotBusy(_) => true,
            StreamError::Vault(v) => v.is_transient(),
            StreamError::Audit(crate::audit::AuditError::Kafka(_)) => true,
            _ => false,
        }
    }
}

/// A standby status update: `write` received, `flushed` (= applied) confirmed — only what
/// Kafka acknowledged.
fn status_update(write: u64, flushed: u64) -> Vec<u8> {
    pgoutput::encode_status_update(
        write,
        flushed,
        flushed,
        now_us() - PG_EPOCH_OFFSET_US,
        false,
    )
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn pg_time_to_unix_us(t: i64) -> i64 {
    t + PG_EPOCH_OFFSET_US
}

/// State of the stream shared by the snapshot and the replication loop.
pub struct Streamer {
    pub database: String,
    pub source_id: String,
    pub publication: String,
    pub slot_name: String,
    pub registry: Registry,
    pub master: MasterKey,
    key_id: String,
    pub epoch: u64,
    last_commit_lsn: u64,
    pub publisher: Publisher,
    catalog: tokio_postgres::Client,
    plans: HashMap<u32, Arc<TablePlan>>,
    published_schemas: HashMap<String, proto::TableSchema>,
    txn: Option<TxnState>,
    run_id: u64,
    seq: u64,
    pub vault: Option<Vault>,
    queue: Vec<QueuedRow>,
    pub registry_dir: std::path::PathBuf,
    scanner: Arc<crate::deid::scanner::Scanner>,
    /// Scan every n-th published row (0 = off).
    scan_every: u64,
    scan_counter: u64,
    /// Snapshot until the snapshot's end is published (a restart reads the phase of the topic's
    /// last event to know whether the snapshot finished).
    pub phase: proto::Phase,
    pub audit: Option<crate::audit::AuditWriter>,
    window: WindowAcc,
    window_secs: u64,
    window_count: u64,
    /// What each planned table was planned from, to plan it again when the registry changes.
    described: HashMap<u32, (catalog::TableInfo, Vec<String>)>,
}

/// What a hold needs from the replication loop: the connection (to keep it alive with status
/// updates that never confirm past the hold point) and the shutdown signal.
pub struct Link<'a> {
    pub repl: Option<&'a mut ReplicationConn>,
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// The WAL position received so far (reported as written, never as flushed).
    pub received: u64,
}

/// How often a held stream looks for a registry decision.
const HOLD_POLL: Duration = Duration::from_secs(1);

/// What the current audit window has published so far.
#[derive(Default)]
struct WindowAcc {
    start_us: i64,
    first_lsn: u64,
    last_lsn: u64,
    /// table → operation → rows (looked up by `&str`: no allocation per row).
    rows: std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, u64>>,
    scanned: u64,
    hits: std::collections::BTreeMap<(String, String, &'static str), u64>,
}

/// A row change waiting for its batch to be transformed.
struct QueuedRow {
    plan: Arc<TablePlan>,
    op: proto::Op,
    new: Option<pgoutput::TupleData>,
    old: Option<OldTuple>,
    lsn: u64,
}

struct TxnState {
    rows: u64,
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
        let env = self.envelope(phase, event);
        self.publisher.send(&env, done_lsn).await?;
        Ok(())
    }

    /// Writes one audit record (when auditing is configured).
    pub async fn audit(&mut self, body: proto::audit_record::Body) -> Result<(), StreamError> {
        if let Some(a) = self.audit.as_mut() {
            a.record(body).await?;
        }
        Ok(())
    }

    /// The run's start: versions, key id and every column's rule under the registry.
    pub async fn audit_run_start(&mut self, config_hash: &str) -> Result<(), StreamError> {
        let mut rules = Vec::new();
        for (t, e) in &self.registry.tables {
            for (c, ce) in &e.columns {
                rules.push(proto::ColumnRule {
                    table: t.clone(),
                    column: c.clone(),
                    rule: match &ce.decision {
                        crate::deid::registry::Decision::Blocked => "blocked".into(),
                        crate::deid::registry::Decision::Publish(r) => r.describe(),
                    },
                    profile: ce.profile.name().into(),
                });
            }
        }
        let body = proto::audit_record::Body::RunStart(proto::RunStart {
            run_id: self.run_id,
            source_id: self.source_id.clone(),
            epoch: self.epoch,
            config_hash: config_hash.to_owned(),
            registry_version: self.registry.version.clone(),
            key_id: self.key_id.clone(),
            rules,
        });
        self.audit(body).await
    }

    /// Closes the current window: what was published, under which rules, and the scan.
    pub async fn close_window(&mut self) -> Result<(), StreamError> {
        let w = std::mem::replace(
            &mut self.window,
            WindowAcc {
                start_us: now_us(),
                ..Default::default()
            },
        );
        if w.rows.is_empty() && w.scanned == 0 {
            self.window.start_us = w.start_us;
            return Ok(());
        }
        self.window_count += 1;
        let mut per_table: std::collections::BTreeMap<&str, u64> = Default::default();
        for (t, ops) in &w.rows {
            *per_table.entry(t.as_str()).or_default() += ops.values().sum::<u64>();
        }
        let mut rules = Vec::new();
        for plan in self.plans.values() {
            if let Some(n) = per_table.get(plan.qualified.as_str()) {
                for c in &plan.schema.columns {
                    rules.push(proto::RuleCount {
                        table: plan.qualified.clone(),
                        column: c.name.clone(),
                        rule: c.rule.clone(),
                        values: *n,
                    });
                }
            }
        }
        rules.sort_by(|a, b| (&a.table, &a.column).cmp(&(&b.table, &b.column)));
        let body = proto::audit_record::Body::Window(proto::Window {
            window_id: format!("{:x}-{}", self.run_id, self.window_count),
            run_id: self.run_id,
            epoch: self.epoch,
            start_us: w.start_us,
            end_us: now_us(),
            first_lsn: w.first_lsn,
            last_lsn: w.last_lsn,
            registry_version: self.registry.version.clone(),
            rows: w
                .rows
                .iter()
                .flat_map(|(t, ops)| {
                    ops.iter().map(move |(op, n)| proto::OpCount {
                        table: t.clone(),
                        op: (*op).into(),
                        rows: *n,
                    })
                })
                .collect(),
            rules,
            scanned_rows: w.scanned,
            scanner: w
                .hits
                .iter()
                .map(|((t, c, d), n)| proto::ScanResult {
                    table: t.clone(),
                    column: c.clone(),
                    detector: (*d).into(),
                    hits: *n,
                })
                .collect(),
        });
        self.audit(body).await
    }

    /// Audit records for every column whose registry entry changed (who decided, when, why).
    async fn audit_decisions(&mut self, before: &Registry) -> Result<(), StreamError> {
        let mut bodies = Vec::new();
        for (t, e) in &self.registry.tables {
            let old = before.table(t);
            if e.blocked && !old.is_some_and(|o| o.blocked) {
                bodies.push(proto::Decision {
                    table: t.clone(),
                    column: "*".into(),
                    class: "blocked".into(),
                    rule: String::new(),
                    reviewer: e.reviewer.clone().unwrap_or_default(),
                    reviewed_at: String::new(),
                    reason: e.reason.clone().unwrap_or_default(),
                    registry_before: before.version.clone(),
                    registry_after: self.registry.version.clone(),
                });
            }
            for (c, ce) in &e.columns {
                let same = old.and_then(|o| o.columns.get(c)).is_some_and(|o| {
                    o.decision == ce.decision
                        && o.type_name == ce.type_name
                        && o.profile == ce.profile
                        && o.reviewed_at == ce.reviewed_at
                        && o.scan == ce.scan
                });
                if same {
                    continue;
                }
                let (class, rule) = match &ce.decision {
                    crate::deid::registry::Decision::Blocked => ("blocked", String::new()),
                    crate::deid::registry::Decision::Publish(crate::deid::registry::Rule::Keep) => {
                        ("safe", "keep".into())
                    }
                    crate::deid::registry::Decision::Publish(r) => ("sensitive", r.describe()),
                };
                bodies.push(proto::Decision {
                    table: t.clone(),
                    column: c.clone(),
                    class: class.into(),
                    rule,
                    reviewer: ce.reviewer.clone().unwrap_or_default(),
                    reviewed_at: ce.reviewed_at.clone().unwrap_or_default(),
                    reason: ce.reason.clone().unwrap_or_default(),
                    registry_before: before.version.clone(),
                    registry_after: self.registry.version.clone(),
                });
            }
        }
        for b in bodies {
            self.audit(proto::audit_record::Body::Decision(b)).await?;
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
        link: &mut Link<'_>,
    ) -> Result<TablePlan, StreamError> {
        let mut since: Option<std::time::Instant> = None;
        loop {
            let problem = match gate::plan_table(
                &self.database,
                info,
                keys,
                &self.registry,
                &self.master,
                &self.scanner,
            ) {
                Ok(plan) => {
                    self.check_vault(&plan)?;
                    if let Some(t) = since {
                        tracing::warn!(
                            table = %plan.qualified,
                            registry_version = %self.registry.version,
                            held_secs = t.elapsed().as_secs(),
                            "hold released: the registry now has a decision; resuming"
                        );
                        metrics::gauge!(crate::metrics::HELD_ITEMS).set(0.0);
                        metrics::gauge!(crate::metrics::HELD_SECONDS).set(0.0);
                    }
                    return Ok(plan);
                }
                Err(e) => e,
            };
            if since.is_none() {
                // Everything before the hold point goes out; nothing after it. (Boxed: flushing
                // can hold on a scanner hit, which plans tables again.)
                Box::pin(self.flush_rows(link)).await?;
                let (table, column, type_name) = problem.subject();
                tracing::warn!(
                    table = %table,
                    column = %column,
                    type_name = %type_name,
                    reason = %problem,
                    registry_version = %self.registry.version,
                    "stream HELD: no registry decision; nothing after this point is published                      until a reviewer decides (veil registry pending / approve / block)"
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
                since = Some(std::time::Instant::now());
            }
            self.wait_for_registry_change(link, since).await?;
        }
    }

    /// Waits (held) until the registry's files change, keeping the replication connection alive
    /// with status updates that confirm only what Kafka acknowledged.
    async fn wait_for_registry_change(
        &mut self,
        link: &mut Link<'_>,
        since: Option<std::time::Instant>,
    ) -> Result<(), StreamError> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HOLD_POLL) => {}
                _ = link.shutdown.changed() => {}
            }
            if *link.shutdown.borrow() {
                return Err(StreamError::StoppedWhileHeld);
            }
            if let Some(repl) = link.repl.as_deref_mut() {
                let acked = self.publisher.acked_lsn();
                repl.send_copy(&status_update(link.received.max(acked), acked))
                    .await?;
            }
            if let Some(t) = since {
                metrics::gauge!(crate::metrics::HELD_SECONDS).set(t.elapsed().as_secs_f64());
            }
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

    /// Samples transformed rows and scans their safe text columns with the high-precision
    /// detectors. Returns (table, column, detector, count) of every hit.
    pub fn scan_rows<'p>(
        &mut self,
        rows: impl Iterator<Item = (&'p TablePlan, &'p [proto::Value])>,
    ) -> Vec<(String, String, &'static str, usize)> {
        let mut hits: std::collections::BTreeMap<(String, String, &'static str), usize> =
            std::collections::BTreeMap::new();
        if self.scan_every == 0 {
            return Vec::new();
        }
        for (plan, row) in rows {
            self.scan_counter += 1;
            if !self.scan_counter.is_multiple_of(self.scan_every) {
                continue;
            }
            self.window.scanned += 1;
            for (column, value) in plan.scanned(row) {
                for d in self.scanner.strong_hits(value) {
                    *hits
                        .entry((plan.qualified.clone(), column.to_owned(), d.name()))
                        .or_default() += 1;
                }
            }
        }
        hits.into_iter()
            .map(|((t, c, d), n)| (t, c, d, n))
            .collect()
    }

    /// A scanner hit in a column classified safe: nothing of the batch is published; the stream
    /// holds until the registry changes (reclassify the column, or record `scan = false` for a
    /// reviewed false positive).
    pub async fn hold_for_scan(
        &mut self,
        hits: &[(String, String, &'static str, usize)],
        link: &mut Link<'_>,
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
        let since = std::time::Instant::now();
        self.wait_for_registry_change(link, Some(since)).await?;
        metrics::gauge!(crate::metrics::HELD_ITEMS).set(0.0);
        metrics::gauge!(crate::metrics::HELD_SECONDS).set(0.0);
        Ok(())
    }

    /// Plans a known table again under the current registry (holding if it does not plan).
    pub async fn replan(
        &mut self,
        oid: u32,
        link: &mut Link<'_>,
    ) -> Result<Arc<TablePlan>, StreamError> {
        let (info, keys) = self.described.get(&oid).cloned().ok_or_else(|| {
            StreamError::Protocol(format!("relation oid {oid} was never described"))
        })?;
        let plan = self.plan_or_hold(&info, &keys, link).await?;
        self.publish_schema_if_changed(&plan).await?;
        self.remember_schema(&plan);
        Ok(self.plans[&oid].clone())
    }

    /// Reloads the registry when its files changed and plans every known table again (a
    /// stricter decision takes effect at once; a table that no longer plans holds the stream).
    pub async fn reload_registry(&mut self, link: &mut Link<'_>) -> Result<(), StreamError> {
        match Registry::load(&self.registry_dir) {
            Ok(r) if r.version != self.registry.version => {
                tracing::info!(from = %self.registry.version, to = %r.version, "registry changed; planning tables again");
                self.flush_rows(link).await?;
                let before = std::mem::replace(&mut self.registry, r);
                self.audit_decisions(&before).await?;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "registry does not load; keeping the loaded version");
            }
        }
        self.replan_stale(link).await
    }

    /// Plans again every table whose plan an older registry made (the registry may also have
    /// changed while the stream was held on another table), holding where the new registry has
    /// no decision. Loops because a hold can end with yet another registry.
    async fn replan_stale(&mut self, link: &mut Link<'_>) -> Result<(), StreamError> {
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
            self.flush_rows(link).await?;
            for oid in stale {
                self.replan(oid, link).await?;
            }
        }
    }

    /// The plan of a relation, planned again first if the registry changed since.
    async fn current_plan(
        &mut self,
        oid: u32,
        link: &mut Link<'_>,
    ) -> Result<Arc<TablePlan>, StreamError> {
        let plan = self.plan(oid)?;
        if plan.registry_version == self.registry.version {
            return Ok(plan);
        }
        self.replan_stale(link).await?;
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

    async fn publish_schema_if_changed(&mut self, plan: &TablePlan) -> Result<(), StreamError> {
        if !plan.blocked && self.published_schemas.get(&plan.qualified) != Some(&plan.schema) {
            tracing::info!(table = %plan.qualified, "publishing table schema");
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
        if self.vault.is_none() && !cols.is_empty() {
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
        &self,
        items: &[T],
        f: impl Fn(&T, &dyn TokenStore, &mut Vec<VaultRequest>) -> Result<R, GateError>,
    ) -> Result<Vec<R>, StreamError> {
        let store: &dyn TokenStore = match &self.vault {
            Some(v) => v,
            None => &NoVault,
        };
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
        let vault = self.vault.as_ref().ok_or_else(|| {
            StreamError::Config(ConfigError::Invalid(
                "a column uses vault-held tokens, but no [vault] is configured".into(),
            ))
        })?;
        metrics::counter!(crate::metrics::VAULT_ROUND_TRIPS).increment(1);
        vault.allocate(std::mem::take(&mut misses)).await?;
        for i in missed {
            out[i] = f(&items[i], store, &mut misses)?;
            if !misses.is_empty() {
                return Err(StreamError::Protocol(
                    "vault allocation left a value without a token".into(),
                ));
            }
        }
        Ok(out)
    }

    /// Transforms, scans and publishes the queued row changes, in order.
    async fn flush_rows(&mut self, link: &mut Link<'_>) -> Result<(), StreamError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let mut queue = std::mem::take(&mut self.queue);
        loop {
            let rows = self
                .transform_batch(&queue, |q, store, misses| {
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
                })
                .await?;
            let hits = self.scan_rows(
                queue
                    .iter()
                    .zip(&rows)
                    .map(|(q, (new, _, _))| (&*q.plan, new.as_slice())),
            );
            if hits.is_empty() {
                for (q, (new, old, full)) in queue.iter().zip(rows) {
                    self.row(&q.plan, q.op, new, old, full).await?;
                }
                return Ok(());
            }
            self.hold_for_scan(&hits, link).await?;
            // The registry changed: plan the batch's tables again and transform it again.
            let oids: std::collections::BTreeSet<u32> = queue.iter().map(|q| q.plan.oid).collect();
            for oid in oids {
                let plan = self.replan(oid, link).await?;
                for q in queue.iter_mut().filter(|q| q.plan.oid == oid) {
                    q.plan = plan.clone();
                }
            }
        }
    }

    async fn queue_row(&mut self, row: QueuedRow, link: &mut Link<'_>) -> Result<(), StreamError> {
        self.queue.push(row);
        if self.queue.len() >= ROW_BATCH {
            self.flush_rows(link).await?;
        }
        Ok(())
    }

    pub fn remember_schema(&mut self, plan: &TablePlan) {
        self.published_schemas
            .insert(plan.qualified.clone(), plan.schema.clone());
        self.plans.insert(plan.oid, Arc::new(plan.clone()));
    }

    async fn begin(
        &mut self,
        commit_lsn: u64,
        commit_time: i64,
        xid: u32,
    ) -> Result<(), StreamError> {
        self.txn = Some(TxnState { rows: 0 });
        self.publish(
            proto::Phase::Stream,
            Event::Begin(proto::Begin {
                commit_lsn,
                commit_time_us: pg_time_to_unix_us(commit_time),
                xid,
            }),
            None,
        )
        .await
    }

    async fn commit(
        &mut self,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
        link: &mut Link<'_>,
    ) -> Result<(), StreamError> {
        self.flush_rows(link).await?;
        let rows = self.txn.take().map(|t| t.rows).unwrap_or(0);
        self.last_commit_lsn = commit_lsn;
        self.publish(
            proto::Phase::Stream,
            Event::Commit(proto::Commit {
                commit_lsn,
                end_lsn,
                commit_time_us: pg_time_to_unix_us(commit_time),
                rows,
            }),
            Some(end_lsn),
        )
        .await?;
        metrics::counter!(crate::metrics::TRANSACTIONS).increment(1);
        if self.window.first_lsn == 0 {
            self.window.first_lsn = commit_lsn;
        }
        self.window.last_lsn = commit_lsn;
        if now_us() - self.window.start_us >= self.window_secs as i64 * 1_000_000 {
            self.close_window().await?;
        }
        Ok(())
    }

    /// A `veil_ddl` message (written inside the DDL's transaction by the event trigger): the
    /// changed table is compared with the registry at once, so a schema change holds the stream
    /// at the DDL itself, before any row of the new shape and even if none ever comes.
    async fn ddl(&mut self, content: &[u8], link: &mut Link<'_>) -> Result<(), StreamError> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
            tracing::warn!("ignoring a veil_ddl message that is not JSON");
            return Ok(());
        };
        let tag = v["tag"].as_str().unwrap_or("");
        let object = v["object"].as_str().unwrap_or("");
        if !matches!(
            tag,
            "CREATE TABLE" | "ALTER TABLE" | "CREATE TABLE AS" | "SELECT INTO"
        ) {
            return Ok(());
        }
        // The catalog as it is now; a table dropped since is no longer anyone's concern.
        let oid: Option<u32> = self
            .catalog
            .query_opt(
                "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p') \
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables t WHERE t.pubname = $2 \
                   AND (quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))::regclass = c.oid)",
                &[&object, &self.publication],
            )
            .await
            .map_err(|e| StreamError::Postgres(crate::pg::errors::PgError::new("look up DDL target", &e)))?
            .map(|r| r.get(0));
        let Some(oid) = oid else { return Ok(()) };
        let info = catalog::describe_table(&self.catalog, oid, None).await?;
        let keys = info.primary_key.clone();
        tracing::info!(table = %info.qualified(), tag, "schema change seen; checking it against the registry");
        self.plan_or_hold(&info, &keys, link).await?;
        // The table's shape from here on: planning it again under a newer registry must use it.
        if self.described.contains_key(&oid) {
            self.described.insert(oid, (info, keys));
        }
        Ok(())
    }

    /// Counts published rows for the audit window.
    pub fn count_rows(&mut self, table: &str, op: &'static str, n: u64) {
        let ops = match self.window.rows.get_mut(table) {
            Some(ops) => ops,
            None => self.window.rows.entry(table.to_owned()).or_default(),
        };
        *ops.entry(op).or_default() += n;
    }

    /// Marks the snapshot's LSN in the window.
    pub fn window_lsn(&mut self, lsn: u64) {
        if self.window.first_lsn == 0 {
            self.window.first_lsn = lsn;
        }
        self.window.last_lsn = lsn;
    }

    async fn relation(&mut self, rel: Relation, link: &mut Link<'_>) -> Result<(), StreamError> {
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
        let info = catalog::describe_table(&self.catalog, rel.oid, Some(&cols)).await?;
        let plan = self.plan_or_hold(&info, &keys, link).await?;
        self.flush_rows(link).await?;
        self.publish_schema_if_changed(&plan).await?;
        self.remember_schema(&plan);
        self.described.insert(rel.oid, (info, keys));
        Ok(())
    }

    fn plan(&self, oid: u32) -> Result<Arc<TablePlan>, StreamError> {
        self.plans.get(&oid).cloned().ok_or_else(|| {
            StreamError::Protocol(format!(
                "change for relation oid {oid} before its Relation message"
            ))
        })
    }

    async fn row(
        &mut self,
        plan: &TablePlan,
        op: proto::Op,
        new: Vec<proto::Value>,
        old: Vec<proto::Value>,
        old_full: bool,
    ) -> Result<(), StreamError> {
        if let Some(t) = self.txn.as_mut() {
            t.rows += 1;
        }
        self.count_rows(&plan.qualified, op.as_str_name(), 1);
        metrics::counter!(crate::metrics::EVENTS, "table" => plan.qualified.clone(), "op" => op.as_str_name()).increment(1);
        self.publish(
            proto::Phase::Stream,
            Event::Row(proto::RowChange {
                table: plan.qualified.clone(),
                op: op as i32,
                new_values: new,
                old_values: old,
                old_is_full: old_full,
            }),
            None,
        )
        .await
    }

    /// Handles one message of a transaction (live or replayed from the spool).
    async fn change(
        &mut self,
        msg: LogicalMessage,
        lsn: u64,
        link: &mut Link<'_>,
    ) -> Result<(), StreamError> {
        match msg {
            LogicalMessage::Relation { relation, .. } => self.relation(relation, link).await?,
            LogicalMessage::Insert {
                relation_oid, new, ..
            } => {
                let plan = self.current_plan(relation_oid, link).await?;
                if !plan.blocked {
                    self.queue_row(
                        QueuedRow {
                            plan,
                            op: proto::Op::Insert,
                            new: Some(new),
                            old: None,
                            lsn,
                        },
                        link,
                    )
                    .await?;
                }
            }
            LogicalMessage::Update {
                relation_oid,
                old,
                new,
                ..
            } => {
                let plan = self.current_plan(relation_oid, link).await?;
                if !plan.blocked {
                    self.queue_row(
                        QueuedRow {
                            plan,
                            op: proto::Op::Update,
                            new: Some(new),
                            old,
                            lsn,
                        },
                        link,
                    )
                    .await?;
                }
            }
            LogicalMessage::Delete {
                relation_oid, old, ..
            } => {
                let plan = self.current_plan(relation_oid, link).await?;
                if !plan.blocked {
                    self.queue_row(
                        QueuedRow {
                            plan,
                            op: proto::Op::Delete,
                            new: None,
                            old: Some(old),
                            lsn,
                        },
                        link,
                    )
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
                    let plan = self.current_plan(oid, link).await?;
                    if !plan.blocked {
                        tables.push(plan.qualified.clone());
                    }
                }
                if !tables.is_empty() {
                    self.flush_rows(link).await?;
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
                    self.ddl(&content, link).await?;
                } else if prefix == HEARTBEAT_PREFIX {
                    self.flush_rows(link).await?;
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

/// A random, non-zero id for this process run.
fn new_run_id() -> u64 {
    rand::random::<u64>().max(1)
}

/// Runs `veil stream` until `shutdown` turns true or an error stops it.
pub async fn run(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<(), StreamError> {
    let src = cfg.source()?.clone();
    let kafka = cfg.kafka()?.clone();
    let registry = Registry::load(&cfg.registry.dir)?;
    let master = MasterKey::new(cfg.master_key()?);
    let pgcfg = src.dsn.parse()?;

    let catalog_client = crate::pg::tls::connect(&pgcfg)
        .await
        .map_err(StreamError::Connect)?;
    catalog::prepare_session(&catalog_client).await?;

    let mut repl = ReplicationConn::connect(&pgcfg).await?;
    let ident = repl.simple_query("IDENTIFY_SYSTEM").await?;
    let row = ident
        .first()
        .ok_or_else(|| StreamError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
    let sysid = row.first().cloned().flatten().unwrap_or_default();
    let database = row.get(3).cloned().flatten().unwrap_or_default();
    let source_id = format!("{sysid}/{database}");

    // Fencing: a predecessor is gone once no slot of ours is active (its walsender exits when
    // the connection drops). Only then is the topic's end worth reading.
    let mut waited = 0;
    loop {
        let busy: Option<String> = catalog_client
            .query_opt(
                "SELECT slot_name::text FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name ~ ('^' || $1 || '_e[0-9]+$') AND active LIMIT 1",
                &[&src.slot],
            )
            .await
            .map_err(|e| {
                StreamError::Postgres(crate::pg::errors::PgError::new("look up slots", &e))
            })?
            .map(|r| r.get(0));
        match busy {
            None => break,
            Some(slot) if waited >= 60 => return Err(StreamError::SlotBusy(slot)),
            Some(_) => {
                waited += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    admin::ensure_topic(&kafka, &kafka.topic, false).await?;
    let (k2, t2) = (kafka.clone(), kafka.topic.clone());
    let tail =
        tokio::task::spawn_blocking(move || admin::read_last(&k2, &t2, Duration::from_millis(700)))
            .await
            .map_err(|e| StreamError::Protocol(format!("tail reader: {e}")))??;

    let vault = match &cfg.vault {
        Some(v) => Some(Vault::connect(v, &master).await?),
        None => None,
    };
    let publisher = Publisher::new(&kafka, &kafka.topic, &source_id)?;
    let mut st = Streamer {
        database: database.clone(),
        source_id: source_id.clone(),
        publication: src.publication.clone(),
        slot_name: String::new(),
        key_id: master.key_id(),
        registry,
        master,
        epoch: 0,
        last_commit_lsn: 0,
        publisher,
        catalog: catalog_client,
        plans: HashMap::new(),
        published_schemas: HashMap::new(),
        txn: None,
        run_id: new_run_id(),
        seq: 0,
        vault,
        queue: Vec::new(),
        registry_dir: cfg.registry.dir.clone(),
        described: HashMap::new(),
        scanner: Arc::new(
            crate::deid::scanner::Scanner::new(&cfg.scanner.mrn_patterns)
                .map_err(|e| ConfigError::Invalid(format!("[scanner] {e}")))?,
        ),
        scan_every: if cfg.scanner.in_flight_sample <= 0.0 {
            0
        } else {
            (1.0 / cfg.scanner.in_flight_sample.min(1.0))
                .round()
                .max(1.0) as u64
        },
        scan_counter: 0,
        phase: proto::Phase::Stream,
        audit: match &cfg.audit {
            Some(a) => Some(
                crate::audit::AuditWriter::open(
                    a,
                    cfg.audit_key()?,
                    &kafka,
                    &format!("stream/{source_id}"),
                )
                .await?,
            ),
            None => None,
        },
        window: WindowAcc {
            start_us: now_us(),
            ..Default::default()
        },
        window_secs: cfg
            .audit
            .as_ref()
            .map(|a| a.window_secs.max(1))
            .unwrap_or(60),
        window_count: 0,
    };

    // Decide: resume the current epoch, or start a new one with a fresh slot and snapshot.
    let mut need_snapshot = true;
    let mut resume_lsn = 0u64;
    if let Some((_, env)) = &tail {
        st.epoch = env.epoch;
        let snapshot_unfinished = env.phase == proto::Phase::Snapshot as i32
            && !matches!(env.event, Some(Event::SnapshotEnd(_)));
        let slot = format!("{}_e{}", src.slot, env.epoch);
        let exists = st
            .catalog
            .query_opt(
                "SELECT wal_status, confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| {
                StreamError::Postgres(crate::pg::errors::PgError::new("look up slot", &e))
            })?;
        let lost = exists
            .as_ref()
            .map(|r| r.get::<_, Option<String>>(0).as_deref() == Some("lost"))
            .unwrap_or(true);
        if snapshot_unfinished {
            tracing::warn!(
                epoch = env.epoch,
                "previous snapshot did not finish: starting a new epoch"
            );
        } else if lost {
            tracing::error!(slot = %slot, "replication slot missing or invalidated (WAL removed): \
                            starting a new epoch with a new snapshot; dev will be rebuilt");
            metrics::counter!(crate::metrics::SLOT_INVALIDATIONS).increment(1);
        } else {
            need_snapshot = false;
            resume_lsn = exists
                .as_ref()
                .and_then(|r| r.get::<_, Option<String>>(1))
                .and_then(|s| pgoutput::parse_lsn(&s))
                .unwrap_or(0);
            st.last_commit_lsn = env.last_commit_lsn;
            st.slot_name = slot;
        }
    }

    let start_lsn = if need_snapshot {
        // The new epoch is above the topic's and above every slot of ours (a predecessor killed
        // before its first delivery leaves a slot but nothing in the topic).
        let slot_epochs: Vec<String> = st
            .catalog
            .query(
                "SELECT substring(slot_name::text FROM '_e([0-9]+)$') FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name ~ ('^' || $1 || '_e[0-9]+$')",
                &[&src.slot],
            )
            .await
            .map_err(|e| StreamError::Postgres(crate::pg::errors::PgError::new("list slots", &e)))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let max_slot_epoch = slot_epochs
            .iter()
            .filter_map(|e| e.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        st.epoch = st.epoch.max(max_slot_epoch) + 1;
        st.slot_name = format!("{}_e{}", src.slot, st.epoch);
        // Drop slots of earlier epochs (ours only).
        let pattern = format!("{}_e%", src.slot.replace('_', "\\_"));
        st.catalog
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name LIKE $1 AND slot_name ~ ('^' || $2 || '_e[0-9]+$') AND NOT active",
                &[&pattern, &src.slot],
            )
            .await
            .map_err(|e| StreamError::Postgres(crate::pg::errors::PgError::new("drop old slots", &e)))?;
        let created = repl
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT \"{}\" LOGICAL pgoutput (SNAPSHOT 'export')",
                st.slot_name
            ))
            .await?;
        let row = created.first().ok_or_else(|| {
            StreamError::Protocol("CREATE_REPLICATION_SLOT returned no row".into())
        })?;
        let consistent = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|s| pgoutput::parse_lsn(&s))
            .ok_or_else(|| StreamError::Protocol("no consistent point".into()))?;
        let snapshot_name = row
            .get(2)
            .cloned()
            .flatten()
            .ok_or_else(|| StreamError::Protocol("no exported snapshot".into()))?;
        tracing::info!(epoch = st.epoch, slot = %st.slot_name, lsn = %fmt_lsn(consistent), "slot created; snapshot starts");
        let snap = crate::pg::tls::connect(&pgcfg)
            .await
            .map_err(StreamError::Connect)?;
        let mut link = Link {
            repl: None,
            shutdown: &mut shutdown,
            received: 0,
        };
        match super::snapshot::run(&mut st, &snap, &snapshot_name, consistent, &mut link).await {
            Ok(_) => {}
            Err(StreamError::StoppedWhileHeld) => {
                tracing::info!(
                    "stopped while the snapshot was held; the next start snapshots again"
                );
                repl.terminate().await;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        consistent
    } else {
        tracing::info!(epoch = st.epoch, slot = %st.slot_name, lsn = %fmt_lsn(resume_lsn), "resuming");
        resume_lsn
    };

    let config_hash = blake3::hash(format!("{cfg:?}").as_bytes()).to_hex()[..16].to_owned();
    st.audit_run_start(&config_hash).await?;
    st.publish(
        proto::Phase::Stream,
        Event::StreamStart(proto::StreamStart {
            resume_lsn: start_lsn,
            veil_version: env!("CARGO_PKG_VERSION").into(),
        }),
        None,
    )
    .await?;

    repl.start_replication(&format!(
        "START_REPLICATION SLOT \"{}\" LOGICAL {} (proto_version '2', streaming 'on', messages 'true', \
         publication_names {})",
        st.slot_name,
        fmt_lsn(start_lsn),
        crate::pg::quote::literal(&format!("\"{}\"", src.publication))
    ))
    .await?;
    metrics::gauge!(crate::metrics::EPOCH).set(st.epoch as f64);

    let mut spool = Spool::new(src.spool_dir.clone(), src.spool_memory_bytes);
    let mut in_stream: Option<u32> = None;
    let mut received: u64 = start_lsn;
    let mut server_end: u64 = start_lsn;
    let mut confirmed: u64 = start_lsn;
    let mut status = tokio::time::interval(Duration::from_secs(src.status_interval_secs.max(1)));
    let hb_secs = if src.heartbeat_interval_secs == 0 {
        3600 * 24 * 365
    } else {
        src.heartbeat_interval_secs
    };
    let mut heartbeat = tokio::time::interval(Duration::from_secs(hb_secs));
    heartbeat.tick().await;

    loop {
        if let Some(e) = st.publisher.failure() {
            return Err(e.into());
        }
        let mut reply = false;
        let mut link = Link {
            repl: None,
            shutdown: &mut shutdown,
            received,
        };
        let step: Result<(), StreamError> = async {
        tokio::select! {
            _ = link.shutdown.changed() => {}
            _ = status.tick() => { reply = true; }
            _ = heartbeat.tick(), if src.heartbeat_interval_secs > 0 => {
                if let Err(e) = st.catalog
                    .execute("SELECT pg_catalog.pg_logical_emit_message(true, $1, '')", &[&HEARTBEAT_PREFIX])
                    .await {
                    tracing::warn!(error = %e, "heartbeat message failed");
                }
            }
            data = repl.recv_copy() => {
                let data = data?;
                match pgoutput::decode_replication(&data)? {
                    ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
                        server_end = server_end.max(wal_end);
                        reply = reply_requested;
                    }
                    ReplicationMessage::XLogData { wal_start, data, .. } => {
                        received = received.max(wal_start);
                        if let Some(top) = in_stream {
                            let msg = pgoutput::decode_logical(data, true)?;
                            match msg {
                                LogicalMessage::StreamStop => in_stream = None,
                                m => {
                                    let sub = m.stream_xid().unwrap_or(top);
                                    spool.push(top, sub, data)?;
                                }
                            }
                        } else {
                            let msg = pgoutput::decode_logical(data, false)?;
                            match msg {
                                LogicalMessage::Begin { final_lsn, commit_time_us, xid } => {
                                    st.begin(final_lsn, commit_time_us, xid).await?;
                                }
                                LogicalMessage::Commit { commit_lsn, end_lsn, commit_time_us, .. } => {
                                    link.repl = Some(&mut repl);
                                    st.commit(commit_lsn, end_lsn, commit_time_us, &mut link).await?;
                                }
                                LogicalMessage::StreamStart { xid, .. } => in_stream = Some(xid),
                                LogicalMessage::StreamStop => {}
                                LogicalMessage::StreamAbort { xid, subxid } => spool.abort(xid, subxid),
                                LogicalMessage::StreamCommit { xid, commit_lsn, end_lsn, commit_time_us, .. } => {
                                    let mut reader = spool.take(xid)?;
                                    st.begin(commit_lsn, commit_time_us, xid).await?;
                                    link.repl = Some(&mut repl);
                                    while let Some(raw) = reader.next_message()? {
                                        let m = pgoutput::decode_logical(&raw, true)?;
                                        st.change(m, commit_lsn, &mut link).await?;
                                    }
                                    st.commit(commit_lsn, end_lsn, commit_time_us, &mut link).await?;
                                }
                                m => {
                                    link.repl = Some(&mut repl);
                                    st.change(m, wal_start, &mut link).await?
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
        }
        .await;
        match step {
            Ok(()) => {}
            Err(StreamError::StoppedWhileHeld) => break,
            Err(e) => {
                // Error messages name tables, columns, types and LSNs, never values.
                let body = proto::audit_record::Body::Error(proto::AuditError {
                    message: e.to_string(),
                });
                if let Err(ae) = st.audit(body).await {
                    tracing::warn!(error = %ae, "could not audit the error");
                }
                return Err(e);
            }
        }
        if *shutdown.borrow() {
            break;
        }
        if reply {
            let mut link = Link {
                repl: Some(&mut repl),
                shutdown: &mut shutdown,
                received,
            };
            match st.reload_registry(&mut link).await {
                Ok(()) => {}
                Err(StreamError::StoppedWhileHeld) => break,
                Err(e) => return Err(e),
            }
            st.observe_slot().await;
            let acked = st.publisher.acked_lsn();
            let idle = st.publisher.inflight() == 0 && st.txn.is_none() && in_stream.is_none();
            confirmed = confirmed.max(acked);
            if idle {
                confirmed = confirmed.max(server_end);
            }
            let write = received.max(confirmed);
            repl.send_copy(&status_update(write, confirmed)).await?;
            metrics::gauge!(crate::metrics::CONFIRMED_LSN).set(confirmed as f64);
            metrics::gauge!(crate::metrics::REPLICATION_LAG_BYTES)
                .set(server_end.max(received).saturating_sub(confirmed) as f64);
            metrics::gauge!(crate::metrics::SPOOL_BYTES).set(spool.memory_bytes() as f64);
        }
    }
    // Orderly stop: wait for what is in flight, confirm it, leave.
    let _ = tokio::time::timeout(Duration::from_secs(30), st.publisher.drain()).await;
    let acked = st.publisher.acked_lsn().max(confirmed);
    let _ = repl.send_copy(&status_update(acked, acked)).await;
    repl.terminate().await;
    st.close_window().await?;
    let body = proto::audit_record::Body::RunStop(proto::RunStop {
        run_id: st.run_id,
        reason: "shutdown requested".into(),
    });
    st.audit(body).await?;
    tracing::info!(confirmed = %fmt_lsn(acked), "stream stopped");
    Ok(())
}
