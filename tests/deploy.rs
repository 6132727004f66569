//! The deployable stack's wiring, checked without a Docker engine (none runs here): the
//! Dockerfile's stages, every service of `docker-compose.yml` (image or build, command, config
//! mounts that exist and parse with veil's own config loader, ports, health checks, start
//! order, volumes), Prometheus scraping what veil listens on with veil's alert rules, Grafana
//! provisioned with the data source and the dashboard, the trust boundary (the dev side gets no
//! production secret), and `scripts/deploy-secrets` run for real.

use serde_norway::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    let mut v: Value = serde_norway::from_str(&read("docker-compose.yml")).unwrap();
    v.apply_merge().unwrap();
    v
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `(source, target)` of each volume entry (`source:target[:mode]`).
fn mounts(s: &Value) -> Vec<(String, String)> {
    strings(&s["volumes"])
        .iter()
        .map(|m| {
            let mut p = m.split(':');
            (
                p.next().unwrap_or("").to_owned(),
                p.next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The repo file mounted at `target` in service `s`.
fn mounted_file(s: &Value, target: &str) -> String {
    let (src, _) = mounts(s)
        .into_iter()
        .find(|(_, t)| t == target)
        .unwrap_or_else(|| panic!("nothing mounted at {target}"));
    src.trim_start_matches("./").to_owned()
}

fn env(s: &Value, key: &str) -> Option<String> {
    s["environment"]
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// `host=` of a libpq DSN.
fn dsn_field(dsn: &str, key: &str) -> String {
    dsn.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_owned()
}

fn config_of(s: &Value) -> (String, veil::config::Config) {
    let args = strings(&s["command"]);
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in the command");
    let file = mounted_file(s, &args[at + 1]);
    let text = read(&file);
    let cfg = veil::config::Config::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    (text, cfg)
}

fn port_of(listen: &str) -> String {
    listen.rsplit(':').next().unwrap().to_owned()
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_in_a_small_one() {
    let d = read("Dockerfile");
    let stages: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].starts_with("FROM rust:") && stages[0].contains(" AS build"));
    assert!(
        stages[1].contains("-slim"),
        "a small runtime image: {}",
        stages[1]
    );
    assert!(d.contains("protobuf-compiler"), "prost-build needs protoc");
    assert!(d.contains("cargo build --release --locked"));
    let runtime = &d[d.find(stages[1]).unwrap()..];
    assert!(runtime.contains("COPY --from=build /src/target/release/veil"));
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    assert!(
        user.trim() != "0" && user.trim() != "root",
        "runs as non-root"
    );
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/veil\"]"));
    let ignore = read(".dockerignore");
    for p in ["target/", ".git/", "deploy/secrets/"] {
        assert!(ignore.lines().any(|l| l == p), ".dockerignore has {p}");
    }
}

#[test]
fn every_service_is_wired() {
    let c = compose();
    let names: BTreeSet<String> = c["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = [
        "kafka",
        "prod",
        "dev",
        "veil-setup",
        "veil-stream",
        "veil-sink",
        "veil-review",
        "veil-audit-archive",
        "prometheus",
        "grafana",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);

    // Third-party images pinned; veil's services built from this repository.
    for s in ["kafka", "prod", "dev", "prometheus", "grafana"] {
        let image = service(&c, s)["image"].as_str().unwrap();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{s}: {image}"
        );
    }
    assert!(
        service(&c, "kafka")["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:")
    );
    let kafka_env = &service(&c, "kafka")["environment"];
    assert!(
        kafka_env["KAFKA_PROCESS_ROLES"]
            .as_str()
            .unwrap()
            .contains("controller"),
        "KRaft"
    );
    for s in ["prod", "dev"] {
        assert!(
            service(&c, s)["image"]
                .as_str()
                .unwrap()
                .starts_with("postgres:15")
        );
    }
    let prod_cmd = strings(&service(&c, "prod")["command"]).join(" ");
    assert!(prod_cmd.contains("wal_level=logical") && prod_cmd.contains("max_slot_wal_keep_size"));
    for s in [
        "veil-setup",
        "veil-stream",
        "veil-sink",
        "veil-review",
        "veil-audit-archive",
    ] {
        assert_eq!(
            service(&c, s)["build"].as_str(),
            Some("."),
            "{s} builds the Dockerfile"
        );
    }
    let first = |s: &str| strings(&service(&c, s)["command"]).join(" ");
    assert!(first("veil-setup").starts_with("setup --config"));
    assert!(first("veil-stream").starts_with("stream --config"));
    assert!(first("veil-sink").starts_with("sink --config"));
    assert!(first("veil-review").starts_with("registry serve --config"));
    assert!(
        strings(&service(&c, "veil-audit-archive")["entrypoint"])
            .join(" ")
            .contains("veil audit archive --config /etc/veil/veil.toml")
    );
    assert_eq!(
        service(&c, "veil-setup")["restart"].as_str(),
        Some("no"),
        "setup runs once"
    );

    // Health checks, and the order they give.
    for s in ["kafka", "prod", "dev", "veil-stream"] {
        assert!(
            service(&c, s)["healthcheck"]["test"].is_sequence(),
            "{s} has a health check"
        );
    }
    let cond = |s: &str, on: &str| {
        service(&c, s)["depends_on"][on]["condition"]
            .as_str()
            .unwrap_or_else(|| panic!("{s} depends on {on}"))
            .to_owned()
    };
    assert_eq!(cond("veil-setup", "prod"), "service_healthy");
    assert_eq!(
        cond("veil-stream", "veil-setup"),
        "service_completed_successfully"
    );
    assert_eq!(cond("veil-stream", "kafka"), "service_healthy");
    assert_eq!(cond("veil-sink", "dev"), "service_healthy");
    assert_eq!(cond("veil-sink", "kafka"), "service_healthy");
    assert_eq!(
        cond("veil-review", "veil-setup"),
        "service_completed_successfully"
    );

    // Every bind mount exists in the repository (the secrets are made by a script and ignored
    // by git); every named volume is declared.
    let declared: BTreeSet<String> = c["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for name in &names {
        for (src, target) in mounts(service(&c, name)) {
            assert!(target.starts_with('/'), "{name}: {target}");
            if let Some(rel) = src.strip_prefix("./") {
                if rel.starts_with("deploy/secrets") {
                    continue;
                }
                assert!(
                    root().join(rel).exists(),
                    "{name} mounts {rel}, which is missing"
                );
            } else {
                assert!(
                    declared.contains(&src),
                    "{name}: volume {src} is not declared"
                );
            }
        }
    }
    assert!(read(".gitignore").lines().any(|l| l == "/deploy/secrets/"));
}

#[test]
fn veil_configs_parse_and_point_at_the_stack() {
    let c = compose();
    let stream = service(&c, "veil-stream");
    let (text, cfg) = config_of(stream);
    assert_eq!(cfg.kafka.as_ref().unwrap().brokers, "kafka:9092");
    assert!(
        service(&c, "kafka")["environment"]["KAFKA_ADVERTISED_LISTENERS"]
            .as_str()
            .unwrap()
            .contains("kafka:9092")
    );
    // Production-side DSNs from the environment, at the prod service, in databases
    // prod-init.sql creates (the vault and the archive never in the published database).
    let init = read(&mounted_file(
        service(&c, "prod"),
        "/docker-entrypoint-initdb.d/10-veil.sql",
    ));
    for (var, db) in [
        ("VEIL_SOURCE_DSN", "clinic"),
        ("VEIL_VAULT_DSN", "veil_vault"),
        ("VEIL_AUDIT_ARCHIVE_DSN", "veil_audit"),
    ] {
        let dsn = env(stream, var).unwrap_or_else(|| panic!("{var}"));
        assert_eq!(dsn_field(&dsn, "host"), "prod", "{var}");
        assert_eq!(dsn_field(&dsn, "dbname"), db, "{var}");
        if db != "clinic" {
            assert!(
                init.contains(&format!("CREATE DATABASE {db};")),
                "prod-init.sql creates {db}"
            );
        }
    }
    // Secrets are files under the mounted secrets directory, never inline.
    assert!(text.contains("master_key_file = \"/etc/veil/secrets/master.key\""));
    let api = cfg.api.as_ref().unwrap();
    assert!(
        api.tls_cert.is_some() && api.tls_key.is_some(),
        "a non-loopback listen needs TLS"
    );
    assert!(
        api.reviewers_file
            .as_ref()
            .unwrap()
            .starts_with("/etc/veil/secrets")
    );
    // The review API and page are published on the port the config listens on.
    let review = service(&c, "veil-review");
    let (_, rcfg) = config_of(review);
    let port = port_of(&rcfg.api.as_ref().unwrap().listen);
    assert!(strings(&review["ports"]).contains(&format!("{port}:{port}")));

    // The sink: dev only, its own audit key, nothing of production.
    let sink = service(&c, "veil-sink");
    let (sink_text, sink_cfg) = config_of(sink);
    for section in ["[source]", "[keys]", "[vault]", "[api]"] {
        assert!(
            !sink_text.contains(section),
            "the sink's config has no {section}"
        );
    }
    assert!(sink_cfg.keys.master_key_file.is_none());
    let sink_dsn = env(sink, "VEIL_SINK_DSN").unwrap();
    assert_eq!(dsn_field(&sink_dsn, "host"), "dev");
    for var in [
        "VEIL_SOURCE_DSN",
        "VEIL_VAULT_DSN",
        "VEIL_MASTER_KEY",
        "VEIL_AUDIT_ARCHIVE_DSN",
    ] {
        assert!(env(sink, var).is_none(), "the sink gets no {var}");
    }
    for (src, _) in mounts(sink) {
        assert!(
            !src.contains("master.key") && src != "./deploy/secrets",
            "sink mounts {src}"
        );
        assert!(!src.contains("schema-registry"), "sink mounts {src}");
    }
}

#[test]
fn prometheus_and_grafana_see_what_veil_exposes() {
    let c = compose();
    let prom_svc = service(&c, "prometheus");
    let prom: Value = serde_norway::from_str(&read(&mounted_file(
        prom_svc,
        "/etc/prometheus/prometheus.yml",
    )))
    .unwrap();
    // The alert rules Prometheus loads are ops/prometheus-alerts.yml.
    let rule_files = strings(&prom["rule_files"]);
    assert_eq!(rule_files.len(), 1);
    assert_eq!(
        mounted_file(prom_svc, &rule_files[0]),
        "ops/prometheus-alerts.yml"
    );
    // It scrapes each veil process on the port its config listens on.
    let targets: Vec<String> = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|j| {
            j["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|s| strings(&s["targets"]))
        .collect();
    for s in ["veil-stream", "veil-sink"] {
        let (_, cfg) = config_of(service(&c, s));
        let port = port_of(cfg.metrics.listen.as_deref().expect("metrics.listen"));
        assert!(
            targets.contains(&format!("{s}:{port}")),
            "{s}:{port} in {targets:?}"
        );
    }
    assert!(strings(&prom_svc["ports"]).contains(&"9090:9090".to_owned()));

    // Grafana: the data source is that Prometheus, the dashboard is ops/grafana-dashboard.json.
    let g = service(&c, "grafana");
    let ds: Value = serde_norway::from_str(&read(&mounted_file(
        g,
        "/etc/grafana/provisioning/datasources/veil.yml",
    )))
    .unwrap();
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let boards: Value = serde_norway::from_str(&read(&mounted_file(
        g,
        "/etc/grafana/provisioning/dashboards/veil.yml",
    )))
    .unwrap();
    let dir = boards["providers"][0]["options"]["path"].as_str().unwrap();
    let dash = mounted_file(g, &format!("{dir}/veil.json"));
    assert_eq!(dash, "ops/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&read(&dash)).unwrap();
}

#[test]
fn deploy_secrets_makes_what_the_stack_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    let out = std::process::Command::new(root().join("scripts/deploy-secrets"))
        .arg("kim")
        .env("VEIL", env!("CARGO_BIN_EXE_veil"))
        .env("VEIL_SECRETS_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "master.key",
        "audit.key",
        "audit-sink.key",
        "api.crt",
        "api.key",
        "reviewers.toml",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    for k in ["master.key", "audit.key", "audit-sink.key"] {
        let hex = std::fs::read_to_string(dir.join(k)).unwrap();
        assert_eq!(hex.trim().len(), 64, "{k}");
    }
    // The token printed once maps to reviewer kim through reviewers.toml, as the API reads it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("veilr_"));
    let api = veil::config::ApiConfig {
        listen: "127.0.0.1:0".into(),
        reviewers: Default::default(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        reviewers_file: Some(dir.join("reviewers.toml")),
    };
    let digests = api.reviewer_digests().unwrap();
    assert_eq!(digests.len(), 1);
    assert_eq!(digests[0].0, "kim");
    assert_eq!(&digests[0].1, blake3::hash(token.as_bytes()).as_bytes());
    // A second run refuses to overwrite.
    let again = std::process::Command::new(root().join("scripts/deploy-secrets"))
        .env("VEIL", env!("CARGO_BIN_EXE_veil"))
        .env("VEIL_SECRETS_DIR", &dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
}
