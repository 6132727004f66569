//! Dev-side DML: statements built once per (table, operation, column mask) and cached, values
//! bound as text cast to the column type, queued, then sent as `batch::plan` groups them
//! (multi-row where it can), pipelined and awaited together. An UPDATE or DELETE of a row dev
//! does not hold is counted and audited (`veil_sink_rows_missing_total`), never fatal.

use std::sync::Arc;
use tokio_postgres::Statement;
use tokio_postgres::types::Type;

use super::applier::{Applier, PIPELINE_DEPTH};
use super::batch::{BatchKind, Batchable, Params, Queued, plan, without_length};
use super::error::{SinkError, pg};
use crate::pg::lsn::fmt_lsn;
use crate::proto::{self, value::Kind};

/// `$n::text::<type>`: a text parameter cast to the column type. A declared length is left to
/// the assignment: an explicit cast to `character varying(n)` would cut a longer value silently,
/// the assignment refuses it (22001) — dev never holds something other than what was published.
fn cast_param(n: usize, type_name: &str) -> String {
    format!("${n}::text::{}", without_length(type_name))
}

/// Row 11 of the fencing table: the columns an UPDATE sets — all but the TOAST-unchanged ones,
/// which dev keeps.
pub fn changed_columns(new_values: &[proto::Value]) -> Vec<usize> {
    (0..new_values.len())
        .filter(|&i| !matches!(new_values[i].kind, Some(Kind::Unchanged(_))))
        .collect()
}

impl Applier {
    pub(super) async fn enqueue(
        &mut self,
        st: Statement,
        params: Vec<Option<String>>,
        what: Option<(String, &'static str, u64, bool)>,
        batch: Option<Arc<Batchable>>,
    ) -> Result<(), SinkError> {
        self.queue.push(Queued {
            st,
            params,
            what,
            batch,
        });
        if self.queue.len() >= PIPELINE_DEPTH {
            self.drain().await?;
        }
        Ok(())
    }

    /// Sends every queued statement (pipelined, row changes merged per `plan`) and checks
    /// each result.
    pub async fn drain(&mut self) -> Result<(), SinkError> {
        self.drain_tolerating_from(usize::MAX).await
    }

    /// `drain`, but errors of statements at queue positions from `from` on (a half transaction
    /// being discarded) are logged and dropped, and their rows not counted.
    pub(super) async fn drain_tolerating_from(&mut self, from: usize) -> Result<(), SinkError> {
        // The open source transaction's savepoint goes in front of its first statement once
        // any of them is about to reach dev (a discard that tolerates errors never takes it).
        // A drain while it is open is also how anything written to dev directly (a schema
        // change, a truncate) gets behind the savepoint.
        if from == usize::MAX && self.savepoint_state == super::applier::Savepoint::Pending {
            let at = self.src_queue_start.min(self.queue.len());
            self.queue.insert(
                at,
                Queued {
                    st: self.savepoint.clone(),
                    params: Vec::new(),
                    what: None,
                    batch: None,
                },
            );
            self.savepoint_state = super::applier::Savepoint::Taken;
        }
        // Whatever follows is queued from position 0.
        self.src_queue_start = 0;
        if self.queue.is_empty() {
            return Ok(());
        }
        let mut execs = plan(std::mem::take(&mut self.queue), from);
        for e in execs.iter_mut() {
            if let Some(shape) = &e.batch {
                let shape = shape.clone();
                e.st = Some(match (&e.params, &shape.copy_sql) {
                    (Params::Copy(_), Some(copy)) => {
                        self.statement(shape.copy_key(), || copy.clone(), 0).await?
                    }
                    _ => {
                        self.statement(shape.key.clone(), || shape.sql.clone(), 0)
                            .await?
                    }
                });
            }
        }
        let client = &self.client;
        // In order: each future sends its statement when first polled, and `join_all` polls
        // them in order (pipelined), then awaits the answers together.
        let results = futures_util::future::join_all(execs.iter().map(|e| async move {
            let st = e.st.as_ref().expect("every statement prepared");
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &e.params {
                Params::Row(p) => p.iter().map(|v| v as _).collect(),
                Params::Columns(c) => c.iter().map(|v| v as _).collect(),
                Params::Copy(data) => {
                    // Later statements wait on the connection until this COPY is done.
                    use futures_util::SinkExt;
                    let sink = client.copy_in(st).await?;
                    futures_util::pin_mut!(sink);
                    sink.send(data.clone()).await?;
                    return sink.finish().await;
                }
            };
            if e.batch
                .as_ref()
                .is_some_and(|b| b.kind != BatchKind::Insert)
            {
                let rows = client.query(st, &params).await?;
                Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
            } else {
                client.execute_raw(st, params).await
            }
        }))
        .await;
        for (e, r) in execs.iter().zip(results) {
            if e.tolerated {
                if let Err(err) = r {
                    tracing::warn!(error = %pg("statement")(err), "error inside a half transaction that is being discarded");
                    break;
                }
                continue;
            }
            match (r, &e.what) {
                (Err(err), Some((table, op, lsn, _))) => {
                    let what = if e.rows > 1 {
                        format!(
                            "{op} of {} rows of {table} at commits {}..{}",
                            e.rows,
                            fmt_lsn(*lsn),
                            fmt_lsn(e.last_lsn)
                        )
                    } else {
                        format!("{op} of {table} at commit {}", fmt_lsn(*lsn))
                    };
                    let err = pg(what)(err);
                    // A lost connection or a server going down is retried from the checkpoint;
                    // what dev refuses needs a person.
                    if veil_core::error::Classify::class(&err)
                        == veil_core::error::ErrorClass::Transient
                    {
                        return Err(err);
                    }
                    return Err(SinkError::Schema {
                        table: table.clone(),
                        message: err.to_string(),
                    });
                }
                (Err(err), None) => return Err(pg("savepoint")(err)),
                (Ok(n), Some((table, op, lsn, true))) if n < e.rows => {
                    // Rows dev does not hold: a table unblocked or approved after the row was
                    // written starts empty in dev (until backfill). Counted and audited, never
                    // fatal; the change itself has nothing to apply.
                    let missing = e.rows - n;
                    metrics::counter!(crate::metrics::SINK_ROWS_MISSING, "table" => table.clone(), "op" => *op)
                        .increment(missing);
                    tracing::debug!(table = %table, op, lsn = %fmt_lsn(*lsn), rows = missing, "change of a row dev does not hold");
                    let m = self
                        .missing
                        .entry((table.clone(), op))
                        .or_insert((0, *lsn, *lsn));
                    m.0 += missing;
                    m.2 = e.last_lsn;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) async fn statement(
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

    /// The multi-row shape of the row statement cached under `key` (built once).
    fn shape(
        &mut self,
        key: &str,
        kind: BatchKind,
        table: &str,
        schema: &proto::TableSchema,
        set_idx: &[usize],
        key_idx: &[usize],
    ) -> Arc<Batchable> {
        if let Some(s) = self.shapes.get(key) {
            return s.clone();
        }
        let s = Arc::new(Batchable::new(key, kind, table, schema, set_idx, key_idx));
        self.shapes.insert(key.to_owned(), s.clone());
        s
    }

    pub(super) async fn apply_row(
        &mut self,
        r: proto::RowChange,
        lsn: u64,
    ) -> Result<(), SinkError> {
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
        // Where clause: key columns by equality (the primary key, else the columns of a REPLICA
        // IDENTITY USING INDEX), or every column (identity full) by text equality — both ends
        // format values alike (`pg::VALUE_FORMAT`).
        let keys = if schema.primary_key.is_empty() {
            &schema.identity
        } else {
            &schema.primary_key
        };
        let key_idx: Vec<usize> = keys
            .iter()
            .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
            .collect();
        match op {
            proto::Op::Insert => {
                if r.new_values.len() != ncols {
                    return Err(bad("insert"));
                }
                let key_i = format!("{}\u{0}I", r.table);
                let st = self
                    .statement(
                        key_i.clone(),
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
                let all: Vec<usize> = (0..ncols).collect();
                let batch = self.shape(&key_i, BatchKind::Insert, &table, &schema, &all, &[]);
                let params: Vec<Option<String>> = r.new_values.iter().map(text).collect();
                self.enqueue(
                    st,
                    params,
                    Some((r.table.clone(), "insert", lsn, false)),
                    Some(batch),
                )
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
                    changed_columns(&r.new_values)
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
                let st = self
                    .statement(key.clone(), sql, set_idx.len() + widx.len())
                    .await?;
                // Matched by a key that did not change: may join a multi-row statement.
                let batch = (!full && (!is_update || r.old_values.is_empty())).then(|| {
                    let kind = if is_update {
                        BatchKind::Update
                    } else {
                        BatchKind::Delete
                    };
                    self.shape(&key, kind, &table, &schema, &set_idx, &widx)
                });
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
                    batch,
                )
                .await?;
            }
            proto::Op::Upsert => {
                // A backfilled row: inserted, or replacing dev's row with the same primary key
                // (the stream publishes a backfill only for tables with one).
                if r.new_values.len() != ncols {
                    return Err(bad("backfilled row"));
                }
                // Every value is set: one the source left unchanged would become NULL.
                if r.new_values.iter().any(is_unchanged) {
                    return Err(SinkError::Schema {
                        table: r.table.clone(),
                        message: format!(
                            "a backfilled row at commit {} with a value left unchanged",
                            fmt_lsn(lsn)
                        ),
                    });
                }
                let pk_idx: Vec<usize> = schema
                    .primary_key
                    .iter()
                    .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
                    .collect();
                if pk_idx.is_empty() || pk_idx.len() != schema.primary_key.len() {
                    return Err(SinkError::Schema {
                        table: r.table.clone(),
                        message: "a backfilled row for a table without a primary key in dev".into(),
                    });
                }
                let key_u = format!("{}\u{0}P", r.table);
                let st = self
                    .statement(
                        key_u.clone(),
                        || {
                            let col = |c: usize| crate::pg::quote::ident(&schema.columns[c].name);
                            let cols: Vec<String> = (0..ncols).map(col).collect();
                            let vals: Vec<String> = schema
                                .columns
                                .iter()
                                .enumerate()
                                .map(|(i, c)| cast_param(i + 1, &c.type_name))
                                .collect();
                            let set: Vec<String> = (0..ncols)
                                .filter(|i| !pk_idx.contains(i))
                                .map(|c| format!("{0} = EXCLUDED.{0}", col(c)))
                                .collect();
                            format!(
                                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {}",
                                cols.join(", "),
                                vals.join(", "),
                                pk_idx
                                    .iter()
                                    .map(|&c| col(c))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if set.is_empty() {
                                    "NOTHING".to_owned()
                                } else {
                                    format!("UPDATE SET {}", set.join(", "))
                                }
                            )
                        },
                        ncols + pk_idx.len(),
                    )
                    .await?;
                // The row's values, then its key again (the multi-row form's layout: values
                // set, then the key it dedups by; the single-row statement ignores the key).
                let mut params: Vec<Option<String>> = r.new_values.iter().map(text).collect();
                params.extend(pk_idx.iter().map(|&i| text(&r.new_values[i])));
                let all: Vec<usize> = (0..ncols).collect();
                let batch = self.shape(&key_u, BatchKind::Upsert, &table, &schema, &all, &pk_idx);
                self.enqueue(
                    st,
                    params,
                    Some((r.table.clone(), "upsert", lsn, false)),
                    Some(batch),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_11_toast_unchanged_columns_are_left_out_of_the_set_list() {
        let text = |s: &str| proto::Value {
            kind: Some(Kind::Text(s.into())),
        };
        let unchanged = proto::Value {
            kind: Some(Kind::Unchanged(true)),
        };
        assert_eq!(
            changed_columns(&[text("a"), unchanged.clone(), text("c")]),
            vec![0, 2]
        );
        assert!(changed_columns(&[unchanged]).is_empty());
    }
}
