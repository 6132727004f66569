//! Prometheus metrics: names in one place (the Grafana dashboard and alert rules in `ops/`
//! refer to them), and the `/metrics` endpoint. Labels are table names and operations — never
//! row values.

use std::net::SocketAddr;

pub const REPLICATION_LAG_BYTES: &str = "veil_replication_lag_bytes";
pub const CONFIRMED_LSN: &str = "veil_confirmed_lsn";
pub const EVENTS: &str = "veil_events_total";
pub const TRANSACTIONS: &str = "veil_transactions_total";
pub const SNAPSHOT_ROWS: &str = "veil_snapshot_rows_total";
pub const SCHEMA_CHANGES: &str = "veil_schema_changes_total";
pub const SLOT_INVALIDATIONS: &str = "veil_slot_invalidations_total";
pub const SPOOL_BYTES: &str = "veil_spool_memory_bytes";
pub const EPOCH: &str = "veil_epoch";
pub const SCANNER_HITS: &str = "veil_scanner_hits_total";
pub const HELD_ITEMS: &str = "veil_held_items";
pub const HELD_SECONDS: &str = "veil_held_seconds";
pub const HOLDS: &str = "veil_holds_total";
pub const RETAINED_WAL_BYTES: &str = "veil_slot_retained_wal_bytes";
pub const VAULT_ALLOCATED: &str = "veil_vault_tokens_allocated_total";
pub const VAULT_CACHE_RESETS: &str = "veil_vault_cache_resets_total";
pub const VAULT_ROUND_TRIPS: &str = "veil_vault_round_trips_total";
pub const SINK_APPLIED_ROWS: &str = "veil_sink_applied_rows_total";
pub const SINK_APPLIED_TXNS: &str = "veil_sink_applied_transactions_total";
pub const SINK_APPLY_LAG_SECONDS: &str = "veil_sink_apply_lag_seconds";
pub const SINK_LAST_COMMIT_LSN: &str = "veil_sink_last_commit_lsn";
pub const SINK_DUPLICATES: &str = "veil_sink_duplicate_events_total";
pub const SINK_REFETCHES: &str = "veil_sink_refetches_total";
pub const SINK_SKIPPED_TXNS: &str = "veil_sink_skipped_transactions_total";
/// Updates and deletes of rows dev does not hold (`table`, `op`): counted, never fatal.
pub const SINK_ROWS_MISSING: &str = "veil_sink_rows_missing_total";
/// In-process retries after a transient error (`component` = stream | sink).
pub const RESTARTS: &str = "veil_restarts_total";
/// Events larger than the message limit, sent as fragments.
pub const FRAGMENTED_EVENTS: &str = "veil_fragmented_events_total";
/// Events that shared a Kafka message with others (the stream batches what it publishes
/// together).
pub const BATCHED_EVENTS: &str = "veil_batched_events_total";
/// Rows an online backfill published (`table`).
pub const BACKFILL_ROWS: &str = "veil_backfill_rows_total";
/// Rows an online backfill still has to read, by the planner's estimate (`table`).
pub const BACKFILL_REMAINING: &str = "veil_backfill_remaining_rows";
/// Seconds an online backfill still needs at its rate so far (`table`).
pub const BACKFILL_ETA: &str = "veil_backfill_eta_seconds";
/// Online backfills that failed (`table`): each also has an audit record saying why.
pub const BACKFILL_FAILURES: &str = "veil_backfill_failures_total";
/// Online backfills not yet over.
pub const BACKFILLS_RUNNING: &str = "veil_backfills_running";
/// Time per stage of the data path (`component`, `stage`), in microseconds: where the time
/// goes (stream: decode, transform, vault, publish; sink: consume — which includes waiting for
/// the broker —, apply, commit).
pub const STAGE_BUSY: &str = "veil_stage_busy_microseconds_total";

/// Every metric name veil exports (the ops files may use only these).
pub const ALL: &[&str] = &[
    REPLICATION_LAG_BYTES,
    CONFIRMED_LSN,
    EVENTS,
    TRANSACTIONS,
    SNAPSHOT_ROWS,
    SCHEMA_CHANGES,
    SLOT_INVALIDATIONS,
    SPOOL_BYTES,
    EPOCH,
    SCANNER_HITS,
    HELD_ITEMS,
    HELD_SECONDS,
    HOLDS,
    RETAINED_WAL_BYTES,
    VAULT_ALLOCATED,
    VAULT_CACHE_RESETS,
    VAULT_ROUND_TRIPS,
    SINK_APPLIED_ROWS,
    SINK_APPLIED_TXNS,
    SINK_APPLY_LAG_SECONDS,
    SINK_LAST_COMMIT_LSN,
    SINK_DUPLICATES,
    SINK_REFETCHES,
    SINK_SKIPPED_TXNS,
    SINK_ROWS_MISSING,
    FRAGMENTED_EVENTS,
    BATCHED_EVENTS,
    RESTARTS,
    BACKFILL_ROWS,
    BACKFILL_REMAINING,
    BACKFILL_ETA,
    BACKFILL_FAILURES,
    BACKFILLS_RUNNING,
    STAGE_BUSY,
];

/// Registers a process's unlabelled counters and gauges at zero, so dashboards and alerts see a
/// series (and `rate()` a start) before the first event of each kind.
pub fn zero(component: &'static str) {
    let counters: &[&'static str] = match component {
        "stream" => &[
            TRANSACTIONS,
            SLOT_INVALIDATIONS,
            HOLDS,
            VAULT_ALLOCATED,
            VAULT_CACHE_RESETS,
            VAULT_ROUND_TRIPS,
            FRAGMENTED_EVENTS,
            BATCHED_EVENTS,
        ],
        _ => &[
            SINK_APPLIED_ROWS,
            SINK_APPLIED_TXNS,
            SINK_DUPLICATES,
            SINK_REFETCHES,
            SINK_SKIPPED_TXNS,
        ],
    };
    for name in counters {
        metrics::counter!(*name).increment(0);
    }
    metrics::counter!(RESTARTS, "component" => component).increment(0);
    if component == "stream" {
        metrics::gauge!(HELD_ITEMS).set(0.0);
        metrics::gauge!(HELD_SECONDS).set(0.0);
        metrics::gauge!(BACKFILLS_RUNNING).set(0.0);
    }
}

/// Busy time of a hot path's stages, summed locally (no metric lookup per row) and added to
/// [`STAGE_BUSY`] by [`StageClock::report`] now and then.
pub struct StageClock {
    component: &'static str,
    names: &'static [&'static str],
    nanos: Vec<u64>,
}

impl StageClock {
    pub fn new(component: &'static str, names: &'static [&'static str]) -> Self {
        StageClock {
            component,
            names,
            nanos: vec![0; names.len()],
        }
    }

    /// Adds the time since `since` to stage `i` (an index into the names).
    pub fn add(&mut self, i: usize, since: std::time::Instant) {
        self.add_duration(i, since.elapsed());
    }

    pub fn add_duration(&mut self, i: usize, d: std::time::Duration) {
        if let Some(n) = self.nanos.get_mut(i) {
            *n += d.as_nanos() as u64;
        }
    }

    /// Moves the whole microseconds summed so far into the metric.
    pub fn report(&mut self) {
        for (name, n) in self.names.iter().zip(self.nanos.iter_mut()) {
            let us = *n / 1000;
            if us > 0 {
                metrics::counter!(STAGE_BUSY, "component" => self.component, "stage" => *name)
                    .increment(us);
                *n -= us * 1000;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics listen address {addr:?} is not host:port")]
    Address { addr: String },
    #[error("cannot start the metrics endpoint: {0}")]
    Install(String),
}

/// Starts the `/metrics` endpoint on `listen` (e.g. `127.0.0.1:9187`).
pub fn install(listen: &str) -> Result<(), MetricsError> {
    let addr: SocketAddr = listen.parse().map_err(|_| MetricsError::Address {
        addr: listen.into(),
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| MetricsError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    /// The dashboard and the alert rules refer only to metrics veil exports.
    #[test]
    fn ops_files_use_existing_metric_names() {
        let re = regex::Regex::new(r"veil_[a-z_]+").unwrap();
        for (name, text) in [
            (
                "ops/prometheus-alerts.yml",
                include_str!("../../../ops/prometheus-alerts.yml"),
            ),
            (
                "ops/grafana-dashboard.json",
                include_str!("../../../ops/grafana-dashboard.json"),
            ),
        ] {
            let mut used = 0;
            for m in re.find_iter(text) {
                let n = m.as_str();
                if n == "veil_" || n.starts_with("veil_e") && n.len() < 8 {
                    continue;
                }
                used += 1;
                assert!(super::ALL.contains(&n), "{name} uses unknown metric {n}");
            }
            assert!(used > 5, "{name}");
        }
        serde_json::from_str::<serde_json::Value>(include_str!(
            "../../../ops/grafana-dashboard.json"
        ))
        .unwrap();
    }
}
