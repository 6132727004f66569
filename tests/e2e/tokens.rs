//! The tokenization engine on the generated data set, end to end: joins, distinct counts, null
//! rates and lengths kept; dates shifted per patient with intervals kept; no original value in
//! dev, in the topic or in the logs; vault allocation unique under concurrent first sightings;
//! reveal only through the vault, audited, and impossible from the dev side.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::common::*;
use veil::deid::registry::SurrogateKind;
use veil::deid::tokenize::{MasterKey, TokenKind, TokenStore, VaultRequest, VaultRule};

const TABLES: &[&str] = DEMO_TABLES;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_data_keeps_joins_counts_and_shapes_and_leaks_nothing() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 600, 21).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, TABLES, Duration::from_secs(120)).await;
    // Live changes too (new patients, updated phones and streets).
    let mut c = env.prod_client().await;
    let mut rng = veil::devkit::datagen::Rng::new(9);
    let mut next = 700_000;
    for _ in 0..150 {
        veil::devkit::datagen::workload_step(&mut c, &mut rng, &mut next)
            .await
            .unwrap();
    }
    assert_dev_matches(&env, TABLES, Duration::from_secs(120)).await;
    let dev = env.dev_client().await;

    // Every foreign key joins exactly as often in dev as in prod.
    for (child, col, parent) in [
        ("encounters", "patient_id", "patients"),
        ("encounters", "provider_id", "providers"),
        ("observations", "encounter_id", "encounters"),
        ("observations", "patient_id", "patients"),
        ("medications", "patient_id", "patients"),
        ("medications", "encounter_id", "encounters"),
    ] {
        let q = format!(
            "SELECT count(*) FROM public.{child} c JOIN public.{parent} p ON p.id = c.{col}"
        );
        assert_eq!(count(&prod, &q).await, count(&dev, &q).await, "{q}");
    }
    // Distinct counts of identifier columns equal; null rates equal for every column; lengths
    // kept exactly by layout-keeping tokens and roughly by surrogates.
    let exact_len = ["mrn", "ssn", "phone"];
    for col in [
        "id",
        "mrn",
        "ssn",
        "phone",
        "email",
        "given_name",
        "family_name",
        "street",
        "city",
        "zip",
        "birth_date",
    ] {
        let q = format!(
            "SELECT count(DISTINCT {col}), count(*) - count({col}), \
             coalesce(avg(char_length({col}::text)), 0)::float8 FROM public.patients"
        );
        let (a, b) = (
            prod.query_one(&q, &[]).await.unwrap(),
            dev.query_one(&q, &[]).await.unwrap(),
        );
        let (pd, dd): (i64, i64) = (a.get(0), b.get(0));
        let (pn, dn): (i64, i64) = (a.get(1), b.get(1));
        let (pl, dl): (f64, f64) = (a.get(2), b.get(2));
        assert_eq!(pn, dn, "null count of patients.{col}");
        if ["id", "mrn", "ssn", "phone", "email"].contains(&col) {
            assert_eq!(pd, dd, "distinct count of patients.{col}");
        }
        if exact_len.contains(&col) {
            let h = format!(
                "SELECT char_length({col}), count(*) FROM public.patients GROUP BY 1 ORDER BY 1"
            );
            assert_eq!(
                text_rows(&prod, &h).await,
                text_rows(&dev, &h).await,
                "length histogram of patients.{col}"
            );
        } else if ["given_name", "family_name", "street", "city"].contains(&col) {
            assert!(
                (dl - pl).abs() <= 0.35 * pl,
                "patients.{col}: mean length {pl:.1} in prod, {dl:.1} in dev"
            );
        }
    }
    for (t, col) in [
        ("providers", "npi"),
        ("providers", "id"),
        ("encounters", "id"),
    ] {
        let q = format!("SELECT count(DISTINCT {col}) FROM public.{t}");
        assert_eq!(count(&prod, &q).await, count(&dev, &q).await, "{q}");
    }
    // SSN tokens only in never-issued areas; e-mails on the reserved domain.
    let bad_ssn = count(
        &dev,
        "SELECT count(*) FROM public.patients WHERE ssn IS NOT NULL AND NOT (ssn ~ '^(000|666|9[0-9][0-9])-')",
    )
    .await;
    assert_eq!(bad_ssn, 0);
    let bad_mail = count(
        &dev,
        "SELECT count(*) FROM public.patients WHERE email IS NOT NULL AND email NOT LIKE '%@example.com'",
    )
    .await;
    assert_eq!(bad_mail, 0);

    // Row by row (expert-determination patient ids invert with the key): no sensitive value
    // equals its original, names keep their script, and every date of a patient moved by the
    // same offset (intervals between a patient's events kept).
    let master = MasterKey::new(hex::decode(&env.key_hex).unwrap().try_into().unwrap());
    let pid = master.domain_key("patient_id");
    let cols =
        "id, mrn, ssn, given_name, family_name, phone, email, street, city, created_at::date::text";
    let prod_rows = text_rows(&prod, &format!("SELECT {cols} FROM public.patients")).await;
    let dev_rows: HashMap<String, Vec<Option<String>>> =
        text_rows(&dev, &format!("SELECT {cols} FROM public.patients"))
            .await
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r))
            .collect();
    let script = |s: &str| {
        s.chars()
            .find_map(veil::deid::surrogate::char_script)
            .map(|x| format!("{x:?}"))
    };
    let mut han_rows = 0;
    for p in &prod_rows {
        let id: i64 = p[0].as_ref().unwrap().parse().unwrap();
        let d = &dev_rows[&pid.permute_int(id, 63).to_string()];
        for i in 1..9 {
            if let (Some(a), Some(b)) = (&p[i], &d[i]) {
                assert_ne!(a, b, "patient column {i} kept its original value");
            }
        }
        for i in [3, 4] {
            let (a, b) = (p[i].as_deref().unwrap(), d[i].as_deref().unwrap());
            assert_eq!(script(a), script(b), "names keep their script");
            if script(a).as_deref() == Some("Han") {
                han_rows += 1;
            }
        }
    }
    assert!(han_rows > 0, "the data set has Han-script names");
    let intervals = "SELECT patient_id::text, array_agg((started_at - first)::text ORDER BY started_at) FROM \
                     (SELECT patient_id, started_at, min(started_at) OVER (PARTITION BY patient_id) AS first \
                      FROM public.encounters) s GROUP BY patient_id";
    let prod_iv: BTreeMap<String, Option<String>> = text_rows(&prod, intervals)
        .await
        .into_iter()
        .map(|r| {
            (
                pid.permute_int(r[0].as_ref().unwrap().parse().unwrap(), 63)
                    .to_string(),
                r[1].clone(),
            )
        })
        .collect();
    let dev_iv: BTreeMap<String, Option<String>> = text_rows(&dev, intervals)
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone()))
        .collect();
    assert_eq!(prod_iv, dev_iv, "intervals between a patient's encounters");
    let same_day = count(
        &dev,
        "SELECT count(*) FROM public.encounters e JOIN public.observations o ON o.encounter_id = e.id \
         WHERE o.observed_at - e.started_at <> interval '10 minutes' AND o.code <> '8867-4'",
    )
    .await;
    let prod_same_day = count(
        &prod,
        "SELECT count(*) FROM public.encounters e JOIN public.observations o ON o.encounter_id = e.id \
         WHERE o.observed_at - e.started_at <> interval '10 minutes' AND o.code <> '8867-4'",
    )
    .await;
    assert_eq!(
        same_day, prod_same_day,
        "observation times relative to their encounter"
    );

    // No original identifier anywhere in dev, in the topic or (see restart.rs) in the logs.
    let mut originals: HashSet<String> = HashSet::new();
    for col in ["mrn", "ssn", "phone", "email"] {
        for r in text_rows(
            &prod,
            &format!("SELECT DISTINCT {col} FROM public.patients WHERE {col} IS NOT NULL"),
        )
        .await
        {
            originals.insert(r[0].clone().unwrap());
        }
    }
    for r in text_rows(&prod, "SELECT npi FROM public.providers").await {
        originals.insert(r[0].clone().unwrap());
    }
    let all_dev: Vec<String> = text_rows(
        &dev,
        "SELECT concat_ws('|', mrn, ssn, phone, email, given_name, family_name, street, city) FROM public.patients \
         UNION ALL SELECT concat_ws('|', npi, name) FROM public.providers \
         UNION ALL SELECT coalesce(notes, '') FROM public.encounters",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect();
    let dev_text = all_dev.join("\n");
    let payloads = topic_payloads(&env);
    assert!(!payloads.is_empty());
    // Notes: the patient's name never reaches the topic next to its context.
    for r in text_rows(&prod, "SELECT DISTINCT family_name FROM public.patients").await {
        originals.insert(format!("patient {} reports", r[0].as_deref().unwrap()));
    }
    let any_original = regex::bytes::Regex::new(
        &originals
            .iter()
            .map(|o| regex::escape(o))
            .collect::<Vec<_>>()
            .join("|"),
    )
    .unwrap();
    let sample = text_rows(
        &prod,
        "SELECT mrn || ' ' || ssn FROM public.patients LIMIT 1",
    )
    .await;
    assert!(any_original.is_match(sample[0][0].as_deref().unwrap().as_bytes()));
    assert!(
        !any_original.is_match(dev_text.as_bytes()),
        "an original identifier is in dev"
    );
    assert!(
        !payloads.iter().any(|p| any_original.is_match(p)),
        "an original identifier is in the topic"
    );

    // Reveal: only through the vault, with the production-side config, audited.
    let dir = tempfile::tempdir().unwrap();
    let prod_cfg = env.write_config(dir.path());
    let (prod_mrn, prod_id): (String, i64) = {
        let r = prod
            .query_one(
                "SELECT mrn, id FROM public.patients ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let dev_mrn: String = dev
        .query_one(
            "SELECT mrn FROM public.patients WHERE id = $1",
            &[&pid.permute_int(prod_id, 63)],
        )
        .await
        .unwrap()
        .get(0);
    let reveal = |cfg: &std::path::Path, domain: &str, token: &str, ticket: &str| {
        Command::new(env!("CARGO_BIN_EXE_veil"))
            .args(["vault", "reveal", "--config"])
            .arg(cfg)
            .args(["--domain", domain, "--token", token, "--ticket", ticket])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = reveal(&prod_cfg, "mrn", &dev_mrn, "INC-4711");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), prod_mrn);
    let dev_id = pid.permute_int(prod_id, 63).to_string();
    let out = reveal(&prod_cfg, "patient_id", &dev_id, "INC-4712");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        prod_id.to_string()
    );
    // A Safe Harbor provider id (random, vault-held).
    let dev_provider: i64 = count(&dev, "SELECT min(id) FROM public.providers").await;
    let out = reveal(
        &prod_cfg,
        "provider_id",
        &dev_provider.to_string(),
        "INC-4713",
    );
    assert!(out.status.success());
    let revealed: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        count(
            &prod,
            &format!("SELECT count(*) FROM public.providers WHERE id = {revealed}")
        )
        .await
            == 1
    );
    // No ticket, no reveal.
    let out = reveal(&prod_cfg, "mrn", &dev_mrn, " ");
    assert!(!out.status.success() && out.stdout.is_empty());
    // The reveal log holds who, ticket, domain and a token hash — never the value or token.
    let vault_client = connect(&env.prod.dsn(VAULT_DB)).await;
    let log = text_rows(&vault_client, "SELECT os_user, ticket, domain, token_hash, found::text FROM veil_vault.reveals ORDER BY id").await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0][1].as_deref(), Some("INC-4711"));
    assert_eq!(log[0][2].as_deref(), Some("mrn"));
    let flat = format!("{log:?}");
    assert!(!flat.contains(&prod_mrn) && !flat.contains(&dev_mrn));
    // The dev side's config (no key, no vault) cannot reveal anything.
    let sink_only = dir.path().join("sink.toml");
    std::fs::write(
        &sink_only,
        format!(
            "[kafka]\nbrokers = {:?}\n\n[sink]\ndsn = {:?}\n",
            env.broker.bootstrap(),
            env.dev.dsn(DEV_DB)
        ),
    )
    .unwrap();
    let out = reveal(&sink_only, "mrn", &dev_mrn, "INC-4714");
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[vault]"));
    // Dev holds no vault tables and no key material.
    let vault_tables = count(
        &dev,
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'veil_vault'",
    )
    .await;
    assert_eq!(vault_tables, 0);
    assert!(
        !payloads
            .iter()
            .any(|p| contains_bytes(p, env.key_hex.as_bytes()))
    );
    // The writer role (the stream's) may not read values from the vault.
    vault_client
        .batch_execute("CREATE ROLE stream_writer LOGIN IN ROLE veil_vault_writer")
        .await
        .unwrap();
    let w = connect(
        &env.prod
            .dsn(VAULT_DB)
            .replace("user=veil", "user=stream_writer"),
    )
    .await;
    assert!(
        w.query("SELECT token FROM veil_vault.tokens LIMIT 1", &[])
            .await
            .is_ok()
    );
    let denied = w
        .query("SELECT value FROM veil_vault.tokens LIMIT 1", &[])
        .await;
    assert!(denied.is_err(), "the writer role read a value");

    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_allocation_is_unique_under_concurrent_first_sightings() {
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let master = MasterKey::new([5; 32]);
    // A narrow layout (4 digits: 10,000 tokens) and 3,000 values, so candidates clash often.
    let rule = Arc::new(VaultRule {
        domain: "clash".into(),
        kind: TokenKind::Text,
        key: master.domain_key("clash"),
        random: true,
    });
    let values: Vec<String> = (0..3000).map(|i| format!("{:04}", i * 3)).collect();
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let cfg = env.cfg.vault().unwrap().clone();
        let master = master.clone();
        let rule = rule.clone();
        let mut mine = values.clone();
        // Each writer sees the values in its own order.
        let mut rng = veil::devkit::datagen::Rng::new(w);
        for i in (1..mine.len()).rev() {
            mine.swap(i, rng.range(0, i as u64 + 1) as usize);
        }
        tasks.push(tokio::spawn(async move {
            let vault = veil::deid::vault::Vault::connect(&cfg, &master)
                .await
                .unwrap();
            // Half the writers allocate 1,500 values at a time: split over the vault's
            // connections (`vault.connections`), racing the others' parts as well.
            let size = if w % 2 == 0 { 1500 } else { 250 };
            for chunk in mine.chunks(size) {
                let reqs: Vec<VaultRequest> = chunk
                    .iter()
                    .map(|v| VaultRequest {
                        rule: rule.clone(),
                        hash: rule.key.value_hash(v),
                        value: v.clone(),
                    })
                    .collect();
                vault.allocate(reqs).await.unwrap();
            }
            // What this writer would publish for every value.
            values_tokens(&vault, &rule, &mine)
        }));
    }
    let mut seen: Option<HashMap<String, String>> = None;
    for t in tasks {
        let m = t.await.unwrap();
        match &seen {
            None => seen = Some(m),
            Some(s) => assert_eq!(s, &m, "two writers disagree on a token"),
        }
    }
    let m = seen.unwrap();
    assert_eq!(m.len(), 3000);
    let distinct: HashSet<&String> = m.values().collect();
    assert_eq!(distinct.len(), 3000, "two values share a token");
    let vault = connect(&env.prod.dsn(VAULT_DB)).await;
    assert_eq!(
        count(
            &vault,
            "SELECT count(*) FROM veil_vault.tokens WHERE domain = 'clash'"
        )
        .await,
        3000
    );
    // Surrogates need not be unique: a small list serves any number of values.
    let names = Arc::new(VaultRule {
        domain: "names".into(),
        kind: TokenKind::Surrogate(SurrogateKind::GivenName),
        key: master.domain_key("names"),
        random: true,
    });
    let v = veil::deid::vault::Vault::connect(env.cfg.vault().unwrap(), &master)
        .await
        .unwrap();
    let many: Vec<String> = (0..500).map(|i| format!("Name{i}")).collect();
    v.allocate(
        many.iter()
            .map(|n| VaultRequest {
                rule: names.clone(),
                hash: names.key.value_hash(n),
                value: n.clone(),
            })
            .collect(),
    )
    .await
    .unwrap();
}

fn values_tokens(
    vault: &veil::deid::vault::Vault,
    rule: &VaultRule,
    values: &[String],
) -> HashMap<String, String> {
    values
        .iter()
        .map(|v| {
            let t = vault
                .get(&rule.domain, &rule.key.value_hash(v))
                .expect("cached");
            (v.clone(), t.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_a_vault_inside_the_source_database() {
    let env = Env::start(&[]);
    let mut cfg = env.cfg.clone();
    cfg.vault.as_mut().unwrap().dsn = veil::config::Dsn(env.prod.dsn(PROD_DB));
    let e = veil::source::setup::run(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("separate"), "{e}");
}
