//! Epochs and fencing. A stream starts by waiting until no slot of its own is active (a
//! predecessor is gone), then reads the topic's last envelope: resume the current epoch from its
//! slot, or start a new epoch — a new slot `<slot>_e<N>` with an exported snapshot — when there
//! is no topic yet, the last snapshot never finished, or the slot is missing or invalidated.

use std::time::Duration;
use tokio_postgres::Client;

use super::conn::ReplicationConn;
use super::error::StreamError;
use crate::pg::errors::PgError;
use crate::pg::lsn::{fmt_lsn, parse_lsn};
use crate::proto::{self, envelope::Event};

/// How the stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Resume `slot` of `epoch` from its confirmed LSN.
    Resume {
        epoch: u64,
        slot: String,
        resume_lsn: u64,
        last_commit_lsn: u64,
    },
    /// Start a new epoch above `after` (snapshot first), for `reason` (audited in RunStart).
    NewEpoch { after: u64, reason: &'static str },
}

/// The run lock: a session advisory lock on a connection of its own, taken before any slot is
/// touched and held for the whole run (a slot is inactive while the snapshot runs, so slot
/// activity cannot fence two streams). Waits up to 30 s for a predecessor to let go. The caller
/// stops publishing the moment this connection closes.
pub async fn take_run_lock(
    target: &crate::pg::tls::PgTarget,
    slot_prefix: &str,
) -> Result<tokio_postgres::Client, StreamError> {
    let lock = crate::pg::tls::connect(target)
        .await
        .map_err(StreamError::Connect)?;
    lock.batch_execute("SET application_name = 'veil stream run lock'")
        .await
        .map_err(PgError::with("name the run lock connection"))?;
    for _ in 0..60 {
        let got: bool = lock
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended('veil stream ' || $1, 0))",
                &[&slot_prefix],
            )
            .await
            .map_err(PgError::with("take the run lock"))?
            .get(0);
        if got {
            return Ok(lock);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StreamError::RunLocked(slot_prefix.to_owned()))
}

/// Waits (up to 30 s) until no slot of ours is active: a predecessor's walsender exits when its
/// connection drops. Only then is the topic's end worth reading.
pub async fn wait_for_predecessor(catalog: &Client, slot_prefix: &str) -> Result<(), StreamError> {
    let mut waited = 0;
    loop {
        let busy: Option<String> = catalog
            .query_opt(
                "SELECT slot_name::text FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name ~ ('^' || $1 || '_e[0-9]+$') AND active LIMIT 1",
                &[&slot_prefix],
            )
            .await
            .map_err(PgError::with("look up slots"))?
            .map(|r| r.get(0));
        match busy {
            None => return Ok(()),
            Some(slot) if waited >= 60 => return Err(StreamError::SlotBusy(slot)),
            Some(_) => {
                waited += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Resume or new epoch, from the topic's last envelope and the slot it names.
pub async fn decide(
    catalog: &Client,
    slot_prefix: &str,
    tail: Option<&proto::Envelope>,
) -> Result<Start, StreamError> {
    let Some(env) = tail else {
        return Ok(Start::NewEpoch {
            after: 0,
            reason: "first start (no change topic yet)",
        });
    };
    let snapshot_unfinished = env.phase == proto::Phase::Snapshot as i32
        && !matches!(env.event, Some(Event::SnapshotEnd(_)));
    let slot = format!("{slot_prefix}_e{}", env.epoch);
    let exists = catalog
        .query_opt(
            "SELECT wal_status, confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(PgError::with("look up slot"))?;
    let lost = exists
        .as_ref()
        .map(|r| r.get::<_, Option<String>>(0).as_deref() == Some("lost"))
        .unwrap_or(true);
    if snapshot_unfinished {
        tracing::warn!(
            epoch = env.epoch,
            "previous snapshot did not finish: starting a new epoch"
        );
        return Ok(Start::NewEpoch {
            after: env.epoch,
            reason: "the previous snapshot did not finish",
        });
    }
    if lost {
        tracing::error!(slot = %slot, "replication slot missing or invalidated (WAL removed): \
                        starting a new epoch with a new snapshot; dev will be rebuilt");
        metrics::counter!(crate::metrics::SLOT_INVALIDATIONS).increment(1);
        return Ok(Start::NewEpoch {
            after: env.epoch,
            reason: if exists.is_some() {
                "the replication slot was invalidated (WAL removed, max_slot_wal_keep_size)"
            } else {
                "the replication slot is missing"
            },
        });
    }
    Ok(Start::Resume {
        epoch: env.epoch,
        slot,
        resume_lsn: exists
            .as_ref()
            .and_then(|r| r.get::<_, Option<String>>(1))
            .and_then(|s| parse_lsn(&s))
            .unwrap_or(0),
        last_commit_lsn: env.last_commit_lsn,
    })
}

/// A new epoch's slot, created with an exported snapshot.
pub struct NewSlot {
    pub epoch: u64,
    pub slot: String,
    pub consistent_lsn: u64,
    pub snapshot_name: String,
}

/// Creates the slot of a new epoch: above the topic's epoch and above every slot of ours (a
/// predecessor killed before its first delivery leaves a slot but nothing in the topic); slots
/// of earlier epochs (ours only, inactive) are dropped first.
pub async fn create_slot(
    catalog: &Client,
    repl: &mut ReplicationConn,
    slot_prefix: &str,
    after: u64,
) -> Result<NewSlot, StreamError> {
    let slot_epochs: Vec<String> = catalog
        .query(
            "SELECT substring(slot_name::text FROM '_e([0-9]+)$') FROM pg_catalog.pg_replication_slots \
             WHERE slot_name ~ ('^' || $1 || '_e[0-9]+$')",
            &[&slot_prefix],
        )
        .await
        .map_err(PgError::with("list slots"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let max_slot_epoch = slot_epochs
        .iter()
        .filter_map(|e| e.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let epoch = after.max(max_slot_epoch) + 1;
    let slot = format!("{slot_prefix}_e{epoch}");
    let pattern = format!("{}_e%", slot_prefix.replace('_', "\\_"));
    catalog
        .execute(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
             WHERE slot_name LIKE $1 AND slot_name ~ ('^' || $2 || '_e[0-9]+$') AND NOT active",
            &[&pattern, &slot_prefix],
        )
        .await
        .map_err(PgError::with("drop old slots"))?;
    let created = repl
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
            crate::pg::quote::ident(&slot)
        ))
        .await?;
    let row = created
        .first()
        .ok_or_else(|| StreamError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let consistent_lsn = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|s: String| parse_lsn(&s))
        .ok_or_else(|| StreamError::Protocol("no consistent point".into()))?;
    let snapshot_name = row
        .get(2)
        .cloned()
        .flatten()
        .ok_or_else(|| StreamError::Protocol("no exported snapshot".into()))?;
    tracing::info!(epoch, slot = %slot, lsn = %fmt_lsn(consistent_lsn), "slot created; snapshot starts");
    Ok(NewSlot {
        epoch,
        slot,
        consistent_lsn,
        snapshot_name,
    })
}
