//! The confirmed-LSN rule, pure: what the stream may report to PostgreSQL as flushed.
//!
//! - The flush LSN is the end of the last commit whose events, and every event before them, the
//!   destination acknowledged (`acked`, from the event sink's ordered ack tracker).
//! - Only when nothing is in flight and no transaction is open (neither a normal one nor a
//!   streamed one between Stream Start and Stream Stop) may it move up to the server's WAL end
//!   from a keepalive: everything up to there was either published and acknowledged or was not
//!   ours to publish, so an idle slot does not pin WAL.
//! - It never moves back.
//! - The write position reported is what was received, never less than what is confirmed.

/// LSN bookkeeping of one replication connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Highest WAL start of an XLogData received.
    pub received: u64,
    /// Highest WAL end the server announced in a keepalive.
    pub server_end: u64,
    /// What has been reported as flushed.
    pub confirmed: u64,
}

/// What the stream knows at a status tick besides the LSNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Highest commit end LSN acknowledged with everything before it.
    pub acked: u64,
    /// Events sent but not acknowledged.
    pub inflight: u64,
    /// A transaction (normal or streamed) is open.
    pub txn_open: bool,
}

impl Progress {
    pub fn starting_at(lsn: u64) -> Self {
        Progress {
            received: lsn,
            server_end: lsn,
            confirmed: lsn,
        }
    }

    pub fn on_xlog(&mut self, wal_start: u64) {
        self.received = self.received.max(wal_start);
    }

    pub fn on_keepalive(&mut self, wal_end: u64) {
        self.server_end = self.server_end.max(wal_end);
    }

    /// The status update to send now: `(write, flushed)`. Moves `confirmed`.
    pub fn status(&mut self, a: Activity) -> (u64, u64) {
        self.confirmed = self.confirmed.max(a.acked);
        if a.inflight == 0 && !a.txn_open {
            self.confirmed = self.confirmed.max(self.server_end);
        }
        (self.received.max(self.confirmed), self.confirmed)
    }

    /// How far the confirmed position trails what the server has.
    pub fn lag_bytes(&self) -> u64 {
        self.server_end
            .max(self.received)
            .saturating_sub(self.confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(acked: u64) -> Activity {
        Activity {
            acked,
            inflight: 3,
            txn_open: false,
        }
    }

    #[test]
    fn only_the_acknowledged_prefix_is_confirmed() {
        let mut p = Progress::starting_at(100);
        p.on_xlog(500);
        p.on_keepalive(900);
        // Events up to 500 were sent, only the commit ending at 300 is acknowledged.
        assert_eq!(p.status(busy(300)), (500, 300));
        assert_eq!(p.lag_bytes(), 600);
        // More acknowledged: confirmed follows.
        assert_eq!(p.status(busy(480)), (500, 480));
    }

    #[test]
    fn idle_keepalive_advances_past_unpublished_wal() {
        let mut p = Progress::starting_at(100);
        p.on_keepalive(900);
        let idle = Activity {
            acked: 100,
            inflight: 0,
            txn_open: false,
        };
        assert_eq!(p.status(idle), (900, 900));
        assert_eq!(p.lag_bytes(), 0);
    }

    #[test]
    fn no_keepalive_advance_while_in_flight_or_inside_a_transaction() {
        let mut p = Progress::starting_at(100);
        p.on_keepalive(900);
        assert_eq!(p.status(busy(200)).1, 200);
        let open = Activity {
            acked: 250,
            inflight: 0,
            txn_open: true,
        };
        assert_eq!(p.status(open).1, 250);
    }

    #[test]
    fn never_moves_back() {
        let mut p = Progress::starting_at(100);
        p.on_keepalive(900);
        let idle = Activity {
            acked: 0,
            inflight: 0,
            txn_open: false,
        };
        assert_eq!(p.status(idle).1, 900);
        // A later tick with an older ack (the tracker restarted from 0) keeps 900.
        assert_eq!(p.status(busy(50)).1, 900);
        p.on_xlog(10);
        assert_eq!(p.received, 100);
    }
}
