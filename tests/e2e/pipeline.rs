//! The whole path in-process: prod → snapshot + pgoutput → gate → broker → sink → dev, compared
//! row for row with the expected de-identified copy.

use std::time::Duration;
use tokio::sync::watch;

use crate::common::*;

const ALL_TABLES: &[&str] = &[
    "providers",
    "patients",
    "encounters",
    "observations",
    "medications",
    "scratch",
    "docs",
    "type_zoo",
];

const ZOO_ROWS: &str = "
INSERT INTO type_zoo VALUES
 (1, true, -32768, 2147483647, -9223372036854775808, 12345678901234567890.123456789, 3.25, -1e300, 'plain',
  'varchar', 'ab', '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+05:30', '23:59:59.999999',
  '1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{\"a\": [1, 2]}',
  '{\"k\": \"山田\", \"e\": \"😀\"}', 'happy', '{1,2,NULL}', '{\"x y\",\"a,b\",NULL}', '{sad,ok}', NULL),
 (2, false, 0, 0, 0, 'NaN', 'Infinity', '-Infinity', E'tab\\there\\nnewline \\\\ backslash ''quote''',
  'السلام', '日本', '0001-01-01 BC', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '00:00', '-1 days',
  '00000000-0000-0000-0000-000000000000', '', '[]', '{}', 'sad', '{}', '{}', '{}', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '🧬 Zoë 山田 שלום e\u{301}', NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, repeat('long ', 300000));
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_live_changes_match_expected_copy() {
    let env = Env::start(&[("logical_decoding_work_mem", "64kB")]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 300, 11).await.unwrap();
    prod.batch_execute(EXTRA_SCHEMA).await.unwrap();
    prod.batch_execute(ZOO_ROWS).await.unwrap();
    prod.batch_execute(
        "INSERT INTO scratch SELECT g, 'row ' || g FROM generate_series(1, 50) g;
         INSERT INTO docs VALUES (1, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 4000) g), 1);
         INSERT INTO blocked_audit VALUES (1, 'never leaves production');",
    )
    .await
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();

    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let rx = stop_rx.clone();
    let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, rx).await });
    // The sink runs with no key and no source settings: the dev side cannot reveal anything.
    let sink_cfg = env.sink_config();
    assert!(veil::deid::tokenize::MasterKey::from_config(&sink_cfg.keys).is_err());
    let sink = tokio::spawn(async move { veil::sink::run(&sink_cfg, stop_rx).await });

    assert_dev_matches(&env, ALL_TABLES, Duration::from_secs(120)).await;

    // Live changes of every kind.
    let mut c = env.prod_client().await;
    let mut rng = veil::devkit::datagen::Rng::new(5);
    let mut next = 500_000;
    for _ in 0..300 {
        veil::devkit::datagen::workload_step(&mut c, &mut rng, &mut next)
            .await
            .unwrap();
    }
    c.batch_execute(
        "-- key update
         UPDATE medications SET id = id + 1000000 WHERE id = (SELECT min(id) FROM medications);
         -- toasted value left unchanged by an update
         UPDATE docs SET small = 2 WHERE id = 1;
         -- TRUNCATE, then new rows
         TRUNCATE scratch;
         INSERT INTO scratch SELECT g, 'again ' || g FROM generate_series(1, 20) g;
         -- a committed large transaction (streams with logical_decoding_work_mem = 64kB)
         INSERT INTO observations (encounter_id, code, value, unit, observed_at)
           SELECT (SELECT min(id) FROM encounters), '8867-4', g % 100, '/min', now() FROM generate_series(1, 4000) g;
         -- an aborted large transaction
         BEGIN;
         INSERT INTO observations (encounter_id, code, value, unit, observed_at)
           SELECT (SELECT min(id) FROM encounters), 'ABORTED', g, 'x', now() FROM generate_series(1, 4000) g;
         ROLLBACK;
         -- a large transaction with a rolled-back savepoint
         BEGIN;
         INSERT INTO scratch SELECT g, 'kept ' || g FROM generate_series(100, 2100) g;
         SAVEPOINT s1;
         INSERT INTO scratch SELECT g, 'rolled back ' || g FROM generate_series(5000, 7000) g;
         ROLLBACK TO SAVEPOINT s1;
         INSERT INTO scratch VALUES (9999, 'after savepoint');
         COMMIT;
         -- changes to a blocked table never leave production
         UPDATE blocked_audit SET secret = 'still secret';
         UPDATE type_zoo SET t = 'changed', ai = '{3}' WHERE id = 1;
         DELETE FROM type_zoo WHERE id = 2;",
    )
    .await
    .unwrap();

    assert_dev_matches(&env, ALL_TABLES, Duration::from_secs(120)).await;

    let dev = env.dev_client().await;
    // Safe columns are equal to production, value for value.
    let zoo_prod = text_rows(&prod, "SELECT * FROM public.type_zoo ORDER BY id").await;
    let zoo_dev = text_rows(&dev, "SELECT * FROM public.type_zoo ORDER BY id").await;
    assert_eq!(zoo_prod, zoo_dev);
    // The blocked table and the blocked column never reached dev.
    let t: i64 = dev
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'blocked_audit'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, 0);
    // Free-text notes arrive redacted: the patient's name replaced by a placeholder.
    let redacted: i64 = dev
        .query_one(
            "SELECT count(*) FROM public.encounters WHERE notes LIKE 'seen for follow-up; patient [NAME] reports%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let with_names: i64 = prod
        .query_one(
            "SELECT count(*) FROM public.encounters WHERE notes LIKE 'seen for follow-up; patient %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(redacted, with_names);
    // Foreign keys exist in dev and hold.
    let fks: i64 = dev
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(fks >= 5, "{fks} foreign keys in dev");
    let orphans: i64 = dev
        .query_one(
            "SELECT count(*) FROM public.encounters e LEFT JOIN public.patients p ON p.id = e.patient_id WHERE p.id IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);

    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

/// The snapshot is read by three connections, each importing the slot's exported snapshot, the
/// larger tables in ranges of four pages, while production keeps writing: dev ends equal to
/// production — no row lost or doubled at a range's edge, none missed or applied twice between
/// the snapshot and the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_read_in_ranges_while_production_writes_matches() {
    init_test_log();
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 1500, 3).await.unwrap();
    let pages: i64 = prod
        .query_one(
            "SELECT pg_relation_size('public.observations') / current_setting('block_size')::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        pages > 3 * 4 * 2,
        "observations spans {pages} pages: several ranges per reader"
    );
    veil::source::setup::run(&env.cfg).await.unwrap();
    let stop_writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut c = env.prod_client().await;
        let stop = stop_writing.clone();
        tokio::spawn(async move {
            let mut rng = veil::devkit::datagen::Rng::new(9);
            let mut next = 900_000;
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                veil::devkit::datagen::workload_step(&mut c, &mut rng, &mut next)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let rx = stop_rx.clone();
    let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, rx).await });
    let sink_cfg = env.sink_config();
    let sink = tokio::spawn(async move { veil::sink::run(&sink_cfg, stop_rx).await });
    // Writes before, during and after the copy.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_writing.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        written > 20,
        "{written} transactions written while veil started"
    );
    assert_dev_matches(
        &env,
        &[
            "providers",
            "patients",
            "encounters",
            "observations",
            "medications",
        ],
        Duration::from_secs(120),
    )
    .await;
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_transaction_spilled_to_disk_arrives_whole() {
    let mut env = Env::start(&[("logical_decoding_work_mem", "64kB")]);
    if let Some(s) = env.cfg.source.as_mut() {
        s.spool_memory_bytes = 64 * 1024;
    }
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 20, 3).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, &["observations"], Duration::from_secs(60)).await;
    prod.batch_execute(
        "INSERT INTO observations (encounter_id, code, value, unit, observed_at)
         SELECT (SELECT max(id) FROM encounters), 'LATE', g, 'x', now() FROM generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["observations"], Duration::from_secs(120)).await;
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_processes_during_a_large_transaction_recover() {
    let mut env = Env::start(&[("logical_decoding_work_mem", "64kB")]);
    if let Some(s) = env.cfg.source.as_mut() {
        s.spool_memory_bytes = 64 * 1024;
    }
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 20, 3).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let start = |env: &Env| {
        let (tx, rx) = watch::channel(false);
        let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, rx);
        (tx, stream, sink)
    };
    let (_tx, stream, sink) = start(&env);
    assert_dev_matches(&env, &["observations"], Duration::from_secs(60)).await;
    let c = env.prod_client().await;
    let big = tokio::spawn(async move {
        c.batch_execute(
            "INSERT INTO observations (encounter_id, code, value, unit, observed_at)
             SELECT (SELECT max(id) FROM encounters), 'LATE', g, 'x', now() FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.abort();
    big.await.unwrap();
    sink.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tx, stream, sink) = start(&env);
    let r = dev_matches(&env, &["observations"], Duration::from_secs(60)).await;
    if let Err(e) = r {
        let dev = env.dev_client().await;
        let late = text_rows(
            &dev,
            "SELECT count(*) FROM observations WHERE code = 'LATE'",
        )
        .await;
        panic!(
            "{e}; LATE rows in dev: {late:?}\n{}",
            dump_topic(&env)
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}
