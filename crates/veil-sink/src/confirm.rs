//! The sink's own audit chain (signed with the sink's key): what dev committed, once per window,
//! and what was done to reclassified columns — only what is committed in dev is confirmed.

use std::time::Duration;

use super::applier::Applier;
use super::error::SinkError;
use crate::audit::AuditLog;
use crate::proto;

/// The sink's audit chain: a confirmation of what dev committed, once per window.
pub struct SinkAudit {
    pub writer: Box<dyn AuditLog>,
    pub every: Duration,
    pub last: std::time::Instant,
    pub txns: u64,
    pub rows: u64,
}

impl SinkAudit {
    /// After a dev commit: confirms what was applied since the last confirmation (only what is
    /// committed in dev is confirmed).
    pub async fn confirm(&mut self, applier: &mut Applier, force: bool) -> Result<(), SinkError> {
        // What was done to dev on reclassifications, once committed.
        if !applier.in_dev_txn() {
            for r in std::mem::take(&mut applier.reclassified) {
                self.writer
                    .record(proto::audit_record::Body::Reclassified(r))
                    .await?;
            }
            for ((table, op), (rows, first, last)) in std::mem::take(&mut applier.missing) {
                tracing::warn!(
                    table = %table,
                    op,
                    rows,
                    first_commit_lsn = %crate::pg::lsn::fmt_lsn(first),
                    last_commit_lsn = %crate::pg::lsn::fmt_lsn(last),
                    "changes of rows dev does not hold (table unblocked or approved after they were written); skipped"
                );
                self.writer
                    .record(proto::audit_record::Body::RowsMissing(proto::RowsMissing {
                        table,
                        op: op.into(),
                        rows,
                        first_commit_lsn: first,
                        last_commit_lsn: last,
                    }))
                    .await?;
            }
        }
        if !force && self.last.elapsed() < self.every {
            return Ok(());
        }
        if applier.in_dev_txn() || applier.applied_txns == self.txns {
            self.last = std::time::Instant::now();
            return Ok(());
        }
        let body = proto::audit_record::Body::Applied(proto::Applied {
            source_id: applier.ckpt.source_id.clone(),
            epoch: applier.ckpt.epoch,
            last_commit_lsn: applier.ckpt.last_commit_lsn,
            transactions: applier.applied_txns - self.txns,
            rows: applier.applied_rows - self.rows,
            dataset_id: format!("{}/epoch {}", applier.ckpt.source_id, applier.ckpt.epoch),
        });
        self.writer.record(body).await?;
        self.txns = applier.applied_txns;
        self.rows = applier.applied_rows;
        self.last = std::time::Instant::now();
        Ok(())
    }
}
