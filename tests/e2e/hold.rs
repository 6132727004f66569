//! The held-DDL gate: a new column, a new table, a changed type or an unsupported type holds the
//! stream (nothing after the hold point is published, the slot keeps the WAL) until a reviewer
//! decides; the decision resumes the running stream without a restart; a restart while held
//! stays held.

use std::time::Duration;
use tokio::sync::watch;

use crate::common::*;
use veil::review::workflow::{self as review, ColumnDecision};

async fn dev_has_column(env: &Env, table: &str, column: &str) -> bool {
    let dev = env.dev_client().await;
    count(
        &dev,
        &format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}'"
        ),
    )
    .await
        > 0
}

fn decision(class: &str, rule: Option<&str>, domain: Option<&str>) -> ColumnDecision {
    ColumnDecision {
        class: class.into(),
        rule: rule.map(Into::into),
        domain: domain.map(Into::into),
        by: "kim (schema reviewer)".into(),
        reason: "reviewed in the hold test".into(),
        ..Default::default()
    }
}

/// Also the long-hold path: this stream releases its replication connection one second into the
/// hold (the slot stays, inactive, and keeps the WAL) and reads again from its confirmed LSN when
/// the decision lands — in the same call to `stream::run`, nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_column_with_ssns_is_held_until_approved_then_flows_tokenized() {
    let mut env = Env::start(&[]);
    env.cfg.source.as_mut().unwrap().hold_release_secs = 1;
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 50, 3).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, &["patients", "observations"], Duration::from_secs(60)).await;
    let dev = env.dev_client().await;
    let obs_before = count(&dev, "SELECT count(*) FROM public.observations").await;

    // An innocent name, holding SSNs.
    prod.batch_execute(
        "ALTER TABLE patients ADD COLUMN notes2 text;
         UPDATE patients SET notes2 = ssn WHERE id < 10;",
    )
    .await
    .unwrap();
    // Changes to other tables after the hold point.
    for i in 0..5 {
        prod.execute(
            "INSERT INTO observations (encounter_id, code, value, unit, observed_at) \
             SELECT min(id), 'HOLD', $1::int, 'x', now() FROM encounters",
            &[&i],
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!stream.is_finished(), "a hold is not a stop");
    // Nothing after the hold point reached dev, and nothing of the new column.
    assert!(!dev_has_column(&env, "patients", "notes2").await);
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.observations").await,
        obs_before
    );
    let ssns: Vec<String> = prod
        .query("SELECT ssn FROM patients WHERE id < 10", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for p in topic_payloads(&env) {
        for s in &ssns {
            assert!(
                !contains_bytes(&p, s.as_bytes()),
                "an SSN reached the topic"
            );
        }
    }
    // The slot kept the WAL (its confirmed position is before the hold point), and nobody reads
    // it: the held stream let go of the replication connection.
    let row = prod
        .query_one(
            "SELECT confirmed_flush_lsn < pg_current_wal_lsn(), active FROM pg_replication_slots WHERE slot_name LIKE 'veil_e%'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the slot kept the WAL");
    assert!(
        !row.get::<_, bool>(1),
        "the held stream released its connection"
    );

    // The reviewer sees it, with the scanner's proposal.
    let pending = review::pending(&env.cfg).await.unwrap();
    let p = pending
        .iter()
        .find(|p| p.table == "public.patients" && p.column == "notes2")
        .expect("notes2 is pending");
    let prop = p.proposal.as_ref().unwrap();
    assert_eq!(prop.rule.as_deref(), Some("ssn"), "{:?}", prop);
    assert!(prop.hit_rates.get("ssn").copied().unwrap_or(0.0) > 0.9);
    assert!(!format!("{pending:?}").contains(&ssns[0]));

    // Approve: the running stream resumes, and the rows arrive tokenized (same domain as ssn).
    review::approve(
        &env.cfg,
        "public.patients.notes2",
        &decision("sensitive", Some("ssn"), Some("ssn")),
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["patients", "observations"], Duration::from_secs(60)).await;
    assert_eq!(
        count(
            &dev,
            "SELECT count(*) FROM public.patients WHERE notes2 IS NOT NULL"
        )
        .await,
        9
    );
    assert_eq!(
        count(
            &dev,
            "SELECT count(*) FROM public.patients WHERE notes2 = ssn"
        )
        .await,
        9,
        "the same SSN gets the same token in both columns"
    );
    assert_eq!(
        count(
            &dev,
            "SELECT count(*) FROM public.observations WHERE code = 'HOLD'"
        )
        .await,
        5
    );
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_table_type_change_unsupported_type_dropped_column_and_restart_while_held() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 20, 4).await.unwrap();
    prod.batch_execute(EXTRA_SCHEMA).await.unwrap();
    prod.batch_execute("INSERT INTO scratch SELECT g, 'row ' || g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (sink_stop_tx, sink_stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, stop_rx).await });
    let cfg = env.cfg.clone();
    let sink = tokio::spawn(async move { veil::sink::run(&cfg, sink_stop_rx).await });
    assert_dev_matches(&env, &["patients", "scratch"], Duration::from_secs(60)).await;

    // A new table: held.
    prod.batch_execute(
        "CREATE TABLE referrals (id int PRIMARY KEY, patient_id bigint, note text);
         INSERT INTO referrals VALUES (1, 1, 'call Mary Smith at (617) 555-0123');
         INSERT INTO scratch VALUES (100, 'after the new table');",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!stream.is_finished());
    let dev = env.dev_client().await;
    assert_eq!(
        count(
            &dev,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'referrals'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.scratch WHERE id = 100").await,
        0
    );

    // Stop while held, start again: still held (the slot did not move past the hold point).
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    let (stop_tx2, stop_rx2) = watch::channel(false);
    let cfg = env.cfg.clone();
    let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, stop_rx2).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!stream.is_finished());
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.scratch WHERE id = 100").await,
        0
    );

    // Decide column by column; the stream resumes once the table is fully decided.
    review::approve(
        &env.cfg,
        "public.referrals.id",
        &decision("sensitive", Some("tokenize"), Some("referral_id")),
    )
    .await
    .unwrap();
    review::approve(
        &env.cfg,
        "public.referrals.patient_id",
        &decision("sensitive", Some("tokenize"), Some("patient_id")),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.scratch WHERE id = 100").await,
        0,
        "note is still undecided"
    );
    review::block(&env.cfg, "public.referrals.note", "kim", "free text")
        .await
        .unwrap();
    assert_dev_matches(&env, &["referrals", "scratch"], Duration::from_secs(60)).await;
    assert!(!dev_has_column(&env, "referrals", "note").await);
    // The referral joins its patient in dev.
    assert_eq!(
        count(
            &dev,
            "SELECT count(*) FROM public.referrals r JOIN public.patients p ON p.id = r.patient_id"
        )
        .await,
        1
    );

    // A changed type: held until the registry knows the new type.
    prod.batch_execute(
        "ALTER TABLE scratch ALTER COLUMN v TYPE varchar(40);
         INSERT INTO scratch VALUES (101, 'after the type change');",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.scratch WHERE id = 101").await,
        0
    );
    let pending = review::pending(&env.cfg).await.unwrap();
    assert!(
        pending
            .iter()
            .any(|p| p.column == "v" && matches!(p.why, review::Why::TypeChanged { .. }))
    );
    review::approve(
        &env.cfg,
        "public.scratch.v",
        &decision("sensitive", Some("tokenize"), Some("scratch_v")),
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["scratch"], Duration::from_secs(60)).await;

    // An unsupported type: held until blocked.
    prod.batch_execute(
        "ALTER TABLE scratch ADD COLUMN p point;
         INSERT INTO scratch VALUES (102, 'with a point', '(1,2)');",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.scratch WHERE id = 102").await,
        0
    );
    review::block(
        &env.cfg,
        "public.scratch.p",
        "kim",
        "geometry is not needed in dev",
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["scratch"], Duration::from_secs(60)).await;

    // A dropped column needs no decision: dev drops it too.
    prod.batch_execute(
        "ALTER TABLE scratch DROP COLUMN v;
         INSERT INTO scratch VALUES (103, '(3,4)');",
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["scratch"], Duration::from_secs(60)).await;
    assert!(!dev_has_column(&env, "scratch", "v").await);

    stop_tx2.send(true).unwrap();
    sink_stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

/// Bootstrap of an existing database: `propose` on the generated data set with an empty
/// registry classifies every column the shipped registry calls sensitive as sensitive; the
/// proposals accepted with `approve --all-proposed` make a registry the pipeline runs with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn propose_classifies_every_sensitive_column_and_bootstraps_a_registry() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 300, 8).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    // The shipped classification is the truth; the registry the stream uses starts empty.
    let truth_dir = tempfile::tempdir().unwrap();
    veil::devkit::demo::write_registry(truth_dir.path()).unwrap();
    let truth = veil::deid::registry::Registry::load(truth_dir.path()).unwrap();
    for f in std::fs::read_dir(env.registry_dir()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let proposals = review::propose(&env.cfg).await.unwrap();
    let (mut tp, mut fp, mut fn_, mut tn, mut same_rule) = (0, 0, 0, 0, 0);
    let mut missed = Vec::new();
    for p in &proposals {
        let t = &truth.table(&p.table).unwrap().columns[&p.column];
        let truly = !matches!(
            t.decision,
            veil::deid::registry::Decision::Publish(veil::deid::registry::Rule::Keep)
        );
        let prop = p.proposal.as_ref().unwrap();
        let said = prop.class != "safe";
        match (truly, said) {
            (true, true) => tp += 1,
            (false, true) => {
                fp += 1;
                eprintln!("false alarm: {}.{} {:?}", p.table, p.column, prop);
            }
            (true, false) => {
                fn_ += 1;
                missed.push(format!("{}.{}", p.table, p.column));
            }
            (false, false) => tn += 1,
        }
        if let veil::deid::registry::Decision::Publish(r) = &t.decision {
            let family = r.describe().split('(').next().unwrap_or("").to_owned();
            if prop.rule.as_deref().unwrap_or("keep") == family {
                same_rule += 1;
            }
        }
        assert!(!prop.evidence().contains("@mail.example"));
    }
    let n = proposals.len();
    eprintln!(
        "propose on the generated data set: {n} columns; sensitive: {tp} found, {fn_} missed, \
         {fp} false alarms, {tn} correctly safe; recall {:.2}, precision {:.2}; \
         same rule as the shipped registry for {same_rule} of {n}",
        tp as f64 / (tp + fn_).max(1) as f64,
        tp as f64 / (tp + fp).max(1) as f64
    );
    assert_eq!(n, 36, "every column of the 5 tables is pending");
    assert!(
        missed.is_empty(),
        "sensitive columns proposed safe: {missed:?}"
    );

    // Accept them all and run: the registry is complete and the copy is consistent.
    let accepted = review::approve_all_proposed(&env.cfg, "bootstrap (kim)")
        .await
        .unwrap();
    assert_eq!(accepted, n);
    assert!(review::pending(&env.cfg).await.unwrap().is_empty());
    let registry = veil::deid::registry::Registry::load(&env.registry_dir()).unwrap();
    let ssn = &registry.table("public.patients").unwrap().columns["ssn"];
    assert_eq!(ssn.reviewer.as_deref(), Some("bootstrap (kim)"));
    assert!(
        ssn.reason
            .as_deref()
            .unwrap()
            .contains("accepted scanner proposal: 300 sampled; ssn 100%"),
        "{:?}",
        ssn.reason
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
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
    let dev = env.dev_client().await;
    for (child, col, parent) in [
        ("encounters", "patient_id", "patients"),
        ("encounters", "provider_id", "providers"),
        ("observations", "encounter_id", "encounters"),
        ("medications", "patient_id", "patients"),
    ] {
        let q = format!(
            "SELECT count(*) FROM public.{child} c JOIN public.{parent} p ON p.id = c.{col}"
        );
        assert_eq!(count(&prod, &q).await, count(&dev, &q).await, "{q}");
    }
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

/// The in-flight scanner: e-mail addresses in a column classified safe hold the stream before
/// the batch is published; reclassifying the column resumes it, and what dev held of the column
/// under the old (keep) rule is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scanner_hit_in_a_safe_column_holds_and_reclassification_clears_dev() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE contacts (id int PRIMARY KEY, label text);
         INSERT INTO contacts SELECT g, 'front desk ' || g FROM generate_series(1, 20) g;",
    )
    .await
    .unwrap();
    prod.batch_execute(EXTRA_SCHEMA).await.unwrap();
    std::fs::write(
        env.registry_dir().join("public.contacts.toml"),
        "table = \"public.contacts\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\nlabel = { type = \"text\", class = \"safe\", reason = \"a desk label\" }\n",
    )
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, &["contacts"], Duration::from_secs(60)).await;

    prod.batch_execute(
        "INSERT INTO contacts VALUES (21, 'reach me at jane.doe@mail.example');
         INSERT INTO scratch VALUES (1, 'after the hit');",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!stream.is_finished());
    let dev = env.dev_client().await;
    assert_eq!(
        count(&dev, "SELECT count(*) FROM public.contacts").await,
        20
    );
    for p in topic_payloads(&env) {
        assert!(
            !contains_bytes(&p, b"jane.doe"),
            "the e-mail reached the topic"
        );
    }

    review::approve(
        &env.cfg,
        "public.contacts.label",
        &decision("sensitive", Some("redact"), None),
    )
    .await
    .unwrap();
    let ok = wait_for(Duration::from_secs(60), || async {
        let dev = env.dev_client().await;
        dev.query_one("SELECT count(*) FROM public.scratch", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    })
    .await;
    assert!(ok, "the stream resumed after the decision");
    let rows = text_rows(
        &dev,
        "SELECT id::text, label FROM public.contacts c ORDER BY c.id",
    )
    .await;
    assert_eq!(rows.len(), 21);
    assert_eq!(rows[20][1].as_deref(), Some("reach me at [EMAIL]"));
    // Values published under the old rule are cleared (`leaks` shows the clearing alone), and
    // the backfill the decision started refills them under the new one.
    assert_dev_matches(&env, &["contacts"], Duration::from_secs(60)).await;
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

/// A minimal HTTP/1.1 client over a TCP socket (one request per connection).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    http_raw(addr, method, path, token, body)
        .await
        .expect("an HTTP answer")
}

/// Plain HTTP; `None` when the server closed without an HTTP answer.
async fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, serde_json::Value)> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_exchange(s, addr, method, path, token, body).await
}

/// One request over an established stream (plain or TLS).
async fn http_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: S,
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    http_exchange(s, addr, method, path, token, body)
        .await
        .expect("an HTTP answer")
}

async fn http_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    // A TLS stream may end without close_notify; what was read counts.
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 ") || text.len() < 12 {
        return None;
    }
    let status: u16 = text[9..12].parse().ok()?;
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    Some((status, json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_api_knows_each_reviewer_and_writes_decisions() {
    let mut env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 30, 2).await.unwrap();
    prod.batch_execute("ALTER TABLE patients ADD COLUMN notes3 text; UPDATE patients SET notes3 = email WHERE id < 5;")
        .await
        .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let port = veil::devkit::testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    // Each reviewer has a token of their own; the config holds only the digests.
    let (kim, kim_digest) = veil::review::api::new_reviewer_token();
    let (lee, lee_digest) = veil::review::api::new_reviewer_token();
    let token = kim.as_str();
    env.cfg.api = Some(veil::config::ApiConfig {
        listen: addr.clone(),
        reviewers: [
            ("kim".to_owned(), kim_digest),
            ("lee".to_owned(), lee_digest),
        ]
        .into(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        reviewers_file: None,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let server = tokio::spawn(async move { veil::review::api::serve(&cfg, stop_rx).await });
    let ok = wait_for(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&addr).await.is_ok()
    })
    .await;
    assert!(ok);

    assert_eq!(http(&addr, "GET", "/v1/pending", None, None).await.0, 401);
    assert_eq!(
        http(
            &addr,
            "GET",
            "/v1/pending",
            Some("wrong-token-000000000"),
            None
        )
        .await
        .0,
        401
    );
    let (status, body) = http(&addr, "GET", "/v1/pending", Some(token), None).await;
    assert_eq!(status, 200);
    let items = body["pending"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["column"], "notes3");
    assert_eq!(items[0]["proposal"]["rule"], "email");
    assert!(
        !body.to_string().contains("mail.example"),
        "no values in the API"
    );

    let (status, body) = http(
        &addr,
        "POST",
        "/v1/approve",
        Some(token),
        Some(r#"{"target": "public.patients.notes3", "rule": "tokenize"}"#),
    )
    .await;
    assert!((400..500).contains(&status), "no reason: {body}");
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/approve",
        Some(token),
        Some(r#"{"target": "public.patients.notes3", "rule": "email", "domain": "email", "by": "kim", "reason": "e-mails"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = http(&addr, "GET", "/v1/pending", Some(token), None).await;
    assert!(body["pending"].as_array().unwrap().is_empty());
    let registry = veil::deid::registry::Registry::load(&env.registry_dir()).unwrap();
    assert_eq!(
        registry.table("public.patients").unwrap().columns["notes3"]
            .reviewer
            .as_deref(),
        Some("kim")
    );
    // A whole-table block names a table production has; the file name comes from the catalog,
    // never from request text (an absolute or `../` target wrote anywhere before).
    let outside = env.registry_dir().parent().unwrap().join("escape.t.toml");
    for target in [
        format!(
            "{}.t",
            env.registry_dir()
                .parent()
                .unwrap()
                .join("escape")
                .display()
        ),
        "../../escape.t".to_owned(),
        "public.no_such_table".to_owned(),
    ] {
        let body = serde_json::json!({"target": target, "by": "kim", "reason": "test"}).to_string();
        let (status, reply) = http(&addr, "POST", "/v1/block", Some(token), Some(&body)).await;
        assert!((400..500).contains(&status), "{target}: {status} {reply}");
    }
    assert!(!outside.exists());
    prod.batch_execute(r#"CREATE TABLE "odd/x" (id int PRIMARY KEY)"#)
        .await
        .unwrap();
    let body = r#"{"target": "public.odd/x", "by": "kim", "reason": "staging"}"#;
    let (status, reply) = http(&addr, "POST", "/v1/block", Some(token), Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    assert!(env.registry_dir().join("public.odd%2Fx.toml").exists());
    let registry = veil::deid::registry::Registry::load(&env.registry_dir()).unwrap();
    assert!(registry.table("public.odd/x").unwrap().blocked);
    assert_eq!(
        registry.table("public.odd/x").unwrap().reviewer.as_deref(),
        Some("kim")
    );

    // The name comes from the credential: lee's token cannot decide as kim, and lee's own
    // decisions record lee.
    let (status, reply) = http(&addr, "GET", "/v1/whoami", Some(&lee), None).await;
    assert_eq!((status, reply["reviewer"].as_str()), (200, Some("lee")));
    let as_kim = r#"{"target": "public.odd/x", "by": "kim", "reason": "needed in dev"}"#;
    let (status, reply) = http(&addr, "POST", "/v1/unblock", Some(&lee), Some(as_kim)).await;
    assert_eq!(status, 403, "{reply}");
    // Unblocking loosens: a reason is required.
    let no_reason = r#"{"target": "public.odd/x", "reason": " "}"#;
    let (status, reply) = http(&addr, "POST", "/v1/unblock", Some(&lee), Some(no_reason)).await;
    assert!((400..500).contains(&status), "{reply}");
    let body = r#"{"target": "public.odd/x", "reason": "needed in dev"}"#;
    let (status, reply) = http(&addr, "POST", "/v1/unblock", Some(&lee), Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    let after = veil::deid::registry::Registry::load(&env.registry_dir()).unwrap();
    let t = after.table("public.odd/x").unwrap();
    assert!(!t.blocked);
    assert_eq!(t.reviewer.as_deref(), Some("lee"));
    // The audit record of this change marks it as loosening, with the reason and the reviewer.
    let records = veil::source::window::decisions(&registry, &after);
    let r = records
        .iter()
        .find(|d| d.table == "public.odd/x" && d.column == "*")
        .unwrap();
    assert!(r.loosens && r.class == "unblocked" && r.previous_class == "blocked");
    assert_eq!(
        (r.reviewer.as_str(), r.reason.as_str()),
        ("lee", "needed in dev")
    );
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}

/// A table without a primary key (setup's trigger gives it REPLICA IDENTITY FULL, so pgoutput
/// marks every column as key) with a blocked column: the snapshot and the stream both publish it
/// without the blocked column, inserts, updates and deletes reach dev, and nothing holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_column_of_a_table_without_a_key_streams() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::source::setup::run(&env.cfg).await.unwrap();
    prod.batch_execute(
        "CREATE TABLE visit_log (room text, outcome text, secret text);
         INSERT INTO visit_log VALUES ('A1', 'seen', 'Maria Lopez 123-45-6789'), ('B2', 'left', 'John Roe');",
    )
    .await
    .unwrap();
    std::fs::write(
        env.registry_dir().join("public.visit_log.toml"),
        "table = \"public.visit_log\"\n[columns]\n\
         room = { type = \"text\", class = \"safe\" }\n\
         outcome = { type = \"text\", class = \"safe\" }\n\
         secret = { type = \"text\", class = \"blocked\", reason = \"free text\" }\n",
    )
    .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, &["visit_log"], Duration::from_secs(60)).await;
    prod.batch_execute(
        "INSERT INTO visit_log VALUES ('C3', 'seen', 'Jane Doe (617) 555-0123');
         UPDATE visit_log SET outcome = 'admitted' WHERE room = 'A1';
         DELETE FROM visit_log WHERE room = 'B2';",
    )
    .await
    .unwrap();
    assert_dev_matches(&env, &["visit_log"], Duration::from_secs(60)).await;
    assert!(!stream.is_finished(), "the stream must not stop or hold");
    let dev = env.dev_client().await;
    let rows = text_rows(
        &dev,
        "SELECT room, outcome FROM public.visit_log ORDER BY room",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            vec![Some("A1".into()), Some("admitted".into())],
            vec![Some("C3".into()), Some("seen".into())],
        ]
    );
    let cols = text_rows(
        &dev,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'visit_log' AND column_name = 'secret'",
    )
    .await;
    assert_eq!(
        cols[0][0].as_deref(),
        Some("0"),
        "the blocked column is not in dev"
    );
    let topic = dump_topic(&env);
    for v in [
        "Maria Lopez",
        "123-45-6789",
        "John Roe",
        "Jane Doe",
        "555-0123",
    ] {
        assert!(!topic.contains(v), "{v} reached the topic");
    }
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}

/// The API over TLS (rustls) with a throwaway CA; without a certificate it refuses a
/// non-loopback address, and the old shared token is refused with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_api_serves_tls_and_refuses_plain_http_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    veil::devkit::testkit::make_certs(dir.path()).unwrap();
    let (kim, kim_digest) = veil::review::api::new_reviewer_token();
    let port = veil::devkit::testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let text = format!(
        "[api]\nlisten = {addr:?}\ntls_cert = {:?}\ntls_key = {:?}\n\n[api.reviewers]\nkim = {kim_digest:?}\n",
        dir.path().join("server.crt"),
        dir.path().join("server.key")
    );
    let cfg = veil::config::Config::parse(&text).unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let c = cfg.clone();
    let server = tokio::spawn(async move { veil::review::api::serve(&c, stop_rx).await });
    assert!(
        wait_for(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await
    );
    // A TLS client that trusts the throwaway CA.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (status, reply) = http_on(tls, &addr, "GET", "/v1/whoami", Some(&kim), None).await;
    assert_eq!((status, reply["reviewer"].as_str()), (200, Some("kim")));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(
        Duration::from_secs(15),
        http_raw(&addr, "GET", "/v1/whoami", Some(&kim), None),
    )
    .await
    .unwrap();
    assert!(plain.is_none(), "plain HTTP was answered on the TLS port");
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();

    // What `serve` answers to a config it must refuse.
    let refused = |text: String| async move {
        let cfg = veil::config::Config::parse(&text).unwrap();
        let (_tx, rx) = watch::channel(false);
        veil::review::api::serve(&cfg, rx)
            .await
            .unwrap_err()
            .to_string()
    };
    // Without a certificate, only a loopback address is served.
    let e = refused(format!(
        "[api]\nlisten = \"0.0.0.0:{}\"\n\n[api.reviewers]\nkim = {kim_digest:?}\n",
        veil::devkit::testkit::free_port()
    ))
    .await;
    assert!(e.contains("loopback"), "{e}");
    // The shared token of earlier versions is refused with what to do instead.
    let e = refused(format!(
        "[api]\nlisten = {addr:?}\ntoken_file = \"/etc/veil/api.token\"\n"
    ))
    .await;
    assert!(e.contains("veil registry token"), "{e}");
    // A token pasted where its digest belongs is refused, and the error does not echo it.
    let e = refused(format!(
        "[api]\nlisten = {addr:?}\n\n[api.reviewers]\nkim = {kim:?}\n"
    ))
    .await;
    assert!(e.contains("blake3:") && !e.contains(&kim), "{e}");
}

/// Sticky scanner holds (the reproduction: a sample of one row in two, a transaction of three
/// rows whose middle one holds an SSN in a column classified safe). Once the scanner holds on
/// it, neither an unrelated decision, nor a restart, nor a decision on another column of the
/// same table lets the batch out; only the column's own decision does, and then the held rows
/// go out under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scanner_hold_ends_only_with_the_columns_own_decision() {
    let mut env = Env::start(&[]);
    env.cfg.scanner.in_flight_sample = 0.5;
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, label text, memo text);
         CREATE TABLE beacon (id int PRIMARY KEY);
         CREATE TABLE unrelated (id int PRIMARY KEY, v text);
         INSERT INTO notes SELECT g, 'front desk ' || g, 'memo ' || g FROM generate_series(1, 5) g;",
    )
    .await
    .unwrap();
    let files = [
        (
            "public.notes.toml",
            "table = \"public.notes\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
             label = { type = \"text\", class = \"safe\", reason = \"a desk label\" }\n\
             memo = { type = \"text\", class = \"safe\", reason = \"a memo\" }\n",
        ),
        (
            "public.beacon.toml",
            "table = \"public.beacon\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n",
        ),
        (
            "public.unrelated.toml",
            "table = \"public.unrelated\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
             v = { type = \"text\", class = \"safe\" }\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(env.registry_dir().join(name), text).unwrap();
    }
    veil::source::setup::run(&env.cfg).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (sink_stop_tx, sink_stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, stop_rx).await });
    let cfg = env.cfg.clone();
    let sink = tokio::spawn(async move { veil::sink::run(&cfg, sink_stop_rx).await });
    assert_dev_matches(&env, &["notes"], Duration::from_secs(60)).await;
    let dev = env.dev_client().await;
    let beacon = |n: i32| {
        let dev = &dev;
        async move {
            count(
                dev,
                &format!("SELECT count(*) FROM public.beacon WHERE id = {n}"),
            )
            .await
                == 1
        }
    };

    // Transactions of three rows, the middle one with an SSN, until the sample catches one.
    let ssn = |i: i32| format!("{:03}-{:02}-{:04}", 100 + i, 10 + i, 1000 + i * 7);
    let mut held = None;
    for i in 1..=16 {
        let sql = format!(
            "BEGIN;
             INSERT INTO notes VALUES ({a}, 'desk {i}', 'm'), ({b}, 'ssn {s}', 'm'), ({c}, 'desk {i}b', 'm');
             INSERT INTO beacon VALUES ({i});
             {extra}
             COMMIT;",
            a = 100 * i,
            b = 100 * i + 1,
            c = 100 * i + 2,
            s = ssn(i),
            // An odd number of rows every other time, so a sample by position moves too.
            extra = if i % 2 == 1 {
                format!("INSERT INTO beacon VALUES ({});", 1000 + i)
            } else {
                String::new()
            },
        );
        prod.batch_execute(&sql).await.unwrap();
        let arrived = wait_for(Duration::from_secs(6), || beacon(i)).await;
        if !arrived {
            held = Some(i);
            break;
        }
    }
    let h = held.expect("the scanner held on one of 16 SSNs sampled one in two");
    let no_leak = |what: &str| {
        for p in topic_payloads(&env) {
            assert!(
                !contains_bytes(&p, ssn(h).as_bytes()),
                "the held SSN reached the topic ({what})"
            );
        }
    };
    no_leak("at the hold");

    // An unrelated decision: still held, nothing of the batch published.
    review::approve(
        &env.cfg,
        "public.unrelated.v",
        &decision("sensitive", Some("redact"), None),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!beacon(h).await, "released by an unrelated decision");
    no_leak("after an unrelated decision");

    // A restart while held: still held.
    stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let stream = tokio::spawn(async move { veil::source::stream::run(&cfg, stop_rx).await });
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!stream.is_finished());
    assert!(!beacon(h).await, "released by a restart");
    no_leak("after a restart");

    // Another column of the same table decided (the rows' published values change): still held.
    review::approve(
        &env.cfg,
        "public.notes.memo",
        &decision("sensitive", Some("scrub"), None),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!beacon(h).await, "released by another column's decision");
    no_leak("after another column's decision");

    // The column's own decision: the batch goes out under it.
    review::approve(
        &env.cfg,
        "public.notes.label",
        &decision("sensitive", Some("redact"), None),
    )
    .await
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || beacon(h)).await,
        "the stream resumed after the column's decision"
    );
    let rows = text_rows(
        &dev,
        &format!("SELECT label FROM public.notes WHERE id = {}", 100 * h + 1),
    )
    .await;
    assert_eq!(rows, vec![vec![Some("ssn [SSN]".to_owned())]]);
    no_leak("after the decision");
    assert_dev_matches(&env, &["notes", "beacon"], Duration::from_secs(60)).await;
    stop_tx.send(true).unwrap();
    sink_stop_tx.send(true).unwrap();
    stream.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
}
