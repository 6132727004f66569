//! Always on: ordinary production events never stop the mirror (issue "Always on").

use std::time::Duration;

use crate::common::*;
use veil::review::workflow::{self as review, ColumnDecision};

fn safe() -> ColumnDecision {
    decision("safe", None, None)
}

/// Item 2: `RENAME COLUMN` (a three-part identity in the DDL message) and forged `veil_ddl`
/// messages (any role may write one) never stop the stream or loop it: a message veil cannot
/// use is logged without its content and the next Relation message decides; the renamed column
/// is a new column and holds until decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_column_and_forged_ddl_messages_never_stop_the_stream() {
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE ren (id int PRIMARY KEY, a text);
         INSERT INTO ren SELECT g, 'row ' || g FROM generate_series(1, 5) g;",
    )
    .await
    .unwrap();
    for c in ["id", "a"] {
        review::approve(&env.cfg, &format!("public.ren.{c}"), &safe())
            .await
            .unwrap();
    }
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["ren"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;

    // Forged and unusable messages, from a role with no rights on anything.
    prod.batch_execute(
        "CREATE ROLE nobody LOGIN;
         SET ROLE nobody;
         SELECT pg_logical_emit_message(true, 'veil_ddl', '{\"tag\": \"ALTER TABLE\", \"object\": \"a.b.c.d\"}');
         SELECT pg_logical_emit_message(true, 'veil_ddl', '{\"tag\": \"ALTER TABLE\", \"object\": \"public.ren.a\"}');
         SELECT pg_logical_emit_message(true, 'veil_ddl', '{\"tag\": \"ALTER TABLE\", \"oid\": 4000000000}');
         SELECT pg_logical_emit_message(true, 'veil_ddl', 'not json at all');
         RESET ROLE;
         INSERT INTO ren VALUES (6, 'after the forged messages');",
    )
    .await
    .unwrap();
    let flowed = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM ren WHERE id = 6").await == 1
    })
    .await;
    assert!(flowed, "a forged veil_ddl message stopped the stream");

    // RENAME COLUMN: the renamed column has no decision of its own; the stream holds (it does not
    // restart in a loop), and resumes once it is decided.
    prod.batch_execute(
        "ALTER TABLE ren RENAME COLUMN a TO b; INSERT INTO ren VALUES (7, 'renamed');",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        count(&dev, "SELECT count(*) FROM ren WHERE id = 7").await,
        0
    );
    assert!(
        !running.stream.is_finished(),
        "the stream stopped on RENAME COLUMN"
    );
    review::approve(&env.cfg, "public.ren.b", &safe())
        .await
        .unwrap();
    let flowed = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM ren WHERE id = 7").await == 1
    })
    .await;
    assert!(
        flowed,
        "the stream did not resume after the renamed column was decided"
    );
    running.stop().await;
}

/// Item 1: tables dropped before veil decoded their changes (veil was stopped). A decided
/// table's rows are described from the Relation message and flow; an undecided one holds, the
/// hold is listed by `pending` although production no longer has the table, and `block`
/// releases it. Before, every restart stopped at the same change ("relation not found").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_dropped_before_decoding_never_stop_the_stream() {
    init_test_log();
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE gone_t (id int PRIMARY KEY, v text);
         CREATE TABLE after_t (id int PRIMARY KEY, v text);
         INSERT INTO gone_t VALUES (1, 'first');",
    )
    .await
    .unwrap();
    for t in ["gone_t", "after_t"] {
        for c in ["id", "v"] {
            review::approve(&env.cfg, &format!("public.{t}.{c}"), &safe())
                .await
                .unwrap();
        }
    }
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["gone_t"], Duration::from_secs(120)).await;
    running.stop().await;

    // While veil is stopped, each in a transaction of its own: rows, then the tables are
    // dropped; one was never classified.
    for sql in [
        "INSERT INTO gone_t VALUES (2, 'second'), (3, 'third')",
        "DROP TABLE gone_t",
        "CREATE TABLE stage_t (id int PRIMARY KEY, secret text)",
        "INSERT INTO stage_t VALUES (1, 'STAGED-SECRET-1')",
        "DROP TABLE stage_t",
        "INSERT INTO after_t VALUES (1, 'after the drops')",
    ] {
        prod.batch_execute(sql).await.unwrap();
    }
    let running = env.run_stream_and_sink();
    let dev = env.dev_client().await;
    let flowed = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM gone_t").await == 3
    })
    .await;
    assert!(
        flowed,
        "the rows of a dropped, decided table did not flow: {:?}",
        text_rows(&dev, "SELECT * FROM gone_t").await
    );
    // The undecided dropped table holds; the reviewer sees it and blocks it.
    let listed = wait_for(Duration::from_secs(30), || async {
        review::pending(&env.cfg).await.unwrap().iter().any(|p| {
            p.table == "public.stage_t" && matches!(p.why, veil::review::workflow::Why::Gone { .. })
        })
    })
    .await;
    assert!(listed, "pending does not list the hold on a dropped table");
    assert!(!running.stream.is_finished(), "the stream stopped");
    assert_eq!(
        count(&dev, "SELECT count(*) FROM after_t").await,
        0,
        "changes after the hold point were applied"
    );
    review::block(&env.cfg, "public.stage_t", "kim", "a dropped staging table")
        .await
        .unwrap();
    let flowed = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM after_t").await == 1
    })
    .await;
    assert!(flowed, "the stream did not resume after the block");
    assert_eq!(
        count(
            &dev,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'stage_t'"
        )
        .await,
        0
    );
    running.stop().await;
}

/// Item 10: two `veil stream` processes for one source. The second waits on the run lock (an
/// advisory lock held for the whole run, taken before any slot is touched) instead of touching
/// the first one's slot; when the first one's lock connection drops, it stops publishing (a
/// transient error, exit 75) and the second takes over with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_stream_waits_on_the_run_lock_and_takes_over() {
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE lock_t (id int PRIMARY KEY, v text);
         INSERT INTO lock_t VALUES (1, 'one');",
    )
    .await
    .unwrap();
    for c in ["id", "v"] {
        review::approve(&env.cfg, &format!("public.lock_t.{c}"), &safe())
            .await
            .unwrap();
    }
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["lock_t"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;

    // A second stream for the same source: it waits, touching nothing.
    let (stop2, rx2) = tokio::sync::watch::channel(false);
    let cfg2 = env.cfg.clone();
    let second = tokio::spawn(async move { veil::source::stream::run(&cfg2, rx2).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!second.is_finished(), "the second stream did not wait");
    let slots = count(
        &prod,
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'veil%' AND active",
    )
    .await;
    assert_eq!(slots, 1, "the first stream's slot was touched");
    prod.batch_execute("INSERT INTO lock_t VALUES (2, 'two')")
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || async {
            count(&dev, "SELECT count(*) FROM lock_t").await == 2
        })
        .await
    );

    // The first stream's lock connection drops: it stops at its next publish, transiently.
    prod.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'veil stream run lock' AND pid IN \
           (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
    )
    .await
    .unwrap();
    prod.batch_execute("INSERT INTO lock_t VALUES (3, 'three')")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), running.stream)
        .await
        .expect("the first stream kept running without its lock")
        .unwrap();
    let err = first.expect_err("the first stream must stop with an error");
    assert_eq!(
        veil::error::Classify::class(&err),
        veil::error::ErrorClass::Transient,
        "{err}"
    );
    // The second one takes over: rows 3 and 4 arrive, nothing doubled.
    prod.batch_execute("INSERT INTO lock_t VALUES (4, 'four')")
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(90), || async {
            count(&dev, "SELECT count(*) FROM lock_t").await == 4
        })
        .await,
        "the second stream did not take over"
    );
    assert_dev_matches(&env, &["lock_t"], Duration::from_secs(30)).await;
    stop2.send(true).unwrap();
    running.stop.send(true).unwrap();
    second.await.unwrap().unwrap();
    running.sink.await.unwrap().unwrap();
}

/// Item 6: a vault cache much smaller than the distinct values of a snapshot (`cache_entries`
/// at its floor of 1,000; the snapshot allocates several thousand tokens, in batches larger
/// than the cache). The cache starts over *before* a batch and keeps the whole batch, so the
/// stream never stops with "vault allocation left a value without a token".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vault_cache_smaller_than_the_data_never_stops_the_stream() {
    init_test_log();
    let mut env = Env::start(&[]);
    if let Some(v) = env.cfg.vault.as_mut() {
        v.cache_entries = 1;
    }
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 2500, 5).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["patients", "encounters"], Duration::from_secs(120)).await;
    assert!(!running.stream.is_finished());
    running.stop().await;
}

/// Item 3: `ALTER TYPE … ADD VALUE` in production (with `BEFORE`, inside a transaction that uses
/// the label at once, and plain) and `RENAME VALUE`: dev takes the labels in production's order,
/// in a transaction of their own, and the rows that use them. Before, dev rejected the new label
/// and the sink was stuck on a transaction it could never pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enum_labels_added_in_production_reach_dev_in_order() {
    init_test_log();
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TYPE mood AS ENUM ('low', 'high');
         CREATE TABLE moods (id int PRIMARY KEY, m mood, ms mood[]);
         INSERT INTO moods VALUES (1, 'low', '{low}'), (2, 'high', '{high,low}');",
    )
    .await
    .unwrap();
    for c in ["id", "m", "ms"] {
        review::approve(&env.cfg, &format!("public.moods.{c}"), &safe())
            .await
            .unwrap();
    }
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["moods"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;

    // A label between two, a plain one added inside a transaction block (PostgreSQL 12+; usable
    // once committed) and used in an array, and a renamed one.
    // (One statement per call: a multi-statement query string is one implicit transaction.)
    for sql in [
        "ALTER TYPE mood ADD VALUE 'mid' BEFORE 'high'",
        "INSERT INTO moods VALUES (3, 'mid', '{mid}')",
        "BEGIN; ALTER TYPE mood ADD VALUE 'top'; COMMIT;",
        "BEGIN; INSERT INTO moods VALUES (4, 'top', '{top,mid}'); UPDATE moods SET m = 'mid' WHERE id = 1; COMMIT;",
        "ALTER TYPE mood RENAME VALUE 'low' TO 'bottom'",
        "INSERT INTO moods VALUES (5, 'bottom', '{bottom}')",
    ] {
        prod.batch_execute(sql).await.unwrap();
    }
    if let Err(e) = dev_matches(&env, &["moods"], Duration::from_secs(60)).await {
        let q = "SELECT id, m::text, ms::text FROM moods ORDER BY id";
        panic!(
            "{e}\nprod {:?}\ndev {:?}",
            text_rows(&prod, q).await,
            text_rows(&dev, q).await
        );
    }
    let order = "SELECT string_agg(enumlabel::text, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype";
    let prod_order: String = prod.query_one(order, &[]).await.unwrap().get(0);
    let dev_order: String = dev.query_one(order, &[]).await.unwrap().get(0);
    assert_eq!(dev_order, prod_order, "dev's labels in production's order");
    assert_eq!(dev_order, "bottom,mid,high,top");
    assert!(!running.sink.is_finished() && !running.stream.is_finished());
    running.stop().await;
}

/// Item 4: tables without a usable replica identity. `CREATE TABLE AS`, `SELECT INTO`, a dropped
/// primary key, `REPLICA IDENTITY NOTHING` and a dropped identity index left production's UPDATE
/// and DELETE failing ("does not have a replica identity and publishes updates"); setup's
/// triggers now give such tables FULL. In dev, a key-less table with `REPLICA IDENTITY USING
/// INDEX` is found by the index's columns, and FULL-identity rows with timestamptz are found
/// although production's and dev's TimeZone differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_without_a_usable_replica_identity_never_fail_production_writes() {
    init_test_log();
    let env = Env::start(&[("timezone", "America/New_York")]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE base (id int PRIMARY KEY, at timestamptz, v text);
         INSERT INTO base SELECT g, timestamptz '2026-03-08 01:30:00-05' + g * interval '17 minutes', 'v' || g
           FROM generate_series(1, 6) g;
         CREATE TABLE ctas AS SELECT * FROM base;
         SELECT * INTO si FROM base;
         CREATE TABLE dpk (id int PRIMARY KEY, at timestamptz, v text);
         INSERT INTO dpk SELECT * FROM base;
         ALTER TABLE dpk DROP CONSTRAINT dpk_pkey;
         CREATE TABLE nothing_t (id int PRIMARY KEY, at timestamptz, v text);
         INSERT INTO nothing_t SELECT * FROM base;
         ALTER TABLE nothing_t REPLICA IDENTITY NOTHING;
         CREATE TABLE ui (id int NOT NULL, at timestamptz, v text);
         CREATE UNIQUE INDEX ui_id ON ui (id);
         ALTER TABLE ui REPLICA IDENTITY USING INDEX ui_id;
         INSERT INTO ui SELECT * FROM base;
         CREATE TABLE ui_dropped (id int NOT NULL, at timestamptz, v text);
         CREATE UNIQUE INDEX ui_dropped_id ON ui_dropped (id);
         ALTER TABLE ui_dropped REPLICA IDENTITY USING INDEX ui_dropped_id;
         INSERT INTO ui_dropped SELECT * FROM base;
         DROP INDEX ui_dropped_id;",
    )
    .await
    .unwrap();
    let tables = ["base", "ctas", "si", "dpk", "nothing_t", "ui", "ui_dropped"];
    for t in tables {
        for c in ["id", "at", "v"] {
            review::approve(&env.cfg, &format!("public.{t}.{c}"), &safe())
                .await
                .unwrap();
        }
    }
    // Dev lives in another time zone.
    let dev = env.dev_client().await;
    dev.batch_execute(&format!(
        "ALTER DATABASE {DEV_DB} SET timezone = 'Asia/Tokyo'"
    ))
    .await
    .unwrap();
    let running = env.run_stream_and_sink();

    let rows =
        |t: &str| format!("SELECT id, extract(epoch FROM at)::text, v FROM {t} ORDER BY id, v");
    let same = |tables: &'static [&'static str]| {
        let (prod, dev) = (&prod, &dev);
        async move {
            for t in tables {
                // Dev may not have the table yet.
                let Ok(d) = dev.simple_query(&rows(t)).await else {
                    return false;
                };
                if d.iter()
                    .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                    .count()
                    != text_rows(prod, &rows(t)).await.len()
                    || text_rows(prod, &rows(t)).await != text_rows(dev, &rows(t)).await
                {
                    return false;
                }
            }
            true
        }
    };
    const ALL: &[&str] = &["base", "ctas", "si", "dpk", "nothing_t", "ui", "ui_dropped"];
    assert!(
        wait_for(Duration::from_secs(120), || same(ALL)).await,
        "the snapshot did not reach dev"
    );
    // Production's writes: each failed before on the tables without an identity.
    for t in tables {
        prod.batch_execute(&format!(
            "UPDATE {t} SET v = v || ' changed', at = at + interval '1 day' WHERE id IN (2, 3);
             UPDATE {t} SET id = id + 100 WHERE id = 4;
             DELETE FROM {t} WHERE id = 5;"
        ))
        .await
        .unwrap_or_else(|e| panic!("production's write on {t} failed: {e}"));
    }
    if !wait_for(Duration::from_secs(60), || same(ALL)).await {
        for t in tables {
            eprintln!(
                "{t}: prod {:?}\n dev {:?}",
                text_rows(&prod, &rows(t)).await,
                text_rows(&dev, &rows(t)).await
            );
        }
        panic!("dev does not match production after updates and deletes");
    }
    let identity: Vec<String> = text_rows(
        &prod,
        "SELECT relname || '=' || relreplident::text FROM pg_class WHERE relname IN \
         ('ctas', 'si', 'dpk', 'nothing_t', 'ui', 'ui_dropped') ORDER BY relname",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    assert_eq!(
        identity,
        [
            "ctas=f",
            "dpk=f",
            "nothing_t=f",
            "si=f",
            "ui=i",
            "ui_dropped=f"
        ]
    );
    running.stop().await;
}

/// Item 5: a transaction large enough to be streamed (spooled, then published at its Stream
/// Commit) with a short `wal_sender_timeout`. Publishing it took longer than the timeout without
/// a word to the server: the walsender dropped the connection and the restart decoded the same
/// transaction again, forever. Now the stream answers every second while it publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_streamed_transaction_outlasting_wal_sender_timeout_is_published_once() {
    init_test_log();
    let env = Env::start(&[
        ("logical_decoding_work_mem", "64kB"),
        ("wal_sender_timeout", "3s"),
    ]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO big VALUES (1, 'first');",
    )
    .await
    .unwrap();
    for c in ["id", "v"] {
        review::approve(&env.cfg, &format!("public.big.{c}"), &safe())
            .await
            .unwrap();
    }
    let running = env.run_stream_and_sink();
    let dev = env.dev_client().await;
    assert!(
        wait_for(Duration::from_secs(120), || async {
            dev.query_one("SELECT count(*) FROM big", &[]).await.is_ok()
        })
        .await
    );
    let started = std::time::Instant::now();
    prod.batch_execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(2, 150000) g")
        .await
        .unwrap();
    let arrived = wait_for(Duration::from_secs(300), || async {
        count(&dev, "SELECT count(*) FROM big").await == 150_000
    })
    .await;
    eprintln!(
        "150,000-row streamed transaction in dev after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(arrived, "the large transaction never reached dev");
    assert!(
        !running.stream.is_finished(),
        "the stream lost its replication connection"
    );
    let log = env.prod.server_log();
    assert!(
        !log.contains("replication timeout"),
        "the walsender timed out waiting for the stream"
    );
    running.stop().await;
}

/// Item 7: values larger than the broker's message limit (`message.max.bytes` set low in
/// `[kafka] options`; the test broker enforces no limit of its own, the producer does). Before,
/// the event was refused and every restart met it again. Now it goes as fragments the sink
/// joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_larger_than_the_message_limit_go_in_fragments() {
    init_test_log();
    let mut env = Env::start(&[]);
    env.cfg
        .kafka
        .as_mut()
        .unwrap()
        .options
        .insert("message.max.bytes".into(), "20000".into());
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, meta jsonb);
         INSERT INTO docs SELECT g, repeat(md5(g::text), 3000), jsonb_build_object('n', g, 'pad', repeat('x', 30000))
           FROM generate_series(1, 3) g;",
    )
    .await
    .unwrap();
    for c in ["id", "body", "meta"] {
        review::approve(&env.cfg, &format!("public.docs.{c}"), &safe())
            .await
            .unwrap();
    }
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["docs"], Duration::from_secs(120)).await;
    // In the stream: a 500 kB value, an update of it, and small rows around it.
    prod.batch_execute(
        "BEGIN;
         INSERT INTO docs VALUES (4, 'small', '{}');
         INSERT INTO docs SELECT 5, string_agg(md5(g::text), '') FROM generate_series(1, 16000) g;
         INSERT INTO docs VALUES (6, 'small', '{}');
         COMMIT;
         UPDATE docs SET body = body || 'more' WHERE id = 5;",
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["docs"], Duration::from_secs(60)).await;
    let fragments = topic_payloads(&env)
        .iter()
        .filter(|p| {
            matches!(
                <veil::proto::Envelope as prost::Message>::decode(p.as_slice())
                    .ok()
                    .and_then(|e| e.event),
                Some(veil::proto::envelope::Event::Fragment(_))
            )
        })
        .count();
    assert!(fragments > 50, "only {fragments} fragments on the topic");
    assert!(topic_payloads(&env).iter().all(|p| p.len() <= 20_000));
    running.stop().await;
}
