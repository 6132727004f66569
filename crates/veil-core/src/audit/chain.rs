//! The sealed chain: the audit key, the journal (sealed, fsynced, with its chain head), and the
//! chain check (`verify`) over any list of records.

use hmac::{KeyInit, Mac};
use prost::Message;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::error::AuditError;
use crate::error::ConfigError;
use crate::proto::{self, audit_record::Body};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The audit key (32 bytes), never printed.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(***)")
    }
}

/// The audit key: `VEIL_AUDIT_KEY`, else `[audit] key_file`.
pub fn audit_key(cfg: &crate::config::Config) -> Result<AuditKey, ConfigError> {
    let a = cfg
        .audit
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid("missing [audit] section".into()))?;
    let text = crate::config::secret_or_file(&a.key, &a.key_file)?.ok_or_else(|| {
        ConfigError::Invalid("no audit key: set [audit] key_file or VEIL_AUDIT_KEY".into())
    })?;
    AuditKey::from_hex(&text).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// The key that verifies a chain: the sink's key for `sink/…` chains (when configured), the
/// audit key otherwise.
pub fn audit_key_for(cfg: &crate::config::Config, chain: &str) -> Result<AuditKey, ConfigError> {
    if chain.starts_with("sink/")
        && let Some(a) = &cfg.audit
        && let Some(t) = crate::config::secret_or_file(&a.sink_key, &a.sink_key_file)?
    {
        return AuditKey::from_hex(&t).map_err(|e| ConfigError::Invalid(e.to_string()));
    }
    audit_key(cfg)
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

pub(super) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(super) fn file_name(chain: &str) -> String {
    chain
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// How a journal rotates.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// The active segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Sealed segments kept (0: all).
    pub keep: usize,
}

impl Rotation {
    pub fn of(cfg: &crate::config::AuditConfig) -> Rotation {
        Rotation {
            segment_bytes: cfg.journal_segment_bytes.max(4096),
            keep: cfg.journal_keep_segments,
        }
    }
}

/// The local, append-only journal of one chain: length-prefixed records, fsynced per append,
/// and the chain head beside it. The active segment (`<chain>.journal`) is sealed once full
/// (renamed `<chain>.<last seq, 20 digits>.sealed`) and a new one started; the chain continues
/// across segments (the first record of a segment links to the last of the one before).
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    head_path: PathBuf,
    file: std::fs::File,
    pub(super) chain: String,
    next_seq: u64,
    last_hmac: String,
    size: u64,
    rotation: Rotation,
}

/// Reads the records of one journal segment; a torn last record (a crash mid-append) is cut
/// off when `repair` is set.
fn read_segment(path: &Path, repair: bool) -> Result<Vec<proto::AuditRecord>, AuditError> {
    let io = |source| AuditError::Journal {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
    let mut records = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let n =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if at + 4 + n > bytes.len() {
            // A torn last append (crash mid-write): the record was never sent.
            tracing::warn!(journal = %path.display(), "ignoring a torn last journal record");
            break;
        }
        let r = proto::AuditRecord::decode(&bytes[at + 4..at + 4 + n]).map_err(|e| {
            AuditError::Corrupt {
                path: path.to_owned(),
                problem: format!("record at byte {at}: {e}"),
            }
        })?;
        records.push(r);
        at += 4 + n;
    }
    if repair && at != bytes.len() {
        std::fs::write(path, &bytes[..at]).map_err(io)?;
    }
    Ok(records)
}

/// The sealed segments of `chain` in `dir`, oldest first.
pub fn sealed_segments(dir: &Path, chain: &str) -> Result<Vec<PathBuf>, AuditError> {
    let prefix = format!("{}.", file_name(chain));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| AuditError::Journal {
            path: dir.to_owned(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "sealed")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(&prefix))
                    .is_some_and(|rest| {
                        rest.len() == 27 && rest[..20].bytes().all(|b| b.is_ascii_digit())
                    })
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Every record of a chain's journal, sealed segments and the active one, in order.
pub fn read_journal(dir: &Path, chain: &str) -> Result<Vec<proto::AuditRecord>, AuditError> {
    let mut all = Vec::new();
    for p in sealed_segments(dir, chain)? {
        all.extend(read_segment(&p, false)?);
    }
    let active = dir.join(format!("{}.journal", file_name(chain)));
    if active.exists() {
        all.extend(read_segment(&active, false)?);
    }
    Ok(all)
}

impl Journal {
    /// Opens (or creates) the journal of `chain` in `dir` and recovers the chain's position.
    /// Returns the journal and the records of its active segment (sealed segments are read only
    /// when the active one is empty, and then only the newest, for the chain's position).
    pub fn open(
        dir: &Path,
        chain: &str,
        rotation: Rotation,
    ) -> Result<(Journal, Vec<proto::AuditRecord>), AuditError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Journal { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("{}.journal", file_name(chain)));
        let head_path = dir.join(format!("{}.head", file_name(chain)));
        let records = if path.exists() {
            read_segment(&path, true)?
        } else {
            Vec::new()
        };
        let last = match records.last() {
            Some(r) => Some((r.seq, r.hmac.clone())),
            None => match sealed_segments(dir, chain)?.last() {
                Some(p) => read_segment(p, false)?
                    .last()
                    .map(|r| (r.seq, r.hmac.clone())),
                None => None,
            },
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let size = file.metadata().map_err(io(&path))?.len();
        let (next_seq, last_hmac) = last
            .map(|(seq, hmac)| (seq + 1, hmac))
            .unwrap_or((1, String::new()));
        Ok((
            Journal {
                dir: dir.to_owned(),
                path,
                head_path,
                file,
                chain: chain.to_owned(),
                next_seq,
                last_hmac,
                size,
                rotation,
            },
            records,
        ))
    }

    /// Seals the active segment when it is full (called once its records are sent: a sealed
    /// segment is never read for sending again) and deletes sealed segments beyond the kept
    /// number.
    pub fn rotate_if_full(&mut self) -> Result<(), AuditError> {
        if self.size < self.rotation.segment_bytes || self.next_seq <= 1 {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Journal { path, source }
        };
        let sealed = self.dir.join(format!(
            "{}.{:020}.sealed",
            file_name(&self.chain),
            self.next_seq - 1
        ));
        self.file.sync_all().map_err(io(&self.path))?;
        std::fs::rename(&self.path, &sealed).map_err(io(&sealed))?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        // The rename and the new file survive a crash.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.size = 0;
        tracing::info!(chain = %self.chain, segment = %sealed.display(), "audit journal segment sealed");
        if self.rotation.keep > 0 {
            let all = sealed_segments(&self.dir, &self.chain)?;
            let excess = all.len().saturating_sub(self.rotation.keep);
            for old in &all[..excess] {
                std::fs::remove_file(old).map_err(io(old))?;
            }
        }
        Ok(())
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
        self.size += 4 + bytes.len() as u64;
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
                    "new_epoch_reason": b.new_epoch_reason, "config_hash": b.config_hash, "registry_version": b.registry_version, "key_id": b.key_id,
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
                    "first_lsn": crate::pg::lsn::fmt_lsn(w.first_lsn), "last_lsn": crate::pg::lsn::fmt_lsn(w.last_lsn),
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
                    "registry_before": d.registry_before, "registry_after": d.registry_after,
                    "previous_class": d.previous_class, "previous_rule": d.previous_rule,
                    "loosens": d.loosens }),
        ),
        Some(Body::Reveal(v)) => (
            "reveal",
            json!({ "os_user": v.os_user, "db_user": v.db_user, "ticket": v.ticket, "domain": v.domain,
                    "token_hash": v.token_hash, "found": v.found }),
        ),
        Some(Body::Error(e)) => ("error", json!({ "message": e.message })),
        Some(Body::Applied(a)) => (
            "applied",
            json!({ "source_id": a.source_id, "epoch": a.epoch, "last_commit_lsn": crate::pg::lsn::fmt_lsn(a.last_commit_lsn),
                    "transactions": a.transactions, "rows": a.rows, "dataset_id": a.dataset_id }),
        ),
        Some(Body::Reclassified(c)) => (
            "reclassified",
            json!({ "table": c.table, "column": c.column, "rule_before": c.rule_before,
                    "rule_after": c.rule_after, "action": c.action, "rows": c.rows }),
        ),
        Some(Body::RowsMissing(m)) => (
            "rows_missing",
            json!({ "table": m.table, "op": m.op, "rows": m.rows,
                    "first_commit_lsn": crate::pg::lsn::fmt_lsn(m.first_commit_lsn),
                    "last_commit_lsn": crate::pg::lsn::fmt_lsn(m.last_commit_lsn) }),
        ),
        Some(Body::Backfilled(b)) => (
            "backfilled",
            json!({ "table": b.table, "rows": b.rows, "registry_version": b.registry_version,
                    "reason": b.reason, "chunks": b.chunks, "retries": b.retries,
                    "request_lsn": crate::pg::lsn::fmt_lsn(b.request_lsn),
                    "finished_lsn": crate::pg::lsn::fmt_lsn(b.finished_lsn),
                    "seconds": b.seconds, "outcome": b.outcome, "whole_table": b.whole_table }),
        ),
        None => ("empty", json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROTATION: Rotation = Rotation {
        segment_bytes: 16 << 20,
        keep: 0,
    };

    /// Issue 13 item 11: the journal rotates; a start reads the active segment only; the chain
    /// continues across segments and verifies whole; old segments beyond the kept number go.
    #[test]
    fn the_journal_rotates_and_the_chain_continues_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let key = AuditKey::new([3; 32]);
        let small = Rotation {
            segment_bytes: 4096,
            keep: 0,
        };
        let chain = "sink/veil.changes";
        let (mut j, _) = Journal::open(d.path(), chain, small).unwrap();
        let mut all = Vec::new();
        for i in 0..400 {
            all.push(j.append(&key, body(i)).unwrap());
            j.rotate_if_full().unwrap();
        }
        let sealed = sealed_segments(d.path(), chain).unwrap();
        assert!(sealed.len() >= 10, "{} segments", sealed.len());
        // A start reads the active segment only, and continues the chain.
        drop(j);
        let (mut j, active) = Journal::open(d.path(), chain, small).unwrap();
        assert!(active.len() < 100, "{} records read at start", active.len());
        all.push(j.append(&key, body(400)).unwrap());
        // Just after a rotation the active segment is empty: the position comes from the newest
        // sealed one.
        while j.size > 0 {
            all.push(j.append(&key, body(0)).unwrap());
            j.rotate_if_full().unwrap();
        }
        drop(j);
        let (mut j, active) = Journal::open(d.path(), chain, small).unwrap();
        assert!(active.is_empty());
        all.push(j.append(&key, body(401)).unwrap());
        let read = read_journal(d.path(), chain).unwrap();
        assert_eq!(read, all);
        let heads = read_heads(d.path()).unwrap();
        assert!(verify(&key, &read, &heads).is_empty());
        assert_eq!(read.last().unwrap().seq, all.len() as u64);
        // Keeping 3: the oldest go; what stays still links up.
        let keep3 = Rotation {
            segment_bytes: 4096,
            keep: 3,
        };
        drop(j);
        let (mut j, _) = Journal::open(d.path(), chain, keep3).unwrap();
        // Up to the next rotation, which prunes.
        loop {
            j.append(&key, body(7)).unwrap();
            j.rotate_if_full().unwrap();
            if j.size == 0 {
                break;
            }
        }
        assert_eq!(sealed_segments(d.path(), chain).unwrap().len(), 3);
        // Other chains' files are never touched.
        let other = "stream/1/clinic";
        let (mut o, _) = Journal::open(d.path(), other, keep3).unwrap();
        o.append(&key, body(1)).unwrap();
        assert!(sealed_segments(d.path(), other).unwrap().is_empty());
        assert_eq!(sealed_segments(d.path(), chain).unwrap().len(), 3);
    }

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
        let (mut j, old) = Journal::open(d.path(), "stream/1/clinic", ROTATION).unwrap();
        assert!(old.is_empty());
        let rs: Vec<_> = (0..5).map(|i| j.append(&key, body(i)).unwrap()).collect();
        let heads = read_heads(d.path()).unwrap();
        assert_eq!(heads[0].seq, 5);
        assert!(verify(&key, &rs, &heads).is_empty());
        // Reopen: the chain continues.
        drop(j);
        let (mut j, old) = Journal::open(d.path(), "stream/1/clinic", ROTATION).unwrap();
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
