//! What ops and reviewers want to see first, read-only and value-free: the stream's slots
//! (active, confirmed LSN, retained WAL, lag), what it is held on and since when, the sink's
//! position in dev, the online backfills not yet over and the last audit window. Used by `veil
//! status` and the review page.

use serde::Serialize;

use crate::config::Config;
use crate::review::error::ReviewError;

/// One of the stream's replication slots (`<slot>_e<N>`).
#[derive(Debug, Clone, Serialize)]
pub struct SlotState {
    pub slot: String,
    pub active: bool,
    pub confirmed_lsn: String,
    /// WAL production keeps for the slot (from its restart LSN), bytes.
    pub retained_bytes: i64,
    /// WAL written since the slot's confirmed LSN, bytes.
    pub lag_bytes: i64,
}

/// What the stream recorded it is held on (`_veil.held`).
#[derive(Debug, Clone, Serialize)]
pub struct HeldState {
    pub slot: String,
    pub table: String,
    pub column: String,
    pub type_name: String,
    pub reason: String,
    pub since: String,
    pub held_secs: i64,
}

/// An online backfill not yet over, as the stream keeps it (`_veil.backfills`).
#[derive(Debug, Clone, Serialize)]
pub struct BackfillState {
    pub table: String,
    /// Rows published so far, and the planner's estimate at its start.
    pub rows: i64,
    pub estimate: i64,
    pub chunks: i64,
    pub reason: String,
    /// Its last chunk is published (the row goes once the broker acknowledged it).
    pub finished: bool,
    pub running_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamState {
    /// `streaming`, `held`, `stopped` (a slot, no reader) or `not started` (no slot).
    pub state: &'static str,
    pub slots: Vec<SlotState>,
    pub held: Vec<HeldState>,
    pub backfills: Vec<BackfillState>,
}

fn pgerr(what: &'static str) -> impl Fn(tokio_postgres::Error) -> ReviewError {
    move |e| ReviewError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// The stream's state as production sees it.
pub async fn stream_state(cfg: &Config) -> Result<StreamState, ReviewError> {
    let src = cfg.source()?;
    let target = src.dsn.parse()?;
    let client = crate::pg::tls::connect(&target)
        .await
        .map_err(ReviewError::Connect)?;
    let slots: Vec<SlotState> = client
        .query(
            "SELECT slot_name::text, active, coalesce(confirmed_flush_lsn::text, ''), \
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8, \
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8 \
             FROM pg_catalog.pg_replication_slots \
             WHERE slot_name::text ~ ('^' || $1 || '_e[0-9]+$') ORDER BY slot_name",
            &[&src.slot],
        )
        .await
        .map_err(pgerr("read replication slots"))?
        .iter()
        .map(|r| SlotState {
            slot: r.get(0),
            active: r.get(1),
            confirmed_lsn: r.get(2),
            retained_bytes: r.get(3),
            lag_bytes: r.get(4),
        })
        .collect();
    let has_held: bool = client
        .query_one("SELECT to_regclass('_veil.held') IS NOT NULL", &[])
        .await
        .map_err(pgerr("look for _veil.held"))?
        .get(0);
    let held: Vec<HeldState> = if has_held {
        client
            .query(
                "SELECT slot, tbl, col, type_name, reason, \
                        to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                        extract(epoch FROM now() - since)::int8 \
                 FROM _veil.held ORDER BY since",
                &[],
            )
            .await
            .map_err(pgerr("read the stream's holds"))?
            .iter()
            .map(|r| HeldState {
                slot: r.get(0),
                table: r.get(1),
                column: r.get(2),
                type_name: r.get(3),
                reason: r.get(4),
                since: r.get(5),
                held_secs: r.get(6),
            })
            .collect()
    } else {
        Vec::new()
    };
    let has_backfills: bool = client
        .query_one("SELECT to_regclass('_veil.backfills') IS NOT NULL", &[])
        .await
        .map_err(pgerr("look for _veil.backfills"))?
        .get(0);
    let backfills: Vec<BackfillState> = if has_backfills {
        client
            .query(
                "SELECT tbl, coalesce((state->'positions'->-1->>'rows')::int8, 0), \
                        coalesce((state->>'estimate')::int8, 0), \
                        coalesce((state->'positions'->-1->>'no')::int8, 0), \
                        coalesce(state->>'reason', ''), state->'finished_lsn' <> 'null'::jsonb, \
                        greatest(extract(epoch FROM now())::int8 - (state->>'started_at_us')::int8 / 1000000, 0) \
                 FROM _veil.backfills WHERE slot ~ ('^' || $1 || '_e[0-9]+$') ORDER BY tbl",
                &[&src.slot],
            )
            .await
            .map_err(pgerr("read the stream's backfills"))?
            .iter()
            .map(|r| BackfillState {
                table: r.get(0),
                rows: r.get(1),
                estimate: r.get(2),
                chunks: r.get(3),
                reason: r.get(4),
                finished: r.get::<_, Option<bool>>(5).unwrap_or(false),
                running_secs: r.get(6),
            })
            .collect()
    } else {
        Vec::new()
    };
    let state = if !held.is_empty() {
        "held"
    } else if slots.iter().any(|s| s.active) {
        "streaming"
    } else if slots.is_empty() {
        "not started"
    } else {
        "stopped"
    };
    Ok(StreamState {
        state,
        slots,
        held,
        backfills,
    })
}

/// The sink's checkpoint in dev.
#[derive(Debug, Clone, Serialize)]
pub struct SinkState {
    pub topic: String,
    pub offset: i64,
    pub epoch: i64,
    pub last_commit_lsn: String,
    /// Production's commit time of the last applied transaction, and how long ago that was.
    pub last_commit_time: Option<String>,
    pub behind_secs: Option<i64>,
    pub updated_at: String,
}

/// The sink's position, read from dev (`[sink] dsn`).
pub async fn sink_state(cfg: &Config) -> Result<Vec<SinkState>, ReviewError> {
    let target = cfg.sink()?.dsn.parse()?;
    let client = crate::pg::tls::connect(&target)
        .await
        .map_err(ReviewError::Connect)?;
    let has: bool = client
        .query_one(
            "SELECT to_regclass('veil_sink.checkpoint') IS NOT NULL",
            &[],
        )
        .await
        .map_err(pgerr("look for the sink's checkpoint"))?
        .get(0);
    if !has {
        return Ok(Vec::new());
    }
    Ok(client
        .query(
            "SELECT topic, kafka_offset, epoch, last_commit_lsn, \
                    to_char(last_commit_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    extract(epoch FROM now() - last_commit_time)::int8, \
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM veil_sink.checkpoint ORDER BY topic",
            &[],
        )
        .await
        .map_err(pgerr("read the sink's checkpoint"))?
        .iter()
        .map(|r| SinkState {
            topic: r.get(0),
            offset: r.get(1),
            epoch: r.get(2),
            last_commit_lsn: crate::pg::lsn::fmt_lsn(r.get::<_, i64>(3) as u64),
            last_commit_time: r.get(4),
            behind_secs: r.get(5),
            updated_at: r.get(6),
        })
        .collect())
}

/// The last audit window in the archive (`[audit] archive_dsn`): when, and its body.
pub async fn last_window(cfg: &Config) -> Result<Option<(String, serde_json::Value)>, String> {
    let client = crate::audit::archive::archive_client(cfg)
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_opt(
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), body::text \
             FROM veil_audit.records WHERE kind = 'window' ORDER BY at DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| {
            crate::pg::errors::PgError::new("read the last audit window", &e).to_string()
        })?;
    Ok(row.map(|r| {
        (
            r.get(0),
            serde_json::from_str(&r.get::<_, String>(1)).unwrap_or_default(),
        )
    }))
}

/// A size in bytes for people (`1.5 MiB`).
pub fn human_bytes(n: i64) -> String {
    let mut v = n.max(0) as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return if unit == "B" {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
}

/// `veil status`: one screen, what ops want first when paged.
pub async fn print(cfg: &Config) -> Result<(), ReviewError> {
    let s = stream_state(cfg).await?;
    println!("stream: {}", s.state);
    for slot in &s.slots {
        println!(
            "  slot {}: {}, confirmed {}, lag {}, retained WAL {}",
            slot.slot,
            if slot.active { "active" } else { "inactive" },
            if slot.confirmed_lsn.is_empty() {
                "-"
            } else {
                &slot.confirmed_lsn
            },
            human_bytes(slot.lag_bytes),
            human_bytes(slot.retained_bytes)
        );
    }
    for h in &s.held {
        println!(
            "  HELD on {}.{} ({}) since {} ({} s): {}",
            h.table, h.column, h.type_name, h.since, h.held_secs, h.reason
        );
    }
    for b in &s.backfills {
        println!(
            "  backfill of {}: {} rows of {} in {} chunks, {} s{} ({})",
            b.table,
            b.rows,
            if b.estimate > 0 {
                format!("about {}", b.estimate)
            } else {
                "an unknown number (no statistics yet)".into()
            },
            b.chunks,
            b.running_secs,
            if b.finished {
                ", last chunk published"
            } else {
                ""
            },
            b.reason
        );
    }
    if cfg.sink.is_some() {
        match sink_state(cfg).await {
            Ok(v) if v.is_empty() => println!("sink: no checkpoint in dev yet"),
            Ok(v) => {
                for k in v {
                    println!(
                        "sink: topic {} offset {}, epoch {}, last commit {} at {} ({} behind), checkpoint written {}",
                        k.topic,
                        k.offset,
                        k.epoch,
                        k.last_commit_lsn,
                        k.last_commit_time.as_deref().unwrap_or("-"),
                        k.behind_secs.map_or("-".into(), |s| format!("{s} s")),
                        k.updated_at
                    );
                }
            }
            Err(e) => println!("sink: cannot read dev: {e}"),
        }
    } else {
        println!("sink: not configured here ([sink] dsn)");
    }
    match last_window(cfg).await {
        Ok(Some((at, body))) => println!(
            "audit: last window {} at {at}, registry {}",
            body.get("window_id")
                .and_then(|v| v.as_str())
                .unwrap_or("-"),
            body.get("registry_version")
                .and_then(|v| v.as_str())
                .unwrap_or("-")
        ),
        Ok(None) => println!("audit: no window archived yet"),
        Err(e) => println!("audit: {e}"),
    }
    Ok(())
}
