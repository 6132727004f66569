//! Crash safety with the real binary: SIGKILL the stream (mid-snapshot and mid-stream) and the
//! sink at points of a live run; after restarts nothing is lost and nothing doubled. Also: no
//! sensitive value of the generated data set appears in any log line.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_stream_and_sink_loses_and_doubles_nothing() {
    let env = Env::start(&[("logical_decoding_work_mem", "64kB")]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 4000, 17).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = if std::env::var_os("VEIL_KEEP_TEST_DIR").is_some() {
        let p = tmp.keep();
        eprintln!("test dir kept: {}", p.display());
        p
    } else {
        tmp.path().to_owned()
    };
    env.prod.create_db(AUDIT_DB).unwrap();
    let config = env.write_config(&dir);
    let log = dir.join("veil.log");

    // Kill the stream early: most likely mid-snapshot. The restart must start a new epoch.
    let mut stream = Proc::start("stream", &config, &log);
    let mut sink = Proc::start("sink", &config, &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.kill9();
    stream = Proc::start("stream", &config, &log);

    // Live workload with kills of both processes in between.
    let dsn = env.prod.dsn(PROD_DB);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let workload = tokio::spawn(async move {
        let mut c = connect(&dsn).await;
        let mut rng = veil::devkit::datagen::Rng::new(23);
        let mut next = 900_000;
        let mut n = 0;
        while !*rx.borrow() {
            veil::devkit::datagen::workload_step(&mut c, &mut rng, &mut next)
                .await
                .unwrap();
            n += 1;
            if n % 150 == 0 {
                // A large transaction that streams in chunks.
                c.batch_execute(
                    "INSERT INTO observations (encounter_id, code, value, unit, observed_at)
                     SELECT (SELECT max(id) FROM encounters), 'BULK', g, 'x', now() FROM generate_series(1, 3000) g",
                )
                .await
                .unwrap();
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = rx.changed() => {}
            }
        }
        n
    });
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500 + 400 * round)).await;
        sink.kill9();
        sink = Proc::start("sink", &config, &log);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream.kill9();
        stream = Proc::start("stream", &config, &log);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    tx.send(true).unwrap();
    let txns = workload.await.unwrap();
    assert!(txns > 50, "workload ran {txns} transactions");

    if let Err(e) = dev_matches(&env, DEMO_TABLES, Duration::from_secs(180)).await {
        std::fs::write(dir.join("topic.txt"), dump_topic(&env)).unwrap();
        panic!("{e} (topic summary in {})", dir.display());
    }

    // Now that the snapshot is surely done: kill the stream while a large transaction streams
    // and the sink while it applies; both must resume (same epoch) and end equal.
    let before = std::fs::read_to_string(&log).unwrap().len();
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
    stream.kill9();
    big.await.unwrap();
    sink.kill9();
    stream = Proc::start("stream", &config, &log);
    sink = Proc::start("sink", &config, &log);
    if let Err(e) = dev_matches(&env, DEMO_TABLES, Duration::from_secs(180)).await {
        std::fs::write(dir.join("topic.txt"), dump_topic(&env)).unwrap();
        let dev = env.dev_client().await;
        let ck = text_rows(
            &dev,
            "SELECT kafka_offset, epoch, last_commit_lsn, run_id, seq FROM veil_sink.checkpoint",
        )
        .await;
        let late = text_rows(
            &dev,
            "SELECT count(*) FROM observations WHERE code = 'LATE'",
        )
        .await;
        eprintln!("LATE rows in dev: {late:?}");
        if std::env::var_os("VEIL_HOLD_ON_FAILURE").is_some() {
            eprintln!(
                "HOLD ports prod {} dev {} dir {}",
                env.prod.port,
                env.dev.port,
                dir.display()
            );
            tokio::time::sleep(Duration::from_secs(1200)).await;
        }
        let slot = text_rows(
            &prod,
            "SELECT slot_name, active, confirmed_flush_lsn FROM pg_replication_slots",
        )
        .await;
        panic!(
            "{e} (topic summary in {}; checkpoint {ck:?}; slots {slot:?})",
            dir.display()
        );
    }
    stream.kill9();
    sink.kill9();

    // The audit chains survived the kills: start both again (a record journaled but not sent
    // before a kill is sent now), stop them in order, archive, verify.
    let mut stream = Proc::start("stream", &config, &log);
    let mut sink = Proc::start("sink", &config, &log);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stream.term();
    sink.term();
    let cfg = veil::config::Config::load(&config).unwrap();
    let archived = veil::audit::archive(&cfg, None).await.unwrap();
    assert!(archived.inserted > 5, "{archived:?}");
    let problems = veil::audit::verify_archive(&cfg).await.unwrap();
    assert!(
        problems.is_empty(),
        "audit chains after kills: {problems:?}"
    );

    // The restarts really happened and were recovered from.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.matches("sink started").count() >= 5,
        "sink restarts missing from the log"
    );
    assert!(
        logs[before..].contains("resuming"),
        "a stream restart after the snapshot must resume the epoch"
    );

    // No sensitive value (5 characters or more) of the data set appears in any log line.
    let mut values: Vec<String> = Vec::new();
    for (table, cols) in [
        (
            "patients",
            "mrn, ssn, given_name, family_name, phone, email, street, city, birth_date::text",
        ),
        ("providers", "npi, name"),
    ] {
        for r in text_rows(&prod, &format!("SELECT {cols} FROM public.{table}")).await {
            values.extend(r.into_iter().flatten().filter(|v| v.chars().count() >= 5));
        }
    }
    values.sort();
    values.dedup();
    let leaked: Vec<&String> = values
        .iter()
        .filter(|v| logs.contains(v.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} sensitive values found in the logs",
        leaked.len()
    );
}
