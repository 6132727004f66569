//! The online backfill's state inside the stream (`source::backfill` drives it): chunks read by
//! workers waiting for their high watermark, and the open windows between a chunk's watermarks
//! with the keys of the rows that changed in them. Kept apart so the pipeline can note changes
//! without depending on the backfill's driver.

use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, oneshot};

use crate::pg::tuple::{TupleData, TupleValue};

/// A row as text values, source column order (`None` = NULL).
pub(super) type Row = Vec<Option<Vec<u8>>>;

/// A chunk read by a worker, waiting for its high watermark.
pub struct Chunk {
    pub(super) table: String,
    /// The worker's run (its watermarks carry it).
    pub(super) run: u64,
    pub(super) no: u64,
    pub(super) registry_version: String,
    /// The select list it was read with (the plan's then).
    pub(super) select: String,
    /// The table is a partitioned root (read whole, not `ONLY`).
    pub(super) partitioned: bool,
    /// The whole table (it has no primary key): dev's copy is replaced.
    pub(super) whole: bool,
    /// The keyset after this chunk.
    pub(super) next: Option<Vec<String>>,
    /// No row is left after `next`.
    pub(super) exhausted: bool,
    pub(super) rows: Vec<Row>,
    pub(super) done: oneshot::Sender<Outcome>,
}

/// What the stream did with a chunk.
pub(super) enum Outcome {
    /// Published; the keys of the rows dropped because the window changed them (or that moved)
    /// are read again in a later window (dev may lack the row, so a change of it alone does
    /// not bring it back).
    Published(Vec<Vec<String>>),
    /// Read it again, with this select list and registry version when given (the plan
    /// changed, or a scanner hit held).
    Again(Option<(String, String)>),
    /// The job is over (the table was blocked or is gone): stop.
    Stop,
}

/// A worker that ended: how (`Ok`: its last chunk was published, or it was told to stop).
pub(super) struct Ended {
    pub(super) table: String,
    pub(super) run: u64,
    pub(super) result: Result<(), super::error::StreamError>,
}

/// A window between a chunk's watermarks: the keys of the table's rows that changed in it.
pub(super) struct Window {
    pub(super) run: u64,
    pub(super) no: u64,
    pub(super) key_idx: Vec<usize>,
    pub(super) changed: HashSet<Row>,
    /// Keys of those changes dev may be unable to apply alone: read again.
    pub(super) reread: HashSet<Row>,
    /// The table was truncated inside the window: the whole chunk is read again.
    pub(super) spoiled: bool,
}

/// The stream's backfill state.
pub struct Backfills {
    /// Production, for the workers' connections.
    pub(super) target: Option<crate::pg::tls::PgTarget>,
    /// Start a backfill when a decision opens or changes a table (`source.backfill_on_decision`).
    pub(super) on_decision: bool,
    pub(super) chunks: Option<(mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>)>,
    pub(super) pending: HashMap<(String, u64, u64), Chunk>,
    pub(super) windows: HashMap<String, Window>,
    pub(super) running: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Every job not yet over (running, waiting to resume, or finished but not yet
    /// acknowledged by the broker), by table.
    pub(super) jobs: HashMap<String, Job>,
    /// Positions to continue from when the job's resume request is met.
    pub(super) resume: HashMap<String, Position>,
    /// New keys of rows whose key moved while the table's backfill runs (inside a window or
    /// not): dev may lack the row (a later chunk's), so the move did not reach it, and the new
    /// key may sit behind the keyset — read again at the next high watermark.
    pub(super) moved: HashMap<String, HashSet<Row>>,
    pub(super) ended: (mpsc::UnboundedSender<Ended>, mpsc::UnboundedReceiver<Ended>),
    /// A position could not be kept (an older `veil setup`): said once.
    pub(super) unkept_said: bool,
}

impl Default for Backfills {
    fn default() -> Self {
        Backfills {
            target: None,
            on_decision: false,
            chunks: None,
            pending: HashMap::new(),
            windows: HashMap::new(),
            running: HashMap::new(),
            jobs: HashMap::new(),
            resume: HashMap::new(),
            moved: HashMap::new(),
            ended: mpsc::unbounded_channel(),
            unkept_said: false,
        }
    }
}

impl Backfills {
    /// Backfills of tables of `target` (production).
    pub fn new(target: crate::pg::tls::PgTarget, on_decision: bool) -> Self {
        Backfills {
            target: Some(target),
            on_decision,
            ..Default::default()
        }
    }

    /// Whether `table` is being backfilled by key.
    pub(super) fn keyed_job(&self, table: &str) -> bool {
        self.jobs.get(table).is_some_and(|j| !j.key_idx.is_empty())
    }

    /// Remembers a row change of a table being backfilled: its keys, inside a window (the
    /// chunk's rows with those keys are dropped: the log has a newer value); the key to read
    /// again when the change is one dev may be unable to apply (`reread`: an update that does
    /// not carry the whole row, of a row dev may lack). Returns whether the key moved.
    pub(super) fn note_change(
        &mut self,
        table: &str,
        new: Option<&TupleData>,
        old: Option<&TupleData>,
        reread: bool,
    ) -> bool {
        let key_of = |key_idx: &[usize], t: &TupleData| -> Row {
            key_idx
                .iter()
                .map(|&i| match t.0.get(i) {
                    Some(TupleValue::Text(b)) | Some(TupleValue::Binary(b)) => Some(b.clone()),
                    _ => None,
                })
                .collect()
        };
        let mut moved = false;
        if let (Some(n), Some(o), Some(job)) = (new, old, self.jobs.get(table))
            && !job.key_idx.is_empty()
        {
            let (nk, ok) = (key_of(&job.key_idx, n), key_of(&job.key_idx, o));
            moved = nk != ok;
            let lacking = job
                .rereading
                .as_ref()
                .is_none_or(|keys| keys.contains(&key_text(&ok)));
            if moved && reread && lacking {
                self.moved.entry(table.to_owned()).or_default().insert(nk);
            }
        }
        let Some(w) = self.windows.get_mut(table) else {
            return moved;
        };
        for t in [new, old].into_iter().flatten() {
            let key = key_of(&w.key_idx, t);
            if reread && Some(t) == new {
                w.reread.insert(key.clone());
            }
            w.changed.insert(key);
        }
        moved
    }

    /// A truncate of `tables`: their open windows read their chunks again.
    pub(super) fn note_truncate(&mut self, tables: &[String]) {
        for t in tables {
            if let Some(w) = self.windows.get_mut(t) {
                w.spoiled = true;
            }
        }
    }

    /// Whether changes must be noted (a job runs or a window is open).
    pub(super) fn watching(&self) -> bool {
        !self.windows.is_empty() || !self.jobs.is_empty()
    }
}

/// Where a backfill stands after one of its chunks: what a restart resumes from. Kept (a few
/// at a time) in `_veil.backfills` with the stream's other state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Position {
    /// The chunk's high watermark (the end LSN of its published transaction).
    pub(super) high_lsn: u64,
    /// The chunk's number.
    pub(super) no: u64,
    /// The keyset: rows with keys after this one are still to be read (`None`: from the start).
    pub(super) next: Option<Vec<String>>,
    /// No row is left after `next`.
    pub(super) exhausted: bool,
    /// Keys to read again (a window changed them, or they moved).
    pub(super) again: Vec<Vec<String>>,
    /// Rows published up to and including this chunk.
    pub(super) rows: u64,
}

/// One table's backfill as the stream tracks it (and persists, `_veil.backfills`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Job {
    /// Names the worker's watermarks: a predecessor's, met again after a restart, never match.
    pub(super) run: u64,
    /// Why: the decision that opened or changed the table, an on-demand request, a resume.
    pub(super) reason: String,
    /// Where the request was met (a restart before any chunk starts again from here).
    pub(super) request_lsn: u64,
    pub(super) started_at_us: i64,
    /// Primary-key column positions (empty: the table has none and is copied whole).
    pub(super) key_idx: Vec<usize>,
    pub(super) registry_version: String,
    /// The planner's row estimate when it started (progress, ETA).
    pub(super) estimate: u64,
    /// The latest positions, oldest first (see [`Job::confirm_cap`]).
    pub(super) positions: Vec<Position>,
    /// The high watermark of the chunk that finished it.
    pub(super) finished_lsn: Option<u64>,
    /// Chunks read again (window changes of a keyless table, plan changes, scanner holds).
    pub(super) retries: u64,
    /// Worker restarts after transient errors.
    #[serde(default)]
    pub(super) restarts: u32,
    /// Once every key was read: the keys being read again. Only a row among them can be one dev
    /// lacks, so only its moves matter from then on (`None`: any move may).
    #[serde(skip)]
    pub(super) rereading: Option<HashSet<Vec<String>>>,
}

/// A key as text (what the keyset query binds and the kept positions hold).
pub(super) fn key_text(key: &[Option<Vec<u8>>]) -> Vec<String> {
    key.iter()
        .map(|v| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Positions kept per job: enough that a restart finds one at or before the slot's confirmed
/// LSN even after a crash of production's server (which may set the slot back a little); with
/// none, the backfill starts again from the beginning — slower, never wrong.
const KEEP_POSITIONS: usize = 16;

impl Job {
    /// Rows published so far.
    pub(super) fn rows(&self) -> u64 {
        self.positions.last().map_or(0, |p| p.rows)
    }

    /// Records a published chunk's position.
    pub(super) fn advance(&mut self, p: Position, acked: u64) {
        self.positions.push(p);
        // Keep every position after the last one already acknowledged, that one, and a few
        // before it.
        let first_unacked = self
            .positions
            .iter()
            .position(|p| p.high_lsn > acked)
            .unwrap_or(self.positions.len());
        let keep_from = first_unacked
            .saturating_sub(KEEP_POSITIONS)
            .min(self.positions.len().saturating_sub(KEEP_POSITIONS));
        self.positions.drain(..keep_from);
    }

    /// How far the stream may confirm while this job runs: to the newest position the broker
    /// acknowledged (`acked`), or where the request was met. A restart resumes the slot at or
    /// before a position it kept, and reads from there again every change the job must know of
    /// (keys that moved) — nothing the job learnt from the log is lost with the process.
    pub(super) fn confirm_cap(&self, acked: u64) -> u64 {
        if let Some(f) = self.finished_lsn
            && f <= acked
        {
            return u64::MAX;
        }
        self.positions
            .iter()
            .rev()
            .find(|p| p.high_lsn <= acked)
            .map_or(self.request_lsn, |p| p.high_lsn)
    }

    /// Where a restart whose slot confirmed `resume_lsn` continues: the newest position at or
    /// before it, with the keys every later position had to read again (their windows and
    /// moves lie after it in the log, partly before `resume_lsn`, and are not decoded again);
    /// from the beginning when none is that old. `None`: the job had finished by then.
    pub(super) fn resume_at(&self, resume_lsn: u64) -> Option<Position> {
        if self.finished_lsn.is_some_and(|f| f <= resume_lsn) {
            return None;
        }
        let at = self
            .positions
            .iter()
            .rposition(|p| p.high_lsn <= resume_lsn);
        let mut p = at.map_or_else(Position::default, |i| self.positions[i].clone());
        let later = at.map_or(0, |i| i + 1);
        let mut seen: HashSet<Vec<String>> = p.again.iter().cloned().collect();
        for q in &self.positions[later..] {
            for k in &q.again {
                if seen.insert(k.clone()) {
                    p.again.push(k.clone());
                }
            }
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            run: 1,
            reason: "test".into(),
            request_lsn: 100,
            started_at_us: 0,
            key_idx: vec![0],
            registry_version: "v".into(),
            estimate: 0,
            positions: Vec::new(),
            finished_lsn: None,
            retries: 0,
            restarts: 0,
            rereading: None,
        }
    }

    fn pos(high_lsn: u64, no: u64, again: &[&str]) -> Position {
        Position {
            high_lsn,
            no,
            next: Some(vec![format!("{}", no * 10)]),
            exhausted: false,
            again: again.iter().map(|k| vec![k.to_string()]).collect(),
            rows: no * 10,
        }
    }

    /// The slot is confirmed no further than the newest chunk the broker acknowledged (or the
    /// request, before any): a restart decodes again every change after that position.
    #[test]
    fn a_job_caps_what_the_stream_confirms_at_its_newest_acknowledged_chunk() {
        let mut j = job();
        assert_eq!(j.confirm_cap(500), 100, "no chunk yet: the request");
        j.advance(pos(200, 1, &[]), 150);
        assert_eq!(j.confirm_cap(150), 100, "chunk 1 not acknowledged yet");
        assert_eq!(j.confirm_cap(250), 200);
        j.advance(pos(300, 2, &[]), 250);
        j.advance(pos(400, 3, &[]), 250);
        assert_eq!(j.confirm_cap(350), 300);
        j.finished_lsn = Some(400);
        assert_eq!(j.confirm_cap(399), 300);
        assert_eq!(
            j.confirm_cap(400),
            u64::MAX,
            "finished and acknowledged: no cap"
        );
    }

    /// A restart continues from the newest position at or before the slot's confirmed LSN,
    /// with the keys every later position had to read again; from the beginning when none is
    /// that old; not at all when the job had finished by then.
    #[test]
    fn a_restart_resumes_from_the_newest_kept_position_it_may_trust() {
        let mut j = job();
        j.advance(pos(200, 1, &["a"]), 0);
        j.advance(pos(300, 2, &["b"]), 0);
        j.advance(pos(400, 3, &["c", "b"]), 0);
        let p = j.resume_at(350).unwrap();
        assert_eq!(p.no, 2);
        assert_eq!(p.next, Some(vec!["20".to_string()]));
        assert_eq!(p.again, vec![vec!["b".to_string()], vec!["c".to_string()]]);
        let p = j.resume_at(150).unwrap();
        assert_eq!((p.no, p.next.clone(), p.rows), (0, None, 0));
        assert_eq!(
            p.again.len(),
            3,
            "every later position's keys: {:?}",
            p.again
        );
        j.finished_lsn = Some(400);
        assert!(j.resume_at(400).is_none());
        assert_eq!(j.resume_at(399).unwrap().no, 2);
    }

    /// Positions are pruned, never below what a restart may need.
    #[test]
    fn kept_positions_are_bounded_and_keep_the_acknowledged_one() {
        let mut j = job();
        for i in 1..=100u64 {
            j.advance(pos(i * 100, i, &[]), (i * 100).saturating_sub(150));
        }
        assert!(
            j.positions.len() <= 2 * KEEP_POSITIONS,
            "{}",
            j.positions.len()
        );
        let acked = 100 * 100 - 150;
        assert!(j.positions.iter().any(|p| p.high_lsn <= acked));
        assert_eq!(j.confirm_cap(acked), 9800);
        assert_eq!(j.resume_at(acked).unwrap().no, 98);
    }
}
