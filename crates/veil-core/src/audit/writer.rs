//! The stage boundary to the audit trail: [`AuditLog`], with its durability contract, the
//! writer that implements it on the journal and the compacted topic, and [`NoAudit`] for a
//! process without an `[audit]` section.

use futures_util::future::BoxFuture;
use prost::Message;
use std::path::PathBuf;

use super::chain::{AuditKey, Journal, file_name};
use super::error::AuditError;
use crate::proto::{self, audit_record::Body};

/// Where a process writes its audit records.
///
/// Durability contract: when `record` returns `Ok`, the record is sealed into the chain and
/// fsynced in the local journal, and it has been handed to the audit topic (a send that fails
/// after the journal write is re-sent on the next start). A caller that must not act before its
/// record exists (a reveal) acts only after `Ok`.
pub trait AuditLog: Send + Sync {
    fn record(&mut self, body: Body) -> BoxFuture<'_, Result<(), AuditError>>;
}

/// No audit trail configured: records go nowhere.
pub struct NoAudit;

impl AuditLog for NoAudit {
    fn record(&mut self, _body: Body) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async { Ok(()) })
    }
}

impl AuditLog for AuditWriter {
    fn record(&mut self, body: Body) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move { AuditWriter::record(self, body).await.map(|_| ()) })
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
        crate::kafka::admin::ensure_topic(kafka, &cfg.topic, true).await?;
        let producer: rdkafka::producer::FutureProducer = crate::kafka::client::client_config_with(
            kafka,
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
        .create()
        .map_err(crate::kafka::error::kerr)?;
        let (journal, records) =
            Journal::open(&cfg.journal_dir, chain, super::chain::Rotation::of(cfg))?;
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
            .map_err(|(e, _)| crate::kafka::error::delivery(e))?;
        let _ = std::fs::write(&self.acked_path, r.seq.to_string());
        Ok(())
    }

    /// Seals, journals (fsync) and sends one record.
    pub async fn record(&mut self, body: Body) -> Result<proto::AuditRecord, AuditError> {
        let r = self.journal.append(&self.key, body)?;
        self.send(&r).await?;
        // Sealed only once sent: a start resends from the active segment alone.
        self.journal.rotate_if_full()?;
        Ok(r)
    }
}
