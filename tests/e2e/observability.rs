//! Observability for real: `promtool` checks the alert rules; a real Prometheus (Debian's
//! package) scrapes a running `veil stream` and `veil sink` (the binary), a scanner hit holds the
//! stream, and the held alert of `ops/prometheus-alerts.yml` fires through Prometheus's API; then
//! every query of `ops/grafana-dashboard.json` is run against that Prometheus and returns data.

use std::time::{Duration, Instant};

use crate::common::*;

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let out = std::process::Command::new("/usr/bin/promtool")
        .arg("check")
        .arg("rules")
        .arg(repo("ops/prometheus-alerts.yml"))
        .output()
        .expect("/usr/bin/promtool (Debian's prometheus; scripts/install-deps installs it)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("SUCCESS"), "{said}");
}

/// A Prometheus server, stopped on drop.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn url_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// GET `path` from Prometheus's HTTP API; the JSON answer.
async fn api(addr: &str, path: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_veil_fires_the_held_alert_and_every_panel_has_data() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    veil::devkit::datagen::load(&prod, 40, 8).await.unwrap();
    prod.batch_execute(
        "CREATE TABLE contacts (id int PRIMARY KEY, label text);
         INSERT INTO contacts SELECT g, 'front desk ' || g FROM generate_series(1, 20) g;",
    )
    .await
    .unwrap();
    std::fs::write(
        env.registry_dir().join("public.contacts.toml"),
        "table = \"public.contacts\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\nlabel = { type = \"text\", class = \"safe\", reason = \"a desk label\" }\n",
    )
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    env.prod.create_db(AUDIT_DB).unwrap();

    // The binary, each process with its own metrics endpoint; every row scanned.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = std::fs::read_to_string(env.write_config(dir)).unwrap();
    let (sp, kp, pp) = (
        veil::devkit::testkit::free_port(),
        veil::devkit::testkit::free_port(),
        veil::devkit::testkit::free_port(),
    );
    let stream_cfg = dir.join("stream.toml");
    std::fs::write(
        &stream_cfg,
        format!(
            "{base}\n[scanner]\nin_flight_sample = 1.0\n\n[metrics]\nlisten = \"127.0.0.1:{sp}\"\n"
        ),
    )
    .unwrap();
    let sink_cfg = dir.join("sink.toml");
    std::fs::write(
        &sink_cfg,
        format!("{base}\n[metrics]\nlisten = \"127.0.0.1:{kp}\"\n"),
    )
    .unwrap();
    let log = dir.join("veil.log");
    let _stream = Proc::start("stream", &stream_cfg, &log);
    let _sink = Proc::start("sink", &sink_cfg, &log);

    // Prometheus with veil's own rules, scraping and evaluating every second.
    let prom_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_cfg = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\n\
             scrape_configs:\n  - job_name: veil\n    static_configs:\n      - targets: [\"127.0.0.1:{sp}\", \"127.0.0.1:{kp}\"]\n",
            repo("ops/prometheus-alerts.yml")
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{pp}");
    let _prom = Prometheus(
        std::process::Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("/usr/bin/prometheus (Debian's prometheus; scripts/install-deps installs it)"),
    );
    assert_dev_matches(&env, &["contacts", "patients"], Duration::from_secs(120)).await;
    let up = wait_for(Duration::from_secs(60), || async {
        api(&addr, "/api/v1/query?query=up").await.is_some_and(|v| {
            let r = v["data"]["result"].as_array().cloned().unwrap_or_default();
            r.len() == 2 && r.iter().all(|s| s["value"][1] == "1")
        })
    })
    .await;
    assert!(up, "Prometheus scrapes both veil processes");

    // Live changes, then a scanner hit in a safe column holds the stream; the held alert fires
    // (after its `for`).
    let mut c = env.prod_client().await;
    let mut rng = veil::devkit::datagen::Rng::new(3);
    let mut next = 700_000;
    for _ in 0..30 {
        veil::devkit::datagen::workload_step(&mut c, &mut rng, &mut next)
            .await
            .unwrap();
    }
    assert_dev_matches(&env, &["patients", "encounters"], Duration::from_secs(60)).await;
    prod.batch_execute("INSERT INTO contacts VALUES (21, 'reach me at jane.doe@mail.example')")
        .await
        .unwrap();
    let started = Instant::now();
    let fired = wait_for(Duration::from_secs(180), || async {
        api(&addr, "/api/v1/alerts").await.is_some_and(|v| {
            v["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == "VeilStreamHeld" && x["state"] == "firing")
            })
        })
    })
    .await;
    assert!(fired, "VeilStreamHeld fired through Prometheus");
    eprintln!(
        "FIGURES VeilStreamHeld firing {:.0} s after the hit",
        started.elapsed().as_secs_f64()
    );

    // Every panel of the dashboard has data.
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("ops/grafana-dashboard.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push((p["title"].as_str().unwrap_or("").to_owned(), e.to_owned()));
            }
        }
    }
    assert!(exprs.len() >= 10, "{} panel queries", exprs.len());
    let mut empty = Vec::new();
    for (title, e) in &exprs {
        let v = api(&addr, &format!("/api/v1/query?query={}", url_value(e)))
            .await
            .unwrap_or_default();
        assert_eq!(v["status"], "success", "{title}: {e}: {v}");
        if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            empty.push(format!("{title}: {e}"));
        }
    }
    assert!(empty.is_empty(), "panels without data: {empty:#?}");
}
