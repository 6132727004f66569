//! Spool for streamed in-progress transactions (pgoutput protocol v2, `streaming 'on'`).
//!
//! Chunks of a large transaction arrive before it commits, may interleave with other
//! transactions, and may abort whole or by subtransaction. They are uncommitted data: veil keeps
//! them here (in memory up to a bound, then in an anonymous temp file) and publishes them only
//! at Stream Commit, skipping the changes of aborted subtransactions. Nothing here is ever
//! published before its commit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

#[derive(Default)]
struct SpoolTxn {
    mem: Vec<(u32, Vec<u8>)>,
    mem_bytes: usize,
    file: Option<BufWriter<File>>,
    aborted: HashSet<u32>,
}

/// All in-progress streamed transactions, keyed by top-level xid.
pub struct Spool {
    dir: Option<PathBuf>,
    mem_limit: usize,
    mem_total: usize,
    txns: HashMap<u32, SpoolTxn>,
}

impl Spool {
    pub fn new(dir: Option<PathBuf>, mem_limit: usize) -> Self {
        Spool {
            dir,
            mem_limit,
            mem_total: 0,
            txns: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Bytes held in memory right now.
    pub fn memory_bytes(&self) -> usize {
        self.mem_total
    }

    /// Appends one raw pgoutput message of (sub)transaction `subxid` under `xid`.
    pub fn push(&mut self, xid: u32, subxid: u32, data: &[u8]) -> std::io::Result<()> {
        let t = self.txns.entry(xid).or_default();
        if let Some(f) = t.file.as_mut() {
            f.write_all(&subxid.to_le_bytes())?;
            f.write_all(&(data.len() as u32).to_le_bytes())?;
            return f.write_all(data);
        }
        t.mem.push((subxid, data.to_vec()));
        t.mem_bytes += data.len() + 16;
        self.mem_total += data.len() + 16;
        if self.mem_total > self.mem_limit {
            // Spill this transaction: everything it holds, and all it receives later, goes to disk.
            let file = match &self.dir {
                Some(d) => tempfile::tempfile_in(d)?,
                None => tempfile::tempfile()?,
            };
            let mut w = BufWriter::with_capacity(256 * 1024, file);
            for (s, d) in t.mem.drain(..) {
                w.write_all(&s.to_le_bytes())?;
                w.write_all(&(d.len() as u32).to_le_bytes())?;
                w.write_all(&d)?;
            }
            self.mem_total -= t.mem_bytes;
            t.mem_bytes = 0;
            t.file = Some(w);
            tracing::debug!(xid, "streamed transaction spilled to disk");
        }
        Ok(())
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(t) = self.txns.remove(&xid) {
                self.mem_total -= t.mem_bytes;
            }
        } else if let Some(t) = self.txns.get_mut(&xid) {
            t.aborted.insert(subxid);
        }
    }

    /// Stream Commit: takes the transaction's messages in order, without aborted subtransactions.
    pub fn take(&mut self, xid: u32) -> std::io::Result<SpoolReader> {
        let Some(t) = self.txns.remove(&xid) else {
            return Ok(SpoolReader {
                file: None,
                mem: Vec::new().into_iter(),
                aborted: HashSet::new(),
            });
        };
        self.mem_total -= t.mem_bytes;
        let file = match t.file {
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| e.into_error())?;
                f.seek(SeekFrom::Start(0))?;
                Some(BufReader::with_capacity(256 * 1024, f))
            }
            None => None,
        };
        Ok(SpoolReader {
            file,
            mem: t.mem.into_iter(),
            aborted: t.aborted,
        })
    }
}

/// Messages of one committed streamed transaction, in order.
pub struct SpoolReader {
    file: Option<BufReader<File>>,
    mem: std::vec::IntoIter<(u32, Vec<u8>)>,
    aborted: HashSet<u32>,
}

impl SpoolReader {
    pub fn next_message(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let (subxid, data) = if let Some(f) = self.file.as_mut() {
                let mut hdr = [0u8; 8];
                match f.read_exact(&mut hdr) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        self.file = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let subxid = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
                let len = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
                let mut d = vec![0u8; len];
                f.read_exact(&mut d)?;
                (subxid, d)
            } else {
                match self.mem.next() {
                    Some(x) => x,
                    None => return Ok(None),
                }
            };
            if !self.aborted.contains(&subxid) {
                return Ok(Some(data));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut r: SpoolReader) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn subtransaction_abort_and_spill_keep_order() {
        let mut s = Spool::new(None, 64);
        for i in 0..20u8 {
            let sub = if i % 5 == 0 { 11 } else { 10 };
            s.push(10, sub, &[i; 8]).unwrap();
        }
        s.push(20, 20, b"other").unwrap();
        s.abort(10, 11);
        let got = drain(s.take(10).unwrap());
        let expect: Vec<Vec<u8>> = (0..20u8)
            .filter(|i| i % 5 != 0)
            .map(|i| vec![i; 8])
            .collect();
        assert_eq!(got, expect);
        s.abort(20, 20);
        assert!(s.is_empty());
        assert_eq!(s.memory_bytes(), 0);
    }
}
