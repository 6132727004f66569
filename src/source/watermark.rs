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
    pub(super) no: u64,
    pub(super) registry_version: String,
    pub(super) rows: Vec<Row>,
    pub(super) done: oneshot::Sender<Outcome>,
}

/// What the stream did with a chunk.
pub(super) enum Outcome {
    /// Published this many rows; the keys of the rows dropped because the window changed them
    /// are read again in a later window (dev may lack the row, so a change of it alone does
    /// not bring it back).
    Published(usize, Vec<Vec<String>>),
    /// Read it again, with this select list and registry version when given (the plan
    /// changed, or a scanner hit held).
    Again(Option<(String, String)>),
}

/// A window between a chunk's watermarks: the keys of the table's rows that changed in it.
pub(super) struct Window {
    pub(super) no: u64,
    pub(super) key_idx: Vec<usize>,
    pub(super) changed: HashSet<Row>,
}

/// The stream's backfill state.
#[derive(Default)]
pub struct Backfills {
    /// Production, for the workers' connections.
    pub(super) target: Option<crate::pg::tls::PgTarget>,
    /// Start a backfill when a decision opens or changes a table (`source.backfill_on_decision`).
    pub(super) on_decision: bool,
    pub(super) chunks: Option<(mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>)>,
    pub(super) pending: HashMap<(String, u64), Chunk>,
    pub(super) windows: HashMap<String, Window>,
    pub(super) running: HashMap<String, tokio::task::JoinHandle<()>>,
    /// New keys of rows whose key moved while the table's backfill runs (inside a window or
    /// not): dev may lack the row (a later chunk's), so the move did not reach it, and the new
    /// key may sit behind the keyset — read again at the next high watermark.
    pub(super) moved: HashMap<String, HashSet<Row>>,
    /// Primary-key column positions of each table being backfilled.
    pub(super) keys: HashMap<String, Vec<usize>>,
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

    /// Remembers the key of a row change of a table inside a window.
    pub(super) fn note_change(
        &mut self,
        table: &str,
        new: Option<&TupleData>,
        old: Option<&TupleData>,
    ) {
        let key_of = |key_idx: &[usize], t: &TupleData| -> Row {
            key_idx
                .iter()
                .map(|&i| match t.0.get(i) {
                    Some(TupleValue::Text(b)) | Some(TupleValue::Binary(b)) => Some(b.clone()),
                    _ => None,
                })
                .collect()
        };
        if let (Some(n), Some(o), Some(key_idx)) = (new, old, self.keys.get(table))
            && self.running.get(table).is_some_and(|h| !h.is_finished())
        {
            let (nk, ok) = (key_of(key_idx, n), key_of(key_idx, o));
            if nk != ok {
                self.moved.entry(table.to_owned()).or_default().insert(nk);
            }
        }
        let Some(w) = self.windows.get_mut(table) else {
            return;
        };
        for t in [new, old].into_iter().flatten() {
            let key = key_of(&w.key_idx, t);
            w.changed.insert(key);
        }
    }

    pub(super) fn has_windows(&self) -> bool {
        !self.windows.is_empty()
    }
}
