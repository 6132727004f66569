//! Dev-side DML: statements built once per (table, operation, column mask) and cached, values
//! bound as text cast to the column type, pipelined in order and awaited together; an UPDATE or
//! DELETE that matches no row stops the sink (dev diverged).

use tokio_postgres::Statement;
use tokio_postgres::types::Type;

use super::applier::{Applier, PIPELINE_DEPTH, Queued};
use super::error::{SinkError, pg};
use crate::pg::lsn::fmt_lsn;
use crate::proto::{self, value::Kind};

/// `$n::text::<type>`: a text parameter cast to the column type. A declared length is left to
/// the assignment: an explicit cast to `character varying(n)` would cut a longer value silently,
/// the assignment refuses it (22001) — dev never holds something other than what was published.
fn cast_param(n: usize, type_name: &str) -> String {
    format!("${n}::text::{}", without_length(type_name))
}

/// `character varying(20)[]` → `character varying[]`, `character(2)` → `bpchar` (plain
/// `character` would be `character(1)`); other typmods are kept.
fn without_length(type_name: &str) -> String {
    for (base, unlimited) in [
        ("character varying", "character varying"),
        ("character", "bpchar"),
    ] {
        if let Some(rest) = type_name.strip_prefix(base)
            && let Some(rest) = rest.strip_prefix('(')
            && let Some(close) = rest.find(')')
            && rest[..close].bytes().all(|b| b.is_ascii_digit())
        {
            return format!("{unlimited}{}", &rest[close + 1..]);
        }
    }
    type_name.to_owned()
}

#[cfg(test)]
mod length_tests {
    use super::without_length;

    #[test]
    fn declared_lengths_are_left_to_the_assignment() {
        assert_eq!(without_length("character varying(1)"), "character varying");
        assert_eq!(without_length("character(5)[]"), "bpchar[]");
        assert_eq!(without_length("bit(3)"), "bit(3)");
        assert_eq!(without_length("numeric(10,2)"), "numeric(10,2)");
        assert_eq!(
            without_length("public.\"character(x)\""),
            "public.\"character(x)\""
        );
        assert_eq!(without_length("text"), "text");
    }
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
    ) -> Result<(), SinkError> {
        self.queue.push(Queued { st, params, what });
        if self.queue.len() >= PIPELINE_DEPTH {
            self.drain().await?;
        }
        Ok(())
    }

    /// Sends every queued statement in order (pipelined) and checks each result.
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
                },
            );
            self.savepoint_state = super::applier::Savepoint::Taken;
        }
        // Whatever follows is queued from position 0.
        self.src_queue_start = 0;
        if self.queue.is_empty() {
            return Ok(());
        }
        let queue = std::mem::take(&mut self.queue);
        let client = &self.client;
        let results = futures_util::future::join_all(
            queue
                .iter()
                .map(|q| client.execute_raw(&q.st, q.params.iter())),
        )
        .await;
        for (i, (q, r)) in queue.iter().zip(results).enumerate() {
            if i >= from {
                if let Err(e) = r {
                    tracing::warn!(error = %pg("statement")(e), "error inside a half transaction that is being discarded");
                    break;
                }
                continue;
            }
            match (r, &q.what) {
                (Err(e), Some((table, op, lsn, _))) => {
                    let err = pg(format!("{op} of {table} at commit {}", fmt_lsn(*lsn)))(e);
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
                (Err(e), None) => return Err(pg("savepoint")(e)),
                (Ok(0), Some((table, op, lsn, true))) => {
                    // A row dev does not hold: a table unblocked or approved after the row was
                    // written starts empty in dev (until backfill). Counted and audited, never
                    // fatal; the change itself has nothing to apply.
                    metrics::counter!(crate::metrics::SINK_ROWS_MISSING, "table" => table.clone(), "op" => *op)
                        .increment(1);
                    tracing::debug!(table = %table, op, lsn = %fmt_lsn(*lsn), "change of a row dev does not hold");
                    let e = self
                        .missing
                        .entry((table.clone(), op))
                        .or_insert((0, *lsn, *lsn));
                    e.0 += 1;
                    e.2 = *lsn;
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
                let key = format!("{}\u{0}I", r.table);
                let st = self
                    .statement(
                        key,
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
                let params: Vec<Option<String>> = r.new_values.iter().map(text).collect();
                self.enqueue(st, params, Some((r.table.clone(), "insert", lsn, false)))
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
                    (0..ncols)
                        .filter(|&i| !is_unchanged(&r.new_values[i]))
                        .collect()
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
                let st = self.statement(key, sql, set_idx.len() + widx.len()).await?;
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
