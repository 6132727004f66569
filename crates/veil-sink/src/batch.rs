//! Multi-row statements, pure: the queue of row statements a drain sends, grouped per table
//! between barriers (savepoints) and merged into one `ROWS FROM (unnest(text[]) …)` statement per
//! run of one shape; the shapes' SQL. No connection here (`dml` sends what `plan` returns).

use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::Statement;

use crate::proto;

/// A statement queued for pipelined execution (sent in order, awaited together).
pub struct Queued {
    pub st: Statement,
    pub params: Vec<Option<String>>,
    /// For row changes: table, operation and commit LSN (for errors), and whether it must
    /// touch a row. `None` for a savepoint or its release: a barrier no batch crosses.
    pub what: Option<(String, &'static str, u64, bool)>,
    /// Set when the row change may be merged with its table's neighbours of the same shape
    /// into one multi-row statement ([`Batchable`]).
    pub batch: Option<Arc<Batchable>>,
}

/// `character varying(20)[]` → `character varying[]`, `character(2)` → `bpchar` (plain
/// `character` would be `character(1)`); other typmods are kept.
pub(super) fn without_length(type_name: &str) -> String {
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

/// What a multi-row statement does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Insert,
    /// Every row matched by its key; a key met twice keeps the last values (both rows set
    /// the same columns, so the later one is what dev would hold).
    Update,
    /// Every row matched by its key; a key met twice is deleted once.
    Delete,
    /// Every row inserted, or replacing dev's row with the same primary key (a backfill's);
    /// a key met twice keeps the last values (each sets every column).
    Upsert,
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
    /// For an insert: `COPY <table> (<columns>) FROM STDIN`, which a long run of inserts is
    /// sent as (its values are the same text the casts of `sql` read).
    pub copy_sql: Option<String>,
}

impl Batchable {
    pub fn new(
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
        let names = |idx: &[usize]| idx.iter().map(|&c| col(c)).collect::<Vec<_>>().join(", ");
        // `INSERT … SELECT` of the values set, each cast from its text element.
        let insert_select = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {rows_from}",
            names(set_idx),
            set_idx
                .iter()
                .enumerate()
                .map(|(i, &c)| format!("u.c{}::{}", i + 1, ty(c)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let sql = match kind {
            BatchKind::Insert => insert_select.clone(),
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
            BatchKind::Upsert => {
                // The values set are every column; the key is read from them.
                let update: Vec<String> = set_idx
                    .iter()
                    .filter(|c| !key_idx.contains(c))
                    .map(|&c| format!("{0} = EXCLUDED.{0}", col(c)))
                    .collect();
                format!(
                    "WITH d AS ({insert_select} ON CONFLICT ({}) DO {} RETURNING 1) \
                     SELECT count(*)::int8 FROM d",
                    names(key_idx),
                    if update.is_empty() {
                        "NOTHING".to_owned()
                    } else {
                        format!("UPDATE SET {}", update.join(", "))
                    }
                )
            }
        };
        let copy_sql = (kind == BatchKind::Insert)
            .then(|| format!("COPY {table} ({}) FROM STDIN", names(set_idx)));
        Batchable {
            key: format!("{single_key}\u{0}B"),
            kind,
            nparams: n_all,
            nset: set_idx.len(),
            sql,
            copy_sql,
        }
    }

    /// The statement cache key of the COPY form.
    pub fn copy_key(&self) -> String {
        format!("{}C", self.key)
    }
}

/// A run of at least this many inserts into one table is sent as COPY (cheaper per row in dev
/// than the multi-row INSERT; for a short run the two cost the same).
pub(super) const COPY_MIN_ROWS: usize = 64;

/// Appends one row in COPY text format: tab-separated, `\N` for NULL, backslash, newline,
/// carriage return and tab escaped; every other byte as it is (a text value never holds a NUL).
pub(super) fn copy_row(out: &mut Vec<u8>, values: &[Option<String>]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match v {
            None => out.extend_from_slice(b"\\N"),
            Some(s) => {
                for &b in s.as_bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        _ => out.push(b),
                    }
                }
            }
        }
    }
    out.push(b'\n');
}

/// Parameters of one statement sent to dev.
pub(super) enum Params {
    /// A single-row statement's text values.
    Row(Vec<Option<String>>),
    /// A multi-row statement's columns, one text array each.
    Columns(Vec<Vec<Option<String>>>),
    /// A COPY's data, in text format.
    Copy(bytes::Bytes),
}

/// One statement of a drain, in the order sent.
pub(super) struct Exec {
    pub(super) st: Option<Statement>,
    pub(super) batch: Option<Arc<Batchable>>,
    pub(super) params: Params,
    pub(super) what: Option<(String, &'static str, u64, bool)>,
    /// Rows it must touch (distinct keys of a batch), and the last commit LSN it covers.
    pub(super) rows: u64,
    pub(super) last_lsn: u64,
    /// Inside a half transaction being discarded: its error is tolerated.
    pub(super) tolerated: bool,
}

/// Rows of one table merged into a multi-row statement at most (bounds a statement's size).
const MAX_BATCH_ROWS: usize = 5000;

/// Turns the queue into the statements sent. Between barriers (savepoints, their releases, and
/// the start of a half transaction being discarded) the row changes are grouped by table —
/// changes of different tables commute in dev (the sink applies as a replica: no triggers, no
/// foreign-key checks), the order within a table is kept — and consecutive changes of one
/// shape become one multi-row statement.
pub(super) fn plan(queue: Vec<Queued>, from: usize) -> Vec<Exec> {
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
                if !keyed && b - a >= COPY_MIN_ROWS && shape.copy_sql.is_some() {
                    let what = first.what.clone();
                    let mut data = Vec::with_capacity(64 * (b - a));
                    copy_row(&mut data, &first.params);
                    let mut last_lsn = first.what.as_ref().map(|w| w.2).unwrap_or(0);
                    for &k in &idx[a + 1..b] {
                        let q = slots[k].take().expect("untaken");
                        copy_row(&mut data, &q.params);
                        last_lsn = q.what.as_ref().map(|w| w.2).unwrap_or(0);
                    }
                    out.push(Exec {
                        st: None,
                        rows: (b - a) as u64,
                        batch: Some(shape),
                        params: Params::Copy(data.into()),
                        what,
                        last_lsn,
                        tolerated,
                    });
                    a = b;
                    continue;
                }
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

#[cfg(test)]
mod copy_tests {
    use super::copy_row;

    #[test]
    fn copy_text_escapes_what_its_format_reads() {
        let mut out = Vec::new();
        copy_row(
            &mut out,
            &[
                Some("a\tb\nc\rd\\e".into()),
                None,
                Some("\\.".into()),
                Some("\\N".into()),
                Some("山田 🩺".into()),
                Some(String::new()),
            ],
        );
        assert_eq!(
            out,
            "a\\tb\\nc\\rd\\\\e\t\\N\t\\\\.\t\\\\N\t山田 🩺\t\n".as_bytes()
        );
    }
}
