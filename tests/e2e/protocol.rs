//! The replication connection against real servers: trust, md5 and SCRAM-SHA-256 auth,
//! IDENTIFY_SYSTEM, slot creation with an exported snapshot, and the pgoutput decoder on the
//! bytes a real server sends (including a streamed large transaction, an aborted
//! subtransaction, TRUNCATE, logical messages and unchanged TOAST values).

use std::time::Duration;
use veil::devkit::testkit::{Auth, ClusterOptions, PgCluster};
use veil::source::conn::ReplicationConn;
use veil::source::pgoutput::{self, LogicalMessage, ReplicationMessage, TupleValue};

async fn identify(cluster: &PgCluster) -> Vec<Option<String>> {
    let cfg = veil::pg::tls::parse_dsn(&cluster.dsn("postgres")).unwrap();
    let mut conn = ReplicationConn::connect(&cfg)
        .await
        .expect("replication connect");
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    conn.terminate().await;
    rows.into_iter().next().unwrap()
}

#[tokio::test]
async fn auth_methods_trust_md5_scram() {
    for auth in [Auth::Trust, Auth::Md5, Auth::Scram] {
        let c = PgCluster::start_with(ClusterOptions {
            auth,
            ..Default::default()
        })
        .unwrap();
        let row = identify(&c).await;
        assert_eq!(row.len(), 4, "{auth:?}");
        assert_eq!(row[3].as_deref(), Some("postgres"), "{auth:?}");
        // A wrong password is a clear auth error, not a panic.
        if auth != Auth::Trust {
            let dsn = c
                .dsn("postgres")
                .replace(veil::devkit::testkit::TEST_PASSWORD, "wrong");
            let cfg = veil::pg::tls::parse_dsn(&dsn).unwrap();
            let err = ReplicationConn::connect(&cfg)
                .await
                .err()
                .expect("must fail");
            let msg = err.to_string();
            assert!(
                msg.contains("28P01") || msg.contains("password"),
                "{auth:?}: {msg}"
            );
            assert!(
                !msg.contains("wrong"),
                "the password must not be echoed: {msg}"
            );
        }
    }
}

/// Collects decoded messages until `n_commits` commits (plain or streamed) were seen.
async fn capture(conn: &mut ReplicationConn, n_commits: usize) -> Vec<(LogicalMessage, Vec<u8>)> {
    let mut out = Vec::new();
    let mut in_stream = false;
    let mut commits = 0;
    while commits < n_commits {
        let data = tokio::time::timeout(Duration::from_secs(30), conn.recv_copy())
            .await
            .expect("timed out waiting for replication data")
            .unwrap();
        match pgoutput::decode_replication(&data).unwrap() {
            ReplicationMessage::XLogData { data, .. } => {
                let m = pgoutput::decode_logical(data, in_stream).unwrap();
                match &m {
                    LogicalMessage::StreamStart { .. } => in_stream = true,
                    LogicalMessage::StreamStop => in_stream = false,
                    LogicalMessage::Commit { .. } | LogicalMessage::StreamCommit { .. } => {
                        commits += 1
                    }
                    _ => {}
                }
                out.push((m, data.to_vec()));
            }
            ReplicationMessage::Keepalive {
                reply_requested,
                wal_end,
                ..
            } => {
                if reply_requested {
                    conn.send_copy(&pgoutput::encode_status_update(wal_end, 0, 0, 0, false))
                        .await
                        .unwrap();
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn tls_sslmodes_on_replication_and_normal_connections() {
    let c = PgCluster::start_with(ClusterOptions {
        auth: Auth::Scram,
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let ca = c.ca_cert();
    let dsn = |host: &str, mode: &str, root: &std::path::Path| {
        format!(
            "host={host} port={} user=veil password={} dbname=postgres sslmode={mode} sslrootcert={}",
            c.port,
            veil::devkit::testkit::TEST_PASSWORD,
            root.display()
        )
    };
    // Encrypted and verified: both kinds of connection, and the server sees TLS.
    for (host, mode) in [
        ("localhost", "verify-full"),
        ("127.0.0.1", "verify-ca"),
        ("127.0.0.1", "require"),
    ] {
        let t = veil::pg::tls::parse_dsn(&dsn(host, mode, &ca)).unwrap();
        let mut r = ReplicationConn::connect(&t)
            .await
            .unwrap_or_else(|e| panic!("{host} {mode}: {e}"));
        let rows = r.simple_query("IDENTIFY_SYSTEM").await.unwrap();
        assert_eq!(rows[0][3].as_deref(), Some("postgres"));
        r.terminate().await;
        let client = veil::pg::tls::connect(&t)
            .await
            .unwrap_or_else(|e| panic!("{host} {mode}: {e}"));
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{host} {mode}");
    }
    // verify-full checks the host name: the certificate names localhost only.
    let t = veil::pg::tls::parse_dsn(&dsn("127.0.0.1", "verify-full", &ca)).unwrap();
    let e = ReplicationConn::connect(&t)
        .await
        .err()
        .expect("name mismatch must fail")
        .to_string();
    assert!(e.contains("TLS"), "{e}");
    assert!(veil::pg::tls::connect(&t).await.is_err());
    // A certificate from another CA is refused.
    let other = PgCluster::start_with(ClusterOptions {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let t = veil::pg::tls::parse_dsn(&dsn("localhost", "verify-full", &other.ca_cert())).unwrap();
    assert!(ReplicationConn::connect(&t).await.is_err());
    assert!(veil::pg::tls::connect(&t).await.is_err());
}

#[tokio::test]
async fn decoder_reads_real_pgoutput_v2() {
    let c = PgCluster::start_with(ClusterOptions {
        settings: vec![("logical_decoding_work_mem".into(), "64kB".into())],
        ..Default::default()
    })
    .unwrap();
    c.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, name text, big text); CREATE PUBLICATION p FOR ALL TABLES;",
    )
    .unwrap();
    let cfg = veil::pg::tls::parse_dsn(&c.dsn("postgres")).unwrap();
    let mut conn = ReplicationConn::connect(&cfg).await.unwrap();
    let slot = conn
        .simple_query("CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'nothing')")
        .await
        .unwrap();
    assert_eq!(slot[0][0].as_deref(), Some("s"));
    conn.start_replication(
        "START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '2', streaming 'on', messages 'true', publication_names '\"p\"')",
    )
    .await
    .unwrap();
    for sql in [
        "INSERT INTO t VALUES (1, '山田 太郎', repeat(md5('x'), 10000))",
        "UPDATE t SET name = 'Zoë' WHERE id = 1",
        "UPDATE t SET id = 2 WHERE id = 1",
        "SELECT pg_logical_emit_message(true, 'other_app', 'hello')",
        "BEGIN; INSERT INTO t SELECT g, 'n' || g, NULL FROM generate_series(10, 3000) g; \
         SAVEPOINT a; INSERT INTO t SELECT g, 'x', NULL FROM generate_series(5000, 7000) g; ROLLBACK TO a; COMMIT;",
        "TRUNCATE t",
    ] {
        c.psql("postgres", sql).unwrap();
    }
    let msgs = capture(&mut conn, 6).await;
    let kinds: Vec<&'static str> = msgs
        .iter()
        .map(|(m, _)| match m {
            LogicalMessage::Begin { .. } => "B",
            LogicalMessage::Commit { .. } => "C",
            LogicalMessage::Relation { .. } => "R",
            LogicalMessage::Insert { .. } => "I",
            LogicalMessage::Update { .. } => "U",
            LogicalMessage::Truncate { .. } => "T",
            LogicalMessage::Message { .. } => "M",
            LogicalMessage::StreamStart { .. } => "S",
            LogicalMessage::StreamStop => "E",
            LogicalMessage::StreamCommit { .. } => "c",
            LogicalMessage::StreamAbort { .. } => "A",
            _ => "?",
        })
        .collect();
    let joined: String = kinds.concat();
    // pgoutput sends a table's Relation again whenever its cache entry is invalidated (an
    // autovacuum's analyze under load, say): only the first one belongs to the sequence.
    let first = joined.find('R').expect("a Relation message");
    let sequence = format!(
        "{}{}",
        &joined[..=first],
        joined[first + 1..].replace('R', "")
    );
    assert!(sequence.starts_with("BRICBUCBUCBMC"), "{joined}");
    assert!(
        joined.contains('S') && joined.contains('E') && joined.contains('c'),
        "large transaction must stream: {joined}"
    );
    assert!(
        joined.contains('A'),
        "the rolled-back savepoint must produce a Stream Abort: {joined}"
    );
    assert!(
        joined.ends_with("BRTC") || joined.ends_with("BTC"),
        "{joined}"
    );
    // The first update leaves the toasted column unchanged.
    let upd = msgs.iter().find_map(|(m, _)| match m {
        LogicalMessage::Update { new, .. } => Some(new.clone()),
        _ => None,
    });
    assert_eq!(upd.unwrap().0[2], TupleValue::Unchanged);
    // The key update carries the old key.
    assert!(msgs.iter().any(|(m, _)| matches!(
        m,
        LogicalMessage::Update {
            old: Some(pgoutput::OldTuple::Key(_)),
            ..
        }
    )));
    // Write fixtures for the decoder's unit tests when asked to.
    if let Ok(dir) = std::env::var("VEIL_WRITE_FIXTURES") {
        let text: String = msgs
            .iter()
            .take(13)
            .map(|(_, b)| format!("{}\n", hex::encode(b)))
            .collect();
        std::fs::write(std::path::Path::new(&dir).join("pgoutput_v2.hex"), text).unwrap();
    }
    conn.terminate().await;
}
