//! The reviewer's web page in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver (WebDriver). A column holding SSNs is added while the stream runs; the stream
//! holds; a reviewer signs in with their token, sees the hold and the proposal, approves the
//! proposed rule with a reason, and the running stream resumes: dev gets the column, tokenized.
//! `VEIL_UPDATE_SCREENSHOTS=1` writes the screenshots to `docs/` (else to a temp dir).

use fantoccini::{ClientBuilder, Locator};
use std::time::Duration;
use tokio::sync::watch;

use crate::common::*;

/// ChromeDriver on a free port, stopped on drop.
struct Driver(std::process::Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = veil::devkit::testkit::free_port();
        let child = std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("/usr/bin/chromedriver (Debian's chromium-driver; scripts/install-deps installs it)");
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> fantoccini::Client {
    let addr = format!("127.0.0.1:{}", driver.1);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await,
        "chromedriver did not start"
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://{addr}"))
        .await
        .expect("a Chromium session through chromedriver")
}

async fn shot(c: &fantoccini::Client, dir: &std::path::Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// One HTTP/1.1 request (`"METHOD /path"`, an optional `Cookie` header, a form body): status,
/// head and body of the answer.
async fn raw(addr: &str, line: &str, cookie: Option<&str>, form: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{line} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if line.starts_with("POST") {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head[9..12].parse().unwrap(),
        head.to_owned(),
        body.to_owned(),
    )
}

/// The value a `Set-Cookie` header of `head` gives `name`.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.trim().strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_column_is_approved_on_the_review_page_and_the_stream_resumes() {
    let mut env = Env::start(&[]);
    let journal = tempfile::tempdir().unwrap();
    crate::audit::with_audit(&mut env, journal.path());
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 40, 4).await.unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let port = veil::devkit::testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (token, digest) = veil::review::api::new_reviewer_token();
    env.cfg.api = Some(veil::config::ApiConfig {
        listen: addr.clone(),
        reviewers: [("kim".to_owned(), digest)].into(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        reviewers_file: None,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let rx = stop_rx.clone();
    let server = tokio::spawn(async move { veil::review::api::serve(&cfg, rx).await });
    let (stream, sink) = veil::devkit::demo::spawn_pipeline(&env.cfg, stop_rx);
    assert_dev_matches(&env, &["patients"], Duration::from_secs(120)).await;

    // A new column holding SSNs: the stream holds.
    prod.batch_execute(
        "ALTER TABLE patients ADD COLUMN alt_ssn text;
         UPDATE patients SET alt_ssn = ssn WHERE id <= 10;",
    )
    .await
    .unwrap();
    let held = wait_for(Duration::from_secs(60), || async {
        veil::review::status::stream_state(&env.cfg)
            .await
            .is_ok_and(|s| s.state == "held")
    })
    .await;
    assert!(held, "the stream holds on the new column");

    let shots = if std::env::var("VEIL_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        std::env::temp_dir().join(format!("veil-review-shots-{port}"))
    };
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    let c = browser(&driver, profile.path()).await;
    let base = format!("http://{addr}");

    // Not signed in: the sign-in page. A wrong token is refused.
    c.goto(&format!("{base}/review")).await.unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/review/login")
    );
    shot(&c, &shots, "review-sign-in.png").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("veilr_not-a-token\n")
        .await
        .unwrap();
    assert!(
        text_of(&c, ".error")
            .await
            .contains("Unknown reviewer token")
    );
    // Signed in with the keyboard alone (Enter in the token field).
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&format!("{token}\n"))
        .await
        .unwrap();
    assert_eq!(text_of(&c, "#stream-state").await, "held");
    assert_eq!(text_of(&c, "#reviewer").await, "kim");
    let url = c.current_url().await.unwrap();
    assert!(!url.as_str().contains(&token), "no token in a URL");
    let held = text_of(&c, "#held").await;
    assert!(held.contains("public.patients.alt_ssn"), "{held}");
    // The proposal and its evidence, never a value.
    let card = text_of(&c, "#pending-public-patients-alt-ssn").await;
    assert!(
        card.contains("Detector hit rates") && card.contains("Sample size"),
        "{card}"
    );
    let page = c.source().await.unwrap();
    let ssns: Vec<String> = prod
        .query(
            "SELECT alt_ssn FROM patients WHERE alt_ssn IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for v in &ssns {
        assert!(!page.contains(v.as_str()), "a production value on the page");
    }
    let rule = c
        .find(Locator::Css("#rule-public-patients-alt-ssn"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(rule, "ssn", "the proposed rule is filled in");
    shot(&c, &shots, "review-held.png").await;

    // Approve the proposed rule, with a reason.
    c.find(Locator::Css("#reason-public-patients-alt-ssn"))
        .await
        .unwrap()
        .send_keys("second SSN field of the patient")
        .await
        .unwrap();
    c.find(Locator::Css("#approve-public-patients-alt-ssn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = text_of(&c, "#flash").await;
    assert!(flash.contains("approved: sensitive, rule ssn"), "{flash}");

    // The running stream resumes and dev gets the column, tokenized.
    let dev = env.dev_client().await;
    let arrived = wait_for(Duration::from_secs(60), || async {
        dev.query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'patients' AND column_name = 'alt_ssn'",
            &[],
        )
        .await
        .is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    assert!(arrived, "dev has the approved column");
    let resumed = wait_for(Duration::from_secs(60), || async {
        veil::review::status::stream_state(&env.cfg)
            .await
            .is_ok_and(|s| s.state == "streaming")
    })
    .await;
    assert!(resumed, "the stream resumed");
    prod.batch_execute("UPDATE patients SET alt_ssn = ssn WHERE id <= 10")
        .await
        .unwrap();
    let tokenized = wait_for(Duration::from_secs(60), || async {
        dev.query_one(
            "SELECT count(*) FROM patients WHERE alt_ssn IS NOT NULL",
            &[],
        )
        .await
        .is_ok_and(|r| r.get::<_, i64>(0) == 10)
    })
    .await;
    assert!(tokenized, "the column's values reach dev");
    let in_dev: Vec<String> = dev
        .query(
            "SELECT alt_ssn FROM patients WHERE alt_ssn IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(in_dev.iter().all(|v| !ssns.contains(v)), "tokens, not SSNs");
    // `veil status`: the one screen ops read first.
    let dir = tempfile::tempdir().unwrap();
    let config = env.write_config(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("stream: streaming") && text.contains("slot veil_e1: active"),
        "{text}"
    );
    assert!(
        text.contains("sink: topic veil.test.changes offset"),
        "{text}"
    );
    c.goto(&format!("{base}/review")).await.unwrap();
    assert_eq!(text_of(&c, "#stream-state").await, "streaming");
    assert!(
        text_of(&c, "#nothing-pending")
            .await
            .contains("Nothing pending")
    );
    shot(&c, &shots, "review-resumed.png").await;
    // The decision's audit record, archived, is the table's history: who, when, before → after.
    let archived = wait_for(Duration::from_secs(60), || async {
        veil::audit::archive(&env.cfg, None)
            .await
            .is_ok_and(|_| true)
            && veil::audit::query(&env.cfg, "2000-01-01", "2100-01-01", Some("alt_ssn"))
                .await
                .is_ok_and(|v| v.iter().any(|r| r["kind"] == "decision"))
    })
    .await;
    assert!(archived, "the decision is in the audit archive");
    c.goto(&format!("{base}/review/table?name=public.patients"))
        .await
        .unwrap();
    assert!(
        text_of(&c, "main")
            .await
            .contains("second SSN field of the patient")
    );
    let history = text_of(&c, "#history").await;
    assert!(
        history.contains("alt_ssn")
            && history.contains("kim")
            && history.contains("sensitive, ssn"),
        "{history}"
    );
    shot(&c, &shots, "review-table.png").await;

    c.close().await.unwrap();

    // Without a browser: the cookies' attributes, and forms without the right CSRF token.
    let (status, head, body) = raw(&addr, "GET /review/login", None, "").await;
    assert_eq!(status, 200);
    let nonce = set_cookie(&head, "veil_login").expect("a sign-in nonce cookie");
    assert!(body.contains(&nonce), "the form carries the nonce");
    let (status, _, _) = raw(
        &addr,
        "POST /review/login",
        None,
        &format!("token={token}&csrf={nonce}"),
    )
    .await;
    assert_eq!(status, 403, "sign-in without the nonce cookie");
    let (status, head, _) = raw(
        &addr,
        "POST /review/login",
        Some(&format!("veil_login={nonce}")),
        &format!("token={token}&csrf={nonce}"),
    )
    .await;
    assert_eq!(status, 303);
    let line = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: veil_session=")
        })
        .expect("a session cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict"),
        "{line}"
    );
    assert!(!head.contains(&token), "the token is not echoed");
    let session = set_cookie(&head, "veil_session").unwrap();
    let (status, _, _) = raw(
        &addr,
        "POST /review/decide",
        Some(&format!("veil_session={session}")),
        "csrf=forged&target=public.patients.alt_ssn&action=block&reason=x",
    )
    .await;
    assert_eq!(status, 403, "a decision without the session's CSRF token");
    let registry = veil::deid::registry::Registry::load(&env.cfg.registry.dir).unwrap();
    assert!(
        !matches!(
            registry.tables["public.patients"].columns["alt_ssn"].decision,
            veil::deid::registry::Decision::Blocked
        ),
        "the forged form changed nothing"
    );
    let _ = stop_tx.send(true);
    let _ = stream.await;
    let _ = sink.await;
    let _ = server.await;
}

/// A first run brings many columns at once: the page groups them by table, the weakest
/// proposals first (a table with a blocked proposal before one whose proposals are all
/// confident), and accepts a table's proposals with one button — each checked as an approval,
/// all or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_run_is_reviewed_table_by_table_weakest_first() {
    let mut env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE wards (ward_id int PRIMARY KEY, ward_type_cd varchar(4), bed_cnt int);
         INSERT INTO wards SELECT g, 'W' || (g % 3), 10 + g % 7 FROM generate_series(1, 60) g;
         CREATE TABLE intake (intake_id int PRIMARY KEY, remarks text, spot point);
         INSERT INTO intake SELECT g, CASE WHEN g = 1 THEN 'seen' END, NULL FROM generate_series(1, 60) g;
         CREATE TABLE visits (ward_id int REFERENCES wards, visit_dt date, seq_no int, PRIMARY KEY (ward_id, visit_dt));
         INSERT INTO visits SELECT 1 + g % 60, date '2024-01-01' + g, 1 FROM generate_series(1, 120) g;",
    )
    .await
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let port = veil::devkit::testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (token, digest) = veil::review::api::new_reviewer_token();
    env.cfg.api = Some(veil::config::ApiConfig {
        listen: addr.clone(),
        reviewers: [("kim".to_owned(), digest)].into(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        reviewers_file: None,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = env.cfg.clone();
    let server = tokio::spawn(async move { veil::review::api::serve(&cfg, stop_rx).await });
    let shots = if std::env::var("VEIL_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        std::env::temp_dir().join(format!("veil-review-shots-{port}"))
    };
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    let c = browser(&driver, profile.path()).await;
    let base = format!("http://{addr}");
    assert!(
        wait_for(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await
    );
    c.goto(&format!("{base}/review/login")).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&format!("{token}\n"))
        .await
        .unwrap();
    assert_eq!(text_of(&c, "#reviewer").await, "kim");

    // Grouped by table, the weakest first: intake (a type veil does not publish: blocked) before
    // wards (confident proposals only).
    let mut order = Vec::new();
    for e in c
        .find_all(Locator::Css("section.table-group"))
        .await
        .unwrap()
    {
        order.push(e.attr("id").await.unwrap().unwrap_or_default());
    }
    let pos = |id: &str| order.iter().position(|o| o == id);
    assert!(
        pos("table-public-intake").unwrap() < pos("table-public-wards").unwrap(),
        "{order:?}"
    );
    let first = text_of(&c, "#table-public-intake article").await;
    assert!(first.contains("proposed blocked"), "{first}");
    // The date in the composite key is proposed as a date token with the key's other part.
    let visit = text_of(&c, "#pending-public-visits-visit-dt").await;
    assert!(
        visit.contains("date_token") && visit.contains("with ward_id"),
        "{visit}"
    );
    shot(&c, &shots, "review-first-run.png").await;

    // One table's proposals at once.
    c.find(Locator::Css("#accept-public-wards"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    gone(&c, "#table-public-wards").await;
    let flash = text_of(&c, "#flash").await;
    assert!(
        flash.contains("public.wards: 3 proposals accepted"),
        "{flash}"
    );
    let registry = veil::deid::registry::Registry::load(&env.cfg.registry.dir).unwrap();
    let wards = registry.table("public.wards").unwrap();
    assert_eq!(wards.columns.len(), 3);
    assert!(
        wards
            .columns
            .values()
            .all(|c| c.reviewer.as_deref() == Some("kim"))
    );
    // The date token's tuple travels with the approval from the page too.
    c.find(Locator::Css("#accept-public-visits"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    gone(&c, "#table-public-visits").await;
    let flash = text_of(&c, "#flash").await;
    assert!(
        flash.contains("public.visits: 3 proposals accepted"),
        "{flash}"
    );
    let registry = veil::deid::registry::Registry::load(&env.cfg.registry.dir).unwrap();
    let dt = &registry.table("public.visits").unwrap().columns["visit_dt"];
    assert!(
        matches!(&dt.decision, veil::deid::registry::Decision::Publish(veil::deid::registry::Rule::DateToken { with, .. }) if with == &["ward_id"]),
        "{:?}",
        dt.decision
    );
    c.close().await.unwrap();
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}

/// Waits until the page (after a form's redirect) no longer has `css`.
async fn gone(c: &fantoccini::Client, css: &str) {
    let left = wait_for(Duration::from_secs(20), || async {
        c.find(Locator::Css(css)).await.is_err()
    })
    .await;
    assert!(left, "{css} is still on the page");
}
