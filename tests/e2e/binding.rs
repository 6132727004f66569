//! Decisions bound to what they were made for (leak paths, item 3): a column dropped and added
//! again under the same name and type, and two tables that swap names, are held as new — with
//! decisions written by `approve` (bound to oid and attnum) and with hand-written ones (bound by
//! name; the shape log tells the names apart). A registry entry whose column is gone is flagged.

use std::time::Duration;

use crate::common::*;
use veil::review::workflow::{self as review, ColumnDecision, Why};

async fn approve(env: &Env, target: &str, d: ColumnDecision) {
    review::approve(&env.cfg, target, &d)
        .await
        .unwrap_or_else(|e| panic!("approve {target}: {e}"));
}

/// Waits `secs` and says whether `sql` (a count) stayed 0 in dev all the while.
async fn stays_zero(dev: &tokio_postgres::Client, sql: &str, secs: u64) -> bool {
    !wait_for(Duration::from_secs(secs), || async {
        count(dev, sql).await > 0
    })
    .await
}

/// Two tables of the same shape: `swap_a` holds secrets (tokenized), `swap_b` labels (safe),
/// decided by `approve` (bound to their oids).
async fn swap_tables() -> (Env, tokio_postgres::Client) {
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE swap_a (id int PRIMARY KEY, v text);
         CREATE TABLE swap_b (id int PRIMARY KEY, v text);
         INSERT INTO swap_a SELECT g, 'SECRET-' || (5000 + g) FROM generate_series(1, 10) g;
         INSERT INTO swap_b SELECT g, 'label ' || g FROM generate_series(1, 10) g;",
    )
    .await
    .unwrap();
    decide_swap(&env, "public.swap_a", "public.swap_b").await;
    (env, prod)
}

/// The reviewer's decisions: `secret`'s `v` tokenized, `labels`' `v` safe, both keys safe.
async fn decide_swap(env: &Env, secret: &str, labels: &str) {
    for t in [secret, labels] {
        approve(env, &format!("{t}.id"), decision("safe", None, None)).await;
    }
    let tokenized = decision("sensitive", Some("tokenize"), Some("swap_secret"));
    approve(env, &format!("{secret}.v"), tokenized).await;
    approve(env, &format!("{labels}.v"), decision("safe", None, None)).await;
}

/// Secret values of the swap tables that reached dev.
async fn secrets_in_dev(dev: &tokio_postgres::Client) -> i64 {
    count(
        dev,
        "SELECT count(*) FROM (SELECT v FROM swap_a UNION ALL SELECT v FROM swap_b) x WHERE v LIKE 'SECRET-%'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recreated_column_is_held_as_new_and_a_stale_entry_is_flagged() {
    init_test_log();
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE bound_t (id int PRIMARY KEY, note text, extra int);
         CREATE TABLE legacy_t (id int PRIMARY KEY, note text);
         INSERT INTO bound_t SELECT g, 'ordinary note ' || g, g FROM generate_series(1, 10) g;
         INSERT INTO legacy_t SELECT g, 'ordinary note ' || g FROM generate_series(1, 10) g;",
    )
    .await
    .unwrap();
    // bound_t's decisions come from `approve` (bound to oid and attnum); legacy_t's line is
    // written by hand (bound by name only).
    for c in ["id", "note", "extra"] {
        approve(
            &env,
            &format!("public.bound_t.{c}"),
            decision("safe", None, None),
        )
        .await;
    }
    let file = std::fs::read_to_string(env.registry.path().join("public.bound_t.toml")).unwrap();
    assert!(
        file.contains("attnum = 2") && file.contains("relid = "),
        "{file}"
    );
    std::fs::write(
        env.registry.path().join("public.legacy_t.toml"),
        "table = \"public.legacy_t\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
         note = { type = \"text\", class = \"safe\" }\n",
    )
    .unwrap();
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["bound_t", "legacy_t"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;

    // The safe column is dropped and a column of the same name and type is added — and filled
    // with SSNs. Before binding it inherited "safe" silently.
    prod.batch_execute(
        "ALTER TABLE bound_t DROP COLUMN note; ALTER TABLE bound_t ADD COLUMN note text;
         ALTER TABLE bound_t DROP COLUMN extra;
         INSERT INTO bound_t VALUES (100, '123-45-6789');
         ALTER TABLE legacy_t DROP COLUMN note; ALTER TABLE legacy_t ADD COLUMN note text;
         INSERT INTO legacy_t VALUES (100, '987-65-4321');",
    )
    .await
    .unwrap();
    assert!(
        stays_zero(&dev, "SELECT count(*) FROM bound_t WHERE id = 100", 8).await,
        "a re-created column inherited the old decision"
    );
    // The reviewer sees why, for both tables, and the dropped column's entry flagged.
    let pending = review::pending(&env.cfg).await.unwrap();
    for t in ["public.bound_t", "public.legacy_t"] {
        let p = pending
            .iter()
            .find(|p| p.table == t && p.column == "note")
            .unwrap_or_else(|| panic!("{t}.note not pending: {pending:?}"));
        assert!(matches!(p.why, Why::Rebound { .. }), "{:?}", p.why);
    }
    let stale = review::stale(&env.cfg).await.unwrap();
    assert!(
        stale
            .iter()
            .any(|s| s.table == "public.bound_t" && s.column == "extra"),
        "{stale:?}"
    );
    // Decided as new: the SSNs flow tokenized.
    for t in ["bound_t", "legacy_t"] {
        approve(
            &env,
            &format!("public.{t}.note"),
            decision("sensitive", Some("ssn"), Some("ssn")),
        )
        .await;
    }
    let arrived = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM bound_t WHERE id = 100").await == 1
            && count(&dev, "SELECT count(*) FROM legacy_t WHERE id = 100").await == 1
    })
    .await;
    assert!(arrived, "the approved column never flowed");
    let leaked = count(
        &dev,
        "SELECT count(*) FROM (SELECT note FROM bound_t UNION ALL SELECT note FROM legacy_t) x \
         WHERE note IN ('123-45-6789', '987-65-4321')",
    )
    .await;
    assert_eq!(leaked, 0, "an SSN reached dev");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_that_swap_names_are_held_as_new() {
    let (env, prod) = swap_tables().await;
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["swap_a", "swap_b"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;

    // The classic swap: the table now named swap_b holds the secrets, and swap_b's decision
    // says "safe".
    prod.batch_execute(
        "ALTER TABLE swap_a RENAME TO swap_tmp; ALTER TABLE swap_b RENAME TO swap_a;
         ALTER TABLE swap_tmp RENAME TO swap_b;
         INSERT INTO swap_b VALUES (100, 'SECRET-9100');",
    )
    .await
    .unwrap();
    assert!(
        stays_zero(&dev, "SELECT count(*) FROM swap_b WHERE id = 100", 8).await,
        "a swapped table was published under the other table's decisions"
    );
    let pending = review::pending(&env.cfg).await.unwrap();
    for t in ["public.swap_a", "public.swap_b"] {
        assert!(
            pending
                .iter()
                .any(|p| p.table == t && p.column == "v" && matches!(p.why, Why::Rebound { .. })),
            "{t}.v not pending as rebound: {pending:?}"
        );
    }
    // Decided again for what each table now is.
    decide_swap(&env, "public.swap_b", "public.swap_a").await;
    let arrived = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM swap_b WHERE id = 100").await == 1
    })
    .await;
    assert!(arrived, "the re-decided table never flowed");
    let leaked = secrets_in_dev(&dev).await;
    assert_eq!(leaked, 0, "a secret reached dev");
    running.stop().await;
}

/// The stream is behind a swap the reviewer already decided (veil was stopped): a row written
/// into the secret table *before* the swap must not be published under the decision made for
/// the table that takes its name later — it is withheld — and the stream does not hold forever
/// on a table no decision can describe any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_stream_never_applies_a_newer_tables_decision_to_older_rows() {
    let (env, prod) = swap_tables().await;
    let running = env.run_stream_and_sink();
    assert_dev_matches(&env, &["swap_a", "swap_b"], Duration::from_secs(120)).await;
    running.stop().await;

    // While veil is stopped: a secret row, the swap, another secret row; the reviewer decides
    // the tables as they are now.
    prod.batch_execute(
        "INSERT INTO swap_a VALUES (50, 'SECRET-7050');
         ALTER TABLE swap_a RENAME TO swap_tmp; ALTER TABLE swap_b RENAME TO swap_a;
         ALTER TABLE swap_tmp RENAME TO swap_b;
         INSERT INTO swap_b VALUES (100, 'SECRET-9100');
         INSERT INTO swap_a VALUES (100, 'label 100');",
    )
    .await
    .unwrap();
    decide_swap(&env, "public.swap_b", "public.swap_a").await;

    let running = env.run_stream_and_sink();
    let dev = env.dev_client().await;
    let arrived = wait_for(Duration::from_secs(90), || async {
        count(&dev, "SELECT count(*) FROM swap_b WHERE id = 100").await == 1
            && count(&dev, "SELECT count(*) FROM swap_a WHERE id = 100").await == 1
    })
    .await;
    assert!(arrived, "the stream never got past the swap");
    let leaked = secrets_in_dev(&dev).await;
    assert_eq!(
        leaked, 0,
        "a secret reached dev under the other table's decision"
    );
    running.stop().await;
}
