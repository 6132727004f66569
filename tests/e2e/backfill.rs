//! Online backfill (watermarks in the WAL, chunks by primary key, upserts) while production
//! keeps writing the table: dev ends equal to the expected de-identified production, row for
//! row — rows dev lacked are back, stale values replaced, and no change made during the
//! backfill is overwritten by an older chunk row.

use std::time::Duration;

use crate::common::*;
use veil::review::workflow::{self as review, ColumnDecision};

fn safe() -> ColumnDecision {
    decision("safe", None, None)
}

/// Sets veil up on production as it is, decides each `schema.table.column` as given, and starts
/// the stream and the sink in-process.
async fn start(env: &Env, decided: &[(&str, ColumnDecision)]) -> Running {
    veil::source::setup::run(&env.cfg).await.unwrap();
    for (column, d) in decided {
        review::approve(&env.cfg, column, d).await.unwrap();
    }
    env.run_stream_and_sink()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_under_concurrent_writes_makes_dev_equal_production() {
    init_test_log();
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, ssn text, amount int NOT NULL, memo text);
         INSERT INTO ledger SELECT g, lpad((100000000 + g)::text, 9, '0'), g % 1000, 'opening ' || g
           FROM generate_series(1, 9000) g;",
    )
    .await
    .unwrap();
    let running = start(
        &env,
        &[
            ("public.ledger.id", safe()),
            (
                "public.ledger.ssn",
                decision("sensitive", Some("ssn"), Some("ssn")),
            ),
            ("public.ledger.amount", safe()),
            ("public.ledger.memo", safe()),
        ],
    )
    .await;
    assert_dev_matches(&env, &["ledger"], Duration::from_secs(120)).await;

    // Dev loses rows and holds stale values (as after an unblock, or a column made stricter).
    let dev = env.dev_client().await;
    dev.batch_execute(
        "SET session_replication_role = replica;
         DELETE FROM ledger WHERE id % 3 = 0;
         UPDATE ledger SET memo = NULL, amount = -1 WHERE id % 3 = 1;",
    )
    .await
    .unwrap();

    // Production keeps writing the table during the whole backfill.
    let mut next = 100_000i64;
    let writer = Writer::start(&env, 11, Duration::ZERO, move |rng, n| {
        let id = rng.range(1, 9000) as i64;
        match rng.range(0, 6) {
            0 => format!("DELETE FROM ledger WHERE id = {id}"),
            1 => {
                next += 1;
                format!(
                    "INSERT INTO ledger VALUES ({next}, '{:09}', 7, 'new')",
                    200_000_000 + next
                )
            }
            2 => format!("UPDATE ledger SET id = id + 1000000 WHERE id = {id}"),
            _ => format!(
                "UPDATE ledger SET amount = amount + 1, memo = 'changed {n}' WHERE id = {id}"
            ),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    veil::source::backfill::request(&env.cfg, "public.ledger")
        .await
        .unwrap();
    // The backfill runs while the writer writes; then the writer stops.
    let backfilled = wait_for(Duration::from_secs(120), || async {
        count(
            &dev,
            "SELECT count(*) FROM ledger WHERE id % 3 = 0 AND id <= 9000",
        )
        .await
            > 2000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = writer.stop().await;
    assert!(backfilled, "the backfill brought back the rows dev lacked");
    assert!(writes > 100, "{writes} writes during the backfill");
    if let Err(e) = dev_matches(&env, &["ledger"], Duration::from_secs(60)).await {
        let p: std::collections::BTreeSet<i64> = prod
            .query("SELECT id FROM ledger", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let d: std::collections::BTreeSet<i64> = dev
            .query("SELECT id FROM ledger", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<&i64> = p.difference(&d).take(40).collect();
        let extra: Vec<&i64> = d.difference(&p).take(20).collect();
        panic!("{e}\nmissing {missing:?}\nextra {extra:?}");
    }
    running.stop().await;
}

/// `ADD COLUMN … DEFAULT` gives production's existing rows a value no change carries; the stream
/// holds on the new column, a reviewer approves it, and the backfill the decision starts brings
/// the value of every existing row to dev while production keeps updating the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_column_is_backfilled_while_production_writes() {
    init_test_log();
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount int NOT NULL, memo text);
         INSERT INTO ledger SELECT g, g % 1000, 'opening ' || g FROM generate_series(1, 6000) g;",
    )
    .await
    .unwrap();
    let running = start(
        &env,
        &[
            ("public.ledger.id", safe()),
            ("public.ledger.amount", safe()),
            ("public.ledger.memo", safe()),
        ],
    )
    .await;
    assert_dev_matches(&env, &["ledger"], Duration::from_secs(120)).await;

    let writer = Writer::start(&env, 5, Duration::ZERO, |rng, _| {
        let id = rng.range(1, 6000) as i64;
        format!("UPDATE ledger SET amount = amount + 1 WHERE id = {id}")
    })
    .await;
    prod.batch_execute("ALTER TABLE ledger ADD COLUMN region text NOT NULL DEFAULT 'north'")
        .await
        .unwrap();
    let held = wait_for(Duration::from_secs(60), || async {
        veil::review::status::stream_state(&env.cfg)
            .await
            .is_ok_and(|s| s.state == "held")
    })
    .await;
    assert!(held, "the stream holds on the new column");
    review::approve(
        &env.cfg,
        "public.ledger.region",
        &decision("safe", None, None),
    )
    .await
    .unwrap();
    let dev = env.dev_client().await;
    let filled = wait_for(Duration::from_secs(120), || async {
        dev.query_one("SELECT count(*) FROM ledger WHERE region = 'north'", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 6000)
    })
    .await;
    let writes = writer.stop().await;
    assert!(
        filled,
        "every existing row has the new column's value in dev"
    );
    assert!(
        writes > 50,
        "{writes} updates during the hold and the backfill"
    );
    assert_dev_matches(&env, &["ledger"], Duration::from_secs(120)).await;
    running.stop().await;
}

/// A table blocked (dev emptied) then unblocked, and a column made stricter (dev clears it):
/// each decision starts a backfill, and dev ends equal to production under the new decisions
/// while production keeps updating the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unblocked_table_and_a_stricter_rule_are_backfilled() {
    init_test_log();
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount int NOT NULL, memo text);
         INSERT INTO ledger SELECT g, g % 1000, 'memo ' || g FROM generate_series(1, 5000) g;",
    )
    .await
    .unwrap();
    let running = start(
        &env,
        &[
            ("public.ledger.id", safe()),
            ("public.ledger.amount", safe()),
            ("public.ledger.memo", safe()),
        ],
    )
    .await;
    assert_dev_matches(&env, &["ledger"], Duration::from_secs(120)).await;
    let writer = Writer::start(&env, 9, Duration::ZERO, |rng, n| {
        let id = rng.range(1, 5000) as i64;
        format!("UPDATE ledger SET amount = amount + 1, memo = 'memo {n}' WHERE id = {id}")
    })
    .await;
    let dev = env.dev_client().await;

    // Blocked: dev empties its copy. Unblocked: the backfill brings every row back.
    review::block(&env.cfg, "public.ledger", "kim", "not needed in dev")
        .await
        .unwrap();
    let emptied = wait_for(Duration::from_secs(60), || async {
        count(&dev, "SELECT count(*) FROM ledger").await == 0
    })
    .await;
    assert!(emptied, "a block empties dev's copy");
    review::unblock(&env.cfg, "public.ledger", "lee", "needed again")
        .await
        .unwrap();
    let back = wait_for(Duration::from_secs(120), || async {
        count(&dev, "SELECT count(*) FROM ledger").await == 5000
    })
    .await;
    assert!(back, "the unblock's backfill brought the rows back");

    // A stricter rule for memo: dev clears it, the backfill refills it with tokens.
    review::approve(
        &env.cfg,
        "public.ledger.memo",
        &decision("sensitive", Some("tokenize"), Some("memo_token")),
    )
    .await
    .unwrap();
    let refilled = wait_for(Duration::from_secs(120), || async {
        count(
            &dev,
            "SELECT count(*) FROM ledger WHERE memo IS NOT NULL AND memo NOT LIKE 'memo %'",
        )
        .await
            == 5000
    })
    .await;
    let writes = writer.stop().await;
    assert!(
        refilled,
        "the stricter rule's backfill refilled memo with tokens"
    );
    assert!(writes > 50, "{writes} updates meanwhile");
    assert_dev_matches(&env, &["ledger"], Duration::from_secs(120)).await;
    running.stop().await;
}

/// A table without a primary key (replica identity FULL, duplicate rows) is re-copied whole in
/// a short sub-epoch of its own: read between one pair of watermarks and published as one
/// transaction that empties dev's copy and inserts every row. Production keeps writing it; a
/// read a change spoiled is read again. Dev ends equal to production (as multisets), and one
/// audit record says what was re-sent, under which registry version and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_without_a_key_is_copied_whole_in_a_sub_epoch_of_its_own() {
    init_test_log();
    let mut env = Env::start(&[]);
    let journal = tempfile::tempdir().unwrap();
    crate::audit::with_audit(&mut env, journal.path());
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE visits_log (at bigint NOT NULL, ssn text, kind text);
         ALTER TABLE visits_log REPLICA IDENTITY FULL;
         INSERT INTO visits_log SELECT g, lpad((300000000 + g % 2500)::text, 9, '0'), 'visit'
           FROM generate_series(1, 4000) g;
         INSERT INTO visits_log SELECT g, lpad((300000000 + g)::text, 9, '0'), 'visit'
           FROM generate_series(1, 200) g;",
    )
    .await
    .unwrap();
    let running = start(
        &env,
        &[
            ("public.visits_log.at", safe()),
            (
                "public.visits_log.ssn",
                decision("sensitive", Some("ssn"), Some("ssn")),
            ),
            ("public.visits_log.kind", safe()),
        ],
    )
    .await;
    assert_dev_matches(&env, &["visits_log"], Duration::from_secs(120)).await;

    // Dev lost rows, holds stale ones and rows production never had.
    let dev = env.dev_client().await;
    dev.batch_execute(
        "SET session_replication_role = replica;
         DELETE FROM visits_log WHERE at % 4 = 0;
         UPDATE visits_log SET kind = 'stale' WHERE at % 4 = 1;
         INSERT INTO visits_log SELECT at, ssn, 'spurious' FROM visits_log WHERE at < 50;",
    )
    .await
    .unwrap();
    let writer = Writer::start(&env, 21, Duration::from_millis(60), |rng, n| {
        let at = rng.range(1, 4000) as i64;
        match rng.range(0, 3) {
            0 => format!(
                "INSERT INTO visits_log VALUES ({}, '{:09}', 'new')",
                10_000 + n,
                400_000_000 + n
            ),
            1 => format!("DELETE FROM visits_log WHERE at = {at}"),
            _ => format!("UPDATE visits_log SET kind = 'changed {n}' WHERE at = {at}"),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    veil::source::backfill::request(&env.cfg, "public.visits_log")
        .await
        .unwrap();
    let done = wait_for(Duration::from_secs(120), || async {
        !backfill_records(&env, "public.visits_log").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writer.stop().await;
    assert!(done, "the backfill ended with an audit record");
    assert!(writes > 10, "{writes} writes during the backfill");
    assert_dev_matches(&env, &["visits_log"], Duration::from_secs(60)).await;
    let records = backfill_records(&env, "public.visits_log");
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.outcome, "complete", "{r:?}");
    assert!(r.whole_table, "{r:?}");
    assert!(r.rows >= 4000 && r.chunks >= 1, "{r:?}");
    assert!(r.reason.contains("on demand"), "{r:?}");
    assert!(
        !r.registry_version.is_empty() && r.finished_lsn > r.request_lsn,
        "{r:?}"
    );
    running.stop().await;
}

/// The rule of a key column changes — a primary key and the foreign key that references it,
/// one domain — while production writes both tables: dev deletes its copies of the two tables
/// and the backfills the decisions start refill them under the new rule. No new epoch (the
/// sink's epoch is unchanged, nothing else is copied again), and the join holds in dev.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_columns_new_rule_refills_its_tables_without_a_new_epoch() {
    init_test_log();
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, name text);
         CREATE TABLE entries (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id), amount int);
         INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 3000) g;
         INSERT INTO entries SELECT g, 1 + g % 3000, g % 100 FROM generate_series(1, 6000) g;",
    )
    .await
    .unwrap();
    let running = start(
        &env,
        &[
            ("public.accounts.id", safe()),
            ("public.accounts.name", safe()),
            ("public.entries.id", safe()),
            ("public.entries.account_id", safe()),
            ("public.entries.amount", safe()),
        ],
    )
    .await;
    let tables = ["accounts", "entries"];
    assert_dev_matches(&env, &tables, Duration::from_secs(120)).await;
    let dev = env.dev_client().await;
    let epoch_before = count(&dev, "SELECT max(epoch)::bigint FROM veil_sink.checkpoint").await;

    let writer = Writer::start(&env, 33, Duration::from_millis(5), |rng, n| {
        let a = rng.range(1, 3000) as i64;
        match rng.range(0, 3) {
            0 => format!("UPDATE accounts SET name = 'renamed {n}' WHERE id = {a}"),
            1 => format!(
                "INSERT INTO entries VALUES ({}, {a}, 1)",
                100_000 + i64::from(n)
            ),
            _ => format!("UPDATE entries SET amount = amount + 1 WHERE account_id = {a}"),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in ["accounts.id", "entries.account_id"] {
        review::approve(
            &env.cfg,
            &format!("public.{c}"),
            &decision("sensitive", Some("tokenize"), Some("account")),
        )
        .await
        .unwrap();
    }
    // Dev's keys become tokens: no account keeps its production id.
    let rekeyed = wait_for(Duration::from_secs(120), || async {
        count(&dev, "SELECT count(*) FROM accounts WHERE id <= 3000").await == 0
            && count(&dev, "SELECT count(*) FROM accounts").await >= 3000
            && count(&dev, "SELECT count(*) FROM entries").await >= 6000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writer.stop().await;
    assert!(rekeyed, "dev's accounts were refilled under the new rule");
    assert!(writes > 50, "{writes} writes meanwhile");
    assert_dev_matches(&env, &tables, Duration::from_secs(120)).await;
    let join = "SELECT count(*) FROM entries e JOIN accounts a ON a.id = e.account_id";
    assert_eq!(count(&dev, join).await, count(&prod, join).await);
    assert_eq!(
        count(&dev, "SELECT max(epoch)::bigint FROM veil_sink.checkpoint").await,
        epoch_before,
        "no new epoch"
    );
    running.stop().await;
}

/// A hold in the middle of a backfill (a migration adds an undecided column to another table):
/// nothing of the backfill is published while the stream is held — the worker waits at its high
/// watermark — and after the reviewer decides, the backfill goes on and completes; dev equals
/// production.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_in_the_middle_of_a_backfill_pauses_it_until_the_decision() {
    init_test_log();
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount int NOT NULL, memo text);
         INSERT INTO ledger SELECT g, g % 1000, 'memo ' || g FROM generate_series(1, 60000) g;
         ANALYZE ledger;
         CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let running = start(
        &env,
        &[
            ("public.ledger.id", safe()),
            ("public.ledger.amount", safe()),
            ("public.ledger.memo", safe()),
            ("public.other.id", safe()),
        ],
    )
    .await;
    assert_dev_matches(&env, &["ledger", "other"], Duration::from_secs(120)).await;
    let dev = env.dev_client().await;
    dev.batch_execute("SET session_replication_role = replica; DELETE FROM ledger;")
        .await
        .unwrap();
    veil::source::backfill::request(&env.cfg, "public.ledger")
        .await
        .unwrap();
    let started = wait_for(Duration::from_secs(120), || async {
        count(&dev, "SELECT count(*) FROM ledger").await >= 4000
    })
    .await;
    assert!(started, "the backfill started");
    prod.batch_execute(
        "ALTER TABLE other ADD COLUMN secret text; INSERT INTO other VALUES (1, 'x');",
    )
    .await
    .unwrap();
    let held = wait_for(Duration::from_secs(60), || async {
        veil::review::status::stream_state(&env.cfg)
            .await
            .is_ok_and(|s| s.state == "held")
    })
    .await;
    assert!(held, "the stream holds on other.secret");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_hold = count(&dev, "SELECT count(*) FROM ledger").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        count(&dev, "SELECT count(*) FROM ledger").await,
        at_hold,
        "nothing of the backfill reached dev while the stream was held"
    );
    assert!(at_hold < 60_000, "{at_hold} rows before the hold");
    // `veil status` shows the backfill waiting, with its progress.
    let state = veil::review::status::stream_state(&env.cfg).await.unwrap();
    let b = state
        .backfills
        .iter()
        .find(|b| b.table == "public.ledger")
        .unwrap_or_else(|| panic!("{state:?}"));
    assert!(
        b.rows >= 4000 && b.rows < 60_000 && b.estimate >= 59_000 && !b.finished,
        "{b:?}"
    );
    assert!(b.reason.contains("on demand"), "{b:?}");
    review::approve(
        &env.cfg,
        "public.other.secret",
        &decision("safe", None, None),
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["ledger", "other"], Duration::from_secs(120)).await;
    running.stop().await;
}
