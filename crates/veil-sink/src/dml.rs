//! Dev-side DML: statements built once per (table, operation, column mask) and cached, values
//! bound as text cast to the column type, pipelined in order and awaited together; an UPDATE or
//! DELETE that matches no row stops the sink (dev diverged).

use std::collections::HashMap;
use std::sync::Arc;
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

/// What a multi-row statement does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Insert,
    /// Every row matched by its key; a key met twice keeps the last values (both rows set
    /// the same columns, so the later one is what dev would hold).
    Update,
    /// Every row matched by its key; a key met twice is deleted once.
    Delete,
}

/// The multi-row form of one row-statement shape (table, operation, column mask): every
/// parameter becomes a text array, one element per row, read with `ROWS FROM (unnest(...))`.
/// Only for changes matched by key whose key did not change (an update that moves its key,
/// or one matched by all its columns, is applied alone).
#[derive(Debug)]
pub struct Batchable {
    /// The statement cache key (`stmts`), `<table>\0…\0B`.
    pub key: String,
    pub kind: BatchKind,
    /// Parameters: the single-row statement's (the first `nset` are the values set, the rest
    /// the key; for an insert, all are values), then for an update or delete the number of
    /// source changes each row stands for. An update or delete answers with the number of
    /// source changes it applied (one row), an insert with its row count.
    pub nparams: usize,
    pub nset: usize,
    pub sql: String,
}

impl Batchable {
    fn new(
        single_key: &str,
        kind: BatchKind,
        table: &str,
        schema: &proto::TableSchema,
        set_idx: &[usize],
        key_idx: &[usize],
    ) -> Self {
        let col = |c: usize| crate::pg::quote::ident(&schema.columns[c].name);
        let ty = |c: usize| without_length(&schema.columns[c].type_name);
        let n = set_idx.len() + key_idx.len();
        // An update or delete carries one more column: how many source changes each row
        // stands for (a key met twice is one row), summed over the rows it matched.
        let n_all = if kind == BatchKind::Insert { n } else { n + 1 };
        let rows_from = format!(
            "ROWS FROM ({}) AS u({})",
            (1..=n_all)
                .map(|i| format!("unnest(${i}::text[])"))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=n_all)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let counted = |dml: String| {
            format!(
                "WITH d AS ({dml} RETURNING u.c{n_all}) \
                 SELECT coalesce(sum(c{n_all}::int8), 0)::int8 FROM d"
            )
        };
        let key_match = |first: usize| {
            key_idx
                .iter()
                .enumerate()
                .map(|(i, &c)| format!("t.{} = u.c{}::{}", col(c), first + i, ty(c)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let sql = match kind {
            BatchKind::Insert => format!(
                "INSERT INTO {table} ({}) SELECT {} FROM {rows_from}",
                set_idx
                    .iter()
                    .map(|&c| col(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                set_idx
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| format!("u.c{}::{}", i + 1, ty(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            BatchKind::Update => counted(format!(
                "UPDATE {table} AS t SET {} FROM {rows_from} WHERE {}",
                set_idx
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| format!("{} = u.c{}::{}", col(c), i + 1, ty(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                key_match(set_idx.len() + 1)
            )),
            BatchKind::Delete => counted(format!(
                "DELETE FROM {table} AS t USING {rows_from} WHERE {}",
                key_match(1)
            )),
        };
        Batchable {
            key: format!("{single_key}\u{0}B"),
            kind,
            nparams: n_all,
            nset: set_idx.len(),
            sql,
        }
    }
}

/// Parameters of one statement sent to dev.
enum Params {
    /// A single-row statement's text values.
    Row(Vec<Option<String>>),
    /// A multi-row statement's columns, one text array each.
    Columns(Vec<Vec<Option<String>>>),
}

/// One statement of a drain, in the order sent.
struct Exec {
    st: Option<Statement>,
    batch: Option<Arc<Batchable>>,
    params: Params,
    what: Option<(String, &'static str, u64, bool)>,
    /// Rows it must touch (distinct keys of a batch), and the last commit LSN it covers.
    rows: u64,
    last_lsn: u64,
    /// Inside a half transaction being discarded: its error is tolerated.
    tolerated: bool,
}

/// Rows of one table merged into a multi-row statement at most (bounds a statement's size).
const MAX_BATCH_ROWS: usize = 5000;

/// Turns the queue into the statements sent. Between barriers (savepoints, their releases, and
/// the start of a half transaction being discarded) the row changes are grouped by table —
/// changes of different tables commute in dev (the sink applies as a replica: no triggers, no
/// foreign-key checks), the order within a table is kept — and consecutive changes of one
/// shape become one multi-row statement.
fn plan(queue: Vec<Queued>, from: usize) -> Vec<Exec> {
    let mut out = Vec::with_capacity(queue.len() / 4 + 1);
    let mut slots: Vec<Option<Queued>> = queue.into_iter().map(Some).collect();
    let single = |q: Queued, tolerated: bool| Exec {
        last_lsn: q.what.as_ref().map(|w| w.2).unwrap_or(0),
        st: Some(q.st),
        batch: None,
        params: Params::Row(q.params),
        what: q.what,
        rows: 1,
        tolerated,
    };
    let mut i = 0;
    while i < slots.len() {
        let tolerated = i >= from;
        let q = slots[i].take().expect("each slot is taken once");
        if q.what.is_none() {
            out.push(single(q, tolerated));
            i += 1;
            continue;
        }
        // The segment [i, end): up to the next barrier or the start of the tolerated part.
        let mut end = i + 1;
        while end < slots.len()
            && slots[end].as_ref().is_some_and(|q| q.what.is_some())
            && end != from
        {
            end += 1;
        }
        slots[i] = Some(q);
        // Tables in order of first appearance, each with its changes in order.
        let mut tables: Vec<(String, Vec<usize>)> = Vec::new();
        for (k, slot) in slots.iter().enumerate().take(end).skip(i) {
            let t = &slot
                .as_ref()
                .expect("untaken")
                .what
                .as_ref()
                .expect("row")
                .0;
            match tables.iter_mut().find(|(name, _)| name == t) {
                Some((_, v)) => v.push(k),
                None => tables.push((t.clone(), vec![k])),
            }
        }
        for (_, idx) in tables {
            let mut a = 0;
            while a < idx.len() {
                let first = slots[idx[a]].take().expect("untaken");
                let Some(shape) = first.batch.clone() else {
                    out.push(single(first, tolerated));
                    a += 1;
                    continue;
                };
                let mut b = a + 1;
                while b < idx.len()
                    && b - a < MAX_BATCH_ROWS
                    && slots[idx[b]]
                        .as_ref()
                        .and_then(|q| q.batch.as_ref())
                        .is_some_and(|s| Arc::ptr_eq(s, &shape))
                {
                    b += 1;
                }
                if b == a + 1 {
                    out.push(single(first, tolerated));
                    a += 1;
                    continue;
                }
                let keyed = shape.kind != BatchKind::Insert;
                let width = if keyed {
                    shape.nparams - 1
                } else {
                    shape.nparams
                };
                let mut cols: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(b - a); width];
                let mut times: Vec<u64> = Vec::new();
                let mut row_of: HashMap<Vec<Option<String>>, usize> = HashMap::new();
                let mut last_lsn = 0;
                let what = first.what.clone();
                let mut add = |q: Queued, cols: &mut Vec<Vec<Option<String>>>| {
                    last_lsn = q.what.as_ref().map(|w| w.2).unwrap_or(0);
                    let mut params = q.params;
                    if keyed {
                        let key = params.split_off(shape.nset);
                        if let Some(&row) = row_of.get(&key) {
                            for (c, v) in params.into_iter().enumerate() {
                                cols[c][row] = v;
                            }
                            times[row] += 1;
                            return;
                        }
                        row_of.insert(key.clone(), times.len());
                        times.push(1);
                        params.extend(key);
                    }
                    for (c, v) in params.into_iter().enumerate() {
                        cols[c].push(v);
                    }
                };
                add(first, &mut cols);
                for &k in &idx[a + 1..b] {
                    add(slots[k].take().expect("untaken"), &mut cols);
                }
                if keyed {
                    cols.push(times.iter().map(|t| Some(t.to_string())).collect());
                }
                out.push(Exec {
                    st: None,
                    rows: (b - a) as u64,
                    batch: Some(shape),
                    params: Params::Columns(cols),
                    what,
                    last_lsn,
                    tolerated,
                });
                a = b;
            }
        }
        i = end;
    }
    out
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
                e.st = Some(
                    self.statement(shape.key.clone(), || shape.sql.clone(), 0)
                        .await?,
                );
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
