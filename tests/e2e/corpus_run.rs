//! Every schema of the evaluation corpus end to end, as a new user runs it: `veil setup`, load
//! the schema, `veil registry propose`, `veil registry approve --all-proposed`, then the real
//! `veil stream` and `veil sink` binaries. Then inserts, updates and deletes on every table (the
//! key-less ones among them). Shown for each schema:
//! - the pipeline completes: dev equals the gate's de-identified copy of production, row for row,
//!   after the snapshot and after the changes (a hold caused by veil's own proposals would stop
//!   it);
//! - no identifier value of a row survives the gate in that row (every published cell differs
//!   from the row's identifier values; dates other than the year are gone);
//! - no distinctive identifier value (ids, numbers, e-mails, URLs, JSON keys…) appears anywhere in
//!   dev, in the change or audit topic, in the registry files or proposals, and no identifier
//!   value of 5 characters or more in any log line (all at debug level);
//! - every join along a token domain (declared and undeclared references to a key) counts the
//!   same rows in dev as in production.
//!
//! Names and sub-state geography are checked per row only: their surrogates come from bundled
//! lists, so another patient's real name can be a surrogate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use crate::corpus::{self, Class, Schema};
use tokio_postgres::{Client, SimpleQueryMessage};

/// `veil ARGS --config FILE`, output appended to `log`; panics unless it succeeds.
fn cli(args: &[&str], config: &std::path::Path, log: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "debug,rdkafka=warn,tokio_postgres=info")
        .output()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    use std::io::Write;
    f.write_all(&out.stdout).unwrap();
    f.write_all(&out.stderr).unwrap();
    assert!(
        out.status.success(),
        "veil {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cells of a text value: itself, plus array elements and JSON keys and leaves.
fn cells(v: &str, out: &mut Vec<String>) {
    out.push(v.to_owned());
    let t = v.trim();
    if (t.starts_with('{') || t.starts_with('['))
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(t)
    {
        json_cells(&j, out);
        return;
    }
    if let Some(inner) = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        out.extend(
            inner
                .split(',')
                .map(|e| e.trim_matches('"').to_owned())
                .filter(|e| !e.is_empty() && e != "NULL"),
        );
    }
}

/// The parts of an identifier column's value that carry its class: the value, array elements,
/// JSON keys and leaves — except what the corpus labels structure (`json_safe`).
fn identifier_parts(c: &corpus::Col, v: &str) -> Vec<String> {
    let t = v.trim();
    if !c.json_safe.is_empty()
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(t)
    {
        let mut out = Vec::new();
        labelled_json_parts(&j, c.json_safe, false, &mut out);
        return out;
    }
    let mut out = Vec::new();
    cells(v, &mut out);
    out
}

fn labelled_json_parts(
    j: &serde_json::Value,
    safe: &[&str],
    value_safe: bool,
    out: &mut Vec<String>,
) {
    match j {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let structure = safe.iter().any(|s| s.trim_end_matches('=') == k);
                if !structure {
                    out.push(k.clone());
                }
                let safe_value = safe.iter().any(|s| s.strip_suffix('=') == Some(k));
                labelled_json_parts(v, safe, safe_value, out);
            }
        }
        serde_json::Value::Array(a) => a
            .iter()
            .for_each(|v| labelled_json_parts(v, safe, value_safe, out)),
        serde_json::Value::String(s) if !value_safe => out.push(s.clone()),
        serde_json::Value::Number(n) if !value_safe => out.push(n.to_string()),
        _ => {}
    }
}

fn json_cells(j: &serde_json::Value, out: &mut Vec<String>) {
    match j {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                json_cells(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_cells(v, out)),
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        _ => {}
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// What production held, by label: identifier values per class, and the safe values.
#[derive(Default)]
struct Truth {
    /// (class, value) of every identifier cell (whole values and their parts).
    ids: BTreeSet<(Class, String)>,
    /// Every safe cell, whole.
    safe: Vec<String>,
}

async fn read_truth(prod: &Client, schema: &Schema, truth: &mut Truth) {
    for t in &schema.tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("\"{}\"::text", c.name))
            .collect();
        let rows = text_rows(
            prod,
            &format!("SELECT {} FROM public.\"{}\"", cols.join(", "), t.name),
        )
        .await;
        for r in rows {
            for (c, v) in t.columns.iter().zip(r) {
                let Some(v) = v else { continue };
                if c.class.is_identifier() {
                    let parts = identifier_parts(c, &v);
                    truth.ids.extend(parts.into_iter().map(|p| (c.class, p)));
                } else {
                    truth.safe.push(v);
                }
            }
        }
    }
}

impl Truth {
    /// Identifier values that cannot occur in dev by chance: not names or sub-state geography
    /// (surrogates come from lists), not dates (covered per row), long enough (a short token may
    /// equal another row's value by chance; every row's own values are checked through the
    /// gate), and not part of any safe value (an organisation's address may name the patient's
    /// city).
    fn distinctive(&self) -> BTreeSet<String> {
        let set: BTreeSet<String> = self
            .ids
            .iter()
            .filter(|(c, _)| !matches!(c, Class::Names | Class::Geography | Class::Dates))
            .map(|(_, v)| v.trim())
            // Long enough that a random layout-kept token equals another row's real value
            // only by a chance too small to see: 3,000 values of one layout against 3,000
            // tokens are 9·10⁶ pairs, so ten digits (10¹⁰) and nine mixed characters.
            .filter(|v| {
                if all_digits(v) {
                    v.len() >= 10
                } else {
                    v.len() >= 9
                }
            })
            .map(str::to_owned)
            .collect();
        without(set, &self.safe.join("\u{1}"))
    }

    /// Every identifier value of 5 characters or more (9 for pure numbers, which logs have
    /// plenty of), for text that must hold no value at all (logs, registry files).
    fn any_value(&self, schema: &Schema) -> BTreeSet<String> {
        let mut names = self.safe.join("\u{1}");
        for t in &schema.tables {
            names.push_str(t.name);
            for c in &t.columns {
                names.push('\u{1}');
                names.push_str(c.name);
            }
        }
        let set: BTreeSet<String> = self
            .ids
            .iter()
            .filter(|(c, _)| *c != Class::Dates)
            .map(|(_, v)| v.trim())
            .filter(|v| {
                if all_digits(v) {
                    v.len() >= 9
                } else {
                    v.chars().count() >= 5
                }
            })
            .map(str::to_owned)
            .collect();
        without(set, &names)
    }
}

/// `set` without the values that occur in `text`.
fn without(set: BTreeSet<String>, text: &str) -> BTreeSet<String> {
    let found: BTreeSet<String> = found_in(&set, text).into_iter().collect();
    set.into_iter().filter(|v| !found.contains(v)).collect()
}

/// The needles of `set` found in `hay` (substring search).
fn found_in(set: &BTreeSet<String>, hay: &str) -> Vec<String> {
    let needles: Vec<&String> = set.iter().collect();
    if needles.is_empty() {
        return Vec::new();
    }
    let ac = aho_corasick::AhoCorasick::new(&needles).unwrap();
    let mut hits: BTreeSet<String> = BTreeSet::new();
    for m in ac.find_overlapping_iter(hay) {
        hits.insert(needles[m.pattern().as_usize()].clone());
    }
    hits.into_iter().collect()
}

/// Cells of every dev table (whole values, array elements, JSON keys and leaves).
async fn dev_cells(dev: &Client, schema: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for t in &schema.tables {
        for m in dev
            .simple_query(&format!("SELECT * FROM public.\"{}\"", t.name))
            .await
            .unwrap()
        {
            if let SimpleQueryMessage::Row(r) = m {
                for i in 0..r.len() {
                    if let Some(v) = r.get(i) {
                        cells(v, &mut out);
                    }
                }
            }
        }
    }
    out
}

/// Row values of every change event, and the text of every other event, of a topic.
fn topic_text(kafka: &veil::config::KafkaConfig, topic: &str) -> (Vec<String>, String) {
    use prost::Message as _;
    let mut cells_out = Vec::new();
    let mut other = String::new();
    for (_, payload) in read_topic(kafka, topic) {
        // Each envelope of a batch on its own; what does not decode, as raw bytes.
        let envelopes: Vec<Result<veil::proto::Envelope, Vec<u8>>> =
            match veil::proto::Envelope::decode(payload.as_slice()) {
                Ok(e) => veil::proto::unbatch(e).into_iter().map(Ok).collect(),
                Err(_) => vec![Err(payload)],
            };
        for decoded in envelopes {
            match decoded {
                Ok(veil::proto::Envelope {
                    event: Some(veil::proto::envelope::Event::Row(r)),
                    ..
                }) => {
                    for v in r.new_values.iter().chain(&r.old_values) {
                        if let Some(veil::proto::value::Kind::Text(t)) = &v.kind {
                            cells(t, &mut cells_out);
                        }
                    }
                }
                Ok(e) => other.push_str(&String::from_utf8_lossy(&e.encode_to_vec())),
                Err(raw) => other.push_str(&String::from_utf8_lossy(&raw)),
            }
        }
    }
    (cells_out, other)
}

/// Leaks among cells: a cell equal to a distinctive value, or holding a long one.
fn leaks_in_cells(distinctive: &BTreeSet<String>, cells: &[String]) -> Vec<String> {
    let mut out: BTreeSet<String> = cells
        .iter()
        .filter(|c| distinctive.contains(c.trim()))
        .cloned()
        .collect();
    let long: BTreeSet<String> = distinctive
        .iter()
        .filter(|v| v.len() >= 10 && !all_digits(v))
        .cloned()
        .collect();
    if !long.is_empty() {
        out.extend(found_in(&long, &cells.join("\u{1}")));
    }
    out.into_iter().collect()
}

/// The gate's output for every production row of `table`, beside the row: no identifier value
/// of the row may survive in any published cell, and labelled dates keep only their year.
async fn check_rows_through_gate(env: &Env, prod: &Client, t: &corpus::Table) -> usize {
    let (plan, vault) = gate_for(env, prod, t.name).await;
    // Every column of the relation goes in; the published ones come out.
    let relation: Vec<String> = plan.columns.iter().map(|c| c.name.clone()).collect();
    let published: Vec<String> = plan.schema.columns.iter().map(|c| c.name.clone()).collect();
    let rule_of = |name: &str| {
        plan.schema
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| format!("{} {}", c.type_name, c.rule))
            .unwrap_or_else(|| "not published".into())
    };
    let all: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("\"{}\"::text", c.name))
        .collect();
    let rows = text_rows(
        prod,
        &format!("SELECT {} FROM public.\"{}\"", all.join(", "), t.name),
    )
    .await;
    let mut checked = 0;
    for r in rows {
        let input: Vec<Option<Vec<u8>>> = relation
            .iter()
            .map(|p| {
                let i = t.columns.iter().position(|c| c.name == p).unwrap();
                r[i].clone().map(String::into_bytes)
            })
            .collect();
        let out = through_gate(&plan, &vault, &input).await;
        let mut out_cells = Vec::new();
        for v in out.iter().flatten() {
            cells(v, &mut out_cells);
        }
        for (c, v) in t.columns.iter().zip(&r) {
            let Some(v) = v else { continue };
            if c.class == Class::Dates {
                if let Some(pos) = published.iter().position(|p| p == c.name)
                    && let Some(o) = &out[pos]
                {
                    let rule = rule_of(c.name);
                    let year_only = o.len() >= 10
                        && o.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                        && &o[4..10] == "-01-01"
                        && o[10..].trim_start().trim_start_matches("00:00:00").len() <= 3;
                    // An age keeps no date (over 89 becomes 90); a date of a key is drawn in its
                    // own year (`first_run` shows the days are drawn).
                    let kept_only_the_year = if rule.ends_with(" age_cap") {
                        o.trim().parse::<f64>().is_ok_and(|a| a <= 90.0)
                    } else if rule.contains(" date_token") {
                        o.get(..4) == v.get(..4) && o.len() >= 10
                    } else {
                        year_only
                    };
                    assert!(
                        kept_only_the_year,
                        "{}.{} ({}): a date other than the year reached dev",
                        t.name,
                        c.name,
                        rule_of(c.name)
                    );
                }
                continue;
            }
            if !c.class.is_identifier() {
                continue;
            }
            // Exact: against the cells of its own column (another column's surrogate may be
            // an unrelated real name); long values: against every cell of the row.
            let own: Vec<String> = match published.iter().position(|p| p == c.name) {
                Some(pos) => {
                    let mut o = Vec::new();
                    if let Some(x) = &out[pos] {
                        cells(x, &mut o);
                    }
                    o
                }
                None => Vec::new(),
            };
            for p in identifier_parts(c, v) {
                let p = p.trim();
                if p.chars().count() < 3 {
                    continue;
                }
                let same = own.iter().any(|o| o.trim() == p)
                    // (Names and places come from lists: another column's surrogate may be
                    // this row's real name by chance; those are checked in their own column.)
                    || (p.chars().count() >= 10
                        && !matches!(c.class, Class::Names | Class::Geography)
                        && out_cells.iter().any(|o| o.contains(p)));
                assert!(
                    !same,
                    "{}.{} ({}, {}): the row's identifier value survived the gate",
                    t.name,
                    c.name,
                    c.class.name(),
                    rule_of(c.name)
                );
            }
        }
        checked += 1;
    }
    checked
}

/// Single-column primary and unique keys of a table.
async fn single_keys(c: &Client, table: &str) -> Vec<String> {
    text_rows(
        c,
        &format!(
            "SELECT a.attname FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid \
             AND a.attnum = k.conkey[1] WHERE k.conrelid = 'public.\"{table}\"'::regclass \
             AND k.contype IN ('p', 'u') AND cardinality(k.conkey) = 1"
        ),
    )
    .await
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect()
}

/// Rows of `SELECT count(*) FROM a JOIN b ON a.x = b.y`.
async fn join_count(c: &Client, a: (&str, &str), b: (&str, &str)) -> i64 {
    let q = format!(
        "SELECT count(*) FROM public.\"{}\" x JOIN public.\"{}\" y ON x.\"{}\" = y.\"{}\"",
        a.0, b.0, a.1, b.1
    );
    c.query_one(&q, &[]).await.unwrap().get(0)
}

/// Every pair (column, key) of one token domain, where key is a single-column primary or unique
/// key: the joins dev must reproduce.
async fn domain_joins(env: &Env, prod: &Client) -> Vec<((String, String), (String, String))> {
    use veil::deid::registry::{Decision, Rule};
    let registry = veil::deid::registry::Registry::load(env.registry.path()).unwrap();
    let mut by_domain: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (table, t) in &registry.tables {
        let name = table.trim_start_matches("public.").to_owned();
        for (col, c) in &t.columns {
            if let Decision::Publish(
                Rule::Tokenize { domain } | Rule::Ssn { domain } | Rule::Email { domain },
            ) = &c.decision
            {
                by_domain
                    .entry(domain.clone())
                    .or_default()
                    .push((name.clone(), col.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for members in by_domain.values() {
        for (kt, kc) in members {
            if !single_keys(prod, kt).await.contains(kc) {
                continue;
            }
            for (t, c) in members {
                if (t, c) != (kt, kc) {
                    out.push(((t.clone(), c.clone()), (kt.clone(), kc.clone())));
                }
            }
        }
    }
    out
}

/// Columns of a table that are part of no key or reference (safe to update).
async fn plain_columns(c: &Client, table: &str) -> Vec<String> {
    text_rows(
        c,
        &format!(
            "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = 'public.\"{table}\"'::regclass \
             AND a.attnum > 0 AND NOT a.attisdropped AND NOT EXISTS (SELECT 1 FROM pg_constraint k \
             WHERE k.conrelid = a.attrelid AND a.attnum = ANY (k.conkey)) ORDER BY a.attnum"
        ),
    )
    .await
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect()
}

/// Inserts, updates and deletes on every table; returns the tables, parents first.
async fn change_every_table(prod: &Client, schema: &Schema) {
    let mut inserted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in &schema.tables {
        let mut r = corpus::values::Rng::new(0xC0FFEE ^ t.rows);
        let ids: Vec<u64> = (t.rows..t.rows + 4).collect();
        let sql = format!("{} RETURNING ctid::text", t.insert_sql(&ids, &mut r));
        let rows = text_rows(prod, &sql).await;
        assert!(!rows.is_empty(), "{}: no row inserted", t.name);
        inserted.insert(
            t.name,
            rows.into_iter().filter_map(|r| r[0].clone()).collect(),
        );
        // Updates of a column that is no key: five existing rows, one statement each.
        let plain = plain_columns(prod, t.name).await;
        // A table whose every column is part of a key (MIMIC's `diagnoses_icd`) is changed by
        // its inserts and deletes only.
        let Some(col) = t.columns.iter().find(|c| plain.iter().any(|p| p == c.name)) else {
            continue;
        };
        for i in 0..5 {
            let v = t.value_sql(col, t.rows + 10 + i, &mut r);
            let n = prod
                .execute(
                    &format!(
                        "UPDATE public.\"{}\" SET \"{}\" = {v} WHERE ctid = \
                         (SELECT ctid FROM public.\"{}\" OFFSET {} LIMIT 1)",
                        t.name,
                        col.name,
                        t.name,
                        (i * 7) % t.rows
                    ),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(n, 1, "{}: update", t.name);
        }
    }
    // Deletes, children first: an inserted row nothing references, else any such row.
    for t in schema.tables.iter().rev() {
        let mut deleted = 0;
        let candidates = text_rows(
            prod,
            &format!("SELECT ctid::text FROM public.\"{}\" LIMIT 40", t.name),
        )
        .await
        .into_iter()
        .filter_map(|r| r[0].clone());
        let mine = inserted[t.name].iter().rev().cloned();
        for ctid in mine.chain(candidates) {
            let q = format!("DELETE FROM public.\"{}\" WHERE ctid = '{ctid}'", t.name);
            match prod.execute(&q, &[]).await {
                Ok(n) => deleted += n,
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {}
                Err(e) => panic!("{}: delete: {e}", t.name),
            }
            if deleted >= 2 {
                break;
            }
        }
        assert!(deleted >= 1, "{}: nothing could be deleted", t.name);
    }
}

async fn run_schema(schema: Schema) {
    let env = Env::start(&[]);
    // A new user's registry: empty.
    for e in std::fs::read_dir(env.registry.path()).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    env.prod.create_db(AUDIT_DB).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = env.write_config(tmp.path());
    let log = tmp.path().join("veil.log");
    cli(&["setup"], &config, &log);
    let prod = env.prod_client().await;
    prod.batch_execute(&schema.sql(7)).await.unwrap();
    cli(&["registry", "propose"], &config, &log);
    cli(
        &[
            "registry",
            "approve",
            "--all-proposed",
            "--by",
            "e2e-corpus",
        ],
        &config,
        &log,
    );
    let tables: Vec<&str> = schema.tables.iter().map(|t| t.name).collect();
    let mut truth = Truth::default();
    read_truth(&prod, &schema, &mut truth).await;

    let mut stream = Proc::start("stream", &config, &log);
    let mut sink = Proc::start("sink", &config, &log);
    if let Err(e) = dev_matches(&env, &tables, Duration::from_secs(240)).await {
        panic!(
            "{}: after the snapshot: {e}\n{}\n{}",
            schema.name,
            tail(&log),
            registry_text(&env)
        );
    }
    change_every_table(&prod, &schema).await;
    read_truth(&prod, &schema, &mut truth).await;
    if let Err(e) = dev_matches(&env, &tables, Duration::from_secs(240)).await {
        panic!(
            "{}: after the changes: {e}\n{}\n{}",
            schema.name,
            tail(&log),
            registry_text(&env)
        );
    }

    // Row by row through the same gate: nothing of a row survives in its published cells.
    let mut rows = 0;
    for t in &schema.tables {
        rows += check_rows_through_gate(&env, &prod, t).await;
    }

    // Joins along every token domain count the same in dev.
    let dev = env.dev_client().await;
    let joins = domain_joins(&env, &prod).await;
    for (a, b) in &joins {
        let (p, d) = (
            join_count(&prod, (&a.0, &a.1), (&b.0, &b.1)).await,
            join_count(&dev, (&a.0, &a.1), (&b.0, &b.1)).await,
        );
        assert_eq!(p, d, "{}: join {a:?} → {b:?}", schema.name);
    }

    stream.term();
    sink.term();

    // Distinctive values: nowhere in dev, the topics, the registry.
    let distinctive = truth.distinctive();
    let dev_leaks = leaks_in_cells(&distinctive, &dev_cells(&dev, &schema).await);
    assert!(
        dev_leaks.is_empty(),
        "{}: {} distinctive identifier values in dev (classes: {:?})",
        schema.name,
        dev_leaks.len(),
        classes_of(&truth, &dev_leaks)
    );
    let kafka = env.cfg.kafka().unwrap();
    let (topic_cells, topic_other) = topic_text(kafka, &kafka.topic);
    let mut topic_leaks = leaks_in_cells(&distinctive, &topic_cells);
    topic_leaks.extend(found_in(&distinctive, &topic_other));
    let (audit_cells, audit_other) = topic_text(kafka, "veil.test.audit");
    topic_leaks.extend(leaks_in_cells(&distinctive, &audit_cells));
    topic_leaks.extend(found_in(&distinctive, &audit_other));
    assert!(
        topic_leaks.is_empty(),
        "{}: {} identifier values in the topics (classes: {:?})",
        schema.name,
        topic_leaks.len(),
        classes_of(&truth, &topic_leaks)
    );
    let any = truth.any_value(&schema);
    let mut files = String::new();
    for e in std::fs::read_dir(env.registry.path()).unwrap() {
        files.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
    }
    let in_files = found_in(&any, &files);
    assert!(
        in_files.is_empty(),
        "{}: {} identifier values in the registry or proposals (classes: {:?})",
        schema.name,
        in_files.len(),
        classes_of(&truth, &in_files)
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    let in_logs = found_in(&any, &logs);
    assert!(
        in_logs.is_empty(),
        "{}: {} identifier values in the logs (classes: {:?})",
        schema.name,
        in_logs.len(),
        classes_of(&truth, &in_logs)
    );
    eprintln!(
        "{}: {} tables in step with production; {rows} rows checked through the gate; {} joins \
         equal; {} distinctive identifier values absent from dev and the topics, {} from the \
         registry and {} KB of logs",
        schema.name,
        tables.len(),
        joins.len(),
        distinctive.len(),
        any.len(),
        logs.len() / 1024
    );
}

/// The registry's decisions (no values: checked below), for a failure's message.
fn registry_text(env: &Env) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(env.registry.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            out.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
    }
    out
}

/// Classes of leaked values (never the values).
fn classes_of(truth: &Truth, leaked: &[String]) -> BTreeSet<&'static str> {
    truth
        .ids
        .iter()
        .filter(|(_, v)| leaked.iter().any(|l| l.trim() == v.trim()))
        .map(|(c, _)| c.name())
        .collect()
}

/// The last lines of the log without values: level and target only would lose the reason, so
/// only lines veil wrote at WARN or above.
fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn schema(name: &str) -> Schema {
    corpus::all()
        .into_iter()
        .chain(corpus::real::all_real())
        .find(|s| s.name == name)
        .unwrap()
}

macro_rules! corpus_e2e {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $test() {
            run_schema(schema($name)).await;
        }
    )*};
}

corpus_e2e! {
    corpus_ehr_end_to_end => "ehr",
    corpus_claims_end_to_end => "claims",
    corpus_lab_end_to_end => "lab",
    corpus_imaging_end_to_end => "imaging",
    corpus_portal_end_to_end => "portal",
    corpus_pharmacy_end_to_end => "pharmacy",
    corpus_telemetry_end_to_end => "telemetry",
    // From the published DDL of real systems (`tests/corpus/real.rs`).
    corpus_omop_end_to_end => "omop",
    corpus_mimic_end_to_end => "mimic",
}
