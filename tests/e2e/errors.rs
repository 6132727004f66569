//! Errors sorted by what happens next, seen through the real binary's exit code: a definite
//! error (needs a person) exits 1 and names what went wrong; a transient one (retry) exits 75;
//! neither restarts forever nor prints a value.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Runs `veil stream --config …` until it exits (at most `limit`); returns the exit code and
/// what it printed. `during` runs once the process is up.
async fn run_stream<F, Fut>(config: &std::path::Path, limit: Duration, during: F) -> (i32, String)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let log = config.with_file_name("stream.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["stream", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,rdkafka=warn")
        // The exit-code contract: no in-process retry.
        .env("VEIL_MAX_RETRIES", "0")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    during().await;
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

fn replace_line(config: &std::path::Path, starts: &str, with: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && l.starts_with(starts) {
                done = true;
                with.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(done, "no line starting with {starts}");
    std::fs::write(config, out.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_on_the_source_exits_1_naming_what_was_denied() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE scratch (id int PRIMARY KEY, v text);
         INSERT INTO scratch VALUES (1, 'Maria Lopez 123-45-6789');
         CREATE ROLE veil_limited LOGIN REPLICATION PASSWORD 'limited-pw';",
    )
    .await
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = env.write_config(tmp.path());
    let limited = env.prod.dsn(PROD_DB).replace(
        "user=veil password=veil-test-pw",
        "user=veil_limited password=limited-pw",
    );
    replace_line(
        &config,
        "dsn = \"host=127.0.0.1",
        &format!("dsn = {limited:?}"),
    );
    // The [source] dsn is the first `dsn =` line; the vault and sink keep theirs.
    let (code, out) = run_stream(&config, Duration::from_secs(120), || async {}).await;
    assert_eq!(code, 1, "permission denied is definite (exit 1):\n{out}");
    assert!(out.contains("42501"), "the SQLSTATE is named:\n{out}");
    assert!(
        out.contains("permission denied") && out.contains("scratch"),
        "what was denied is named:\n{out}"
    );
    assert!(
        !out.contains("Maria") && !out.contains("123-45-6789"),
        "{out}"
    );
}

/// A message limit veil cannot work with is a usage error naming the option (exit 2); events
/// above a workable limit go in fragments (`always_on`); an audit record the broker will never
/// take stops the stream for a person (exit 1), naming the audit topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_limits_too_small_for_an_event_or_an_audit_record_stop_clearly() {
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = env.write_config(tmp.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[kafka.options]\n\"message.max.bytes\" = \"1000\"\n");
    std::fs::write(&config, text).unwrap();
    let (code, out) = run_stream(&config, Duration::from_secs(120), || async {}).await;
    assert_eq!(code, 2, "a message limit below 4096 bytes is usage:\n{out}");
    assert!(
        out.contains("message.max.bytes"),
        "the option is named:\n{out}"
    );

    // A registry so wide that the run-start record (every column's rule) cannot fit in 4096
    // bytes: the audit trail's records are not cut in pieces; the stream stops for a person.
    let mut wide = String::from("table = \"public.wide\"\n\n[columns]\n");
    for i in 0..200 {
        wide.push_str(&format!(
            "column_number_{i} = {{ type = \"text\", class = \"safe\", reason = \"wide\" }}\n"
        ));
    }
    std::fs::write(env.registry_dir().join("public.wide.toml"), wide).unwrap();
    let config = env.write_config(tmp.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[kafka.options]\n\"message.max.bytes\" = \"4096\"\n");
    std::fs::write(&config, text).unwrap();
    let (code, out) = run_stream(&config, Duration::from_secs(120), || async {}).await;
    assert_eq!(
        code, 1,
        "an audit record over the limit is definite:\n{out}"
    );
    assert!(out.contains("audit topic"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_exits_75() {
    let env = Env::start(&[]);
    veil::source::setup::run(&env.cfg).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = env.write_config(tmp.path());
    // A port nothing listens on.
    let dead = veil::devkit::testkit::free_port();
    replace_line(
        &config,
        "brokers = ",
        &format!("brokers = \"127.0.0.1:{dead}\""),
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[kafka.options]\n\"socket.timeout.ms\" = \"3000\"\n");
    std::fs::write(&config, text).unwrap();
    let (code, out) = run_stream(&config, Duration::from_secs(150), || async {}).await;
    assert_eq!(
        code, 75,
        "a broker that is down is transient (exit 75):\n{out}"
    );
}

#[test]
fn a_config_error_found_inside_run_exits_2() {
    // No [keys]: found by `veil stream` itself (not by the config parser), before it connects.
    let tmp = tempfile::tempdir().unwrap();
    let registry = tmp.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    let config = tmp.path().join("veil.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ndsn = \"host=127.0.0.1 port=1 user=x dbname=x\"\n\n[kafka]\nbrokers = \"127.0.0.1:1\"\n\n\
             [registry]\ndir = {registry:?}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["stream", "--config"])
        .arg(&config)
        .env_remove("VEIL_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no master key"), "{err}");
}
