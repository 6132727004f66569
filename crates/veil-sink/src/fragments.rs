//! Joining fragmented envelopes, pure: an envelope larger than the broker's message limit
//! arrives as consecutive `Fragment` envelopes carrying its run and event number; the joiner
//! returns the whole envelope at its last piece. Pieces a stream restart cut short are dropped
//! (the new run sends the whole again); pieces cut short within one run are a gap.

use prost::Message as _;

use super::error::SinkError;
use crate::pg::lsn::fmt_lsn;
use crate::proto::{self, envelope::Event};

/// The pieces read so far of one fragmented envelope.
#[derive(Debug, Default)]
pub struct Joiner {
    joining: Option<Joining>,
    /// The offset the last envelope `push` returned began at (its first piece's).
    pub started_at: i64,
}

#[derive(Debug)]
struct Joining {
    run_id: u64,
    seq: u64,
    count: u32,
    data: Vec<u8>,
    next: u32,
    first_offset: i64,
}

/// A joined envelope may not be larger than this (a forged piece count cannot make the sink
/// gather without bound).
pub const MAX_JOINED_BYTES: usize = 1 << 30;

impl Joiner {
    /// Takes the envelope read at `offset`; returns it (or the envelope its pieces make up, at
    /// the last piece) when there is one to apply. `applied` names the last applied commit for
    /// a gap's message.
    pub fn push(
        &mut self,
        offset: i64,
        env: proto::Envelope,
        applied: u64,
    ) -> Result<Option<proto::Envelope>, SinkError> {
        let Some(Event::Fragment(f)) = &env.event else {
            if let Some(j) = self.joining.take() {
                if j.run_id == env.run_id {
                    return Err(SinkError::Gap {
                        offset,
                        commit_lsn: format!("event #{}", env.seq),
                        expected_prev: format!(
                            "piece {} of {} of event #{}",
                            j.next + 1,
                            j.count,
                            j.seq
                        ),
                        applied: fmt_lsn(applied),
                    });
                }
                tracing::warn!(
                    offset,
                    "an event left in pieces by an earlier stream run is dropped"
                );
            }
            self.started_at = offset;
            return Ok(Some(env));
        };
        if f.index == 0 {
            self.joining = Some(Joining {
                run_id: env.run_id,
                seq: env.seq,
                count: f.count,
                data: Vec::new(),
                next: 0,
                first_offset: offset,
            });
        }
        let Some(j) = self.joining.as_mut() else {
            // A piece whose first one was never read: the tail of a killed run's late write.
            tracing::debug!(
                offset,
                "piece of an event whose start was not read; dropped"
            );
            return Ok(None);
        };
        if (j.run_id, j.seq, j.count, j.next) != (env.run_id, env.seq, f.count, f.index) {
            tracing::warn!(
                offset,
                "pieces of two events interleaved (a late write of an earlier run); dropped"
            );
            self.joining = None;
            return Ok(None);
        }
        if j.data.len() + f.data.len() > MAX_JOINED_BYTES {
            return Err(SinkError::Decode {
                offset,
                message: format!(
                    "fragments of event #{} exceed {MAX_JOINED_BYTES} bytes",
                    j.seq
                ),
            });
        }
        j.data.extend_from_slice(&f.data);
        j.next += 1;
        if j.next < j.count {
            return Ok(None);
        }
        let Some(j) = self.joining.take() else {
            return Ok(None);
        };
        self.started_at = j.first_offset;
        let whole = proto::Envelope::decode(j.data.as_slice()).map_err(|e| SinkError::Decode {
            offset,
            message: format!("joined fragments: {e}"),
        })?;
        if (whole.run_id, whole.seq) != (j.run_id, j.seq) {
            return Err(SinkError::Decode {
                offset,
                message: "joined fragments name another event than their pieces".into(),
            });
        }
        if matches!(whole.event, Some(Event::Fragment(_))) {
            return Err(SinkError::Decode {
                offset,
                message: "a fragment inside joined fragments".into(),
            });
        }
        Ok(Some(whole))
    }
}
