//! Leak paths closed: values that reached dev without the decision that should stand in front of
//! them (inheritance children copied under the parent's plan, partitions that were each a new
//! table to hold).

use std::time::Duration;

use crate::common::*;

const TABLES: &str = "
CREATE TABLE parent_t (id int PRIMARY KEY, name text);
CREATE TABLE child_t (secret text, PRIMARY KEY (id)) INHERITS (parent_t);
CREATE TABLE visits_p (id int, at date, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE visits_p_2024 PARTITION OF visits_p FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE visits_p_2025 PARTITION OF visits_p FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO parent_t VALUES (1, 'Ada Parent'), (2, 'Bo Parent'), (3, 'Cy Parent');
INSERT INTO child_t VALUES (10, 'Di Child', 'CHILD-SECRET-10'), (11, 'Ed Child', 'CHILD-SECRET-11');
INSERT INTO visits_p SELECT g, DATE '2024-03-01' + g * 20, 'visit ' || g FROM generate_series(1, 20) g;
";

const REGISTRY: &[(&str, &str)] = &[
    (
        "public.parent_t.toml",
        r#"table = "public.parent_t"
[columns]
id   = { type = "integer", class = "safe" }
name = { type = "text", class = "sensitive", rule = "tokenize", domain = "inh_name" }
"#,
    ),
    (
        "public.child_t.toml",
        r#"table = "public.child_t"
[columns]
id     = { type = "integer", class = "safe" }
name   = { type = "text", class = "sensitive", rule = "tokenize", domain = "inh_name" }
secret = { type = "text", class = "blocked", reason = "the child's own column" }
"#,
    ),
    (
        "public.visits_p.toml",
        r#"table = "public.visits_p"
[columns]
id   = { type = "integer", class = "safe" }
at   = { type = "date", class = "sensitive", rule = "year_only" }
note = { type = "text", class = "sensitive", rule = "tokenize", domain = "visit_note" }
"#,
    ),
];

/// An inheritance child is copied once, under its own plan (`ONLY` for plain tables); a
/// partitioned table publishes via its root, so its partitions — one added while streaming
/// among them — take the root's decisions and hold nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inheritance_children_and_partitions_publish_under_their_own_decisions() {
    init_test_log();
    let env = Env::start(&[]);
    for (name, text) in REGISTRY {
        std::fs::write(env.registry.path().join(name), text).unwrap();
    }
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(TABLES).await.unwrap();
    if std::env::var_os("VEIL_TEST_LOG").is_some() {
        eprintln!(
            "DEBUG {:?}",
            text_rows(&prod, "SELECT pubviaroot::text FROM pg_publication").await
        );
        eprintln!(
            "DEBUG {:?}",
            text_rows(&prod, "SELECT tablename FROM pg_publication_tables").await
        );
    }

    let running = env.run_stream_and_sink();

    let tables = ["parent_t", "child_t", "visits_p"];
    assert_dev_matches(&env, &tables, Duration::from_secs(120)).await;
    let dev = env.dev_client().await;
    let n: i64 = dev
        .query_one("SELECT count(*) FROM parent_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "the parent holds its own rows only");

    // While streaming: rows in both, and next year's partition.
    prod.batch_execute(
        "INSERT INTO child_t VALUES (12, 'Fay Child', 'CHILD-SECRET-12');
         UPDATE child_t SET name = 'Gus Child' WHERE id = 10;
         INSERT INTO parent_t VALUES (4, 'Hal Parent');
         CREATE TABLE visits_p_2026 PARTITION OF visits_p FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');",
    )
    .await
    .unwrap();
    // A partition created and written in one transaction, too.
    prod.batch_execute(
        "CREATE TABLE visits_p_2027 PARTITION OF visits_p FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
         INSERT INTO visits_p VALUES (102, '2027-02-02', 'visit 102');
         INSERT INTO visits_p VALUES (100, '2026-05-05', 'visit 100'), (101, '2024-06-06', 'visit 101');
         UPDATE visits_p SET note = 'moved' WHERE id = 3;
         DELETE FROM visits_p WHERE id = 4;",
    )
    .await
    .unwrap();
    if let Err(e) = dev_matches(&env, &tables, Duration::from_secs(60)).await {
        panic!("{e}\n{}", dump_topic(&env));
    }
    let n: i64 = dev
        .query_one("SELECT count(*) FROM visits_p", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 22);

    running.stop().await;
    for p in topic_payloads(&env) {
        assert!(
            !contains_bytes(&p, b"CHILD-SECRET"),
            "a blocked value in the topic"
        );
    }
}

/// A column whose type changes and whose rule becomes stricter at once (safe integer → bigint
/// tokenized): dev clears what it held under the weaker rule; before, the type change won and
/// dev kept the raw values.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_type_change_with_a_stricter_rule_clears_dev() {
    let mut env = Env::start(&[]);
    // What the sink does on its own (the backfill a decision starts is tested in `backfill`).
    env.cfg.source.as_mut().unwrap().backfill_on_decision = false;
    let file = env.registry.path().join("public.kv.toml");
    std::fs::write(
        &file,
        "table = \"public.kv\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
         v = { type = \"integer\", class = \"safe\" }\n",
    )
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE kv (id int PRIMARY KEY, v int);
         INSERT INTO kv SELECT g, 7000000 + g FROM generate_series(1, 20) g;",
    )
    .await
    .unwrap();
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["kv"], Duration::from_secs(120)).await;

    // The type changes (the stream holds at the DDL), the reviewer decides: bigint, tokenized.
    prod.batch_execute("ALTER TABLE kv ALTER COLUMN v TYPE bigint")
        .await
        .unwrap();
    std::fs::write(
        &file,
        "table = \"public.kv\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
         v = { type = \"bigint\", class = \"sensitive\", rule = \"tokenize\", domain = \"kv_v\" }\n",
    )
    .unwrap();
    prod.batch_execute("INSERT INTO kv VALUES (21, 7000021)")
        .await
        .unwrap();
    let dev = env.dev_client().await;
    let arrived = wait_for(Duration::from_secs(60), || async {
        dev.query_opt("SELECT 1 FROM kv WHERE id = 21", &[])
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(arrived, "the new row never reached dev");
    let raw: i64 = dev
        .query_one(
            "SELECT count(*) FROM kv WHERE v::text::bigint BETWEEN 7000001 AND 7000021",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, 0, "dev kept values published under the weaker rule");
    let cleared: i64 = dev
        .query_one("SELECT count(*) FROM kv WHERE v IS NULL AND id <= 20", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cleared, 20);
    running.stop().await;
}

/// Item 5 of the leak paths: a whole-table block reaches dev (its copy is emptied, audited),
/// and after an unblock the table starts empty in dev; updates and deletes of rows dev does not
/// hold are counted in the audit, never fatal. The block is audited as such, the unblock as a
/// loosening decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_block_empties_dev_and_an_unblock_never_stops_the_sink() {
    use prost::Message as _;
    let mut env = Env::start(&[]);
    // What the sink does on its own (the backfill a decision starts is tested in `backfill`).
    env.cfg.source.as_mut().unwrap().backfill_on_decision = false;
    let journal = tempfile::tempdir().unwrap();
    crate::audit::with_audit(&mut env, journal.path());
    std::fs::write(
        env.registry.path().join("public.kv.toml"),
        "table = \"public.kv\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
         v = { type = \"integer\", class = \"safe\" }\n",
    )
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE kv (id int PRIMARY KEY, v int);
         CREATE TABLE scratch (id int PRIMARY KEY, v text);
         INSERT INTO kv SELECT g, 7000000 + g FROM generate_series(1, 20) g;
         INSERT INTO scratch VALUES (1, 'a');",
    )
    .await
    .unwrap();
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["kv", "scratch"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;
    let count = |sql: &'static str| {
        let dev = &dev;
        async move { dev.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };

    // Block the whole table while the stream runs; production keeps writing to it.
    veil::review::workflow::block(&env.cfg, "public.kv", "kim", "staging copy of real rows")
        .await
        .unwrap();
    // The stream notices a registry change within a second or so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    prod.batch_execute("INSERT INTO kv VALUES (21, 7000021); UPDATE kv SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    // A change of another table after the block shows the stream got past it.
    prod.batch_execute("INSERT INTO scratch VALUES (2, 'b')")
        .await
        .unwrap();
    let emptied = wait_for(Duration::from_secs(60), || async {
        count("SELECT count(*) FROM scratch").await == 2
            && count("SELECT count(*) FROM kv").await == 0
    })
    .await;
    assert!(
        emptied,
        "dev kept {} rows of a blocked table",
        count("SELECT count(*) FROM kv").await
    );

    // Unblock: the table starts empty in dev; updates and deletes of rows dev does not hold are
    // skipped and counted, and new rows arrive.
    veil::review::workflow::unblock(&env.cfg, "public.kv", "lee", "needed in dev again")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    prod.batch_execute(
        "UPDATE kv SET v = v + 1 WHERE id <= 5; DELETE FROM kv WHERE id = 6;
         INSERT INTO kv VALUES (22, 7000022); UPDATE kv SET v = 1 WHERE id = 22;
         INSERT INTO scratch VALUES (3, 'c');",
    )
    .await
    .unwrap();
    let arrived = wait_for(Duration::from_secs(60), || async {
        count("SELECT count(*) FROM scratch").await == 3
    })
    .await;
    assert!(
        arrived,
        "the sink stopped on changes of rows dev does not hold"
    );
    assert_eq!(count("SELECT count(*) FROM kv").await, 1);
    assert_eq!(count("SELECT v::bigint FROM kv WHERE id = 22").await, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.stop().await;

    // The audit trail: the block and the emptying, the unblock marked as loosening, and the
    // skipped changes counted.
    let records: Vec<veil::proto::AuditRecord> =
        read_topic(env.cfg.kafka().unwrap(), "veil.test.audit")
            .into_iter()
            .filter_map(|(_, b)| veil::proto::AuditRecord::decode(b.as_slice()).ok())
            .collect();
    use veil::proto::audit_record::Body;
    let decisions: Vec<&veil::proto::Decision> = records
        .iter()
        .filter_map(|r| match &r.body {
            Some(Body::Decision(d)) if d.table == "public.kv" && d.column == "*" => Some(d),
            _ => None,
        })
        .collect();
    assert!(
        decisions
            .iter()
            .any(|d| d.class == "blocked" && !d.loosens && d.reviewer == "kim"),
        "{decisions:?}"
    );
    assert!(
        decisions.iter().any(|d| d.class == "unblocked"
            && d.loosens
            && d.reviewer == "lee"
            && d.reason == "needed in dev again"),
        "{decisions:?}"
    );
    let emptied = records.iter().find_map(|r| match &r.body {
        Some(Body::Reclassified(c)) if c.table == "public.kv" && c.action == "emptied" => Some(c),
        _ => None,
    });
    assert_eq!(emptied.map(|c| c.rows), Some(20), "{records:?}");
    let missing: u64 = records
        .iter()
        .filter_map(|r| match &r.body {
            Some(Body::RowsMissing(m)) if m.table == "public.kv" => Some(m.rows),
            _ => None,
        })
        .sum();
    // Five updates and one delete of rows dev does not hold.
    assert_eq!(missing, 6, "{records:?}");
}
