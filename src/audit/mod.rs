//! The audit trail: PHI-free records (run start/stop, per-window summaries, holds, decisions,
//! errors) on their own compacted Kafka topic, and the archive the regulator's questions are
//! answered from.
//!
//! - One sequencing writer per chain (`stream/<source id>` for the stream). Every record is
//!   sealed with HMAC-SHA256 over its content and the previous record's HMAC, with the audit key
//!   (its own key, never the tokenization key), appended to a local journal and fsynced
//!   **before** it is sent; the journal also keeps the chain head (`<chain>.head`), so a deleted
//!   tail in the archive is caught.
//! - Records are keyed by `<chain>/<seq>`: compaction keeps every distinct record and a retried
//!   send replaces only its twin.
//! - `veil audit archive` copies the topic into a Postgres schema (`veil_audit.records`) with a
//!   retention, and exports JSON lines for cold storage; `verify`, `query` and `prove` read it.
//!
//! Nothing here ever holds a row value: records carry table and column names, rules, counts,
//! LSNs, detector names and registry versions.

use hmac::{KeyInit, Mac};
use prost::Message;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::proto::{self, audit_record::Body};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error("audit journal {path}: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit journal {path}: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("audit: {0}")]
    Config(String),
    #[error("audit archive ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error("audit topic: {0}")]
    Kafka(String),
}

/// The audit key (32 bytes), never printed.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(***)")
    }
}

impl AuditKey {
    pub fn new(b: [u8; 32]) -> Self {
        AuditKey(b)
    }

    pub fn from_hex(text: &str) -> Result<Self, AuditError> {
        let b = hex::decode(text.trim())
            .map_err(|_| AuditError::Config("audit key is not hex (64 hex characters)".into()))?;
        Ok(AuditKey(b.try_into().map_err(|_| {
            AuditError::Config("audit key must be 32 bytes (64 hex characters)".into())
        })?))
    }

    /// HMAC of a record encoded with its `hmac` field empty.
    pub fn mac(&self, record: &proto::AuditRecord) -> String {
        let mut r = record.clone();
        r.hmac.clear();
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("any key length");
        m.update(&r.encode_to_vec());
        hex::encode(m.finalize().into_bytes())
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn file_name(chain: &str) -> String {
    chain
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The local, append-only journal of one chain: length-prefixed records, fsynced per append,
/// and the chain head beside it.
pub struct Journal {
    path: PathBuf,
    head_path: PathBuf,
    file: std::fs::File,
    chain: String,
    next_seq: u64,
    last_hmac: String,
}

impl Journal {
    /// Opens (or creates) the journal of `chain` in `dir` and recovers the chain's position.
    /// Returns the journal and every record it holds.
    pub fn open(dir: &Path, chain: &str) -> Result<(Journal, Vec<proto::AuditRecord>), AuditError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Journal { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("{}.journal", file_name(chain)));
        let head_path = dir.join(format!("{}.head", file_name(chain)));
        let mut records = Vec::new();
        if path.exists() {
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(&path))?;
            let mut at = 0;
            while at + 4 <= bytes.len() {
                let n = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                    as usize;
                if at + 4 + n > bytes.len() {
                    // A torn last append (crash mid-write): the record was never sent.
                    tracing::warn!(journal = %path.display(), "ignoring a torn last journal record");
                    break;
                }
                let r = proto::AuditRecord::decode(&bytes[at + 4..at + 4 + n]).map_err(|e| {
                    AuditError::Corrupt {
                        path: path.clone(),
                        problem: format!("record at byte {at}: {e}"),
                    }
                })?;
                records.push(r);
                at += 4 + n;
            }
            // Rewrite without a torn tail.
            if at != bytes.len() {
                std::fs::write(&path, &bytes[..at]).map_err(io(&path))?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let (next_seq, last_hmac) = records
            .last()
            .map(|r| (r.seq + 1, r.hmac.clone()))
            .unwrap_or((1, String::new()));
        Ok((
            Journal {
                path,
                head_path,
                file,
                chain: chain.to_owned(),
                next_seq,
                last_hmac,
            },
            records,
        ))
    }

    /// Seals `body` as the chain's next record and stores it durably (fsync) before returning.
    pub fn append(&mut self, key: &AuditKey, body: Body) -> Result<proto::AuditRecord, AuditError> {
        let mut r = proto::AuditRecord {
            record_id: format!("{}/{}", self.chain, self.next_seq),
            chain: self.chain.clone(),
            seq: self.next_seq,
            time_us: now_us(),
            veil_version: env!("CARGO_PKG_VERSION").into(),
            prev_hmac: self.last_hmac.clone(),
            hmac: String::new(),
            body: Some(body),
        };
        r.hmac = key.mac(&r);
        let bytes = r.encode_to_vec();
        let io = |source| AuditError::Journal {
            path: self.path.clone(),
            source,
        };
        self.file
            .write_all(&(bytes.len() as u32).to_be_bytes())
            .map_err(io)?;
        self.file.write_all(&bytes).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.next_seq += 1;
        self.last_hmac = r.hmac.clone();
        // The chain head, outside the archive.
        let head = serde_json::json!({ "chain": r.chain, "seq": r.seq, "hmac": r.hmac, "time_us": r.time_us });
        let tmp = self.head_path.with_extension("head.tmp");
        std::fs::write(&tmp, head.to_string())
            .and_then(|_| std::fs::rename(&tmp, &self.head_path))
            .map_err(|source| AuditError::Journal {
                path: self.head_path.clone(),
                source,
            })?;
        Ok(r)
    }
}

/// The chain's writer: journal first (durable), then the compacted audit topic.
pub struct AuditWriter {
    journal: Journal,
    key: AuditKey,
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    acked_path: PathBuf,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditWriter({})", self.journal.chain)
    }
}

impl AuditWriter {
    /// Opens the chain's journal, makes sure the compacted topic exists, and sends again what
    /// the journal holds past the last acknowledged record (a crash between journal and send).
    pub async fn open(
        cfg: &crate::config::AuditConfig,
        key: AuditKey,
        kafka: &crate::config::KafkaConfig,
        chain: &str,
    ) -> Result<Self, AuditError> {
        crate::kafka::admin::ensure_topic(kafka, &cfg.topic, true)
            .await
            .map_err(|e| AuditError::Kafka(e.to_string()))?;
        let producer: rdkafka::producer::FutureProducer = crate::kafka::client::client_config_with(
            kafka,
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
        .create()
        .map_err(|e| AuditError::Kafka(e.to_string()))?;
        let (journal, records) = Journal::open(&cfg.journal_dir, chain)?;
        let acked_path = cfg.journal_dir.join(format!("{}.acked", file_name(chain)));
        let acked: u64 = std::fs::read_to_string(&acked_path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let mut w = AuditWriter {
            journal,
            key,
            producer,
            topic: cfg.topic.clone(),
            acked_path,
        };
        for r in records.iter().filter(|r| r.seq > acked) {
            w.send(r).await?;
        }
        Ok(w)
    }

    async fn send(&mut self, r: &proto::AuditRecord) -> Result<(), AuditError> {
        let payload = r.encode_to_vec();
        let rec = rdkafka::producer::FutureRecord::to(&self.topic)
            .key(&r.record_id)
            .payload(&payload)
            .partition(0);
        self.producer
            .send(rec, std::time::Duration::from_secs(30))
            .await
            .map_err(|(e, _)| AuditError::Kafka(e.to_string()))?;
        let _ = std::fs::write(&self.acked_path, r.seq.to_string());
        Ok(())
    }

    /// Seals, journals (fsync) and sends one record.
    pub async fn record(&mut self, body: Body) -> Result<proto::AuditRecord, AuditError> {
        let r = self.journal.append(&self.key, body)?;
        self.send(&r).await?;
        Ok(r)
    }
}

/// A chain head as the journal keeps it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Head {
    pub chain: String,
    pub seq: u64,
    pub hmac: String,
}

/// Reads every `*.head` file of a journal directory.
pub fn read_heads(dir: &Path) -> Result<Vec<Head>, AuditError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| AuditError::Journal {
        path: dir.to_owned(),
        source,
    })?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "head") {
            let text = std::fs::read_to_string(&p).map_err(|source| AuditError::Journal {
                path: p.clone(),
                source,
            })?;
            out.push(
                serde_json::from_str(&text).map_err(|e| AuditError::Corrupt {
                    path: p.clone(),
                    problem: e.to_string(),
                })?,
            );
        }
    }
    Ok(out)
}

/// What is wrong with a chain, naming the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub chain: String,
    pub seq: u64,
    pub record_id: String,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain {} record {} (seq {}): {}",
            self.chain, self.record_id, self.seq, self.problem
        )
    }
}

/// Checks chains: every record's HMAC, the links between records, contiguous sequence numbers
/// from 1, and (when heads are given) that no tail is missing. `records` may be in any order.
pub fn verify(key: &AuditKey, records: &[proto::AuditRecord], heads: &[Head]) -> Vec<Problem> {
    verify_with(&|_| key.clone(), records, heads)
}

/// [`verify`] with a key per chain (the sink signs with its own key).
pub fn verify_with(
    key_for: &dyn Fn(&str) -> AuditKey,
    records: &[proto::AuditRecord],
    heads: &[Head],
) -> Vec<Problem> {
    let mut chains: BTreeMap<&str, Vec<&proto::AuditRecord>> = BTreeMap::new();
    for r in records {
        chains.entry(&r.chain).or_default().push(r);
    }
    let mut problems = Vec::new();
    for (chain, mut rs) in chains {
        let key = key_for(chain);
        rs.sort_by_key(|r| r.seq);
        let mut expect_seq = 1;
        let mut prev = String::new();
        for r in rs {
            let p = |problem: String| Problem {
                chain: chain.to_owned(),
                seq: r.seq,
                record_id: r.record_id.clone(),
                problem,
            };
            if r.seq != expect_seq {
                problems.push(p(format!(
                    "sequence gap: expected seq {expect_seq} (a record is missing or inserted)"
                )));
            } else if r.prev_hmac != prev {
                problems.push(p(
                    "does not link to the previous record (inserted or reordered)".into(),
                ));
            }
            if key.mac(r) != r.hmac {
                problems.push(p("HMAC mismatch: the record was altered".into()));
            }
            if r.record_id != format!("{}/{}", r.chain, r.seq) {
                problems.push(p("record id does not match chain and seq".into()));
            }
            expect_seq = r.seq + 1;
            prev = r.hmac.clone();
        }
        if let Some(h) = heads.iter().find(|h| h.chain == chain) {
            if h.seq >= expect_seq {
                problems.push(Problem {
                    chain: chain.to_owned(),
                    seq: expect_seq,
                    record_id: format!("{chain}/{expect_seq}"),
                    problem: format!(
                        "truncated: the chain head says seq {}, the archive ends at {}",
                        h.seq,
                        expect_seq - 1
                    ),
                });
            } else if h.seq + 1 == expect_seq && h.hmac != prev {
                problems.push(Problem {
                    chain: chain.to_owned(),
                    seq: h.seq,
                    record_id: format!("{chain}/{}", h.seq),
                    problem: "the last record differs from the chain head".into(),
                });
            }
        }
    }
    for h in heads {
        if !records.iter().any(|r| r.chain == h.chain) {
            problems.push(Problem {
                chain: h.chain.clone(),
                seq: 1,
                record_id: format!("{}/1", h.chain),
                problem: format!("the archive holds none of the chain's {} records", h.seq),
            });
        }
    }
    problems
}

/// A short PHI-free JSON description of a record (for the archive's `body` column and queries).
pub fn describe(r: &proto::AuditRecord) -> (&'static str, serde_json::Value) {
    use serde_json::json;
    match &r.body {
        Some(Body::RunStart(b)) => (
            "run_start",
            json!({ "run_id": format!("{:x}", b.run_id), "source_id": b.source_id, "epoch": b.epoch,
                    "config_hash": b.config_hash, "registry_version": b.registry_version, "key_id": b.key_id,
                    "rules": b.rules.iter().map(|c| json!({"table": c.table, "column": c.column, "rule": c.rule, "profile": c.profile})).collect::<Vec<_>>() }),
        ),
        Some(Body::RunStop(b)) => (
            "run_stop",
            json!({ "run_id": format!("{:x}", b.run_id), "reason": b.reason }),
        ),
        Some(Body::Window(w)) => (
            "window",
            json!({ "window_id": w.window_id, "run_id": format!("{:x}", w.run_id), "epoch": w.epoch,
                    "start_us": w.start_us, "end_us": w.end_us,
                    "first_lsn": crate::source::pgoutput::fmt_lsn(w.first_lsn), "last_lsn": crate::source::pgoutput::fmt_lsn(w.last_lsn),
                    "registry_version": w.registry_version,
                    "rows": w.rows.iter().map(|o| json!({"table": o.table, "op": o.op, "rows": o.rows})).collect::<Vec<_>>(),
                    "rules": w.rules.iter().map(|o| json!({"table": o.table, "column": o.column, "rule": o.rule, "values": o.values})).collect::<Vec<_>>(),
                    "scanned_rows": w.scanned_rows,
                    "scanner": w.scanner.iter().map(|s| json!({"table": s.table, "column": s.column, "detector": s.detector, "hits": s.hits})).collect::<Vec<_>>() }),
        ),
        Some(Body::Hold(h)) => (
            "hold",
            json!({ "table": h.table, "column": h.column, "type": h.type_name, "reason": h.reason,
                    "registry_version": h.registry_version, "cause": h.cause }),
        ),
        Some(Body::Decision(d)) => (
            "decision",
            json!({ "table": d.table, "column": d.column, "class": d.class, "rule": d.rule,
                    "reviewer": d.reviewer, "reviewed_at": d.reviewed_at, "reason": d.reason,
                    "registry_before": d.registry_before, "registry_after": d.registry_after }),
        ),
        Some(Body::Reveal(v)) => (
            "reveal",
            json!({ "os_user": v.os_user, "db_user": v.db_user, "ticket": v.ticket, "domain": v.domain,
                    "token_hash": v.token_hash, "found": v.found }),
        ),
        Some(Body::Error(e)) => ("error", json!({ "message": e.message })),
        Some(Body::Applied(a)) => (
            "applied",
            json!({ "source_id": a.source_id, "epoch": a.epoch, "last_commit_lsn": crate::source::pgoutput::fmt_lsn(a.last_commit_lsn),
                    "transactions": a.transactions, "rows": a.rows, "dataset_id": a.dataset_id }),
        ),
        Some(Body::Reclassified(c)) => (
            "reclassified",
            json!({ "table": c.table, "column": c.column, "rule_before": c.rule_before,
                    "rule_after": c.rule_after, "action": c.action }),
        ),
        None => ("empty", json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u64) -> Body {
        Body::RunStop(proto::RunStop {
            run_id: n,
            reason: "test".into(),
        })
    }

    #[test]
    fn chain_catches_altered_inserted_missing_and_truncated_records() {
        let d = tempfile::tempdir().unwrap();
        let key = AuditKey::new([1; 32]);
        let (mut j, old) = Journal::open(d.path(), "stream/1/clinic").unwrap();
        assert!(old.is_empty());
        let rs: Vec<_> = (0..5).map(|i| j.append(&key, body(i)).unwrap()).collect();
        let heads = read_heads(d.path()).unwrap();
        assert_eq!(heads[0].seq, 5);
        assert!(verify(&key, &rs, &heads).is_empty());
        // Reopen: the chain continues.
        drop(j);
        let (mut j, old) = Journal::open(d.path(), "stream/1/clinic").unwrap();
        assert_eq!(old.len(), 5);
        let r6 = j.append(&key, body(6)).unwrap();
        assert_eq!(r6.seq, 6);
        assert_eq!(r6.prev_hmac, rs[4].hmac);
        let mut all = rs.clone();
        all.push(r6);
        let heads = read_heads(d.path()).unwrap();
        assert!(verify(&key, &all, &heads).is_empty());
        // Altered.
        let mut bad = all.clone();
        if let Some(Body::RunStop(s)) = bad[2].body.as_mut() {
            s.reason = "edited".into();
        }
        let p = verify(&key, &bad, &heads);
        assert_eq!(p[0].seq, 3, "{p:?}");
        assert!(p[0].problem.contains("altered"));
        // Missing.
        let mut gap = all.clone();
        gap.remove(3);
        assert!(
            verify(&key, &gap, &heads)
                .iter()
                .any(|p| p.seq == 5 && p.problem.contains("gap"))
        );
        // Inserted (a forged record with a valid-looking seq but the wrong link).
        let mut ins = all.clone();
        ins[2].prev_hmac = "00".repeat(32);
        ins[2].hmac = key.mac(&ins[2]);
        assert!(
            verify(&key, &ins, &heads)
                .iter()
                .any(|p| p.seq == 3 && p.problem.contains("link"))
        );
        // Truncated tail: only the head knows.
        let cut = &all[..4];
        assert!(verify(&key, cut, &[]).is_empty());
        let p = verify(&key, cut, &heads);
        assert!(p.iter().any(|p| p.problem.contains("truncated")), "{p:?}");
        // A different key verifies nothing.
        assert!(!verify(&AuditKey::new([2; 32]), &all, &heads).is_empty());
        assert_eq!(format!("{key:?}"), "AuditKey(***)");
    }
}

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

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> AuditError {
    move |e| AuditError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

async fn archive_client(cfg: &crate::config::Config) -> Result<tokio_postgres::Client, AuditError> {
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
        .map_err(|e| AuditError::Kafka(e.to_string()))??;
    let mut report = ArchiveReport {
        consumed: fetched.len() as u64,
        ..Default::default()
    };
    let mut next = start;
    for (offset, payload) in &fetched {
        next = next.max(offset + 1);
        let r = proto::AuditRecord::decode(payload.as_slice()).map_err(|e| {
            AuditError::Kafka(format!(
                "audit topic offset {offset}: not an audit record: {e}"
            ))
        })?;
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
    let kerr = |e: rdkafka::error::KafkaError| AuditError::Kafka(e.to_string());
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
            return Err(AuditError::Kafka(format!(
                "audit topic: reached offset {last} of {high} within 60 s"
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
    let default_key = cfg
        .audit_key()
        .map_err(|e| AuditError::Config(e.to_string()))?;
    let sink_key = cfg
        .audit_key_for("sink/")
        .map_err(|e| AuditError::Config(e.to_string()))?;
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

/// `veil audit prove --date D`: what made up dev on that day, from the archive alone.
pub async fn prove(
    cfg: &crate::config::Config,
    date: &str,
) -> Result<serde_json::Value, AuditError> {
    use serde_json::json;
    let well_formed = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
        && crate::deid::tokenize::shift_date_text(date, 0).as_deref() == Some(date);
    if !well_formed {
        return Err(AuditError::Config(format!(
            "--date {date:?}: expected a calendar date YYYY-MM-DD"
        )));
    }
    let client = archive_client(cfg).await?;
    let day = |sql: &str| sql.replace("$D", "$1::text::date");
    let q = |rows: Vec<tokio_postgres::Row>| -> Vec<serde_json::Value> {
        rows.iter()
            .filter_map(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
            .collect()
    };
    let windows = q(client
        .query(
            &day("SELECT json_build_object('record_id', record_id, 'at', at, 'window', body)::text FROM veil_audit.records \
                  WHERE kind = 'window' AND at >= $D AND at < $D + 1 ORDER BY at"),
            &[&date],
        )
        .await
        .map_err(pg("windows"))?);
    // The runs that produced dev that day: every run start up to the end of the day, latest
    // per chain first.
    let runs = q(client
        .query(
            &day("SELECT json_build_object('record_id', record_id, 'at', at, 'run', body)::text FROM veil_audit.records \
                  WHERE kind = 'run_start' AND at < $D + 1 ORDER BY at DESC"),
            &[&date],
        )
        .await
        .map_err(pg("runs"))?);
    let events = q(client
        .query(
            &day("SELECT json_build_object('record_id', record_id, 'at', at, 'kind', kind, 'body', body)::text FROM veil_audit.records \
                  WHERE kind IN ('hold', 'decision', 'reveal', 'error', 'run_stop', 'reclassified') AND at >= $D AND at < $D + 1 ORDER BY at"),
            &[&date],
        )
        .await
        .map_err(pg("events"))?);
    // The sink's confirmations up to the end of the day: a window is confirmed when dev
    // committed its last LSN (same epoch).
    let applied = q(client
        .query(
            &day(
                "SELECT body::text FROM veil_audit.records WHERE kind = 'applied' AND at < $D + 2",
            ),
            &[&date],
        )
        .await
        .map_err(pg("confirmations"))?);
    let parse_lsn = |v: &serde_json::Value| {
        v.as_str()
            .and_then(crate::source::pgoutput::parse_lsn)
            .unwrap_or(0)
    };
    let mut windows = windows;
    let mut confirmed = 0;
    for w in windows.iter_mut() {
        let last = parse_lsn(&w["window"]["last_lsn"]);
        let epoch = w["window"]["epoch"].as_u64().unwrap_or(0);
        let ok = applied.iter().any(|a| {
            a["epoch"].as_u64() == Some(epoch) && parse_lsn(&a["last_commit_lsn"]) >= last
        });
        if ok {
            confirmed += 1;
        }
        w["confirmed_by_sink"] = json!(ok);
    }
    let mut hits = Vec::new();
    let mut rows_total = 0u64;
    let mut registry_versions = std::collections::BTreeSet::new();
    let mut rules: BTreeMap<String, String> = BTreeMap::new();
    for w in &windows {
        let b = &w["window"];
        registry_versions.insert(b["registry_version"].as_str().unwrap_or("").to_owned());
        for r in b["rows"].as_array().into_iter().flatten() {
            rows_total += r["rows"].as_u64().unwrap_or(0);
        }
        for r in b["rules"].as_array().into_iter().flatten() {
            rules.insert(
                format!(
                    "{}.{}",
                    r["table"].as_str().unwrap_or(""),
                    r["column"].as_str().unwrap_or("")
                ),
                r["rule"].as_str().unwrap_or("").to_owned(),
            );
        }
        for s in b["scanner"].as_array().into_iter().flatten() {
            hits.push(s.clone());
        }
    }
    let scanned: u64 = windows
        .iter()
        .map(|w| w["window"]["scanned_rows"].as_u64().unwrap_or(0))
        .sum();
    let problems = verify_archive(cfg).await?;
    let latest_run = runs.first().cloned().unwrap_or(serde_json::Value::Null);
    let dataset = latest_run
        .get("run")
        .map(|r| {
            format!(
                "{}/epoch {}",
                r["source_id"].as_str().unwrap_or(""),
                r["epoch"]
            )
        })
        .unwrap_or_default();
    let scanner_holds: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "hold" && e["body"]["cause"] == "scanner")
        .collect();
    let clean = hits.is_empty() && scanner_holds.is_empty();
    Ok(json!({
        "date": date,
        "dataset": dataset,
        "windows": windows.len(),
        "windows_confirmed_by_sink": confirmed,
        "rows_published": rows_total,
        "registry_versions": registry_versions,
        "rules": rules,
        "run": latest_run,
        "scanner": { "rows_scanned": scanned, "hits_in_safe_columns": hits, "clean": clean },
        "holds_and_decisions": events,
        "chain": { "ok": problems.is_empty(), "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>() },
        "window_list": windows,
    }))
}

/// The prove report for people.
pub fn prove_text(r: &serde_json::Value) -> String {
    let mut out = String::new();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    out.push_str(&format!("veil audit report for {}\n", s(&r["date"])));
    out.push_str(&format!("dev dataset: {}\n", s(&r["dataset"])));
    out.push_str(&format!(
        "windows: {} ({} rows published; {} confirmed applied by the sink)\n",
        r["windows"], r["rows_published"], r["windows_confirmed_by_sink"]
    ));
    for w in r["window_list"].as_array().into_iter().flatten() {
        let b = &w["window"];
        out.push_str(&format!(
            "  {}  LSN {} .. {}  registry {}  scanned {}{}\n",
            s(&b["window_id"]),
            s(&b["first_lsn"]),
            s(&b["last_lsn"]),
            s(&b["registry_version"]),
            b["scanned_rows"],
            if w["confirmed_by_sink"] == true {
                "  applied in dev"
            } else {
                "  not confirmed by the sink"
            }
        ));
    }
    out.push_str(&format!("registry versions: {}\n", r["registry_versions"]));
    out.push_str("rules per column:\n");
    for (c, rule) in r["rules"].as_object().into_iter().flatten() {
        out.push_str(&format!("  {c}: {}\n", rule.as_str().unwrap_or("")));
    }
    out.push_str(&format!(
        "scanner: {} rows scanned; {}\n",
        r["scanner"]["rows_scanned"],
        if r["scanner"]["clean"] == true {
            "no PHI detector hit in a safe column".to_owned()
        } else {
            format!(
                "hits in safe columns: {}",
                r["scanner"]["hits_in_safe_columns"]
            )
        }
    ));
    let events = r["holds_and_decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.push_str(&format!(
        "holds, decisions, reveals, errors, stops: {}\n",
        events.len()
    ));
    for e in events {
        out.push_str(&format!(
            "  {} {} {}\n",
            s(&e["at"]),
            s(&e["kind"]),
            e["body"]
        ));
    }
    out.push_str(&format!(
        "chain check: {}\n",
        if r["chain"]["ok"] == true {
            "verified".to_owned()
        } else {
            format!("FAILED {}", r["chain"]["problems"])
        }
    ));
    out
}
