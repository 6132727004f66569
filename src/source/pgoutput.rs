//! Pure decoder for the replication CopyData payloads (`XLogData`, primary keepalive) and the
//! pgoutput logical-replication messages inside them (protocol versions 1 and 2).
//!
//! No I/O happens here: bytes in, typed messages out, so the decoder can be unit-tested on bytes
//! captured from a real server and fuzzed. Every malformed input is a [`DecodeError`], never a
//! panic. Tuple values are kept as raw bytes in [`TupleData`], whose `Debug` never prints them.
//!
//! Protocol facts worth knowing (PostgreSQL docs, "Logical Replication Message Formats"):
//! - Inside a streamed block (between Stream Start and Stream Stop, protocol v2 with
//!   `streaming 'on'`) the Relation, Type, Insert, Update, Delete, Truncate and Message
//!   messages carry the (sub)transaction id first; outside, they do not. The caller tracks the
//!   block and passes `in_stream`.
//! - Timestamps are microseconds since 2000-01-01 UTC.

pub use crate::pg::lsn::{PG_EPOCH_OFFSET_US, fmt_lsn, parse_lsn};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "message truncated: needed {needed} more bytes at offset {offset} while reading {what}"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("unknown message tag {tag:#04x} while reading {what}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("string at offset {offset} is not NUL-terminated or not UTF-8")]
    BadString { offset: usize },
    #[error("negative length {len} at offset {offset}")]
    BadLength { offset: usize, len: i32 },
    #[error("{extra} trailing bytes after a {what} message")]
    Trailing { what: &'static str, extra: usize },
}

/// One CopyData payload of a START_REPLICATION stream.
#[derive(Debug, PartialEq)]
pub enum ReplicationMessage<'a> {
    XLogData {
        wal_start: u64,
        wal_end: u64,
        server_time_us: i64,
        data: &'a [u8],
    },
    Keepalive {
        wal_end: u64,
        server_time_us: i64,
        reply_requested: bool,
    },
}

pub use crate::pg::tuple::{TupleData, TupleValue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// The old row carried by an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// Replica identity key columns only (`K`); other columns are null.
    Key(TupleData),
    /// Whole old row (`O`), with REPLICA IDENTITY FULL.
    Full(TupleData),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin {
        final_lsn: u64,
        commit_time_us: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_us: i64,
    },
    Origin {
        commit_lsn: u64,
        name: String,
    },
    Relation {
        xid: Option<u32>,
        relation: Relation,
    },
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        xid: Option<u32>,
        relation_oid: u32,
        new: TupleData,
    },
    Update {
        xid: Option<u32>,
        relation_oid: u32,
        old: Option<OldTuple>,
        new: TupleData,
    },
    Delete {
        xid: Option<u32>,
        relation_oid: u32,
        old: OldTuple,
    },
    Truncate {
        xid: Option<u32>,
        options: u8,
        relation_oids: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Vec<u8>,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_us: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

impl LogicalMessage {
    /// The (sub)transaction id carried by a message inside a streamed block.
    pub fn stream_xid(&self) -> Option<u32> {
        match self {
            LogicalMessage::Relation { xid, .. }
            | LogicalMessage::Type { xid, .. }
            | LogicalMessage::Insert { xid, .. }
            | LogicalMessage::Update { xid, .. }
            | LogicalMessage::Delete { xid, .. }
            | LogicalMessage::Truncate { xid, .. }
            | LogicalMessage::Message { xid, .. } => *xid,
            _ => None,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.buf.len() - self.pos;
        if remaining < n {
            return Err(DecodeError::Truncated {
                what: self.what,
                offset: self.pos,
                needed: n - remaining,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.arr()?))
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::BadString { offset: start })?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| DecodeError::BadString { offset: start })?;
        self.pos += nul + 1;
        Ok(s.to_owned())
    }
    fn len_prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let offset = self.pos;
        let len = self.i32()?;
        if len < 0 {
            return Err(DecodeError::BadLength { offset, len });
        }
        self.take(len as usize)
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn finish(self) -> Result<(), DecodeError> {
        let extra = self.buf.len() - self.pos;
        if extra == 0 {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                what: self.what,
                extra,
            })
        }
    }
    fn tuple(&mut self) -> Result<TupleData, DecodeError> {
        let n = self.u16()? as usize;
        // Cap the pre-allocation: a hostile count must not allocate before the bytes exist.
        let mut values = Vec::with_capacity(n.min(1600));
        for _ in 0..n {
            let kind = self.u8()?;
            values.push(match kind {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' => TupleValue::Text(self.len_prefixed()?.to_vec()),
                b'b' => TupleValue::Binary(self.len_prefixed()?.to_vec()),
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "tuple column",
                        tag,
                    });
                }
            });
        }
        Ok(TupleData(values))
    }
    fn old_tuple(&mut self, tag: u8) -> Result<OldTuple, DecodeError> {
        match tag {
            b'K' => Ok(OldTuple::Key(self.tuple()?)),
            b'O' => Ok(OldTuple::Full(self.tuple()?)),
            tag => Err(DecodeError::UnknownTag {
                what: "old tuple",
                tag,
            }),
        }
    }
}

/// Decodes one CopyData payload of the replication stream.
pub fn decode_replication(buf: &[u8]) -> Result<ReplicationMessage<'_>, DecodeError> {
    let mut r = Reader::new(buf, "replication message");
    match r.u8()? {
        b'w' => {
            r.what = "XLogData";
            let wal_start = r.u64()?;
            let wal_end = r.u64()?;
            let server_time_us = r.i64()?;
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time_us,
                data: r.rest(),
            })
        }
        b'k' => {
            r.what = "primary keepalive";
            let wal_end = r.u64()?;
            let server_time_us = r.i64()?;
            let reply_requested = r.u8()? != 0;
            r.finish()?;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                server_time_us,
                reply_requested,
            })
        }
        tag => Err(DecodeError::UnknownTag {
            what: "replication message",
            tag,
        }),
    }
}

/// Encodes a standby status update ('r') payload for a CopyData message.
pub fn encode_status_update(
    write: u64,
    flush: u64,
    apply: u64,
    client_time_us: i64,
    reply: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.push(b'r');
    out.extend_from_slice(&write.to_be_bytes());
    out.extend_from_slice(&flush.to_be_bytes());
    out.extend_from_slice(&apply.to_be_bytes());
    out.extend_from_slice(&client_time_us.to_be_bytes());
    out.push(u8::from(reply));
    out
}

/// Decodes one pgoutput message. `in_stream` says whether the message sits between a Stream
/// Start and a Stream Stop (then most messages begin with a transaction id).
pub fn decode_logical(buf: &[u8], in_stream: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(buf, "pgoutput message");
    let tag = r.u8()?;
    let sxid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if in_stream {
            r.u32().map(Some)
        } else {
            Ok(None)
        }
    };
    let msg = match tag {
        b'B' => {
            r.what = "Begin";
            LogicalMessage::Begin {
                final_lsn: r.u64()?,
                commit_time_us: r.i64()?,
                xid: r.u32()?,
            }
        }
        b'C' => {
            r.what = "Commit";
            LogicalMessage::Commit {
                flags: r.u8()?,
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time_us: r.i64()?,
            }
        }
        b'O' => {
            r.what = "Origin";
            LogicalMessage::Origin {
                commit_lsn: r.u64()?,
                name: r.cstr()?,
            }
        }
        b'R' => {
            r.what = "Relation";
            let xid = sxid(&mut r)?;
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.u16()? as usize;
            let mut columns = Vec::with_capacity(n.min(1600));
            for _ in 0..n {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            LogicalMessage::Relation {
                xid,
                relation: Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                },
            }
        }
        b'Y' => {
            r.what = "Type";
            LogicalMessage::Type {
                xid: sxid(&mut r)?,
                oid: r.u32()?,
                namespace: r.cstr()?,
                name: r.cstr()?,
            }
        }
        b'I' => {
            r.what = "Insert";
            let xid = sxid(&mut r)?;
            let relation_oid = r.u32()?;
            match r.u8()? {
                b'N' => {}
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "Insert",
                        tag,
                    });
                }
            }
            LogicalMessage::Insert {
                xid,
                relation_oid,
                new: r.tuple()?,
            }
        }
        b'U' => {
            r.what = "Update";
            let xid = sxid(&mut r)?;
            let relation_oid = r.u32()?;
            let mut old = None;
            let mut t = r.u8()?;
            if t == b'K' || t == b'O' {
                old = Some(r.old_tuple(t)?);
                t = r.u8()?;
            }
            if t != b'N' {
                return Err(DecodeError::UnknownTag {
                    what: "Update",
                    tag: t,
                });
            }
            LogicalMessage::Update {
                xid,
                relation_oid,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            r.what = "Delete";
            let xid = sxid(&mut r)?;
            let relation_oid = r.u32()?;
            let t = r.u8()?;
            LogicalMessage::Delete {
                xid,
                relation_oid,
                old: r.old_tuple(t)?,
            }
        }
        b'T' => {
            r.what = "Truncate";
            let xid = sxid(&mut r)?;
            let n = r.u32()? as usize;
            let options = r.u8()?;
            let mut relation_oids = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                relation_oids.push(r.u32()?);
            }
            LogicalMessage::Truncate {
                xid,
                options,
                relation_oids,
            }
        }
        b'M' => {
            r.what = "Message";
            let xid = sxid(&mut r)?;
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let content = r.len_prefixed()?.to_vec();
            LogicalMessage::Message {
                xid,
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content,
            }
        }
        b'S' => {
            r.what = "Stream Start";
            LogicalMessage::StreamStart {
                xid: r.u32()?,
                first_segment: r.u8()? == 1,
            }
        }
        b'E' => LogicalMessage::StreamStop,
        b'c' => {
            r.what = "Stream Commit";
            LogicalMessage::StreamCommit {
                xid: r.u32()?,
                flags: r.u8()?,
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time_us: r.i64()?,
            }
        }
        b'A' => {
            r.what = "Stream Abort";
            let xid = r.u32()?;
            let subxid = r.u32()?;
            // Protocol v4 appends abort LSN and time; we ask for v2, but tolerate them.
            let _ = r.rest();
            LogicalMessage::StreamAbort { xid, subxid }
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    #[test]
    fn begin_commit_roundtrip() {
        let mut b = vec![b'B'];
        b.extend_from_slice(&0x16_0000_0100u64.to_be_bytes());
        b.extend_from_slice(&5i64.to_be_bytes());
        b.extend_from_slice(&742u32.to_be_bytes());
        assert_eq!(
            decode_logical(&b, false).unwrap(),
            LogicalMessage::Begin {
                final_lsn: 0x16_0000_0100,
                commit_time_us: 5,
                xid: 742
            }
        );
        let mut c = vec![b'C', 0];
        c.extend_from_slice(&1u64.to_be_bytes());
        c.extend_from_slice(&2u64.to_be_bytes());
        c.extend_from_slice(&3i64.to_be_bytes());
        assert!(matches!(
            decode_logical(&c, false).unwrap(),
            LogicalMessage::Commit {
                commit_lsn: 1,
                end_lsn: 2,
                ..
            }
        ));
    }

    #[test]
    fn insert_in_stream_carries_xid() {
        let mut b = vec![b'I'];
        b.extend_from_slice(&900u32.to_be_bytes());
        b.extend_from_slice(&16384u32.to_be_bytes());
        b.push(b'N');
        b.extend_from_slice(&3u16.to_be_bytes());
        b.push(b'n');
        b.push(b'u');
        b.push(b't');
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"abc");
        let m = decode_logical(&b, true).unwrap();
        assert_eq!(m.stream_xid(), Some(900));
        match m {
            LogicalMessage::Insert {
                relation_oid, new, ..
            } => {
                assert_eq!(relation_oid, 16384);
                assert_eq!(
                    new.0,
                    vec![
                        TupleValue::Null,
                        TupleValue::Unchanged,
                        TupleValue::Text(b"abc".to_vec())
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Without the stream flag the same bytes do not parse as the same message.
        assert!(decode_logical(&b, false).is_err());
    }

    #[test]
    fn relation_and_update_with_old_key() {
        let mut b = vec![b'R'];
        b.extend_from_slice(&16384u32.to_be_bytes());
        cstr(&mut b, "public");
        cstr(&mut b, "患者");
        b.push(b'd');
        b.extend_from_slice(&1u16.to_be_bytes());
        b.push(1);
        cstr(&mut b, "id");
        b.extend_from_slice(&20u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        match decode_logical(&b, false).unwrap() {
            LogicalMessage::Relation { relation, xid } => {
                assert_eq!(xid, None);
                assert_eq!(relation.name, "患者");
                assert!(relation.columns[0].is_key);
                assert_eq!(relation.columns[0].type_modifier, -1);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut u = vec![b'U'];
        u.extend_from_slice(&16384u32.to_be_bytes());
        u.push(b'K');
        u.extend_from_slice(&1u16.to_be_bytes());
        u.push(b't');
        u.extend_from_slice(&1i32.to_be_bytes());
        u.push(b'1');
        u.push(b'N');
        u.extend_from_slice(&1u16.to_be_bytes());
        u.push(b't');
        u.extend_from_slice(&1i32.to_be_bytes());
        u.push(b'2');
        assert!(matches!(
            decode_logical(&u, false).unwrap(),
            LogicalMessage::Update {
                old: Some(OldTuple::Key(_)),
                ..
            }
        ));
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors_not_panics() {
        for tag in [
            b'B', b'C', b'O', b'R', b'Y', b'I', b'U', b'D', b'T', b'M', b'S', b'c', b'A', b'Z',
        ] {
            for len in 0..40 {
                let mut b = vec![tag];
                b.extend(std::iter::repeat_n(0xff, len));
                let _ = decode_logical(&b, false);
                let _ = decode_logical(&b, true);
            }
        }
        let mut t = vec![b'I'];
        t.extend_from_slice(&1u32.to_be_bytes());
        t.push(b'N');
        t.extend_from_slice(&1u16.to_be_bytes());
        t.push(b't');
        t.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            decode_logical(&t, false),
            Err(DecodeError::BadLength { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..256), s in proptest::bool::ANY) {
            let _ = decode_logical(&b, s);
            let _ = decode_replication(&b);
        }
    }

    #[test]
    fn debug_never_shows_values() {
        let t = TupleData(vec![TupleValue::Text(b"123-45-6789".to_vec())]);
        let s = format!("{t:?}");
        assert!(!s.contains("123"), "{s}");
        assert!(s.contains("redacted 11 bytes"));
    }

    #[test]
    fn keepalive_and_status_update() {
        let mut k = vec![b'k'];
        k.extend_from_slice(&77u64.to_be_bytes());
        k.extend_from_slice(&1i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            decode_replication(&k).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: 77,
                server_time_us: 1,
                reply_requested: true
            }
        );
        let s = encode_status_update(1, 2, 3, 4, false);
        assert_eq!(s.len(), 34);
        assert_eq!(s[0], b'r');
    }

    /// Bytes captured from a real PostgreSQL 15 server (tests/e2e/protocol.rs writes them with
    /// VEIL_WRITE_FIXTURES): an insert of a toasted value, an update leaving it unchanged, a key
    /// update, and a foreign logical message.
    #[test]
    fn decodes_bytes_captured_from_a_real_server() {
        let fixture = include_str!("../../tests/fixtures/pgoutput_v2.hex");
        let msgs: Vec<LogicalMessage> = fixture
            .lines()
            .map(|l| decode_logical(&hex::decode(l).unwrap(), false).unwrap())
            .collect();
        let tags: String = msgs
            .iter()
            .map(|m| match m {
                LogicalMessage::Begin { .. } => 'B',
                LogicalMessage::Relation { .. } => 'R',
                LogicalMessage::Insert { .. } => 'I',
                LogicalMessage::Update { .. } => 'U',
                LogicalMessage::Commit { .. } => 'C',
                LogicalMessage::Message { .. } => 'M',
                _ => '?',
            })
            .collect();
        assert_eq!(tags, "BRICBUCBUCBMC");
        let LogicalMessage::Relation { relation, .. } = &msgs[1] else {
            panic!()
        };
        assert_eq!(
            (relation.namespace.as_str(), relation.name.as_str()),
            ("public", "t")
        );
        assert_eq!(relation.columns.len(), 3);
        assert!(relation.columns[0].is_key);
        let LogicalMessage::Insert { new, .. } = &msgs[2] else {
            panic!()
        };
        assert_eq!(new.0[1], TupleValue::Text("山田 太郎".as_bytes().to_vec()));
        let LogicalMessage::Update { old: None, new, .. } = &msgs[5] else {
            panic!()
        };
        assert_eq!(new.0[2], TupleValue::Unchanged);
        assert!(matches!(
            &msgs[8],
            LogicalMessage::Update {
                old: Some(OldTuple::Key(_)),
                ..
            }
        ));
        let LogicalMessage::Message {
            prefix,
            transactional,
            ..
        } = &msgs[11]
        else {
            panic!()
        };
        assert_eq!((prefix.as_str(), *transactional), ("other_app", true));
        // Every prefix of every real message is an error, never a panic.
        for l in fixture.lines().filter(|l| l.len() < 2000) {
            let b = hex::decode(l).unwrap();
            for n in 0..b.len() {
                assert!(decode_logical(&b[..n], false).is_err());
            }
        }
    }

    #[test]
    fn lsn_text_roundtrip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(fmt_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }
}
