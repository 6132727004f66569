//! Initial snapshot, consistent with the slot's exported snapshot: imported with
//! `SET TRANSACTION SNAPSHOT` on a separate connection before START_REPLICATION, every table
//! planned by the gate first (so an unclassified column stops the run before anything of it is
//! published), then copied with COPY in foreign-key order, parents before children.
//! Blocked columns are never even read (`NULL` is selected in their place).

use std::time::{Duration, Instant};

/// Rows transformed (and their vault misses allocated) together.
const ROW_BATCH: usize = 4000;
use tokio_postgres::Client;

use super::error::StreamError;
use super::pipeline::Streamer;
use crate::deid::gate::RowValue;
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

/// Copies every published table in the exported snapshot. Returns the number of rows.
pub async fn run(
    st: &mut Streamer,
    snap: &Client,
    snapshot_name: &str,
    consistent_lsn: u64,
) -> Result<u64, StreamError> {
    let pg = |what: &'static str| {
        move |e: tokio_postgres::Error| {
            StreamError::Postgres(crate::pg::errors::PgError::new(what, &e))
        }
    };
    catalog::prepare_session(snap).await?;
    // COPY writes values as the replication stream does.
    snap.batch_execute(&crate::pg::value_format_sql())
        .await
        .map_err(pg("set the value format"))?;
    snap.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(pg("begin snapshot transaction"))?;
    snap.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT '{}'",
        snapshot_name.replace('\'', "")
    ))
    .await
    .map_err(pg("import exported snapshot"))?;
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
    let mut plans = Vec::with_capacity(order.len());
    loop {
        plans.clear();
        let version = st.registry.version.clone();
        for &i in &order {
            let info = &infos[i];
            let keys = info.identity_keys();
            let plan = st.plan_or_hold(info, &keys).await?;
            st.remember_described(info.oid, info.clone(), keys);
            plans.push(plan);
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
    let mut total = 0u64;
    for mut plan in plans {
        // A hold during an earlier table may have ended with a newer registry.
        if plan.registry_version != st.registry.version {
            plan = (*st.replan(plan.oid).await?).clone();
        }
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
        st.remember_schema(&plan);
        let cols: Vec<String> = plan
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if plan.reads[i] {
                    crate::pg::quote::ident(&c.name)
                } else {
                    "NULL".into()
                }
            })
            .collect();
        let (schema, name) = plan
            .qualified
            .split_once('.')
            .unwrap_or(("public", &plan.qualified));
        // A plain table is read with ONLY: an inheritance child is a published table of its
        // own, copied under its own decisions. A partitioned root (published via the root) is
        // read whole: its partitions hold its rows, and they take its decisions.
        let partitioned = snap
            .query_one(
                "SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = $1",
                &[&plan.oid],
            )
            .await
            .map_err(pg("look up relkind"))?
            .get::<_, bool>(0);
        let sql = format!(
            "COPY (SELECT {} FROM {}{}.{}) TO STDOUT",
            if cols.is_empty() {
                "1".into()
            } else {
                cols.join(", ")
            },
            if partitioned { "" } else { "ONLY " },
            crate::pg::quote::ident(schema),
            crate::pg::quote::ident(name)
        );
        // The planner's row estimate (partitions summed): progress lines give a rate and an ETA.
        let estimate: i64 = snap
            .query_one(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 \
                 FROM pg_catalog.pg_partition_tree($1) t JOIN pg_catalog.pg_class c ON c.oid = t.relid \
                 WHERE t.isleaf OR t.relid = $1",
                &[&plan.oid],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        let stream = snap.copy_out(&sql).await.map_err(pg("copy out"))?;
        futures_util::pin_mut!(stream);
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut rows = 0u64;
        let mut pending = Vec::new();
        let mut batch: Vec<Vec<Option<Vec<u8>>>> = Vec::with_capacity(ROW_BATCH);
        use futures_util::StreamExt;
        loop {
            let chunk = stream.next().await;
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                let chunk = chunk.map_err(pg("copy out"))?;
                pending.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
                    let line = &pending[start..start + nl];
                    let values = parse_copy_line(line).map_err(|problem| {
                        StreamError::Protocol(format!("COPY of {}: {problem}", plan.qualified))
                    })?;
                    batch.push(values);
                    start += nl + 1;
                }
                pending.drain(..start);
            }
            if batch.len() >= ROW_BATCH || (done && !batch.is_empty()) {
                let out = loop {
                    let out = if plan.columns.is_empty() {
                        vec![Vec::new(); batch.len()]
                    } else {
                        st.transform_batch(&batch, |values, store, misses| {
                            Ok(plan.transform(
                                values.iter().map(RowValue::from),
                                consistent_lsn,
                                store,
                                misses,
                            )?)
                        })
                        .await?
                    };
                    let hits = st.scan_rows(out.iter().map(|r| (&plan, r.as_slice())));
                    if hits.is_empty() {
                        break out;
                    }
                    // Held; the decision may change this table's plan (and its dev schema).
                    st.hold_for_scan(&hits).await?;
                    plan = (*st.replan(plan.oid).await?).clone();
                };
                batch.clear();
                st.count_rows(&plan.qualified, "INSERT", out.len() as u64);
                for row in out {
                    st.publish(
                        proto::Phase::Snapshot,
                        Event::Row(proto::RowChange {
                            table: plan.qualified.clone(),
                            op: proto::Op::Insert as i32,
                            new_values: row,
                            old_values: Vec::new(),
                            old_is_full: false,
                        }),
                        None,
                    )
                    .await?;
                    rows += 1;
                }
                if last_report.elapsed() > Duration::from_secs(5) {
                    let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    let eta_secs = if estimate > rows as i64 {
                        ((estimate - rows as i64) as f64 / rate.max(1.0)).round() as u64
                    } else {
                        0
                    };
                    tracing::info!(table = %plan.qualified, rows, rows_per_sec = rate.round() as u64,
                                   estimated_rows = estimate, eta_secs, "snapshot in progress");
                    last_report = Instant::now();
                }
            }
            if done {
                break;
            }
        }
        metrics::counter!(crate::metrics::SNAPSHOT_ROWS, "table" => plan.qualified.clone())
            .increment(rows);
        tracing::info!(table = %plan.qualified, rows, secs = started.elapsed().as_secs_f64(), "snapshot: table copied");
        total += rows;
    }
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
    tracing::info!(rows = total, tables = published.len(), "snapshot complete");
    Ok(total)
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
