//! Initial snapshot, consistent with the slot's exported snapshot: every table planned by the
//! gate first (so an unclassified column stops the run before anything of it is published), then
//! read by several connections that each import the snapshot (`SET TRANSACTION SNAPSHOT`, before
//! START_REPLICATION), a large table in `ctid` ranges, with COPY; one task transforms, scans and
//! publishes what they read. Blocked columns are never even read (`NULL` is selected in their
//! place).

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// Rows transformed (and their vault misses allocated) together.
const ROW_BATCH: usize = 4000;

/// Draw a progress bar for the copy (set by `veil stream` when stderr is a terminal; progress
/// lines are logged either way).
static BAR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the snapshot's progress bar on (a terminal) or off.
pub fn show_progress_bar(on: bool) {
    BAR.store(on, std::sync::atomic::Ordering::Relaxed);
}

use super::error::StreamError;
use super::pipeline::{Scanned, Streamer};
use crate::deid::gate::{RowValue, TablePlan};
use crate::pg::catalog;
use crate::proto::{self, envelope::Event};

/// Parses one line of COPY text format into column values (`None` = NULL).
pub fn parse_copy_line(line: &[u8]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut out = Vec::new();
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            out.push(None);
            continue;
        }
        let mut v = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if b != b'\\' {
                v.push(b);
                i += 1;
                continue;
            }
            let Some(&n) = field.get(i + 1) else {
                return Err("dangling backslash".into());
            };
            i += 2;
            match n {
                b'b' => v.push(8),
                b'f' => v.push(12),
                b'n' => v.push(b'\n'),
                b'r' => v.push(b'\r'),
                b't' => v.push(b'\t'),
                b'v' => v.push(11),
                b'0'..=b'7' => {
                    let mut val = (n - b'0') as u32;
                    let mut k = 0;
                    while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                        val = val * 8 + (field[i] - b'0') as u32;
                        i += 1;
                        k += 1;
                    }
                    v.push(val as u8);
                }
                b'x' => {
                    let mut val = 0u32;
                    let mut k = 0;
                    while k < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                        val = val * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        k += 1;
                    }
                    v.push(val as u8);
                }
                other => v.push(other),
            }
        }
        out.push(Some(v));
    }
    Ok(out)
}

/// What a reader copies: a whole table, or its pages `[from, to)` (`to` `None`: to the end).
struct Work {
    table: usize,
    pages: Option<(u32, Option<u32>)>,
}

/// What a reader hands the transformer.
enum Read {
    Rows(usize, Vec<Vec<Option<Vec<u8>>>>),
    /// A piece of work is read whole.
    Done(usize),
    Failed(StreamError),
}

/// What the readers select from each table (`SELECT <columns> FROM [ONLY] <table>`), kept
/// current when a hold changes a plan; `None`: the table is blocked now (nothing is read).
type Selects = Arc<std::sync::Mutex<Vec<Option<String>>>>;

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StreamError {
    move |e| StreamError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// Opens a read-only transaction in the slot's exported snapshot, values formatted as the
/// replication stream formats them.
async fn import_snapshot(client: &Client, snapshot_name: &str) -> Result<(), StreamError> {
    catalog::prepare_session(client).await?;
    client
        .batch_execute(&crate::pg::value_format_sql())
        .await
        .map_err(pg("set the value format"))?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(pg("begin snapshot transaction"))?;
    client
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            snapshot_name.replace('\'', "")
        ))
        .await
        .map_err(pg("import exported snapshot"))?;
    Ok(())
}

/// `SELECT <columns> FROM [ONLY] <table>` for a plan: blocked columns are never read (`NULL` in
/// their place); `as_text` casts every column to text (the backfill reads with a plain query);
/// `alias` names the table (`AS src`). Shared by the snapshot and the backfill.
pub(super) fn plan_select(
    plan: &TablePlan,
    partitioned: bool,
    as_text: bool,
    alias: &str,
) -> String {
    let cols: Vec<String> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| match (plan.reads[i], as_text) {
            (true, false) => crate::pg::quote::ident(&c.name),
            (true, true) => format!("{}::text", crate::pg::quote::ident(&c.name)),
            (false, false) => "NULL".into(),
            (false, true) => "NULL::text".into(),
        })
        .collect();
    let (schema, name) = plan
        .qualified
        .split_once('.')
        .unwrap_or(("public", &plan.qualified));
    // A plain table is read with ONLY: an inheritance child is a published table of its own,
    // copied under its own decisions. A partitioned root (published via the root) is read
    // whole: its partitions hold its rows, and they take its decisions.
    format!(
        "SELECT {} FROM {}{}.{}{}",
        if cols.is_empty() {
            "1".into()
        } else {
            cols.join(", ")
        },
        if partitioned { "" } else { "ONLY " },
        crate::pg::quote::ident(schema),
        crate::pg::quote::ident(name),
        alias
    )
}

/// The snapshot's select list of a plan (`None`: the table is blocked).
fn select_of(plan: &TablePlan, partitioned: bool) -> Option<String> {
    (!plan.blocked).then(|| plan_select(plan, partitioned, false, ""))
}

/// One reader: takes work until there is none, copies it out in text format, and hands the
/// rows over in batches.
async fn reader(
    client: Client,
    work: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>>,
    selects: Selects,
    names: Arc<Vec<String>>,
    tx: mpsc::Sender<Read>,
) {
    loop {
        let next = work.lock().await.recv().await;
        let Some(w) = next else { return };
        let select = selects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(w.table)
            .cloned()
            .flatten();
        if let Some(select) = select
            && let Err(e) = copy_out(&client, &select, &w, &names[w.table], &tx).await
        {
            let _ = tx.send(Read::Failed(e)).await;
            return;
        }
        if tx.send(Read::Done(w.table)).await.is_err() {
            return;
        }
    }
}

async fn copy_out(
    client: &Client,
    select: &str,
    w: &Work,
    table: &str,
    tx: &mpsc::Sender<Read>,
) -> Result<(), StreamError> {
    let range = match w.pages {
        None => String::new(),
        Some((from, None)) => format!(" WHERE ctid >= '({from},0)'::tid"),
        Some((from, Some(to))) => {
            format!(" WHERE ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid")
        }
    };
    let sql = format!("COPY ({select}{range}) TO STDOUT");
    let stream = client.copy_out(&sql).await.map_err(pg("copy out"))?;
    futures_util::pin_mut!(stream);
    let mut pending = Vec::new();
    let mut batch = Vec::with_capacity(ROW_BATCH);
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(pg("copy out"))?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            let values = parse_copy_line(&pending[start..start + nl])
                .map_err(|problem| StreamError::Protocol(format!("COPY of {table}: {problem}")))?;
            batch.push(values);
            start += nl + 1;
            if batch.len() >= ROW_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(ROW_BATCH));
                if tx.send(Read::Rows(w.table, full)).await.is_err() {
                    return Ok(());
                }
            }
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        return Err(StreamError::Protocol(format!(
            "COPY of {table}: data after the last row"
        )));
    }
    if !batch.is_empty() {
        let _ = tx.send(Read::Rows(w.table, batch)).await;
    }
    Ok(())
}

/// One table's part of the copy.
struct TableCopy {
    partitioned: bool,
    pages: i64,
    estimate: i64,
    /// Work handed out and not yet read whole.
    outstanding: usize,
    /// Handed out at all (a table unblocked by a hold during the copy is handed out then).
    queued: bool,
    rows: u64,
    started: Option<Instant>,
}

/// Copies every published table in the exported snapshot. Returns the number of rows.
///
/// `connections` readers (each importing the snapshot) copy tables in parallel, a large table
/// in ranges of `range_pages` pages; this task transforms, scans and publishes what they read,
/// batch by batch. Every table's schema goes out before any row (dev applies rows as a
/// replica: foreign keys are not checked, so rows of different tables may come in any order).
pub async fn run(
    st: &mut Streamer,
    snap: &Client,
    target: &crate::pg::tls::PgTarget,
    snapshot_name: &str,
    consistent_lsn: u64,
    (connections, range_pages): (usize, u32),
) -> Result<u64, StreamError> {
    import_snapshot(snap, snapshot_name).await?;
    let oids = catalog::publication_tables(snap, &st.publication).await?;
    let mut infos = Vec::with_capacity(oids.len());
    for oid in oids {
        // The snapshot's transaction sees the catalog and the shape log as of its LSN.
        let mut info = catalog::describe_table(snap, oid, None).await?;
        catalog::bind_to_shape_log(snap, &mut info, None, false).await?;
        infos.push(info);
    }
    let (order, cyclic) = catalog::fk_order(&infos);
    if !cyclic.is_empty() {
        tracing::warn!(tables = ?cyclic, "foreign-key cycle: these tables are copied in name order; \
                       the sink adds their foreign keys after the snapshot");
    }
    // Plan everything before publishing anything: fail closed.
    // A hold may end with a new registry: plan every table again until one registry version
    // planned them all.
    let mut plans: Vec<Arc<TablePlan>> = Vec::with_capacity(order.len());
    loop {
        plans.clear();
        let version = st.registry.version.clone();
        for &i in &order {
            let info = &infos[i];
            let keys = info.identity_keys();
            let plan = st.plan_or_hold(info, &keys).await?;
            st.remember_described(info.oid, info.clone(), keys);
            plans.push(Arc::new(plan));
        }
        if st.registry.version == version {
            break;
        }
    }
    let published: Vec<String> = plans
        .iter()
        .filter(|p| !p.blocked)
        .map(|p| p.qualified.clone())
        .collect();
    st.phase = proto::Phase::Snapshot;
    st.publish(
        proto::Phase::Snapshot,
        Event::SnapshotBegin(proto::SnapshotBegin {
            consistent_lsn,
            slot: st.slot_name.clone(),
            tables: published.clone(),
        }),
        None,
    )
    .await?;
    let mut tables = Vec::with_capacity(plans.len());
    for plan in &plans {
        // Size in pages (how it is split) and the planner's row estimate, partitions summed
        // (progress lines give a rate and an ETA).
        let row = snap
            .query_one(
                "SELECT c.relkind = 'p', \
                        pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8, \
                        (SELECT coalesce(sum(greatest(p.reltuples, pg_catalog.pg_stat_get_live_tuples(p.oid), 0)), 0)::int8 \
                         FROM pg_catalog.pg_partition_tree(c.oid) t \
                         JOIN pg_catalog.pg_class p ON p.oid = t.relid \
                         WHERE t.isleaf OR t.relid = c.oid) \
                 FROM pg_catalog.pg_class c WHERE c.oid = $1",
                &[&plan.oid],
            )
            .await
            .map_err(pg("look up table size"))?;
        tables.push(TableCopy {
            partitioned: row.get(0),
            pages: row.get(1),
            estimate: row.get(2),
            outstanding: 0,
            queued: false,
            rows: 0,
            started: None,
        });
        if plan.blocked {
            tracing::info!(table = %plan.qualified, "snapshot: table blocked by the registry, skipped");
            continue;
        }
        st.publish(
            proto::Phase::Snapshot,
            Event::Schema(plan.schema.clone()),
            None,
        )
        .await?;
        st.remember_schema(plan);
    }
    let selects: Selects = Arc::new(std::sync::Mutex::new(
        plans
            .iter()
            .zip(&tables)
            .map(|(p, t)| select_of(p, t.partitioned))
            .collect(),
    ));
    let names = Arc::new(plans.iter().map(|p| p.qualified.clone()).collect());
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
    let (tx, mut rx) = mpsc::channel(2 * connections + 2);
    // Dropped (on any return) with the readers: their connections close.
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = crate::pg::tls::connect(target)
            .await
            .map_err(StreamError::Connect)?;
        import_snapshot(&client, snapshot_name).await?;
        readers.spawn(reader(
            client,
            work_rx.clone(),
            selects.clone(),
            Arc::clone(&names),
            tx.clone(),
        ));
    }
    drop(tx);
    let hand_out = |t: usize, table: &mut TableCopy| {
        table.queued = true;
        let range = i64::from(range_pages);
        let mut pieces = Vec::new();
        if table.partitioned || table.pages <= range {
            pieces.push(None);
        } else {
            let mut from = 0i64;
            while from < table.pages {
                let to = from + range;
                // The last range is open: what the table holds past its size when looked up.
                let to = (to < table.pages).then_some(to as u32);
                pieces.push(Some((from as u32, to)));
                from += range;
            }
        }
        for pages in pieces {
            table.outstanding += 1;
            let _ = work_tx.send(Work { table: t, pages });
        }
    };
    for (t, table) in tables.iter_mut().enumerate() {
        if !plans[t].blocked {
            hand_out(t, table);
        }
    }
    let estimate: i64 = tables
        .iter()
        .zip(&plans)
        .filter(|(_, p)| !p.blocked)
        .map(|(t, _)| t.estimate)
        .sum();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut total = 0u64;
    let bar = BAR.load(std::sync::atomic::Ordering::Relaxed).then(|| {
        let b = indicatif::ProgressBar::new(estimate.max(0) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "snapshot {bar:40.cyan/blue} {pos}/~{len} rows {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    while tables.iter().any(|t| t.outstanding > 0) {
        let Some(read) = rx.recv().await else {
            return Err(StreamError::Protocol(
                "snapshot readers ended before the copy was done".into(),
            ));
        };
        let (t, batch) = match read {
            Read::Failed(e) => return Err(e),
            Read::Done(t) => {
                let table = &mut tables[t];
                table.outstanding -= 1;
                if table.outstanding == 0 {
                    let secs = table.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                    tracing::info!(table = %plans[t].qualified, rows = table.rows, secs, "snapshot: table copied");
                }
                continue;
            }
            Read::Rows(t, batch) => (t, batch),
        };
        tables[t].started.get_or_insert_with(Instant::now);
        if plans[t].registry_version != st.registry.version {
            refresh_plans(st, &mut plans, &mut tables, &selects, &hand_out).await?;
        }
        let out = loop {
            let plan = plans[t].clone();
            if plan.blocked {
                break Vec::new();
            }
            if plan.columns.is_empty() {
                break vec![Vec::new(); batch.len()];
            }
            let scanned = st
                .transform_and_scan(
                    &batch,
                    |values, store, misses| {
                        Ok(plan.transform(
                            values.iter().map(RowValue::from),
                            consistent_lsn,
                            store,
                            misses,
                        )?)
                    },
                    |_| plan.clone(),
                    |r: &Vec<proto::Value>| r.as_slice(),
                )
                .await?;
            match scanned {
                Scanned::Clean(out) => break out,
                // Held; the decision may change any table's plan (and its dev schema).
                Scanned::Decided => {
                    refresh_plans(st, &mut plans, &mut tables, &selects, &hand_out).await?
                }
            }
        };
        let plan = plans[t].clone();
        metrics::counter!(crate::metrics::SNAPSHOT_ROWS, "table" => plan.qualified.clone())
            .increment(out.len() as u64);
        tables[t].rows += out.len() as u64;
        total += out.len() as u64;
        st.publish_rows(
            proto::Phase::Snapshot,
            &plan,
            proto::Op::Insert,
            out.into_iter().map(|row| (row, Vec::new(), false)),
        )
        .await?;
        if let Some(b) = &bar {
            if total > b.length().unwrap_or(0) {
                b.set_length(total);
            }
            b.set_position(total);
            b.set_message(format!(
                "{}/{} tables",
                tables
                    .iter()
                    .filter(|t| t.queued && t.outstanding == 0)
                    .count(),
                published.len()
            ));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            // Per table being read: rows, the planner's estimate, rate and ETA.
            for (t, table) in tables.iter().enumerate() {
                if let (Some(since), true) = (table.started, table.outstanding > 0) {
                    let rate = table.rows as f64 / since.elapsed().as_secs_f64().max(1e-3);
                    let left = (table.estimate - table.rows as i64).max(0) as f64;
                    tracing::info!(table = %plans[t].qualified, rows = table.rows,
                                   estimated_rows = table.estimate,
                                   rows_per_sec = rate.round() as u64,
                                   eta_secs = (left / rate.max(1.0)).round() as u64,
                                   "snapshot: table in progress");
                }
            }
            let rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let eta_secs = if estimate > total as i64 {
                ((estimate - total as i64) as f64 / rate.max(1.0)).round() as u64
            } else {
                0
            };
            let done = tables
                .iter()
                .filter(|t| t.queued && t.outstanding == 0)
                .count();
            tracing::info!(
                rows = total,
                rows_per_sec = rate.round() as u64,
                estimated_rows = estimate,
                eta_secs,
                tables_done = done,
                tables = published.len(),
                "snapshot in progress"
            );
            last_report = Instant::now();
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    drop(work_tx);
    while readers.join_next().await.is_some() {}
    snap.batch_execute("COMMIT")
        .await
        .map_err(pg("end snapshot transaction"))?;
    st.phase = proto::Phase::Stream;
    st.window_lsn(consistent_lsn);
    st.publish(
        proto::Phase::Snapshot,
        Event::SnapshotEnd(proto::SnapshotEnd {
            consistent_lsn,
            rows: total,
        }),
        None,
    )
    .await?;
    st.publisher.drain().await?;
    st.clock.report();
    st.close_window().await?;
    tracing::info!(
        rows = total,
        tables = published.len(),
        secs = started.elapsed().as_secs_f64(),
        readers = connections,
        "snapshot complete"
    );
    Ok(total)
}

/// After a hold (a newer registry): every table planned again — a changed schema is published
/// by `replan`, the readers select what the new plan reads, and a table the decision unblocked
/// is handed out now.
async fn refresh_plans(
    st: &mut Streamer,
    plans: &mut [Arc<TablePlan>],
    tables: &mut [TableCopy],
    selects: &Selects,
    hand_out: &impl Fn(usize, &mut TableCopy),
) -> Result<(), StreamError> {
    for t in 0..plans.len() {
        if plans[t].registry_version == st.registry.version {
            continue;
        }
        let plan = st.replan(plans[t].oid).await?;
        selects.lock().unwrap_or_else(|p| p.into_inner())[t] =
            select_of(&plan, tables[t].partitioned);
        if plan.blocked && !plans[t].blocked {
            tracing::warn!(table = %plan.qualified, "snapshot: table blocked during the copy; its rows stop here");
        }
        if !plan.blocked && !tables[t].queued {
            tracing::info!(table = %plan.qualified, "snapshot: table unblocked during the copy; copied now");
            hand_out(t, &mut tables[t]);
        }
        plans[t] = plan;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_unescapes() {
        let v = parse_copy_line(b"1\t\\N\ta\\tb\\\\c\\n\t\\x41\\101").unwrap();
        assert_eq!(
            v,
            vec![
                Some(b"1".to_vec()),
                None,
                Some(b"a\tb\\c\n".to_vec()),
                Some(b"AA".to_vec())
            ]
        );
        assert!(parse_copy_line(b"a\\").is_err());
    }
}
