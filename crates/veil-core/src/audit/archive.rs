//! The archive (`veil_audit.records` in PostgreSQL, JSON lines for cold storage) and what reads
//! it: `verify` and `query`.

use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::chain::{Problem, audit_key, audit_key_for, describe, read_heads, verify_with};
use super::error::AuditError;
use crate::proto;

/// The archive's schema (a Postgres schema on the audit side).
pub const ARCHIVE_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS veil_audit;
CREATE TABLE IF NOT EXISTS veil_audit.records (
    record_id   text        PRIMARY KEY,
    chain       text        NOT NULL,
    seq         bigint      NOT NULL,
    at          timestamptz NOT NULL,
    kind        text        NOT NULL,
    body        jsonb       NOT NULL,
    raw         bytea       NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chain, seq)
);
CREATE INDEX IF NOT EXISTS records_at ON veil_audit.records (at);
CREATE TABLE IF NOT EXISTS veil_audit.consumer (
    topic       text   PRIMARY KEY,
    next_offset bigint NOT NULL
);
";

pub(super) fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> AuditError {
    move |e| AuditError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

pub async fn archive_client(
    cfg: &crate::config::Config,
) -> Result<tokio_postgres::Client, AuditError> {
    let a = cfg
        .audit
        .as_ref()
        .ok_or_else(|| AuditError::Config("missing [audit] section".into()))?;
    let dsn = a
        .archive_dsn
        .as_ref()
        .ok_or_else(|| AuditError::Config("missing [audit] archive_dsn".into()))?;
    let target = dsn.parse().map_err(|e| AuditError::Config(e.to_string()))?;
    let c = crate::pg::tls::connect(&target)
        .await
        .map_err(AuditError::Connect)?;
    c.batch_execute(ARCHIVE_SQL).await.map_err(pg("install"))?;
    Ok(c)
}

/// What one `archive` run did.
#[derive(Debug, Default)]
pub struct ArchiveReport {
    pub consumed: u64,
    pub inserted: u64,
    pub expired: u64,
    pub exported: u64,
}

/// Consumes the audit topic (from the archive's stored offset to the end) into the archive,
/// applies the retention, and optionally exports every archived record as JSON lines, one file
/// per day, for cold storage.
pub async fn archive(
    cfg: &crate::config::Config,
    export: Option<&Path>,
) -> Result<ArchiveReport, AuditError> {
    let a = cfg
        .audit
        .clone()
        .ok_or_else(|| AuditError::Config("missing [audit] section".into()))?;
    let kafka = cfg
        .kafka()
        .map_err(|e| AuditError::Config(e.to_string()))?
        .clone();
    let client = archive_client(cfg).await?;
    let start: i64 = client
        .query_opt(
            "SELECT next_offset FROM veil_audit.consumer WHERE topic = $1",
            &[&a.topic],
        )
        .await
        .map_err(pg("read offset"))?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let topic = a.topic.clone();
    let fetched = tokio::task::spawn_blocking(move || fetch_all(&kafka, &topic, start))
        .await
        .map_err(|e| AuditError::Topic(format!("reader task: {e}")))??;
    let mut report = ArchiveReport {
        consumed: fetched.len() as u64,
        ..Default::default()
    };
    let mut next = start;
    for (offset, payload) in &fetched {
        next = next.max(offset + 1);
        let r = proto::AuditRecord::decode(payload.as_slice())
            .map_err(|e| AuditError::Topic(format!("offset {offset}: not an audit record: {e}")))?;
        let (kind, body) = describe(&r);
        let n = client
            .execute(
                "INSERT INTO veil_audit.records (record_id, chain, seq, at, kind, body, raw) \
                 VALUES ($1, $2, $3, to_timestamp($4::float8 / 1e6), $5, $6::text::jsonb, $7) ON CONFLICT DO NOTHING",
                &[
                    &r.record_id,
                    &r.chain,
                    &(r.seq as i64),
                    &(r.time_us as f64),
                    &kind,
                    &body.to_string(),
                    payload,
                ],
            )
            .await
            .map_err(pg("insert record"))?;
        report.inserted += n;
    }
    client
        .execute(
            "INSERT INTO veil_audit.consumer (topic, next_offset) VALUES ($1, $2) \
             ON CONFLICT (topic) DO UPDATE SET next_offset = EXCLUDED.next_offset",
            &[&a.topic, &next],
        )
        .await
        .map_err(pg("store offset"))?;
    report.expired = client
        .execute(
            "DELETE FROM veil_audit.records WHERE at < now() - make_interval(days => $1)",
            &[&(a.retention_days as i32)],
        )
        .await
        .map_err(pg("retention"))?;
    if let Some(dir) = export {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::Journal {
            path: dir.to_owned(),
            source,
        })?;
        let rows = client
            .query(
                "SELECT to_char(at, 'YYYY-MM-DD'), json_build_object('record_id', record_id, 'chain', chain, 'seq', seq, \
                 'at', at, 'kind', kind, 'body', body, 'raw', encode(raw, 'base64'))::text \
                 FROM veil_audit.records ORDER BY chain, seq",
                &[],
            )
            .await
            .map_err(pg("export"))?;
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for r in rows {
            let day: String = r.get(0);
            let line: String = r.get(1);
            let f = files.entry(day).or_default();
            f.push_str(&line);
            f.push('\n');
            report.exported += 1;
        }
        for (day, text) in files {
            let p = dir.join(format!("veil-audit-{day}.jsonl"));
            std::fs::write(&p, text).map_err(|source| AuditError::Journal { path: p, source })?;
        }
    }
    Ok(report)
}

/// Every message of partition 0 from `start` to the end, as (offset, payload).
fn fetch_all(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    start: i64,
) -> Result<Vec<(i64, Vec<u8>)>, AuditError> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let kerr = |e: rdkafka::error::KafkaError| AuditError::Kafka(crate::kafka::error::kerr(e));
    let consumer: BaseConsumer = crate::kafka::client::client_config(kafka)
        .set("group.id", "veil-audit-archive")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kerr)?;
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, std::time::Duration::from_secs(10))
        .map_err(kerr)?;
    let mut out = Vec::new();
    if high <= start {
        return Ok(out);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(start))
        .map_err(kerr)?;
    consumer.assign(&tpl).map_err(kerr)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = start - 1;
    while last < high - 1 {
        if std::time::Instant::now() > deadline {
            return Err(AuditError::Kafka(crate::kafka::error::BrokerError::local(
                format!("reached offset {last} of {high} within 60 s"),
            )));
        }
        match consumer.poll(std::time::Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = m.offset();
                out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
            }
            Some(Err(e)) => return Err(kerr(e)),
            None => {}
        }
    }
    Ok(out)
}

/// All archived records, decoded from their raw form.
async fn archived(client: &tokio_postgres::Client) -> Result<Vec<proto::AuditRecord>, AuditError> {
    let rows = client
        .query(
            "SELECT record_id, raw FROM veil_audit.records ORDER BY chain, seq",
            &[],
        )
        .await
        .map_err(pg("read records"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.get(0);
        let raw: Vec<u8> = r.get(1);
        let mut rec =
            proto::AuditRecord::decode(raw.as_slice()).map_err(|e| AuditError::Corrupt {
                path: PathBuf::from("veil_audit.records"),
                problem: format!("record {id}: {e}"),
            })?;
        // The row's id is what people cite; a row whose raw record says otherwise is altered.
        if rec.record_id != id {
            rec.hmac = format!("row {id} holds record {}", rec.record_id);
        }
        out.push(rec);
    }
    Ok(out)
}

/// `veil audit verify`: the chain check over the archive (and the journal's heads when the
/// journal directory is readable here).
pub async fn verify_archive(cfg: &crate::config::Config) -> Result<Vec<Problem>, AuditError> {
    let default_key = audit_key(cfg).map_err(|e| AuditError::Config(e.to_string()))?;
    let sink_key = audit_key_for(cfg, "sink/").map_err(|e| AuditError::Config(e.to_string()))?;
    let key_for = move |chain: &str| {
        if chain.starts_with("sink/") {
            sink_key.clone()
        } else {
            default_key.clone()
        }
    };
    let client = archive_client(cfg).await?;
    let records = archived(&client).await?;
    let heads = cfg
        .audit
        .as_ref()
        .map(|a| read_heads(&a.journal_dir).unwrap_or_default())
        .unwrap_or_default();
    let mut problems = verify_with(&key_for, &records, &heads);
    // The archive's body column must say what the raw record says.
    let rows = client
        .query("SELECT record_id, body::text FROM veil_audit.records", &[])
        .await
        .map_err(pg("read bodies"))?;
    let raw: BTreeMap<&str, &proto::AuditRecord> =
        records.iter().map(|r| (r.record_id.as_str(), r)).collect();
    for row in rows {
        let id: String = row.get(0);
        let body: String = row.get(1);
        if let Some(r) = raw.get(id.as_str()) {
            let expected: serde_json::Value = describe(r).1;
            let actual: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if expected != actual {
                problems.push(Problem {
                    chain: r.chain.clone(),
                    seq: r.seq,
                    record_id: id.clone(),
                    problem: "the archived body differs from the sealed record (altered)".into(),
                });
            }
        }
    }
    problems.sort_by(|a, b| (&a.chain, a.seq).cmp(&(&b.chain, b.seq)));
    Ok(problems)
}

/// `veil audit query`: records between two times (RFC 3339 or dates), optionally mentioning a
/// table.
pub async fn query(
    cfg: &crate::config::Config,
    from: &str,
    to: &str,
    table: Option<&str>,
) -> Result<Vec<serde_json::Value>, AuditError> {
    let client = archive_client(cfg).await?;
    client
        .query_one(
            "SELECT $1::text::timestamptz, $2::text::timestamptz",
            &[&from, &to],
        )
        .await
        .map_err(|_| {
            AuditError::Config(format!(
                "--from {from:?} / --to {to:?}: expected dates (YYYY-MM-DD) or RFC 3339 times"
            ))
        })?;
    let rows = client
        .query(
            "SELECT json_build_object('record_id', record_id, 'at', at, 'kind', kind, 'body', body)::text \
             FROM veil_audit.records WHERE at >= $1::text::timestamptz AND at < $2::text::timestamptz \
             AND ($3::text IS NULL OR body::text LIKE '%\"' || $3 || '\"%') ORDER BY at, chain, seq",
            &[&from, &to, &table],
        )
        .await
        .map_err(pg("query"))?;
    Ok(rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
        .collect())
}
