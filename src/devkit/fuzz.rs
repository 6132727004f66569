//! Fuzz entry points: each takes arbitrary bytes and must return without a panic, whatever the
//! bytes. `fuzz/` runs them under libFuzzer (`cargo +nightly fuzz run <target>`);
//! `tests/fuzz_smoke.rs` runs them on stable over the saved corpus and mutations of it, in CI.

use prost::Message as _;

use crate::proto::{self, envelope::Event};
use crate::sink::fence::{self, Admit, Checkpoint};
use crate::source::pgoutput::{self, ReplicationMessage};

/// The pgoutput decoder: a replication CopyData payload, and the bytes as a logical message
/// inside and outside a streamed transaction.
pub fn pgoutput(data: &[u8]) {
    if let Ok(ReplicationMessage::XLogData { data: inner, .. }) = pgoutput::decode_replication(data)
    {
        let _ = pgoutput::decode_logical(inner, false);
        let _ = pgoutput::decode_logical(inner, true);
    }
    for streaming in [false, true] {
        if let Ok(m) = pgoutput::decode_logical(data, streaming) {
            let _ = format!("{m:?}");
        }
    }
}

/// The snapshot's COPY text parser, line by line.
pub fn copy_text(data: &[u8]) {
    for line in data.split(|b| *b == b'\n') {
        let _ = crate::source::snapshot::parse_copy_line(line);
    }
}

/// The config parser (the environment's overrides apply as in production).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cfg) = crate::config::Config::parse(text)
    {
        let _ = format!("{cfg:?}");
        if let Some(k) = &cfg.kafka {
            let _ = k.max_message_bytes();
        }
    }
}

/// One registry file, and the bytes as a JSON path of a rule.
pub fn registry(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::deid::registry::parse_table_file(std::path::Path::new("fuzz.toml"), text);
        let _ = crate::deid::registry::parse_path(text);
    }
}

/// The sink's envelope handling without a database: envelopes (each preceded by a two-byte
/// length) decoded, joined from fragments, and passed through the fencing table as the applier
/// would.
pub fn envelope(data: &[u8]) {
    let mut ckpt = Checkpoint {
        offset: -1,
        ..Default::default()
    };
    let mut joiner = crate::sink::fragments::Joiner::default();
    let mut at = 0;
    let mut offset = 0i64;
    while at + 2 <= data.len() {
        let n = u16::from_be_bytes([data[at], data[at + 1]]) as usize;
        let chunk = &data[at + 2..(at + 2 + n).min(data.len())];
        at += 2 + n;
        offset += 1;
        let Ok(env) = proto::Envelope::decode(chunk) else {
            continue;
        };
        let _ = format!("{env:?}");
        let Ok(Some(env)) = joiner.push(offset, env, ckpt.last_commit_lsn) else {
            continue;
        };
        for env in proto::unbatch(env) {
            let starts = matches!(env.event, Some(Event::SnapshotBegin(_)));
            match fence::admit(&mut ckpt, offset, env.run_id, env.seq, env.epoch, starts) {
                Ok(Admit::Apply) | Ok(Admit::NewEpoch) => {}
                _ => continue,
            }
            ckpt.offset = offset;
            match &env.event {
                Some(Event::Begin(b)) => {
                    let _ = fence::begin(&mut ckpt, offset, b.commit_lsn, env.last_commit_lsn);
                }
                Some(Event::Commit(c))
                    if fence::orphan_commit(&ckpt, offset, c.commit_lsn).is_err() =>
                {
                    ckpt.last_commit_lsn = c.commit_lsn;
                }
                _ => {}
            }
        }
    }
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// The targets by name (for the smoke test).
pub const TARGETS: &[(&str, Target)] = &[
    ("pgoutput", pgoutput),
    ("copy_text", copy_text),
    ("config", config),
    ("registry", registry),
    ("envelope", envelope),
];
