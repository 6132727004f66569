//! The proposer measured on the evaluation corpus (`tests/corpus/`): schemas the project
//! designed after real systems, every column labelled before the proposer was tuned, two of them
//! held out. Each schema is loaded into a real PostgreSQL 15 cluster, `veil setup` runs, and
//! `veil registry pending` proposes a decision for every column of an empty registry.
//!
//! Printed per schema: identifier columns proposed safe (misses, by name), the share of truly
//! safe columns proposed safe, the share proposed blocked; per class: recall (identifier columns
//! of the class not proposed safe) and, once proposals name a class, precision.
//!
//! Misses in the held-out schemas are counted but not named (set `VEIL_EVAL_SHOW_HELD_OUT=1`
//! only for the final report).
//!
//! The test fails if any identifier column is proposed safe, if fewer than 90% of a schema's
//! safe columns are proposed safe, or if more than 10% of a schema's columns are proposed
//! `blocked` (`VEIL_EVAL_LENIENT=1` only prints). The baseline before the proposer was rebuilt on
//! these signals: 45 of 120 identifier columns of the tuning schemas and 15 of 42 of the
//! held-out ones proposed safe.

mod corpus;

use corpus::{Class, Schema};
use std::collections::BTreeMap;
use veil::config::Config;
use veil::devkit::testkit::PgCluster;

struct SchemaReport {
    name: &'static str,
    held_out: bool,
    identifiers: usize,
    missed: Vec<String>,
    safe: usize,
    safe_as_safe: usize,
    blocked: usize,
    columns: usize,
    /// Safe columns not proposed safe, and what was proposed.
    false_alarms: Vec<String>,
    /// Identifier columns whose proposal names another class.
    other_class: Vec<String>,
}

/// What the proposer says of one column: `safe`, `sensitive` or `blocked` (no proposal counts as
/// `blocked`: nothing would flow without a decision).
fn verdict(p: Option<&veil::review::workflow::Proposal>) -> &str {
    p.map(|p| p.class.as_str()).unwrap_or("blocked")
}

async fn evaluate(
    pg: &PgCluster,
    schema: &Schema,
    per_class: &mut BTreeMap<Class, (usize, usize)>,
    named: &mut BTreeMap<String, (usize, usize)>,
) -> SchemaReport {
    let db = format!("corpus_{}", schema.name);
    pg.create_db(&db).unwrap();
    let registry = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        "[source]\ndsn = {:?}\npublication = \"veil_pub\"\n\n[registry]\ndir = {:?}\n",
        pg.dsn(&db),
        registry.path()
    ))
    .unwrap();
    // Setup first: its event trigger gives the key-less tables REPLICA IDENTITY FULL.
    veil::source::setup::run(&cfg).await.unwrap();
    let client = veil::devkit::demo::connect(&pg.dsn(&db)).await.unwrap();
    client.batch_execute(&schema.sql(7)).await.unwrap();
    let items = veil::review::workflow::pending(&cfg).await.unwrap();
    if schema.name == "ehr" {
        // A reference and its key share one token domain, and `pending` says so.
        let enc = items
            .iter()
            .find(|p| p.table == "public.encounters" && p.column == "patient")
            .unwrap();
        assert!(
            enc.shares_domain_with
                .iter()
                .any(|c| c == "public.patients.id"),
            "{:?}",
            enc.shares_domain_with
        );
    }
    let proposals: BTreeMap<(String, String), Option<veil::review::workflow::Proposal>> = items
        .into_iter()
        .map(|p| ((p.table, p.column), p.proposal))
        .collect();
    let mut r = SchemaReport {
        name: schema.name,
        held_out: schema.held_out,
        identifiers: 0,
        missed: Vec::new(),
        safe: 0,
        safe_as_safe: 0,
        blocked: 0,
        columns: 0,
        false_alarms: Vec::new(),
        other_class: Vec::new(),
    };
    for (table, column, class) in schema.labels() {
        let p = proposals
            .get(&(table.clone(), column.clone()))
            .unwrap_or_else(|| panic!("no pending item for {table}.{column}"));
        let v = verdict(p.as_ref());
        r.columns += 1;
        if v == "blocked" {
            r.blocked += 1;
        }
        // Precision: of the proposals naming a class, how many name the labelled one.
        if let Some(named_class) = p.as_ref().and_then(|p| p.identifier_class.clone()) {
            let e = named.entry(named_class.clone()).or_default();
            e.0 += 1;
            if named_class == class.name() {
                e.1 += 1;
            } else if class.is_identifier() {
                r.other_class.push(format!(
                    "{table}.{column}: labelled {}, proposed {named_class}",
                    class.name()
                ));
            }
        }
        if class.is_identifier() {
            r.identifiers += 1;
            let e = per_class.entry(class).or_default();
            e.0 += 1;
            if v == "safe" {
                r.missed
                    .push(format!("{table}.{column} ({})", class.name()));
            } else {
                e.1 += 1;
            }
        } else {
            r.safe += 1;
            if v == "safe" {
                r.safe_as_safe += 1;
            } else {
                let p = p.as_ref();
                r.false_alarms.push(format!(
                    "{table}.{column}: {} {}",
                    v,
                    p.and_then(|p| p.rule.clone()).unwrap_or_default()
                ));
            }
        }
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposer_on_the_evaluation_corpus() {
    let pg = PgCluster::start().expect("PostgreSQL 15 (scripts/install-deps)");
    // Lenient only on request (to see the report of a proposer under construction).
    let strict = std::env::var_os("VEIL_EVAL_LENIENT").is_none();
    let mut tuned: BTreeMap<Class, (usize, usize)> = BTreeMap::new();
    let mut held: BTreeMap<Class, (usize, usize)> = BTreeMap::new();
    let mut named_tuned: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut named_held: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut reports = Vec::new();
    for schema in corpus::all() {
        let (per_class, named) = if schema.held_out {
            (&mut held, &mut named_held)
        } else {
            (&mut tuned, &mut named_tuned)
        };
        reports.push(evaluate(&pg, &schema, per_class, named).await);
    }
    let mut failures = Vec::new();
    println!("\nproposer evaluation (labels: tests/corpus/mod.rs)");
    println!(
        "{:<10} {:>9} {:>6} {:>7} {:>13} {:>9}",
        "schema", "set", "id", "missed", "safe→safe", "blocked"
    );
    for r in &reports {
        let safe_share = r.safe_as_safe as f64 / r.safe.max(1) as f64;
        let blocked_share = r.blocked as f64 / r.columns.max(1) as f64;
        println!(
            "{:<10} {:>9} {:>6} {:>7} {:>6}/{:<3} {:.2} {:>8.2}",
            r.name,
            if r.held_out { "held out" } else { "tuning" },
            r.identifiers,
            r.missed.len(),
            r.safe_as_safe,
            r.safe,
            safe_share,
            blocked_share
        );
        // Held-out misses are counted, not named: naming them would tune to them.
        if !r.held_out || std::env::var_os("VEIL_EVAL_SHOW_HELD_OUT").is_some() {
            for m in &r.missed {
                println!("    identifier proposed safe: {m}");
            }
            for m in &r.false_alarms {
                println!("    safe column not proposed safe: {m}");
            }
            for m in &r.other_class {
                println!("    class differs: {m}");
            }
        }
        if !r.missed.is_empty() {
            failures.push(format!(
                "{}: {} identifier columns proposed safe",
                r.name,
                r.missed.len()
            ));
        }
        if safe_share < 0.90 {
            failures.push(format!(
                "{}: only {safe_share:.2} of safe columns proposed safe",
                r.name
            ));
        }
        if blocked_share > 0.10 {
            failures.push(format!(
                "{}: {blocked_share:.2} of columns proposed blocked",
                r.name
            ));
        }
    }
    for (set, per_class, named) in [
        ("tuning", &tuned, &named_tuned),
        ("held out", &held, &named_held),
    ] {
        println!(
            "\nper class ({set} schemas): recall (identifier columns not proposed safe), precision (proposals naming the class that are of it)"
        );
        for (class, (n, caught)) in per_class {
            let (said, right) = named.get(class.name()).copied().unwrap_or((0, 0));
            println!(
                "  {:<12} recall {:>4}/{:<4} {:.2}   precision {:>4}/{:<4} {:.2}",
                class.name(),
                caught,
                n,
                *caught as f64 / (*n).max(1) as f64,
                right,
                said,
                right as f64 / said.max(1) as f64
            );
        }
    }
    // The corpus itself must be what it claims: seven schemas, two held out, every class of
    // identifier the labels use present, identifiers and safe columns in every schema.
    assert!(reports.len() >= 7);
    assert_eq!(reports.iter().filter(|r| r.held_out).count(), 2);
    for r in &reports {
        assert!(r.identifiers > 0 && r.safe > 0, "{}", r.name);
    }
    if strict {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    } else if !failures.is_empty() {
        println!(
            "\nnot met ({} findings; VEIL_EVAL_LENIENT is set):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_refuses_rules_that_cannot_work_and_writes_nothing() {
    use veil::review::workflow::{self as review, ColumnDecision};
    let pg = PgCluster::start().expect("PostgreSQL 15 (scripts/install-deps)");
    pg.create_db("approve").unwrap();
    let registry = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        "[source]\ndsn = {:?}\npublication = \"veil_pub\"\n\n[registry]\ndir = {:?}\n",
        pg.dsn("approve"),
        registry.path()
    ))
    .unwrap();
    veil::source::setup::run(&cfg).await.unwrap();
    let c = veil::devkit::demo::connect(&pg.dsn("approve"))
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE person (id int PRIMARY KEY, note text, born date, code numeric UNIQUE);
         INSERT INTO person VALUES (1, 'x', '1980-02-03', 42);",
    )
    .await
    .unwrap();
    let decision = |rule: &str| ColumnDecision {
        class: "sensitive".into(),
        rule: Some(rule.into()),
        domain: Some("d".into()),
        by: "kim".into(),
        reason: "test".into(),
        ..Default::default()
    };
    let files = || std::fs::read_dir(registry.path()).unwrap().count();
    // A date rule on a text column: the gate could never apply it (the stream would hold).
    let e = review::approve(&cfg, "public.person.note", &decision("year_only"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("public.person.note") && e.contains("year_only"),
        "{e}"
    );
    assert_eq!(files(), 0, "nothing written");
    // A rule that merges values on a primary key, and on a unique key.
    let e = review::approve(&cfg, "public.person.id", &decision("scrub"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("primary key"), "{e}");
    let e = review::approve(&cfg, "public.person.code", &decision("zip3"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unique") || e.contains("zip3"), "{e}");
    assert_eq!(files(), 0, "nothing written");
    // What fits is written.
    review::approve(&cfg, "public.person.born", &decision("year_only"))
        .await
        .unwrap();
    review::approve(&cfg, "public.person.id", &decision("tokenize"))
        .await
        .unwrap();
    // A numeric key can be tokenized: its tokens are canonical numbers, distinct as numbers.
    let code = ColumnDecision {
        domain: Some("code".into()),
        ..decision("tokenize")
    };
    review::approve(&cfg, "public.person.code", &code)
        .await
        .unwrap();
    let r = veil::deid::registry::Registry::load(registry.path()).unwrap();
    assert_eq!(r.table("public.person").unwrap().columns.len(), 3);
    // Proposals pass the same check: `--all-proposed` accepts them all.
    let props = review::propose(&cfg).await.unwrap();
    assert!(
        props
            .iter()
            .all(|p| !p.proposal.as_ref().unwrap().confidence.is_empty())
    );
    let n = review::approve_all_proposed(&cfg, "kim").await.unwrap();
    assert_eq!(n, 1, "note");
    assert!(review::pending(&cfg).await.unwrap().is_empty());
}

/// `approve` is all or nothing under one writer at a time: a refused decision in the middle of
/// `--all-proposed` leaves the registry byte for byte as it was (and says nothing was written),
/// and approvals running at once all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approve_all_proposed_is_all_or_nothing_and_approvals_take_turns() {
    use veil::review::workflow::{self as review, ColumnDecision};
    let pg = PgCluster::start().expect("PostgreSQL 15 (scripts/install-deps)");
    pg.create_db("approve").unwrap();
    let registry = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        "[source]\ndsn = {:?}\npublication = \"veil_pub\"\n\n[registry]\ndir = {:?}\n",
        pg.dsn("approve"),
        registry.path()
    ))
    .unwrap();
    veil::source::setup::run(&cfg).await.unwrap();
    let c = veil::devkit::demo::connect(&pg.dsn("approve"))
        .await
        .unwrap();
    let mut ddl = String::new();
    for t in 0..8 {
        ddl.push_str(&format!(
            "CREATE TABLE t{t} (id int PRIMARY KEY, a int, b text, c text);
             INSERT INTO t{t} SELECT g, g, 'b' || g, 'c' || g FROM generate_series(1, 30) g;"
        ));
    }
    c.batch_execute(&ddl).await.unwrap();
    let snapshot = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(registry.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    // One table decided already; the rest proposed.
    review::approve(
        &cfg,
        "public.t0.a",
        &ColumnDecision {
            class: "safe".into(),
            by: "kim".into(),
            reason: "a count".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    review::propose(&cfg).await.unwrap();
    // A proposal in the middle of the set made impossible: column b of t4 as an integer token
    // in a domain that t3.a (an integer) also writes — and b is text.
    let path = review::proposals_path(registry.path());
    let mut items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut edited = 0;
    for item in items.iter_mut() {
        let (t, col) = (item["table"].clone(), item["column"].clone());
        let p = &mut item["proposal"];
        if (t == "public.t3" && col == "a") || (t == "public.t4" && col == "b") {
            p["class"] = "sensitive".into();
            p["rule"] = "tokenize".into();
            p["domain"] = "clash".into();
            edited += 1;
        }
    }
    assert_eq!(edited, 2);
    std::fs::write(&path, serde_json::to_string(&items).unwrap()).unwrap();
    let before = snapshot();
    let e = review::approve_all_proposed(&cfg, "kim")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("clash") && e.contains("no decision of the set was written"),
        "{e}"
    );
    assert_eq!(
        snapshot(),
        before,
        "a refused set leaves the registry as it was"
    );

    // Approvals at once, on one table and on others: every one lands.
    let mut tasks = Vec::new();
    for t in 1..8 {
        for col in ["a", "b", "c"] {
            let cfg = cfg.clone();
            tasks.push(tokio::spawn(async move {
                review::approve(
                    &cfg,
                    &format!("public.t{t}.{col}"),
                    &ColumnDecision {
                        class: "sensitive".into(),
                        rule: Some("tokenize".into()),
                        domain: Some(format!("t{t}_{col}")),
                        by: format!("reviewer {t}{col}"),
                        reason: "concurrent".into(),
                        ..Default::default()
                    },
                )
                .await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let r = veil::deid::registry::Registry::load(registry.path()).unwrap();
    for t in 1..8 {
        let cols = &r.table(&format!("public.t{t}")).unwrap().columns;
        for col in ["a", "b", "c"] {
            assert!(cols.contains_key(col), "t{t}.{col} lost");
        }
    }
    // No half-written file is left behind.
    assert!(
        snapshot().iter().all(|(n, _)| !n.ends_with(".partial")),
        "{:?}",
        snapshot().iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

/// Schemas from the published DDL of real systems (`tests/corpus/real.rs`), labelled before the
/// proposer ran on them: the first run's invariant (every proposal accepted, every table
/// planned — 0 refusals, 0 holds) and the quality goals (no identifier column proposed safe, at
/// least 90% of safe columns kept safe, at most 10% blocked) are asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposer_on_schemas_from_real_ddl() {
    let pg = PgCluster::start().expect("PostgreSQL 15 (scripts/install-deps)");
    let show = std::env::var_os("VEIL_EVAL_SHOW_HELD_OUT").is_some();
    for schema in corpus::real::all_real() {
        let mut per_class = BTreeMap::new();
        let mut named = BTreeMap::new();
        let r = evaluate(&pg, &schema, &mut per_class, &mut named).await;
        println!(
            "{} ({}): {} columns; identifiers {} (proposed safe: {}); safe kept safe {}/{} ({:.2}); blocked {} ({:.2})",
            r.name,
            schema.shaped_after,
            r.columns,
            r.identifiers,
            r.missed.len(),
            r.safe_as_safe,
            r.safe,
            r.safe_as_safe as f64 / r.safe.max(1) as f64,
            r.blocked,
            r.blocked as f64 / r.columns.max(1) as f64
        );
        if show || !schema.held_out {
            for m in &r.missed {
                println!("    identifier proposed safe: {m}");
            }
            for f in &r.false_alarms {
                println!("    safe column not proposed safe: {f}");
            }
        }
        for (class, (n, found)) in &per_class {
            println!("    {:<12} recall {found}/{n}", class.name());
        }
        // The first run: every proposal accepted, every table planned.
        let db = format!("corpus_{}", schema.name);
        let registry = tempfile::tempdir().unwrap();
        let cfg = Config::parse(&format!(
            "[source]\ndsn = {:?}\npublication = \"veil_pub\"\n\n[registry]\ndir = {:?}\n",
            pg.dsn(&db),
            registry.path()
        ))
        .unwrap();
        let proposals = veil::review::workflow::propose(&cfg).await.unwrap();
        if show || !schema.held_out {
            for p in &proposals {
                let Some(x) = &p.proposal else { continue };
                if r.missed
                    .iter()
                    .any(|m| m.starts_with(&format!("{}.{} ", p.table, p.column)))
                {
                    println!("    {}.{}: {}", p.table, p.column, x.evidence());
                }
            }
        }
        let accepted = veil::review::workflow::approve_all_proposed(&cfg, "first run")
            .await
            .unwrap_or_else(|e| panic!("{}: approve --all-proposed refused: {e}", r.name));
        assert_eq!(accepted, proposals.len());
        let reg = veil::deid::registry::Registry::load(registry.path()).unwrap();
        let catalog = veil::devkit::demo::connect(&pg.dsn(&db)).await.unwrap();
        veil::pg::catalog::prepare_session(&catalog).await.unwrap();
        let scanner = std::sync::Arc::new(veil::deid::scanner::Scanner::standard());
        let master = veil::deid::tokenize::MasterKey::new([3; 32]);
        for t in &schema.tables {
            let oid: u32 = catalog
                .query_one(&format!("SELECT 'public.{}'::regclass::oid", t.name), &[])
                .await
                .unwrap()
                .get(0);
            let info = veil::pg::catalog::describe_table(&catalog, oid, None)
                .await
                .unwrap();
            if let Err(e) = veil::deid::gate::plan_table(
                "corpus",
                &info,
                &info.identity_keys(),
                &reg,
                &master,
                &scanner,
            ) {
                panic!("{}: the gate holds on {}: {e}", r.name, t.name);
            }
        }
        println!("    first run: {accepted} proposals accepted, 0 refusals, 0 holds");
        if schema.held_out {
            // Held out: measured, never tuned on; the figures above are the measurement.
            continue;
        }
        assert!(r.missed.is_empty(), "{}: {:?}", r.name, r.missed);
        assert!(
            r.safe_as_safe * 10 >= r.safe * 9,
            "{}: safe kept safe below 0.90",
            r.name
        );
        assert!(
            r.blocked * 10 <= r.columns,
            "{}: more than 10% blocked",
            r.name
        );
    }
}
