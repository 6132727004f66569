//! The audit trail end to end: records on a compacted topic, archived into Postgres, verified,
//! proved for a day — and never a value of the data set in the topic or the archive.

use std::time::Duration;
use tokio::sync::watch;

use crate::common::*;
use veil::review::workflow::{self as review, ColumnDecision};

const ARCHIVE_DB: &str = "veil_audit";

pub fn with_audit(env: &mut Env, journal: &std::path::Path) {
    env.prod.create_db(ARCHIVE_DB).unwrap();
    env.cfg.audit = Some(veil::config::AuditConfig {
        topic: "veil.test.audit".into(),
        key_file: None,
        key: Some(veil::config::Secret(veil::devkit::demo::random_key_hex())),
        sink_key_file: None,
        sink_key: Some(veil::config::Secret(veil::devkit::demo::random_key_hex())),
        journal_dir: journal.to_owned(),
        // Small segments: the journal rotates many times during a test, and the chain, the
        // verification and the proof hold across segments.
        journal_segment_bytes: 4096,
        journal_keep_segments: 0,
        window_secs: 2,
        archive_dsn: Some(veil::config::Dsn(env.prod.dsn(ARCHIVE_DB))),
        retention_days: 2192,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_trail_is_value_free_verifiable_and_proves_a_day() {
    let mut env = Env::start(&[]);
    let journal = tempfile::tempdir().unwrap();
    with_audit(&mut env, journal.path());
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 100, 12).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, &["patients"], Duration::from_secs(60)).await;
    let mut c = env.prod_client().await;
    let mut rng = veil::devkit::datagen::Rng::new(3);
    let mut next = 900_000;
    for _ in 0..60 {
        veil::devkit::datagen::workload_step(&mut c, &mut rng, &mut next)
            .await
            .unwrap();
    }
    // A held column and its decision.
    prod.batch_execute("ALTER TABLE patients ADD COLUMN notes2 text; UPDATE patients SET notes2 = ssn WHERE id < 5;")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    review::approve(
        &env.cfg,
        "public.patients.notes2",
        &ColumnDecision {
            class: "sensitive".into(),
            rule: Some("ssn".into()),
            domain: Some("ssn".into()),
            by: "kim (reviewer)".into(),
            reason: "SSNs under an innocent name".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_dev_matches(
        &env,
        &["patients", "encounters", "observations"],
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();

    // A reveal is an audit record too (who, ticket, domain, token hash; never the value).
    let dev = env.dev_client().await;
    let token: String = dev
        .query_one("SELECT mrn FROM public.patients LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let value = veil::review::reveal::reveal_with_config(&env.cfg, "mrn", &token, "INC-2024")
        .await
        .unwrap()
        .unwrap();
    assert!(value.starts_with("MRN"));

    // The audit topic was created compacted.
    {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> =
            veil::kafka::client::client_config(env.cfg.kafka().unwrap())
                .create()
                .unwrap();
        let configs = admin
            .describe_configs(
                [&ResourceSpecifier::Topic("veil.test.audit")],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        let policy = configs[0]
            .as_ref()
            .unwrap()
            .get("cleanup.policy")
            .and_then(|e| e.value.clone());
        assert_eq!(policy.as_deref(), Some("compact"));
    }

    // Archive, verify, prove.
    let export = tempfile::tempdir().unwrap();
    let report = veil::audit::archive(&env.cfg, Some(export.path()))
        .await
        .unwrap();
    assert!(report.inserted >= 4, "{report:?}");
    assert_eq!(report.exported, report.inserted);
    // Archiving again adds nothing (compaction twins and re-reads are idempotent).
    assert_eq!(
        veil::audit::archive(&env.cfg, None).await.unwrap().inserted,
        0
    );
    assert!(
        veil::audit::verify_archive(&env.cfg)
            .await
            .unwrap()
            .is_empty()
    );
    // The journals rotated (4 KiB segments) and the chains verified across their segments.
    let sealed = std::fs::read_dir(journal.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sealed"))
        .count();
    assert!(sealed >= 1, "{sealed} sealed journal segments");

    let archive = connect(&env.prod.dsn(ARCHIVE_DB)).await;
    let today: String = archive
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let proof = veil::audit::prove(&env.cfg, &today).await.unwrap();
    assert!(proof["windows"].as_u64().unwrap() >= 2, "{proof}");
    // Every window is confirmed applied by the sink (the last one may close after the sink's
    // final confirmation when both stop together).
    let confirmed = proof["windows_confirmed_by_sink"].as_u64().unwrap();
    assert!(
        confirmed >= 1 && confirmed + 1 >= proof["windows"].as_u64().unwrap(),
        "{proof}"
    );
    assert_eq!(proof["chain"]["ok"], true, "{proof}");
    assert_eq!(proof["scanner"]["clean"], true);
    assert!(proof["scanner"]["rows_scanned"].as_u64().unwrap() > 0);
    assert_eq!(proof["rules"]["public.patients.ssn"], "ssn(ssn)");
    assert_eq!(proof["rules"]["public.patients.id"], "tokenize(patient_id)");
    let events = proof["holds_and_decisions"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "hold" && e["body"]["column"] == "notes2")
    );
    assert!(events.iter().any(|e| e["kind"] == "decision"
        && e["body"]["column"] == "notes2"
        && e["body"]["reviewer"] == "kim (reviewer)"
        && e["body"]["registry_before"] != e["body"]["registry_after"]));
    // The sink confirmed what dev applied, on its own chain with its own key.
    let applied: i64 = archive
        .query_one("SELECT count(*) FROM veil_audit.records WHERE kind = 'applied' AND chain LIKE 'sink/%'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(applied >= 1);
    let mut wrong_keys = env.cfg.clone();
    wrong_keys.audit.as_mut().unwrap().sink_key = None;
    let p = veil::audit::verify_archive(&wrong_keys).await.unwrap();
    assert!(
        p.iter().all(|p| p.chain.starts_with("sink/")) && !p.is_empty(),
        "{p:?}"
    );
    let reveal = events
        .iter()
        .find(|e| e["kind"] == "reveal")
        .expect("the reveal is in the proof");
    assert_eq!(reveal["body"]["ticket"], "INC-2024");
    assert!(!reveal.to_string().contains(&value) && !reveal.to_string().contains(&token));
    let e = veil::audit::prove(&env.cfg, "2026-02-30")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("YYYY-MM-DD"), "{e}");
    let text = veil::audit::prove_text(&proof);
    assert!(
        text.contains("chain check: verified") && text.contains("no PHI detector hit"),
        "{text}"
    );

    // No value of the data set in the archive, the export or the audit topic.
    let mut originals = Vec::new();
    for col in [
        "mrn",
        "ssn",
        "phone",
        "email",
        "street",
        "given_name",
        "family_name",
    ] {
        for r in text_rows(
            &prod,
            &format!("SELECT DISTINCT {col} FROM public.patients WHERE char_length({col}) >= 5"),
        )
        .await
        {
            originals.push(r[0].clone().unwrap());
        }
    }
    let bodies: String = text_rows(&archive, "SELECT body::text FROM veil_audit.records")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut exported = String::new();
    for f in std::fs::read_dir(export.path()).unwrap() {
        exported.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    let payloads: Vec<Vec<u8>> = read_topic(env.cfg.kafka().unwrap(), "veil.test.audit")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    {
        let any = regex::bytes::Regex::new(
            &originals
                .iter()
                .map(|o| regex::escape(o))
                .collect::<Vec<_>>()
                .join("|"),
        )
        .unwrap();
        assert!(!payloads.is_empty());
        assert!(
            !any.is_match(bodies.as_bytes()),
            "a value is in the archive"
        );
        assert!(
            !any.is_match(exported.as_bytes()),
            "a value is in the export"
        );
        assert!(
            !payloads.iter().any(|p| any.is_match(p)),
            "a value is in the audit topic"
        );

        // Tampering: one altered archived record is found and named.
        let victim: String = archive
            .query_one(
                "SELECT record_id FROM veil_audit.records WHERE kind = 'decision' LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        archive
            .execute(
                "UPDATE veil_audit.records SET body = jsonb_set(body, '{reviewer}', '\"somebody else\"') WHERE record_id = $1",
                &[&victim],
            )
            .await
            .unwrap();
        let problems = veil::audit::verify_archive(&env.cfg).await.unwrap();
        assert!(
            problems.iter().any(|p| p.record_id == victim),
            "{problems:?}"
        );
        // A deleted record (and a deleted tail) is found too.
        archive
            .execute("DELETE FROM veil_audit.records WHERE seq = 2", &[])
            .await
            .unwrap();
        let tail: String = archive
            .query_one(
                "SELECT record_id FROM veil_audit.records ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        archive
            .execute(
                "DELETE FROM veil_audit.records WHERE record_id = $1",
                &[&tail],
            )
            .await
            .unwrap();
        let problems = veil::audit::verify_archive(&env.cfg).await.unwrap();
        assert!(
            problems.iter().any(|p| p.problem.contains("gap")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.problem.contains("truncated")),
            "{problems:?}"
        );
    }
}
