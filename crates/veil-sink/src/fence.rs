//! The sink's fencing table, pure: which envelopes are applied, skipped or refused, from the
//! checkpoint alone. Every row of ARCHITECTURE.md's table is one function branch here and one
//! unit test below; `applier` does the I/O the verdicts call for.

use super::error::SinkError;
use crate::pg::lsn::fmt_lsn;

/// How many earlier stream runs the sink remembers.
pub const KNOWN_RUNS: usize = 64;

/// What the sink has applied, as stored in `veil_sink.checkpoint` (in the same dev transaction
/// as the rows it covers).
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Offset of the last message covered (-1 = none).
    pub offset: i64,
    pub epoch: u64,
    pub last_commit_lsn: u64,
    pub last_commit_time_us: i64,
    pub source_id: String,
    pub registry_version: String,
    /// The stream run whose events are being applied, and the last event number seen of it.
    pub run_id: u64,
    pub seq: u64,
    /// Earlier runs: their late writes (a killed process's in-flight batch) are ignored.
    pub known_runs: Vec<u64>,
    /// Set when a new run starts (not stored): its first transaction may name a predecessor from
    /// a stale view of the topic's end; within the run, event numbers prove continuity.
    pub chain_unverified: bool,
}

/// A source transaction being applied (or skipped as a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrcTxn {
    pub commit_lsn: u64,
    pub skipping: bool,
}

/// What to do with an envelope, by its run, event number and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Same run, an event already seen.
    Duplicate,
    /// A run seen before (not the current one): a killed process's late write.
    LateRun,
    /// An epoch older than the checkpoint's: superseded by a newer snapshot.
    OlderEpoch,
    /// A newer epoch starting with its SnapshotBegin: drop what the old epoch built, then apply.
    NewEpoch,
    /// Apply it.
    Apply,
}

/// Rows 1–4, 6 and 7 of the fencing table. Moves the checkpoint's run, event number (and offset
/// for everything that is skipped).
pub fn admit(
    ckpt: &mut Checkpoint,
    offset: i64,
    run_id: u64,
    seq: u64,
    epoch: u64,
    starts_snapshot: bool,
) -> Result<Admit, SinkError> {
    if run_id == ckpt.run_id {
        if seq <= ckpt.seq {
            ckpt.offset = offset;
            return Ok(Admit::Duplicate);
        }
        if seq != ckpt.seq + 1 {
            return Err(SinkError::Gap {
                offset,
                commit_lsn: format!("event #{seq}"),
                expected_prev: format!("event #{}", ckpt.seq + 1),
                applied: format!("event #{} of the same stream run", ckpt.seq),
            });
        }
    } else if ckpt.known_runs.contains(&run_id) {
        ckpt.offset = offset;
        return Ok(Admit::LateRun);
    } else {
        if seq != 1 {
            return Err(SinkError::Gap {
                offset,
                commit_lsn: format!("event #{seq} of a new stream run"),
                expected_prev: "its event #1".into(),
                applied: fmt_lsn(ckpt.last_commit_lsn),
            });
        }
        if ckpt.run_id != 0 {
            ckpt.known_runs.push(ckpt.run_id);
            if ckpt.known_runs.len() > KNOWN_RUNS {
                ckpt.known_runs.remove(0);
            }
        }
        ckpt.run_id = run_id;
        ckpt.chain_unverified = true;
    }
    ckpt.seq = seq;
    if epoch < ckpt.epoch {
        ckpt.offset = offset;
        return Ok(Admit::OlderEpoch);
    }
    if epoch > ckpt.epoch {
        if !starts_snapshot {
            return Err(SinkError::EpochWithoutSnapshot {
                epoch,
                offset,
                applied: ckpt.epoch,
            });
        }
        return Ok(Admit::NewEpoch);
    }
    Ok(Admit::Apply)
}

/// What to do with a Begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginVerdict {
    /// Already applied (commit LSN not above the checkpoint): skip the whole transaction.
    Replay,
    Apply,
}

/// Rows 8 and 9: a Begin with commit LSN ≤ last applied is a replay; within a run, a Begin whose
/// named predecessor is not the last applied is a gap.
pub fn begin(
    ckpt: &mut Checkpoint,
    offset: i64,
    commit_lsn: u64,
    named_prev: u64,
) -> Result<BeginVerdict, SinkError> {
    if commit_lsn <= ckpt.last_commit_lsn {
        return Ok(BeginVerdict::Replay);
    }
    if std::mem::take(&mut ckpt.chain_unverified) {
        if named_prev != ckpt.last_commit_lsn {
            tracing::info!(
                offset,
                named = %fmt_lsn(named_prev),
                applied = %fmt_lsn(ckpt.last_commit_lsn),
                "first transaction of a new stream run names another predecessor; continuing from the last applied"
            );
        }
    } else if named_prev != ckpt.last_commit_lsn {
        return Err(SinkError::Gap {
            offset,
            commit_lsn: fmt_lsn(commit_lsn),
            expected_prev: fmt_lsn(named_prev),
            applied: fmt_lsn(ckpt.last_commit_lsn),
        });
    }
    Ok(BeginVerdict::Apply)
}

/// Row 10: a StreamStart or a Begin while a transaction is open means the stream restarted in
/// the middle of it: the half transaction must be rolled back to its savepoint (a skipped replay
/// has nothing to roll back).
pub fn half_transaction(open: Option<&SrcTxn>) -> bool {
    open.is_some_and(|s| !s.skipping)
}

/// A Commit with no open transaction: fine for a replayed tail, a gap if it is newer than the
/// checkpoint.
pub fn orphan_commit(ckpt: &Checkpoint, offset: i64, commit_lsn: u64) -> Result<(), SinkError> {
    if commit_lsn > ckpt.last_commit_lsn {
        return Err(SinkError::Gap {
            offset,
            commit_lsn: fmt_lsn(commit_lsn),
            expected_prev: "a Begin".into(),
            applied: fmt_lsn(ckpt.last_commit_lsn),
        });
    }
    Ok(())
}

/// What the consumer does with a message at `got` when it expects `expected` next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetStep {
    /// Before the checkpoint (the consumer starts a little early): already applied.
    AlreadyApplied,
    Apply,
    /// The broker skipped offsets: fetch again from earlier.
    Refetch,
}

/// Row 5: offsets must be contiguous.
pub fn offset_step(expected: i64, got: i64) -> OffsetStep {
    match got.cmp(&expected) {
        std::cmp::Ordering::Less => OffsetStep::AlreadyApplied,
        std::cmp::Ordering::Equal => OffsetStep::Apply,
        std::cmp::Ordering::Greater => OffsetStep::Refetch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run_id: u64, seq: u64, epoch: u64, last: u64) -> Checkpoint {
        Checkpoint {
            offset: 10,
            epoch,
            last_commit_lsn: last,
            run_id,
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn row_1_same_run_old_event_is_a_duplicate() {
        let mut c = at(7, 5, 1, 100);
        assert_eq!(admit(&mut c, 11, 7, 5, 1, false).unwrap(), Admit::Duplicate);
        assert_eq!(admit(&mut c, 12, 7, 3, 1, false).unwrap(), Admit::Duplicate);
        assert_eq!((c.seq, c.offset), (5, 12));
    }

    #[test]
    fn row_2_same_run_skipped_event_is_a_gap() {
        let mut c = at(7, 5, 1, 100);
        let e = admit(&mut c, 11, 7, 7, 1, false).unwrap_err();
        assert!(matches!(e, SinkError::Gap { .. }), "{e}");
    }

    #[test]
    fn row_3_a_known_earlier_run_is_a_late_write() {
        let mut c = at(7, 5, 1, 100);
        c.known_runs = vec![3];
        assert_eq!(admit(&mut c, 11, 3, 99, 1, false).unwrap(), Admit::LateRun);
        assert_eq!((c.run_id, c.seq), (7, 5));
    }

    #[test]
    fn row_4_a_new_run_starts_at_event_one() {
        let mut c = at(7, 5, 1, 100);
        assert!(matches!(
            admit(&mut c, 11, 8, 2, 1, false),
            Err(SinkError::Gap { .. })
        ));
        assert_eq!(admit(&mut c, 11, 8, 1, 1, false).unwrap(), Admit::Apply);
        assert_eq!((c.run_id, c.seq, c.known_runs.clone()), (8, 1, vec![7]));
        assert!(c.chain_unverified);
        // Remembered runs are bounded.
        for r in 100..200 {
            admit(&mut c, 11, r, 1, 1, false).unwrap();
        }
        assert_eq!(c.known_runs.len(), KNOWN_RUNS);
    }

    #[test]
    fn row_5_offsets_must_be_contiguous() {
        assert_eq!(offset_step(10, 9), OffsetStep::AlreadyApplied);
        assert_eq!(offset_step(10, 10), OffsetStep::Apply);
        assert_eq!(offset_step(10, 12), OffsetStep::Refetch);
    }

    #[test]
    fn row_6_an_older_epoch_is_ignored() {
        let mut c = at(7, 5, 3, 100);
        assert_eq!(
            admit(&mut c, 11, 7, 6, 2, false).unwrap(),
            Admit::OlderEpoch
        );
        assert_eq!(c.offset, 11);
    }

    #[test]
    fn row_7_a_newer_epoch_must_start_with_its_snapshot() {
        let mut c = at(7, 5, 1, 100);
        assert!(matches!(
            admit(&mut c.clone(), 11, 7, 6, 2, false),
            Err(SinkError::EpochWithoutSnapshot { .. })
        ));
        assert_eq!(admit(&mut c, 11, 7, 6, 2, true).unwrap(), Admit::NewEpoch);
    }

    #[test]
    fn row_8_a_begin_not_above_the_checkpoint_is_a_replay() {
        let mut c = at(7, 5, 1, 100);
        assert_eq!(begin(&mut c, 11, 100, 90).unwrap(), BeginVerdict::Replay);
        assert_eq!(begin(&mut c, 11, 50, 40).unwrap(), BeginVerdict::Replay);
    }

    #[test]
    fn row_9_a_begin_naming_another_predecessor_is_a_gap_within_a_run() {
        let mut c = at(7, 5, 1, 100);
        assert!(matches!(
            begin(&mut c, 11, 200, 150),
            Err(SinkError::Gap { .. })
        ));
        assert_eq!(begin(&mut c, 11, 200, 100).unwrap(), BeginVerdict::Apply);
        // The first transaction of a new run may name a stale predecessor.
        c.chain_unverified = true;
        assert_eq!(begin(&mut c, 11, 300, 250).unwrap(), BeginVerdict::Apply);
        assert!(!c.chain_unverified);
    }

    #[test]
    fn row_10_a_start_inside_an_open_transaction_rolls_it_back() {
        let open = SrcTxn {
            commit_lsn: 5,
            skipping: false,
        };
        let replay = SrcTxn {
            commit_lsn: 5,
            skipping: true,
        };
        assert!(half_transaction(Some(&open)));
        assert!(!half_transaction(Some(&replay)));
        assert!(!half_transaction(None));
    }

    #[test]
    fn a_commit_without_begin_is_fine_only_for_a_replayed_tail() {
        let c = at(7, 5, 1, 100);
        assert!(orphan_commit(&c, 11, 100).is_ok());
        assert!(matches!(
            orphan_commit(&c, 11, 101),
            Err(SinkError::Gap { .. })
        ));
    }
}
